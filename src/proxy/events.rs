//! What the service streams back, as the browser gets it.
//!
//! A chat message to a room of 100 reaches the gateway as 100 identical
//! protobuf frames, one on each member's stream. Decoding each and writing
//! it as JSON was most of the gateway's work under load, so each distinct
//! frame is transcoded once and the JSON text is shared by every session
//! that receives it. The cache knows nothing of rooms or messages: equal
//! bytes give equal JSON, for any service.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tonic::Code;

use super::gateway::StreamMethod;
use super::transcode::{error_json, event_json};

/// Distinct frames remembered per generation. Copies of one frame reach
/// their sessions within milliseconds of each other, so this only has to
/// span a moment of traffic; it bounds the cache to a few MiB.
const GENERATION: usize = 4096;

/// A frame from the service, ready for the session.
pub enum Event {
    /// Text to send to the browser.
    Json(Utf8Bytes),
    /// The service's resume state, kept by the session, not sent: encoded
    /// (a few dozen bytes), as a decoded message costs ~2 KB of maps, in
    /// every session, for a frame replayed only when the stream breaks.
    Resume(Bytes),
}

/// The transcoding cache, shared by every session of the gateway.
#[derive(Default)]
pub struct Events {
    cache: Mutex<Generations>,
}

/// Two generations: when the current one is full it becomes the previous
/// one and the old previous one is dropped; a hit in the previous one moves
/// back to the current. Cheap, and close enough to least-recently-used.
#[derive(Default)]
struct Generations {
    current: FrameMap,
    previous: FrameMap,
}

/// Keyed by whole frames, looked up once per frame a session receives:
/// foldhash rather than SipHash: several times faster on frames of a few
/// hundred bytes, still seeded per process, and a generation holds at most
/// [`GENERATION`] entries, so a crafted flood of colliding frames cannot
/// grow into a slow map.
type FrameMap = HashMap<Bytes, Utf8Bytes, foldhash::fast::RandomState>;

impl Events {
    /// The browser's view of `frame`, an encoded message of the stream's
    /// output type.
    pub fn event(&self, method: &StreamMethod, frame: &[u8]) -> Event {
        if let Some(json) = self.get(frame) {
            return Event::Json(json);
        }
        let msg = match DynamicMessage::decode(method.output.clone(), frame) {
            Ok(msg) => msg,
            Err(e) => {
                let message = format!("decoding {}: {e}", method.output.full_name());
                tracing::warn!("{message}");
                return Event::Json(error_json(Code::Internal, &message, None).into());
            }
        };
        if let Some(state) = method.take_resume(&msg) {
            return Event::Resume(state.encode_to_vec().into());
        }
        let json = Utf8Bytes::from(event_json(&msg));
        self.insert(frame, json.clone());
        Event::Json(json)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps hold no invariant a panic could break.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, frame: &[u8]) -> Option<Utf8Bytes> {
        let mut cache = self.lock();
        if let Some(json) = cache.current.get(frame) {
            return Some(json.clone());
        }
        let (frame, json) = cache.previous.remove_entry(frame)?;
        cache.put(frame, json.clone());
        Some(json)
    }

    fn insert(&self, frame: &[u8], json: Utf8Bytes) {
        self.lock().put(Bytes::copy_from_slice(frame), json);
    }
}

impl Generations {
    fn put(&mut self, frame: Bytes, json: Utf8Bytes) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(frame, json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{chat, descriptor_pool};
    use crate::proxy::Gateway;
    use prost::Message;

    fn method() -> StreamMethod {
        let pool = descriptor_pool();
        let service = pool
            .get_service_by_name("chat.ChatService")
            .expect("service");
        Gateway::from_service(&service, None)
            .expect("gateway")
            .stream()
            .expect("stream method")
            .clone()
    }

    fn message(id: &str) -> Vec<u8> {
        chat::ChatStream {
            event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                id: id.into(),
                room_id: "r1".into(),
                sender_id: "u1".into(),
                content: "hi".into(),
                timestamp: None,
                seq: 3,
            })),
            request_id: None,
        }
        .encode_to_vec()
    }

    fn json(event: Event) -> String {
        match event {
            Event::Json(json) => json.as_str().to_owned(),
            Event::Resume(_) => panic!("expected JSON"),
        }
    }

    #[test]
    fn equal_frames_share_one_json_text() {
        let (events, method) = (Events::default(), method());
        let first = json(events.event(&method, &message("m1")));
        assert!(
            first.starts_with(r#"{"chat_message":{"id":"m1""#),
            "{first}"
        );
        assert_eq!(json(events.event(&method, &message("m1"))), first);
        assert_eq!(events.lock().current.len(), 1);
        let other = json(events.event(&method, &message("m2")));
        assert!(other.contains(r#""id":"m2""#), "{other}");
    }

    #[test]
    fn old_frames_age_out_and_hits_are_kept() {
        let (events, method) = (Events::default(), method());
        let kept = message("kept");
        events.event(&method, &kept);
        for i in 0..GENERATION {
            events.event(&method, &message(&format!("m{i}")));
        }
        // "kept" is in the previous generation now; a hit brings it back.
        assert!(events.lock().previous.contains_key(kept.as_slice()));
        events.event(&method, &kept);
        assert!(events.lock().current.contains_key(kept.as_slice()));
        for i in 0..2 * GENERATION {
            events.event(&method, &message(&format!("n{i}")));
        }
        let cache = events.lock();
        assert!(cache.current.len() <= GENERATION && cache.previous.len() <= GENERATION);
        assert!(!cache.current.contains_key(kept.as_slice()));
    }

    #[test]
    fn resume_frames_are_kept_back_and_garbage_is_an_error_frame() {
        let (events, method) = (Events::default(), method());
        let resume = chat::ChatStream {
            event: Some(chat::chat_stream::Event::Resume(chat::Resume {
                joins: vec![],
            })),
            request_id: None,
        }
        .encode_to_vec();
        assert!(matches!(events.event(&method, &resume), Event::Resume(_)));
        let error = json(events.event(&method, b"\xff\xff\xff"));
        assert!(error.contains(r#""code":"INTERNAL""#), "{error}");
    }
}
