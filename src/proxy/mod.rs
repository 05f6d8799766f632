//! The WebSocket gateway: browsers send JSON text frames, the gateway turns
//! them into gRPC calls on the upstream service and sends the answers back.
//!
//! # Layout
//! - `gateway`: what the service descriptor says: which actions exist, their
//!   reply keys, the stream's oneof and resume convention.
//! - `transcode`: JSON frame <-> protobuf message, error frames, status names
//!   (pure functions).
//! - `codec`: the tonic codecs for dynamic (descriptor-driven) messages.
//! - `events`: the service's stream frames as JSON, transcoded once per
//!   distinct frame and shared by the sessions that receive it.
//! - `upstream`: the upstream servers and their shared gRPC connections,
//!   unary calls, and each session's reconnecting bidirectional stream.
//! - `resolve`: upstream names: lookups, and what a new answer changes in
//!   the set of servers (pure).
//! - `health`: each upstream server's `grpc.health.v1` status.
//! - `credentials`: where a browser's token travels (cookie, subprotocol),
//!   URL tokens refused, and what becomes gRPC metadata upstream.
//! - `identity`: a session's token: first-frame sign-in, refresh, expiry.
//! - `session`: one WebSocket connection's read loop and dispatch.
//! - `metrics`: what the gateway counts, for `/metrics`.
//! - `outbound`: the browser-bound queue (bounded in frames and bytes) and
//!   writer task (bounded in time) of a session.
//! - `serve`: the accept loop: TLS, the handshake deadline, the header size
//!   limit, HTTP/1.1 with upgrades into the router.
//! - `tls`: the listener's certificate and key.
//! - `origin`: the Origin check (pure functions).
//! - `limits`: open-connection counts by key, released on drop.
//! - `admission`: what an upgrade must pass (origin 403, limits 503).
//! - `rate`: the per-connection frame rate limit.
//! - `quiet_log`: log lines that could flood, at most one per interval.
//! - this file: settings, the HTTP routes (page, WebSocket, health), `run`.

mod admission;
pub mod codec;
pub mod credentials;
mod events;
pub mod gateway;
mod health;
mod identity;
pub mod limits;
mod metrics;
pub mod origin;
mod outbound;
mod quiet_log;
pub mod rate;
mod resolve;
mod serve;
mod session;
pub mod tls;
pub mod transcode;
mod upstream;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use gateway::Gateway;
pub use limits::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_CONNECTIONS_PER_USER,
};
use metrics::GatewayMetrics;
pub use origin::Origin;
pub use rate::{DEFAULT_FRAME_BURST, DEFAULT_MAX_FRAMES_PER_SECOND};
pub use resolve::{DEFAULT_RESOLVE_INTERVAL, Resolver};
use upstream::Upstream;

