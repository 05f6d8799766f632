//! Who is in which room, who is online, and the fan-out of stored messages,
//! of edits and deletions, and of renames.
//!
//! The hub is in-memory state shared by every `Chat` stream. It never does
//! I/O while holding its locks: fan-out is a `try_send` per member into that
//! member's bounded outbox, so one slow member can never stall a room. A
//! frame for many members is built once and shared (`Arc`): the fan-out on
//! the writer thread costs a reference count per member, and each stream's
//! own task makes the copy tonic encodes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::bus::{Bus, GAP_WAIT, Kind, MAX_HELD, ROOM_START_WAIT};
use super::errors::ChatError;
use super::room_order::{Offered, Order};
use crate::proto::chat::{self, ChatStream, chat_stream::Event};
use crate::storage::{StoreError, StoredMessage, UserRecord, Written};

/// Where a user write's result goes: the caller waiting for it, if any.
pub type UserReply = oneshot::Sender<Result<UserRecord, StoreError>>;

/// Identifies one `Chat` stream for as long as the process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(u64);

impl StreamId {
    pub fn next() -> StreamId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StreamId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The sending side of one stream's bounded outbound queue.
///
/// A full queue means the client reads slower than its rooms talk. Waiting
/// would stall every room it is in, and dropping frames silently would lose
/// messages without anyone knowing, so the stream is ended instead with
/// `RESOURCE_EXHAUSTED`: the client reconnects and catches up from history.
#[derive(Clone)]
pub struct Outbox {
    stream: StreamId,
    tx: mpsc::Sender<Frame>,
    end: Arc<StreamEnd>,
}

/// A frame queued towards a stream, possibly shared with other members.
pub type Frame = Arc<ChatStream>;

/// How a stream's outbound half ends, when it is the server that ends it:
/// the status its last message carries, and whether what is still queued is
/// dropped first. The first reason given wins.
#[derive(Default)]
pub struct StreamEnd {
    /// Cancelled to end the stream at once, dropping what is queued.
    abort: CancellationToken,
    /// The status to end with; none for a stream the client ended.
    error: Mutex<Option<ChatError>>,
}

impl StreamEnd {
    /// Ends the stream now with `error`; queued frames are dropped.
    pub fn abort(&self, error: ChatError) {
        if self.set(error) {
            self.abort.cancel();
        }
    }

    /// Ends the stream with `error` once every frame already queued for it
    /// (confirmations of its earlier messages) has gone out.
    pub fn finish(&self, error: ChatError) {
        self.set(error);
    }

    fn set(&self, error: ChatError) -> bool {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(error);
        true
    }

    /// Resolves once the stream is aborted.
    pub async fn aborted(&self) {
        self.abort.cancelled().await
    }

    pub fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// The status the stream ends with, if the server ends it.
    pub fn take_error(&self) -> Option<ChatError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Outbox {
    pub fn new(stream: StreamId, tx: mpsc::Sender<Frame>, end: Arc<StreamEnd>) -> Self {
        Outbox { stream, tx, end }
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// How the stream ends, when the server ends it.
    pub fn end(&self) -> &Arc<StreamEnd> {
        &self.end
    }

    /// Queues a frame without waiting; ends the stream if its queue is full.
    pub fn push(&self, frame: ChatStream) {
        self.push_shared(Arc::new(frame));
    }

    /// Queues a frame shared with other streams. Returns whether this push
    /// ended the stream (its queue was full).
    pub fn push_shared(&self, frame: Frame) -> bool {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame)
            && !self.end.is_aborted()
        {
            tracing::warn!(
                stream = self.stream.0,
                "outbound queue full, ending slow stream"
            );
            self.end.abort(ChatError::FellBehind);
            return true;
        }
        false
    }

    /// Answers a frame with an `error` event; the stream goes on.
    pub fn push_error(&self, error: ChatError, request_id: Option<String>) {
        self.push(ChatStream {
            event: Some(Event::Error(error.to_event())),
            request_id,
        });
    }
}

/// What one committed batch did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub stored: u64,
    pub duplicates: u64,
    pub failed: u64,
    /// Messages edited or deleted.
    pub changed: u64,
    /// Message frames queued to members (the sender's echo included).
    pub deliveries: u64,
    /// Members ended for falling behind by this batch.
    pub slow_ended: u64,
}

/// What the writer thread hands back with each committed write.
pub enum Tag {
    /// A chat message from this stream; `request_id` goes on its echo.
    Message {
        origin: Outbox,
        request_id: Option<String>,
    },
    /// A user write; the caller may wait for the result.
    User(Option<UserReply>),
    /// A rename (SetUserName): announced to the user's rooms once stored.
    Rename(UserReply),
    /// An edit or deletion of message `seq` of `room_id` from this stream;
    /// `request_id` goes on its confirmation.
    Change {
        origin: Outbox,
        request_id: Option<String>,
        room_id: String,
        seq: u64,
    },
}

struct Member {
    outbox: Outbox,
    /// The user this stream joined the room as; `None` for a listener,
    /// which gets the room's messages and presence but is in nobody's list.
    user_id: Option<String>,
}

/// A room with members on this server.
#[derive(Default)]
struct Room {
    members: Vec<Member>,
    /// With a bus: what the other servers say of the room.
    shared: Option<Shared>,
}

impl Room {
    fn has_local_user(&self, user: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.user_id.as_deref() == Some(user))
    }

    /// Whether `user` is in the room through any server.
    fn is_present(&self, user: &str) -> bool {
        self.has_local_user(user) || self.shared.as_ref().is_some_and(|s| s.is_remote(user))
    }

    /// The users in the room through this server, in order, once each.
    fn local_users(&self) -> BTreeSet<&str> {
        self.members
            .iter()
            .filter_map(|m| m.user_id.as_deref())
            .collect()
    }

    fn push_all(&self, frame: &Frame) {
        for member in &self.members {
            member.outbox.push_shared(frame.clone());
        }
    }
}

