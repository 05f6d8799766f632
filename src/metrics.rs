//! Prometheus metrics: the registry a gateway and a server record into, and
//! the `/metrics` endpoint that renders it in the text format.
//!
//! Each component registers its own metric set ([`crate::proxy`]'s and
//! [`crate::server`]'s `metrics` modules) in a [`Registry`] it is given, so
//! `wsgate all` shows both on one page and tests get one registry per
//! instance. The metrics themselves are atomics: recording takes no lock,
//! and the hot paths hold handles resolved once, never a label lookup.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus::Registry as MetricsRegistry;

/// A new registry with the process's own metrics (CPU, memory, open file
/// descriptors, start time; Linux only) registered.
pub fn registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    if let Err(e) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::debug!(error = %e, "no process metrics");
    }
    registry
}

/// The registry in Prometheus's text exposition format.
pub fn render(registry: &Registry) -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /metrics` for `registry`.
fn routes(registry: Registry) -> Router {
    Router::new().route("/metrics", get(move || async move { render(&registry) }))
}

/// Serves `/metrics` on `listener` until `shutdown` is cancelled:
/// `--metrics-listen`, a port apart from the public ones.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(local = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, routes(registry))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Registers `metric` in `registry` and returns it. Names are fixed at
/// compile time and unique per component; the one failure, a name
/// registered twice (a second component of the same kind on one registry),
/// only loses that metric's page entry, so it is logged, not fatal.
pub(crate) fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::warn!(error = %e, "metric not registered");
    }
    metric
}

/// Buckets for latencies in seconds: 100 µs to ~26 s, doubling.
pub(crate) fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 19).unwrap_or_default()
}

/// Counts one more in a gauge until dropped (an open stream, a connection).
pub(crate) struct Tracked(prometheus::IntGauge);

impl Tracked {
    pub(crate) fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Tracked(gauge.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.dec();
    }
}
