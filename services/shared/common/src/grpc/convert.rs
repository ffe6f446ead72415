//! Conversions every service's gRPC layer needs.

/// Converts a stored RFC 3339 time to a protobuf timestamp. A malformed value
/// (which a store never writes) becomes `None` rather than a wrong time.
pub fn to_proto_timestamp(text: &str) -> Option<prost_types::Timestamp> {
    let at: jiff::Timestamp = text.parse().ok()?;
    Some(prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    })
}
