//! TLS on the gRPC leg, with a CA made at test time: the gateway to the
//! server over TLS, a gateway that trusts the wrong CA, mutual TLS, tonic's
//! own TLS client, `wsgate all` with TLS, and bad files refused at start.

mod support;

use std::time::Duration;

use serde_json::json;
use support::pki::{Ca, Pair};
use support::{Proxy, Server, Ws, run_to_exit, spawn_listening, wsgate};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wsgate::proto::chat::chat_service_client::ChatServiceClient;
use wsgate::proto::chat::{ChatStream, GetUserRequest, chat_stream};
use wsgate::proxy;

/// A gateway in front of `server`, speaking TLS to it with `tls`.
async fn gateway_with(server: &Server, tls: wsgate::tls::ClientTls) -> Proxy {
    Proxy::start_with(proxy::Config {
        upstream_tls: Some(tls),
        ..proxy::Config::new(server.uri())
    })
    .await
}

/// The health of the whole server, asked over `channel`.
async fn health(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(reply.into_inner().status)
}

#[tokio::test]
async fn a_chat_message_goes_through_a_gateway_that_speaks_tls_to_the_server() {
    let ca = Ca::new("test CA");
    let server = Server::start_tls(ca.server_tls()).await;
    assert!(server.uri().starts_with("https://"), "{}", server.uri());
    let proxy = gateway_with(&server, ca.gateway_trusting(None)).await;

    let mut alice = proxy.connect().await;
    let mut bob = proxy.connect().await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    let echo = alice.say("r", "alice", "m1", "over TLS").await;
    assert_eq!(echo["content"], "over TLS");
    let got = bob.recv_until(|f| f["chat_message"]["id"] == "m1").await;
    assert_eq!(got["chat_message"]["sender_id"], "alice", "{got}");
    // Unary calls take the same connections.
    let user = alice.call("get_user", json!({"user_id": "bob"})).await;
    assert_eq!(user["user"]["id"], "bob", "{user}");

    alice.close().await;
    bob.close().await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_name_to_verify_can_be_given_for_an_upstream_addressed_by_ip() {
    let ca = Ca::new("test CA");
    let server = Server::start_tls(ca.server_tls()).await;
    let tls = wsgate::tls::ClientTls::new(
        wsgate::tls::Trust::Roots(ca.pem.as_bytes()),
        None,
        Some("localhost"),
    )
    .expect("client TLS");
    let proxy = gateway_with(&server, tls).await;
    let mut ws = proxy.connect().await;
    let echo = ws.say("r", "u", "m1", "by name").await;
    assert_eq!(echo["seq"], "1");

    // A name the certificate does not hold is refused.
    let wrong = wsgate::tls::ClientTls::new(
        wsgate::tls::Trust::Roots(ca.pem.as_bytes()),
        None,
        Some("chat.example.com"),
    )
    .expect("client TLS");
    let other = gateway_with(&server, wrong).await;
    let mut ws = other.connect().await;
    let reply = ws.call("get_user", json!({"user_id": "u"})).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");
}

#[tokio::test]
async fn a_gateway_trusting_another_ca_gives_unavailable_and_delivers_nothing() {
    let ca = Ca::new("the server's CA");
    let stranger = Ca::new("another CA");
    let server = Server::start_tls(ca.server_tls()).await;
    let proxy = gateway_with(&server, stranger.gateway_trusting(None)).await;

    // A watcher, connected directly with the right CA, in the room.
    let channel = server
        .tls_channel(ca.tonic_trusting(None))
        .await
        .expect("TLS connect");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut watcher = ChatServiceClient::new(channel.clone())
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("Chat opens")
        .into_inner();
    let frame = |event| ChatStream {
        event: Some(event),
        ..ChatStream::default()
    };
    tx.send(frame(chat_stream::Event::JoinRoom(
        wsgate::proto::chat::JoinRoom {
            room_id: "r".into(),
            user_id: "watcher".into(),
        },
    )))
    .await
    .expect("send");

    let mut ws = proxy.connect().await;
    ws.send(json!({"join_room": {"room_id": "r", "user_id": "ada"}}))
        .await;
    ws.send(json!({"chat_message": {"id": "m1", "room_id": "r", "sender_id": "ada", "content": "lost"}}))
        .await;
    let outage = ws.recv_until(|f| f.get("error").is_some()).await;
    assert_eq!(outage["error"]["code"], "UNAVAILABLE", "{outage}");
    let unary = ws.call("get_user", json!({"user_id": "watcher"})).await;
    assert_eq!(unary["error"]["code"], "UNAVAILABLE", "{unary}");

    // The watcher's own message comes back with nothing from ada before it.
    tx.send(frame(chat_stream::Event::ChatMessage(
        wsgate::proto::chat::ChatMessage {
            id: "probe".into(),
            room_id: "r".into(),
            sender_id: "watcher".into(),
            content: "anyone?".into(),
            ..Default::default()
        },
    )))
    .await
    .expect("send");
    loop {
        let frame = tokio::time::timeout(support::WAIT, watcher.message())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("a frame");
        assert!(!format!("{frame:?}").contains("ada"), "{frame:?}");
        if let Some(chat_stream::Event::ChatMessage(m)) = &frame.event
            && m.id == "probe"
        {
            assert_eq!(m.seq, 1, "the probe is the room's first message");
            break;
        }
    }
    // ada's stream never reached the server: it never registered her.
    let ada = ChatServiceClient::new(channel)
        .get_user(GetUserRequest {
            user_id: "ada".into(),
        })
        .await;
    assert_eq!(ada.expect_err("unknown user").code(), tonic::Code::NotFound);

    ws.close().await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_pinned_certificate_accepts_that_certificate_only() {
    let ca = Ca::new("test CA");
    let served = ca.server();
    let tls = wsgate::tls::ServerTls::from_pem(served.cert.as_bytes(), served.key.as_bytes(), None)
        .expect("server TLS");
    let server = Server::start_tls(tls).await;
    let pinning = |pair: &Pair| {
        wsgate::tls::ClientTls::new(
            wsgate::tls::Trust::Exactly(pair.cert.as_bytes()),
            None,
            None,
        )
        .expect("client TLS")
    };

    let proxy = gateway_with(&server, pinning(&served)).await;
    let mut ws = proxy.connect().await;
    let echo = ws.say("r", "u", "m1", "pinned").await;
    assert_eq!(echo["seq"], "1");

    // Another certificate from the same CA, for the same names, is not it.
    let other = gateway_with(&server, pinning(&ca.server())).await;
    let mut ws = other.connect().await;
    let reply = ws.call("get_user", json!({"user_id": "u"})).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");
}

#[tokio::test]
async fn a_tonic_client_with_tls_reaches_chat_and_health() {
    let ca = Ca::new("test CA");
    let server = Server::start_tls(ca.server_tls()).await;
    let channel = server
        .tls_channel(ca.tonic_trusting(None))
        .await
        .expect("TLS connect");
    assert_eq!(
        health(channel.clone()).await.expect("health"),
        ServingStatus::Serving as i32
    );
    let unknown = ChatServiceClient::new(channel)
        .get_user(GetUserRequest {
            user_id: "nobody".into(),
        })
        .await
        .expect_err("unknown user");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // Plaintext to a TLS server gets nowhere.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("TCP connects");
    assert!(health(plain).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_tls_handshake_is_dropped_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let deadline = Duration::from_millis(300);
    let server = Server::start_tls(ca.server_tls().with_handshake_timeout(deadline)).await;
    // Half a ClientHello record header, then silence.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the server drops a stalled handshake at its deadline, not at the 10 s default");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The server still serves those that do finish theirs.
    let channel = server
        .tls_channel(ca.tonic_trusting(None))
        .await
        .expect("TLS connect");
    assert_eq!(
        health(channel).await.expect("health"),
        ServingStatus::Serving as i32
    );
    server.stop().await;
}

/// A health check over mutual TLS presenting `identity`: the status, or
/// the error of the handshake or of the call (TLS 1.3 lets a client finish
/// its side of the handshake before the server refuses its certificate).
async fn health_presenting(
    server: &Server,
    ca: &Ca,
    identity: Option<&Pair>,
) -> Result<i32, String> {
    let channel = server
        .tls_channel(ca.tonic_trusting(identity))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    health(channel).await.map_err(|e| format!("call: {e:?}"))
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("another CA");
    let server = Server::start_tls(ca.server_tls_requiring(&clients)).await;

    assert_eq!(
        health_presenting(&server, &ca, Some(&clients.client("gateway"))).await,
        Ok(ServingStatus::Serving as i32)
    );
    let without = health_presenting(&server, &ca, None).await;
    assert!(without.is_err(), "{without:?}");
    let foreign = health_presenting(&server, &ca, Some(&stranger.client("gateway"))).await;
    assert!(foreign.is_err(), "{foreign:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_gateway_with_a_client_certificate_passes_mutual_tls() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let server = Server::start_tls(ca.server_tls_requiring(&clients)).await;

    let proxy = gateway_with(
        &server,
        ca.gateway_trusting(Some(&clients.client("gateway"))),
    )
    .await;
    let mut ws = proxy.connect().await;
    let echo = ws.say("r", "u", "m1", "mutual").await;
    assert_eq!(echo["seq"], "1");

    // Without one, the stream and the calls are an outage.
    let bare = gateway_with(&server, ca.gateway_trusting(None)).await;
    let mut ws = bare.connect().await;
    ws.send(json!({"join_room": {"room_id": "r", "user_id": "v"}}))
        .await;
    let outage = ws.recv_until(|f| f.get("error").is_some()).await;
    assert_eq!(outage["error"]["code"], "UNAVAILABLE", "{outage}");
}

#[tokio::test]
async fn wsgate_all_with_tls_serves_chat_through_its_own_tls_hop() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let mut all = wsgate();
    all.args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("chat.db"))
        .arg("--grpc-tls-cert")
        .arg(&cert)
        .arg("--grpc-tls-key")
        .arg(&key);
    let all = spawn_listening(all, "WebSocket gateway listening");
    // The gateway's own hop to the server is https:// too.
    let gateway = all.log.last().expect("the gateway's line");
    assert!(gateway.contains("upstream=https://127.0.0.1:"), "{gateway}");

    let mut ws = Ws::connect(&format!("ws://{}/", all.addr)).await;
    let echo = ws.say("r", "u", "m1", "all over TLS").await;
    assert_eq!(echo["seq"], "1");
    ws.close().await;
    all.kill();
}

/// Runs `wsgate ARGS` expecting it to refuse to start; returns its stderr.
fn refused_at_start(dir: &tempfile::TempDir, args: &[&std::ffi::OsStr]) -> String {
    let mut command = wsgate();
    command.args(args);
    let mode = args.first().and_then(|a| a.to_str());
    if mode != Some("proxy") {
        command
            .args(["--grpc-listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("chat.db"));
    }
    if mode != Some("server") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    let finished = run_to_exit(command);
    assert!(!finished.status.success(), "{finished:?}");
    assert!(!finished.stderr.contains("listening"), "{finished:?}");
    finished.stderr
}

#[test]
fn unusable_certificate_files_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let (other_cert, _) = ca.server().write(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let os = |p: &std::path::Path| p.as_os_str().to_owned();

    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![
                "server".into(),
                "--grpc-tls-cert".into(),
                os(&missing),
                "--grpc-tls-key".into(),
                os(&key),
            ],
            "cannot read",
        ),
        (
            vec![
                "server".into(),
                "--grpc-tls-cert".into(),
                os(&garbage),
                "--grpc-tls-key".into(),
                os(&key),
            ],
            "the certificate file holds no PEM certificate",
        ),
        (
            vec![
                "server".into(),
                "--grpc-tls-cert".into(),
                os(&cert),
                "--grpc-tls-key".into(),
                os(&garbage),
            ],
            "the key file holds no PEM private key",
        ),
        (
            vec![
                "server".into(),
                "--grpc-tls-cert".into(),
                os(&other_cert),
                "--grpc-tls-key".into(),
                os(&key),
            ],
            "do not belong together",
        ),
        (
            vec![
                "server".into(),
                "--grpc-tls-cert".into(),
                os(&cert),
                "--grpc-tls-key".into(),
                os(&key),
                "--grpc-client-ca".into(),
                os(&garbage),
            ],
            "the client CA file holds no PEM certificate",
        ),
        // Half a pair is a flag error.
        (
            vec!["server".into(), "--grpc-tls-cert".into(), os(&cert)],
            "--grpc-tls-key",
        ),
        (
            vec!["server".into(), "--grpc-client-ca".into(), os(&cert)],
            "--grpc-tls-cert",
        ),
        // `wsgate all` has no client certificate for its own hop.
        (
            vec![
                "all".into(),
                "--grpc-tls-cert".into(),
                os(&cert),
                "--grpc-tls-key".into(),
                os(&key),
                "--grpc-client-ca".into(),
                os(&cert),
            ],
            "--grpc-client-ca (mutual TLS) needs the gateway to hold a client certificate",
        ),
    ];
    for (args, reason) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let stderr = refused_at_start(&dir, &args);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn unusable_upstream_tls_settings_stop_the_gateway_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _) = ca.client("gateway").write(dir.path(), "client");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let os = |p: &std::path::Path| p.as_os_str().to_owned();
    let https = "https://127.0.0.1:1";

    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["proxy".into(), "--upstream".into(), https.into()],
            "needs --upstream-ca FILE",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                "http://127.0.0.1:1".into(),
                "--upstream-ca".into(),
                os(&ca_file),
            ],
            "--upstream-ca is for TLS, but --upstream http://127.0.0.1:1 is plaintext",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                https.into(),
                "--upstream-ca".into(),
                os(&garbage),
            ],
            "the CA file is not valid PEM",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                https.into(),
                "--upstream-ca".into(),
                os(&dir.path().join("none")),
            ],
            "cannot read",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                https.into(),
                "--upstream-ca".into(),
                os(&ca_file),
                "--upstream-cert".into(),
                os(&cert),
                "--upstream-key".into(),
                os(&ca_file),
            ],
            "the key file holds no PEM private key",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                https.into(),
                "--upstream-ca".into(),
                os(&ca_file),
                "--upstream-cert".into(),
                os(&cert),
            ],
            "--upstream-key",
        ),
        (
            vec![
                "proxy".into(),
                "--upstream".into(),
                https.into(),
                "--upstream-ca".into(),
                os(&ca_file),
                "--upstream-server-name".into(),
                "not a name".into(),
            ],
            "is not a DNS name or an IP address",
        ),
    ];
    for (args, reason) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let stderr = refused_at_start(&dir, &args);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn wsgate_proxy_reaches_a_tls_server_with_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let server = Server::start_tls(ca.server_tls_requiring(&clients)).await;
    let (cert, key) = clients.client("gateway").write(dir.path(), "client");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();

    let mut proxy = wsgate();
    proxy
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("https://127.0.0.1:{}", server.addr.port()))
        .arg("--upstream-ca")
        .arg(&ca_file)
        .arg("--upstream-cert")
        .arg(&cert)
        .arg("--upstream-key")
        .arg(&key)
        .args(["--upstream-server-name", "localhost"]);
    let proxy = spawn_listening(proxy, "WebSocket gateway listening");
    let mut ws = Ws::connect(&format!("ws://{}/", proxy.addr)).await;
    let echo = ws.say("r", "u", "m1", "mutual, by flags").await;
    assert_eq!(echo["seq"], "1");
    ws.close().await;
    proxy.kill();
    server.stop().await;
}
