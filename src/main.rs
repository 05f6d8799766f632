//! `wsgate`: the command line. It parses flags, opens storage, binds the
//! listeners and calls the library's `run` functions; nothing else.

use std::collections::HashSet;
use std::io::{IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use wsgate::auth::{SignKey, TokenRequest, Verifier, VerifierConfig, VerifyKey};
use wsgate::proxy::{self, Gateway, Origin};
use wsgate::server;
use wsgate::storage::{
    PgOptions, PgStore, PgTarget, SqliteOptions, SqliteStore, Store, WriterOptions, is_postgres_url,
};
use wsgate::tls::{ClientTls, ServerTls, Trust};

/// jemalloc, with its background threads: after 19,000 connections close,
/// the process is back from ~650 MB to ~115 MB resident within 15 s, where
/// glibc's malloc kept all of it; and 6-12% more deliveries per second at
/// saturation, for ~1 KiB more per open connection (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a graceful shutdown may take before the process just exits.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame queue a flag accepts: tokio's bounded channels panic above
/// `usize::MAX >> 3`, and a million frames is already gigabytes of memory.
const MAX_QUEUE: usize = 1 << 20;
/// Longest interval or timeout a flag accepts: beyond a day, time arithmetic
/// on it overflows long before it would be of any use.
const MAX_SECONDS: u64 = 24 * 60 * 60;
/// Most HTTP/2 connections to the upstream: each is a task and buffers.
const MAX_UPSTREAM_CONNECTIONS: usize = 1024;
/// Largest connection limit a flag accepts: past ten million, the limit is
/// the machine's, not ours.
const MAX_CONNECTION_LIMIT: usize = 10_000_000;
/// Largest frame rate or burst a flag accepts (per connection).
const MAX_FRAME_RATE: u32 = 1_000_000;
/// Largest request head a flag accepts: hyper's own default buffer.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

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
    /// Prints a signed token, for trying `--auth jwt` out and for tests. A
    /// real application's backend issues its own (docs/security.md).
    Token(TokenArgs),
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
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct MetricsArgs {
    /// Address to serve Prometheus metrics on, at /metrics (HOST:PORT): this
    /// process's, so with `wsgate all` the server's and the gateway's. Unset:
    /// not served. Never on the public port: keep it on a private address.
    #[arg(long, env = "WSGATE_METRICS_LISTEN", value_name = "HOST:PORT",
          value_parser = listen_address)]
    metrics_listen: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    /// Every client is trusted to say who it is.
    None,
    /// Every connection presents a JSON Web Token and acts as its `sub`.
    Jwt,
}

/// How callers prove who they are. The same flags on the gateway and on the
/// chat server: both verify every token.
#[derive(Args)]
#[command(next_help_heading = "Authentication")]
struct AuthArgs {
    /// none: clients say who they are, and are believed (fine on loopback or
    /// behind an app that checks). jwt: each connection needs a valid token
    /// and acts as its `sub` (see docs/security.md).
    #[arg(long, env = "WSGATE_AUTH", value_enum, default_value_t = AuthMode::None)]
    auth: AuthMode,
    /// HS256 secret, at least 32 bytes. Prefer --jwt-secret-file or the
    /// variable: a command line is visible to every local user.
    #[arg(
        long,
        env = "WSGATE_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// File holding the HS256 secret (surrounding whitespace is ignored).
    #[arg(long, env = "WSGATE_JWT_SECRET_FILE", value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// PEM public key tokens may be signed with: RSA (RS256) or P-256 (ES256).
    /// Repeat (or separate with commas) to accept several, e.g. while rotating.
    #[arg(
        long,
        env = "WSGATE_JWT_PUBLIC_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    jwt_public_key: Vec<PathBuf>,
    /// JSON Web Key Set file; a token picks its key by `kid`.
    #[arg(long, env = "WSGATE_JWKS_FILE", value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "WSGATE_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim. Unset, a token naming any audience is refused.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "WSGATE_JWT_LEEWAY", value_name = "SECONDS",
          default_value_t = wsgate::auth::DEFAULT_LEEWAY.as_secs(), value_parser = leeway)]
    jwt_leeway: u64,
}

/// `wsgate token`: what to put in the token and the key to sign it with.
#[derive(Args)]
struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long, value_name = "ID")]
    user: String,
    /// How long the token is valid: e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = ttl)]
    ttl: Duration,
    /// Display name (`name` claim).
    #[arg(long)]
    name: Option<String>,
    /// Rooms the token may enter (`rooms` claim), comma-separated; an entry
    /// ending in `*` is a prefix. Unset: every room.
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// HS256 secret to sign with.
    #[arg(
        long,
        env = "WSGATE_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// File holding the HS256 secret.
    #[arg(long, env = "WSGATE_JWT_SECRET_FILE", value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// PEM private key to sign with: RSA (RS256) or P-256 (ES256).
    #[arg(long, env = "WSGATE_JWT_PRIVATE_KEY", value_name = "FILE")]
    jwt_private_key: Option<PathBuf>,
    /// `iss` claim.
    #[arg(long, env = "WSGATE_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// `aud` claim.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Key id (`kid` header), for a verifier holding a JWKS.
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
}

