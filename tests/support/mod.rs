//! Helpers for the integration tests: start the real server and gateway on
//! ephemeral loopback ports, in this process or as a child process, and talk
//! to them with a real WebSocket client and a real gRPC client.
#![allow(dead_code)] // each test binary uses its own subset

pub mod cluster;
pub mod nats;
pub mod pki;
pub mod postgres;
pub mod relay;
pub mod tls;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use wsgate::proto::chat::chat_service_client::ChatServiceClient;
use wsgate::proto::chat::{ChatStream, GetChatHistoryRequest};
use wsgate::storage::{PgOptions, PgStore, PgTarget, SqliteOptions, SqliteStore, Store};
use wsgate::{proxy, server};

/// How long a test waits for any one expected event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A task of the system under test (a server or a gateway) running inside
/// the test process. Whether the test stops it ([`Task::stop`]) or just drops
/// it, a task that failed fails the test: an error inside a server task is
/// never lost behind a test that passed.
struct Task {
    name: &'static str,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Task {
    fn spawn(
        name: &'static str,
        run: impl FnOnce(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>,
    ) -> Task {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Task {
            name,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Shuts down gracefully; panics if it does not stop in time or fails.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let Some(handle) = self.handle.take() else {
            return;
        };
        let result = tokio::time::timeout(WAIT, handle)
            .await
            .unwrap_or_else(|_| panic!("{} stops in time", self.name));
        surface(self.name, result);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if std::thread::panicking() {
            return;
        }
        // Already over: then it ended on its own, and how matters.
        if let Some(handle) = self.handle.as_mut()
            && let Some(result) = handle.now_or_never()
        {
            surface(self.name, result);
        }
    }
}

/// Re-raises a task's panic or error in the test.
fn surface(name: &str, result: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name} failed: {e:#}"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("{name} task: {e}"),
    }
}

/// A chat server running inside the test process.
pub struct Server {
    pub addr: SocketAddr,
    /// Whether it serves TLS ([`Server::start_tls`]).
    tls: bool,
    task: Task,
    _dir: Option<tempfile::TempDir>,
    /// Last: dropped (with its tables) after the server's task.
    _schema: Option<postgres::TestSchema>,
}

/// The engine [`Server::start`] stores in: `WSGATE_TEST_STORE=postgres`
/// runs the same tests on PostgreSQL (scripts/test.sh does both).
pub fn test_store_is_postgres() -> bool {
    match std::env::var("WSGATE_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("WSGATE_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

/// A PostgreSQL store at `url` (a [`postgres::TestSchema`]'s).
pub async fn postgres_store(url: &str) -> PgStore {
    let target = PgTarget::parse(url).expect("test URL");
    tokio::task::spawn_blocking(move || PgStore::connect(&target, PgOptions::default()))
        .await
        .expect("connect task")
        .expect("connect to PostgreSQL")
}

impl Server {
    /// A server on a fresh database: a SQLite file in a temporary
    /// directory, or a PostgreSQL schema of its own (`WSGATE_TEST_STORE`).
    pub async fn start() -> Server {
        Server::start_configured(server::Config::default()).await
    }

    /// A server with these settings on a fresh database.
    pub async fn start_configured(config: server::Config) -> Server {
        if test_store_is_postgres() {
            let schema = postgres::TestSchema::create();
            let store = postgres_store(&schema.url).await;
            let mut server = Server::start_on(Arc::new(store), config).await;
            server._schema = Some(schema);
            return server;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_with(&dir.path().join("chat.db"), config).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_with(db: &Path, config: server::Config) -> Server {
        let store = SqliteStore::open(db, SqliteOptions::default()).expect("open store");
        Server::start_on(Arc::new(store), config).await
    }

    /// A server on any store (a fake one, to make storage fail).
    pub async fn start_on(store: Arc<dyn Store>, config: server::Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = config.tls.is_some();
        let task = Task::spawn("chat server", |shutdown| {
            server::run(listener, store, config, shutdown).boxed()
        });
        Server {
            addr,
            tls,
            task,
            _dir: None,
            _schema: None,
        }
    }

    /// A server serving TLS with these settings, on a fresh database.
    pub async fn start_tls(tls: wsgate::tls::ServerTls) -> Server {
        Server::start_configured(server::Config {
            tls: Some(tls),
            ..server::Config::default()
        })
        .await
    }

    /// `http://ADDR`, or `https://ADDR` for a TLS server.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A connection with tonic's own TLS client, or the handshake's error.
    pub async fn tls_channel(
        &self,
        tls: tonic::transport::ClientTlsConfig,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.uri())
            .expect("uri")
            .tls_config(tls)?
            .connect()
            .await
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.uri())
            .expect("uri")
            .connect()
            .await
            .expect("gRPC connect")
    }

    pub async fn grpc(&self) -> ChatServiceClient<tonic::transport::Channel> {
        ChatServiceClient::new(self.channel().await)
    }

    /// Opens a `Chat` stream: what to send on it, and what comes back.
    pub async fn chat(
        &self,
    ) -> (
        tokio::sync::mpsc::Sender<ChatStream>,
        tonic::Streaming<ChatStream>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stream = self
            .grpc()
            .await
            .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("Chat opens")
            .into_inner();
        (tx, stream)
    }

    /// A server run with `--auth jwt`, verifying tokens signed with
    /// [`TEST_SECRET`] (and the default 30 s leeway).
    pub async fn start_with_jwt() -> Server {
        Server::start_configured(server::Config {
            auth: Some(test_verifier(wsgate::auth::DEFAULT_LEEWAY)),
            ..server::Config::default()
        })
        .await
    }

    /// Opens a `Chat` stream sending `authorization: Bearer <token>` (no
    /// header without a token); or the status the server refused it with.
    pub async fn chat_as(
        &self,
        token: Option<&str>,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<ChatStream>,
            tonic::Streaming<ChatStream>,
        ),
        tonic::Status,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
        let request = match token {
            Some(token) => bearer(frames, token),
            None => tonic::Request::new(frames),
        };
        let stream = self.grpc().await.chat(request).await?.into_inner();
        Ok((tx, stream))
    }

    /// Shuts down gracefully and waits until storage is flushed.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// The HS256 secret identity tests sign and verify tokens with.
pub const TEST_SECRET: &[u8] = b"integration tests' HS256 secret, 32+ bytes";

/// A verifier of tokens signed with [`TEST_SECRET`], allowing `leeway`.
pub fn test_verifier(leeway: Duration) -> Arc<wsgate::auth::Verifier> {
    let config = wsgate::auth::VerifierConfig {
        keys: vec![wsgate::auth::VerifyKey::Secret(TEST_SECRET.to_vec())],
        issuer: None,
        audience: None,
        leeway,
    };
    Arc::new(wsgate::auth::Verifier::new(&config).expect("test verifier"))
}

/// A token for `user`, signed with [`TEST_SECRET`], valid for an hour.
pub fn token_for(user: &str) -> String {
    token(wsgate::auth::TokenRequest {
        user: user.into(),
        ..Default::default()
    })
}

/// A token signed with [`TEST_SECRET`]; a `ttl` of zero means an hour.
pub fn token(mut request: wsgate::auth::TokenRequest) -> String {
    if request.ttl.is_zero() {
        request.ttl = Duration::from_secs(3600);
    }
    wsgate::auth::mint(
        &wsgate::auth::SignKey::Secret(TEST_SECRET.to_vec()),
        &request,
    )
    .expect("mint")
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ASCII token");
    request
        .metadata_mut()
        .insert(wsgate::auth::AUTHORIZATION, value);
    request
}

/// The gateway running inside the test process.
pub struct Proxy {
    pub addr: SocketAddr,
    task: Task,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        Proxy::start_with(proxy::Config::new(upstream)).await
    }

    /// A gateway whose frame rate limit is out of the way, for tests that
    /// send thousands of frames on one connection as fast as they can.
    pub async fn start_for_load(upstream: &str) -> Proxy {
        let config = proxy::Config {
            max_frames_per_second: 1_000_000,
            frame_burst: 1_000_000,
            ..proxy::Config::new(upstream)
        };
        Proxy::start_with(config).await
    }

    pub async fn start_with(config: proxy::Config) -> Proxy {
        let pool = wsgate::proto::descriptor_pool();
        let service = pool
            .get_service_by_name(wsgate::proto::CHAT_SERVICE)
            .expect("service");
        let gateway = Arc::new(proxy::Gateway::from_service(&service, None).expect("gateway"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = Task::spawn("gateway", |shutdown| {
            proxy::run(listener, gateway, config, shutdown).boxed()
        });
        Proxy { addr, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn connect(&self) -> Ws {
        Ws::connect(&self.url()).await
    }

    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// A chat server and a gateway in front of it.
pub struct System {
    pub server: Server,
    pub proxy: Proxy,
}

impl System {
    pub async fn start() -> System {
        let server = Server::start().await;
        let proxy = Proxy::start(&server.uri()).await;
        System { server, proxy }
    }

    pub async fn connect(&self) -> Ws {
        self.proxy.connect().await
    }

    /// Stops the gateway, then the server; fails the test if either failed.
    pub async fn stop(self) {
        self.proxy.stop().await;
        self.server.stop().await;
    }
}

/// A WebSocket client speaking JSON text frames.
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket connect");
        Ws { inner }
    }

    /// Opens a WebSocket with these extra request headers (e.g. `Origin`):
    /// the socket, or the error (an HTTP refusal is `Error::Http`).
    pub async fn try_connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                tokio_tungstenite::tungstenite::http::HeaderValue::from_str(value)
                    .expect("header value"),
            );
        }
        let (inner, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")?;
        Ok(Ws { inner })
    }

    /// Opens a WebSocket to `addr` from the local address `from` (any
    /// 127.x.y.z is this machine): another client IP.
    pub async fn try_connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client side");
        let tcp = socket.connect(addr).await.expect("TCP connect");
        let url = format!("ws://{addr}/");
        let (inner, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)),
        )
        .await
        .expect("connect in time")?;
        Ok(Ws { inner })
    }