/// Default largest frame a browser may send, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Default interval between keepalive pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Default frames queued towards one browser before it counts as too slow.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Default bytes of frames queued towards one browser before it counts as
/// too slow. The frame bound alone let a client that stopped reading hold
/// 1024 frames of whatever size (4 KiB chat messages: over 4 MiB each).
/// 1 MiB is over three times what the frame bound holds of typical ~300-byte
/// chat frames, so it only bites on large frames: ~250 messages of 4 KiB,
/// a few seconds of a busy room, and a stalled client costs at most this.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;
/// Default time one write to a browser's socket may take before the
/// browser counts as stalled and is dropped (1008). Long enough for a slow
/// mobile link to take a batch of frames, short enough that a dead one is
/// gone within seconds.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default unary calls one connection may have in flight.
pub const DEFAULT_MAX_UNARY_IN_FLIGHT: usize = 32;
/// Default deadline of a unary call.
pub const DEFAULT_UNARY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a WebSocket reads from its socket at a time. tungstenite's default
/// (128 KiB, zero-filled before each read) would be most of an idle
/// connection's memory; chat frames are ~200 bytes, and a larger frame is
/// still read whole (the buffer grows to the frame's length).
const WS_READ_BUFFER: usize = 2 * 1024;
/// Bytes of outgoing frames a WebSocket gathers before writing to its socket
/// (the writer task also flushes after each batch).
const WS_WRITE_BUFFER: usize = 8 * 1024;
/// Default HTTP/2 connections to the upstream service.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 4;
/// Default time a connection has to finish its TLS handshake and send a
/// request's complete headers. A browser on a slow mobile link sends an
/// upgrade in well under a second; 10 s is generous for it and stops a
/// client from holding sockets open with half-sent requests (slowloris).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line and headers), in bytes;
/// larger gets 431. A browser's upgrade is ~500 bytes plus its cookies;
/// a JSON Web Token in a cookie or in `Sec-WebSocket-Protocol` is 0.5-2 KiB,
/// and browsers cap one cookie at 4 KiB. 16 KiB holds all of that with
/// room, and is what nginx's and Node's defaults allow (8-16 KiB), where
/// hyper alone would buffer ~400 KiB per connection.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest header limit: hyper's read buffer cannot be smaller.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default name of the cookie that may carry the token at the upgrade.
pub const DEFAULT_AUTH_COOKIE: &str = "wsgate_token";
/// Default time a connection without a token at the upgrade has to send
/// its `auth` frame: a page needs one round trip; a client that sends none
/// holds a socket for nothing.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for sessions to say goodbye.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct Config {
    /// URIs of the servers of the gRPC service, e.g.
    /// `http://127.0.0.1:50051`, or `https://...` with
    /// [`Config::upstream_tls`] set. A host that is a name stands for as
    /// many servers as it has addresses. Calls and streams go to the
    /// healthy ones in turn.
    pub upstreams: Vec<String>,
    /// Looks the upstream names up (the system's resolver by default).
    pub upstream_resolver: Resolver,
    /// Time between two lookups of each upstream name.
    pub upstream_resolve_interval: Duration,
    /// TLS to the upstream (`--upstream-ca` and the other `--upstream-*`
    /// flags); required by an `https://` upstream, refused by `http://`.
    pub upstream_tls: Option<crate::tls::ClientTls>,
    /// HTTP/2 connections to each upstream server, shared by all sessions
    /// in turn.
    pub upstream_connections: usize,
    pub max_frame_bytes: usize,
    pub ping_interval: Duration,
    /// Frames queued towards one browser before it is closed as too slow.
    pub outbound_queue: usize,
    /// Bytes of frames queued towards one browser before it is closed as
    /// too slow.
    pub outbound_queue_bytes: usize,
    /// How long one write to a browser's socket may take.
    pub write_timeout: Duration,
    pub max_unary_in_flight: usize,
    pub unary_timeout: Duration,
    /// Token verification (`--auth jwt`); `None` trusts every client.
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// Where the gateway's metrics are registered. Not on the public port:
    /// the binary serves it on `--metrics-listen` (`crate::metrics::serve`).
    pub metrics: prometheus::Registry,
    /// Time for the TLS handshake and a request's complete headers.
    pub handshake_timeout: Duration,
    /// Largest request head, in bytes (at least [`MIN_MAX_HEADER_BYTES`]).
    pub max_header_bytes: usize,
    /// TLS on the listener (`https://`, `wss://`); `None`: plain text.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Origins besides the page's own that may open a WebSocket.
    pub allowed_origins: Vec<Origin>,
    /// WebSocket sessions open at once, in all.
    pub max_connections: usize,
    /// WebSocket sessions open at once from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// WebSocket sessions one user (a token's `sub`) may have open (jwt mode).
    pub max_connections_per_user: usize,
    /// Frames per second one connection may send, sustained.
    pub max_frames_per_second: u32,
    /// Frames one connection may send at once above that rate.
    pub frame_burst: u32,
    /// The cookie that may carry the token at the upgrade (jwt mode).
    pub auth_cookie: String,
    /// How long a connection has to send its first-frame token (jwt mode).
    pub auth_timeout: Duration,
    /// Handshake headers passed upstream as metadata (lowercase names).
    pub forward_headers: Vec<String>,
    /// Cookies passed upstream as metadata, under their own names.
    pub forward_cookies: Vec<String>,
}