#[derive(Args)]
#[command(next_help_heading = "Chat server")]
struct ServerArgs {
    /// Address the gRPC server listens on: HOST:PORT, where HOST is an IP
    /// address or a name ([::1]:50051, localhost:50051).
    #[arg(long, env = "WSGATE_GRPC_LISTEN", default_value = "0.0.0.0:50051",
          value_parser = listen_address)]
    grpc_listen: String,
    /// Where users and message history live: a SQLite file, created if
    /// missing, one server per file (it is locked, FILE.lock, while in use);
    /// or a PostgreSQL database, postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// (or postgresql://), which several servers may share.
    #[arg(
        long,
        env = "WSGATE_DB",
        default_value = "wsgate.db",
        value_name = "FILE|URL"
    )]
    db: String,
    /// PEM certificate chain (leaf first) the gRPC server serves TLS with;
    /// needs --grpc-tls-key. Unset: plaintext HTTP/2.
    #[arg(
        long,
        env = "WSGATE_GRPC_TLS_CERT",
        value_name = "FILE",
        requires = "grpc_tls_key"
    )]
    grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(
        long,
        env = "WSGATE_GRPC_TLS_KEY",
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_tls_key: Option<PathBuf>,
    /// PEM CA bundle: with it, gRPC clients must present a certificate it
    /// signed (mutual TLS), or are refused at the handshake.
    #[arg(
        long,
        env = "WSGATE_GRPC_CLIENT_CA",
        value_name = "FILE",
        requires = "grpc_tls_cert"
    )]
    grpc_client_ca: Option<PathBuf>,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Sync every commit to disk (survives power loss, slower). Without it a
    /// confirmed message still survives a crash of the process. SQLite
    /// only: PostgreSQL's own settings (synchronous_commit) decide there.
    /// The variable takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "WSGATE_FSYNC", value_parser = BoolishValueParser::new())]
    fsync: bool,
    /// Largest message content, in bytes.
    #[arg(long, env = "WSGATE_MAX_CONTENT_BYTES", default_value_t = server::DEFAULT_MAX_CONTENT_BYTES,
          value_parser = at_least_one::<usize>)]
    max_content_bytes: usize,
    /// Most rooms one Chat stream may be in at once; joining (or sending to)
    /// one more gets RESOURCE_EXHAUSTED, and the stream stays open.
    #[arg(long, env = "WSGATE_MAX_ROOMS_PER_STREAM", value_name = "ROOMS",
          default_value_t = server::DEFAULT_MAX_ROOMS_PER_STREAM,
          value_parser = at_least_one::<usize>)]
    max_rooms_per_stream: usize,
    /// NATS server(s) linking the chat servers that share one PostgreSQL
    /// database, nats://[USER:PASSWORD@]HOST:PORT (comma-separated for a
    /// NATS cluster): members of a room on different servers then see each
    /// other's messages, edits, typing and presence live. Unset: this
    /// server's streams are all there is. Needs --db postgres://.
    #[arg(long, env = "WSGATE_BUS", value_name = "URL")]
    bus: Option<String>,
    /// Start of every bus subject: servers that chat together share it;
    /// another prefix keeps another system apart on the same NATS.
    #[arg(long, env = "WSGATE_BUS_SUBJECT_PREFIX", value_name = "PREFIX",
          default_value = server::bus::DEFAULT_SUBJECT_PREFIX,
          value_parser = subject_prefix)]
    bus_subject_prefix: String,
    /// Frames queued towards one Chat stream before it counts as too slow
    /// and is ended with RESOURCE_EXHAUSTED.
    #[arg(long, env = "WSGATE_STREAM_BUFFER", default_value_t = server::DEFAULT_STREAM_BUFFER,
          value_parser = queue_length)]
    stream_buffer: usize,
}

