//! The bus between chat servers (`--bus nats://...`): what one server
//! commits or sees, the others hear, so members of a room on different
//! servers chat as if on one.
//!
//! NATS core (no JetStream) carries it, at most once: it is a doorbell, the
//! database is the truth. Each message says who sent it (a random server
//! id chosen at start); the connection is `no_echo`, so a server never hears
//! itself.
//!
//! Subjects, under `--bus-subject-prefix` (`P`):
//! - `P.room.<hex of the room id>`: the room's committed messages, edits and
//!   deletions, typing, and each server's users in the room ([`RoomUsers`],
//!   sent whenever that set changes and to a server seen for the first
//!   time). A server subscribes to the rooms its own streams are in.
//! - `P.cluster.servers`: heartbeats, one a second, and a goodbye at a
//!   graceful stop; a server not heard for [`PEER_TIMEOUT`] is gone, and
//!   its users with it.
//! - `P.cluster.users`: renames, for every server's streams in rooms where
//!   the user is present.
//! - `P.cluster.online`: "which of these users are online on you?", asked
//!   by `GetUser` and answered by each live server.
//! - `P.cluster.rooms`: "who of yours is in this room?", asked by a server
//!   joining a room and answered by each live server (empty if none), so
//!   the asker knows when it has every answer.
//!
//! What the bus loses, the hub recovers (`hub.rs`): a seq gap is filled from
//! the store, and once a second the rooms' newest seqs and revisions are
//! read from the store, so a message whose bus copy was lost (or a server
//! cut off from NATS) is delivered within about a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntGauge, Registry};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use crate::metrics::register;
use crate::proto::chat::ChatStream;
use crate::storage::{ChangesQuery, HistoryQuery, Store, StoredMessage};

/// How often each server says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A server not heard from for this long is taken for dead: its users go
/// offline everywhere else.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the rooms' newest seqs and revisions are read from the store,
/// to find what the bus lost.
pub const TOP_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a gap in a room's seqs may wait for its message to come by the
/// bus (out of order) before it is read from the store.
pub const GAP_WAIT: Duration = Duration::from_millis(100);
/// How long the store may fail to give a room's missing messages before its
/// members here are ended (`RESOURCE_EXHAUSTED`: resume by `after_seq`).
pub const GAP_GIVE_UP: Duration = Duration::from_secs(10);
/// How long a join waits for its room's position in the store (a new room
/// on this server) before it is answered anyway.
pub const ROOM_START_WAIT: Duration = Duration::from_secs(5);
/// Most events a room may hold back behind a gap; past it, its members
/// here are ended in the same way.
pub const MAX_HELD: usize = 10_000;
/// Publications queued towards NATS; past it they are dropped (counted):
/// the receivers find what is missing in the store.
const PUBLISH_QUEUE: usize = 65_536;
/// How long a question to the other servers (who is online, who is in a
/// room) waits for their answers.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a room's subscription may take to reach NATS before the room
/// starts without it.
const FLUSH_WAIT: Duration = Duration::from_secs(1);
/// Messages read from the store per page when filling a gap.
const FILL_PAGE: usize = 500;
/// Rooms per query when reading the rooms' newest seqs.
const TOP_CHECK_CHUNK: usize = 500;

/// `--bus` and `--bus-subject-prefix`.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `nats://HOST:PORT` (several, comma-separated, for a NATS cluster).
    pub url: String,
    /// Subjects start with this; servers that chat together share it.
    pub subject_prefix: String,
}

/// The default `--bus-subject-prefix`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "wsgate";

/// Checks a subject prefix: NATS tokens separated by dots, without
/// whitespace or wildcards.
pub fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    let bad_token = prefix.split('.').any(|token| {
        token.is_empty()
            || token
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
    });
    if bad_token {
        Err(format!(
            "{prefix:?} is not a NATS subject prefix: dot-separated, non-empty tokens without \
             spaces, `*` or `>`"
        ))
    } else {
        Ok(())
    }
}

