//! The gateway's public edge: the Origin check, the handshake deadline, the
//! header size limit, connection limits, the frame rate limit, and TLS.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::tls::TestCa;
use support::{Proxy, Server, WAIT, Ws};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Error as WsError;
use wsgate::proxy;

/// A gateway with these settings in front of a real chat server.
async fn gateway_with(configure: impl FnOnce(&mut proxy::Config)) -> (Server, Proxy) {
    let server = Server::start().await;
    let mut config = proxy::Config::new(server.uri());
    configure(&mut config);
    let proxy = Proxy::start_with(config).await;
    (server, proxy)
}

/// The HTTP status a refused WebSocket handshake got.
fn refused_with(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got 101"),
    }
}

/// A listener standing in for the upstream that counts the connections
/// made to it (and never answers them), and notifies at each.
async fn counting_upstream() -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(tokio::sync::Notify::new());
    let (counted, notify) = (count.clone(), connected.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
            held.push(tcp);
        }
    });
    (uri, count, connected)
}

/// The status and whole text of one HTTP response read from `io`.
async fn read_response(io: &mut (impl AsyncRead + Unpin)) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, io.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length || n == 0 {
                let status = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                return (status, text);
            }
        }
        assert!(n > 0, "connection closed before a whole response: {text:?}");
    }
}

/// Sends `request` and reads the answer.
async fn http_exchange(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &str,
) -> (u16, String) {
    io.write_all(request.as_bytes()).await.expect("write");
    read_response(io).await
}

/// Waits until the peer closes `tcp` (EOF or reset), and says how long it took.
async fn closed_by_peer(tcp: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("the gateway closes the connection in time")
        {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_no_upstream_call() {
    let (upstream, calls, connected) = counting_upstream().await;
    let proxy = Proxy::start(&upstream).await;
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let refused = Ws::try_connect_with(&proxy.url(), &[("origin", origin)]).await;
        assert_eq!(refused_with(refused), 403, "{origin}");
    }
    // The body says why, briefly.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, text) = http_exchange(
        &mut tcp,
        &upgrade_request(proxy.addr, Some("https://evil.example")),
    )
    .await;
    assert_eq!(status, 403);
    assert!(text.contains("origin may not open a WebSocket"), "{text}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no upstream connection for a refused origin"
    );

    // The counter does see the calls an admitted connection makes.
    let mut ws = Ws::try_connect_with(&proxy.url(), &[])
        .await
        .expect("no Origin is let in");
    ws.send(json!({"join_room": {"room_id": "r", "user_id": "u"}}))
        .await;
    tokio::time::timeout(WAIT, connected.notified())
        .await
        .expect("the admitted stream reaches the upstream");
    assert!(calls.load(Ordering::SeqCst) >= 1);
    proxy.stop().await;
}

fn upgrade_request(addr: SocketAddr, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    )
}

