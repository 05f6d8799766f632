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
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::ChatError;
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

#[derive(Default)]
struct State {
    rooms: HashMap<String, Vec<Member>>,
    /// Number of open streams acting as each user.
    online: HashMap<String, usize>,
}

/// Rooms, membership and presence, shared by every stream.
#[derive(Default)]
pub struct Hub {
    // A std Mutex: critical sections are short and never await.
    state: Mutex<State>,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than stopping the chat, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the stream a member of the room as `user_id` (`None`: a
    /// listener), or changes the user it is a member as, and tells the
    /// others of a user who arrives or leaves by it. False if the stream was
    /// already a member as that user.
    pub fn join(&self, room_id: &str, outbox: &Outbox, user_id: Option<&str>) -> bool {
        let mut state = self.state();
        let members = state.rooms.entry(room_id.to_owned()).or_default();
        let previous = match members
            .iter()
            .position(|m| m.outbox.stream == outbox.stream)
        {
            Some(index) if members[index].user_id.as_deref() == user_id => return false,
            Some(index) => members.swap_remove(index).user_id,
            None => None,
        };
        let arrived = user_id
            .filter(|user| !members.iter().any(|m| m.user_id.as_deref() == Some(user)))
            .map(str::to_owned);
        let gone =
            previous.filter(|user| !members.iter().any(|m| m.user_id.as_ref() == Some(user)));
        if arrived.is_some() || gone.is_some() {
            let change = Arc::new(presence(
                room_id,
                arrived.into_iter().collect(),
                gone.into_iter().collect(),
                false,
                None,
            ));
            for member in members.iter() {
                member.outbox.push_shared(change.clone());
            }
        }
        members.push(Member {
            outbox: outbox.clone(),
            user_id: user_id.map(str::to_owned),
        });
        true
    }

    /// Sends the stream who is in the room (listeners aside), answering the
    /// frame that asked with its `request_id`.
    pub fn snapshot(&self, room_id: &str, outbox: &Outbox, request_id: Option<String>) {
        let state = self.state();
        let online: BTreeSet<&str> = state
            .rooms
            .get(room_id)
            .into_iter()
            .flatten()
            .filter_map(|m| m.user_id.as_deref())
            .collect();
        let online = online.into_iter().map(str::to_owned).collect();
        outbox.push(presence(room_id, online, Vec::new(), true, request_id));
    }

    /// Removes the stream from the room (no-op if it is not a member) and
    /// tells the others if its user has no other stream there.
    pub fn leave(&self, room_id: &str, stream: StreamId) {
        let mut state = self.state();
        let Some(members) = state.rooms.get_mut(room_id) else {
            return;
        };
        let Some(index) = members.iter().position(|m| m.outbox.stream == stream) else {
            return;
        };
        let left = members.swap_remove(index);
        if members.is_empty() {
            state.rooms.remove(room_id);
        } else if let Some(user) = left.user_id
            && !members.iter().any(|m| m.user_id.as_ref() == Some(&user))
        {
            let gone = Arc::new(presence(room_id, Vec::new(), vec![user], false, None));
            for member in members.iter() {
                member.outbox.push_shared(gone.clone());
            }
        }
    }

    /// Relays "typing" to the room's members other than `from`; false if
    /// `from` is not a member.
    pub fn typing(&self, room_id: &str, from: StreamId, user_id: &str) -> bool {
        let state = self.state();
        let Some(members) = state.rooms.get(room_id) else {
            return false;
        };
        if !members.iter().any(|m| m.outbox.stream == from) {
            return false;
        }
        let frame = Arc::new(ChatStream {
            event: Some(Event::Typing(chat::Typing {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
            })),
            request_id: None,
        });
        for member in members.iter().filter(|m| m.outbox.stream != from) {
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

    pub fn is_online(&self, user_id: &str) -> bool {
        self.state().online.contains_key(user_id)
    }

    /// How many users are in each room now (listeners not counted).
    pub fn member_counts<'a>(&self, rooms: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let state = self.state();
        rooms
            .into_iter()
            .map(|room_id| {
                let members = state.rooms.get(room_id).into_iter().flatten();
                let users: HashSet<&str> = members.filter_map(|m| m.user_id.as_deref()).collect();
                users.len()
            })
            .collect()
    }

    /// Tells every stream in a room where `user` is present its new name,
    /// once per stream however many of those rooms it is in. Renames are
    /// rare, so a walk of every room beats keeping a user -> rooms index
    /// up to date on every join and leave.
    fn renamed(&self, user: &UserRecord, done: &mut Committed) {
        let frame = Arc::new(ChatStream {
            event: Some(Event::UserRenamed(chat::UserRenamed {
                user_id: user.id.clone(),
                name: user.name.clone(),
            })),
            request_id: None,
        });
        let state = self.state();
        let mut told = HashSet::new();
        for members in state.rooms.values() {
            if !members
                .iter()
                .any(|m| m.user_id.as_deref() == Some(&user.id))
            {
                continue;
            }
            for member in members {
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
                        self.renamed(user, &mut done);
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
                    let room_id = msg.room_id.clone();
                    self.fan_out_frame(
                        &room_id,
                        changed_frame(msg),
                        &origin,
                        request_id,
                        &mut done,
                    );
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
        let room_id = msg.room_id.clone();
        self.fan_out_frame(&room_id, message_frame(msg, None), origin, request_id, done);
    }

    /// Sends `frame` to every member of `room_id`, and to `origin` with its
    /// `request_id` whether or not it is still a member.
    fn fan_out_frame(
        &self,
        room_id: &str,
        frame: ChatStream,
        origin: &Outbox,
        request_id: Option<String>,
        done: &mut Committed,
    ) {
        // The sender's copy differs only by its request_id (if it gave one).
        let own = request_id.map(|id| {
            let mut own = frame.clone();
            own.request_id = Some(id);
            Arc::new(own)
        });
        let frame = Arc::new(frame);
        let own = own.unwrap_or_else(|| frame.clone());
        let state = self.state();
        let mut origin_served = false;
        let mut deliver = |outbox: &Outbox, frame: Frame| {
            done.deliveries += 1;
            done.slow_ended += u64::from(outbox.push_shared(frame));
        };
        for member in state.rooms.get(room_id).into_iter().flatten() {
            if member.outbox.stream == origin.stream {
                deliver(&member.outbox, own.clone());
                origin_served = true;
            } else {
                deliver(&member.outbox, frame.clone());
            }
        }
        drop(state);
        if !origin_served {
            // The sender left the room before its message was committed: it
            // still gets its confirmation.
            deliver(origin, own);
        }
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

    #[test]
    fn member_counts_are_distinct_users_without_listeners() {
        let hub = Hub::default();
        let (ada, ada_too, bob, listener) = (probe(16), probe(16), probe(16), probe(16));
        hub.join("r", &ada.outbox, Some("ada"));
        hub.join("r", &ada_too.outbox, Some("ada"));
        hub.join("r", &bob.outbox, Some("bob"));
        hub.join("r", &listener.outbox, None);
        hub.join("quiet", &listener.outbox, None);
        assert_eq!(hub.member_counts(["r", "quiet", "nowhere"]), [2, 0, 0]);
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
}