#[derive(Args)]
#[command(next_help_heading = "WebSocket gateway")]
struct GatewayArgs {
    /// Address the WebSocket gateway (and web client) listens on: HOST:PORT,
    /// where HOST is an IP address or a name ([::1]:8080, localhost:8080).
    #[arg(long, env = "WSGATE_LISTEN", default_value = "0.0.0.0:8080",
          value_parser = listen_address)]
    listen: String,
    /// Largest frame a browser may send, in bytes; bigger ones close the
    /// connection with code 1009.
    #[arg(long, env = "WSGATE_MAX_FRAME_BYTES", default_value_t = proxy::DEFAULT_MAX_FRAME_BYTES,
          value_parser = at_least_one::<usize>)]
    max_frame_bytes: usize,
    /// Seconds between keepalive pings; a peer silent for two intervals is dropped.
    #[arg(long, env = "WSGATE_PING_INTERVAL", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_PING_INTERVAL.as_secs(),
          value_parser = seconds)]
    ping_interval: u64,
    /// Frames queued towards one browser before it counts as too slow and is
    /// closed with code 1008.
    #[arg(long, env = "WSGATE_OUTBOUND_QUEUE", default_value_t = proxy::DEFAULT_OUTBOUND_QUEUE,
          value_parser = queue_length)]
    outbound_queue: usize,
    /// Bytes of frames queued towards one browser before it counts as too
    /// slow and is closed with code 1008.
    #[arg(long, env = "WSGATE_OUTBOUND_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = proxy::DEFAULT_OUTBOUND_QUEUE_BYTES,
          value_parser = at_least_one::<usize>)]
    outbound_queue_bytes: usize,
    /// Seconds one write to a browser may take; a browser that takes no
    /// frames for that long is dropped (close code 1008).
    #[arg(long, env = "WSGATE_WRITE_TIMEOUT", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = seconds)]
    write_timeout: u64,
    /// HTTP/2 connections to each upstream server; sessions' streams are
    /// spread over them in turn.
    #[arg(long, env = "WSGATE_UPSTREAM_CONNECTIONS",
          default_value_t = proxy::DEFAULT_UPSTREAM_CONNECTIONS,
          value_parser = upstream_connections)]
    upstream_connections: usize,
    /// Seconds a connection has to finish its TLS handshake and send a
    /// request's complete headers; then it is closed.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
          value_parser = seconds)]
    handshake_timeout: u64,
    /// Largest request head (request line and headers), in bytes, 8192 or
    /// more; a larger one gets HTTP 431.
    #[arg(long, env = "WSGATE_MAX_HEADER_BYTES", value_name = "BYTES",
          default_value_t = proxy::DEFAULT_MAX_HEADER_BYTES,
          value_parser = header_bytes)]
    max_header_bytes: usize,
    /// PEM certificate chain (the server's certificate first): the gateway
    /// serves https:// and wss:// on its port. Needs --tls-key.
    #[arg(
        long,
        env = "WSGATE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Needs --tls-cert.
    #[arg(
        long,
        env = "WSGATE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Origins besides the page's own whose pages may open a WebSocket,
    /// comma-separated (https://app.example.com,http://localhost:3000). A
    /// page of any other origin gets HTTP 403; a client that sends no Origin
    /// (not a browser page) is let in.
    #[arg(long, env = "WSGATE_ALLOWED_ORIGINS", value_name = "ORIGINS",
          value_delimiter = ',', value_parser = origin)]
    allowed_origins: Vec<Origin>,
    /// WebSocket connections open at once, in all; past it, HTTP 503.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS",
          default_value_t = proxy::DEFAULT_MAX_CONNECTIONS,
          value_parser = connection_limit)]
    max_connections: usize,
    /// WebSocket connections open at once from one client address (IPv6:
    /// one /64); past it, HTTP 503. Behind a reverse proxy every client has
    /// its address: raise this to --max-connections.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_IP",
          default_value_t = proxy::DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = connection_limit)]
    max_connections_per_ip: usize,
    /// With --auth jwt: WebSocket connections one user (a token's `sub`)
    /// may have open; past it, HTTP 503 (or 1008 after a first-frame
    /// sign-in).
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_USER",
          default_value_t = proxy::DEFAULT_MAX_CONNECTIONS_PER_USER,
          value_parser = connection_limit)]
    max_connections_per_user: usize,
    /// Frames per second one connection may send, sustained; a frame over
    /// the limit gets a RESOURCE_EXHAUSTED error and is not sent on.
    #[arg(long, env = "WSGATE_MAX_FRAMES_PER_SECOND",
          default_value_t = proxy::DEFAULT_MAX_FRAMES_PER_SECOND,
          value_parser = frame_rate)]
    max_frames_per_second: u32,
    /// Frames one connection may send at once over --max-frames-per-second.
    #[arg(long, env = "WSGATE_FRAME_BURST",
          default_value_t = proxy::DEFAULT_FRAME_BURST,
          value_parser = frame_rate)]
    frame_burst: u32,
    /// With --auth jwt: the cookie that may carry the token at the upgrade.
    #[arg(long, env = "WSGATE_AUTH_COOKIE", value_name = "NAME",
          default_value = proxy::DEFAULT_AUTH_COOKIE, value_parser = proxy::credentials::cookie_name)]
    auth_cookie: String,
    /// With --auth jwt: seconds a connection without a token at the upgrade
    /// has to send {"auth": {"token": ...}}; then it is closed (1008).
    #[arg(long, env = "WSGATE_AUTH_TIMEOUT", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_AUTH_TIMEOUT.as_secs(), value_parser = seconds)]
    auth_timeout: u64,
    /// Handshake headers passed upstream as gRPC metadata, comma-separated
    /// (e.g. x-request-id). No other browser header is passed.
    #[arg(long, env = "WSGATE_FORWARD_HEADER", value_name = "NAMES",
          value_delimiter = ',', value_parser = proxy::credentials::forward_name)]
    forward_header: Vec<String>,
    /// Cookies passed upstream as gRPC metadata under their own names,
    /// comma-separated; never the auth cookie.
    #[arg(long, env = "WSGATE_FORWARD_COOKIE", value_name = "NAMES",
          value_delimiter = ',', value_parser = proxy::credentials::forward_name)]
    forward_cookie: Vec<String>,
}

