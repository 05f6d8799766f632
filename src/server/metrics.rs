//! The chat server's metrics (docs/operations.md lists each with its
//! meaning). Recorded per batch, per stream or per call; the fan-out counts
//! a batch's deliveries once per batch, not once per member.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::hub::Committed;
use crate::metrics::{latency_buckets, register};

pub struct ServerMetrics {
    pub streams_open: IntGauge,
    pub streams: IntCounter,
    pub messages_stored: IntCounter,
    pub messages_duplicate: IntCounter,
    pub messages_failed: IntCounter,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub deliveries: IntCounter,
    pub slow_streams: IntCounter,
}

impl ServerMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            register(registry, IntCounter::new(name, help).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        ServerMetrics {
            streams_open: register(
                registry,
                IntGauge::new("wsgate_server_streams_open", "Open Chat streams")
                    .expect("valid metric"),
            ),
            streams: counter("wsgate_server_streams_total", "Chat streams opened"),
            messages_stored: counter(
                "wsgate_server_messages_stored_total",
                "Messages committed to storage (each confirmed to its sender)",
            ),
            messages_duplicate: counter(
                "wsgate_server_messages_duplicate_total",
                "Resent messages recognised as already stored",
            ),
            messages_failed: counter(
                "wsgate_server_messages_failed_total",
                "Messages the store failed to commit (the sender got an error)",
            ),
            batch_size: histogram(
                "wsgate_server_commit_batch_size",
                "Writes per group-commit transaction",
                prometheus::exponential_buckets(1.0, 2.0, 11).unwrap_or_default(),
            ),
            commit_seconds: histogram(
                "wsgate_server_commit_seconds",
                "Time to commit one batch",
                latency_buckets(),
            ),
            deliveries: counter(
                "wsgate_server_fanout_deliveries_total",
                "Message frames queued to room members' streams",
            ),
            slow_streams: counter(
                "wsgate_server_slow_streams_ended_total",
                "Streams ended (RESOURCE_EXHAUSTED) for falling behind their room",
            ),
        }
    }

    /// Records what one committed batch did.
    pub fn committed(&self, done: Committed) {
        self.messages_stored.inc_by(done.stored);
        self.messages_duplicate.inc_by(done.duplicates);
        self.messages_failed.inc_by(done.failed);
        self.deliveries.inc_by(done.deliveries);
        self.slow_streams.inc_by(done.slow_ended);
    }
}
