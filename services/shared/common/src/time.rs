//! UTC timestamps as the services record them.

/// Now, as RFC 3339 UTC with microseconds, e.g. `2026-11-21T10:00:00.123456Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(jiff::Timestamp::now())
}

pub fn format_rfc3339(at: jiff::Timestamp) -> String {
    at.round(jiff::Unit::Microsecond)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| at.to_string())
}