/// A room as seen with several servers (`--bus`): its events are released
/// in their numbers' order, and its users elsewhere are known.
struct Shared {
    /// Tells this room's bus tasks from those of an earlier room of the
    /// same name that was dropped and joined again.
    generation: u64,
    /// Ends the room's bus subscription when the room is dropped.
    _subscription: DropGuard,
    /// Cancelled with it: for the room's later bus tasks.
    dropped: CancellationToken,
    /// Messages, by seq.
    messages: Order<Pending>,
    /// Edits and deletions, by revision.
    changes: Order<Pending>,
    /// A fill from the store is under way, per kind.
    filling: [bool; 2],
    /// The store's newest seq and revision at the last check: what is
    /// still not delivered a check later was lost on the bus.
    seen_top: [u64; 2],
    /// Users in the room through each other server.
    remote: HashMap<u64, BTreeSet<String>>,
    /// True once the room's position in the store is known: a join is
    /// answered then, so that what the client reads from the history next
    /// and what comes live meet without a gap.
    ready: watch::Sender<bool>,
}

impl Shared {
    fn new(generation: u64, subscription: CancellationToken) -> Shared {
        Shared {
            generation,
            dropped: subscription.clone(),
            _subscription: subscription.drop_guard(),
            messages: Order::default(),
            changes: Order::default(),
            filling: [false; 2],
            seen_top: [0; 2],
            remote: HashMap::new(),
            ready: watch::Sender::new(false),
        }
    }

    fn is_remote(&self, user: &str) -> bool {
        self.remote.values().any(|users| users.contains(user))
    }

    fn order(&mut self, kind: Kind) -> &mut Order<Pending> {
        match kind {
            Kind::Messages => &mut self.messages,
            Kind::Changes => &mut self.changes,
        }
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Messages => 0,
        Kind::Changes => 1,
    }
}

/// A message or change waiting for its turn, and who to confirm it to.
struct Pending {
    frame: ChatStream,
    origin: Option<(Outbox, Option<String>)>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// Number of open streams acting as each user.
    online: HashMap<String, usize>,
}

/// Rooms, membership and presence, shared by every stream.
#[derive(Default)]
pub struct Hub {
    // A std Mutex: critical sections are short and never await.
    state: Mutex<State>,
    /// The other servers, with `--bus`.
    bus: Option<Arc<Bus>>,
    /// This hub, for the bus tasks it starts.
    me: Weak<Hub>,
}

