//! The gRPC side of the gateway: the servers of the upstream service (a few
//! shared HTTP/2 connections to each), unary calls, and the reconnecting
//! bidirectional stream that each WebSocket session opens at its first
//! stream frame. Each `--upstream` is one server, or as many as its name
//! has addresses (`resolve`), looked up again in the background. With
//! several servers, each call and each stream open goes to the next healthy
//! one in turn (`health` watches them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use prost_reflect::DynamicMessage;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::Config;
use super::codec::{DynamicCodec, StreamCodec};
use super::events::{Event, Events};
use super::gateway::{Gateway, StreamMethod, UnaryMethod};
use super::metrics::GatewayMetrics;
use super::outbound::ToClient;
use super::quiet_log::QuietLog;
use super::resolve::{self, Host, Resolver};
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
/// Shortest time between two lookups of the names: a server turning
/// unhealthy asks for one at once (it may have been replaced), and several
/// doing so together ask for one.
const MIN_LOOKUP_GAP: Duration = Duration::from_secs(1);

/// Reset streams each upstream connection remembers (see [`channels`]):
/// as many as the sessions one connection typically carries.
const RESET_STREAMS_REMEMBERED: usize = 16_384;

/// What a call or stream open gets while no `--upstream` name has given an
/// address yet.
const NO_ADDRESS: &str = "the upstream name gives no address (yet)";

/// A cheap-to-clone handle on the upstream service.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

/// One server of the upstream service: one address, of one `--upstream`.
pub(super) struct Backend {
    /// As configured, e.g. `http://chat.internal:50051`: the metrics'
    /// `upstream` label.
    pub(super) uri: String,
    /// Where its connections go, e.g. `10.0.0.5:50051`: the metrics'
    /// `address` label, so a name's series are one per address it has now.
    pub(super) address: String,
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
    /// Set when its health is first watched: once the set has several
    /// servers. One server is the only choice whatever its health: it is
    /// not checked (no gauge, no connection before a session's).
    healthy_gauge: OnceLock<prometheus::IntGauge>,
    /// Ends its health watch when the backend is dropped: when it has left
    /// the set and no stream is on it any more.
    watching: OnceLock<DropGuard>,
    /// Its name's early lookup, asked for when it turns unhealthy; `None`
    /// for an IP address.
    lookup_now: Option<Arc<Notify>>,
    metrics: Arc<GatewayMetrics>,
}

