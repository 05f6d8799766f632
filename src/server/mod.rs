//! The gRPC chat server: `chat.ChatService`, plus health and reflection.
//!
//! # Layout
//! - `directory`: the room directory's pages, cursor and `rooms` filter.
//! - `errors`: what the service refuses or fails at, and the one mapping of
//!   each to a gRPC status code (unary calls, stream events, stream ends).
//! - `identity`: who is calling (the forwarded token, verified again) and
//!   what that lets a call do: the user it acts as, the rooms it may enter.
//! - `service`: the RPCs.
//! - `session`: one `Chat` stream (rooms joined, users acted as, frames handled).
//! - `hub`: rooms, presence, and the fan-out of each committed message,
//!   edit or deletion, and of renames; with a bus, across servers.
//! - `bus`: the other servers, over NATS (`--bus`): what each commits,
//!   who is where, who is alive.
//! - `room_order`: a room's numbered events released in order, holding
//!   those that arrive ahead of a gap.
//! - `validate`: pure checks of client input.
//! - `metrics`: what the server counts, for `/metrics`.
//!
//! A message goes session -> storage [`Writer`] (group commit, seq assigned)
//! -> [`hub::Hub::committed`] on the writer thread -> every member's outbox.

pub mod bus;
mod directory;
mod errors;
mod hub;
mod identity;
mod metrics;
mod room_order;
mod service;
mod session;
mod validate;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::proto::{
    FILE_DESCRIPTOR_SET, HTTP2_CONNECTION_WINDOW, chat::chat_service_server::ChatServiceServer,
};
use crate::storage::{Store, Writer, WriterOptions};
use hub::Hub;
use identity::Authenticate;
use metrics::ServerMetrics;
use service::ChatServiceImpl;
use session::Limits;

pub use session::TYPING_INTERVAL;
pub use validate::{MAX_HISTORY_LIMIT, MAX_ID_BYTES, MAX_NAME_CHARS};

/// Default largest message content, in bytes.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 4096;
/// Default outbound queue per stream, in frames: about a few seconds of a busy
/// room, so a client on a slow link rides out a burst without being dropped.
pub const DEFAULT_STREAM_BUFFER: usize = 4096;
/// Default most rooms one `Chat` stream may be in at once. Far more than a
/// client shows (a sidebar of channels), and few enough that one stream
/// cannot make itself a member of every room: each room costs a member entry
/// in the hub, a snapshot on every resume, and a line (up to ~260 bytes) of
/// the resume state the gateway keeps and replays.
pub const DEFAULT_MAX_ROOMS_PER_STREAM: usize = 100;
/// How often the health check asks the store whether writes are still
/// durable: a server with no traffic must notice a deleted database too.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The server's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token verification (`--auth jwt`); `None` trusts every client.
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// TLS (`--grpc-tls-cert`/`--grpc-tls-key`, `--grpc-client-ca`);
    /// `None` serves plaintext HTTP/2.
    pub tls: Option<crate::tls::ServerTls>,
    pub max_content_bytes: usize,
    /// Most rooms one `Chat` stream may be in (`RESOURCE_EXHAUSTED` past it).
    pub max_rooms_per_stream: usize,
    pub stream_buffer: usize,
    pub writer: WriterOptions,
    /// Where the server's metrics are registered.
    pub metrics: prometheus::Registry,
    /// The bus to the other servers sharing the database (`--bus`); `None`:
    /// this server's streams are all there is.
    pub bus: Option<bus::BusConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            auth: None,
            tls: None,
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            max_rooms_per_stream: DEFAULT_MAX_ROOMS_PER_STREAM,
            stream_buffer: DEFAULT_STREAM_BUFFER,
            writer: WriterOptions::default(),
            metrics: prometheus::Registry::new(),
            bus: None,
        }
    }
}