#[derive(Args)]
#[command(next_help_heading = "Upstream gRPC service")]
struct UpstreamArgs {
    /// Address of the gRPC service: http://HOST:PORT or just HOST:PORT
    /// (plaintext HTTP/2), or https://HOST:PORT (TLS; needs --upstream-ca).
    /// Several servers of the service: repeat the flag or separate with
    /// commas, or give a HOST that is a name with several addresses (each
    /// address is one server; the name is looked up again every
    /// --upstream-resolve-interval). Each server is health-checked and
    /// sessions are spread over the healthy ones.
    #[arg(
        long,
        env = "WSGATE_UPSTREAM",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ',',
        value_parser = upstream_uri
    )]
    upstream: Vec<String>,
    /// Seconds between two lookups of an --upstream name: a server added
    /// to it gets sessions within this; one it no longer gives gets no new
    /// ones (its streams stay until they end).
    #[arg(long, env = "WSGATE_UPSTREAM_RESOLVE_INTERVAL", value_name = "SECONDS",
          default_value_t = proxy::DEFAULT_RESOLVE_INTERVAL.as_secs(),
          value_parser = seconds)]
    upstream_resolve_interval: u64,
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
    /// PEM CA bundle the https:// upstream's certificate must chain to
    /// (for public CAs, the system's bundle, e.g.
    /// /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "WSGATE_UPSTREAM_CA", value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// PEM client certificate chain presented to the upstream (mutual
    /// TLS); needs --upstream-key.
    #[arg(
        long,
        env = "WSGATE_UPSTREAM_CERT",
        value_name = "FILE",
        requires = "upstream_key"
    )]
    upstream_cert: Option<PathBuf>,
    /// PEM private key of --upstream-cert.
    #[arg(
        long,
        env = "WSGATE_UPSTREAM_KEY",
        value_name = "FILE",
        requires = "upstream_cert"
    )]
    upstream_key: Option<PathBuf>,
    /// Name the upstream's certificate must hold, also sent as SNI.
    /// Default: the host of --upstream (needed when that is an IP address
    /// and the certificate names a host).
    #[arg(long, env = "WSGATE_UPSTREAM_SERVER_NAME", value_name = "NAME")]
    upstream_server_name: Option<String>,
}

/// An error ends the process with its message and causes, one line, exit
/// status 1; never with the `Debug` form `main` returning `Err` would print,
/// which under `RUST_BACKTRACE=1` adds a backtrace to an expected failure
/// (a port in use).
fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics if stderr is gone.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line. The top-level help shows the flags of the default mode;
/// those only the gateway alone takes are named after them, so that
/// `wsgate --help` mentions every flag.
fn command() -> clap::Command {
    let command = Cli::command();
    let top: HashSet<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    let proxy_only: Vec<String> = command
        .find_subcommand("proxy")
        .into_iter()
        .flat_map(|proxy| proxy.get_arguments())
        .filter_map(|a| a.get_long())
        .filter(|long| !top.contains(long))
        .map(|long| format!("--{long}"))
        .collect();
    let note = format!(
        "`wsgate proxy` (the gateway alone) also takes {}: see `wsgate proxy --help`.",
        proxy_only.join(", ")
    );
    command.after_help(note)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::All(cli.all)) {
            Command::All(args) => run_all(args).await,
            Command::Server(args) => run_server(args).await,
            Command::Proxy(args) => run_proxy(args).await,
            Command::Token(args) => print_token(&args),
        }
    });
    // Tasks still blocked on a vanished peer must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Crates whose trace level logs whole frames: tungstenite prints every
/// WebSocket message received, which carries tokens (`auth` frames) and
/// people's messages. Capped at debug whatever RUST_LOG says (no log, at
/// any level, holds a token), and never raised: at the default `info` they
/// log nothing (their debug lines are every close handshake).
const NEVER_TRACED: &[&str] = &["tungstenite", "tokio_tungstenite"];

fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    // RUST_LOG unset or empty: `info` (an empty filter would log nothing
    // at all, not even errors); not understood: `info`, and a warning.
    let given = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty());
    let (wanted, refused) = match given.map(tracing_subscriber::EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (tracing_subscriber::EnvFilter::new("info"), Some(e)),
        None => (tracing_subscriber::EnvFilter::new("info"), None),
    };
    // A second global filter that every event must also pass: a directive
    // added to the EnvFilter would set these crates' level, raising it
    // above `info`. Its default is the EnvFilter's most verbose level: the
    // stack's is the most verbose of its layers', and the `log` crate's
    // records (tungstenite's, one per frame at trace) are made and filtered
    // one by one whenever it reaches their level. (Global filters, not a
    // per-layer one: that would cost a lookup on every entry into a span,
    // and a session's span is entered on every poll.)
    let most = wanted.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let cap = NEVER_TRACED
        .iter()
        .fold(Targets::new().with_default(most), |cap, target| {
            cap.with_target(*target, most.min(LevelFilter::DEBUG))
        });
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain text for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        // A log that cannot be written (stderr a pipe whose reader went
        // away: journald restarted, a supervisor gone) is lost, and nothing
        // else: by default tracing-subscriber reports the failed write with
        // eprintln!, which panics on that same dead stderr, in whatever
        // task logged (a session at connect, the shutdown on SIGTERM).
        .log_internal_errors(false);
    tracing_subscriber::registry()
        .with(wanted)
        .with(cap)
        .with(log)
        .init();
    if let Some(e) = refused {
        tracing::warn!("RUST_LOG not understood ({e}): logging at info");
    }
}