impl Hub {
    /// A hub whose rooms span the servers on `bus`.
    pub fn with_bus(bus: Arc<Bus>) -> Arc<Hub> {
        Arc::new_cyclic(|me| Hub {
            state: Mutex::default(),
            bus: Some(bus),
            me: me.clone(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than stopping the chat, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bus and this hub, for starting a bus task.
    fn bus(&self) -> Option<(&Arc<Bus>, Arc<Hub>)> {
        Some((self.bus.as_ref()?, self.me.upgrade()?))
    }

    /// Makes the stream a member of the room as `user_id` (`None`: a
    /// listener), or changes the user it is a member as, and tells the
    /// others of a user who arrives or leaves by it. False if the stream was
    /// already a member as that user.
    pub fn join(&self, room_id: &str, outbox: &Outbox, user_id: Option<&str>) -> bool {
        let mut state = self.state();
        let room = match state.rooms.entry(room_id.to_owned()) {
            std::collections::hash_map::Entry::Occupied(room) => room.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let shared = self.open_shared(room_id);
                slot.insert(Room {
                    members: Vec::new(),
                    shared,
                })
            }
        };
        let previous = match room
            .members
            .iter()
            .position(|m| m.outbox.stream == outbox.stream)
        {
            Some(index) if room.members[index].user_id.as_deref() == user_id => return false,
            Some(index) => room.members.swap_remove(index).user_id,
            None => None,
        };
        let arrived = user_id.filter(|user| !room.has_local_user(user));
        let gone = previous.filter(|user| !room.has_local_user(user));
        let locally_changed = arrived.is_some() || gone.is_some();
        let arrived = arrived
            .filter(|user| !room.is_present(user))
            .map(str::to_owned);
        let gone = gone.filter(|user| !room.is_present(user));
        if arrived.is_some() || gone.is_some() {
            let change = Arc::new(presence(
                room_id,
                arrived.into_iter().collect(),
                gone.into_iter().collect(),
                false,
                None,
            ));
            room.push_all(&change);
        }
        room.members.push(Member {
            outbox: outbox.clone(),
            user_id: user_id.map(str::to_owned),
        });
        if locally_changed {
            self.publish_local_users(room_id, room);
        }
        true
    }

    /// With a bus: a new room's shared state, and its subscription started.
    fn open_shared(&self, room_id: &str) -> Option<Shared> {
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let (bus, hub) = self.bus()?;
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let subscription = CancellationToken::new();
        bus.open_room(hub, room_id.to_owned(), generation, subscription.clone());
        Some(Shared::new(generation, subscription))
    }

    fn publish_local_users(&self, room_id: &str, room: &Room) {
        if let Some(bus) = &self.bus {
            let users = room.local_users().into_iter().map(str::to_owned).collect();
            bus.publish_room_users(room_id, users);
        }
    }

    /// Sends the stream who is in the room (listeners aside), through any
    /// server, answering the frame that asked with its `request_id`.
    pub fn snapshot(&self, room_id: &str, outbox: &Outbox, request_id: Option<String>) {
        let state = self.state();
        let mut online: BTreeSet<&str> = BTreeSet::new();
        if let Some(room) = state.rooms.get(room_id) {
            online.extend(room.local_users());
            if let Some(shared) = &room.shared {
                online.extend(shared.remote.values().flatten().map(String::as_str));
            }
        }
        let online = online.into_iter().map(str::to_owned).collect();
        outbox.push(presence(room_id, online, Vec::new(), true, request_id));
    }

    /// Removes the stream from the room (no-op if it is not a member) and
    /// tells the others if its user has no other stream there.
    pub fn leave(&self, room_id: &str, stream: StreamId) {
        let mut state = self.state();
        let Some(room) = state.rooms.get_mut(room_id) else {
            return;
        };
        let Some(index) = room.members.iter().position(|m| m.outbox.stream == stream) else {
            return;
        };
        let left = room.members.swap_remove(index);
        let Some(user) = left.user_id.filter(|user| !room.has_local_user(user)) else {
            if room.members.is_empty() {
                state.rooms.remove(room_id);
            }
            return;
        };
        self.publish_local_users(room_id, room);
        if room.members.is_empty() {
            state.rooms.remove(room_id);
        } else if !room.is_present(&user) {
            room.push_all(&Arc::new(presence(
                room_id,
                Vec::new(),
                vec![user],
                false,
                None,
            )));
        }
    }

    /// Relays "typing" to the room's members other than `from`, and to the
    /// other servers; false if `from` is not a member.
    pub fn typing(&self, room_id: &str, from: StreamId, user_id: &str) -> bool {
        let state = self.state();
        let Some(room) = state.rooms.get(room_id) else {
            return false;
        };
        if !room.members.iter().any(|m| m.outbox.stream == from) {
            return false;
        }
        let frame = ChatStream {
            event: Some(Event::Typing(chat::Typing {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
            })),
            request_id: None,
        };
        if let Some(bus) = &self.bus {
            bus.publish_room_event(room_id, frame.clone());
        }
        let frame = Arc::new(frame);
        for member in room.members.iter().filter(|m| m.outbox.stream != from) {
            member.outbox.push_shared(frame.clone());
        }
        true
    }

    /// One more open stream acts as this user.
    pub fn user_connected(&self, user_id: &str) {
        *self.state().online.entry(user_id.to_owned()).or_default() += 1;
    }

    /// One stream acting as this user has ended.
    pub fn user_disconnected(&self, user_id: &str) {
        let mut state = self.state();
        if let Some(count) = state.online.get_mut(user_id) {
            *count -= 1;
            if *count == 0 {
                state.online.remove(user_id);
            }
        }
    }

    /// Whether a stream of this server acts as the user.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.state().online.contains_key(user_id)
    }

    /// Whether a stream of any live server acts as the user.
    pub async fn is_online_anywhere(&self, user_id: &str) -> bool {
        if self.is_online(user_id) {
            return true;
        }
        match &self.bus {
            Some(bus) => !bus
                .online_elsewhere(vec![user_id.to_owned()])
                .await
                .is_empty(),
            None => false,
        }
    }

    /// Which of `users` have a stream on this server.
    pub fn locally_online(&self, users: Vec<String>) -> Vec<String> {
        let state = self.state();
        users
            .into_iter()
            .filter(|user| state.online.contains_key(user))
            .collect()
    }

    /// How many users are in each room now (listeners not counted), over
    /// every live server: with a bus, the others are asked (as `GetUser`
    /// asks them), so a room this server has no member in counts too.
    pub async fn member_counts(&self, rooms: &[String]) -> Vec<usize> {
        let mut users: Vec<BTreeSet<String>> = {
            let state = self.state();
            rooms
                .iter()
                .map(|room_id| {
                    let Some(room) = state.rooms.get(room_id) else {
                        return BTreeSet::new();
                    };
                    let mut users: BTreeSet<String> =
                        room.local_users().into_iter().map(str::to_owned).collect();
                    if let Some(shared) = &room.shared {
                        users.extend(shared.remote.values().flatten().cloned());
                    }
                    users
                })
                .collect()
        };
        if let Some(bus) = &self.bus {
            let index: HashMap<&str, usize> = rooms
                .iter()
                .enumerate()
                .map(|(i, room_id)| (room_id.as_str(), i))
                .collect();
            for (_, answer) in bus.room_users_elsewhere(rooms.to_vec()).await {
                if let Some(&i) = index.get(answer.room_id.as_str()) {
                    users[i].extend(answer.users);
                }
            }
        }
        users.iter().map(BTreeSet::len).collect()
    }

    /// Tells every stream in a room where `user` is present (through any
    /// server) its new name, once per stream however many of those rooms it
    /// is in. Renames are rare, so a walk of every room beats keeping a
    /// user -> rooms index up to date on every join and leave.
    fn renamed(&self, frame: Frame, user_id: &str, done: &mut Committed) {
        let state = self.state();
        let mut told = HashSet::new();
        for room in state.rooms.values() {
            if !room.is_present(user_id) {
                continue;
            }
            for member in &room.members {
                if told.insert(member.outbox.stream) {
                    done.slow_ended += u64::from(member.outbox.push_shared(frame.clone()));
                }
            }
        }
    }

    /// Called on the writer thread after each commit, in commit order: this
    /// is what gives every member of a room the same order as the history.
    pub fn committed(&self, results: Vec<(Tag, Result<Written, StoreError>)>) -> Committed {
        let mut done = Committed::default();
        for (tag, result) in results {
            match (tag, result) {
                (Tag::Message { origin, request_id }, Ok(Written::Stored(msg))) => {
                    done.stored += 1;
                    self.fan_out(msg, &origin, request_id, &mut done);
                }
                (Tag::Message { origin, request_id }, Ok(Written::Duplicate(msg))) => {
                    done.duplicates += 1;
                    origin.push(message_frame(msg, request_id));
                }
                (Tag::Message { origin, request_id }, Err(e)) => {
                    done.failed += 1;
                    tracing::error!(error = %e, "message not stored");
                    origin.push_error(ChatError::NotStored(e), request_id);
                }
                (Tag::User(reply), result) => {
                    if let Some(reply) = reply {
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(user_result(result));
                    }
                }
                (Tag::Rename(reply), result) => {
                    let user = user_result(result);
                    if let Ok(user) = &user {
                        let frame = renamed_frame(user);
                        if let Some(bus) = &self.bus {
                            bus.publish_rename(frame.clone());
                        }
                        self.renamed(Arc::new(frame), &user.id, &mut done);
                    }
                    let _ = reply.send(user);
                }
                (
                    Tag::Change {
                        origin, request_id, ..
                    },
                    Ok(Written::Changed(msg)),
                ) => {
                    done.changed += 1;
                    let (room_id, revision) = (msg.room_id.clone(), msg.revision);
                    let pending = Pending {
                        frame: changed_frame(msg),
                        origin: Some((origin, request_id)),
                    };
                    self.release_local(&room_id, Kind::Changes, revision, pending, &mut done);
                }
                (
                    Tag::Change {
                        origin, request_id, ..
                    },
                    Ok(Written::Unchanged(msg)),
                ) => {
                    // Nothing changed for anyone else: only the asker hears.
                    let mut frame = changed_frame(msg);
                    frame.request_id = request_id;
                    origin.push(frame);
                }
                (
                    Tag::Change {
                        origin,
                        request_id,
                        room_id,
                        seq,
                    },
                    Ok(Written::Refused(refused)),
                ) => {
                    origin.push_error(ChatError::refused_change(refused, room_id, seq), request_id);
                }
                (
                    Tag::Change {
                        origin, request_id, ..
                    },
                    result,
                ) => {
                    let error = match result {
                        Err(e) => {
                            tracing::error!(error = %e, "change not stored");
                            e
                        }
                        Ok(other) => {
                            StoreError::Internal(format!("unexpected write result {other:?}"))
                        }
                    };
                    origin.push_error(ChatError::ChangeNotStored(error), request_id);
                }
                (Tag::Message { origin, request_id }, Ok(other)) => {
                    done.failed += 1;
                    let bug = StoreError::Internal(format!("unexpected write result {other:?}"));
                    origin.push_error(ChatError::NotStored(bug), request_id);
                }
            }
        }
        done
    }

    /// Sends a newly stored message to every member of its room; the sender's
    /// own copy carries its `request_id` and is its confirmation.
    fn fan_out(
        &self,
        msg: StoredMessage,
        origin: &Outbox,
        request_id: Option<String>,
        done: &mut Committed,
    ) {
        let (room_id, seq) = (msg.room_id.clone(), msg.seq);
        let pending = Pending {
            frame: message_frame(msg, None),
            origin: Some((origin.clone(), request_id)),
        };
        self.release_local(&room_id, Kind::Messages, seq, pending, done);
    }

    /// A message or change this server committed: published for the other
    /// servers, and released to the room's members here in its turn.
    fn release_local(
        &self,
        room_id: &str,
        kind: Kind,
        n: u64,
        pending: Pending,
        done: &mut Committed,
    ) {
        if let Some(bus) = &self.bus {
            bus.publish_room_event(room_id, pending.frame.clone());
        }
        let mut state = self.state();
        match state.rooms.get_mut(room_id) {
            Some(room) => self.offer(room_id, room, kind, n, pending, done),
            None => {
                drop(state);
                // Nobody here is in the room (the sender left before its
                // message was committed): it still gets its confirmation.
                confirm(pending, done);
            }
        }
    }

    /// Releases `pending` (event `n` of its kind) to the room's members, in
    /// its turn: at once without a bus, else once every event before it
    /// was released, starting a fill from the store if a gap appears.
    fn offer(
        &self,
        room_id: &str,
        room: &mut Room,
        kind: Kind,
        n: u64,
        pending: Pending,
        done: &mut Committed,
    ) {
        let Some(shared) = &mut room.shared else {
            deliver(&room.members, pending, done);
            return;
        };
        match shared.order(kind).offer(n, pending) {
            Offered::Released(released) => {
                for pending in released {
                    deliver(&room.members, pending, done);
                }
            }
            Offered::Held => {}
            Offered::Old(pending) => confirm(pending, done),
        }
        self.after_offer(room_id, room, kind);
    }

    /// Watches a room's order after a change: too much held ends its
    /// members; a gap gets a fill from the store after a short wait.
    fn after_offer(&self, room_id: &str, room: &mut Room, kind: Kind) {
        let Some(shared) = &mut room.shared else {
            return;
        };
        if shared.order(kind).held() > MAX_HELD {
            tracing::warn!(room = %room_id, "bus: too much held behind a gap; ending the room's streams here");
            self.end_members(room_id, room);
            return;
        }
        let Some(missing) = shared.order(kind).missing() else {
            return;
        };
        let index = kind_index(kind);
        if shared.filling[index] {
            return;
        }
        if let Some((bus, hub)) = self.bus() {
            shared.filling[index] = true;
            let until = missing.end.saturating_sub(1);
            bus.fill(
                hub,
                room_id.to_owned(),
                shared.generation,
                kind,
                until,
                GAP_WAIT,
            );
        }
    }

    /// Ends every stream of this server in the room: they could not be
    /// given the room's events in order (the client resumes by
    /// `after_seq`). The room starts over from the store.
    fn end_members(&self, room_id: &str, room: &mut Room) {
        for member in &room.members {
            member.outbox.end().abort(ChatError::FellBehind);
        }
        let Some(shared) = &mut room.shared else {
            return;
        };
        shared.messages.reset();
        shared.changes.reset();
        shared.ready.send_replace(false);
        if let Some((bus, hub)) = self.bus() {
            let dropped = shared.dropped.clone();
            bus.restart_room(hub, room_id.to_owned(), shared.generation, dropped);
        }
    }

    /// The shared room `room_id` if it is still of `generation`.
    fn shared_room<'a>(
        state: &'a mut State,
        room_id: &str,
        generation: u64,
    ) -> Option<&'a mut Room> {
        state
            .rooms
            .get_mut(room_id)
            .filter(|room| room.shared.as_ref().map(|s| s.generation) == Some(generation))
    }