/// Serves the chat service on `listener` until `shutdown` is cancelled, then
/// ends every stream and returns once every accepted write is committed.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let bus = match &config.bus {
        Some(bus) => Some(bus::Bus::connect(bus, store.clone(), &config.metrics).await?),
        None => None,
    };
    let hub = match &bus {
        Some(bus) => Hub::with_bus(bus.clone()),
        None => Arc::new(Hub::default()),
    };
    // Stops when `run` returns, however it returns: after the last commit
    // was queued for the bus.
    let bus_tasks = CancellationToken::new();
    let _stop_bus_tasks = bus_tasks.clone().drop_guard();
    if let Some(bus) = &bus {
        bus.start(hub.clone(), bus_tasks).await;
    }
    let metrics = Arc::new(ServerMetrics::new(&config.metrics));
    let fan_out = hub.clone();
    let recorded = metrics.clone();
    let (writer, writer_thread) =
        Writer::spawn(store.clone(), config.writer, move |results, took| {
            recorded.batch_size.observe(results.len() as f64);
            recorded.commit_seconds.observe(took.as_secs_f64());
            recorded.committed(fan_out.committed(results));
        })?;
    let sessions = TaskTracker::new();
    let chat = ChatServiceImpl {
        hub,
        writer,
        store: store.clone(),
        limits: Limits {
            max_content_bytes: config.max_content_bytes,
            max_rooms: config.max_rooms_per_stream,
        },
        stream_buffer: config.stream_buffer,
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
    };

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ChatServiceServer<ChatServiceImpl>>()
        .await;
    // Stops when `run` returns, however it returns.
    let health_checks = shutdown.child_token();
    let _stop_health_checks = health_checks.clone().drop_guard();
    tokio::spawn(report_store_health(store, health_reporter, health_checks));
    // Both versions: grpcurl asks for v1, older Postman builds for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let tls = match &config.tls {
        None => "off",
        Some(tls) if tls.mutual() => "mutual",
        Some(_) => "on",
    };
    tracing::info!(%local, tls, "gRPC chat server listening");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.tonic())?;
    }
    builder
        // Finds dead peers (and keeps NAT entries alive) on idle connections.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Health and reflection stay open: load balancers probe them.
        .add_service(ChatServiceServer::with_interceptor(
            chat,
            Authenticate::new(config.auth, metrics),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await?;

    // Sessions saw the same token; once they are gone nothing holds the
    // writer, which then commits what is queued and stops.
    sessions.close();
    sessions.wait().await;
    writer_thread.join().await?;
    if let Some(bus) = &bus {
        bus.goodbye().await;
    }
    tracing::info!("gRPC chat server stopped; storage flushed");
    Ok(())
}

/// Keeps the health of `chat.ChatService` and of the server as a whole (the
/// service "") in step with [`Store::healthy`], until `stop`. Then says
/// NOT_SERVING and forgets both services, which ends every health `Watch`
/// stream: a load balancer watching the server learns that it is going, and
/// its open stream no longer holds up the graceful shutdown (which waits for
/// every stream to end).
async fn report_store_health(
    store: Arc<dyn Store>,
    mut reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    use tonic::server::NamedService as _;
    use tonic_health::ServingStatus;

    const SERVICES: [&str; 2] = ["", ChatServiceServer::<ChatServiceImpl>::NAME];
    let mut ticks = tokio::time::interval(STORE_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                for service in SERVICES {
                    reporter.set_service_status(service, ServingStatus::NotServing).await;
                    reporter.clear_service_status(service).await;
                }
                return;
            }
            _ = ticks.tick() => {}
        }
        // A stat or two: cheap, but still blocking I/O.
        let store = store.clone();
        let healthy = match tokio::task::spawn_blocking(move || store.healthy()).await {
            Ok(healthy) => healthy,
            Err(e) => {
                tracing::error!(error = %e, "store health check failed");
                false
            }
        };
        if healthy == was_healthy {
            continue;
        }
        was_healthy = healthy;
        let status = if healthy {
            tracing::info!("storage works again: health is SERVING");
            ServingStatus::Serving
        } else {
            tracing::error!("storage no longer durable: health is NOT_SERVING");
            ServingStatus::NotServing
        };
        for service in SERVICES {
            reporter.set_service_status(service, status).await;
        }
    }
}

/// Microseconds since the Unix epoch, by the system clock.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
