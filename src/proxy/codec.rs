//! A tonic codec for [`DynamicMessage`], so the gateway can call any method
//! by path without generated types:
//! `grpc.unary(request, path, DynamicCodec::new(method.output.clone()))`.
//!
//! Encoding needs no descriptor (a `DynamicMessage` carries its own);
//! decoding needs the output message's, which the codec holds.
//!
//! [`StreamCodec`] leaves what the service streams back undecoded (`Bytes`):
//! the gateway turns each distinct frame into JSON once, however many
//! sessions receive it (see `events`).

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::proto::lean_buffers;

/// Encodes any [`DynamicMessage`]; decodes messages of one type.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec decoding responses as `output` (the method's output type).
    pub fn new(output: MessageDescriptor) -> Self {
        DynamicCodec { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder {
            descriptor: self.output.clone(),
        }
    }
}

/// Encodes [`DynamicMessage`]s; hands back what it receives as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamCodec;

impl Codec for StreamCodec {
    type Encode = DynamicMessage;
    type Decode = Bytes;
    type Encoder = DynamicEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Yields each received message's protobuf bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        lean_buffers()
    }
}

/// Encodes a [`DynamicMessage`] in the protobuf binary format.
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode_message(&item, dst)
    }

    fn buffer_settings(&self) -> BufferSettings {
        lean_buffers()
    }
}

/// Decodes the protobuf binary format as one message type.
#[derive(Debug, Clone)]
pub struct DynamicDecoder {
    descriptor: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        decode_message(&self.descriptor, src).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        lean_buffers()
    }
}

/// `EncodeBuf` grows on demand, so this cannot run out of room; an error is
/// still a `Status` rather than a panic (tonic's prost codec panics here).
fn encode_message(msg: &DynamicMessage, dst: &mut impl BufMut) -> Result<(), Status> {
    msg.encode(dst)
        .map_err(|e| Status::internal(format!("encoding {}: {e}", msg.descriptor().full_name())))
}

/// A message that does not decode is the server's fault: `INTERNAL`, as
/// tonic's own codec does and gRPC's status code guide asks.
fn decode_message(desc: &MessageDescriptor, src: impl Buf) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(desc.clone(), src)
        .map_err(|e| Status::internal(format!("decoding {}: {e}", desc.full_name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{chat, descriptor_pool};
    use bytes::BytesMut;
    use tonic::codec::{EncodeBody, Streaming};

    fn chat_message() -> DynamicMessage {
        let msg = chat::ChatStream {
            event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                id: "m1".into(),
                room_id: "r1".into(),
                sender_id: "u1".into(),
                content: "héllo".into(),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                seq: 7,
                ..Default::default()
            })),
            request_id: Some("q1".into()),
        };
        let desc = descriptor_pool()
            .get_message_by_name("chat.ChatStream")
            .expect("ChatStream");
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).expect("decodes")
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let msg = chat_message();
        let mut buf = BytesMut::new();
        encode_message(&msg, &mut buf).expect("encodes");
        let back = decode_message(&msg.descriptor(), buf.freeze()).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn decoding_garbage_is_internal() {
        let desc = chat_message().descriptor();
        let status = decode_message(&desc, &b"\xff\xff\xff"[..]).expect_err("garbage");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with("decoding chat.ChatStream: "));
    }

    /// Through tonic's own framing: what a client call does with the codec.
    #[tokio::test]
    async fn round_trips_through_tonic_framing() {
        let msg = chat_message();
        let mut codec = DynamicCodec::new(msg.descriptor());
        let source = tokio_stream::iter([Ok(msg.clone()), Ok(msg.clone())]);
        let body = EncodeBody::new_client(codec.encoder(), source, None, None);
        let mut stream = Streaming::new_request(codec.decoder(), body, None, None);
        assert_eq!(stream.message().await.expect("first"), Some(msg.clone()));
        assert_eq!(stream.message().await.expect("second"), Some(msg));
        assert_eq!(stream.message().await.expect("end"), None);
    }
}