    /// The room's position in the store is known: everything up to `seq`
    /// (and `revision`) is history; what was held after it is released.
    pub fn start_room(&self, room_id: &str, generation: u64, seq: u64, revision: u64) {
        let mut state = self.state();
        let Some(room) = Self::shared_room(&mut state, room_id, generation) else {
            return;
        };
        let mut done = Committed::default();
        for (kind, last) in [(Kind::Messages, seq), (Kind::Changes, revision)] {
            let Some(shared) = &mut room.shared else {
                return;
            };
            let order = shared.order(kind);
            if order.started() {
                continue;
            }
            let (released, old) = order.start(last);
            shared.seen_top[kind_index(kind)] = last;
            for pending in old {
                confirm(pending, &mut done);
            }
            for pending in released {
                deliver(&room.members, pending, &mut done);
            }
            self.after_offer(room_id, room, kind);
        }
        if let Some(shared) = &room.shared {
            shared.ready.send_replace(true);
        }
    }

    /// Waits until the room's position in the store is known (at once
    /// without a bus), at most `ROOM_START_WAIT`: answering a join before
    /// then could leave the client a gap between the history it reads next
    /// and what comes live. Past the wait (the store is failing), the join
    /// is answered anyway; the store check fills the gap once it is back.
    pub async fn ready(&self, room_id: &str) {
        let ready = {
            let state = self.state();
            let Some(shared) = state.rooms.get(room_id).and_then(|r| r.shared.as_ref()) else {
                return;
            };
            shared.ready.subscribe()
        };
        let mut ready = ready;
        if tokio::time::timeout(ROOM_START_WAIT, ready.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            tracing::warn!(room = %room_id, "bus: room not started in time; join answered anyway");
        }
    }

