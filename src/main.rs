//! `wsgate`: the command line. It parses flags, opens storage, binds the
//! listeners and calls the library's `run` functions; nothing else.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use wsgate::proxy::{self, Gateway};
use wsgate::server;
use wsgate::storage::{SqliteOptions, SqliteStore, Store, WriterOptions};

/// jemalloc, with its background threads: after 19,000 connections close,
/// the process is back from ~650 MB to ~115 MB resident within 15 s, where
/// glibc's malloc kept all of it; and 6-12% more deliveries per second at
/// saturation, for ~1 KiB more per open connection (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a graceful shutdown may take before the process just exits.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// wsgate: browsers talk to gRPC services over WebSocket.
///
/// With no command, runs the chat server and the WebSocket gateway in one
/// process: open http://localhost:8080 and chat. Every flag can also be set by
/// the environment variable shown with it. Logs go to stderr; set RUST_LOG
/// (e.g. RUST_LOG=debug, RUST_LOG=wsgate=trace) to change what is logged.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    all: AllArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The chat server and the gateway in one process (the default).
    All(AllArgs),
    /// The gRPC chat server alone (chat.ChatService, health, reflection).
    Server(ServerArgs),
    /// The WebSocket gateway alone, in front of any gRPC service.
    Proxy(ProxyArgs),
}

#[derive(Args)]
struct AllArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Args)]
struct ProxyArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Chat server")]
struct ServerArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "WSGATE_GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    grpc_listen: SocketAddr,
    /// SQLite file holding users and message history; created if missing.
    #[arg(long, env = "WSGATE_DB", default_value = "wsgate.db")]
    db: PathBuf,
    /// Sync every commit to disk (survives power loss, slower). Without it a
    /// confirmed message still survives a crash of the process.
    #[arg(long, env = "WSGATE_FSYNC")]
    fsync: bool,
    /// Largest message content, in bytes.
    #[arg(long, env = "WSGATE_MAX_CONTENT_BYTES", default_value_t = server::DEFAULT_MAX_CONTENT_BYTES)]
    max_content_bytes: usize,
    /// Frames queued towards one Chat stream before it counts as too slow
    /// and is ended with RESOURCE_EXHAUSTED.
    #[arg(long, env = "WSGATE_STREAM_BUFFER", default_value_t = server::DEFAULT_STREAM_BUFFER)]
    stream_buffer: usize,
}

#[derive(Args)]
#[command(next_help_heading = "WebSocket gateway")]
struct GatewayArgs {
    /// Address the WebSocket gateway (and web client) listens on.
    #[arg(long, env = "WSGATE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Largest frame a browser may send, in bytes; bigger ones close the
    /// connection with code 1009.
    #[arg(long, env = "WSGATE_MAX_FRAME_BYTES", default_value_t = proxy::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// Seconds between keepalive pings; a peer silent for two intervals is dropped.
    #[arg(long, env = "WSGATE_PING_INTERVAL", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_PING_INTERVAL.as_secs())]
    ping_interval: u64,
    /// Frames queued towards one browser before it counts as too slow and is
    /// closed with code 1008.
    #[arg(long, env = "WSGATE_OUTBOUND_QUEUE", default_value_t = proxy::DEFAULT_OUTBOUND_QUEUE)]
    outbound_queue: usize,
    /// Bytes of frames queued towards one browser before it counts as too
    /// slow and is closed with code 1008.
    #[arg(long, env = "WSGATE_OUTBOUND_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = proxy::DEFAULT_OUTBOUND_QUEUE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    outbound_queue_bytes: usize,
    /// Seconds one write to a browser may take; a browser that takes no
    /// frames for that long is dropped (close code 1008).
    #[arg(long, env = "WSGATE_WRITE_TIMEOUT", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout: u64,
    /// HTTP/2 connections to the upstream service; sessions' streams are
    /// spread over them in turn.
    #[arg(long, env = "WSGATE_UPSTREAM_CONNECTIONS",
          default_value_t = proxy::DEFAULT_UPSTREAM_CONNECTIONS)]
    upstream_connections: usize,
}

