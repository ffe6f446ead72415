//! The instruments every service records into (docs/architecture.md,
//! "Operations"). Labels are method names, status codes, trial ids and
//! fixed outcome words: never a subject, an arm or a code. Until
//! [`super::init`] installs an exporting meter provider they record
//! nothing, at the cost of a no-op call.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use super::INSTRUMENTATION_SCOPE;

/// Seconds, from half a millisecond (an uncontended lock) to ten seconds
/// (a lock wait at its limit).
const DURATION_BOUNDARIES: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Writes per group-committed transaction, up to the largest batch.
const BATCH_BOUNDARIES: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

struct Instruments {
    rpc_duration: Histogram<f64>,
    allocations: Counter<u64>,
    lock_wait: Histogram<f64>,
    store_commit: Histogram<f64>,
    batch_writes: Histogram<u64>,
    pending_codes: Gauge<u64>,
    overdue_obligations: Gauge<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(INSTRUMENTATION_SCOPE);
        Instruments {
            rpc_duration: duration(
                &meter,
                "rpc.server.call.duration",
                "Duration of each RPC, streams included, by method and gRPC status code.",
            ),
            allocations: meter
                .u64_counter("equipoise.allocations")
                .with_unit("{allocation}")
                .with_description(
                    "Randomise outcomes by trial: allocated, replayed, or the refusal's status code.",
                )
                .build(),
            lock_wait: duration(
                &meter,
                "equipoise.allocation.lock.wait.duration",
                "Time spent waiting for a stratum's allocation lock, by whether it was acquired.",
            ),
            store_commit: duration(
                &meter,
                "equipoise.store.commit.duration",
                "Duration of each durable store transaction, by service and operation.",
            ),
            batch_writes: meter
                .u64_histogram("equipoise.store.batch.writes")
                .with_unit("{write}")
                .with_description("Writes sharing each group-committed transaction, by service.")
                .with_boundaries(BATCH_BOUNDARIES.to_vec())
                .build(),
            pending_codes: meter
                .u64_gauge("equipoise.treatment_codes.pending")
                .with_unit("{allocation}")
                .with_description("Committed allocations still waiting for a treatment code (the reconciler's backlog).")
                .build(),
            overdue_obligations: meter
                .u64_gauge("equipoise.safety.obligations.overdue")
                .with_unit("{obligation}")
                .with_description("Open regulatory reporting obligations past their due time.")
                .build(),
        }
    })
}

fn duration(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BOUNDARIES.to_vec())
        .build()
}

/// One finished RPC. `path` is the gRPC path, `/package.Service/Method`.
pub fn record_rpc(service: &str, method: &str, status_code: &'static str, elapsed: Duration) {
    instruments().rpc_duration.record(
        elapsed.as_secs_f64(),
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", status_code),
        ],
    );
}

/// One `Randomise` outcome: `allocated`, `replayed`, or a status code name.
pub fn record_allocation(trial_id: &str, outcome: &'static str) {
    instruments().allocations.add(
        1,
        &[
            KeyValue::new("trial", trial_id.to_owned()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

pub fn record_lock_wait(elapsed: Duration, acquired: bool) {
    instruments().lock_wait.record(
        elapsed.as_secs_f64(),
        &[KeyValue::new(
            "outcome",
            if acquired { "acquired" } else { "refused" },
        )],
    );
}

pub fn record_store_commit(service: &'static str, operation: &'static str, elapsed: Duration) {
    instruments().store_commit.record(
        elapsed.as_secs_f64(),
        &[
            KeyValue::new("service", service),
            KeyValue::new("operation", operation),
        ],
    );
}

/// One group-committed transaction of `writes` writes.
pub fn record_batch(service: &'static str, writes: usize) {
    let writes = u64::try_from(writes).unwrap_or(u64::MAX);
    instruments()
        .batch_writes
        .record(writes, &[KeyValue::new("service", service)]);
}

pub fn record_pending_codes(pending: u64) {
    instruments().pending_codes.record(pending, &[]);
}

pub fn record_overdue_obligations(overdue: u64) {
    instruments().overdue_obligations.record(overdue, &[]);
}