struct Shared {
    /// The servers calls and new streams go to now, in turn. Replaced
    /// whole when a lookup changes it; read (an `Arc` clone) once per call
    /// and stream open, never per frame.
    members: RwLock<Arc<[Arc<Backend>]>>,
    /// What each `--upstream` gives. Changed by lookups only, which run one
    /// at a time (at start, then the lookup task); never held across an
    /// await.
    targets: Mutex<Vec<Target>>,
    tls: Option<ClientTls>,
    connections: usize,
    resolver: Resolver,
    resolve_interval: Duration,
    lookup_now: Arc<Notify>,
    /// Ends the lookup task and every health watch.
    stop: CancellationToken,
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

/// One `--upstream` and the servers it gives.
struct Target {
    uri: String,
    host: Host,
    /// Built once, checked at start; each server's channels dial its own
    /// address through it, with the URI's host as `:authority`.
    endpoint: Endpoint,
    members: Vec<(SocketAddr, Arc<Backend>)>,
    /// Members whose address the name no longer gives, while streams still
    /// hold them: given again, an address gets its server back rather than
    /// a second set of connections to it.
    left: Vec<(SocketAddr, Weak<Backend>)>,
    /// Whether its last lookup failed: said once, not at every lookup.
    failing: bool,
}

impl Upstream {
    /// Prepares the servers of `config.upstreams` without connecting: the
    /// gateway starts, and keeps serving its page, while the upstream is
    /// down. An IP address is one server at once; a name has none until
    /// [`Upstream::start`] looks it up. With TLS, each URI must be
    /// `https://` and every connection is opened by [`ClientTls::connect`];
    /// without, they must be `http://`. `stop` ends the lookups and health
    /// watches.
    pub fn new(
        config: &Config,
        gateway: Arc<Gateway>,
        metrics: Arc<GatewayMetrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        if config.upstreams.is_empty() {
            bail!("no upstream address given");
        }
        let tls = config.upstream_tls.clone();
        let mut targets = config
            .upstreams
            .iter()
            .map(|uri| target(uri, tls.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let upstream = Upstream {
            shared: Arc::new(Shared {
                members: RwLock::new(Arc::new([])),
                targets: Mutex::new(Vec::new()),
                tls,
                connections: config.upstream_connections.max(1),
                resolver: config.upstream_resolver.clone(),
                resolve_interval: config.upstream_resolve_interval,
                lookup_now: Arc::new(Notify::new()),
                stop,
                // A random first turn (as gRPC's round robin does): gateways
                // started together do not all send their first sessions to
                // the first server.
                next: AtomicUsize::new(fastrand::usize(..)),
                gateway,
                events: Events::default(),
                unary_timeout: config.unary_timeout,
                metrics,
                lost_log: QuietLog::new(),
                restored_log: QuietLog::new(),
            }),
        };
        for target in &mut targets {
            if let Host::Address(address) = target.host {
                let backend = upstream.backend_for(target, address);
                target.members.push((address, backend));
            }
        }
        upstream.publish(targets);
        Ok(upstream)
    }

    /// Looks every name up once (sessions opened before would find no
    /// server), then keeps looking them up in the background and the
    /// servers' health watched, until `stop`.
    pub async fn start(&self) {
        self.look_up().await;
        let names = self.lock_targets().iter().any(|t| t.name().is_some());
        if names {
            tokio::spawn(self.clone().keep_looking_up());
        }
    }

    async fn keep_looking_up(self) {
        let shared = &self.shared;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = tokio::time::sleep(shared.resolve_interval) => {}
                () = shared.lookup_now.notified() => {
                    tokio::select! {
                        _ = shared.stop.cancelled() => return,
                        _ = tokio::time::sleep_until(last + MIN_LOOKUP_GAP) => {}
                    }
                }
            }
            last = tokio::time::Instant::now();
            self.look_up().await;
        }
    }

    /// One lookup of every name, all at once; each answer applied.
    async fn look_up(&self) {
        let names: Vec<(String, u16)> = self
            .lock_targets()
            .iter()
            .filter_map(|t| t.name().map(|(name, port)| (name.to_owned(), port)))
            .collect();
        let resolver = &self.shared.resolver;
        let lookups = names
            .iter()
            .map(|(name, port)| resolver.lookup(name, *port));
        let mut answers = futures_util::future::join_all(lookups).await.into_iter();
        let mut targets = std::mem::take(&mut *self.lock_targets());
        for target in targets.iter_mut().filter(|t| t.name().is_some()) {
            match answers.next() {
                Some(Ok(addresses)) => self.apply(target, &addresses),
                Some(Err(e)) => target.lookup_failed(&e),
                None => {}
            }
        }
        self.publish(targets);
    }

    /// Applies one lookup's answer to `target`'s members.
    fn apply(&self, target: &mut Target, addresses: &[SocketAddr]) {
        let mut left = std::mem::take(&mut target.left);
        left.retain(|(_, backend)| backend.strong_count() > 0);
        let current = std::mem::take(&mut target.members);
        let update = resolve::update(current, addresses, |address| {
            let back = left.iter().position(|(a, _)| *a == address);
            back.and_then(|i| left.swap_remove(i).1.upgrade())
                .unwrap_or_else(|| self.backend_for(target, address))
        });
        let left_now: Vec<SocketAddr> = update.left.iter().map(|(a, _)| *a).collect();
        // Their streams stay until they end (docs/scaling.md), or until
        // their server stops serving: watched, even if it was the only one,
        // they move then.
        let service = self.gateway().service();
        for (address, backend) in &update.left {
            backend.watch_health(service, &self.shared.stop);
            left.push((*address, Arc::downgrade(backend)));
        }
        target.members = update.members;
        target.left = left;
        let recovered = std::mem::replace(&mut target.failing, false);
        if !update.joined.is_empty() || !left_now.is_empty() || recovered {
            let now: Vec<SocketAddr> = target.members.iter().map(|(a, _)| *a).collect();
            tracing::info!(upstream = %target.uri, addresses = ?now, joined = ?update.joined,
                left = ?left_now, "upstream name resolved");
        }
    }

