//! `bare-broadcast`: the ceiling baseline of the wsgate benchmarks.
//!
//! A bare WebSocket room broadcast server that speaks the JSON contract of
//! `bench/README.md`, with no gRPC hop, no storage, no sequence numbers and
//! no presence: the best a gateway in front of a chat service could
//! approach. It still does what any honest server must: it parses every
//! frame, routes by room, and bounds what it queues for each client
//! (a client whose queue is full is closed with 1008, as wsgate does).
//!
//! A published frame is sent verbatim: every member's queue gets a clone of
//! the same reference-counted buffer the frame was read into, no copy.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, accept_async_with_config};

/// Largest frame a client may send; a larger one closes it with 1009.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Read buffer per connection, allocated at the handshake. Small, because
/// resident memory per idle connection is one of the things we measure.
const READ_BUFFER_SIZE: usize = 4 * 1024;
/// Bytes queued in a connection's write buffer before it is written to the
/// socket even without a flush.
const WRITE_BUFFER_SIZE: usize = 4 * 1024;
/// Frames written before one flush, so that one flush cannot wait too long.
const MAX_FRAMES_PER_FLUSH: usize = 256;
/// How long an opening handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sending our close frame may take to a peer that may not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Lock shards of the room table; a room lives in one shard.
const SHARDS: usize = 64;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Frames queued towards one client before it counts as too slow and is
    /// closed with 1008. At least 1.
    pub queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { queue: 1024 }
    }
}

/// Accepts WebSocket connections on `listener` and serves them, until the
/// returned future is dropped.
pub async fn run(listener: TcpListener, config: Config) {
    let shared = Arc::new(Shared {
        rooms: Rooms::new(),
        queue: config.queue.max(1),
    });
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(serve(tcp, shared.clone()));
            }
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning.
                eprintln!("bare-broadcast: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

struct Shared {
    rooms: Rooms,
    queue: usize,
}

/// One connection, as the rooms it joined see it.
struct Peer {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Raised by a publisher that found the queue full.
    too_slow: Notify,
}

impl Peer {
    /// Queues a frame for this client, or marks it too slow.
    fn push(&self, frame: Utf8Bytes) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.too_slow.notify_one();
        }
    }
}

/// The members of a room. Copy on write: a publisher clones the `Arc` and
/// sends outside the lock; a join or leave mutates in place unless a
/// publisher holds the old list at that moment.
type Members = Arc<Vec<Arc<Peer>>>;

/// One lock's worth of rooms, by room id.
type Shard = HashMap<Box<str>, Members>;

struct Rooms {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Rooms {
    fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, room: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(room) as usize % self.shards.len();
        // Nothing panics while holding the lock; a poisoned map is intact.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, room: &str, peer: &Arc<Peer>) {
        let mut shard = self.shard(room);
        match shard.get_mut(room) {
            Some(members) => Arc::make_mut(members).push(peer.clone()),
            None => {
                shard.insert(room.into(), Arc::new(vec![peer.clone()]));
            }
        }
    }

    fn leave(&self, room: &str, peer: &Arc<Peer>) {
        let mut shard = self.shard(room);
        let Some(members) = shard.get_mut(room) else {
            return;
        };
        let members = Arc::make_mut(members);
        if let Some(i) = members.iter().position(|p| Arc::ptr_eq(p, peer)) {
            members.swap_remove(i);
        }
        if members.is_empty() {
            shard.remove(room);
        }
    }

    /// Queues `frame` for every member of `room`.
    fn publish(&self, room: &str, frame: &Utf8Bytes) {
        let Some(members) = self.shard(room).get(room).cloned() else {
            return;
        };
        for peer in members.iter() {
            peer.push(frame.clone());
        }
    }
}

