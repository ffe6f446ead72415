//! Regulatory clocks (DESIGN §6): calendar days counted in the sponsor's
//! time zone, stored as UTC.
//!
//! Day 0 is the calendar day, in the sponsor's time zone, of the sponsor's
//! first awareness of the minimum information. An obligation is due by the
//! end of its due calendar day in that time zone.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObligationKind {
    /// Fatal or life-threatening: day 0 + 7 calendar days.
    Initial7Day,
    /// Other SUSARs: day 0 + 15 calendar days.
    Initial15Day,
    /// After a 7-day initial report: 8 days after its submission.
    FollowUp8Day,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub kind: ObligationKind,
    /// The due calendar day in the sponsor's time zone.
    pub due_date: Date,
    /// The end of that day (the start of the next) in the sponsor's time
    /// zone, as UTC: the obligation is overdue from this instant.
    pub due_at: Timestamp,
}

/// Calendar days from day 0 to the due day of an initial report.
const INITIAL_7_DAYS: i16 = 7;
const INITIAL_15_DAYS: i16 = 15;
/// Calendar days from the initial submission to the follow-up's due day.
const FOLLOW_UP_DAYS: i16 = 8;
/// A site report later than this after the site's awareness is late.
const SITE_REPORT_MAX_SECONDS: i64 = 24 * 60 * 60;

/// The calendar date of `at` in `zone`.
fn local_date(at: Timestamp, zone: &TimeZone) -> Date {
    at.to_zoned(zone.clone()).date()
}

/// The obligation of `kind` due `days` calendar days after `from`.
fn due(kind: ObligationKind, from: Date, days: i16, zone: &TimeZone) -> Due {
    let due_date = from.saturating_add(jiff::Span::new().days(days));
    Due {
        kind,
        due_date,
        due_at: end_of_day(due_date, zone),
    }
}

/// The first instant of the day after `date` in `zone`, as UTC: the local
/// midnight that ends `date`, or, when a DST gap skips that midnight, the
/// first local instant that exists after it. Falls back to the last
/// representable instant for a date at the end of the calendar.
fn end_of_day(date: Date, zone: &TimeZone) -> Timestamp {
    date.tomorrow()
        .ok()
        .and_then(|next| next.to_zoned(zone.clone()).ok())
        .and_then(|next| next.start_of_day().ok())
        .map_or(Timestamp::MAX, |start| start.timestamp())
}

/// The initial report obligation of a SUSAR whose day 0 is the sponsor's
/// awareness at `aware_at`.
pub fn initial_obligation(
    aware_at: Timestamp,
    fatal_or_life_threatening: bool,
    zone: &TimeZone,
) -> Due {
    let day_0 = local_date(aware_at, zone);
    if fatal_or_life_threatening {
        due(ObligationKind::Initial7Day, day_0, INITIAL_7_DAYS, zone)
    } else {
        due(ObligationKind::Initial15Day, day_0, INITIAL_15_DAYS, zone)
    }
}

/// The follow-up obligation after a 7-day initial report submitted at
/// `initial_submitted_at`.
pub fn follow_up_obligation(initial_submitted_at: Timestamp, zone: &TimeZone) -> Due {
    let submitted = local_date(initial_submitted_at, zone);
    due(
        ObligationKind::FollowUp8Day,
        submitted,
        FOLLOW_UP_DAYS,
        zone,
    )
}

/// A site report is late when the sponsor received it more than 24 h after
/// the site became aware.
pub fn is_late(site_aware_at: Timestamp, received_at: Timestamp) -> bool {
    received_at.duration_since(site_aware_at) > SignedDuration::from_secs(SITE_REPORT_MAX_SECONDS)
}

