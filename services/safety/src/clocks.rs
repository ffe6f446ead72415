//! Regulatory clocks (DESIGN §6): calendar days counted in the sponsor's
//! time zone, stored as UTC.
//!
//! Day 0 is the calendar day, in the sponsor's time zone, of the sponsor's
//! first awareness of the minimum information. An obligation is due by the
//! end of its due calendar day in that time zone.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

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

/// The initial report obligation of a SUSAR whose day 0 is the sponsor's
/// awareness at `aware_at`.
pub fn initial_obligation(
    aware_at: Timestamp,
    fatal_or_life_threatening: bool,
    zone: &TimeZone,
) -> Due {
    let _ = (aware_at, fatal_or_life_threatening, zone);
    unimplemented!("written on branch safety-rules")
}

/// The follow-up obligation after a 7-day initial report submitted at
/// `initial_submitted_at`.
pub fn follow_up_obligation(initial_submitted_at: Timestamp, zone: &TimeZone) -> Due {
    let _ = (initial_submitted_at, zone);
    unimplemented!("written on branch safety-rules")
}

/// A site report is late when the sponsor received it more than 24 h after
/// the site became aware.
pub fn is_late(site_aware_at: Timestamp, received_at: Timestamp) -> bool {
    let _ = (site_aware_at, received_at);
    unimplemented!("written on branch safety-rules")
}

/// The sponsor's time zone by its IANA name, e.g. "Europe/Paris".
pub fn sponsor_zone(name: &str) -> Result<TimeZone, String> {
    let _ = name;
    unimplemented!("written on branch safety-rules")
}