#[derive(Args)]
#[command(next_help_heading = "Upstream gRPC service")]
struct UpstreamArgs {
    /// URI of the gRPC service.
    #[arg(
        long,
        env = "WSGATE_UPSTREAM",
        default_value = "http://127.0.0.1:50051"
    )]
    upstream: String,
    /// Encoded FileDescriptorSet describing the service (e.g. from
    /// `protoc --include_imports -o set.pb` or `buf build -o set.pb`).
    /// Default: the built-in chat.proto.
    #[arg(long, env = "WSGATE_DESCRIPTOR_SET", value_name = "FILE")]
    descriptor_set: Option<PathBuf>,
    /// Full name of the service to expose.
    #[arg(long, env = "WSGATE_SERVICE", default_value = wsgate::proto::CHAT_SERVICE)]
    service: String,
    /// The bidirectional-streaming method behind the stream actions, when
    /// the service has more than one.
    #[arg(long, env = "WSGATE_STREAM_METHOD", value_name = "METHOD")]
    stream_method: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::All(cli.all)) {
            Command::All(args) => run_all(args).await,
            Command::Server(args) => run_server(args).await,
            Command::Proxy(args) => run_proxy(args).await,
        }
    });
    // Tasks still blocked on a vanished peer must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain text for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run_all(args: AllArgs) -> anyhow::Result<()> {
    let gateway = Arc::new(build_gateway(&UpstreamArgs::builtin())?);
    let store = open_store(&args.server)?;
    let grpc = bind(args.server.grpc_listen).await?;
    let web = bind(args.gateway.listen).await?;
    let upstream = format!("http://{}", reachable(grpc.local_addr()?));
    let shutdown = shutdown_on_signal();
    // If either half stops (an error), the other is stopped too.
    let server = tokio::spawn(stop_all_when_done(
        server::run(grpc, store, server_config(&args.server), shutdown.clone()),
        shutdown.clone(),
    ));
    let gateway = tokio::spawn(stop_all_when_done(
        proxy::run(
            web,
            gateway,
            proxy_config(&args.gateway, upstream),
            shutdown.clone(),
        ),
        shutdown,
    ));
    let (server, gateway) = tokio::join!(server, gateway);
    server??;
    gateway??;
    Ok(())
}

async fn stop_all_when_done(
    run: impl Future<Output = anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let result = run.await;
    shutdown.cancel();
    result
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let store = open_store(&args)?;
    let grpc = bind(args.grpc_listen).await?;
    server::run(grpc, store, server_config(&args), shutdown_on_signal()).await
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let gateway = Arc::new(build_gateway(&args.upstream)?);
    let web = bind(args.gateway.listen).await?;
    let config = proxy_config(&args.gateway, args.upstream.upstream.clone());
    proxy::run(web, gateway, config, shutdown_on_signal()).await
}

impl UpstreamArgs {
    fn builtin() -> Self {
        UpstreamArgs {
            upstream: String::new(),
            descriptor_set: None,
            service: wsgate::proto::CHAT_SERVICE.to_owned(),
            stream_method: None,
        }
    }
}

fn build_gateway(args: &UpstreamArgs) -> anyhow::Result<Gateway> {
    let pool = match &args.descriptor_set {
        None => wsgate::proto::descriptor_pool(),
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            prost_reflect::DescriptorPool::decode(bytes.as_slice()).with_context(|| {
                format!("{} is not an encoded FileDescriptorSet", path.display())
            })?
        }
    };
    let Some(service) = pool.get_service_by_name(&args.service) else {
        let known: Vec<_> = pool.services().map(|s| s.full_name().to_owned()).collect();
        bail!(
            "service {:?} is not in the descriptor set; it has: {}",
            args.service,
            known.join(", ")
        );
    };
    Ok(Gateway::from_service(
        &service,
        args.stream_method.as_deref(),
    )?)
}

fn open_store(args: &ServerArgs) -> anyhow::Result<Arc<dyn Store>> {
    let options = SqliteOptions {
        fsync: args.fsync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&args.db, options)
        .with_context(|| format!("cannot open the database {}", args.db.display()))?;
    tracing::info!(db = %args.db.display(), fsync = args.fsync, "storage ready");
    Ok(Arc::new(store))
}

fn server_config(args: &ServerArgs) -> server::Config {
    server::Config {
        max_content_bytes: args.max_content_bytes,
        stream_buffer: args.stream_buffer.max(1),
        writer: WriterOptions::default(),
    }
}

fn proxy_config(args: &GatewayArgs, upstream: String) -> proxy::Config {
    proxy::Config {
        max_frame_bytes: args.max_frame_bytes,
        ping_interval: Duration::from_secs(args.ping_interval.max(1)),
        outbound_queue: args.outbound_queue.max(1),
        outbound_queue_bytes: args.outbound_queue_bytes,
        write_timeout: Duration::from_secs(args.write_timeout),
        upstream_connections: args.upstream_connections.max(1),
        ..proxy::Config::new(upstream)
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The address to dial for a listener: a wildcard address is reached
/// through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one, or a
/// shutdown that takes too long, exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        cancel.cancel();
        tokio::select! {
            _ = signal() => tracing::warn!("second signal: exiting now"),
            _ = tokio::time::sleep(SHUTDOWN_TIMEOUT) => tracing::warn!("shutdown took too long: exiting now"),
        }
        std::process::exit(1);
    });
    token
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
