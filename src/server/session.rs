//! One `Chat` stream: the rooms it joined, the users it acts as, and what
//! each frame it sends does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::errors::ChatError;
use super::hub::{Hub, Outbox, Tag};
use super::identity::Caller;
use super::{now_us, validate};
use crate::proto::chat::{self, ChatStream, chat_stream::Event};
use crate::storage::{ChangeKind, MessageChange, NewMessage, Write, Writer};

/// Typing frames relayed per room per stream: at most one each this long.
/// Clients send one every few seconds while their user types (some on every
/// keystroke), and receivers show it for a few seconds after the last: one a
/// second loses nothing anyone sees, and bounds what a stream can make the
/// server fan out. Those over it are dropped without an answer: typing is a
/// hint, and an error per keystroke would only flood the typist.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// What one stream may do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_content_bytes: usize,
    pub max_rooms: usize,
}

pub struct Session {
    hub: Arc<Hub>,
    writer: Writer<Tag>,
    outbox: Outbox,
    /// Who opened the stream: every frame acts as its user.
    caller: Caller,
    limits: Limits,
    /// Room -> the user this stream joined it as (`None`: a listener).
    /// Ordered so that the resume state a gateway keeps is stable.
    joins: BTreeMap<String, Option<String>>,
    /// Users this stream acts as; each is counted once in the hub's presence.
    users: HashSet<String>,
    typing: TypingThrottle,
}

/// When this stream last had a typing frame relayed, per room: at most one
/// per [`TYPING_INTERVAL`] goes through.
#[derive(Debug, Default)]
struct TypingThrottle {
    last: HashMap<String, Instant>,
}

impl TypingThrottle {
    /// Whether a typing frame in `room_id` at `now` is relayed (and if so,
    /// the interval starts again from it).
    fn allow(&mut self, room_id: &str, now: Instant) -> bool {
        match self.last.get_mut(room_id) {
            Some(last) if now.duration_since(*last) < TYPING_INTERVAL => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                self.last.insert(room_id.to_owned(), now);
                true
            }
        }
    }

    fn forget(&mut self, room_id: &str) {
        self.last.remove(room_id);
    }
}

impl Session {
    pub fn new(
        hub: Arc<Hub>,
        writer: Writer<Tag>,
        outbox: Outbox,
        caller: Caller,
        limits: Limits,
    ) -> Self {
        Session {
            hub,
            writer,
            outbox,
            caller,
            limits,
            joins: BTreeMap::new(),
            users: HashSet::new(),
            typing: TypingThrottle::default(),
        }
    }