/// The sponsor's time zone by its IANA name, e.g. "Europe/Paris".
pub fn sponsor_zone(name: &str) -> Result<TimeZone, String> {
    if name.trim().is_empty() {
        return Err(
            "the sponsor time zone is empty: expected an IANA name such as Europe/Paris".into(),
        );
    }
    TimeZone::get(name).map_err(|e| {
        format!("the sponsor time zone '{name}' is not a known IANA name such as Europe/Paris: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObligationKind::{FollowUp8Day, Initial7Day, Initial15Day};

    const PARIS: &str = "Europe/Paris";
    const CHICAGO: &str = "America/Chicago";

    fn zone(name: &str) -> TimeZone {
        sponsor_zone(name).expect("a known zone")
    }

    /// An instant written with its fixed local offset, so the expected
    /// values do not depend on the time zone database under test.
    fn at(text: &str) -> Timestamp {
        text.parse().expect("an instant with an offset")
    }

    fn date(text: &str) -> Date {
        text.parse().expect("a date")
    }

    struct Case {
        name: &'static str,
        zone: &'static str,
        aware_at: &'static str,
        fatal: bool,
        kind: ObligationKind,
        due_date: &'static str,
        due_at: &'static str,
    }

    const fn case(
        name: &'static str,
        zone: &'static str,
        aware_at: &'static str,
        fatal: bool,
        due_date: &'static str,
        due_at: &'static str,
    ) -> Case {
        Case {
            name,
            zone,
            aware_at,
            fatal,
            kind: if fatal { Initial7Day } else { Initial15Day },
            due_date,
            due_at,
        }
    }

    /// Each awareness is written in the zone's local time with the offset in
    /// force then; each due instant is the local midnight ending the due day,
    /// in UTC.
    const INITIAL: &[Case] = &[
        // Near midnight: the local date, not the UTC date, is day 0.
        case(
            "Paris 23:30 local",
            PARIS,
            "2026-01-10T23:30:00+01:00",
            false,
            "2026-01-25",
            "2026-01-25T23:00:00Z",
        ),
        case(
            "Paris 00:30 local (UTC still the day before)",
            PARIS,
            "2026-01-11T00:30:00+01:00",
            true,
            "2026-01-18",
            "2026-01-18T23:00:00Z",
        ),
        case(
            "Chicago 23:30 local (UTC already the next day)",
            CHICAGO,
            "2026-01-10T23:30:00-06:00",
            true,
            "2026-01-17",
            "2026-01-18T06:00:00Z",
        ),
        case(
            "Chicago 00:30 local",
            CHICAGO,
            "2026-01-11T00:30:00-06:00",
            false,
            "2026-01-26",
            "2026-01-27T06:00:00Z",
        ),
        // Europe/Paris, last Sunday of March 2026 (29th): 02:00 CET -> 03:00 CEST.
        case(
            "Paris aware on the spring change day, before it",
            PARIS,
            "2026-03-29T00:30:00+01:00",
            true,
            "2026-04-05",
            "2026-04-05T22:00:00Z",
        ),
        case(
            "Paris aware on the spring change day, after it",
            PARIS,
            "2026-03-29T23:30:00+02:00",
            false,
            "2026-04-13",
            "2026-04-13T22:00:00Z",
        ),
        case(
            "Paris due on the spring change day (23 h long)",
            PARIS,
            "2026-03-22T12:00:00+01:00",
            true,
            "2026-03-29",
            "2026-03-29T22:00:00Z",
        ),
        // Europe/Paris, last Sunday of October 2026 (25th): 03:00 CEST -> 02:00 CET.
        case(
            "Paris aware on the autumn change day, before it",
            PARIS,
            "2026-10-25T00:30:00+02:00",
            true,
            "2026-11-01",
            "2026-11-01T23:00:00Z",
        ),
        case(
            "Paris aware on the autumn change day, after it",
            PARIS,
            "2026-10-25T23:30:00+01:00",
            false,
            "2026-11-09",
            "2026-11-09T23:00:00Z",
        ),
        case(
            "Paris due on the autumn change day (25 h long)",
            PARIS,
            "2026-10-10T12:00:00+02:00",
            false,
            "2026-10-25",
            "2026-10-25T23:00:00Z",
        ),
        // America/Chicago, second Sunday of March 2026 (8th): 02:00 CST -> 03:00 CDT.
        case(
            "Chicago aware on the spring change day, before it",
            CHICAGO,
            "2026-03-08T00:30:00-06:00",
            true,
            "2026-03-15",
            "2026-03-16T05:00:00Z",
        ),
        case(
            "Chicago aware on the spring change day, after it",
            CHICAGO,
            "2026-03-08T23:30:00-05:00",
            false,
            "2026-03-23",
            "2026-03-24T05:00:00Z",
        ),
        case(
            "Chicago due on the spring change day (23 h long)",
            CHICAGO,
            "2026-03-01T23:30:00-06:00",
            true,
            "2026-03-08",
            "2026-03-09T05:00:00Z",
        ),
        // America/Chicago, first Sunday of November 2026 (1st): 02:00 CDT -> 01:00 CST.
        case(
            "Chicago aware on the autumn change day, before it",
            CHICAGO,
            "2026-11-01T00:30:00-05:00",
            false,
            "2026-11-16",
            "2026-11-17T06:00:00Z",
        ),
        case(
            "Chicago aware on the autumn change day, after it",
            CHICAGO,
            "2026-11-01T23:30:00-06:00",
            true,
            "2026-11-08",
            "2026-11-09T06:00:00Z",
        ),
        case(
            "Chicago due on the autumn change day (25 h long)",
            CHICAGO,
            "2026-10-17T12:00:00-05:00",
            false,
            "2026-11-01",
            "2026-11-02T06:00:00Z",
        ),
        // Year end: day 0 in December, due in January of the next year.
        case(
            "year end, 7 days",
            PARIS,
            "2026-12-28T09:00:00+01:00",
            true,
            "2027-01-04",
            "2027-01-04T23:00:00Z",
        ),
        case(
            "year end, 15 days",
            CHICAGO,
            "2026-12-28T09:00:00-06:00",
            false,
            "2027-01-12",
            "2027-01-13T06:00:00Z",
        ),
        // 29 February: 2028 is a leap year, 2027 is not.
        case(
            "leap year 22 Feb + 7",
            PARIS,
            "2028-02-22T12:00:00+01:00",
            true,
            "2028-02-29",
            "2028-02-29T23:00:00Z",
        ),
        case(
            "non-leap year 22 Feb + 7",
            PARIS,
            "2027-02-22T12:00:00+01:00",
            true,
            "2027-03-01",
            "2027-03-01T23:00:00Z",
        ),
        // The same awareness, fatal or not.
        case(
            "7-day rule",
            PARIS,
            "2026-06-01T10:00:00+02:00",
            true,
            "2026-06-08",
            "2026-06-08T22:00:00Z",
        ),
        case(
            "15-day rule",
            PARIS,
            "2026-06-01T10:00:00+02:00",
            false,
            "2026-06-16",
            "2026-06-16T22:00:00Z",
        ),
        // A zone whose midnight the DST change skips: São Paulo went from
        // 00:00 -03 to 01:00 -02 on 4 November 2018, so 3 November ended at
        // 01:00 local.
        case(
            "due day ending in a skipped midnight",
            "America/Sao_Paulo",
            "2018-10-27T12:00:00-03:00",
            true,
            "2018-11-03",
            "2018-11-04T03:00:00Z",
        ),
    ];

    #[test]
    fn initial_obligations_count_calendar_days_in_the_sponsor_zone() {
        for case in INITIAL {
            let due = initial_obligation(at(case.aware_at), case.fatal, &zone(case.zone));
            assert_eq!(
                due,
                Due {
                    kind: case.kind,
                    due_date: date(case.due_date),
                    due_at: at(case.due_at),
                },
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_follow_up_upgrading_to_fatal_starts_the_7_day_clock_from_its_own_awareness() {
        let paris = zone(PARIS);
        let first = initial_obligation(at("2026-05-04T09:00:00+02:00"), false, &paris);
        assert_eq!(first.kind, Initial15Day);
        assert_eq!(first.due_date, date("2026-05-19"));

        let upgrade = initial_obligation(at("2026-05-11T23:30:00+02:00"), true, &paris);
        assert_eq!(
            upgrade,
            Due {
                kind: Initial7Day,
                due_date: date("2026-05-18"),
                due_at: at("2026-05-18T22:00:00Z"),
            }
        );
        assert!(upgrade.due_at < first.due_at);
    }

    #[test]
    fn follow_ups_are_due_8_calendar_days_after_the_initial_submission() {
        let table = [
            // Submitted late in the local evening: the local date counts.
            (
                PARIS,
                "2026-03-25T23:30:00+01:00",
                "2026-04-02",
                "2026-04-02T22:00:00Z",
            ),
            (
                CHICAGO,
                "2026-10-30T00:30:00-05:00",
                "2026-11-07",
                "2026-11-08T06:00:00Z",
            ),
            (
                CHICAGO,
                "2026-10-24T23:30:00-05:00",
                "2026-11-01",
                "2026-11-02T06:00:00Z",
            ),
        ];
        for (name, submitted, due_date, due_at) in table {
            assert_eq!(
                follow_up_obligation(at(submitted), &zone(name)),
                Due {
                    kind: FollowUp8Day,
                    due_date: date(due_date),
                    due_at: at(due_at),
                },
                "{name} {submitted}"
            );
        }
    }

    #[test]
    fn a_site_report_is_late_only_after_more_than_24_hours() {
        let aware = at("2026-03-28T12:00:00+01:00");
        let table = [
            ("2026-03-28T12:00:00+01:00", false),
            ("2026-03-29T12:00:00+01:00", false),
            // 24 h later across the spring change is 13:00 local, not 12:00.
            ("2026-03-29T13:00:00+02:00", false),
            ("2026-03-29T13:00:01+02:00", true),
            ("2026-03-29T11:00:00.000000001Z", true),
            ("2026-03-27T12:00:00+01:00", false),
        ];
        for (received, late) in table {
            assert_eq!(is_late(aware, at(received)), late, "{received}");
        }
    }

    #[test]
    fn sponsor_zones_are_iana_names() {
        assert!(sponsor_zone(PARIS).is_ok());
        assert!(sponsor_zone(CHICAGO).is_ok());
        for bad in ["", " ", "Mars/Olympus_Mons", "CET+1"] {
            let error = sponsor_zone(bad).expect_err(bad);
            assert!(error.contains("sponsor time zone"), "{error}");
        }
    }
}