async fn run_all(args: AllArgs) -> anyhow::Result<()> {
    let gateway = Arc::new(build_gateway(&UpstreamArgs::builtin())?);
    let auth = args.server.auth.verifier()?;
    let metrics = wsgate::metrics::registry();
    // The upstream is known once the gRPC listener is bound.
    let mut gateway_config =
        proxy_config(&args.gateway, Vec::new(), auth.clone(), metrics.clone())?;
    let store = open_store(&args.server).await?;
    let grpc = bind(&args.server.grpc_listen).await?;
    let web = bind(&args.gateway.listen).await?;
    warn_if_open(auth.as_ref(), &[&grpc, &web]);
    let tls = args.server.tls()?;
    let grpc_addr = reachable(grpc.local_addr()?);
    // The gateway dials its own server: with TLS on, over TLS too, trusting
    // exactly the certificate the server serves (whatever names it holds).
    (gateway_config.upstreams, gateway_config.upstream_tls) = match &args.server.grpc_tls_cert {
        None => (vec![format!("http://{grpc_addr}")], None),
        Some(cert) => {
            if args.server.grpc_client_ca.is_some() {
                bail!(
                    "--grpc-client-ca (mutual TLS) needs the gateway to hold a client certificate: \
                     run `wsgate server` and `wsgate proxy --upstream-cert ... --upstream-key ...`"
                );
            }
            let pem = read_file(cert)?;
            let client = ClientTls::new(Trust::Exactly(&pem), None, None)
                .with_context(|| format!("cannot use --grpc-tls-cert {}", cert.display()))?;
            (vec![format!("https://{grpc_addr}")], Some(client))
        }
    };
    let shutdown = shutdown_on_signal();
    serve_metrics(&args.server.metrics, &metrics, &shutdown).await?;
    // If either half stops (an error), the other is stopped too.
    let server = tokio::spawn(stop_all_when_done(
        server::run(
            grpc,
            store,
            server_config(&args.server, auth.clone(), metrics.clone(), tls)?,
            shutdown.clone(),
        ),
        shutdown.clone(),
    ));
    let gateway = tokio::spawn(stop_all_when_done(
        proxy::run(web, gateway, gateway_config, shutdown.clone()),
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
    let auth = args.auth.verifier()?;
    let tls = args.tls()?;
    let store = open_store(&args).await?;
    let grpc = bind(&args.grpc_listen).await?;
    warn_if_open(auth.as_ref(), &[&grpc]);
    let metrics = wsgate::metrics::registry();
    let shutdown = shutdown_on_signal();
    serve_metrics(&args.metrics, &metrics, &shutdown).await?;
    let config = server_config(&args, auth, metrics, tls)?;
    server::run(grpc, store, config, shutdown).await
}

/// Serves `/metrics` on `--metrics-listen`, if given, until `shutdown`.
async fn serve_metrics(
    args: &MetricsArgs,
    registry: &wsgate::metrics::MetricsRegistry,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = &args.metrics_listen else {
        return Ok(());
    };
    let listener = bind(addr).await?;
    let (registry, shutdown) = (registry.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = wsgate::metrics::serve(listener, registry, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let upstreams = &args.upstream.upstream;
    if let Some(twice) = upstreams
        .iter()
        .enumerate()
        .find_map(|(i, u)| upstreams[..i].contains(u).then_some(u))
    {
        bail!("--upstream {twice} is given twice");
    }
    let gateway = Arc::new(build_gateway(&args.upstream)?);
    let auth = args.auth.verifier()?;
    let upstream_tls = args.upstream.tls()?;
    let metrics = wsgate::metrics::registry();
    let config = proxy::Config {
        upstream_tls,
        upstream_resolve_interval: Duration::from_secs(args.upstream.upstream_resolve_interval),
        ..proxy_config(&args.gateway, args.upstream.upstream.clone(), auth, metrics)?
    };
    let web = bind(&args.gateway.listen).await?;
    warn_if_open(config.auth.as_ref(), &[&web]);
    let shutdown = shutdown_on_signal();
    serve_metrics(&args.metrics, &config.metrics, &shutdown).await?;
    proxy::run(web, gateway, config, shutdown).await
}

impl AuthArgs {
    /// The verifier `--auth jwt` asks for, with its keys loaded; `None` for
    /// `--auth none`.
    fn verifier(&self) -> anyhow::Result<Option<Arc<Verifier>>> {
        let mut keys = Vec::new();
        if let Some(secret) =
            read_secret(self.jwt_secret.as_deref(), self.jwt_secret_file.as_deref())?
        {
            keys.push(VerifyKey::Secret(secret));
        }
        for path in &self.jwt_public_key {
            keys.push(VerifyKey::PublicPem(read_file(path)?));
        }
        if let Some(path) = &self.jwks_file {
            let json = String::from_utf8(read_file(path)?)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            keys.push(VerifyKey::Jwks(json));
        }
        if self.auth == AuthMode::None {
            if !keys.is_empty() {
                // A key set with the mode left at none would look protected
                // and not be.
                bail!(
                    "a JWT key is configured but --auth is none: add --auth jwt, or remove the key"
                );
            }
            return Ok(None);
        }
        let config = VerifierConfig {
            keys,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: Duration::from_secs(self.jwt_leeway),
        };
        let verifier = Verifier::new(&config).context(
            "--auth jwt: cannot load the keys (--jwt-secret, --jwt-secret-file, --jwt-public-key, --jwks-file)",
        )?;
        tracing::info!(?verifier, "authentication: JSON Web Tokens");
        Ok(Some(Arc::new(verifier)))
    }
}

/// The secret from the flag or the file named; never both.
fn read_secret(
    value: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("give --jwt-secret or --jwt-secret-file, not both"),
        (Some(secret), None) => Ok(Some(secret.as_bytes().to_vec())),
        (None, Some(path)) => {
            let bytes = read_file(path)?;
            Ok(Some(bytes.trim_ascii().to_vec()))
        }
        (None, None) => Ok(None),
    }
}

fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// With `--auth none`, anyone who can reach a listener can act as any user:
/// say so once when that is more than this machine.
fn warn_if_open(auth: Option<&Arc<Verifier>>, listeners: &[&TcpListener]) {
    if auth.is_some() {
        return;
    }
    for listener in listeners {
        if let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                %addr,
                "--auth none on an address other machines can reach: any client can act as any user; \
                 use --auth jwt (docs/security.md)"
            );
        }
    }
}

fn print_token(args: &TokenArgs) -> anyhow::Result<()> {
    let key = match (
        read_secret(args.jwt_secret.as_deref(), args.jwt_secret_file.as_deref())?,
        &args.jwt_private_key,
    ) {
        (Some(_), Some(_)) => bail!("give a secret or --jwt-private-key, not both"),
        (Some(secret), None) => SignKey::Secret(secret),
        (None, Some(path)) => SignKey::PrivatePem(read_file(path)?),
        (None, None) => bail!(
            "no key to sign with: give --jwt-secret, --jwt-secret-file (or WSGATE_JWT_SECRET) or --jwt-private-key"
        ),
    };
    let request = TokenRequest {
        user: args.user.clone(),
        ttl: args.ttl,
        name: args.name.clone(),
        rooms: args.rooms.clone(),
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
        kid: args.kid.clone(),
    };
    let token = wsgate::auth::mint(&key, &request)?;
    println!("{token}");
    Ok(())
}

impl UpstreamArgs {
    fn builtin() -> Self {
        UpstreamArgs {
            upstream: Vec::new(),
            upstream_resolve_interval: proxy::DEFAULT_RESOLVE_INTERVAL.as_secs(),
            descriptor_set: None,
            service: wsgate::proto::CHAT_SERVICE.to_owned(),
            stream_method: None,
            upstream_ca: None,
            upstream_cert: None,
            upstream_key: None,
            upstream_server_name: None,
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

async fn open_store(args: &ServerArgs) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres_url(&args.db) {
        // The URL may hold a password: only `target` (without it) is shown.
        let target = PgTarget::parse(&args.db)?;
        let connect = target.clone();
        let store =
            tokio::task::spawn_blocking(move || PgStore::connect(&connect, PgOptions::default()))
                .await
                .context("cannot wait for the database connection")?
                .with_context(|| format!("cannot open the database {target}"))?;
        tracing::info!(db = %target, "storage ready (PostgreSQL)");
        return Ok(Arc::new(store));
    }
    let path = PathBuf::from(&args.db);
    let options = SqliteOptions {
        fsync: args.fsync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options)
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    tracing::info!(db = %path.display(), fsync = args.fsync, "storage ready");
    Ok(Arc::new(store))
}

impl ServerArgs {
    /// `--grpc-tls-cert`/`--grpc-tls-key` (clap has checked that both or
    /// neither are given) and `--grpc-client-ca`, loaded and checked.
    fn tls(&self) -> anyhow::Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&self.grpc_tls_cert, &self.grpc_tls_key) else {
            return Ok(None);
        };
        let ca = self.grpc_client_ca.as_deref().map(read_file).transpose()?;
        let tls = ServerTls::from_pem(&read_file(cert)?, &read_file(key)?, ca.as_deref())
            .with_context(|| {
                let mut files = format!(
                    "--grpc-tls-cert {}, --grpc-tls-key {}",
                    cert.display(),
                    key.display()
                );
                if let Some(ca) = &self.grpc_client_ca {
                    files += &format!(", --grpc-client-ca {}", ca.display());
                }
                format!("cannot serve TLS with {files}")
            })?;
        tracing::info!(mutual = tls.mutual(), "gRPC TLS ready");
        Ok(Some(tls))
    }
}

impl UpstreamArgs {
    /// The TLS an `https://` upstream needs; for `http://`, none, and the
    /// TLS flags are refused rather than silently ignored.
    fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let https = self.upstream.iter().any(|u| u.starts_with("https://"));
        if let Some(plain) = self.upstream.iter().find(|u| !u.starts_with("https://"))
            && https
        {
            bail!(
                "--upstream {plain} is plaintext while another is https://: use one scheme for all"
            );
        }
        let given = [
            ("--upstream-ca", self.upstream_ca.is_some()),
            ("--upstream-cert", self.upstream_cert.is_some()),
            (
                "--upstream-server-name",
                self.upstream_server_name.is_some(),
            ),
        ];
        if !https {
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                bail!(
                    "{flag} is for TLS, but --upstream {} is plaintext: use https://",
                    self.upstream.join(",")
                );
            }
            return Ok(None);
        }
        // No implicit trust in every public CA for what is usually the
        // operator's own service: the operator names the roots.
        let Some(ca) = &self.upstream_ca else {
            bail!(
                "--upstream {} is https:// and needs --upstream-ca FILE: the CA bundle its \
                 certificate chains to (for a public CA, the system's, e.g. /etc/ssl/certs/ca-certificates.crt)",
                self.upstream.join(",")
            );
        };
        let ca_pem = read_file(ca)?;
        let identity = match (&self.upstream_cert, &self.upstream_key) {
            (Some(cert), Some(key)) => Some((read_file(cert)?, read_file(key)?)),
            _ => None,
        };
        let tls = ClientTls::new(
            Trust::Roots(&ca_pem),
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            self.upstream_server_name.as_deref(),
        )
        .with_context(|| {
            let mut files = format!("--upstream-ca {}", ca.display());
            if let (Some(cert), Some(key)) = (&self.upstream_cert, &self.upstream_key) {
                files += &format!(
                    ", --upstream-cert {}, --upstream-key {}",
                    cert.display(),
                    key.display()
                );
            }
            format!("cannot use TLS to the upstream with {files}")
        })?;
        Ok(Some(tls))
    }
}

