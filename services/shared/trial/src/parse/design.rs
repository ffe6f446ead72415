//! The design: arms, sites, caps and crossover periods.

use super::*;

pub(super) fn read_arms(top: &Object<'_>, problems: &mut Problems) -> Vec<Arm> {
    let mut arms = Vec::new();
    let mut paths = Vec::new();
    let items = top.list("arms", true, MAX_ARMS, problems);
    let declared = items.len();
    for (path, value) in items {
        let Some(arm) = Object::new(value, &path, &["id", "label", "ratio", "active"], problems)
        else {
            continue;
        };
        let id = arm.identifier("id", problems);
        let label = arm.string("label", problems);
        let ratio = arm.u32("ratio", problems).filter(|r| {
            let path = arm.field_path("ratio");
            positive(*r, &path, problems) && at_most(*r, MAX_RATIO, &path, problems)
        });
        let active = arm.bool_or("active", true, problems);
        if let (Some(id), Some(label), Some(ratio)) = (id, label, ratio) {
            arms.push(Arm {
                id,
                label,
                ratio,
                active,
            });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(arms.iter().map(|a| a.id.as_str())),
        "arm",
        problems,
    );
    if top.get("arms").is_some() && declared < 2 {
        problems.add("arms", "a randomised trial needs at least two arms");
    }
    match checked_ratio_sum(&arms) {
        Some(sum) if sum <= MAX_RATIO_SUM => {}
        sum => problems.add(
            "arms",
            format!(
                "the ratios add up to {}, above the limit of {MAX_RATIO_SUM}",
                sum.map_or_else(|| "more than 4294967295".to_owned(), |s| s.to_string())
            ),
        ),
    }
    arms
}

pub(super) fn read_sites(top: &Object<'_>, problems: &mut Problems) -> Vec<Site> {
    let mut sites = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("sites", true, MAX_SITES, problems) {
        let Some(site) = Object::new(value, &path, &["id", "cap"], problems) else {
            continue;
        };
        let id = site.identifier("id", problems);
        let cap = site.optional_u32("cap", problems);
        if let Some(cap) = cap {
            positive(cap, &site.field_path("cap"), problems);
            at_most(cap, MAX_CAP, &site.field_path("cap"), problems);
        }
        if let Some(id) = id {
            sites.push(Site { id, cap });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(sites.iter().map(|s| s.id.as_str())),
        "site",
        problems,
    );
    if top.get("sites").is_some() && sites.is_empty() {
        problems.add("sites", "at least one site is required");
    }
    sites
}

pub(super) fn read_caps(top: &Object<'_>, sites: &[Site], problems: &mut Problems) -> Option<Caps> {
    let Some(value) = top.get("caps") else {
        return Some(Caps {
            total: None,
            per_stratum: None,
        });
    };
    let caps = Object::new(value, "caps", &["total", "per_stratum"], problems)?;
    let total = caps.optional_u32("total", problems);
    let per_stratum = caps.optional_u32("per_stratum", problems);
    for (key, cap) in [("total", total), ("per_stratum", per_stratum)] {
        if let Some(cap) = cap {
            positive(cap, &caps.field_path(key), problems);
            at_most(cap, MAX_CAP, &caps.field_path(key), problems);
        }
    }
    let site_caps: Option<u64> = sites.iter().map(|s| s.cap.map(u64::from)).sum();
    if let (Some(total), Some(sum)) = (total, site_caps)
        && sum < u64::from(total)
    {
        problems.add(
            "caps.total",
            format!("{total} can never be reached: the site caps add up to {sum}"),
        );
    }
    Some(Caps { total, per_stratum })
}

pub(super) fn read_periods(top: &Object<'_>, arms: &[Arm], problems: &mut Problems) -> Vec<Period> {
    let mut periods = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("periods", false, MAX_PERIODS, problems) {
        let keys = &[
            "id",
            "months",
            "crossover",
            "planned_unblinding_at_start",
            "planned_unblinding_roles",
        ];
        let Some(object) = Object::new(value, &path, keys, problems) else {
            continue;
        };
        let id = object.identifier("id", problems);
        let months = object.u32("months", problems);
        let crossover = object
            .get("crossover")
            .and_then(|v| read_crossover(v, &object.field_path("crossover"), arms, problems));
        let planned_unblinding_at_start =
            object.bool_or("planned_unblinding_at_start", false, problems);
        let planned_unblinding_roles = read_planned_unblinding_roles(&object, problems);
        if let (Some(id), Some(months)) = (id, months) {
            positive(months, &object.field_path("months"), problems);
            at_most(months, MAX_MONTHS, &object.field_path("months"), problems);
            periods.push(Period {
                id,
                months,
                crossover,
                planned_unblinding_at_start,
                planned_unblinding_roles,
            });
            paths.push(path);
        }
    }
    // A planned reveal at the start of the first period would be due at
    // randomisation: the subject would never be blinded.
    if let (Some(first), Some(path)) = (periods.first(), paths.first())
        && first.planned_unblinding_at_start
    {
        problems.add(
            &format!("{path}.planned_unblinding_at_start"),
            "the first period cannot have a planned reveal at its start: it would unblind every subject at randomisation",
        );
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(periods.iter().map(|p| p.id.as_str())),
        "period",
        problems,
    );
    periods
}

/// A period's `planned_unblinding_roles`, checked like
/// `unblinding.emergency_roles`; missing gives the default.
fn read_planned_unblinding_roles(object: &Object<'_>, problems: &mut Problems) -> Vec<String> {
    if object.get("planned_unblinding_roles").is_none() {
        return Period::default_planned_unblinding_roles();
    }
    let path = object.field_path("planned_unblinding_roles");
    let roles = object.string_list("planned_unblinding_roles", MAX_LIST_NAMES, problems);
    for role in roles
        .iter()
        .filter(|r| !PLANNED_UNBLINDING_ROLES.contains(&r.as_str()))
    {
        problems.add(
            &path,
            format!(
                "'{role}' may not take a planned reveal; expected some of {}",
                PLANNED_UNBLINDING_ROLES.join(", ")
            ),
        );
    }
    if roles.is_empty() {
        problems.add(&path, "someone must be able to take the planned reveal");
    }
    roles
}

fn read_crossover(
    value: &Value,
    path: &str,
    arms: &[Arm],
    problems: &mut Problems,
) -> Option<Crossover> {
    let object = Object::new(value, path, &["from", "to"], problems)?;
    let from = object.string("from", problems)?;
    let to = object.string("to", problems)?;
    for (key, arm) in [("from", &from), ("to", &to)] {
        if !arms.iter().any(|a| &a.id == arm) {
            problems.add(&object.field_path(key), format!("'{arm}' is not an arm"));
        }
    }
    if from == to {
        problems.add(path, "a crossover goes from one arm to another");
    }
    Some(Crossover { from, to })
}