/// One bus message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The server that sent it.
    #[prost(uint64, tag = "1")]
    pub server: u64,
    // Tag 4 was a one-room form of `RoomsQuery`; not to be used again.
    #[prost(oneof = "Body", tags = "2, 3, 5, 6, 7, 8, 9, 10")]
    pub body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    /// A stream event for the room's members: a committed message, an edit
    /// or deletion, typing; on `cluster.users`, a rename.
    #[prost(message, tag = "2")]
    Event(ChatStream),
    /// The sender's users in a room, all of them.
    #[prost(message, tag = "3")]
    RoomUsers(RoomUsers),
    /// "I am alive."
    #[prost(bool, tag = "5")]
    Heartbeat(bool),
    /// "I am stopping": the sender's users are gone at once.
    #[prost(bool, tag = "6")]
    Bye(bool),
    /// "Which of these are online on you?"
    #[prost(message, tag = "7")]
    OnlineQuery(Users),
    /// The asked users that are online on the answering server.
    #[prost(message, tag = "8")]
    OnlineAnswer(Users),
    /// "Who of yours is in these rooms?" (a room just joined here, a page
    /// of the directory): every live server answers with a `RoomsAnswer`.
    #[prost(message, tag = "9")]
    RoomsQuery(Rooms),
    /// The answering server's users in each asked room that has some.
    #[prost(message, tag = "10")]
    RoomsAnswer(RoomsUsers),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rooms {
    #[prost(string, repeated, tag = "1")]
    pub room_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomsUsers {
    #[prost(message, repeated, tag = "1")]
    pub rooms: Vec<RoomUsers>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomUsers {
    #[prost(string, tag = "1")]
    pub room_id: String,
    #[prost(string, repeated, tag = "2")]
    pub users: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Users {
    #[prost(string, repeated, tag = "1")]
    pub users: Vec<String>,
}

/// Which numbered events of a room: its messages (by seq) or its edits and
/// deletions (by revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Messages,
    Changes,
}

/// What the bus counts.
struct BusMetrics {
    published: IntCounter,
    dropped: IntCounter,
    received: IntCounter,
    filled: IntCounter,
    peers: IntGauge,
}

impl BusMetrics {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            register(registry, IntCounter::new(name, help).expect("valid metric"))
        };
        BusMetrics {
            published: counter(
                "wsgate_bus_published_total",
                "Messages published on the bus",
            ),
            dropped: counter(
                "wsgate_bus_publish_dropped_total",
                "Publications dropped: the queue towards NATS was full or NATS refused them \
                 (the other servers find the messages in the store)",
            ),
            received: counter(
                "wsgate_bus_received_total",
                "Messages received from the bus",
            ),
            filled: counter(
                "wsgate_bus_gap_filled_total",
                "Messages and changes the bus did not bring in time, read from the store",
            ),
            peers: register(
                registry,
                IntGauge::new("wsgate_bus_peers", "Other servers heard on the bus")
                    .expect("valid metric"),
            ),
        }
    }
}

/// This server's end of the bus.
pub struct Bus {
    client: async_nats::Client,
    prefix: String,
    server: u64,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    outgoing: mpsc::Sender<(String, Bytes)>,
    /// The other end of `outgoing`, until [`Bus::start`] takes it.
    queue: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    /// Other servers, by id: when each was last heard.
    peers: Mutex<HashMap<u64, Instant>>,
    metrics: BusMetrics,
}

impl Bus {
    /// Connects to NATS; fails if it cannot be reached now. Later outages
    /// are ridden out: the client reconnects, and subscriptions with it.
    pub async fn connect(
        config: &BusConfig,
        store: Arc<dyn Store>,
        registry: &Registry,
    ) -> anyhow::Result<Arc<Bus>> {
        check_subject_prefix(&config.subject_prefix).map_err(anyhow::Error::msg)?;
        let server = fastrand::u64(1..);
        let client = async_nats::ConnectOptions::new()
            .name(format!("wsgate server {server:016x}"))
            .no_echo()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("bus connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("bus disconnected; reconnecting (the store fills the gaps)")
                    }
                    // Repeated while NATS is away (each reconnect attempt):
                    // the disconnection was logged once already.
                    async_nats::Event::ClientError(e) => tracing::debug!(error = %e, "bus"),
                    other => tracing::warn!(event = %other, "bus"),
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the bus at {}: {e}", shown(&config.url)))?;
        let (outgoing, queue) = mpsc::channel(PUBLISH_QUEUE);
        let bus = Arc::new(Bus {
            client,
            prefix: config.subject_prefix.clone(),
            server,
            store,
            runtime: tokio::runtime::Handle::current(),
            outgoing,
            queue: Mutex::new(Some(queue)),
            peers: Mutex::new(HashMap::new()),
            metrics: BusMetrics::new(registry),
        });
        tracing::info!(server = %format!("{server:016x}"), prefix = %bus.prefix, "bus joined");
        Ok(bus)
    }

