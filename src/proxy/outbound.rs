//! The browser-bound half of a WebSocket session: a bounded queue of text
//! frames, drained by one writer task, and the way a session ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// Close codes the gateway uses (RFC 6455 section 7.4.1).
pub mod close_code {
    pub use axum::extract::ws::close_code::{AWAY, INVALID, POLICY, PROTOCOL, SIZE};
}

/// How long the writer may take to send a final close frame to a peer that
/// may no longer be reading.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Frames written before one flush: batching small frames into one write
/// saves syscalls under load, the cap keeps one flush from waiting too long.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// Why and how a session ends; the first reason given wins.
#[derive(Default)]
struct Ending {
    token: CancellationToken,
    frame: Mutex<Option<CloseFrame>>,
}

/// Sends text frames to the browser. Cheap to clone: the session's reader,
/// its unary calls and its upstream stream each hold one.
#[derive(Clone)]
pub struct ToClient {
    tx: mpsc::Sender<Utf8Bytes>,
    ending: Arc<Ending>,
}

impl ToClient {
    /// Queues a frame, waiting while the queue is full. False once the
    /// session is over.
    pub async fn send(&self, frame: impl Into<Utf8Bytes>) -> bool {
        self.tx.send(frame.into()).await.is_ok()
    }

    /// Queues a frame without waiting. Used for frames pushed by the server:
    /// a browser that cannot keep up with them is closed (1008), because
    /// waiting would hold up the upstream connection it shares with others.
    /// False once the session is over.
    pub fn push(&self, frame: impl Into<Utf8Bytes>) -> bool {
        match self.tx.try_send(frame.into()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.close(
                    close_code::POLICY,
                    "too slow: the client did not read its messages fast enough",
                );
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the session with this close code, unless it is already ending.
    pub fn close(&self, code: u16, reason: &str) {
        let mut frame = self.ending.frame.lock().unwrap_or_else(|e| e.into_inner());
        if !self.ending.token.is_cancelled() {
            *frame = Some(CloseFrame {
                code,
                reason: close_reason(reason).into(),
            });
            self.ending.token.cancel();
        }
    }

    /// Ends the session without a close code of our own (the peer closed,
    /// or vanished).
    pub fn finish(&self) {
        self.ending.token.cancel();
    }

    /// Resolves when the session is ending.
    pub async fn closed(&self) {
        self.ending.token.cancelled().await
    }
}

/// The longest close reason: a control frame carries at most 125 bytes,
/// two of them the code.
const MAX_CLOSE_REASON: usize = 123;

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
    queue: usize,
    ping_interval: Duration,
) -> (ToClient, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    let ending = Arc::new(Ending::default());
    let task = tokio::spawn(write_loop(sink, rx, ending.clone(), ping_interval));
    (ToClient { tx, ending }, task)
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Utf8Bytes>,
    ending: Arc<Ending>,
    ping_interval: Duration,
) {
    let start = tokio::time::Instant::now() + ping_interval;
    let mut ping = tokio::time::interval_at(start, ping_interval);
    loop {
        let sent = tokio::select! {
            biased;
            _ = ending.token.cancelled() => break,
            frame = rx.recv() => match frame {
                Some(frame) => write_batch(&mut sink, &mut rx, frame).await,
                None => break,
            },
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if sent.is_err() {
            // The peer is gone; nothing more can be written.
            ending.token.cancel();
            return;
        }
    }
    let frame = ending
        .frame
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(frame))).await;
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_FRAMES_PER_FLUSH {
        match rx.try_recv() {
            Ok(frame) => sink.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}
