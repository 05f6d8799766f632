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
/// span a moment of traffic.
const GENERATION: usize = 4096;
/// Bytes (frame plus JSON) remembered per generation. The entry bound alone
/// let 4096 frames of 4 KiB messages hold ~34 MiB per generation, twice
/// over, for as long as the gateway ran; 4 MiB still spans hundreds of
/// large frames (a moment of traffic) and bounds the cache to 8 MiB.
const GENERATION_BYTES: usize = 4 * 1024 * 1024;

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
    /// Bytes of frames and JSON in `current` (`previous` only shrinks).
    current_bytes: usize,
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
        // A frame too large for a generation is transcoded each time rather
        // than emptying the cache of everything else.
        if entry_bytes(frame, &json) > GENERATION_BYTES {
            return;
        }
        self.lock().put(Bytes::copy_from_slice(frame), json);
    }
}

/// What an entry holds: its frame and its JSON text (the maps' own overhead
/// is bounded by the entry count).
fn entry_bytes(frame: &[u8], json: &Utf8Bytes) -> usize {
    frame.len() + json.len()
}

impl Generations {
    fn put(&mut self, frame: Bytes, json: Utf8Bytes) {
        let bytes = entry_bytes(&frame, &json);
        if self.current.len() >= GENERATION || self.current_bytes + bytes > GENERATION_BYTES {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += bytes;
        if let Some(old) = self.current.insert(frame.clone(), json) {
            // Two sessions transcoded the same frame at once: one entry.
            self.current_bytes -= entry_bytes(&frame, &old);
        }
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
                ..Default::default()
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

    fn big_message(id: &str) -> Vec<u8> {
        chat::ChatStream {
            event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                id: id.into(),
                room_id: "r1".into(),
                sender_id: "u1".into(),
                content: "x".repeat(4096),
                timestamp: None,
                seq: 3,
                ..Default::default()
            })),
            request_id: None,
        }
        .encode_to_vec()
    }

    fn bytes_held(cache: &Generations) -> usize {
        let sum = |map: &FrameMap| map.iter().map(|(f, j)| entry_bytes(f, j)).sum::<usize>();
        sum(&cache.current) + sum(&cache.previous)
    }

    /// Issue 8: 6,000 messages of 4 KiB left ~64 MiB in the cache, bounded
    /// in entries only. 3,000 (~25 MiB) make the point.
    #[test]
    fn large_frames_are_bounded_by_bytes() {
        const BOUND: usize = 8 * 1024 * 1024;
        let (events, method) = (Events::default(), method());
        for i in 0..3000 {
            events.event(&method, &big_message(&format!("m{i}")));
            let cache = events.lock();
            assert!(cache.current_bytes <= GENERATION_BYTES, "at {i}");
            if i % 500 == 0 {
                assert!(bytes_held(&cache) <= BOUND, "at {i}");
            }
        }
        let cache = events.lock();
        assert!(bytes_held(&cache) <= BOUND);
        assert_eq!(
            cache.current_bytes,
            cache
                .current
                .iter()
                .map(|(f, j)| entry_bytes(f, j))
                .sum::<usize>()
        );
        // Still a cache: the newest frames are there, hundreds of them.
        assert!(cache.current.contains_key(big_message("m2999").as_slice()));
        assert!(cache.current.len() + cache.previous.len() > 500);
    }

    #[test]
    fn a_frame_too_large_for_a_generation_is_not_cached() {
        let (events, method) = (Events::default(), method());
        let small = message("small");
        events.event(&method, &small);
        let huge = chat::ChatStream {
            event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                content: "x".repeat(GENERATION_BYTES),
                ..Default::default()
            })),
            request_id: None,
        }
        .encode_to_vec();
        let first = json(events.event(&method, &huge));
        assert_eq!(json(events.event(&method, &huge)), first);
        let cache = events.lock();
        assert!(
            cache.current.contains_key(small.as_slice()),
            "not pushed out"
        );
        assert!(!cache.current.contains_key(huge.as_slice()));
        assert!(!cache.previous.contains_key(huge.as_slice()));
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
