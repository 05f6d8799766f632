//! The accept loop: each TCP connection (after its TLS handshake, when TLS
//! is on) is served HTTP/1.1 by hyper, with upgrades, and the request goes
//! to the axum router with the peer's address as `ConnectInfo`.
//!
//! Why not `axum::serve`: it has no deadline for a request's headers (200
//! half-sent upgrades stayed open for good) and no limit on their size but
//! hyper's ~400 KiB buffer, and it cannot put TLS in front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How a connection is taken in before its first request reaches the router.
#[derive(Clone)]
pub(super) struct Edge {
    /// Time for the TLS handshake and each request's complete headers.
    pub handshake_timeout: Duration,
    /// Largest request head (request line and headers): over it, 431.
    pub max_header_bytes: usize,
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections until `shutdown`, each served on its own task in
/// `connections`; on shutdown each finishes the request it is in and closes
/// (upgraded WebSockets are the sessions' business, not this loop's).
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: accepting again at
                // once would spin; a second lets sessions end and free some.
                tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Small frames go out at once rather than waiting for Nagle's timer.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        connections.spawn(connection(
            tcp,
            peer,
            router.clone(),
            edge.clone(),
            shutdown.clone(),
        ));
    }
}

/// An accept error that concerns only the connection being accepted (it was
/// reset before we took it), after which the listener is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    edge: Edge,
    shutdown: CancellationToken,
) {
    let Some(acceptor) = &edge.tls else {
        return http(tcp, peer, router, &edge, edge.handshake_timeout, shutdown).await;
    };
    let deadline = Instant::now() + edge.handshake_timeout;
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => handshake,
    };
    match handshake {
        // What is left of the deadline is the time for the headers.
        Ok(Ok(tls)) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // hyper takes a zero as "no timeout"; a millisecond is as good as over.
            let left = left.max(Duration::from_millis(1));
            http(tls, peer, router, &edge, left, shutdown).await;
        }
        // A port scanner, a client that does not trust our certificate...:
        // nothing the operator can act on, one per connection.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not done within the handshake timeout"),
    }
}

/// Serves HTTP/1.1 (and the upgrade to WebSocket) on one connection.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    edge: &Edge,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(edge.max_header_bytes);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, oversize heads (already answered 431), resets.
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

/// The TLS acceptor for a server config.
pub(super) fn acceptor(config: &Option<Arc<rustls::ServerConfig>>) -> Option<TlsAcceptor> {
    config.clone().map(TlsAcceptor::from)
}