    /// An event from another server for the rooms here.
    pub fn remote_event(&self, event: ChatStream, generation: u64) {
        let (room_id, kind, n) = match &event.event {
            Some(Event::ChatMessage(msg)) => (msg.room_id.clone(), Kind::Messages, msg.seq),
            Some(Event::MessageChanged(msg)) => (
                msg.room_id.clone(),
                Kind::Changes,
                msg.revision.unwrap_or_default(),
            ),
            Some(Event::Typing(typing)) => {
                let state = self.state();
                if let Some(room) = state.rooms.get(&typing.room_id) {
                    room.push_all(&Arc::new(event.clone()));
                }
                return;
            }
            _ => return,
        };
        let mut state = self.state();
        let Some(room) = Self::shared_room(&mut state, &room_id, generation) else {
            return;
        };
        let pending = Pending {
            frame: event,
            origin: None,
        };
        self.offer(&room_id, room, kind, n, pending, &mut Committed::default());
    }

    /// A rename on another server.
    pub fn remote_rename(&self, event: ChatStream) {
        if let Some(Event::UserRenamed(renamed)) = &event.event {
            let user_id = renamed.user_id.clone();
            self.renamed(Arc::new(event), &user_id, &mut Committed::default());
        }
    }

    /// Server `server` says these are its users in the room: members here
    /// are told of those who arrive or leave the room as a whole.
    pub fn remote_users(&self, room_id: &str, server: u64, users: Vec<String>) {
        let mut state = self.state();
        if let Some(room) = state.rooms.get_mut(room_id) {
            set_remote(room_id, room, server, users.into_iter().collect());
        }
    }

    /// Server `server` is gone: its users leave every room.
    pub fn peer_gone(&self, server: u64) {
        let mut state = self.state();
        for (room_id, room) in state.rooms.iter_mut() {
            set_remote(room_id, room, server, BTreeSet::new());
        }
    }

    /// This server's users in the room, if it has any.
    pub fn local_users(&self, room_id: &str) -> Option<Vec<String>> {
        let state = self.state();
        let users = state.rooms.get(room_id)?.local_users();
        (!users.is_empty()).then(|| users.into_iter().map(str::to_owned).collect())
    }

    /// This server's users in each room that has some.
    pub fn all_local_users(&self) -> Vec<(String, Vec<String>)> {
        let state = self.state();
        state
            .rooms
            .iter()
            .filter_map(|(room_id, room)| {
                let users = room.local_users();
                (!users.is_empty()).then(|| {
                    let users = users.into_iter().map(str::to_owned).collect();
                    (room_id.clone(), users)
                })
            })
            .collect()
    }

    /// The shared rooms whose position is known, for the store check.
    pub fn started_rooms(&self) -> Vec<(String, u64)> {
        let state = self.state();
        state
            .rooms
            .iter()
            .filter_map(|(room_id, room)| {
                let shared = room.shared.as_ref()?;
                shared
                    .messages
                    .started()
                    .then(|| (room_id.clone(), shared.generation))
            })
            .collect()
    }

    /// The store has the room at `seq` and `revision`. What it had at the
    /// previous check and is still not delivered here was lost on the bus:
    /// it is read from the store now.
    pub fn store_is_at(&self, room_id: &str, generation: u64, seq: u64, revision: u64) {
        let mut state = self.state();
        let Some(room) = Self::shared_room(&mut state, room_id, generation) else {
            return;
        };
        let Some(shared) = &mut room.shared else {
            return;
        };
        for (kind, top) in [(Kind::Messages, seq), (Kind::Changes, revision)] {
            let index = kind_index(kind);
            let seen = std::mem::replace(&mut shared.seen_top[index], top);
            let behind = shared.order(kind).next().is_some_and(|next| next <= seen);
            if behind
                && !shared.filling[index]
                && let Some((bus, hub)) = self.bus()
            {
                shared.filling[index] = true;
                bus.fill(
                    hub,
                    room_id.to_owned(),
                    generation,
                    kind,
                    seen,
                    Duration::ZERO,
                );
            }
        }
    }

    /// The next event a fill should read, if the room still misses one up
    /// to `until`.
    pub fn next_needed(
        &self,
        room_id: &str,
        generation: u64,
        kind: Kind,
        until: u64,
    ) -> Option<u64> {
        let mut state = self.state();
        let room = Self::shared_room(&mut state, room_id, generation)?;
        let next = room.shared.as_mut()?.order(kind).next()?;
        (next <= until).then_some(next)
    }

    /// Events read from the store, oldest first, for a fill.
    pub fn filled(&self, room_id: &str, generation: u64, kind: Kind, messages: Vec<StoredMessage>) {
        let mut state = self.state();
        let Some(room) = Self::shared_room(&mut state, room_id, generation) else {
            return;
        };
        let mut done = Committed::default();
        match kind {
            Kind::Messages => {
                for msg in messages {
                    let seq = msg.seq;
                    let pending = Pending {
                        frame: message_frame(msg, None),
                        origin: None,
                    };
                    self.offer(room_id, room, kind, seq, pending, &mut done);
                }
            }
            Kind::Changes => {
                // A page of changes has each message once, as it is now:
                // revisions it skips belong to earlier states of messages
                // on the page. Everything up to its last revision is known.
                let Some(last) = messages.last().map(|m| m.revision) else {
                    return;
                };
                let Some(shared) = &mut room.shared else {
                    return;
                };
                let Some(next) = shared.changes.next() else {
                    return;
                };
                let held = shared.changes.reset();
                let mut later = Vec::new();
                for pending in held {
                    match &pending.frame.event {
                        Some(Event::MessageChanged(m)) if m.revision.unwrap_or(0) > last => {
                            later.push(pending)
                        }
                        _ => confirm(pending, &mut done),
                    }
                }
                shared.changes.start(last);
                for msg in messages.into_iter().filter(|m| m.revision >= next) {
                    let pending = Pending {
                        frame: changed_frame(msg),
                        origin: None,
                    };
                    deliver(&room.members, pending, &mut done);
                }
                for pending in later {
                    let revision = match &pending.frame.event {
                        Some(Event::MessageChanged(m)) => m.revision.unwrap_or(0),
                        _ => continue,
                    };
                    self.offer(room_id, room, kind, revision, pending, &mut done);
                }
            }
        }
    }

    /// A fill ended: another starts if the room still has a gap.
    pub fn fill_done(&self, room_id: &str, generation: u64, kind: Kind) {
        let mut state = self.state();
        let Some(room) = Self::shared_room(&mut state, room_id, generation) else {
            return;
        };
        if let Some(shared) = &mut room.shared {
            shared.filling[kind_index(kind)] = false;
        }
        self.after_offer(room_id, room, kind);
    }