fn server_config(
    args: &ServerArgs,
    auth: Option<Arc<Verifier>>,
    metrics: wsgate::metrics::MetricsRegistry,
    tls: Option<ServerTls>,
) -> anyhow::Result<server::Config> {
    let bus = match &args.bus {
        Some(_) if !is_postgres_url(&args.db) => anyhow::bail!(
            "--bus links servers that share one database: it needs --db postgres://... \
             (with SQLite each server has a history of its own)"
        ),
        Some(url) => Some(server::bus::BusConfig {
            url: url.clone(),
            subject_prefix: args.bus_subject_prefix.clone(),
        }),
        None => None,
    };
    Ok(server::Config {
        bus,
        auth,
        metrics,
        tls,
        max_content_bytes: args.max_content_bytes,
        max_rooms_per_stream: args.max_rooms_per_stream,
        stream_buffer: args.stream_buffer,
        writer: WriterOptions::default(),
    })
}

/// The gateway's settings; reads the TLS files, if any.
fn proxy_config(
    args: &GatewayArgs,
    upstreams: Vec<String>,
    auth: Option<Arc<Verifier>>,
    metrics: wsgate::metrics::MetricsRegistry,
) -> anyhow::Result<proxy::Config> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(proxy::tls::server_config(cert, key)?),
        // clap requires both or neither.
        _ => None,
    };
    Ok(proxy::Config {
        auth,
        metrics,
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        max_header_bytes: args.max_header_bytes,
        tls,
        allowed_origins: args.allowed_origins.clone(),
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        max_connections_per_user: args.max_connections_per_user,
        max_frames_per_second: args.max_frames_per_second,
        frame_burst: args.frame_burst,
        max_frame_bytes: args.max_frame_bytes,
        ping_interval: Duration::from_secs(args.ping_interval),
        outbound_queue: args.outbound_queue,
        outbound_queue_bytes: args.outbound_queue_bytes,
        write_timeout: Duration::from_secs(args.write_timeout),
        upstream_connections: args.upstream_connections,
        auth_cookie: args.auth_cookie.clone(),
        auth_timeout: Duration::from_secs(args.auth_timeout),
        forward_headers: args.forward_header.clone(),
        forward_cookies: args.forward_cookie.clone(),
        upstreams,
        ..proxy::Config::new(String::new())
    })
}

