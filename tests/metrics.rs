//! `/metrics`: the gateway's and the server's counters move with traffic.

mod support;

use serde_json::json;
use support::{Proxy, Server, http_get, metric};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wsgate::{proxy, server};

#[tokio::test]
async fn counters_move_with_traffic() {
    let server_registry = wsgate::metrics::registry();
    let server = Server::start_configured(server::Config {
        metrics: server_registry.clone(),
        ..server::Config::default()
    })
    .await;
    // Each on a listener of its own (`--metrics-listen`).
    let stop_metrics = CancellationToken::new();
    let (server_metrics, server_task) = serve_metrics(server_registry, &stop_metrics).await;
    let gateway_registry = wsgate::metrics::registry();
    let gateway = Proxy::start_with(proxy::Config {
        metrics: gateway_registry.clone(),
        ..proxy::Config::new(server.uri())
    })
    .await;
    let (gateway_metrics, gateway_task) = serve_metrics(gateway_registry, &stop_metrics).await;

    // Never on the public port.
    assert_eq!(http_get(gateway.addr, "/metrics").await.0, 404);
    let (status, before) = http_get(gateway_metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&before, "wsgate_ws_connections_open"), 0.0);

    let mut alice = gateway.connect().await;
    let mut bob = gateway.connect().await;
    bob.send(json!({"join_room": {"room_id": "room1", "user_id": "bob"}}))
        .await;
    bob.recv_until(|f| f.get("presence").is_some()).await;
    for i in 0..3 {
        let id = format!("m{i}");
        alice
            .send(json!({"chat_message": {"id": id, "room_id": "room1", "sender_id": "alice", "content": "hi"}}))
            .await;
        alice.frames_until_echo(&id).await;
        bob.recv_until(|f| f["chat_message"]["id"] == id).await;
    }
    alice.send_text("not json").await;
    alice.recv_until(|f| f.get("error").is_some()).await;
    alice
        .send(json!({"get_user": {"user_id": "alice"}, "request_id": "u"}))
        .await;
    alice.recv_until(|f| f["request_id"] == "u").await;

    let foreign =
        support::Ws::try_connect_with(&gateway.url(), &[("Origin", "https://evil.example")]).await;
    assert!(foreign.is_err(), "a foreign origin is refused");

    let (_, page) = http_get(gateway_metrics, "/metrics").await;
    assert_eq!(
        metric(&page, r#"wsgate_ws_refused_total{reason="origin"}"#),
        1.0
    );
    assert_eq!(metric(&page, "wsgate_ws_connections_open"), 2.0);
    assert_eq!(metric(&page, "wsgate_ws_connections_total"), 2.0);
    assert_eq!(
        metric(&page, r#"wsgate_ws_frames_in_total{action="chat_message"}"#),
        3.0
    );
    assert_eq!(
        metric(&page, r#"wsgate_ws_frames_in_total{action="join_room"}"#),
        1.0
    );
    assert_eq!(
        metric(&page, r#"wsgate_ws_frames_in_total{action="invalid"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            r#"wsgate_ws_error_frames_total{code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            r#"wsgate_upstream_calls_total{code="OK",method="get_user"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            r#"wsgate_upstream_call_seconds_count{method="get_user"}"#
        ),
        1.0
    );
    assert_eq!(metric(&page, "wsgate_upstream_streams_open"), 2.0);
    // 3 echoes + 3 deliveries to bob + presence, snapshot, error, reply...
    assert!(metric(&page, "wsgate_ws_frames_out_total") >= 9.0, "{page}");
    assert!(metric(&page, "wsgate_ws_bytes_out_total") > 0.0);

    let (status, served) = http_get(server_metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(&served, "process_resident_memory_bytes") > 0.0,
        "{served}"
    );
    assert_eq!(metric(&served, "wsgate_server_messages_stored_total"), 3.0);
    assert_eq!(
        metric(
            &served,
            r#"wsgate_server_requests_total{code="OK",method="GetUser"}"#
        ),
        1.0
    );
    assert_eq!(metric(&served, "wsgate_server_streams_open"), 2.0);
    // Each message to alice (echo) and bob.
    assert_eq!(
        metric(&served, "wsgate_server_fanout_deliveries_total"),
        6.0
    );
    assert!(metric(&served, "wsgate_server_commit_batch_size_count") >= 1.0);
    assert!(metric(&served, "wsgate_server_commit_seconds_count") >= 1.0);

    alice.close().await;
    bob.close().await;
    gateway.stop().await;
    stop_metrics.cancel();
    server_task.await.unwrap().unwrap();
    gateway_task.await.unwrap().unwrap();
    server.stop().await;
}

/// Serves `registry` on a port of its own until `stop`, as `--metrics-listen` does.
async fn serve_metrics(
    registry: wsgate::metrics::MetricsRegistry,
    stop: &CancellationToken,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(wsgate::metrics::serve(listener, registry, stop.clone()));
    (addr, task)
}