/// The frames we act on; only the room matters to a broadcast. Any other
/// field is skipped (but still checked to be valid JSON).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame<'a> {
    JoinRoom(#[serde(borrow)] RoomRef<'a>),
    LeaveRoom(#[serde(borrow)] RoomRef<'a>),
    ChatMessage(#[serde(borrow)] RoomRef<'a>),
}

#[derive(Deserialize)]
struct RoomRef<'a> {
    /// Borrowed from the frame unless it contains escapes.
    #[serde(borrow)]
    room_id: Cow<'a, str>,
}

/// How a connection ended.
enum End {
    /// The peer sent a close frame or closed the socket.
    PeerClosed,
    /// Its queue overflowed: closed with 1008.
    TooSlow,
    /// It sent a frame larger than [`MAX_MESSAGE_SIZE`]: closed with 1009.
    TooBig,
    /// The socket failed; nothing more can be sent.
    Failed,
}

type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

/// Serves one connection: its reader and its writer run concurrently in this
/// one task, and the first to finish ends both.
async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    // Frames are small and latency matters.
    let _ = tcp.set_nodelay(true);
    // Boxed: the handshake's state is large and only needed for a moment,
    // the task's own state lives as long as the connection.
    let handshake = Box::pin(accept_async_with_config(tcp, Some(ws_config())));
    let Ok(Ok(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel(shared.queue);
    let peer = Arc::new(Peer {
        tx,
        too_slow: Notify::new(),
    });
    let mut joined = HashSet::new();

    let end = tokio::select! {
        end = read_loop(&mut stream, &shared.rooms, &peer, &mut joined) => end,
        end = write_loop(&mut sink, &mut rx) => end,
        () = peer.too_slow.notified() => End::TooSlow,
    };
    for room in &joined {
        shared.rooms.leave(room, &peer);
    }
    drop(rx);

    let close = |code, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };
    let goodbye = async {
        match end {
            // Sends the reply to the peer's close frame, which tungstenite
            // has queued.
            End::PeerClosed => sink.flush().await,
            End::TooSlow => {
                let reason = "too slow: the client did not read its messages fast enough";
                sink.send(close(CloseCode::Policy, reason)).await
            }
            End::TooBig => {
                let reason = "frame larger than 64 KiB";
                sink.send(close(CloseCode::Size, reason)).await
            }
            End::Failed => Ok(()),
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

async fn read_loop(
    stream: &mut SplitStream<Ws>,
    rooms: &Rooms,
    peer: &Arc<Peer>,
    joined: &mut HashSet<Box<str>>,
) -> End {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => handle(text, rooms, peer, joined),
            Ok(Message::Binary(_)) => peer.push(Utf8Bytes::from_static(
                r#"{"error":{"message":"binary frames are not supported; send JSON in text frames"}}"#,
            )),
            Ok(Message::Close(_)) => return End::PeerClosed,
            // tungstenite answers pings itself.
            Ok(_) => {}
            Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => return End::TooBig,
            Err(_) => return End::Failed,
        }
    }
    End::PeerClosed
}

/// Acts on one text frame from the client.
fn handle(text: Utf8Bytes, rooms: &Rooms, peer: &Arc<Peer>, joined: &mut HashSet<Box<str>>) {
    match serde_json::from_str::<Frame>(text.as_str()) {
        Ok(Frame::JoinRoom(r)) => {
            if !joined.contains(&*r.room_id) {
                rooms.join(&r.room_id, peer);
                joined.insert(r.room_id.into());
            }
        }
        Ok(Frame::LeaveRoom(r)) => {
            if joined.remove(&*r.room_id) {
                rooms.leave(&r.room_id, peer);
            }
        }
        Ok(Frame::ChatMessage(r)) => {
            // The sender implicitly joins, and so gets its own copy.
            if !joined.contains(&*r.room_id) {
                rooms.join(&r.room_id, peer);
                joined.insert(r.room_id.as_ref().into());
            }
            rooms.publish(&r.room_id, &text);
        }
        Err(e) => peer.push(error_frame(&format!("bad frame: {e}"))),
    }
}

fn error_frame(message: &str) -> Utf8Bytes {
    serde_json::json!({ "error": { "message": message } })
        .to_string()
        .into()
}

/// Writes what is queued for the client: everything already waiting goes
/// out in one batch, then one flush.
async fn write_loop(sink: &mut SplitSink<Ws, Message>, rx: &mut mpsc::Receiver<Utf8Bytes>) -> End {
    // Never `None`: the peer's `Arc` holds the sender.
    while let Some(frame) = rx.recv().await {
        if sink.feed(Message::Text(frame)).await.is_err() {
            return End::Failed;
        }
        for _ in 1..MAX_FRAMES_PER_FLUSH {
            let Ok(frame) = rx.try_recv() else { break };
            if sink.feed(Message::Text(frame)).await.is_err() {
                return End::Failed;
            }
        }
        if sink.flush().await.is_err() {
            return End::Failed;
        }
    }
    End::Failed
}