impl Config {
    pub fn new(upstream: impl Into<String>) -> Self {
        Config {
            upstreams: vec![upstream.into()],
            upstream_resolver: Resolver::system(),
            upstream_resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            upstream_tls: None,
            upstream_connections: DEFAULT_UPSTREAM_CONNECTIONS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            ping_interval: DEFAULT_PING_INTERVAL,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_unary_in_flight: DEFAULT_MAX_UNARY_IN_FLIGHT,
            unary_timeout: DEFAULT_UNARY_TIMEOUT,
            auth: None,
            metrics: prometheus::Registry::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            tls: None,
            allowed_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_frames_per_second: DEFAULT_MAX_FRAMES_PER_SECOND,
            frame_burst: DEFAULT_FRAME_BURST,
            auth_cookie: DEFAULT_AUTH_COOKIE.to_owned(),
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            forward_headers: Vec::new(),
            forward_cookies: Vec::new(),
        }
    }
}

/// What every session shares.
pub struct Context {
    config: Config,
    upstream: Upstream,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    admission: admission::Admission,
}

/// The gateway's HTTP routes: `GET /` is the WebSocket endpoint for a
/// WebSocket upgrade and the web client otherwise; `GET /healthz` is a
/// liveness probe. Metrics are not served here: what a stranger could read
/// on the public port, they are not shown (`--metrics-listen`).
pub fn app(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(root))
        .merge(web::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(ctx)
}

async fn root(
    State(ctx): State<Arc<Context>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        // A WebSocket handshake gone wrong gets its error, not the page.
        Err(rejection) if headers.contains_key(header::UPGRADE) => {
            return rejection.into_response();
        }
        Err(_) => return web::index(),
    };
    let mut admitted = match admission::admit(&ctx, peer, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let presented = match credentials::admit(&ctx.config, &ctx.metrics, &uri, &headers) {
        Ok(presented) => presented,
        Err(refused) => return refused,
    };
    let base = credentials::forwarded(&ctx.config, &headers, peer);
    let identity = identity::Identity::new(&ctx.config, ctx.metrics.clone(), base, presented);
    if let Some(user) = identity.sub() {
        match admission::admit_user(&ctx, user) {
            Ok(place) => admitted.user = Some(place),
            Err(refusal) => return refusal.into_response(),
        }
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max = ctx.config.max_frame_bytes;
    upgrade
        // Answers `wsgate.v1` when offered; a `bearer.` entry is never echoed.
        .protocols([credentials::SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let sessions = ctx.sessions.clone();
            // The session holds its places in the connection counts.
            sessions.track_future(session::serve(
                socket, ctx, peer, identity, origin, admitted,
            ))
        })
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then
/// closes every WebSocket with 1001 and returns.
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    credentials::check(&config).map_err(|e| anyhow::anyhow!(e))?;
    if config.auth.is_some() && gateway.actions().any(|a| a == identity::AUTH) {
        anyhow::bail!(
            "the service has an action named {:?}, a frame key reserved for tokens with --auth jwt",
            identity::AUTH
        );
    }
    let local = listener.local_addr()?;
    let metrics = Arc::new(GatewayMetrics::new(&config.metrics, gateway.actions()));
    let upstream = Upstream::new(&config, gateway, metrics.clone(), shutdown.child_token())?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    upstream.start().await;
    tracing::info!(%local, scheme, upstream = %config.upstreams.join(","),
        upstream_tls = config.upstream_tls.is_some(), "WebSocket gateway listening");
    tracing::info!(
        handshake_timeout = ?config.handshake_timeout,
        max_header_bytes = config.max_header_bytes,
        allowed_origins = config.allowed_origins.len(),
        max_connections = config.max_connections,
        max_connections_per_ip = config.max_connections_per_ip,
        max_frames_per_second = config.max_frames_per_second,
        frame_burst = config.frame_burst,
        "edge limits"
    );
    let edge = serve::Edge {
        handshake_timeout: config.handshake_timeout,
        max_header_bytes: config.max_header_bytes,
        tls: serve::acceptor(&config.tls),
    };
    let sessions = TaskTracker::new();
    let ctx = Arc::new(Context {
        admission: admission::Admission::new(
            config.max_connections,
            config.max_connections_per_ip,
            config.max_connections_per_user,
        ),
        config,
        upstream,
        metrics,
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
    });
    let connections = TaskTracker::new();
    serve::accept_loop(listener, app(ctx), edge, shutdown, connections.clone()).await;
    sessions.close();
    connections.close();
    let drained = async {
        tokio::join!(sessions.wait(), connections.wait());
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    tracing::info!("WebSocket gateway stopped");
    Ok(())
}