    /// The store cannot give what the room misses: its members here end.
    pub fn cannot_catch_up(&self, room_id: &str, generation: u64) {
        let mut state = self.state();
        if let Some(room) = Self::shared_room(&mut state, room_id, generation) {
            self.end_members(room_id, room);
        }
    }
}

/// Sets what server `server` says of its users in the room, and tells the
/// members here of users who arrived in or left the room as a whole.
fn set_remote(room_id: &str, room: &mut Room, server: u64, users: BTreeSet<String>) {
    let Some(shared) = &mut room.shared else {
        return;
    };
    let before = match users.is_empty() {
        true => shared.remote.remove(&server),
        false => shared.remote.insert(server, users.clone()),
    }
    .unwrap_or_default();
    let elsewhere = |room: &Room, user: &str| {
        room.has_local_user(user)
            || room.shared.as_ref().is_some_and(|shared| {
                shared
                    .remote
                    .iter()
                    .any(|(other, set)| *other != server && set.contains(user))
            })
    };
    let arrived: Vec<String> = users
        .difference(&before)
        .filter(|user| !elsewhere(room, user))
        .cloned()
        .collect();
    let gone: Vec<String> = before
        .difference(&users)
        .filter(|user| !elsewhere(room, user))
        .cloned()
        .collect();
    if !arrived.is_empty() || !gone.is_empty() {
        room.push_all(&Arc::new(presence(room_id, arrived, gone, false, None)));
    }
}

/// Sends a released event to every member, and to its origin with its
/// `request_id` whether or not it is still a member.
fn deliver(members: &[Member], pending: Pending, done: &mut Committed) {
    let Pending { frame, origin } = pending;
    // The sender's copy differs only by its request_id (if it gave one).
    let (origin, own) = match origin {
        Some((outbox, Some(id))) => {
            let mut own = frame.clone();
            own.request_id = Some(id);
            (Some(outbox), Some(Arc::new(own)))
        }
        Some((outbox, None)) => (Some(outbox), None),
        None => (None, None),
    };
    let frame = Arc::new(frame);
    let own = own.unwrap_or_else(|| frame.clone());
    let mut origin_served = false;
    let mut push = |outbox: &Outbox, frame: Frame| {
        done.deliveries += 1;
        done.slow_ended += u64::from(outbox.push_shared(frame));
    };
    for member in members {
        if origin
            .as_ref()
            .is_some_and(|o| o.stream == member.outbox.stream)
        {
            push(&member.outbox, own.clone());
            origin_served = true;
        } else {
            push(&member.outbox, frame.clone());
        }
    }
    if let Some(origin) = origin.filter(|_| !origin_served) {
        // The sender left the room before its message was committed: it
        // still gets its confirmation.
        push(&origin, own);
    }
}

/// Confirms an event to its origin alone: it was released already (read
/// from the store before its own copy came), or the room is gone here.
fn confirm(pending: Pending, done: &mut Committed) {
    deliver(&[], pending, done);
}

fn renamed_frame(user: &UserRecord) -> ChatStream {
    ChatStream {
        event: Some(Event::UserRenamed(chat::UserRenamed {
            user_id: user.id.clone(),
            name: user.name.clone(),
        })),
        request_id: None,
    }
}

fn presence(
    room_id: &str,
    online: Vec<String>,
    offline: Vec<String>,
    snapshot: bool,
    request_id: Option<String>,
) -> ChatStream {
    ChatStream {
        event: Some(Event::Presence(chat::Presence {
            room_id: room_id.to_owned(),
            online,
            offline,
            snapshot,
        })),
        request_id,
    }
}

fn user_result(result: Result<Written, StoreError>) -> Result<UserRecord, StoreError> {
    result.and_then(|w| match w {
        Written::User(u) => Ok(u),
        other => Err(StoreError::Internal(format!(
            "unexpected write result {other:?}"
        ))),
    })
}

fn changed_frame(msg: StoredMessage) -> ChatStream {
    ChatStream {
        event: Some(Event::MessageChanged(chat::ChatMessage::from(msg))),
        request_id: None,
    }
}

