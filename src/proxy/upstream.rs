//! The gRPC side of the gateway: one or more upstream servers of the same
//! service (a few shared HTTP/2 connections to each), unary calls, and the
//! reconnecting bidirectional stream that each WebSocket session opens at
//! its first stream frame. With several upstreams, each call and each stream
//! open goes to the next healthy one in turn (`health` watches them).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use prost_reflect::DynamicMessage;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::codec::{DynamicCodec, StreamCodec};
use super::events::{Event, Events};
use super::gateway::{Gateway, StreamMethod, UnaryMethod};
use super::metrics::GatewayMetrics;
use super::outbound::ToClient;
use super::quiet_log::QuietLog;
use super::transcode::error_json;
use crate::metrics::Tracked;
use crate::proto::HTTP2_CONNECTION_WINDOW;
use crate::proto::code_name;
use crate::tls::ClientTls;

/// First wait before re-opening a lost stream; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Frames a session may queue for its stream while it is being re-opened.
const LINK_QUEUE: usize = 256;

/// Reset streams each upstream connection remembers (see [`Upstream::new`]):
/// as many as the sessions one connection typically carries.
const RESET_STREAMS_REMEMBERED: usize = 16_384;

/// A cheap-to-clone handle on the upstream service.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

/// One server of the upstream service.
pub(super) struct Backend {
    /// As configured, e.g. `http://10.0.0.5:50051`: the metrics' label.
    pub(super) uri: String,
    /// HTTP/2 connections, used in turn. One connection is driven by one
    /// task, so under load a single one would keep the gateway on one core;
    /// several also keep the streams per connection well below the limits
    /// an HTTP/2 peer may set.
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// What its health check last said; healthy until it says otherwise,
    /// so that the gateway serves at once on start.
    healthy: AtomicBool,
    /// Cancelled when it turns unhealthy (and replaced when it is healthy
    /// again): streams open on it then move to a healthy one. Locked once
    /// per stream open, never per frame.
    draining: Mutex<CancellationToken>,
    streams_open: prometheus::IntGauge,
    healthy_gauge: Option<prometheus::IntGauge>,
}

struct Shared {
    backends: Vec<Backend>,
    /// The next backend in turn.
    next: AtomicUsize,
    gateway: Arc<Gateway>,
    events: Events,
    unary_timeout: Duration,
    metrics: Arc<GatewayMetrics>,
    /// An outage is noticed by every session at once: one line, not one
    /// per session.
    lost_log: QuietLog,
    restored_log: QuietLog,
}

