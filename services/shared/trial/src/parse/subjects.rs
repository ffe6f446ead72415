//! Subjects: covariates with their plausibility bounds, and eligibility.

use super::*;

pub(super) fn read_subject_ids(
    top: &Object<'_>,
    sites: &[Site],
    problems: &mut Problems,
) -> Option<SubjectIds> {
    let Some(value) = top.get("subject_ids") else {
        return Some(SubjectIds::default());
    };
    let object = Object::new(value, "subject_ids", &["site_prefix"], problems)?;
    let subject_ids = SubjectIds {
        site_prefix: object.bool_or("site_prefix", false, problems),
    };
    if subject_ids.site_prefix {
        check_prefixes_name_one_site(sites, problems);
    }
    Some(subject_ids)
}

/// With site `FR` beside `FR-MTP`, `FR-MTP-001` would have the form of both
/// sites' ids, and one site could probe the other's subjects again.
fn check_prefixes_name_one_site(sites: &[Site], problems: &mut Problems) {
    for short in sites {
        let prefix = format!("{}-", short.id);
        if let Some(long) = sites.iter().find(|s| s.id.starts_with(&prefix)) {
            problems.add(
                "subject_ids.site_prefix",
                format!(
                    "site {} begins with site {} and a hyphen, so their subject ids could not be told apart",
                    long.id, short.id
                ),
            );
        }
    }
}

pub(super) fn read_covariates(top: &Object<'_>, problems: &mut Problems) -> Vec<Covariate> {
    let mut covariates = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("covariates", false, MAX_COVARIATES, problems) {
        let Some(object) = Object::new(
            value,
            &path,
            &["id", "type", "values", "min", "max"],
            problems,
        ) else {
            continue;
        };
        let id = object.identifier("id", problems);
        if id.as_deref() == Some("site") {
            problems.add(
                &object.field_path("id"),
                "'site' is reserved for the site factor",
            );
        }
        let kind = read_covariate_kind(&object, problems);
        if let (Some(id), Some(kind)) = (id, kind) {
            covariates.push(Covariate { id, kind });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(covariates.iter().map(|c| c.id.as_str())),
        "covariate",
        problems,
    );
    covariates
}

fn read_covariate_kind(object: &Object<'_>, problems: &mut Problems) -> Option<CovariateKind> {
    let type_name = object.string("type", problems)?;
    let bound = |key: &str, problems: &mut Problems| {
        object
            .get(key)
            .and_then(|v| as_f64(v, &object.field_path(key), problems))
    };
    let (min, max) = (bound("min", problems), bound("max", problems));
    if let (Some(low), Some(high)) = (min, max)
        && low > high
    {
        problems.add(
            &object.field_path("min"),
            format!("min {low} is above max {high}"),
        );
    }
    let numeric_only = |problems: &mut Problems| {
        for key in ["min", "max"] {
            if object.get(key).is_some() {
                problems.add(
                    &object.field_path(key),
                    format!("only integer and decimal covariates take {key}"),
                );
            }
        }
    };
    match type_name.as_str() {
        "integer" => Some(CovariateKind::Integer { min, max }),
        "decimal" => Some(CovariateKind::Decimal { min, max }),
        "boolean" => {
            numeric_only(problems);
            Some(CovariateKind::Boolean)
        }
        "enum" => {
            numeric_only(problems);
            let values = object.string_list("values", MAX_ENUM_VALUES, problems);
            if values.is_empty() {
                problems.add(
                    &object.field_path("values"),
                    "an enum covariate needs at least one value",
                );
            }
            let mut seen = BTreeSet::new();
            for value in &values {
                check_identifier(value, &object.field_path("values"), problems);
                if !seen.insert(value) {
                    problems.add(
                        &object.field_path("values"),
                        format!("duplicate value '{value}'"),
                    );
                }
            }
            Some(CovariateKind::Enum { values })
        }
        other => {
            problems.add(
                &object.field_path("type"),
                format!("unknown type '{other}'; expected integer, decimal, boolean or enum"),
            );
            None
        }
    }
}

pub(super) fn read_eligibility(
    top: &Object<'_>,
    covariates: &[Covariate],
    problems: &mut Problems,
) -> Vec<Criterion> {
    let mut criteria = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("eligibility", false, MAX_CRITERIA, problems) {
        let Some(object) = Object::new(value, &path, &["id", "rule"], problems) else {
            continue;
        };
        let id = object.identifier("id", problems);
        let rule = object.string("rule", problems).and_then(|text| {
            check_rule_length(&text, &object.field_path("rule"), problems)?;
            parse_rule(&text)
                .map_err(|reason| {
                    problems.add(&object.field_path("rule"), format!("'{text}': {reason}"))
                })
                .ok()
        });
        let Some(rule) = rule else { continue };
        let rule_path = object.field_path("rule");
        match covariates.iter().find(|c| c.id == rule.covariate) {
            None => problems.add(
                &rule_path,
                format!("names unknown covariate '{}'", rule.covariate),
            ),
            Some(covariate) => {
                if let Err(reason) = rule.condition.check_against(&covariate.kind) {
                    problems.add(&rule_path, format!("'{rule}': {reason}"));
                }
            }
        }
        if let Some(id) = id {
            criteria.push(Criterion { id, rule });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(criteria.iter().map(|c| c.id.as_str())),
        "criterion",
        problems,
    );
    criteria
}
