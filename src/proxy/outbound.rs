//! The browser-bound half of a WebSocket session: a queue of text frames,
//! bounded in frames and in bytes, drained by one writer task whose writes
//! to the socket are bounded in time, and the way a session ends.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::GatewayMetrics;

/// Close codes the gateway uses (RFC 6455 section 7.4.1).
pub mod close_code {
    pub use axum::extract::ws::close_code::{AWAY, INVALID, POLICY, PROTOCOL, SIZE};
}

/// How long the writer may try to send the close frame after a write timed
/// out: the peer has shown it takes nothing, so this is only a courtesy.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Frames written before one flush: batching small frames into one write
/// saves syscalls under load, the cap keeps one flush from waiting too long.
const MAX_FRAMES_PER_FLUSH: usize = 64;
/// The longest close reason: a control frame carries at most 125 bytes,
/// two of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// The limits of one session's way to the browser.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames queued before the browser counts as too slow.
    pub frames: usize,
    /// Bytes of queued frames before the browser counts as too slow.
    pub bytes: usize,
    /// How long one write to the socket may take.
    pub write_timeout: Duration,
    pub ping_interval: Duration,
}

/// What the session's halves share.
struct Shared {
    ending: Ending,
    queued: QueuedBytes,
    metrics: Arc<GatewayMetrics>,
}

/// Why and how a session ends; the first reason given wins.
#[derive(Default)]
struct Ending {
    token: CancellationToken,
    frame: Mutex<Option<CloseFrame>>,
    /// The close code given, for the access log (0: none).
    code: AtomicU16,
}

impl Ending {
    fn close(&self, code: u16, reason: &str) {
        let mut frame = self.frame.lock().unwrap_or_else(|e| e.into_inner());
        if !self.token.is_cancelled() {
            *frame = Some(CloseFrame {
                code,
                reason: close_reason(reason).into(),
            });
            self.code.store(code, Ordering::Relaxed);
            self.token.cancel();
        }
    }

