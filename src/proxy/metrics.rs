//! The gateway's metrics (docs/operations.md lists each with its meaning).
//! Per-frame ones are handles resolved once, when the gateway starts; the
//! label lookups left are on paths that happen once per connection, call or
//! error.

use std::collections::HashMap;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tonic::Code;

use crate::metrics::{latency_buckets, register};
use crate::proto::code_name;

/// The label of frames that are not a known action (bad JSON, unknown key).
const INVALID_ACTION: &str = "invalid";

/// The label of pings (a frame with only a `request_id`). In parentheses,
/// as no action's name can be, so that a service's `ping` is counted apart.
const PING: &str = "(ping)";

pub struct GatewayMetrics {
    pub connections_open: IntGauge,
    connections: IntCounter,
    closes: IntCounterVec,
    refused: IntCounterVec,
    /// Looked up once per frame: foldhash, as the events cache, not SipHash
    /// (action names are the service's, not the client's to choose).
    frames_in: HashMap<String, IntCounter, foldhash::fast::RandomState>,
    frames_in_invalid: IntCounter,
    frames_in_ping: IntCounter,
    pub frames_out: IntCounter,
    pub bytes_out: IntCounter,
    error_frames: IntCounterVec,
    upstream_calls: IntCounterVec,
    upstream_call_seconds: HistogramVec,
    pub upstream_streams_open: IntGauge,
    upstream_streams_open_on: IntGaugeVec,
    upstream_healthy: IntGaugeVec,
    upstream_stream_losses: IntCounterVec,
    slow_consumers: IntCounterVec,
    auth_failures: IntCounterVec,
    pub rate_limited: IntCounter,
    pub rate_closes: IntCounter,
    pub session_seconds: Histogram,
}