impl Upstream {
    /// Prepares `connections` channels to each of `uris` without
    /// connecting: the gateway starts, and keeps serving its page, while
    /// the upstream is down. With `tls`, each URI must be `https://` and
    /// every connection is opened by [`ClientTls::connect`]; without, they
    /// must be `http://`.
    pub fn new(
        uris: &[String],
        tls: Option<ClientTls>,
        connections: usize,
        gateway: Arc<Gateway>,
        unary_timeout: Duration,
        metrics: Arc<GatewayMetrics>,
    ) -> anyhow::Result<Self> {
        if uris.is_empty() {
            bail!("no upstream address given");
        }
        let several = uris.len() > 1;
        let backends = uris
            .iter()
            .map(|uri| {
                let channels = channels(uri, tls.as_ref(), connections)?;
                // One upstream is the only choice whatever its health: it is
                // not checked (no gauge, no connection before a session's).
                let healthy_gauge = several.then(|| metrics.upstream_healthy(uri));
                if let Some(gauge) = &healthy_gauge {
                    gauge.set(1);
                }
                Ok(Backend {
                    uri: uri.clone(),
                    channels,
                    next: AtomicUsize::new(0),
                    healthy: AtomicBool::new(true),
                    draining: Mutex::new(CancellationToken::new()),
                    streams_open: metrics.upstream_streams_open_on(uri),
                    healthy_gauge,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Upstream {
            shared: Arc::new(Shared {
                backends,
                next: AtomicUsize::new(0),
                gateway,
                events: Events::default(),
                unary_timeout,
                metrics,
                lost_log: QuietLog::new(),
                restored_log: QuietLog::new(),
            }),
        })
    }

    /// Watches the health of every upstream until `stop` (see `health`),
    /// when there are several to choose from.
    pub fn watch_health(&self, stop: CancellationToken) {
        let backends = self.shared.backends.len();
        if backends < 2 {
            return;
        }
        for index in 0..backends {
            tokio::spawn(super::health::watch(self.clone(), index, stop.clone()));
        }
    }

    pub(super) fn backend(&self, index: usize) -> &Backend {
        &self.shared.backends[index]
    }

    pub fn gateway(&self) -> &Gateway {
        &self.shared.gateway
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.shared.metrics
    }

    /// The backend the next call or stream goes to: the next healthy one
    /// in turn, other than `avoid` (the one a stream was just lost on) when
    /// another is healthy. When none is, the next in turn all the same: the
    /// call fails or the stream retries as with one upstream that is down.
    fn pick(&self, avoid: Option<usize>) -> usize {
        let backends = &self.shared.backends;
        let n = backends.len();
        if n == 1 {
            return 0;
        }
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let turn = (0..n).map(|i| (start + i) % n);
        let healthy = |i: &usize| backends[*i].healthy.load(Ordering::Relaxed);
        turn.clone()
            .filter(healthy)
            .find(|i| Some(*i) != avoid)
            .or_else(|| turn.clone().find(healthy))
            .or_else(|| turn.clone().find(|i| Some(*i) != avoid))
            .unwrap_or(start % n)
    }

    /// Whether a backend other than `index` is healthy.
    fn healthy_besides(&self, index: usize) -> bool {
        let backends = self.shared.backends.iter().enumerate();
        backends
            .filter(|(i, _)| *i != index)
            .any(|(_, b)| b.healthy.load(Ordering::Relaxed))
    }

    /// Calls a unary method.
    pub async fn unary(
        &self,
        method: &UnaryMethod,
        request: DynamicMessage,
        metadata: &MetadataMap,
    ) -> Result<DynamicMessage, Status> {
        let started = std::time::Instant::now();
        let result = self.call(method, request, metadata).await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.shared
            .metrics
            .upstream_call(&method.action, code, started.elapsed());
        result
    }

    async fn call(
        &self,
        method: &UnaryMethod,
        request: DynamicMessage,
        metadata: &MetadataMap,
    ) -> Result<DynamicMessage, Status> {
        let backend = self.backend(self.pick(None));
        let mut grpc = tonic::client::Grpc::new(backend.channel());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
        let mut request = Request::new(request);
        *request.metadata_mut() = metadata.clone();
        request.set_timeout(self.shared.unary_timeout);
        let codec = DynamicCodec::new(method.output.clone());
        let response = grpc.unary(request, method.path.clone(), codec).await?;
        Ok(response.into_inner())
    }

    async fn open_stream(
        backend: &Backend,
        method: &StreamMethod,
        requests: mpsc::Receiver<Box<DynamicMessage>>,
        metadata: &MetadataMap,
    ) -> Result<tonic::Streaming<Bytes>, Status> {
        let mut grpc = tonic::client::Grpc::new(backend.channel());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
        let mut requests = Request::new(ReceiverStream::new(requests).map(|frame| *frame));
        *requests.metadata_mut() = metadata.clone();
        Ok(grpc
            .streaming(requests, method.path.clone(), StreamCodec)
            .await?
            .into_inner())
    }
}

impl Backend {
    /// The next connection in turn.
    pub(super) fn channel(&self) -> Channel {
        let channels = &self.channels;
        channels[self.next.fetch_add(1, Ordering::Relaxed) % channels.len()].clone()
    }

    /// Records what its health check says; true if that is a change.
    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        if self.healthy.swap(healthy, Ordering::Relaxed) == healthy {
            return false;
        }
        if let Some(gauge) = &self.healthy_gauge {
            gauge.set(i64::from(healthy));
        }
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        if healthy {
            *draining = CancellationToken::new();
        } else {
            draining.cancel();
        }
        true
    }

    /// Cancelled when this backend turns unhealthy.
    fn draining(&self) -> CancellationToken {
        self.draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `connections` lazy channels to `uri`.
fn channels(
    uri: &str,
    tls: Option<&ClientTls>,
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let parsed: Uri = uri.parse()?;
    let dial = match (parsed.scheme_str(), tls) {
        (Some("http"), None) | (Some("https"), Some(_)) => uri.to_owned(),
        (Some("https"), None) => bail!("an https:// upstream needs TLS settings"),
        (Some("http"), Some(_)) => bail!("TLS settings given for a plaintext http:// upstream"),
        _ => bail!("the upstream URI is neither http:// nor https://"),
    };
    // tonic refuses a custom connector for an https:// endpoint (it
    // would add its own TLS): dial an http:// endpoint through ours,
    // and keep the https:// origin on the requests.
    let dial = match tls {
        Some(_) => dial.replacen("https://", "http://", 1),
        None => dial,
    };
    let mut endpoint = Endpoint::from_shared(dial)?;
    if tls.is_some() {
        endpoint = endpoint.origin(parsed);
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Notices a dead upstream even when no call is active.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        // When browsers leave, their streams are reset while the service
        // may still be sending to them. h2 ignores frames for a reset
        // stream it remembers (by default only 50, for 1 s) and counts
        // each one for a forgotten stream as a peer error, never
        // forgetting the count; at 1,024 it closes the connection and
        // every session on it. The upstream is the service this gateway
        // was configured for, not an attacker: remember more resets, for
        // longer, and keep no such count.
        .http2_max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED)
        .http2_reset_stream_duration(Duration::from_secs(10))
        .http2_max_local_error_reset_streams(None);
    Ok((0..connections.max(1))
        .map(|_| match tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                let tls = tls.clone();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
                    let tls = tls.clone();
                    async move { tls.connect(uri).await }
                }))
            }
        })
        .collect())
}