    /// Makes `targets`' members the set, and watches each one's health
    /// when there are several.
    fn publish(&self, targets: Vec<Target>) {
        let members: Arc<[Arc<Backend>]> = targets
            .iter()
            .flat_map(|t| t.members.iter().map(|(_, b)| b.clone()))
            .collect();
        if members.len() > 1 {
            let service = self.gateway().service();
            for backend in members.iter() {
                backend.watch_health(service, &self.shared.stop);
            }
        }
        *self.lock_targets() = targets;
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner) = members;
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn backend_for(&self, target: &Target, address: SocketAddr) -> Arc<Backend> {
        let shared = &self.shared;
        let label = address.to_string();
        Arc::new(Backend {
            uri: target.uri.clone(),
            channels: channels(
                &target.endpoint,
                address,
                &target.host.name(),
                shared.tls.as_ref(),
                shared.connections,
            ),
            next: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            draining: Mutex::new(CancellationToken::new()),
            streams_open: shared.metrics.upstream_streams_open_on(&target.uri, &label),
            healthy_gauge: OnceLock::new(),
            watching: OnceLock::new(),
            lookup_now: target.name().map(|_| shared.lookup_now.clone()),
            metrics: shared.metrics.clone(),
            address: label,
        })
    }

    /// The servers calls and new streams go to now.
    pub(super) fn members(&self) -> Arc<[Arc<Backend>]> {
        self.shared
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
    /// `None` while no name has given an address.
    fn pick(&self, avoid: Option<&Arc<Backend>>) -> Option<Arc<Backend>> {
        let members = self.members();
        let n = members.len();
        if n < 2 {
            return members.first().cloned();
        }
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let turn = (0..n).map(|i| &members[(start + i) % n]);
        let healthy = |b: &&Arc<Backend>| b.healthy.load(Ordering::Relaxed);
        let not_avoided = |b: &&Arc<Backend>| avoid.is_none_or(|a| !Arc::ptr_eq(a, b));
        turn.clone()
            .filter(healthy)
            .find(not_avoided)
            .or_else(|| turn.clone().find(healthy))
            .or_else(|| turn.clone().find(not_avoided))
            .or(members.get(start % n))
            .cloned()
    }

    /// Whether a server of the set other than `backend` is healthy.
    fn healthy_besides(&self, backend: &Arc<Backend>) -> bool {
        self.members()
            .iter()
            .any(|b| !Arc::ptr_eq(b, backend) && b.healthy.load(Ordering::Relaxed))
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
        let backend = self
            .pick(None)
            .ok_or_else(|| Status::unavailable(NO_ADDRESS))?;
        let mut grpc = tonic::client::Grpc::new(backend.channel());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
        let mut request = Request::new(request);
        *request.metadata_mut() = metadata.clone();
        request.set_timeout(self.shared.unary_timeout);
        let codec = DynamicCodec::new(method.output.clone());
        let response = grpc.unary(request, method.path.clone(), codec).await;
        Ok(response
            .map_err(transport_failure_is_unavailable)?
            .into_inner())
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

/// A call whose connection failed under it (its server killed, say) comes
/// back from tonic as UNKNOWN "transport error": the server never answered,
/// so it is UNAVAILABLE, worth retrying elsewhere, as docs/protocol.md says.
fn transport_failure_is_unavailable(status: Status) -> Status {
    let from_transport = status.code() == Code::Unknown
        && std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>());
    if from_transport {
        Status::unavailable(format!("upstream unavailable: {}", status.message()))
    } else {
        status
    }
}

impl Target {
    /// A lookup failed: its members stay as they were, and it is said once
    /// per failure, not at every lookup.
    fn lookup_failed(&mut self, error: &std::io::Error) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(upstream = %self.uri, %error,
                "upstream name lookup failed; keeping its servers as they were (logged once until it works)");
        }
    }