/// Listens on `addr` (HOST:PORT, checked by [`listen_address`]): on the
/// first of the addresses HOST resolves to that can be bound.
async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let candidates = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?;
    let mut failure = None;
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => {
                if addr.parse::<SocketAddr>().is_err() {
                    tracing::info!(listen = addr, address = %candidate, "resolved");
                }
                return Ok(listener);
            }
            Err(e) => {
                tracing::debug!(listen = addr, address = %candidate, error = %e, "cannot bind");
                failure = Some((candidate, e));
            }
        }
    }
    match failure {
        Some((candidate, e)) if candidate.to_string() == addr => {
            Err(e).with_context(|| format!("cannot listen on {addr}"))
        }
        Some((candidate, e)) => {
            Err(e).with_context(|| format!("cannot listen on {addr} (at {candidate})"))
        }
        None => bail!("cannot listen on {addr}: the name resolves to no address"),
    }
}

/// Checks a HOST:PORT to listen on; the name is resolved when binding.
fn subject_prefix(value: &str) -> Result<String, String> {
    server::bus::check_subject_prefix(value).map(|()| value.to_owned())
}

fn listen_address(value: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected HOST:PORT, e.g. 0.0.0.0:8080, localhost:8080 or [::1]:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("no port: {EXPECTED}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{port:?} is not a port (0 to 65535): {EXPECTED}"));
    }
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<Ipv6Addr>().is_err() => {
            Err(format!("{v6:?} is not an IPv6 address: {EXPECTED}"))
        }
        Some(_) => Ok(value.to_owned()),
        None if host.is_empty() => Err(format!(
            "no host (0.0.0.0 for every IPv4 interface): {EXPECTED}"
        )),
        None if host.contains(':') => Err(format!(
            "an IPv6 address goes in brackets, [{host}]:{port}: {EXPECTED}"
        )),
        None => Ok(value.to_owned()),
    }
}