impl GatewayMetrics {
    /// Registers the gateway's metrics, with a frame counter for each of
    /// `actions` (the gateway's).
    pub fn new<'a>(registry: &Registry, actions: impl Iterator<Item = &'a str>) -> Self {
        let counter = |name: &str, help: &str| {
            register(registry, IntCounter::new(name, help).expect("valid metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let frames = counter_vec(
            "wsgate_ws_frames_in_total",
            "Text frames received from browsers, by action",
            &["action"],
        );
        let frames_in = actions
            .map(|action| (action.to_owned(), frames.with_label_values(&[action])))
            .collect();
        GatewayMetrics {
            connections_open: gauge("wsgate_ws_connections_open", "Open WebSocket connections"),
            connections: counter(
                "wsgate_ws_connections_total",
                "WebSocket connections accepted",
            ),
            closes: counter_vec(
                "wsgate_ws_closes_total",
                "WebSocket connections ended, by close code sent (none: the peer went away)",
                &["code"],
            ),
            refused: counter_vec(
                "wsgate_ws_refused_total",
                "Upgrade requests refused before the WebSocket opened, by reason",
                &["reason"],
            ),
            frames_in_invalid: frames.with_label_values(&[INVALID_ACTION]),
            frames_in_ping: frames.with_label_values(&[PING]),
            frames_in,
            frames_out: counter(
                "wsgate_ws_frames_out_total",
                "Text frames written to browsers",
            ),
            bytes_out: counter(
                "wsgate_ws_bytes_out_total",
                "Bytes of text frames written to browsers",
            ),
            error_frames: counter_vec(
                "wsgate_ws_error_frames_total",
                "Error frames sent to browsers, by gRPC status code",
                &["code"],
            ),
            upstream_calls: counter_vec(
                "wsgate_upstream_calls_total",
                "Unary calls to the upstream service, by method and status code",
                &["method", "code"],
            ),
            upstream_call_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "wsgate_upstream_call_seconds",
                        "Latency of unary calls to the upstream service, by method",
                    )
                    .buckets(latency_buckets()),
                    &["method"],
                )
                .expect("valid metric"),
            ),
            upstream_streams_open: gauge(
                "wsgate_upstream_streams_open",
                "Open bidirectional streams to the upstream service",
            ),
            upstream_streams_open_on: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "wsgate_upstream_server_streams_open",
                        "Open bidirectional streams to the upstream service, by server",
                    ),
                    &["upstream", "address"],
                )
                .expect("valid metric"),
            ),
            upstream_healthy: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "wsgate_upstream_healthy",
                        "Whether an upstream server's health check says it serves (1) or not (0)",
                    ),
                    &["upstream", "address"],
                )
                .expect("valid metric"),
            ),
            upstream_stream_losses: counter_vec(
                "wsgate_upstream_stream_losses_total",
                "Upstream streams that broke or could not be opened, by status code",
                &["code"],
            ),
            slow_consumers: counter_vec(
                "wsgate_ws_slow_consumer_closes_total",
                "Browsers closed (1008) for not reading, by which bound they hit",
                &["bound"],
            ),
            auth_failures: counter_vec(
                "wsgate_auth_failures_total",
                "Tokens refused (at the upgrade, in a first frame or a refresh), by reason",
                &["reason"],
            ),
            rate_limited: counter(
                "wsgate_ws_rate_limited_frames_total",
                "Frames refused (RESOURCE_EXHAUSTED) for passing the per-connection rate",
            ),
            rate_closes: counter(
                "wsgate_ws_rate_limit_closes_total",
                "Connections closed (1008) for flooding past the rate limit",
            ),
            session_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "wsgate_ws_session_seconds",
                        "How long WebSocket connections stayed open",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 10).unwrap_or_default()),
                )
                .expect("valid metric"),
            ),
        }
    }

    pub fn connected(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    /// A connection ended; `code` is the close code sent, if any.
    pub fn closed(&self, code: Option<u16>, open_for: std::time::Duration) {
        self.connections_open.dec();
        let label = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        self.closes.with_label_values(&[&label]).inc();
        self.session_seconds.observe(open_for.as_secs_f64());
    }

    /// A frame for `action`, or one that named none (`None`).
    /// An upgrade refused before it opened: `origin`, `connections`,
    /// `connections_per_ip`, or an authentication reason.
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn frame_in(&self, action: Option<&str>) {
        match action.and_then(|a| self.frames_in.get(a)) {
            Some(counter) => counter.inc(),
            None => self.frames_in_invalid.inc(),
        }
    }

    pub fn ping_in(&self) {
        self.frames_in_ping.inc();
    }

    pub fn error_frame(&self, code: Code) {
        self.error_frames
            .with_label_values(&[code_name(code)])
            .inc();
    }

    pub fn upstream_call(&self, method: &str, code: Code, took: std::time::Duration) {
        self.upstream_calls
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.upstream_call_seconds
            .with_label_values(&[method])
            .observe(took.as_secs_f64());
    }

    /// The open-streams gauge of upstream server `address`, one of those of
    /// `--upstream` `uri`.
    pub fn upstream_streams_open_on(&self, uri: &str, address: &str) -> IntGauge {
        self.upstream_streams_open_on
            .with_label_values(&[uri, address])
    }

    /// The health gauge of upstream server `address` of `uri`.
    pub fn upstream_healthy(&self, uri: &str, address: &str) -> IntGauge {
        self.upstream_healthy.with_label_values(&[uri, address])
    }

    /// Drops the series of a server that has left: a name's addresses come
    /// and go (new ones at each deploy, on some platforms), and the series
    /// of every address ever seen would grow without bound.
    pub fn forget_upstream(&self, uri: &str, address: &str) {
        // Absent (never watched, so no health series) is fine.
        let _ = self
            .upstream_streams_open_on
            .remove_label_values(&[uri, address]);
        let _ = self.upstream_healthy.remove_label_values(&[uri, address]);
    }

    pub fn upstream_stream_lost(&self, code: Code) {
        self.upstream_stream_losses
            .with_label_values(&[code_name(code)])
            .inc();
    }

    /// `bound`: `frames`, `bytes` or `write_timeout`.
    pub fn slow_consumer(&self, bound: &str) {
        self.slow_consumers.with_label_values(&[bound]).inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }
}
