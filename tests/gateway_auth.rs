//! Authentication at the gateway (`--auth jwt`): where the token travels,
//! what is refused before the upgrade, the first-frame sign-in.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{Proxy, Server, WAIT, Ws};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsgate::auth::{SignKey, TokenRequest, Verifier, VerifierConfig, VerifyKey, mint};
use wsgate::proxy;

const SECRET: &[u8] = b"a test secret of at least 32 bytes, for gateway_auth";

fn token(user: &str) -> String {
    let request = TokenRequest {
        user: user.into(),
        ttl: Duration::from_secs(3600),
        ..TokenRequest::default()
    };
    mint(&SignKey::Secret(SECRET.to_vec()), &request).expect("mint")
}

fn jwt_config(upstream: &str) -> proxy::Config {
    let verifier = Verifier::new(&VerifierConfig {
        keys: vec![VerifyKey::Secret(SECRET.to_vec())],
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
    })
    .expect("verifier");
    proxy::Config {
        auth: Some(Arc::new(verifier)),
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
    ws.send(json!({"get_user": {"user_id": "alice"}})).await;
    assert_eq!(ws.recv().await["error"]["code"], "UNAUTHENTICATED");
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
