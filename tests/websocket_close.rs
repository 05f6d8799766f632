//! A frame the gateway cannot read closes the WebSocket with the status
//! code RFC 6455 (section 7.4.1) gives it, not without one (1005): 1007 for
//! a text frame that is not UTF-8, 1002 for a protocol violation.
//!
//! WebSocket client libraries refuse to send such frames, so these tests do
//! the HTTP upgrade by hand on a TCP socket and write hand-built frames.

mod support;

use support::{System, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP connection, upgraded to a WebSocket by hand.
struct RawClient {
    tcp: TcpStream,
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const MASK_BIT: u8 = 0x80;
const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl RawClient {
    async fn connect(system: &System) -> RawClient {
        let mut tcp = TcpStream::connect(system.proxy.addr)
            .await
            .expect("connect");
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("send the upgrade request");
        // Read the response byte by byte, so that no frame byte is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(WAIT, tcp.read_u8())
                .await
                .expect("the upgrade response in time")
                .expect("the upgrade response");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's own example key and its accept value.
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        RawClient { tcp }
    }

    /// Sends one frame: `first` is the FIN/RSV/opcode byte; masked as a
    /// client must, unless `masked` is false.
    async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { MASK_BIT } else { 0 };
        match payload.len() {
            n @ 0..=125 => frame.push(mask_bit | n as u8),
            n => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&u16::try_from(n).expect("short test frame").to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&MASK);
            frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
        } else {
            frame.extend_from_slice(payload);
        }
        self.tcp.write_all(&frame).await.expect("send the frame");
    }

    /// Reads frames until the server's close frame and returns its code and
    /// reason; then checks that the server hangs up.
    async fn closed_with(mut self) -> (u16, String) {
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                let (opcode, payload) = self.read_frame().await;
                if opcode == CLOSE {
                    return payload;
                }
            }
        })
        .await
        .expect("a close frame in time");
        assert!(closed.len() >= 2, "a close frame without a code (1005)");
        let code = u16::from_be_bytes([closed[0], closed[1]]);
        let reason = String::from_utf8(closed[2..].to_vec()).expect("a UTF-8 reason");
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.tcp.read_to_end(&mut rest))
            .await
            .expect("the gateway hangs up after closing")
            .expect("read to the end");
        (code, reason)
    }

    /// One server frame (servers do not mask): its opcode and payload.
    async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let first = self.tcp.read_u8().await.expect("a frame");
        let len = match self.tcp.read_u8().await.expect("a frame length") & 0x7f {
            126 => u64::from(self.tcp.read_u16().await.expect("length")),
            127 => self.tcp.read_u64().await.expect("length"),
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).expect("length")];
        self.tcp
            .read_exact(&mut payload)
            .await
            .expect("the payload");
        (first & 0x0f, payload)
    }
}

/// Sends `frames` on a fresh connection and returns how the gateway closed
/// it; another connection is still served afterwards.
async fn close_after(frames: &[(u8, &[u8], bool)]) -> (u16, String) {
    let system = System::start().await;
    let mut client = RawClient::connect(&system).await;
    for &(first, payload, masked) in frames {
        client.send_frame(first, payload, masked).await;
    }
    let closed = client.closed_with().await;
    let mut other = system.connect().await;
    let reply = other
        .call("get_user", serde_json::json!({"user_id": "nobody"}))
        .await;
    assert_eq!(reply["error"]["code"], "NOT_FOUND", "{reply}");
    closed
}

#[tokio::test]
async fn a_well_formed_frame_is_answered_by_the_raw_client() {
    // The hand-built frames are right: a valid one gets its answer.
    let system = System::start().await;
    let mut client = RawClient::connect(&system).await;
    let frame = br#"{"get_user": {"user_id": "nobody"}}"#;
    client.send_frame(FIN | TEXT, frame, true).await;
    let (opcode, payload) = tokio::time::timeout(WAIT, client.read_frame())
        .await
        .expect("an answer in time");
    assert_eq!(opcode, TEXT);
    let answer = String::from_utf8(payload).expect("UTF-8");
    assert!(answer.contains("NOT_FOUND"), "{answer}");
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (code, reason) = close_after(&[(FIN | TEXT, b"{\"a\": \"\xff\xfe\"}", true)]).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("UTF-8"), "{reason}");
}

#[tokio::test]
async fn invalid_utf8_across_fragments_closes_with_1007() {
    // A valid start of a two-byte character, then a byte that cannot end it.
    let (code, reason) = close_after(&[
        (TEXT, b"\"\xce", true),
        (FIN | CONTINUATION, b"\xff\"", true),
    ])
    .await;
    assert_eq!(code, 1007, "{reason}");
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let (code, reason) = close_after(&[(FIN | TEXT, b"{}", false)]).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("unmasked"), "{reason}");
}

#[tokio::test]
async fn a_reserved_opcode_closes_with_1002() {
    let (code, reason) = close_after(&[(FIN | 0x3, b"{}", true)]).await;
    assert_eq!(code, 1002, "{reason}");
    let (code, reason) = close_after(&[(FIN | 0xB, b"", true)]).await;
    assert_eq!(code, 1002, "{reason}");
}

#[tokio::test]
async fn a_control_frame_over_125_bytes_closes_with_1002() {
    let (code, reason) = close_after(&[(FIN | PING, &[b'p'; 126], true)]).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("125"), "{reason}");
}

#[tokio::test]
async fn rsv_bits_without_an_extension_close_with_1002() {
    let (code, reason) = close_after(&[(FIN | RSV1 | TEXT, b"{}", true)]).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("Reserved bits"), "{reason}");
}

#[tokio::test]
async fn a_continuation_with_no_start_closes_with_1002() {
    let (code, reason) = close_after(&[(FIN | CONTINUATION, b"{}", true)]).await;
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("Continue"), "{reason}");
}