fn message_frame(msg: StoredMessage, request_id: Option<String>) -> ChatStream {
    ChatStream {
        event: Some(Event::ChatMessage(chat::ChatMessage::from(msg))),
        request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member stream: its outbox, what it was sent, how it ended.
    struct Probe {
        outbox: Outbox,
        rx: mpsc::Receiver<Frame>,
        end: Arc<StreamEnd>,
    }

    fn probe(capacity: usize) -> Probe {
        let (tx, rx) = mpsc::channel(capacity);
        let end = Arc::new(StreamEnd::default());
        Probe {
            outbox: Outbox::new(StreamId::next(), tx, end.clone()),
            rx,
            end,
        }
    }

    impl Probe {
        fn frames(&mut self) -> Vec<ChatStream> {
            std::iter::from_fn(|| self.rx.try_recv().ok())
                .map(Arc::unwrap_or_clone)
                .collect()
        }

        /// The presence frames received, as (online, offline, snapshot).
        fn presence(&mut self) -> Vec<(Vec<String>, Vec<String>, bool)> {
            self.frames()
                .into_iter()
                .filter_map(|f| match f.event {
                    Some(Event::Presence(p)) => Some((p.online, p.offline, p.snapshot)),
                    _ => None,
                })
                .collect()
        }
    }

    fn users(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn stored(room: &str, seq: u64) -> StoredMessage {
        StoredMessage {
            id: format!("m{seq}"),
            room_id: room.into(),
            sender_id: "ada".into(),
            content: "hi".into(),
            timestamp_us: 1,
            seq,
            edited_us: None,
            deleted: false,
            revision: 0,
        }
    }

    #[test]
    fn arrivals_and_departures_are_announced_once_per_user() {
        let hub = Hub::default();
        let (mut ada, mut ada_too, mut bob) = (probe(16), probe(16), probe(16));
        assert!(hub.join("r", &ada.outbox, Some("ada")));
        assert!(!hub.join("r", &ada.outbox, Some("ada")), "already a member");
        assert!(hub.join("r", &bob.outbox, Some("bob")));
        // Ada's second stream is not news to anyone.
        assert!(hub.join("r", &ada_too.outbox, Some("ada")));
        assert_eq!(ada.presence(), [(users(&["bob"]), vec![], false)]);
        assert_eq!(bob.presence(), []);

        hub.leave("r", ada.outbox.stream());
        assert_eq!(bob.presence(), [], "ada is still there on another stream");
        hub.leave("r", ada_too.outbox.stream());
        assert_eq!(bob.presence(), [(vec![], users(&["ada"]), false)]);
        assert!(ada_too.presence().is_empty());
    }

    #[test]
    fn a_listener_gets_everything_and_is_in_nobodys_list() {
        let hub = Hub::default();
        let (mut ada, mut listener) = (probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        assert!(hub.join("r", &listener.outbox, None));
        assert_eq!(ada.presence(), [], "a listener arriving is not news");

        hub.snapshot("r", &listener.outbox, Some("j1".into()));
        let snapshot = listener.frames();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].request_id.as_deref(), Some("j1"));
        let Some(Event::Presence(p)) = &snapshot[0].event else {
            panic!("{snapshot:?}")
        };
        assert_eq!((p.online.clone(), p.snapshot), (users(&["ada"]), true));

        hub.fan_out(stored("r", 1), &ada.outbox, None, &mut Committed::default());
        assert!(matches!(
            listener.frames()[..],
            [ChatStream { event: Some(Event::ChatMessage(ref m)), .. }] if m.seq == 1
        ));
        hub.leave("r", listener.outbox.stream());
        assert_eq!(ada.presence(), [], "nor is one leaving");
    }

    #[test]
    fn joining_again_as_another_user_switches_presence() {
        let hub = Hub::default();
        let (mut ada, mut stream) = (probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &stream.outbox, None);
        assert!(hub.join("r", &stream.outbox, Some("bob")));
        assert_eq!(ada.presence(), [(users(&["bob"]), vec![], false)]);
        assert!(hub.join("r", &stream.outbox, Some("cy")));
        assert_eq!(ada.presence(), [(users(&["cy"]), users(&["bob"]), false)]);
        hub.snapshot("r", &stream.outbox, None);
        assert_eq!(stream.presence(), [(users(&["ada", "cy"]), vec![], true)]);
    }

    #[test]
    fn the_sender_alone_gets_its_request_id_even_after_leaving() {
        let hub = Hub::default();
        let (mut ada, mut bob) = (probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &bob.outbox, Some("bob"));
        ada.frames();
        let mut done = Committed::default();
        hub.fan_out(stored("r", 1), &ada.outbox, Some("q1".into()), &mut done);
        assert_eq!((done.deliveries, done.slow_ended), (2, 0));
        let request_ids =
            |p: &mut Probe| -> Vec<_> { p.frames().into_iter().map(|f| f.request_id).collect() };
        assert_eq!(request_ids(&mut ada), [Some("q1".to_owned())]);
        assert_eq!(request_ids(&mut bob), [None]);

        hub.leave("r", ada.outbox.stream());
        hub.fan_out(stored("r", 2), &ada.outbox, Some("q2".into()), &mut done);
        assert_eq!(done.deliveries, 4, "the confirmation counts, room or not");
        assert_eq!(request_ids(&mut ada), [Some("q2".to_owned())]);
    }

    #[test]
    fn typing_reaches_the_others_only_from_a_member() {
        let hub = Hub::default();
        let (mut ada, mut bob, outsider) = (probe(16), probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &bob.outbox, Some("bob"));
        ada.frames();
        assert!(hub.typing("r", ada.outbox.stream(), "ada"));
        assert!(ada.frames().is_empty(), "not echoed to the typist");
        assert!(matches!(
            bob.frames()[..],
            [ChatStream { event: Some(Event::Typing(ref t)), .. }] if t.user_id == "ada"
        ));
        assert!(!hub.typing("r", outsider.outbox.stream(), "eve"));
        assert!(!hub.typing("nowhere", ada.outbox.stream(), "ada"));
        assert!(bob.frames().is_empty());
    }

    fn change_tag(origin: &Outbox, request_id: &str) -> Tag {
        Tag::Change {
            origin: origin.clone(),
            request_id: Some(request_id.into()),
            room_id: "r".into(),
            seq: 1,
        }
    }

    fn changed(mut msg: StoredMessage, revision: u64) -> StoredMessage {
        msg.content = "edited".into();
        msg.revision = revision;
        msg
    }

    #[test]
    fn a_change_reaches_the_room_and_its_asker_alone_hears_a_no_op_or_a_refusal() {
        let hub = Hub::default();
        let (mut ada, mut bob, mut outsider) = (probe(16), probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &bob.outbox, Some("bob"));
        ada.frames();
        let done = hub.committed(vec![(
            change_tag(&ada.outbox, "e1"),
            Ok(Written::Changed(changed(stored("r", 1), 1))),
        )]);
        assert_eq!((done.changed, done.deliveries), (1, 2));
        let seen = |p: &mut Probe| -> Vec<(Option<String>, u64, Option<u64>)> {
            p.frames()
                .into_iter()
                .filter_map(|f| match f.event {
                    Some(Event::MessageChanged(m)) => Some((f.request_id, m.seq, m.revision)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(seen(&mut ada), [(Some("e1".to_owned()), 1, Some(1))]);
        assert_eq!(seen(&mut bob), [(None, 1, Some(1))]);

        hub.committed(vec![(
            change_tag(&ada.outbox, "e2"),
            Ok(Written::Unchanged(changed(stored("r", 1), 1))),
        )]);
        assert_eq!(seen(&mut ada), [(Some("e2".to_owned()), 1, Some(1))]);
        assert!(bob.frames().is_empty(), "a no-op is nobody else's news");

        hub.committed(vec![(
            change_tag(&outsider.outbox, "e3"),
            Ok(Written::Refused(crate::storage::ChangeRefused::NotSender)),
        )]);
        let frames = outsider.frames();
        let Some(Event::Error(e)) = &frames[0].event else {
            panic!("{frames:?}")
        };
        assert_eq!(e.code, chat::Code::PermissionDenied as i32);
        assert_eq!(frames[0].request_id.as_deref(), Some("e3"));
        assert!(ada.frames().is_empty() && bob.frames().is_empty());
    }

    #[test]
    fn a_rename_reaches_each_stream_sharing_a_room_once() {
        let hub = Hub::default();
        let (mut ada, mut bob, mut listener, mut cy) = (probe(16), probe(16), probe(16), probe(16));
        for room in ["r1", "r2"] {
            hub.join(room, &ada.outbox, Some("ada"));
            hub.join(room, &bob.outbox, Some("bob"));
        }
        hub.join("r2", &listener.outbox, None);
        hub.join("r3", &cy.outbox, Some("cy"));
        let (reply, _answer) = oneshot::channel();
        let renamed = UserRecord {
            id: "ada".into(),
            name: "Ada L.".into(),
            created_at_us: 1,
        };
        hub.committed(vec![(Tag::Rename(reply), Ok(Written::User(renamed)))]);
        let renames = |p: &mut Probe| -> Vec<String> {
            p.frames()
                .into_iter()
                .filter_map(|f| match f.event {
                    Some(Event::UserRenamed(r)) => Some(format!("{}={}", r.user_id, r.name)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            renames(&mut bob),
            ["ada=Ada L."],
            "two shared rooms, one frame"
        );
        assert_eq!(renames(&mut ada), ["ada=Ada L."]);
        assert_eq!(renames(&mut listener), ["ada=Ada L."]);
        assert!(renames(&mut cy).is_empty(), "shares no room");
    }

    #[tokio::test]
    async fn member_counts_are_distinct_users_without_listeners() {
        let hub = Hub::default();
        let (ada, ada_too, bob, listener) = (probe(16), probe(16), probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &ada_too.outbox, Some("ada"));
        hub.join("r", &bob.outbox, Some("bob"));
        hub.join("r", &listener.outbox, None);
        hub.join("quiet", &listener.outbox, None);
        let rooms = ["r", "quiet", "nowhere"].map(String::from);
        assert_eq!(hub.member_counts(&rooms).await, [2, 0, 0]);
    }

    #[test]
    fn a_member_whose_queue_is_full_is_aborted_and_the_others_go_on() {
        let hub = Hub::default();
        let (mut fast, slow) = (probe(64), probe(2));
        hub.join("r", &fast.outbox, Some("fast"));
        hub.join("r", &slow.outbox, Some("slow"));
        fast.frames();
        let mut done = Committed::default();
        for seq in 1..=3 {
            hub.fan_out(stored("r", seq), &fast.outbox, None, &mut done);
        }
        assert_eq!(done.slow_ended, 1, "ended once, counted once");
        assert!(slow.end.is_aborted());
        assert_eq!(slow.end.take_error(), Some(ChatError::FellBehind));
        assert_eq!(fast.frames().len(), 3);
    }

    #[test]
    fn the_first_reason_to_end_a_stream_wins() {
        let end = StreamEnd::default();
        end.finish(ChatError::Undecodable("bytes".into()));
        end.abort(ChatError::FellBehind);
        assert!(!end.is_aborted(), "already ending for another reason");
        assert_eq!(
            end.take_error(),
            Some(ChatError::Undecodable("bytes".into()))
        );
    }

    #[test]
    fn a_failed_write_answers_its_sender_with_the_storage_code() {
        let hub = Hub::default();
        let mut ada = probe(16);
        let tag = Tag::Message {
            origin: ada.outbox.clone(),
            request_id: Some("q".into()),
        };
        hub.committed(vec![(tag, Err(StoreError::Full("disk full".into())))]);
        let frames = ada.frames();
        let Some(Event::Error(e)) = &frames[0].event else {
            panic!("{frames:?}")
        };
        assert_eq!(e.code, chat::Code::ResourceExhausted as i32);
        assert!(e.message.contains("disk full"), "{e:?}");
        assert_eq!(frames[0].request_id.as_deref(), Some("q"));
    }

    /// A room as it is with a bus, without one: what other servers say of
    /// it is applied by hand.
    fn shared_room(members: Vec<Member>) -> Room {
        Room {
            members,
            shared: Some(Shared::new(1, CancellationToken::new())),
        }
    }

    #[test]
    fn users_elsewhere_arrive_and_leave_the_room_as_a_whole() {
        let mut ada = probe(16);
        let mut room = shared_room(vec![Member {
            outbox: ada.outbox.clone(),
            user_id: Some("ada".into()),
        }]);
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        set_remote("r", &mut room, 1, set(&["bob", "ada"]));
        assert_eq!(
            ada.presence(),
            [(users(&["bob"]), users(&[]), false)],
            "ada is here already"
        );
        set_remote("r", &mut room, 2, set(&["bob"]));
        set_remote("r", &mut room, 1, set(&[]));
        assert!(ada.presence().is_empty(), "bob is still on server 2");
        assert!(room.is_present("bob"));
        set_remote("r", &mut room, 2, set(&[]));
        assert_eq!(ada.presence(), [(users(&[]), users(&["bob"]), false)]);
        assert!(!room.is_present("bob"));
        assert!(room.shared.as_ref().is_some_and(|s| s.remote.is_empty()));
    }

    #[test]
    fn a_message_held_behind_a_gap_is_confirmed_in_its_turn() {
        let mut ada = probe(16);
        let mut bob = probe(16);
        let hub = Hub::default();
        let mut room = shared_room(vec![
            Member {
                outbox: ada.outbox.clone(),
                user_id: Some("ada".into()),
            },
            Member {
                outbox: bob.outbox.clone(),
                user_id: Some("bob".into()),
            },
        ]);
        if let Some(shared) = &mut room.shared {
            shared.messages.start(0);
        }
        let mut done = Committed::default();
        // Ada's message took seq 2; seq 1 (another server's) is not here yet.
        let own = Pending {
            frame: message_frame(stored("r", 2), None),
            origin: Some((ada.outbox.clone(), Some("q2".into()))),
        };
        hub.offer("r", &mut room, Kind::Messages, 2, own, &mut done);
        assert!(ada.frames().is_empty() && bob.frames().is_empty(), "held");
        let other = Pending {
            frame: message_frame(stored("r", 1), None),
            origin: None,
        };
        hub.offer("r", &mut room, Kind::Messages, 1, other, &mut done);
        let seqs = |frames: Vec<ChatStream>| -> Vec<(u64, Option<String>)> {
            frames
                .into_iter()
                .filter_map(|f| match f.event {
                    Some(Event::ChatMessage(m)) => Some((m.seq, f.request_id)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(seqs(ada.frames()), [(1, None), (2, Some("q2".into()))]);
        assert_eq!(seqs(bob.frames()), [(1, None), (2, None)]);
        // A copy read from the store later is old: nobody gets it again.
        let late = Pending {
            frame: message_frame(stored("r", 2), None),
            origin: None,
        };
        hub.offer("r", &mut room, Kind::Messages, 2, late, &mut done);
        assert!(ada.frames().is_empty() && bob.frames().is_empty());
    }
}