/// The upstream's URI: `http://HOST:PORT` or `https://HOST:PORT` as given,
/// or a bare `HOST:PORT` made into a plaintext one (without a scheme, every
/// call would fail with a bare "transport error").
fn upstream_uri(value: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT";
    let uri = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let parsed: tonic::transport::Uri = uri
        .parse()
        .map_err(|e| format!("not an address ({e}): {EXPECTED}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        other => {
            let scheme = other.unwrap_or_default();
            return Err(format!("scheme {scheme:?} is not supported: {EXPECTED}"));
        }
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("no host: {EXPECTED}"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!(
            "the upstream is an address, without a path: {EXPECTED}"
        ));
    }
    Ok(uri)
}

/// A number of at least one: zero would mean no room at all, not "no limit".
fn at_least_one<T>(value: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = value.trim().parse().map_err(|e| format!("{e}"))?;
    if n == T::from(0) {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// `at_least_one`, and at most `max`.
fn in_range<T>(value: &str, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let n = at_least_one(value)?;
    if n > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(n)
}

fn queue_length(value: &str) -> Result<usize, String> {
    in_range(value, MAX_QUEUE)
}

/// A duration in whole seconds, for the ping interval and the write timeout.
fn seconds(value: &str) -> Result<u64, String> {
    in_range(value, MAX_SECONDS)
}

/// Seconds of clock skew: zero is allowed (exact clocks), ten minutes is
/// already more than any clock should be off by.
fn leeway(value: &str) -> Result<u64, String> {
    let n: u64 = value.trim().parse().map_err(|e| format!("{e}"))?;
    if n > 600 {
        return Err("must be at most 600".into());
    }
    Ok(n)
}

/// A token lifetime: a number and a unit, s, m, h or d (`90s`, `1h`).
fn ttl(value: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a number and a unit (s, m, h, d), e.g. 30m or 1h";
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().map_err(|_| EXPECTED.to_owned())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(EXPECTED.to_owned()),
    };
    match n.checked_mul(unit_seconds) {
        Some(0) => Err("must be more than zero".into()),
        Some(s) if s <= 366 * 86400 => Ok(Duration::from_secs(s)),
        _ => Err("must be at most a year (366d)".into()),
    }
}

fn upstream_connections(value: &str) -> Result<usize, String> {
    in_range(value, MAX_UPSTREAM_CONNECTIONS)
}

fn connection_limit(value: &str) -> Result<usize, String> {
    in_range(value, MAX_CONNECTION_LIMIT)
}

fn frame_rate(value: &str) -> Result<u32, String> {
    in_range(value, MAX_FRAME_RATE)
}

/// A header size limit: hyper cannot read with a buffer under 8 KiB.
fn header_bytes(value: &str) -> Result<usize, String> {
    let n = in_range(value, MAX_HEADER_BYTES)?;
    if n < proxy::MIN_MAX_HEADER_BYTES {
        return Err(format!("must be at least {}", proxy::MIN_MAX_HEADER_BYTES));
    }
    Ok(n)
}

/// One origin of --allowed-origins: scheme://host[:port].
fn origin(value: &str) -> Result<Origin, String> {
    value.parse()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_host_and_port() {
        for ok in [
            "0.0.0.0:8080",
            "localhost:0",
            "[::1]:0",
            "[::]:8080",
            "example.com:443",
        ] {
            assert_eq!(listen_address(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "8080",
            "localhost",
            ":8080",
            "::1:8080",
            "[::1]",
            "[x]:1",
            "h:65536",
            "h:-1",
        ] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bare_upstream_is_plain_http_and_https_is_accepted() {
        assert_eq!(
            upstream_uri("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(upstream_uri("chat:50051").unwrap(), "http://chat:50051");
        assert_eq!(upstream_uri("[::1]:50051").unwrap(), "http://[::1]:50051");
        assert_eq!(
            upstream_uri("http://chat:50051/").unwrap(),
            "http://chat:50051/"
        );
        assert_eq!(
            upstream_uri("https://chat:443").unwrap(),
            "https://chat:443"
        );
        for bad in [
            "unix:///tmp/s",
            "https://",
            "http://",
            "chat:1/x",
            "http://chat:1?q",
        ] {
            assert!(upstream_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_lifetimes_have_a_unit() {
        assert_eq!(ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in [
            "",
            "1",
            "h",
            "0s",
            "1.5h",
            "-1h",
            "1 h",
            "400d",
            "99999999999999999999d",
        ] {
            assert!(ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn edge_limits_are_checked_when_parsed() {
        assert_eq!(header_bytes("16384"), Ok(16384));
        assert!(header_bytes("8191").is_err());
        assert!(header_bytes("0").is_err());
        assert!(header_bytes("2000000").is_err());
        assert_eq!(connection_limit("10000000"), Ok(MAX_CONNECTION_LIMIT));
        assert!(connection_limit("10000001").is_err());
        assert!(frame_rate("0").is_err());
        assert_eq!(frame_rate("1000000"), Ok(1_000_000));
        assert!(origin("https://app.example").is_ok());
        assert!(origin("app.example").is_err());
        assert!(origin("https://app.example/path").is_err());
    }

    #[test]
    fn counts_start_at_one() {
        assert_eq!(at_least_one::<usize>("1"), Ok(1));
        assert!(at_least_one::<usize>("0").is_err());
        assert!(at_least_one::<u64>("-3").is_err());
        assert_eq!(queue_length("1048576"), Ok(MAX_QUEUE));
        assert!(queue_length("1048577").is_err());
    }
}
