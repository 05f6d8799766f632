//! `GetLimits`: what the server accepts, as its flags set it, over gRPC and
//! through the gateway (`get_limits`), so a client checks input before
//! sending it.

mod support;

use serde_json::json;

use support::{Proxy, Server, System};
use wsgate::proto::chat::{GetLimitsRequest, Limits};
use wsgate::server;

fn config(max_content_bytes: usize, max_rooms_per_stream: usize) -> server::Config {
    server::Config {
        max_content_bytes,
        max_rooms_per_stream,
        ..server::Config::default()
    }
}

async fn limits_of(server: &Server) -> Limits {
    server
        .grpc()
        .await
        .get_limits(GetLimitsRequest {})
        .await
        .expect("get_limits")
        .into_inner()
}

#[tokio::test]
async fn the_limits_are_the_servers_flags_over_grpc() {
    let server = Server::start().await;
    assert_eq!(
        limits_of(&server).await,
        Limits {
            max_content_bytes: 4096,
            max_id_bytes: 128,
            max_rooms_per_stream: 100
        }
    );
    server.stop().await;

    let server = Server::start_configured(config(100, 3)).await;
    assert_eq!(
        limits_of(&server).await,
        Limits {
            max_content_bytes: 100,
            max_id_bytes: 128,
            max_rooms_per_stream: 3
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn a_browser_reads_the_limits_through_the_gateway_and_they_are_the_ones_enforced() {
    let server = Server::start_configured(config(100, 3)).await;
    let proxy = Proxy::start(&server.uri()).await;
    let system = System { server, proxy };
    let mut ws = system.connect().await;
    let answer = ws.call("get_limits", json!({})).await;
    assert_eq!(
        answer["limits"],
        json!({"max_content_bytes": 100, "max_id_bytes": 128, "max_rooms_per_stream": 3}),
        "{answer}"
    );
    // The limit said is the one applied: 100 bytes pass, 101 do not.
    ws.say("r", "u", "m1", &"x".repeat(100)).await;
    let refused = ws
        .call(
            "chat_message",
            json!({"id": "m2", "room_id": "r", "sender_id": "u", "content": "x".repeat(101)}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "INVALID_ARGUMENT", "{refused}");
    system.stop().await;
}
