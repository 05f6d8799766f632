//! The chat server's metrics (docs/operations.md lists each with its
//! meaning). Recorded per batch, per stream or per call; the fan-out counts
//! a batch's deliveries once per batch, not once per member.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tonic::Code;

use super::hub::Committed;
use crate::metrics::{latency_buckets, register};
use crate::proto::code_name;

pub struct ServerMetrics {
    pub streams_open: IntGauge,
    pub streams: IntCounter,
    pub messages_stored: IntCounter,
    pub messages_duplicate: IntCounter,
    pub messages_failed: IntCounter,
    pub messages_changed: IntCounter,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub deliveries: IntCounter,
    pub slow_streams: IntCounter,
    auth_failures: IntCounterVec,
    error_events: IntCounterVec,
    requests: IntCounterVec,
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
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
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
            messages_changed: counter(
                "wsgate_server_messages_changed_total",
                "Messages edited or deleted by their sender",
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
            auth_failures: counter_vec(
                "wsgate_server_auth_failures_total",
                "Calls and streams refused (UNAUTHENTICATED) for their token, by reason",
                &["reason"],
            ),
            error_events: counter_vec(
                "wsgate_server_error_events_total",
                "Error events sent on Chat streams (a frame refused, a message not stored), by status code",
                &["code"],
            ),
            requests: counter_vec(
                "wsgate_server_requests_total",
                "Unary calls answered, by method and status code",
                &["method", "code"],
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
        self.messages_changed.inc_by(done.changed);
        self.deliveries.inc_by(done.deliveries);
        self.slow_streams.inc_by(done.slow_ended);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// An error event sent on a stream (a frame refused, a message not
    /// stored).
    pub fn error_event(&self, code: Code) {
        self.error_events
            .with_label_values(&[code_name(code)])
            .inc();
    }

    /// A unary call answered.
    pub fn request(&self, method: &str, code: Code) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
    }
}
