//! Each upstream's health, from its `grpc.health.v1.Health/Watch` stream for
//! the gateway's service: SERVING is healthy; NOT_SERVING, an unknown
//! service, a broken stream or an unreachable server is not. A server that
//! does not implement the health service (UNIMPLEMENTED) but answers counts
//! as healthy: the gateway fronts any gRPC service, not only ones that
//! report their health.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::upstream::Backend;

/// Wait before watching again after the stream ended or could not open.
const RETRY: Duration = Duration::from_secs(1);
/// Wait before asking again a server without the health service: asking
/// is what finds out that it stopped answering.
const UNIMPLEMENTED_RETRY: Duration = Duration::from_secs(5);

/// Keeps `backend`'s health up to date, logging each change once, until
/// `stop` (which the backend cancels when it is dropped: the watch holds it
/// weakly, so that a server that left the set is not kept alive by it).
pub(super) async fn watch(service: String, backend: Weak<Backend>, stop: CancellationToken) {
    loop {
        let Some(channel) = backend.upgrade().map(|b| b.channel()) else {
            return;
        };
        let (healthy, why, retry) = tokio::select! {
            _ = stop.cancelled() => return,
            verdict = watch_once(&backend, channel, &service) => verdict,
        };
        record(&backend, healthy, &why);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Follows one Watch stream, recording each status it reports, until it
/// ends: then what the backend's health is and why, and when to ask again.
async fn watch_once(
    backend: &Weak<Backend>,
    channel: tonic::transport::Channel,
    service: &str,
) -> (bool, String, Duration) {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let mut statuses = match client.watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Unimplemented => {
            let why = "it answers but has no health service".to_owned();
            return (true, why, UNIMPLEMENTED_RETRY);
        }
        Err(status) => return (false, unreachable(&status), RETRY),
    };
    loop {
        match statuses.message().await {
            Ok(Some(response)) => {
                let status = response.status();
                let healthy = status == ServingStatus::Serving;
                record(backend, healthy, status.as_str_name());
            }
            Ok(None) => return (false, "its health stream ended".to_owned(), RETRY),
            Err(status) => return (false, unreachable(&status), RETRY),
        }
    }
}

fn unreachable(status: &tonic::Status) -> String {
    format!(
        "health check failed ({}: {})",
        crate::proto::code_name(status.code()),
        status.message()
    )
}

fn record(backend: &Weak<Backend>, healthy: bool, why: &str) {
    let Some(backend) = backend.upgrade() else {
        return;
    };
    if !backend.set_healthy(healthy) {
        return;
    }
    let (uri, address) = (backend.uri.as_str(), backend.address.as_str());
    if healthy {
        tracing::info!(upstream = uri, address, status = why, "upstream healthy");
    } else {
        tracing::warn!(upstream = uri, address, status = why, "upstream unhealthy");
    }
}