/// A session's bidirectional stream. Dropping it cancels the upstream call
/// at once, so the service sees the client leave.
pub struct StreamLink {
    /// Boxed, as are the frames of the request stream: a channel allocates
    /// its slots 32 at a time, and an idle session would otherwise hold two
    /// blocks of 32 messages (~1.3 KB each) for nothing.
    tx: mpsc::Sender<Box<DynamicMessage>>,
    _cancel: DropGuard,
}

impl StreamLink {
    /// Starts the task that keeps the stream open for the session.
    /// `metadata` goes with each open; when it changes (a refreshed
    /// token), the stream is re-opened with it and the state replayed.
    pub fn open(
        upstream: Upstream,
        client: ToClient,
        metadata: watch::Receiver<Arc<MetadataMap>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let cancel = CancellationToken::new();
        tokio::spawn(run_link(upstream, rx, client, metadata, cancel.clone()));
        StreamLink {
            tx,
            _cancel: cancel.drop_guard(),
        }
    }

    /// Queues a frame for the stream; gives it back if too many are waiting
    /// for a stream that is being re-opened.
    pub fn try_send(&self, frame: DynamicMessage) -> Result<(), DynamicMessage> {
        self.tx
            .try_send(Box::new(frame))
            .map_err(|e| *e.into_inner())
    }
}