    /// Starts listening to the cluster subjects, the heartbeat and the
    /// store check, until `stop`; then says goodbye.
    pub async fn start(self: &Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(queue) = queue {
            tokio::spawn(self.clone().publish_queued(queue, stop.clone()));
        }
        let subject = format!("{}.cluster.*", self.prefix);
        let subscriber = match self.client.subscribe(subject).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                // Only a closed client fails here; the store check still
                // delivers every message, a second late.
                tracing::error!(error = %e, "bus: cannot subscribe to the cluster subjects");
                return;
            }
        };
        tokio::spawn(
            self.clone()
                .listen_cluster(hub.clone(), subscriber, stop.clone()),
        );
        tokio::spawn(self.clone().heartbeat(hub.clone(), stop.clone()));
        tokio::spawn(self.clone().check_tops(hub, stop));
    }

    pub fn server(&self) -> u64 {
        self.server
    }

    fn room_subject(&self, room_id: &str) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 6 + 2 * room_id.len());
        subject.push_str(&self.prefix);
        subject.push_str(".room.");
        for byte in room_id.bytes() {
            subject.push(char::from(HEX[usize::from(byte >> 4)]));
            subject.push(char::from(HEX[usize::from(byte & 15)]));
        }
        subject
    }

    fn cluster_subject(&self, what: &str) -> String {
        format!("{}.cluster.{what}", self.prefix)
    }

    fn envelope(&self, body: Body) -> Bytes {
        Envelope {
            server: self.server,
            body: Some(body),
        }
        .encode_to_vec()
        .into()
    }

    /// Queues a publication without waiting (also from the writer thread).
    fn publish(&self, subject: String, body: Body) {
        if self
            .outgoing
            .try_send((subject, self.envelope(body)))
            .is_err()
        {
            self.metrics.dropped.inc();
        }
    }

    /// Publishes a stream event for a room's members elsewhere.
    pub fn publish_room_event(&self, room_id: &str, event: ChatStream) {
        self.publish(self.room_subject(room_id), Body::Event(event));
    }

    /// Publishes this server's users in a room.
    pub fn publish_room_users(&self, room_id: &str, users: Vec<String>) {
        let body = Body::RoomUsers(RoomUsers {
            room_id: room_id.to_owned(),
            users,
        });
        self.publish(self.room_subject(room_id), body);
    }

    /// Publishes a rename for every server.
    pub fn publish_rename(&self, event: ChatStream) {
        self.publish(self.cluster_subject("users"), Body::Event(event));
    }

    async fn publish_queued(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<(String, Bytes)>,
        stop: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = queue.recv() => next,
            };
            let Some((subject, payload)) = next else {
                return;
            };
            match self.client.publish(subject, payload).await {
                Ok(()) => {
                    self.metrics.published.inc();
                    if failing {
                        failing = false;
                        tracing::info!("bus: publishing again");
                    }
                }
                Err(e) => {
                    self.metrics.dropped.inc();
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "bus: cannot publish (the store fills the gaps)");
                    }
                }
            }
        }
    }

    /// Subscribes to a room for as long as `subscription` is not cancelled:
    /// asks the others who of theirs is in it, reads where the room stands
    /// in the store, starts the hub's order for it, then passes on what the
    /// room's subject carries.
    pub fn open_room(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        room_id: String,
        generation: u64,
        subscription: CancellationToken,
    ) {
        let bus = self.clone();
        self.runtime.spawn(async move {
            let subject = bus.room_subject(&room_id);
            let mut subscriber = loop {
                match bus.client.subscribe(subject.clone()).await {
                    Ok(subscriber) => break subscriber,
                    Err(e) => {
                        tracing::warn!(error = %e, room = %room_id, "bus: cannot subscribe; retrying");
                        if !retry_pause(&subscription).await {
                            return;
                        }
                    }
                }
            };
            // Once flushed, NATS has the subscription: whatever is committed
            // after the store read below reaches this server. With NATS
            // away the flush would wait for it; the room starts anyway, and
            // the store check delivers what the bus cannot.
            let _ = tokio::time::timeout(FLUSH_WAIT, bus.client.flush()).await;
            bus.ask_room_users(&hub, &room_id).await;
            bus.start_room(&hub, &room_id, generation, &subscription)
                .await;
            loop {
                let message = tokio::select! {
                    _ = subscription.cancelled() => return,
                    message = subscriber.next() => message,
                };
                let Some(message) = message else { return };
                bus.metrics.received.inc();
                match Envelope::decode(message.payload) {
                    Ok(envelope) => bus.heard(&hub, envelope, generation),
                    Err(e) => tracing::warn!(error = %e, "bus: undecodable message dropped"),
                }
            }
        });
    }

    /// Reads the room's newest seq and revision and starts its order there,
    /// retrying while the store fails.
    async fn start_room(
        &self,
        hub: &Arc<Hub>,
        room_id: &str,
        generation: u64,
        subscription: &CancellationToken,
    ) {
        loop {
            match self.tops(vec![room_id.to_owned()]).await {
                Ok(tops) => {
                    let (seq, revision) = tops.first().copied().unwrap_or((0, 0));
                    hub.start_room(room_id, generation, seq, revision);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, room = %room_id, "bus: room position unknown; retrying");
                    if !retry_pause(subscription).await {
                        return;
                    }
                }
            }
        }
    }

    /// Starts again from the store (after the room's members here fell
    /// behind and were ended).
    pub fn restart_room(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        room_id: String,
        generation: u64,
        dropped: CancellationToken,
    ) {
        let bus = self.clone();
        self.runtime.spawn(async move {
            bus.start_room(&hub, &room_id, generation, &dropped).await;
        });
    }

    async fn tops(
        &self,
        rooms: Vec<String>,
    ) -> Result<Vec<(u64, u64)>, crate::storage::StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.room_tops(&rooms))
            .await
            .unwrap_or_else(|e| Err(crate::storage::StoreError::Internal(e.to_string())))
    }

    /// What one message on a room's subject does.
    fn heard(&self, hub: &Arc<Hub>, envelope: Envelope, generation: u64) {
        let server = envelope.server;
        if server == self.server {
            return;
        }
        self.alive(hub, server);
        match envelope.body {
            Some(Body::Event(event)) => hub.remote_event(event, generation),
            Some(Body::RoomUsers(users)) => hub.remote_users(&users.room_id, server, users.users),
            _ => {}
        }
    }

    /// Asks every live server who of theirs is in a room this server just
    /// joined, and waits (briefly) for the answers: the first join's
    /// snapshot is then the union over servers.
    async fn ask_room_users(&self, hub: &Hub, room_id: &str) {
        for (server, users) in self.room_users_elsewhere(vec![room_id.to_owned()]).await {
            hub.remote_users(room_id, server, users.users);
        }
    }

    /// Each live server's users in `rooms` (it answers only for rooms it
    /// has users in, so a room no server lists has nobody elsewhere).
    pub async fn room_users_elsewhere(&self, rooms: Vec<String>) -> Vec<(u64, RoomUsers)> {
        let query = Body::RoomsQuery(Rooms { room_ids: rooms });
        let mut found = Vec::new();
        for answer in self.ask(self.cluster_subject("rooms"), query).await {
            if let Some(Body::RoomsAnswer(answer_rooms)) = answer.body {
                found.extend(answer_rooms.rooms.into_iter().map(|r| (answer.server, r)));
            }
        }
        found
    }

    /// Publishes a question and collects one answer per live server, or
    /// what came within [`QUERY_TIMEOUT`] (a server that died since its
    /// last heartbeat never answers).
    async fn ask(&self, subject: String, question: Body) -> Vec<Envelope> {
        let expected = self.live_peers();
        if expected == 0 {
            return Vec::new();
        }
        let inbox = self.client.new_inbox();
        let Ok(mut answers) = self.client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        let question = self.envelope(question);
        if self
            .client
            .publish_with_reply(subject, inbox, question)
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut got = Vec::with_capacity(expected);
        let collect = async {
            while got.len() < expected {
                let Some(message) = answers.next().await else {
                    break;
                };
                if let Ok(envelope) = Envelope::decode(message.payload) {
                    got.push(envelope);
                }
            }
        };
        let _ = tokio::time::timeout(QUERY_TIMEOUT, collect).await;
        got
    }

    /// Notes that `server` is alive; a server not known yet (new, or back
    /// after being taken for dead) is told who of ours is where.
    fn alive(&self, hub: &Hub, server: u64) {
        let new = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let new = peers.insert(server, Instant::now()).is_none();
            self.metrics.peers.set(peers.len() as i64);
            new
        };
        if new {
            tracing::info!(peer = %format!("{server:016x}"), "bus: server joined");
            // A server that just started learns of this one now, not at
            // its next heartbeat.
            self.publish(self.cluster_subject("servers"), Body::Heartbeat(true));
            for (room_id, users) in hub.all_local_users() {
                self.publish_room_users(&room_id, users);
            }
        }
    }

    fn forget_peer(&self, hub: &Hub, server: u64, why: &str) {
        let known = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let known = peers.remove(&server).is_some();
            self.metrics.peers.set(peers.len() as i64);
            known
        };
        if known {
            tracing::info!(peer = %format!("{server:016x}"), why, "bus: server gone");
            hub.peer_gone(server);
        }
    }

    fn live_peers(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn listen_cluster(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut subscriber: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = subscriber.next() => message,
            };
            let Some(message) = message else { return };
            self.metrics.received.inc();
            let envelope = match Envelope::decode(message.payload) {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!(error = %e, "bus: undecodable message dropped");
                    continue;
                }
            };
            let server = envelope.server;
            if server == self.server {
                continue;
            }
            match envelope.body {
                Some(Body::Bye(_)) => {
                    self.forget_peer(&hub, server, "said goodbye");
                    continue;
                }
                Some(Body::Event(event)) => {
                    self.alive(&hub, server);
                    hub.remote_rename(event);
                }
                Some(Body::OnlineQuery(query)) => {
                    self.alive(&hub, server);
                    let online = hub.locally_online(query.users);
                    self.answer(message.reply, Body::OnlineAnswer(Users { users: online }))
                        .await;
                }
                Some(Body::RoomsQuery(query)) => {
                    self.alive(&hub, server);
                    // Answered also when empty: the asker counts the answers.
                    let rooms = query
                        .room_ids
                        .into_iter()
                        .filter_map(|room_id| {
                            let users = hub.local_users(&room_id)?;
                            Some(RoomUsers { room_id, users })
                        })
                        .collect();
                    self.answer(message.reply, Body::RoomsAnswer(RoomsUsers { rooms }))
                        .await;
                }
                _ => self.alive(&hub, server),
            }
        }
    }

    async fn answer(&self, reply: Option<async_nats::Subject>, body: Body) {
        let Some(reply) = reply else { return };
        if let Err(e) = self.client.publish(reply, self.envelope(body)).await {
            tracing::debug!(error = %e, "bus: answer not sent");
        }
    }

    async fn heartbeat(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let subject = self.cluster_subject("servers");
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            self.publish(subject.clone(), Body::Heartbeat(true));
            let silent: Vec<u64> = {
                let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers
                    .iter()
                    .filter(|(_, seen)| seen.elapsed() > PEER_TIMEOUT)
                    .map(|(server, _)| *server)
                    .collect()
            };
            for server in silent {
                self.forget_peer(&hub, server, "silent");
            }
        }
    }

    /// Tells the other servers this one is stopping, so its users are gone
    /// for them at once; waits (at most a second) until NATS has it. Called
    /// last, once every stream here has ended.
    pub async fn goodbye(&self) {
        // Straight to NATS, not behind a full queue; the process is going.
        let bye = self.envelope(Body::Bye(true));
        let subject = self.cluster_subject("servers");
        if self.client.publish(subject, bye).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        }
    }

    /// Users among `users` online on any other live server.
    pub async fn online_elsewhere(&self, users: Vec<String>) -> Vec<String> {
        if users.is_empty() {
            return Vec::new();
        }
        let query = Body::OnlineQuery(Users { users });
        let mut online: Vec<String> = self
            .ask(self.cluster_subject("online"), query)
            .await
            .into_iter()
            .filter_map(|answer| match answer.body {
                Some(Body::OnlineAnswer(answer)) => Some(answer.users),
                _ => None,
            })
            .flatten()
            .collect();
        online.sort_unstable();
        online.dedup();
        online
    }

    /// Once a second: the rooms this server is in whose store is ahead of
    /// what was delivered here get what they miss.
    async fn check_tops(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(TOP_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let rooms = hub.started_rooms();
            for chunk in rooms.chunks(TOP_CHECK_CHUNK) {
                let names: Vec<String> = chunk.iter().map(|(room, ..)| room.clone()).collect();
                let tops = match self.tops(names).await {
                    Ok(tops) => tops,
                    Err(e) => {
                        tracing::debug!(error = %e, "bus: store check failed");
                        break;
                    }
                };
                for ((room_id, generation), (seq, revision)) in chunk.iter().zip(tops) {
                    hub.store_is_at(room_id, *generation, seq, revision);
                }
            }
        }
    }

    /// Fills what a room misses, up to `until`, from the store, after
    /// `wait` (time for a late bus message to close the gap itself).
    pub fn fill(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        room_id: String,
        generation: u64,
        kind: Kind,
        until: u64,
        wait: Duration,
    ) {
        let bus = self.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let mut failing_since = None;
            while let Some(next) = hub.next_needed(&room_id, generation, kind, until) {
                let limit = usize::try_from(until - next + 1)
                    .unwrap_or(FILL_PAGE)
                    .min(FILL_PAGE);
                match bus.read_after(&room_id, kind, next - 1, limit).await {
                    Ok(messages) if messages.is_empty() => break,
                    Ok(messages) => {
                        failing_since = None;
                        bus.metrics.filled.inc_by(messages.len() as u64);
                        hub.filled(&room_id, generation, kind, messages);
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > GAP_GIVE_UP {
                            tracing::error!(error = %e, room = %room_id,
                                "bus: missing messages cannot be read; ending the room's streams here");
                            hub.cannot_catch_up(&room_id, generation);
                            break;
                        }
                        tokio::time::sleep(GAP_WAIT).await;
                    }
                }
            }
            hub.fill_done(&room_id, generation, kind);
        });
    }

    async fn read_after(
        &self,
        room_id: &str,
        kind: Kind,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, crate::storage::StoreError> {
        let store = self.store.clone();
        let room_id = room_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let page = match kind {
                Kind::Messages => store.history(&HistoryQuery {
                    room_id,
                    limit,
                    before_seq: 0,
                    after_seq: Some(after),
                })?,
                Kind::Changes => store.changes(&ChangesQuery {
                    room_id,
                    limit,
                    after_revision: after,
                })?,
            };
            Ok(page.messages)
        })
        .await
        .unwrap_or_else(|e| Err(crate::storage::StoreError::Internal(e.to_string())))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Waits a second before a retry; false if `room` was dropped meanwhile.
async fn retry_pause(room: &CancellationToken) -> bool {
    tokio::select! {
        _ = room.cancelled() => false,
        _ = tokio::time::sleep(Duration::from_secs(1)) => true,
    }
}

/// A bus URL as it may be logged: without a user and password.
fn shown(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &url[..scheme + 3], &url[at + 1..])
            }
            (None, Some(at)) => url[at + 1..].to_owned(),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_prefixes_are_checked() {
        assert!(check_subject_prefix("wsgate").is_ok());
        assert!(check_subject_prefix("prod.chat").is_ok());
        for bad in ["", "a..b", "a b", "a.*", "x.>", ".a", "a."] {
            assert!(check_subject_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            shown("nats://ada:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert_eq!(shown("tok@host:4222"), "host:4222");
    }

    #[test]
    fn an_envelope_survives_the_wire() {
        let envelope = Envelope {
            server: 7,
            body: Some(Body::RoomUsers(RoomUsers {
                room_id: "r".into(),
                users: vec!["ada".into()],
            })),
        };
        let bytes = envelope.encode_to_vec();
        assert_eq!(Envelope::decode(bytes.as_slice()).ok(), Some(envelope));
        assert!(Envelope::decode(&b"\xff\xff"[..]).is_err());
    }
}
