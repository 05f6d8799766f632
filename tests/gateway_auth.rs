//! Authentication at the gateway (`--auth jwt`): where the token travels,
//! what is refused before the upgrade, the first-frame sign-in.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Proxy, Server, WAIT, Ws};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsgate::auth::{SignKey, TokenRequest, mint};
use wsgate::proxy;

use support::{TEST_SECRET as SECRET, token_for as token};

fn jwt_config(upstream: &str) -> proxy::Config {
    proxy::Config {
        auth: Some(support::test_verifier(Duration::ZERO)),
        auth_timeout: Duration::from_millis(300),
        ..proxy::Config::new(upstream)
    }
}

/// Connects with extra handshake headers; the HTTP status on refusal.
async fn handshake(
    url: &str,
    headers: &[(&'static str, String)],
) -> Result<(Ws, Option<String>), u16> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((inner, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii").to_owned());
            Ok((Ws::from_stream(inner), protocol))
        }
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
async fn a_token_by_subprotocol_is_answered_with_wsgate_v1_only() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let offer = format!("wsgate.v1, bearer.{}", token("alice"));
    let (mut ws, protocol) = handshake(&proxy.url(), &[("sec-websocket-protocol", offer)])
        .await
        .expect("upgraded");
    assert_eq!(protocol.as_deref(), Some("wsgate.v1"));
    let welcome = ws.recv().await;
    assert_eq!(welcome["auth"]["sub"], "alice");
    assert!(welcome["auth"]["exp"].as_u64().is_some());
    ws.join("general", "alice").await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_by_cookie_signs_in() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let cookie = format!("other=1; wsgate_token={}", token("bob"));
    let (mut ws, _) = handshake(&proxy.url(), &[("cookie", cookie)])
        .await
        .expect("upgraded");
    assert_eq!(ws.recv().await["auth"]["sub"], "bob");
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_bad_token_at_the_upgrade_is_a_401_and_a_url_token_a_400() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let forged = mint(
        &SignKey::Secret(b"another secret of at least 32 bytes!!".to_vec()),
        &TokenRequest {
            user: "mallory".into(),
            ttl: Duration::from_secs(60),
            ..TokenRequest::default()
        },
    )
    .expect("mint");
    let offer = format!("wsgate.v1, bearer.{forged}");
    let refused = handshake(&proxy.url(), &[("sec-websocket-protocol", offer)]).await;
    assert_eq!(refused.err(), Some(401));
    let cookie = "wsgate_token=not.a.jwt".to_owned();
    assert_eq!(
        handshake(&proxy.url(), &[("cookie", cookie)]).await.err(),
        Some(401)
    );
    let url = format!("{}?token={}", proxy.url(), token("alice"));
    assert_eq!(handshake(&url, &[]).await.err(), Some(400));
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn frames_before_a_first_frame_token_are_refused_then_it_signs_in() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let mut ws = proxy.connect().await;
    ws.send(json!({"get_user": {"user_id": "alice"}, "request_id": "q1"}))
        .await;
    let refused = ws.recv().await;
    assert_eq!(refused["error"]["code"], "UNAUTHENTICATED");
    // Its request id comes back: a client waiting on the answer knows at once.
    assert_eq!(refused["request_id"], "q1");
    ws.send(json!({"auth": {"token": token("alice")}})).await;
    assert_eq!(ws.recv().await["auth"]["sub"], "alice");
    ws.join("general", "alice").await;
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_bad_first_frame_token_closes_1008() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let mut ws = proxy.connect().await;
    ws.send(json!({"auth": {"token": "not.a.jwt"}})).await;
    assert_eq!(ws.closed_with().await, 1008);
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn no_auth_frame_by_the_deadline_closes_1008() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let mut ws = proxy.connect().await;
    assert_eq!(ws.closed_with().await, 1008);
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_refresh_for_another_user_closes_1008() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let mut ws = proxy.connect().await;
    ws.send(json!({"auth": {"token": token("alice")}})).await;
    assert_eq!(ws.recv().await["auth"]["sub"], "alice");
    ws.join("general", "alice").await;
    ws.send(json!({"auth": {"token": token("alice")}})).await;
    assert_eq!(ws.recv().await["auth"]["sub"], "alice");
    ws.say("general", "alice", "after-refresh", "still here")
        .await;
    ws.send(json!({"auth": {"token": token("bob")}})).await;
    assert_eq!(ws.closed_with().await, 1008);
    proxy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_without_renewal_closes_1008_token_expired() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let short = TokenRequest {
        user: "alice".into(),
        ttl: Duration::from_secs(1),
        ..TokenRequest::default()
    };
    let short = mint(&SignKey::Secret(SECRET.to_vec()), &short).expect("mint");
    let mut ws = proxy.connect().await;
    ws.send(json!({"auth": {"token": short}})).await;
    assert_eq!(ws.recv().await["auth"]["sub"], "alice");
    let (code, reason) = ws.closed_with_reason().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    proxy.stop().await;
    server.stop().await;
}

/// The whole chain in one process as a user runs it: `wsgate --auth jwt`,
/// where the gateway verifies the browser's token and forwards it, and the
/// chat server verifies it again and binds the sender. Logged at trace
/// level, and no token appears in the log.
#[tokio::test]
async fn wsgate_all_with_auth_jwt_binds_every_frame_to_the_token_and_never_logs_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).expect("write secret");
    let mut command = support::wsgate();
    command
        .env("RUST_LOG", "trace")
        .args(["--auth", "jwt", "--jwt-leeway", "0", "--jwt-secret-file"])
        .arg(&secret_file)
        .arg("--db")
        .arg(dir.path().join("chat.db"))
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]);
    let gateway = support::spawn_listening(command, "WebSocket gateway listening");
    let url = format!("ws://{}/", gateway.addr);
    let (alice_token, bob_token) = (token("alice"), token("bob"));

    // Alice by subprotocol, Bob by first frame.
    let protocols = (
        "sec-websocket-protocol",
        format!("wsgate.v1, bearer.{alice_token}"),
    );
    let (mut alice, _) = handshake(&url, &[protocols]).await.expect("alice signs in");
    assert_eq!(alice.recv().await["auth"]["sub"], "alice");
    let mut bob = Ws::connect(&url).await;
    bob.send(json!({"auth": {"token": bob_token}})).await;
    assert_eq!(bob.recv().await["auth"]["sub"], "bob");
    bob.send(json!({"join_room": {"room_id": "room1"}})).await;
    bob.recv_until(|f| f.get("presence").is_some()).await;

    // The handout's frame names another sender: refused, the stream goes on.
    alice
        .send(json!({"chat_message": {"id": "msg1", "room_id": "room1", "sender_id": "client1", "content": "Hello World !"}, "request_id": "spoof"}))
        .await;
    let refused = alice.recv_until(|f| f["request_id"] == "spoof").await;
    assert_eq!(refused["error"]["code"], "PERMISSION_DENIED", "{refused}");
    // With the sender left empty, it is filled from the token.
    alice
        .send(json!({"chat_message": {"id": "msg1", "room_id": "room1", "sender_id": "", "content": "Hello World !"}, "request_id": "ok"}))
        .await;
    let echo = alice.recv_until(|f| f["request_id"] == "ok").await;
    assert_eq!(echo["chat_message"]["sender_id"], "alice", "{echo}");
    let delivered = bob.recv_until(|f| f["chat_message"]["id"] == "msg1").await;
    assert_eq!(delivered["chat_message"]["sender_id"], "alice");
    // A unary call carries the token too: the server answers it.
    bob.send(json!({"get_user": {"user_id": "alice"}, "request_id": "who"}))
        .await;
    let user = bob.recv_until(|f| f["request_id"] == "who").await;
    assert_eq!(user["user"]["id"], "alice", "{user}");

    alice.hang_up().await;
    bob.hang_up().await;
    let log = gateway.kill_and_read_log().join("\n");
    assert!(
        log.contains(r#"connect sub="alice""#),
        "the access log names the user"
    );
    assert!(
        log.contains(r#"disconnect sub="bob""#),
        "and the user signed in by a first frame"
    );
    for secret in [&alice_token, &bob_token] {
        // Any part of a token: its signature, its claims.
        for part in secret.split('.') {
            assert!(!log.contains(part), "a token part is in the log");
        }
    }
    assert!(
        !log.contains(std::str::from_utf8(SECRET).unwrap()),
        "the secret is in the log"
    );
}

#[tokio::test]
async fn a_user_past_max_connections_per_user_is_refused_others_are_not() {
    let server = Server::start().await;
    let proxy = Proxy::start_with(proxy::Config {
        max_connections_per_user: 2,
        ..jwt_config(&server.uri())
    })
    .await;
    let offer = |user: &str| {
        vec![(
            "sec-websocket-protocol",
            format!("wsgate.v1, bearer.{}", token(user)),
        )]
    };
    let (first, _) = handshake(&proxy.url(), &offer("alice")).await.expect("1st");
    let (_second, _) = handshake(&proxy.url(), &offer("alice")).await.expect("2nd");
    // At the upgrade: 503, before anything opens.
    assert_eq!(
        handshake(&proxy.url(), &offer("alice")).await.err(),
        Some(503)
    );
    // By first frame: closed once the user is known.
    let mut late = proxy.connect().await;
    late.send(json!({"auth": {"token": token("alice")}})).await;
    let (code, reason) = late.closed_with_reason().await;
    assert_eq!(code, 1008);
    assert!(reason.contains("too many connections"), "{reason}");
    // Another user is not affected, and a place given back is free again.
    let (mut bob, _) = handshake(&proxy.url(), &offer("bob")).await.expect("bob");
    assert_eq!(bob.recv().await["auth"]["sub"], "bob");
    first.hang_up().await;
    let (mut again, _) = handshake(&proxy.url(), &offer("alice"))
        .await
        .expect("a free place");
    assert_eq!(again.recv().await["auth"]["sub"], "alice");
    proxy.stop().await;
    server.stop().await;
}

/// A token signed with the test secret from hand-written header and claims.
fn handmade(header: &str, claims: &str, secret: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("sign");
    format!("{message}.{signature}")
}

#[tokio::test]
async fn expired_foreign_audience_alg_none_and_key_confusion_tokens_get_401() {
    use base64::Engine as _;
    let server = Server::start().await;
    let proxy = Proxy::start_with(jwt_config(&server.uri())).await;
    let now = jsonwebtoken::get_current_timestamp();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = format!(r#"{{"sub":"mallory","exp":{}}}"#, now + 60);
    let refused = [
        // Expired (the test gateway allows no leeway).
        handmade(
            hs256,
            &format!(r#"{{"sub":"mallory","exp":{}}}"#, now - 5),
            SECRET,
        ),
        // For another service.
        handmade(
            hs256,
            &format!(r#"{{"sub":"mallory","exp":{},"aud":"billing"}}"#, now + 60),
            SECRET,
        ),
        // Unsigned.
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(&claims)
        ),
        // An RS256 header over an HMAC signature made with the secret.
        {
            let mut token = handmade(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, SECRET);
            token.push('A');
            token
        },
    ];
    for token in refused {
        let offer = format!("wsgate.v1, bearer.{token}");
        let answer = handshake(&proxy.url(), &[("sec-websocket-protocol", offer)]).await;
        assert_eq!(answer.err(), Some(401), "{token}");
    }
    // The same shapes, valid, are let in: the refusals are about the flaw.
    let good = handmade(hs256, &claims, SECRET);
    let offer = format!("wsgate.v1, bearer.{good}");
    let (mut ws, _) = handshake(&proxy.url(), &[("sec-websocket-protocol", offer)])
        .await
        .expect("a valid token signs in");
    assert_eq!(ws.recv().await["auth"]["sub"], "mallory");
    proxy.stop().await;
    server.stop().await;
}

/// An HTTP/2 "upstream" that records the headers of each call it gets and
/// answers every one with `UNIMPLEMENTED`: what the gateway sends upstream,
/// seen from the other side.
async fn recording_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<axum::http::HeaderMap>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, calls) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(
                move |request: axum::http::Request<hyper::body::Incoming>| {
                    let _ = seen.send(request.headers().clone());
                    async {
                        axum::http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "12")
                            .body(String::new())
                    }
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (addr, calls)
}

#[tokio::test]
async fn the_token_the_client_address_and_allow_listed_headers_reach_the_upstream() {
    let (upstream, mut calls) = recording_upstream().await;
    let proxy = Proxy::start_with(proxy::Config {
        forward_headers: vec!["x-request-id".into()],
        forward_cookies: vec!["session".into()],
        ..jwt_config(&format!("http://{upstream}"))
    })
    .await;
    let alice = token("alice");
    let headers = [
        (
            "sec-websocket-protocol",
            format!("wsgate.v1, bearer.{alice}"),
        ),
        ("x-request-id", "req-42".to_owned()),
        ("x-forwarded-for", "6.6.6.6".to_owned()),
        ("x-not-listed", "nope".to_owned()),
        ("cookie", "session=s1; other=o2".to_owned()),
    ];
    let (mut ws, _) = handshake(&proxy.url(), &headers).await.expect("signed in");
    assert_eq!(ws.recv().await["auth"]["sub"], "alice");
    ws.send(json!({"get_user": {"user_id": "bob"}, "request_id": "u"}))
        .await;
    let answer = ws.recv_until(|f| f["request_id"] == "u").await;
    assert_eq!(answer["error"]["code"], "UNIMPLEMENTED", "{answer}");

    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a call in time")
        .expect("a call");
    let header = |name: &str| {
        call.get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(header("authorization"), Some(format!("Bearer {alice}")));
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "the peer, not the browser's claim"
    );
    assert_eq!(header("x-request-id").as_deref(), Some("req-42"));
    assert_eq!(header("session").as_deref(), Some("s1"));
    for absent in ["x-not-listed", "cookie", "other", "sec-websocket-protocol"] {
        assert_eq!(header(absent), None, "{absent} is not passed upstream");
    }
    proxy.stop().await;
}