/// Keeps one upstream stream open: forwards the session's frames up and the
/// service's frames down; when the stream breaks, tells the browser once,
/// then re-opens it with backoff and replays the newest resume state.
async fn run_link(
    upstream: Upstream,
    mut from_session: mpsc::Receiver<Box<DynamicMessage>>,
    client: ToClient,
    mut metadata: watch::Receiver<Arc<MetadataMap>>,
    cancel: CancellationToken,
) {
    let Some(method) = upstream.gateway().stream() else {
        return;
    };
    let mut resume: Option<Bytes> = None;
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    let several = upstream.shared.backends.len() > 1;
    let mut lost_on = None;
    // New credentials re-open on the same server.
    let mut reopen_on = None;
    loop {
        let index = reopen_on.take().unwrap_or_else(|| upstream.pick(lost_on));
        let backend = upstream.backend(index);
        let (up_tx, up_rx) = mpsc::channel(32);
        // Encoded by this gateway from its own descriptors, so it decodes;
        // the channel is new and empty, so the send cannot fail.
        if let Some(state) = resume
            .as_deref()
            .and_then(|bytes| DynamicMessage::decode(method.input.clone(), bytes).ok())
        {
            let _ = up_tx.try_send(Box::new(state));
        }
        let credentials = metadata.borrow_and_update().clone();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            opened = Upstream::open_stream(backend, method, up_rx, &credentials) => opened,
        };
        let lost = match opened {
            Ok(mut inbound) => {
                let _open = Tracked::new(&upstream.shared.metrics.upstream_streams_open);
                let _open_here = Tracked::new(&backend.streams_open);
                // Polled as one future for the stream's life: no lock per
                // frame. With one upstream there is nowhere to move to.
                let draining = backend.draining();
                let drained = draining.cancelled();
                tokio::pin!(drained);
                let mut movable = several;
                if outage {
                    upstream.shared.restored_log.log(
                        |suppressed| tracing::info!(suppressed, "upstream stream restored"),
                        || tracing::debug!("upstream stream restored"),
                    );
                    outage = false;
                }
                backoff = MIN_BACKOFF;
                let lost = loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        // New credentials: re-open now, replaying the state.
                        Ok(()) = metadata.changed() => break None,
                        // Its server is going (NOT_SERVING): move to one
                        // that serves, if there is one.
                        () = &mut drained, if movable => {
                            if upstream.healthy_besides(index) {
                                break Some(Status::unavailable(
                                    "the upstream server is no longer serving; moving to another",
                                ));
                            }
                            movable = false;
                        },
                        frame = from_session.recv() => match frame {
                            Some(frame) => if up_tx.send(frame).await.is_err() {
                                break Some(Status::unavailable("the request stream closed"));
                            },
                            None => return,
                        },
                        frame = inbound.message() => match frame {
                            Ok(Some(frame)) => match upstream.shared.events.event(method, &frame) {
                                Event::Resume(state) => resume = Some(state),
                                Event::Json(json) => if !client.push(json) {
                                    return;
                                },
                            },
                            Ok(None) => break Some(Status::unavailable("the service ended the stream")),
                            Err(status) => break Some(status),
                        },
                    }
                };
                match lost {
                    Some(status) => status,
                    None => {
                        reopen_on = Some(index);
                        continue;
                    }
                }
            }
            Err(status) => status,
        };
        lost_on = Some(index);
        upstream.shared.metrics.upstream_stream_lost(lost.code());
        if !outage {
            outage = true;
            upstream.shared.lost_log.log(
                |suppressed| tracing::warn!(code = ?lost.code(), message = lost.message(), suppressed, "upstream stream lost"),
                || tracing::debug!(code = ?lost.code(), message = lost.message(), "upstream stream lost"),
            );
            let message = format!(
                "upstream stream lost ({}: {}); reconnecting",
                code_name(lost.code()),
                lost.message()
            );
            upstream.shared.metrics.error_frame(Code::Unavailable);
            if !client.push(error_json(Code::Unavailable, &message, None)) {
                return;
            }
        }
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Between half and all of `d`, so that sessions cut off together do not
/// all reconnect in the same instant.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(servers: usize) -> Upstream {
        let pool = crate::proto::descriptor_pool();
        let service = pool
            .get_service_by_name(crate::proto::CHAT_SERVICE)
            .expect("the chat service");
        let gateway = Arc::new(Gateway::from_service(&service, None).expect("a gateway"));
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(GatewayMetrics::new(&registry, gateway.actions()));
        // Nothing listens there: the channels are lazy and never used.
        let uris: Vec<String> = (0..servers)
            .map(|i| format!("http://127.0.0.1:{}", 1 + i))
            .collect();
        Upstream::new(&uris, None, 1, gateway, Duration::from_secs(1), metrics)
            .expect("an upstream")
    }

    fn picks(upstream: &Upstream, avoid: Option<usize>, count: usize) -> Vec<usize> {
        (0..count).map(|_| upstream.pick(avoid)).collect()
    }

    #[tokio::test]
    async fn picks_go_round_the_healthy_servers() {
        let upstream = upstream(3);
        assert_eq!(picks(&upstream, None, 6), [0, 1, 2, 0, 1, 2]);
        assert!(upstream.backend(1).set_healthy(false));
        assert!(
            !upstream.backend(1).set_healthy(false),
            "no change, no news"
        );
        let got = picks(&upstream, None, 6);
        assert!(!got.contains(&1), "{got:?}");
        assert!(got.contains(&0) && got.contains(&2), "{got:?}");
        assert!(upstream.healthy_besides(0));
    }

    #[tokio::test]
    async fn a_lost_stream_avoids_its_server_unless_it_is_the_only_healthy_one() {
        let upstream = upstream(2);
        assert_eq!(picks(&upstream, Some(0), 4), [1, 1, 1, 1]);
        upstream.backend(1).set_healthy(false);
        assert!(!upstream.healthy_besides(0));
        assert_eq!(picks(&upstream, Some(0), 3), [0, 0, 0]);
        // None healthy: anywhere but the one just lost on, as with one
        // server that is down (the open fails and is retried).
        upstream.backend(0).set_healthy(false);
        assert_eq!(picks(&upstream, Some(0), 3), [1, 1, 1]);
        assert_eq!(picks(&upstream, None, 4).len(), 4);
    }

    #[tokio::test]
    async fn turning_unhealthy_cancels_the_streams_token_and_healthy_renews_it() {
        let upstream = upstream(2);
        let backend = upstream.backend(0);
        let before = backend.draining();
        backend.set_healthy(false);
        assert!(before.is_cancelled());
        backend.set_healthy(true);
        assert!(!backend.draining().is_cancelled());
    }

    #[tokio::test]
    async fn one_server_is_always_the_one() {
        let upstream = upstream(1);
        upstream.backend(0).set_healthy(false);
        assert_eq!(picks(&upstream, Some(0), 2), [0, 0]);
    }
}
