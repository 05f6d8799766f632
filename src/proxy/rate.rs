//! The per-connection frame rate limit: a token bucket (governor) over the
//! frames a browser sends. A frame over the limit is answered with
//! `RESOURCE_EXHAUSTED` and not forwarded; a client that keeps sending
//! past it (abuse) is closed with 1008.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Default frames per second one connection may send, sustained. A person
/// chatting sends a message every few seconds and a `typing` frame at most
/// every 3 s per room; paging through history by scrolling is a few calls a
/// second. 20/s is several times what the web client ever sends.
pub const DEFAULT_MAX_FRAMES_PER_SECOND: u32 = 20;
/// Default frames one connection may send at once above the rate. The web
/// client, on (re)connecting, joins every room it shows and reads each
/// one's history: two frames per room at once, so 100 covers 50 rooms.
pub const DEFAULT_FRAME_BURST: u32 = 100;
/// Refused frames within [`ABUSE_WINDOW`] that close the connection (1008):
/// a client that got this many `RESOURCE_EXHAUSTED` answers and kept going
/// is not slowing down, and answering it costs the gateway work.
pub const ABUSE_REFUSALS: u32 = 50;
/// The window over which refused frames are counted.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: handle it.
    Pass,
    /// Over it: answer `RESOURCE_EXHAUSTED`, do not forward.
    Refuse,
    /// Sustained abuse: close the connection with 1008.
    Close,
}

/// One connection's limiter. Owned by its read loop: no lock, and one
/// connection flooding touches nobody else's state.
pub struct FrameRate {
    bucket: DefaultDirectRateLimiter,
    refused: u32,
    window_start: Instant,
}

impl FrameRate {
    /// `per_second` sustained, `burst` at once; both at least 1 (checked by
    /// the flag parsers; a 0 is taken as 1).
    pub fn new(per_second: u32, burst: u32) -> FrameRate {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        FrameRate {
            bucket: RateLimiter::direct(quota),
            refused: 0,
            window_start: Instant::now(),
        }
    }

    /// Takes one frame's token, and says what to do with the frame.
    pub fn check(&mut self) -> Verdict {
        if self.bucket.check().is_ok() {
            return Verdict::Pass;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused >= ABUSE_REFUSALS {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// The close reason for [`Verdict::Close`].
pub fn abuse_reason() -> String {
    format!(
        "frame rate limit: {ABUSE_REFUSALS} frames over the limit within {} s",
        ABUSE_WINDOW.as_secs()
    )
}

/// The error frame answering a refused frame (`text`, if it was a text
/// frame), with its `request_id` when it has one.
pub fn refusal(text: Option<&str>) -> String {
    let request_id = text.and_then(request_id);
    super::transcode::error_json(
        tonic::Code::ResourceExhausted,
        "frame rate limit exceeded; frame not sent, slow down",
        request_id.as_deref(),
    )
}

/// The `request_id` of a refused frame, if it is a JSON object with one:
/// the client can tell which of its requests was not sent.
pub fn request_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        request_id: Option<String>,
    }
    serde_json::from_str::<WithId>(text).ok()?.request_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_frames_are_refused_then_the_connection_closes() {
        let mut rate = FrameRate::new(1, 5);
        for _ in 0..5 {
            assert_eq!(rate.check(), Verdict::Pass);
        }
        for _ in 1..ABUSE_REFUSALS {
            assert_eq!(rate.check(), Verdict::Refuse);
        }
        assert_eq!(rate.check(), Verdict::Close);
    }

    #[test]
    fn refusals_older_than_the_window_are_forgotten() {
        let mut rate = FrameRate::new(1, 1);
        assert_eq!(rate.check(), Verdict::Pass);
        for _ in 1..ABUSE_REFUSALS {
            assert_eq!(rate.check(), Verdict::Refuse);
        }
        rate.window_start -= ABUSE_WINDOW + Duration::from_secs(1);
        assert_eq!(rate.check(), Verdict::Refuse);
    }

    #[test]
    fn the_request_id_of_a_refused_frame_is_found_if_there_is_one() {
        assert_eq!(
            request_id(r#"{"chat_message": {"content": "x"}, "request_id": "r7"}"#).as_deref(),
            Some("r7")
        );
        assert_eq!(request_id(r#"{"chat_message": {}}"#), None);
        assert_eq!(request_id("not json"), None);
        assert_eq!(request_id(r#"{"request_id": 5}"#), None);
        assert_eq!(request_id("[1]"), None);
    }
}