    /// Its name and port, if it is a name.
    fn name(&self) -> Option<(&str, u16)> {
        match &self.host {
            Host::Name { name, port } => Some((name, *port)),
            Host::Address(_) => None,
        }
    }
}

impl Backend {
    /// The next connection in turn.
    pub(super) fn channel(&self) -> Channel {
        let channels = &self.channels;
        channels[self.next.fetch_add(1, Ordering::Relaxed) % channels.len()].clone()
    }

    /// Starts watching its health (`health`), unless it already is.
    fn watch_health(self: &Arc<Self>, service: &str, stop: &CancellationToken) {
        let mut started = None;
        self.watching.get_or_init(|| {
            let token = stop.child_token();
            started = Some(token.clone());
            token.drop_guard()
        });
        let Some(token) = started else {
            return;
        };
        let gauge = self.metrics.upstream_healthy(&self.uri, &self.address);
        gauge.set(i64::from(self.healthy.load(Ordering::Relaxed)));
        let _ = self.healthy_gauge.set(gauge);
        let watch = super::health::watch(service.to_owned(), Arc::downgrade(self), token);
        tokio::spawn(watch);
    }

    /// Records what its health check says; true if that is a change.
    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        if self.healthy.swap(healthy, Ordering::Relaxed) == healthy {
            return false;
        }
        if let Some(gauge) = self.healthy_gauge.get() {
            gauge.set(i64::from(healthy));
        }
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        if healthy {
            *draining = CancellationToken::new();
        } else {
            draining.cancel();
            // Perhaps replaced: its name may give a new address.
            if let Some(lookup) = &self.lookup_now {
                lookup.notify_one();
            }
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

impl Drop for Backend {
    fn drop(&mut self) {
        self.metrics.forget_upstream(&self.uri, &self.address);
    }
}

/// `--upstream` `uri`, checked against the TLS settings, its servers not
/// yet made.
fn target(uri: &str, tls: Option<&ClientTls>) -> anyhow::Result<Target> {
    let parsed: Uri = uri.parse()?;
    match (parsed.scheme_str(), tls) {
        (Some("http"), None) | (Some("https"), Some(_)) => {}
        (Some("https"), None) => bail!("an https:// upstream needs TLS settings"),
        (Some("http"), Some(_)) => bail!("TLS settings given for a plaintext http:// upstream"),
        _ => bail!("the upstream URI is neither http:// nor https://"),
    }
    let host = Host::of(&parsed)?;
    // tonic refuses a custom connector for an https:// endpoint (it
    // would add its own TLS): an http:// endpoint through ours, with the
    // https:// origin on the requests.
    let endpoint = match tls {
        Some(_) => Endpoint::from_shared(uri.replacen("https://", "http://", 1))?.origin(parsed),
        None => Endpoint::from_shared(uri.to_owned())?,
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
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
    Ok(Target {
        uri: uri.to_owned(),
        host,
        endpoint,
        members: Vec::new(),
        left: Vec::new(),
        failing: false,
    })
}

/// `connections` lazy channels through `endpoint` to `address`: the TCP
/// connection goes to the address, while the requests' `:authority` and the
/// name the TLS certificate must hold stay the configured `host`.
fn channels(
    endpoint: &Endpoint,
    address: SocketAddr,
    host: &str,
    tls: Option<&ClientTls>,
    connections: usize,
) -> Vec<Channel> {
    let host: Arc<str> = host.into();
    (0..connections)
        .map(|_| match tls {
            None => {
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    tcp.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(TokioIo::new(tcp))
                }))
            }
            Some(tls) => {
                let (tls, host) = (tls.clone(), host.clone());
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let (tls, host) = (tls.clone(), host.clone());
                    async move { tls.connect(address, &host).await }
                }))
            }
        })
        .collect()
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
    let mut lost_on: Option<Arc<Backend>> = None;
    // New credentials re-open on the same server.
    let mut reopen_on: Option<Arc<Backend>> = None;
    'link: loop {
        let picked = reopen_on
            .take()
            .or_else(|| upstream.pick(lost_on.take().as_ref()));
        let lost = 'open: {
            let Some(backend) = picked else {
                break 'open Status::unavailable(NO_ADDRESS);
            };
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
                opened = Upstream::open_stream(&backend, method, up_rx, &credentials) => opened,
            };
            let lost = match opened {
                Ok(mut inbound) => {
                    let _open = Tracked::new(&upstream.shared.metrics.upstream_streams_open);
                    let _open_here = Tracked::new(&backend.streams_open);
                    // Polled as one future for the stream's life: no lock per
                    // frame. It only fires when health is watched (several
                    // servers); with one left there is nowhere to move to.
                    let draining = backend.draining();
                    let drained = draining.cancelled();
                    tokio::pin!(drained);
                    let mut movable = true;
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
                                if upstream.healthy_besides(&backend) {
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
                            reopen_on = Some(backend.clone());
                            continue 'link;
                        }
                    }
                }
                Err(status) => status,
            };
            lost_on = Some(backend);
            lost
        };
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

    fn upstream_of(config: &Config) -> (Upstream, prometheus::Registry) {
        let pool = crate::proto::descriptor_pool();
        let service = pool
            .get_service_by_name(crate::proto::CHAT_SERVICE)
            .expect("the chat service");
        let gateway = Arc::new(Gateway::from_service(&service, None).expect("a gateway"));
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(GatewayMetrics::new(&registry, gateway.actions()));
        let stop = CancellationToken::new();
        let upstream = Upstream::new(config, gateway, metrics, stop).expect("an upstream");
        (upstream, registry)
    }

    fn upstream(servers: usize) -> Upstream {
        // Nothing listens there: the channels are lazy and never used.
        let uris: Vec<String> = (0..servers)
            .map(|i| format!("http://127.0.0.1:{}", 1 + i))
            .collect();
        let config = Config {
            upstreams: uris,
            ..Config::new(String::new())
        };
        upstream_of(&config).0
    }

    fn backend(upstream: &Upstream, index: usize) -> Arc<Backend> {
        upstream.members()[index].clone()
    }

    /// Where `count` picks go, as positions in the set.
    fn picks(upstream: &Upstream, avoid: Option<usize>, count: usize) -> Vec<usize> {
        let members = upstream.members();
        let avoid = avoid.map(|i| members[i].clone());
        (0..count)
            .map(|_| {
                let picked = upstream.pick(avoid.as_ref()).expect("a server");
                let position = members.iter().position(|b| Arc::ptr_eq(b, &picked));
                position.expect("one of the set")
            })
            .collect()
    }

    /// Whether `got` goes round `servers` in order, from wherever the
    /// round began (the first turn is random).
    fn goes_round(got: &[usize], servers: usize) -> bool {
        got.iter()
            .enumerate()
            .all(|(i, &at)| at == (got[0] + i) % servers)
    }

    #[tokio::test]
    async fn picks_go_round_the_healthy_servers() {
        let upstream = upstream(3);
        let got = picks(&upstream, None, 6);
        assert!(goes_round(&got, 3), "{got:?}");
        assert!(backend(&upstream, 1).set_healthy(false));
        assert!(
            !backend(&upstream, 1).set_healthy(false),
            "no change, no news"
        );
        let got = picks(&upstream, None, 6);
        assert!(!got.contains(&1), "{got:?}");
        assert!(got.contains(&0) && got.contains(&2), "{got:?}");
        assert!(upstream.healthy_besides(&backend(&upstream, 0)));
    }

    #[tokio::test]
    async fn a_lost_stream_avoids_its_server_unless_it_is_the_only_healthy_one() {
        let upstream = upstream(2);
        assert_eq!(picks(&upstream, Some(0), 4), [1, 1, 1, 1]);
        backend(&upstream, 1).set_healthy(false);
        assert!(!upstream.healthy_besides(&backend(&upstream, 0)));
        assert_eq!(picks(&upstream, Some(0), 3), [0, 0, 0]);
        // None healthy: anywhere but the one just lost on, as with one
        // server that is down (the open fails and is retried).
        backend(&upstream, 0).set_healthy(false);
        assert_eq!(picks(&upstream, Some(0), 3), [1, 1, 1]);
        assert_eq!(picks(&upstream, None, 4).len(), 4);
    }

    #[tokio::test]
    async fn turning_unhealthy_cancels_the_streams_token_and_healthy_renews_it() {
        let upstream = upstream(2);
        let backend = backend(&upstream, 0);
        let before = backend.draining();
        backend.set_healthy(false);
        assert!(before.is_cancelled());
        backend.set_healthy(true);
        assert!(!backend.draining().is_cancelled());
    }

    #[tokio::test]
    async fn one_server_is_always_the_one() {
        let upstream = upstream(1);
        backend(&upstream, 0).set_healthy(false);
        assert_eq!(picks(&upstream, Some(0), 2), [0, 0]);
    }

    /// A resolver whose answer the test sets: `None` fails the lookup.
    type Answer = Arc<Mutex<Option<Vec<SocketAddr>>>>;

    fn resolver() -> (Resolver, Answer) {
        let answer = Arc::new(Mutex::new(None::<Vec<SocketAddr>>));
        let given = answer.clone();
        let resolver = Resolver::from_fn(move |_, _| {
            let answer = given.lock().expect("not poisoned").clone();
            Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("no such name")) })
        });
        (resolver, answer)
    }

    /// An upstream of `uris`, its names answered by the test's resolver.
    fn named(uris: &[&str]) -> (Upstream, prometheus::Registry, Answer) {
        let (resolver, answer) = resolver();
        let config = Config {
            upstreams: uris.iter().map(|u| (*u).to_owned()).collect(),
            upstream_resolver: resolver,
            ..Config::new(String::new())
        };
        let (upstream, registry) = upstream_of(&config);
        (upstream, registry, answer)
    }

    fn addresses(upstream: &Upstream) -> Vec<String> {
        upstream
            .members()
            .iter()
            .map(|b| b.address.clone())
            .collect()
    }

    fn series(registry: &prometheus::Registry, name: &str) -> Vec<String> {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == name);
        family.map_or_else(Vec::new, |f| {
            f.get_metric()
                .iter()
                .flat_map(|m| m.get_label().iter().filter(|l| l.name() == "address"))
                .map(|l| l.value().to_owned())
                .collect()
        })
    }

    #[tokio::test]
    async fn a_name_s_addresses_join_and_leave_the_set_as_lookups_say() {
        let (upstream, registry, answer) = named(&["http://chat.test:50051", "http://10.9.9.9:1"]);
        // Before the first lookup, only the IP address.
        assert_eq!(addresses(&upstream), ["10.9.9.9:1"]);

        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:50051".parse().expect("an address"),
            "[fd00::2]:50051".parse().expect("an address"),
            "10.0.0.3:50051".parse().expect("an address"),
        );
        *answer.lock().expect("not poisoned") = Some(vec![b, a]);
        upstream.look_up().await;
        let set = ["10.0.0.1:50051", "[fd00::2]:50051", "10.9.9.9:1"];
        assert_eq!(addresses(&upstream), set);
        let first_a = backend(&upstream, 0);
        // Several now: each is watched, with a health series per address.
        let mut healthy = series(&registry, "wsgate_upstream_healthy");
        healthy.sort();
        assert_eq!(healthy, ["10.0.0.1:50051", "10.9.9.9:1", "[fd00::2]:50051"]);
        let got = picks(&upstream, None, 3);
        assert!(goes_round(&got, 3), "{got:?}");

        // b goes while a stream holds it, c comes: a keeps its connections.
        let on_b = backend(&upstream, 1);
        *answer.lock().expect("not poisoned") = Some(vec![a, c]);
        upstream.look_up().await;
        assert_eq!(
            addresses(&upstream),
            ["10.0.0.1:50051", "10.0.0.3:50051", "10.9.9.9:1"]
        );
        assert!(Arc::ptr_eq(&first_a, &backend(&upstream, 0)));
        assert!(!picks(&upstream, None, 6).is_empty());
        // Its series stay while its stream does.
        assert!(series(&registry, "wsgate_upstream_healthy").contains(&on_b.address));

        // A failed lookup keeps the set as it was.
        *answer.lock().expect("not poisoned") = None;
        upstream.look_up().await;
        assert_eq!(
            addresses(&upstream),
            ["10.0.0.1:50051", "10.0.0.3:50051", "10.9.9.9:1"]
        );

        // b back while still held: the same server, not new connections.
        *answer.lock().expect("not poisoned") = Some(vec![a, b]);
        upstream.look_up().await;
        assert!(Arc::ptr_eq(&on_b, &backend(&upstream, 1)));
        // c is gone and nothing held it: its series went with it.
        drop(on_b);
        let streams = series(&registry, "wsgate_upstream_server_streams_open");
        assert!(!streams.contains(&c.to_string()), "{streams:?}");
        let healthy = series(&registry, "wsgate_upstream_healthy");
        assert!(!healthy.contains(&c.to_string()), "{healthy:?}");
        assert!(healthy.contains(&b.to_string()), "{healthy:?}");
    }

    #[tokio::test]
    async fn a_name_with_one_address_is_one_unwatched_server_and_none_before_a_lookup() {
        let (upstream, registry, answer) = named(&["http://chat.test:50051"]);
        assert!(upstream.pick(None).is_none());
        *answer.lock().expect("not poisoned") =
            Some(vec!["10.0.0.1:7".parse().expect("an address")]);
        upstream.look_up().await;
        assert_eq!(addresses(&upstream), ["10.0.0.1:7"]);
        assert!(series(&registry, "wsgate_upstream_healthy").is_empty());
        backend(&upstream, 0).set_healthy(false);
        assert_eq!(picks(&upstream, Some(0), 2), [0, 0]);
    }

    /// What the gateway logs while `run` runs, as text.
    async fn logged<F: std::future::Future<Output = ()>>(run: F) -> String {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .expect("not poisoned")
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        run.await;
        let bytes = capture.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[tokio::test]
    async fn a_failing_lookup_is_logged_once_until_it_works_again() {
        let (upstream, _, answer) = named(&["http://chat.test:50051"]);
        let address: SocketAddr = "10.0.0.1:50051".parse().expect("an address");
        let log = logged(async {
            for _ in 0..3 {
                upstream.look_up().await;
            }
            *answer.lock().expect("not poisoned") = Some(vec![address]);
            upstream.look_up().await;
            upstream.look_up().await;
            *answer.lock().expect("not poisoned") = None;
            upstream.look_up().await;
            upstream.look_up().await;
        })
        .await;
        let failed = log.matches("upstream name lookup failed").count();
        assert_eq!(failed, 2, "once per outage:\n{log}");
        let resolved = log.matches("upstream name resolved").count();
        assert_eq!(resolved, 1, "once, when it changed:\n{log}");
        // The outage kept the set.
        assert_eq!(addresses(&upstream), ["10.0.0.1:50051"]);
    }
}