    /// Serves the stream until the client ends it, vanishes, sends what is
    /// not a message, falls too far behind, its token expires, or the server
    /// shuts down.
    /// Membership and presence are undone when the session is dropped,
    /// however it ends.
    #[tracing::instrument(name = "chat_stream", skip_all, fields(stream = ?self.outbox.stream()))]
    pub async fn run(mut self, mut inbound: Streaming<ChatStream>, shutdown: CancellationToken) {
        tracing::debug!("stream opened");
        let end = self.outbox.end().clone();
        // The server does not trust the gateway to close a stream whose
        // token ran out: it ends it itself, once its verifier would refuse
        // the token. A gateway renews a token by opening a new stream.
        let expiry = self
            .caller
            .remaining(SystemTime::now())
            .and_then(|left| Instant::now().checked_add(left));
        let expired = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = end.aborted() => break,
                _ = &mut expired => {
                    tracing::info!("stream ended: its token expired");
                    end.finish(ChatError::Unauthenticated(crate::auth::AuthError::Expired));
                    break;
                }
                frame = inbound.message() => match frame {
                    Ok(Some(frame)) => self.handle(frame).await,
                    Ok(None) => break,
                    Err(status) => {
                        match ChatError::from_inbound(&status) {
                            Some(error) => {
                                tracing::info!(%error, "stream ended: bad message from the client");
                                end.finish(error);
                            }
                            None => tracing::debug!(%status, "stream broken by the client"),
                        }
                        break;
                    }
                },
            }
        }
        tracing::debug!("stream closed");
    }

    async fn handle(&mut self, frame: ChatStream) {
        let request_id = frame.request_id;
        let result = match frame.event {
            Some(Event::ChatMessage(message)) => self.send(message, request_id.clone()).await,
            Some(Event::JoinRoom(join)) => self.join_room(join, request_id.clone()).await,
            Some(Event::LeaveRoom(leave)) => self.leave_room(leave),
            Some(Event::Resume(resume)) => {
                self.resume(resume).await;
                Ok(())
            }
            Some(Event::Typing(typing)) => self.typing(typing),
            Some(Event::EditMessage(edit)) => self.edit(edit, request_id.clone()).await,
            Some(Event::DeleteMessage(delete)) => self.delete(delete, request_id.clone()).await,
            Some(Event::Error(_)) => Err(ChatError::ServerFrame("error")),
            Some(Event::Presence(_)) => Err(ChatError::ServerFrame("presence")),
            Some(Event::MessageChanged(_)) => Err(ChatError::ServerFrame("message_changed")),
            Some(Event::UserRenamed(_)) => Err(ChatError::ServerFrame("user_renamed")),
            None => Err(ChatError::EmptyFrame),
        };
        if let Err(error) = result {
            self.outbox.push_error(error, request_id);
        }
    }

    /// Stores a message; its echo comes back through the hub once committed.
    async fn send(
        &mut self,
        mut message: chat::ChatMessage,
        request_id: Option<String>,
    ) -> Result<(), ChatError> {
        message.sender_id = self.caller.bind("sender_id", &message.sender_id)?;
        validate::chat_message(&message, self.limits.max_content_bytes)?;
        self.caller.may_enter(&message.room_id)?;
        self.room_for(&message.room_id)?;
        // Sending to a room joins it, so the sender gets the echo that
        // confirms its message, and every message after it. The store
        // registers the sender with the message itself (after the name its
        // token gives it, if any). A stream already in the room stays in it
        // as whoever it joined as.
        if self.act_as(&message.sender_id) {
            self.seed_name(&message.sender_id).await;
        }
        if !self.joins.contains_key(&message.room_id)
            && self.enter(&message.room_id, Some(&message.sender_id))
        {
            self.push_resume();
        }
        if message.id.is_empty() {
            message.id = uuid::Uuid::now_v7().to_string();
        }
        let write = Write::Message(NewMessage {
            id: message.id,
            room_id: message.room_id,
            sender_id: message.sender_id,
            content: message.content,
            timestamp_us: now_us(),
        });
        let tag = Tag::Message {
            origin: self.outbox.clone(),
            request_id,
        };
        self.writer
            .submit(write, tag)
            .await
            .map_err(ChatError::NotStored)
    }

    /// Edits one of the caller's messages; every member of the room (and
    /// this stream) gets the result through the hub once committed.
    async fn edit(
        &mut self,
        mut edit: chat::EditMessage,
        request_id: Option<String>,
    ) -> Result<(), ChatError> {
        edit.sender_id = self.caller.bind("sender_id", &edit.sender_id)?;
        validate::edit_message(&edit, self.limits.max_content_bytes)?;
        self.caller.may_enter(&edit.room_id)?;
        let change = MessageChange {
            room_id: edit.room_id,
            seq: edit.seq,
            sender_id: edit.sender_id,
            kind: ChangeKind::Edit(edit.content),
            now_us: now_us(),
        };
        self.change(change, request_id).await
    }

    async fn delete(
        &mut self,
        mut delete: chat::DeleteMessage,
        request_id: Option<String>,
    ) -> Result<(), ChatError> {
        delete.sender_id = self.caller.bind("sender_id", &delete.sender_id)?;
        validate::delete_message(&delete)?;
        self.caller.may_enter(&delete.room_id)?;
        let change = MessageChange {
            room_id: delete.room_id,
            seq: delete.seq,
            sender_id: delete.sender_id,
            kind: ChangeKind::Delete,
            now_us: now_us(),
        };
        self.change(change, request_id).await
    }

    /// Queues a change: whether the caller may make it (its sender), and
    /// what it does, is for the writer to say, in the room's one order.
    async fn change(
        &mut self,
        change: MessageChange,
        request_id: Option<String>,
    ) -> Result<(), ChatError> {
        let tag = Tag::Change {
            origin: self.outbox.clone(),
            request_id,
            room_id: change.room_id.clone(),
            seq: change.seq,
        };
        self.writer
            .submit(Write::Change(change), tag)
            .await
            .map_err(ChatError::ChangeNotStored)
    }

    /// An explicit join, always answered with who is in the room: also when
    /// the stream is already in it (it joined by sending, or joins again).
    async fn join_room(
        &mut self,
        join: chat::JoinRoom,
        request_id: Option<String>,
    ) -> Result<(), ChatError> {
        let join = self.admit(join)?;
        let changed = self.join(&join).await;
        self.hub.ready(&join.room_id).await;
        self.hub.snapshot(&join.room_id, &self.outbox, request_id);
        if changed {
            self.push_resume();
        }
        Ok(())
    }

    fn leave_room(&mut self, leave: chat::LeaveRoom) -> Result<(), ChatError> {
        validate::room_id(&leave.room_id)?;
        self.typing.forget(&leave.room_id);
        if self.joins.remove(&leave.room_id).is_some() {
            self.hub.leave(&leave.room_id, self.outbox.stream());
            self.push_resume();
        }
        Ok(())
    }

    /// The state a gateway replays on a re-opened stream: back in every
    /// room, each with a snapshot (the client may have missed changes).
    async fn resume(&mut self, resume: chat::Resume) {
        let mut changed = false;
        for join in resume.joins {
            // A resume comes from the client like any frame: it gets back
            // only into rooms its token still allows, as its own user.
            match self.admit(join) {
                Ok(join) => {
                    changed |= self.join(&join).await;
                    self.hub.ready(&join.room_id).await;
                    self.hub.snapshot(&join.room_id, &self.outbox, None);
                }
                Err(ChatError::Invalid(_)) => {}
                Err(refused) => self.outbox.push_error(refused, None),
            }
        }
        if changed {
            self.push_resume();
        }
    }

    fn typing(&mut self, mut typing: chat::Typing) -> Result<(), ChatError> {
        typing.user_id = self.caller.bind("user_id", &typing.user_id)?;
        validate::room_id(&typing.room_id)?;
        validate::user_id(&typing.user_id)?;
        self.caller.may_enter(&typing.room_id)?;
        if !self.joins.contains_key(&typing.room_id) {
            return Err(ChatError::NotJoined(typing.room_id));
        }
        if !self.typing.allow(&typing.room_id, Instant::now()) {
            return Ok(());
        }
        if self
            .hub
            .typing(&typing.room_id, self.outbox.stream(), &typing.user_id)
        {
            Ok(())
        } else {
            Err(ChatError::NotJoined(typing.room_id))
        }
    }

    /// A join this stream may make: its user bound to the token's, a room
    /// the token allows, and room for one more room on this stream.
    fn admit(&self, mut join: chat::JoinRoom) -> Result<chat::JoinRoom, ChatError> {
        join.user_id = self.caller.bind("user_id", &join.user_id)?;
        validate::join_room(&join)?;
        self.caller.may_enter(&join.room_id)?;
        self.room_for(&join.room_id)?;
        Ok(join)
    }

    /// Whether this stream may be in `room_id`: it is already, or it is in
    /// fewer rooms than the limit. Each room costs the server a member
    /// entry in the hub and a line of the resume state.
    fn room_for(&self, room_id: &str) -> Result<(), ChatError> {
        if self.joins.len() < self.limits.max_rooms || self.joins.contains_key(room_id) {
            Ok(())
        } else {
            Err(ChatError::TooManyRooms(self.limits.max_rooms))
        }
    }

    /// The display name the token vouches for, if it is a valid one.
    fn token_name(&self) -> Option<String> {
        let name = self.caller.name()?;
        validate::display_name(name).ok().map(str::to_owned)
    }

    /// Registers `user_id` with the name its token gives it, before anything
    /// else registers it under its id. A user the store already knows keeps
    /// its name: a rename (SetUserName) outlives the next token.
    async fn seed_name(&self, user_id: &str) {
        let Some(name) = self.token_name() else {
            return;
        };
        let write = Write::EnsureUser {
            user_id: user_id.to_owned(),
            name: Some(name),
            now_us: now_us(),
        };
        if self.writer.submit(write, Tag::User(None)).await.is_err() {
            tracing::warn!("user not registered: writer stopped");
        }
    }

    /// Joins a room as a user (an empty `user_id`: as a listener),
    /// registering the user if this stream has not acted as it yet; false if
    /// the stream was already in the room as that user.
    async fn join(&mut self, join: &chat::JoinRoom) -> bool {
        let user_id = Some(join.user_id.as_str()).filter(|u| !u.is_empty());
        // A join that names no user does not take away the one the stream
        // is already in the room as (the handout's flow: send, then join).
        if user_id.is_none() && self.joins.contains_key(&join.room_id) {
            return false;
        }
        let new_user = user_id.is_some_and(|user| self.act_as(user));
        let changed = self.enter(&join.room_id, user_id);
        if let (true, Some(user_id)) = (new_user, user_id) {
            // Registering is confirmed to nobody, so nobody waits for it.
            let write = Write::EnsureUser {
                user_id: user_id.to_owned(),
                name: self.token_name(),
                now_us: now_us(),
            };
            if self.writer.submit(write, Tag::User(None)).await.is_err() {
                tracing::warn!("user not registered: writer stopped");
            }
        }
        changed
    }

    /// Makes this stream a member of the room as `user_id` (or changes the
    /// user it is a member as); false if it already was. The caller tells
    /// the gateway the new state ([`Session::push_resume`]).
    fn enter(&mut self, room_id: &str, user_id: Option<&str>) -> bool {
        let changed = self.hub.join(room_id, &self.outbox, user_id);
        if changed {
            self.joins
                .insert(room_id.to_owned(), user_id.map(str::to_owned));
        }
        changed
    }

    /// Counts this stream as `user_id` being online; true the first time.
    fn act_as(&mut self, user_id: &str) -> bool {
        if self.users.contains(user_id) {
            return false;
        }
        self.users.insert(user_id.to_owned());
        self.hub.user_connected(user_id);
        true
    }

    /// Tells the gateway the state to restore if this stream must be re-opened.
    fn push_resume(&self) {
        let joins = self
            .joins
            .iter()
            .map(|(room_id, user_id)| chat::JoinRoom {
                room_id: room_id.clone(),
                user_id: user_id.clone().unwrap_or_default(),
            })
            .collect();
        self.outbox.push(ChatStream {
            event: Some(Event::Resume(chat::Resume { joins })),
            request_id: None,
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for room_id in self.joins.keys() {
            self.hub.leave(room_id, self.outbox.stream());
        }
        for user_id in &self.users {
            self.hub.user_disconnected(user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::server::hub::{Frame, StreamId};
    use crate::storage::{SqliteOptions, SqliteStore, WriterHandle, WriterOptions};

    /// A session on a real store, and what it sends back.
    struct Harness {
        session: Session,
        rx: mpsc::Receiver<Frame>,
        _writer: WriterHandle,
        _dir: tempfile::TempDir,
    }

    const LIMITS: Limits = Limits {
        max_content_bytes: 4096,
        max_rooms: 100,
    };

    fn harness() -> Harness {
        harness_as(Caller::Anyone, LIMITS)
    }

    fn harness_as(caller: Caller, limits: Limits) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("chat.db"), SqliteOptions::default()).unwrap();
        let hub = Arc::new(Hub::default());
        let fan_out = hub.clone();
        let (writer, handle) = Writer::spawn(
            Arc::new(store),
            WriterOptions::default(),
            move |results, _| {
                fan_out.committed(results);
            },
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let outbox = Outbox::new(StreamId::next(), tx, Arc::default());
        Harness {
            session: Session::new(hub, writer, outbox, caller, limits),
            rx,
            _writer: handle,
            _dir: dir,
        }
    }

    fn frame(event: Event, request_id: &str) -> ChatStream {
        ChatStream {
            event: Some(event),
            request_id: Some(request_id.into()),
        }
    }

    fn join(room: &str, user: &str) -> Event {
        Event::JoinRoom(chat::JoinRoom {
            room_id: room.into(),
            user_id: user.into(),
        })
    }

    fn message(room: &str, sender: &str, id: &str) -> Event {
        Event::ChatMessage(chat::ChatMessage {
            id: id.into(),
            room_id: room.into(),
            sender_id: sender.into(),
            content: "hi".into(),
            ..Default::default()
        })
    }

    impl Harness {
        async fn handle(&mut self, event: Event, request_id: &str) {
            self.session.handle(frame(event, request_id)).await;
        }

        /// The next frame sent back (waiting for the writer, if need be).
        async fn next(&mut self) -> ChatStream {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("a frame in time")
                .expect("the stream is open");
            Arc::unwrap_or_clone(frame)
        }

        fn nothing_more(&mut self) {
            assert!(self.rx.try_recv().is_err(), "nothing else was sent");
        }
    }

    #[tokio::test]
    async fn a_join_is_answered_with_a_snapshot_carrying_the_request_id_then_resume() {
        let mut h = harness();
        h.handle(join("r", "ada"), "j1").await;
        let answer = h.next().await;
        assert_eq!(answer.request_id.as_deref(), Some("j1"));
        assert!(
            matches!(answer.event, Some(Event::Presence(ref p)) if p.snapshot && p.online == ["ada"])
        );
        let resume = h.next().await;
        let Some(Event::Resume(resume)) = resume.event else {
            panic!("{resume:?}")
        };
        assert_eq!(
            (
                resume.joins[0].room_id.as_str(),
                resume.joins[0].user_id.as_str()
            ),
            ("r", "ada")
        );
        h.nothing_more();
    }

    #[tokio::test]
    async fn a_join_of_a_room_entered_by_sending_is_answered_too() {
        let mut h = harness();
        h.handle(message("r", "ada", "m1"), "s1").await;
        assert!(matches!(h.next().await.event, Some(Event::Resume(_))));
        let echo = h.next().await;
        assert_eq!(echo.request_id.as_deref(), Some("s1"));
        // Already in the room, as the same user: the answer, and no new state.
        h.handle(join("r", "ada"), "j1").await;
        let answer = h.next().await;
        assert_eq!(answer.request_id.as_deref(), Some("j1"));
        assert!(matches!(answer.event, Some(Event::Presence(ref p)) if p.snapshot));
        h.nothing_more();
        // A join naming no user keeps the stream in the room as Ada.
        h.handle(join("r", ""), "j2").await;
        let answer = h.next().await;
        assert!(
            matches!(answer.event, Some(Event::Presence(ref p)) if p.online == ["ada"]),
            "{answer:?}"
        );
        h.nothing_more();
    }

    #[tokio::test]
    async fn a_listener_joins_without_a_user_and_is_not_online() {
        let mut h = harness();
        h.handle(join("r", ""), "j1").await;
        let answer = h.next().await;
        assert!(
            matches!(answer.event, Some(Event::Presence(ref p)) if p.snapshot && p.online.is_empty())
        );
        let Some(Event::Resume(resume)) = h.next().await.event else {
            panic!("expected the resume state")
        };
        assert_eq!(resume.joins[0].user_id, "", "replayed as a listener");
        assert!(h.session.users.is_empty());
        assert!(!h.session.hub.is_online(""));
    }

    #[tokio::test]
    async fn refusals_are_error_events_with_their_codes() {
        let mut h = harness();
        let cases = [
            (join("", "ada"), chat::Code::InvalidArgument),
            (
                Event::Typing(chat::Typing {
                    room_id: "r".into(),
                    user_id: "ada".into(),
                }),
                chat::Code::FailedPrecondition,
            ),
            (
                Event::Presence(chat::Presence::default()),
                chat::Code::InvalidArgument,
            ),
            (message("r", "", "m1"), chat::Code::InvalidArgument),
        ];
        for (i, (event, code)) in cases.into_iter().enumerate() {
            let request_id = format!("bad-{i}");
            h.handle(event, &request_id).await;
            let answer = h.next().await;
            assert_eq!(answer.request_id, Some(request_id));
            let Some(Event::Error(e)) = answer.event else {
                panic!("case {i}: {answer:?}")
            };
            assert_eq!(e.code, code as i32, "case {i}: {e:?}");
        }
        h.session
            .handle(ChatStream {
                event: None,
                request_id: None,
            })
            .await;
        assert!(
            matches!(h.next().await.event, Some(Event::Error(ref e)) if e.message.contains("empty frame"))
        );
        h.nothing_more();
    }

    fn alice(rooms: Option<&[&str]>) -> Caller {
        use crate::auth::Claims;
        use crate::server::identity::Identity;
        Caller::User(Arc::new(Identity {
            claims: Claims {
                sub: "alice".into(),
                exp: u64::MAX / 2,
                nbf: None,
                iat: None,
                name: None,
                rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
            },
            valid_until: Some(SystemTime::now() + Duration::from_secs(3600)),
        }))
    }

    async fn refused(h: &mut Harness, event: Event, request_id: &str) -> chat::Error {
        h.handle(event, request_id).await;
        let answer = h.next().await;
        assert_eq!(answer.request_id.as_deref(), Some(request_id));
        match answer.event {
            Some(Event::Error(e)) => e,
            other => panic!("{request_id}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn with_a_token_every_frame_acts_as_its_user() {
        let mut h = harness_as(alice(None), LIMITS);
        for (i, event) in [
            join("r", "bob"),
            message("r", "bob", "m1"),
            Event::Typing(chat::Typing {
                room_id: "r".into(),
                user_id: "bob".into(),
            }),
        ]
        .into_iter()
        .enumerate()
        {
            let e = refused(&mut h, event, &format!("spoof-{i}")).await;
            assert_eq!(e.code, chat::Code::PermissionDenied as i32, "{e:?}");
        }
        assert!(h.session.joins.is_empty() && h.session.users.is_empty());
        // An empty user is the token's.
        h.handle(join("r", ""), "j1").await;
        let answer = h.next().await;
        assert!(
            matches!(answer.event, Some(Event::Presence(ref p)) if p.online == ["alice"]),
            "{answer:?}"
        );
        assert_eq!(h.session.joins["r"].as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn the_rooms_claim_and_the_room_limit_refuse_before_anything_changes() {
        let limits = Limits {
            max_rooms: 1,
            ..LIMITS
        };
        let mut h = harness_as(alice(Some(&["a", "b"])), limits);
        let e = refused(&mut h, join("c", ""), "c").await;
        assert_eq!(e.code, chat::Code::PermissionDenied as i32, "{e:?}");
        h.handle(join("a", ""), "a").await;
        let _ = (h.next().await, h.next().await);
        let e = refused(&mut h, join("b", ""), "b").await;
        assert_eq!(e.code, chat::Code::ResourceExhausted as i32, "{e:?}");
        let e = refused(&mut h, message("b", "", "m1"), "m1").await;
        assert_eq!(e.code, chat::Code::ResourceExhausted as i32, "{e:?}");
        assert_eq!(h.session.joins.keys().collect::<Vec<_>>(), ["a"]);
        // Joining a room it is already in is not one more.
        h.handle(join("a", ""), "a-again").await;
        assert!(matches!(h.next().await.event, Some(Event::Presence(_))));
        h.nothing_more();
    }

    #[test]
    fn typing_goes_through_once_per_interval_per_room() {
        let mut throttle = TypingThrottle::default();
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        assert!(throttle.allow("a", t0));
        assert!(!throttle.allow("a", later(10)));
        assert!(throttle.allow("b", later(10)), "each room on its own");
        assert!(!throttle.allow("a", later(999)));
        assert!(throttle.allow("a", later(1000)));
        assert!(
            !throttle.allow("a", later(1500)),
            "counted from the last relayed"
        );
        throttle.forget("a");
        assert!(
            throttle.allow("a", later(1600)),
            "a room left and joined again"
        );
    }

    #[tokio::test]
    async fn leaving_drops_the_room_from_the_resume_state() {
        let mut h = harness();
        h.handle(join("a", "ada"), "j1").await;
        h.handle(join("b", "ada"), "j2").await;
        let _ = (
            h.next().await,
            h.next().await,
            h.next().await,
            h.next().await,
        );
        h.handle(
            Event::LeaveRoom(chat::LeaveRoom {
                room_id: "a".into(),
            }),
            "l1",
        )
        .await;
        let Some(Event::Resume(resume)) = h.next().await.event else {
            panic!("expected the resume state")
        };
        let rooms: Vec<_> = resume.joins.iter().map(|j| j.room_id.as_str()).collect();
        assert_eq!(rooms, ["b"]);
        // Leaving a room it is not in changes nothing.
        h.handle(
            Event::LeaveRoom(chat::LeaveRoom {
                room_id: "a".into(),
            }),
            "l2",
        )
        .await;
        h.nothing_more();
    }
}