    /// Wraps a WebSocket opened by the test itself (custom handshake).
    pub fn from_stream(inner: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        Ws { inner }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.inner.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.inner.send(message).await.expect("send");
    }

    /// Sends a frame on a connection the gateway may be closing: false if
    /// it could not be sent.
    pub async fn try_send(&mut self, frame: Value) -> bool {
        self.inner
            .send(Message::text(frame.to_string()))
            .await
            .is_ok()
    }

    /// The next frame other than a resume, as JSON.
    pub async fn recv(&mut self) -> Value {
        match self.next_message().await {
            Message::Text(text) => serde_json::from_str(text.as_str()).expect("frames are JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next WebSocket message of any kind (pings are answered and skipped).
    pub async fn next_message(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("a frame within the wait")
                .expect("connection open")
                .expect("read");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    /// Skips frames until one satisfies `pred`, and returns it.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return frame;
            }
        }
    }

    /// Every frame up to and including the echo of the message `id`.
    pub async fn frames_until_echo(&mut self, id: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await;
            let done = frame["chat_message"]["id"] == id;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Sends a unary action with a request id and returns the reply to it.
    pub async fn call(&mut self, action: &str, body: Value) -> Value {
        let request_id = format!("call-{}", fastrand::u64(..));
        let mut frame = serde_json::json!({ "request_id": request_id });
        frame[action] = body;
        self.send(frame).await;
        self.recv_until(|f| f["request_id"] == request_id.as_str())
            .await
    }

    /// Joins a room and waits until the join has taken effect, proven by
    /// the echo of a message sent after it.
    pub async fn join(&mut self, room: &str, user: &str) {
        self.send(serde_json::json!({"join_room": {"room_id": room, "user_id": user}}))
            .await;
        let probe = format!("probe-{}", fastrand::u64(..));
        self.send(serde_json::json!({"chat_message": {"id": probe, "room_id": room, "sender_id": user, "content": "joined"}}))
            .await;
        self.recv_until(|f| f["chat_message"]["id"] == probe.as_str())
            .await;
    }

    /// Sends a chat message and waits for its echo (the confirmation).
    pub async fn say(&mut self, room: &str, user: &str, id: &str, content: &str) -> Value {
        self.send(serde_json::json!({"chat_message": {"id": id, "room_id": room, "sender_id": user, "content": content}}))
            .await;
        self.recv_until(|f| f["chat_message"]["id"] == id && f["chat_message"]["sender_id"] == user)
            .await["chat_message"]
            .clone()
    }

    /// Waits for the peer to close and returns the close code.
    pub async fn closed_with(&mut self) -> u16 {
        loop {
            match self.next_message().await {
                Message::Close(Some(frame)) => return frame.code.into(),
                Message::Close(None) => return 1005,
                _ => continue,
            }
        }
    }

    /// Waits for the peer to close and returns the close code and reason.
    pub async fn closed_with_reason(&mut self) -> (u16, String) {
        loop {
            match self.next_message().await {
                Message::Close(Some(frame)) => {
                    return (frame.code.into(), frame.reason.to_string());
                }
                Message::Close(None) => return (1005, String::new()),
                _ => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }

    /// Closes and waits until the peer has dropped the connection: by
    /// then, the gateway is done with the session (and logged its end).
    pub async fn hang_up(mut self) {
        let _ = self.inner.close(None).await;
        let drained = async { while let Some(Ok(_)) = self.inner.next().await {} };
        tokio::time::timeout(WAIT, drained)
            .await
            .expect("the peer drops the connection");
    }
}

/// The whole history of a room, oldest first: (seq, id).
pub async fn whole_history(uri: String, room: &str) -> Vec<(u64, String)> {
    let mut grpc = ChatServiceClient::connect(uri).await.expect("gRPC connect");
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = grpc
            .get_chat_history(GetChatHistoryRequest {
                room_id: room.into(),
                limit: 500,
                after_seq: Some(after),
                ..Default::default()
            })
            .await
            .expect("a history page")
            .into_inner();
        all.extend(page.messages.iter().map(|m| (m.seq, m.id.clone())));
        match page.messages.last() {
            Some(last) if page.has_more => after = last.seq,
            _ => return all,
        }
    }
}

/// A chat server in a child process, for tests that kill it.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub db: PathBuf,
}

impl ServerProcess {
    /// Starts `wsgate server` on `db`, on `addr` (port 0 for any), and
    /// waits until it listens.
    pub fn spawn(db: &Path, addr: SocketAddr) -> ServerProcess {
        let mut command = wsgate();
        command
            .args(["server", "--grpc-listen", &addr.to_string(), "--db"])
            .arg(db);
        let Listening { child, addr, .. } = spawn_listening(command, "gRPC chat server listening");
        ServerProcess {
            child,
            addr,
            db: db.to_owned(),
        }
    }

    /// Starts `wsgate server --db URL` (PostgreSQL) and waits until it listens.
    pub fn spawn_on_url(url: &str, addr: SocketAddr) -> ServerProcess {
        let mut command = wsgate();
        command.args(["server", "--grpc-listen", &addr.to_string(), "--db", url]);
        let Listening { child, addr, .. } = spawn_listening(command, "gRPC chat server listening");
        ServerProcess {
            child,
            addr,
            db: PathBuf::from(url),
        }
    }

    /// Starts `command` (a `wsgate server ...` of [`wsgate`]) and waits
    /// until it listens.
    pub fn spawn_command(command: Command) -> ServerProcess {
        let Listening { child, addr, .. } = spawn_listening(command, "gRPC chat server listening");
        ServerProcess {
            child,
            addr,
            db: PathBuf::new(),
        }
    }

    /// [`ServerProcess::spawn_command`] with `--metrics-listen 127.0.0.1:0`
    /// added: the server, and the address its metrics are at (both lines
    /// awaited: they come in either order).
    pub fn spawn_with_metrics(mut command: Command) -> (ServerProcess, SocketAddr) {
        command.args(["--metrics-listen", "127.0.0.1:0"]);
        let (mut grpc, mut metrics) = (None, None);
        let found = move |line: &str| {
            if line.contains("gRPC chat server listening") {
                grpc = listen_addr(line);
            } else if line.contains("metrics listening") {
                metrics = listen_addr(line);
            }
            Some((grpc?, metrics?))
        };
        let (child, (addr, metrics), _, _) = spawn_logging(command, "wsgate", found)
            .unwrap_or_else(|log| panic!("no listening lines in time: {log:#?}"));
        let server = ServerProcess {
            child,
            addr,
            db: PathBuf::new(),
        };
        (server, metrics)
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) -> (SocketAddr, PathBuf) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        (self.addr, self.db.clone())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn listen_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("local=")? + "local=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}

/// The `wsgate` binary, logging at info level without colours.
pub fn wsgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A process started by [`spawn_listening`].
pub struct Listening {
    pub child: Child,
    /// From the `local=ADDR` of the line waited for.
    pub addr: SocketAddr,
    /// Its log up to and including that line.
    pub log: Vec<String>,
    /// Reads its stderr to the end; returns the lines after `log`.
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Listening {
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the child and returns all it logged, start to end.
    pub fn kill_and_read_log(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rest = self
            .reader
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let mut log = std::mem::take(&mut self.log);
        log.extend(rest);
        log
    }
}

/// Starts `command` and waits until it logs a line containing `marker`
/// with a `local=ADDR` field. Its stderr goes on to the test's, prefixed.
/// The caller stops the child ([`Listening::kill`]).
pub fn spawn_listening(command: Command, marker: &str) -> Listening {
    let wanted = marker.to_owned();
    let (child, addr, log, reader) = spawn_logging(command, "wsgate", move |line| {
        line.contains(&wanted).then(|| listen_addr(line)).flatten()
    })
    .unwrap_or_else(|log| panic!("no {marker:?} line in time: {log:#?}"));
    Listening {
        child,
        addr,
        log,
        reader: Some(reader),
    }
}

/// A child process, what it logged up to the line waited for, and the
/// thread reading the rest of its stderr (which returns those lines).
pub type Logging<T> = (Child, T, Vec<String>, std::thread::JoinHandle<Vec<String>>);

/// Starts `command` and waits (up to [`WAIT`]) until `found` picks a value
/// out of a line of its stderr. Every line goes on to the test's stderr,
/// prefixed with `[label]`. If the process exits or is silent for too
/// long, it is killed and its log is the error.
pub fn spawn_logging<T: Send + 'static>(
    mut command: Command,
    label: &str,
    mut found: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> Result<Logging<T>, Vec<String>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let label = label.to_owned();
    let reader = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut log = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{label}] {line}");
            log.push(line.clone());
            if tx.is_some()
                && let Some(value) = found(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok((value, std::mem::take(&mut log))));
            }
        }
        if let Some(tx) = tx.take() {
            // It exited (or closed stderr) without the line.
            let _ = tx.send(Err(log.clone()));
        }
        log
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok((value, log))) => Ok((child, value, log, reader)),
        Ok(Err(log)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(log)
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(reader.join().unwrap_or_default())
        }
    }
}

/// What a process that ran to its end printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end (killing it if it outlives [`WAIT`]).
pub fn run_to_exit(mut command: Command) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Each pipe on its own thread: a full one must not stall the other.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    // Both pipes reach their end when the process exits.
    let (Ok(stdout), Ok(stderr)) = (stdout.recv_timeout(WAIT), stderr.recv_timeout(WAIT)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not exit in time");
    };
    let status = child.wait().expect("wait");
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series (`name` or `name{label="v"}`) in a Prometheus
/// text page; 0 when it is absent (a counter never incremented).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}