    fn take_frame(&self) -> Option<CloseFrame> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The bytes of the frames in a session's queue. One atomic add when a
/// frame is queued and one subtraction when the writer takes it: no lock
/// on the per-frame path.
struct QueuedBytes {
    bytes: AtomicUsize,
    max: usize,
}

impl QueuedBytes {
    fn new(max: usize) -> Self {
        QueuedBytes {
            bytes: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts `len` more bytes unless that would pass the bound. A frame
    /// into an empty queue always fits: one frame larger than the bound is
    /// no sign of a slow client.
    fn try_add(&self, len: usize) -> bool {
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > self.max {
            self.sub(len);
            return false;
        }
        true
    }

    /// Counts `len` more bytes, bound or not.
    fn add(&self, len: usize) {
        self.bytes.fetch_add(len, Ordering::Relaxed);
    }

    fn sub(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Sends text frames to the browser. Cheap to clone: the session's reader,
/// its unary calls and its upstream stream each hold one.
#[derive(Clone)]
pub struct ToClient {
    tx: mpsc::Sender<Utf8Bytes>,
    shared: Arc<Shared>,
}

impl ToClient {
    /// Queues a frame, waiting while the queue is full. Used for answers
    /// the browser asked for; they count towards the queue's bytes but
    /// never close the session (a history page may be larger than the
    /// bound, and the session's unary slots already limit how many wait).
    /// False once the session is over.
    pub async fn send(&self, frame: impl Into<Utf8Bytes>) -> bool {
        let frame = frame.into();
        let len = frame.len();
        self.shared.queued.add(len);
        if self.tx.send(frame).await.is_err() {
            self.shared.queued.sub(len);
            return false;
        }
        true
    }

    /// Queues a frame without waiting. Used for frames pushed by the server:
    /// a browser that cannot keep up with them, in frames or in bytes, is
    /// closed (1008), because waiting would hold up the upstream connection
    /// it shares with others. False once the session is over.
    pub fn push(&self, frame: impl Into<Utf8Bytes>) -> bool {
        let frame = frame.into();
        let len = frame.len();
        if !self.shared.queued.try_add(len) {
            let reason = format!(
                "too slow: the client did not read its messages fast enough \
                 (over {} bytes queued)",
                self.shared.queued.max
            );
            self.shared.metrics.slow_consumer("bytes");
            self.close(close_code::POLICY, &reason);
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.queued.sub(len);
                let reason = format!(
                    "too slow: the client did not read its messages fast enough \
                     ({} frames queued)",
                    self.tx.max_capacity()
                );
                self.shared.metrics.slow_consumer("frames");
                self.close(close_code::POLICY, &reason);
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.shared.queued.sub(len);
                false
            }
        }
    }

    /// Ends the session with this close code, unless it is already ending.
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.ending.close(code, reason);
    }

    /// Ends the session without a close code of our own (the peer closed,
    /// or vanished).
    pub fn finish(&self) {
        self.shared.ending.token.cancel();
    }

    /// The close code the gateway ended the session with, if it gave one.
    pub fn close_code(&self) -> Option<u16> {
        match self.shared.ending.code.load(Ordering::Relaxed) {
            0 => None,
            code => Some(code),
        }
    }

    /// Resolves when the session is ending.
    pub async fn closed(&self) {
        self.shared.ending.token.cancelled().await
    }
}

/// `reason`, cut to fit a close frame (on a character boundary).
fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Creates the queue towards the browser and spawns the task that writes it
/// to `sink`, pinging every `ping_interval` so that dead peers are noticed.
pub fn spawn_writer(
    sink: SplitSink<WebSocket, Message>,
    limits: Limits,
    metrics: Arc<GatewayMetrics>,
) -> (ToClient, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.frames);
    let shared = Arc::new(Shared {
        ending: Ending::default(),
        queued: QueuedBytes::new(limits.bytes),
        metrics,
    });
    let task = tokio::spawn(write_loop(sink, rx, shared.clone(), limits));
    (ToClient { tx, shared }, task)
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Utf8Bytes>,
    shared: Arc<Shared>,
    limits: Limits,
) {
    let ending = &shared.ending;
    let start = Instant::now() + limits.ping_interval;
    let mut ping = tokio::time::interval_at(start, limits.ping_interval);
    let timed_out = loop {
        let write = tokio::select! {
            biased;
            _ = ending.token.cancelled() => break false,
            frame = rx.recv() => match frame {
                Some(frame) => {
                    let batch = write_batch(&mut sink, &mut rx, &shared, frame);
                    bounded(batch, limits.write_timeout, ending).await
                }
                None => break false,
            },
            _ = ping.tick() => {
                let ping = sink.send(Message::Ping(Default::default()));
                bounded(ping, limits.write_timeout, ending).await
            }
        };
        match write {
            Write::Done => {}
            Write::Failed => {
                // The peer is gone; nothing more can be written.
                ending.token.cancel();
                return;
            }
            Write::TimedOut => {
                let reason = format!(
                    "write timeout: the client took none of its frames for {} s",
                    limits.write_timeout.as_secs_f32()
                );
                ending.close(close_code::POLICY, &reason);
                shared.metrics.slow_consumer("write_timeout");
                tracing::debug!("websocket write timed out");
                break true;
            }
        }
    };
    // A client that takes its frames, however slowly, gets its close code;
    // one that took nothing for the whole timeout gets a short try.
    let grace = if timed_out {
        CLOSE_GRACE
    } else {
        limits.write_timeout
    };
    let close = sink.send(Message::Close(ending.take_frame()));
    let _ = tokio::time::timeout(grace, close).await;
    // Dropping the sink (and the session's reader dropping the stream)
    // drops the TCP connection, whatever is still unsent.
}

/// How a write to the socket went.
enum Write {
    Done,
    /// The socket failed: the peer is gone.
    Failed,
    /// The write took longer than the write timeout.
    TimedOut,
}

/// Runs one write to the socket, for at most `limit`.
///
/// A write to a socket with room completes on its first poll: only a write
/// that has to wait sets up a timer (and a waiter for the session's end),
/// so the common case costs neither. The timeout bounds a whole write (one
/// batch of frames, a ping), not the time between bytes: axum hides the
/// socket, and a wake-up of the write proves nothing (tokio-tungstenite
/// wakes reads and writes together).
///
/// If the session ends while the write waits, the write still gets the rest
/// of its time: the frames it carries were due before the close frame.
async fn bounded<F>(write: F, limit: Duration, ending: &Ending) -> Write
where
    F: Future<Output = Result<(), axum::Error>>,
{
    let mut write = pin!(write);
    if let Poll::Ready(result) = poll_once(write.as_mut()).await {
        return done(result);
    }
    let deadline = Instant::now() + limit;
    tokio::select! {
        biased;
        result = write.as_mut() => return done(result),
        _ = tokio::time::sleep_until(deadline) => return Write::TimedOut,
        _ = ending.token.cancelled() => {}
    }
    match tokio::time::timeout_at(deadline, write).await {
        Ok(result) => done(result),
        Err(_) => Write::TimedOut,
    }
}

fn done(result: Result<(), axum::Error>) -> Write {
    match result {
        Ok(()) => Write::Done,
        Err(_) => Write::Failed,
    }
}

/// Polls `fut` once, without waiting.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    shared: &Shared,
    first: Utf8Bytes,
) -> Result<(), axum::Error> {
    // Out of the queue is out of its count: tungstenite's buffer is bounded
    // by its own write buffer size and this batch.
    let mut bytes = first.len();
    let mut frames = 1;
    shared.queued.sub(first.len());
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_FRAMES_PER_FLUSH {
        match rx.try_recv() {
            Ok(frame) => {
                bytes += frame.len();
                frames += 1;
                shared.queued.sub(frame.len());
                sink.feed(Message::Text(frame)).await?;
            }
            Err(_) => break,
        }
    }
    // Once per batch: the counters are shared by every session's writer.
    shared.metrics.frames_out.inc_by(frames);
    shared.metrics.bytes_out.inc_by(bytes as u64);
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's sending side with no socket: the test plays the writer.
    fn client(frames: usize, bytes: usize) -> (ToClient, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(frames);
        let shared = Arc::new(Shared {
            ending: Ending::default(),
            queued: QueuedBytes::new(bytes),
            metrics: Arc::new(GatewayMetrics::new(
                &prometheus::Registry::new(),
                std::iter::empty(),
            )),
        });
        (ToClient { tx, shared }, rx)
    }

    /// What the writer does with a frame it takes.
    fn take(client: &ToClient, rx: &mut mpsc::Receiver<Utf8Bytes>) -> Utf8Bytes {
        let frame = rx.try_recv().expect("a queued frame");
        client.shared.queued.sub(frame.len());
        frame
    }

    fn close_frame(client: &ToClient) -> CloseFrame {
        assert!(client.shared.ending.token.is_cancelled(), "session ended");
        client.shared.ending.take_frame().expect("a close frame")
    }

    #[test]
    fn queued_bytes_are_counted_in_and_out() {
        let (client, mut rx) = client(100, 1000);
        assert!(client.push("a".repeat(300)));
        assert!(client.push("b".repeat(300)));
        assert_eq!(client.shared.queued.get(), 600);
        take(&client, &mut rx);
        assert_eq!(client.shared.queued.get(), 300);
        // 300 + 700 is the bound exactly: still in.
        assert!(client.push("c".repeat(700)));
        assert_eq!(client.shared.queued.get(), 1000);
        take(&client, &mut rx);
        take(&client, &mut rx);
        assert_eq!(client.shared.queued.get(), 0);
        assert!(!client.shared.ending.token.is_cancelled());
    }

    #[test]
    fn the_byte_bound_closes_before_the_frame_bound() {
        let (client, _rx) = client(100, 1000);
        for _ in 0..3 {
            assert!(client.push("x".repeat(300)));
        }
        // Four frames of a hundred, but 1200 bytes of a thousand.
        assert!(!client.push("x".repeat(300)));
        let frame = close_frame(&client);
        assert_eq!(frame.code, close_code::POLICY);
        assert!(
            frame.reason.as_str().contains("over 1000 bytes"),
            "{}",
            frame.reason
        );
        // The refused frame is not counted; nothing more goes in.
        assert_eq!(client.shared.queued.get(), 900);
    }

    #[test]
    fn the_frame_bound_still_holds_for_small_frames() {
        let (client, _rx) = client(2, 1000);
        assert!(client.push("x"));
        assert!(client.push("x"));
        assert!(!client.push("x"));
        let frame = close_frame(&client);
        assert_eq!(frame.code, close_code::POLICY);
        assert!(
            frame.reason.as_str().contains("2 frames"),
            "{}",
            frame.reason
        );
        assert_eq!(client.shared.queued.get(), 2);
    }

    #[test]
    fn one_frame_larger_than_the_bound_goes_to_an_empty_queue() {
        let (client, mut rx) = client(100, 1000);
        assert!(client.push("x".repeat(5000)));
        take(&client, &mut rx);
        assert!(client.push("x".repeat(5000)));
        assert!(!client.push("y"), "not behind it");
    }

    #[tokio::test]
    async fn answers_count_but_never_close() {
        let (client, mut rx) = client(100, 1000);
        assert!(client.send("x".repeat(5000)).await);
        assert!(client.send("x".repeat(5000)).await);
        assert_eq!(client.shared.queued.get(), 10_000);
        assert!(!client.shared.ending.token.is_cancelled());
        assert!(!client.push("y"), "pushes see the answers' bytes");
        take(&client, &mut rx);
        take(&client, &mut rx);
        assert_eq!(client.shared.queued.get(), 0);
        drop(rx);
        assert!(!client.send("z").await);
        assert_eq!(
            client.shared.queued.get(),
            0,
            "a frame not queued is not counted"
        );
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        assert!(long.starts_with(cut));
    }
}