#[tokio::test]
async fn the_own_origin_a_listed_origin_and_no_origin_are_let_in() {
    let (server, proxy) = gateway_with(|c| {
        c.allowed_origins = vec!["https://app.example".parse().unwrap()];
    })
    .await;
    let own = format!("http://{}", proxy.addr);
    for headers in [
        vec![("origin", own.as_str())],
        vec![("origin", "https://app.example")],
        vec![],
    ] {
        let mut ws = Ws::try_connect_with(&proxy.url(), &headers)
            .await
            .unwrap_or_else(|e| panic!("{headers:?} is let in: {e}"));
        ws.say("r", "u", &format!("m{}", fastrand::u32(..)), "hi")
            .await;
    }
    // A listed origin is exact: the same host over plain HTTP is another one.
    let other = Ws::try_connect_with(&proxy.url(), &[("origin", "http://app.example")]).await;
    assert_eq!(refused_with(other), 403);
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_half_sent_upgrade_is_closed_after_the_handshake_timeout() {
    let (server, proxy) = gateway_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    // A WebSocket opened before stays open past the deadline.
    let mut ws = proxy.connect().await;
    ws.say("r", "u", "before", "hi").await;

    let mut half = TcpStream::connect(proxy.addr).await.unwrap();
    half.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
            proxy.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let took = closed_by_peer(&mut half).await;
    assert!(
        took >= Duration::from_millis(800),
        "closed after the deadline, not before: {took:?}"
    );
    closed_by_peer(&mut silent).await;

    ws.say("r", "u", "after", "still here").await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn oversize_headers_get_431() {
    let (server, proxy) = gateway_with(|c| c.max_header_bytes = 16 * 1024).await;
    let request = |filler: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nX-Filler: {}\r\n\r\n",
            proxy.addr,
            "a".repeat(filler)
        )
    };
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, _) = http_exchange(&mut tcp, &request(12 * 1024)).await;
    assert_eq!(status, 200, "a head under the limit gets the page");
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, _) = http_exchange(&mut tcp, &request(20 * 1024)).await;
    assert_eq!(status, 431);
    closed_by_peer(&mut tcp).await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_connection_past_the_per_ip_limit_gets_503_and_other_addresses_do_not() {
    let (server, proxy) = gateway_with(|c| c.max_connections_per_ip = 2).await;
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let first = Ws::try_connect_from(local, proxy.addr).await.expect("1st");
    let _second = Ws::try_connect_from(local, proxy.addr).await.expect("2nd");
    assert_eq!(
        refused_with(Ws::try_connect_from(local, proxy.addr).await),
        503
    );
    // Another address has its own count.
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut elsewhere = Ws::try_connect_from(other, proxy.addr)
        .await
        .expect("another IP");
    elsewhere.say("r", "u", "m1", "hi").await;

    // A closed connection gives its place back (once its session ends).
    first.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        match Ws::try_connect_from(local, proxy.addr).await {
            Ok(_) => break,
            Err(WsError::Http(r)) if r.status() == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place is given back: {e}"),
        }
    }
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_connection_past_the_total_limit_gets_503() {
    let (server, proxy) = gateway_with(|c| c.max_connections = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(proxy.connect().await);
    }
    let refused = Ws::try_connect_with(&proxy.url(), &[]).await;
    assert_eq!(refused_with(refused), 503);
    // The page and the health check are not WebSockets and are not counted.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (status, _) = http_exchange(
        &mut tcp,
        &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr),
    )
    .await;
    assert_eq!(status, 200);
    open[0].say("r", "u", "m1", "still fine").await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_frame_flood_gets_resource_exhausted_then_1008_while_another_connection_chats() {
    let (server, proxy) = gateway_with(|c| {
        c.max_frames_per_second = 5;
        c.frame_burst = 5;
    })
    .await;
    let mut calm = proxy.connect().await;
    calm.join("r", "calm").await;
    let mut flood = proxy.connect().await;
    let frame = |i: usize| json!({"get_user": {"user_id": "calm"}, "request_id": format!("f{i}")});
    // The burst, then a few over it: those are answered, not sent on.
    for i in 0..10 {
        flood.send(frame(i)).await;
    }
    let refusal = flood
        .recv_until(|f| f["error"]["code"] == "RESOURCE_EXHAUSTED")
        .await;
    let id = refusal["request_id"]
        .as_str()
        .expect("the refused frame's request_id");
    assert!(id.starts_with('f'), "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{refusal}"
    );
    // Going on regardless is abuse: the connection is closed.
    for i in 10..10 + wsgate::proxy::rate::ABUSE_REFUSALS as usize + 20 {
        if !flood.try_send(frame(i)).await {
            break;
        }
    }
    assert_eq!(flood.closed_with().await, 1008);

    // The other connection, within its own limit, never noticed.
    for i in 0..3 {
        calm.say("r", "calm", &format!("c{i}"), "unbothered").await;
    }
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn wss_works_with_a_client_trusting_the_test_ca_and_https_serves_the_page() {
    let ca = TestCa::new();
    let (server, proxy) = gateway_with(|c| c.tls = Some(ca.server_config())).await;
    let port = proxy.addr.port();

    let tls = ca.connect(proxy.addr).await.expect("TLS with the test CA");
    let url = format!("wss://localhost:{port}/");
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        // A page served over TLS has an https origin.
        request.headers_mut().insert(
            "origin",
            format!("https://localhost:{port}").parse().unwrap(),
        );
        request
    };
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
        .await
        .unwrap()
        .expect("wss:// handshake");
    use futures_util::{SinkExt, StreamExt};
    let frame = json!({"chat_message": {"id": "t1", "room_id": "r", "sender_id": "u", "content": "over TLS"}});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        frame.to_string(),
    ))
    .await
    .unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(echo.to_text().unwrap()).unwrap();
    assert_eq!(echo["chat_message"]["content"], "over TLS", "{echo}");

    let mut page = ca.connect(proxy.addr).await.unwrap();
    let (status, text) = http_exchange(
        &mut page,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("<html") || text.contains("<!doctype") || text.contains("<!DOCTYPE"),
        "{text}"
    );

    // Plain text on the TLS port gets no page.
    let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
    plain
        .write_all(format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    closed_by_peer(&mut plain).await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_and_a_stalled_tls_handshake_times_out() {
    let ca = TestCa::new();
    let (server, proxy) = gateway_with(|c| {
        c.tls = Some(ca.server_config());
        c.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let stranger = TestCa::new();
    let refused = stranger.connect(proxy.addr).await;
    let e = refused.expect_err("a certificate of another CA is not trusted");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // A connection that never starts its handshake is closed at the deadline.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    closed_by_peer(&mut silent).await;
    // And one that trusts the right CA still gets in.
    ca.connect(proxy.addr).await.expect("TLS with the test CA");
    proxy.stop().await;
    server.stop().await;
}

#[test]
fn tls_files_that_are_missing_unparsable_or_mismatched_are_refused_clearly() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let missing = support::tls::sibling(&ca.cert, "nope.pem");
    let err = proxy::tls::server_config(&missing, &ca.key).unwrap_err();
    assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    assert!(format!("{err:#}").contains("nope.pem"), "{err:#}");

    let garbage = support::tls::sibling(&ca.cert, "garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = proxy::tls::server_config(&garbage, &ca.key).unwrap_err();
    assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
    let err = proxy::tls::server_config(&ca.cert, &garbage).unwrap_err();
    assert!(format!("{err:#}").contains("no PEM private key"), "{err:#}");

    let err = proxy::tls::server_config(&ca.cert, &other.key).unwrap_err();
    assert!(format!("{err:#}").contains("does not go with"), "{err:#}");
}

#[test]
fn the_command_line_wants_both_tls_files_and_says_which_is_wrong() {
    let ca = TestCa::new();
    let mut alone = support::wsgate();
    alone
        .args(["proxy", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&ca.cert);
    let finished = support::run_to_exit(alone);
    assert!(!finished.status.success());
    assert!(finished.stderr.contains("--tls-key"), "{}", finished.stderr);

    let other = TestCa::new();
    let mut mismatched = support::wsgate();
    mismatched
        .args(["proxy", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&ca.cert)
        .arg("--tls-key")
        .arg(&other.key);
    let finished = support::run_to_exit(mismatched);
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains("does not go with"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("listening"),
        "{}",
        finished.stderr
    );

    let mut bad_origin = support::wsgate();
    bad_origin.args(["proxy", "--allowed-origins", "https://a.example,a.example"]);
    let finished = support::run_to_exit(bad_origin);
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains("--allowed-origins"),
        "{}",
        finished.stderr
    );
}
