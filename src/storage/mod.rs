//! Durable storage of messages and users, behind the [`Store`] trait.
//!
//! # Layout
//! - [`Store`]: what the chat server needs from an engine. Its methods block:
//!   they run on the writer thread or under `spawn_blocking`, never on the
//!   async runtime's worker threads.
//! - `sqlite`: the embedded default engine, [`SqliteStore`].
//! - `postgres`: the engine for several servers on one database,
//!   [`PgStore`] (`--db postgres://...`).
//! - `db_file`: the lock that keeps two stores off one database file, and
//!   the watch that notices the file being deleted or replaced while open.
//! - `checkpointer`: the thread that copies SQLite's WAL back into the
//!   database file, so that no commit waits for a checkpoint.
//! - `writer`: the group-commit loop, [`Writer`]: one thread owns every write,
//!   applies whatever queued up while the previous commit ran as one
//!   transaction, then hands the results, in order, to a callback. That one
//!   thread is what gives every room a single order.

mod checkpointer;
#[cfg(test)]
mod conformance;
mod db_file;
mod postgres;
mod sqlite;
mod writer;

pub use self::postgres::{PgOptions, PgStore, PgTarget, is_postgres_url};
pub use db_file::DbFileError;
pub use sqlite::{SqliteOptions, SqliteStore};
pub use writer::{Writer, WriterHandle, WriterOptions};

/// A validated message on its way to storage: id and timestamp already set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    pub room_id: String,
    pub sender_id: String,
    pub content: String,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
}

/// A message as stored, with its place in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    pub room_id: String,
    pub sender_id: String,
    pub content: String,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Per room: 1 for the first message, then strictly increasing, no gaps.
    pub seq: u64,
    /// When its sender last edited it (microseconds since the Unix epoch).
    pub edited_us: Option<i64>,
    /// Deleted by its sender: `content` is empty, the seq stays taken.
    pub deleted: bool,
    /// The room's revision of its last edit or deletion; 0 if none.
    pub revision: u64,
}

/// An edit or deletion of a stored message, asked for by `sender_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    pub room_id: String,
    pub seq: u64,
    /// Who asks: the change is refused unless it is the message's sender.
    pub sender_id: String,
    pub kind: ChangeKind,
    /// Microseconds since the Unix epoch.
    pub now_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// New content, already validated.
    Edit(String),
    /// Empty the content and mark the message deleted.
    Delete,
}

/// Why a [`MessageChange`] was not applied. The rest of its batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefused {
    /// No message at that (room, seq).
    NotFound,
    /// The message has another sender.
    NotSender,
    /// An edit of a deleted message.
    Deleted,
}

/// A room as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub room_id: String,
    pub last_seq: u64,
    /// When its newest message was stored (microseconds since the epoch).
    pub last_message_us: i64,
}

/// Where a page of the directory starts: just after this room, in the
/// order of [`Store::rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    pub last_message_us: i64,
    pub room_id: String,
}

impl RoomCursor {
    /// The position just after `room`.
    pub fn after(room: &RoomRecord) -> Self {
        RoomCursor {
            last_message_us: room.last_message_us,
            room_id: room.room_id.clone(),
        }
    }
}

/// A directory query, already normalised by the caller (limit >= 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsQuery {
    pub limit: usize,
    /// `None`: from the most recently active room.
    pub after: Option<RoomCursor>,
}

/// A page of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsPage {
    pub rooms: Vec<RoomRecord>,
    /// More rooms follow the page.
    pub has_more: bool,
}

/// "What changed in a room since this revision", already normalised by the
/// caller (limit in 1..=500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesQuery {
    pub room_id: String,
    pub limit: usize,
    pub after_revision: u64,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub created_at_us: i64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store a message, registering its sender if new. A message whose
    /// (room_id, sender_id, id) is already stored is not stored again.
    Message(NewMessage),
    /// Register a user unless already registered, named `name` (a token's
    /// name claim), or its id without one.
    EnsureUser {
        user_id: String,
        name: Option<String>,
        now_us: i64,
    },
    /// Set a user's display name, registering the user if new.
    SetUserName {
        user_id: String,
        name: String,
        now_us: i64,
    },
    /// Edit or delete a stored message: it keeps its seq, takes the room's
    /// next revision, and the room's last message time stays.
    Change(MessageChange),
}

/// What one [`Write`] did, in the same position of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Newly stored, with its seq.
    Stored(StoredMessage),
    /// Already stored earlier: the original, with its original seq and time.
    Duplicate(StoredMessage),
    /// The user after an `EnsureUser` or `SetUserName`.
    User(UserRecord),
    /// The message after a `Change`, with its new revision.
    Changed(StoredMessage),
    /// A `Change` that changes nothing (the same edit again, a deletion of
    /// a deleted message): the message as it is, no revision taken.
    Unchanged(StoredMessage),
    /// A `Change` refused; nothing written for it.
    Refused(ChangeRefused),
}

/// A history query, already normalised by the caller (limit in 1..=500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub room_id: String,
    pub limit: usize,
    /// 0 = no upper bound; else only seq < before_seq.
    pub before_seq: u64,
    /// `None`: the newest page. Else only seq > after_seq, and the page
    /// starts at the oldest (`Some(0)`: from the room's first message).
    pub after_seq: Option<u64>,
}

/// A page of history, oldest first (of changes: in revision order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<StoredMessage>,
    /// More messages lie beyond the page in the direction of the query: older
    /// ones for a backwards page, newer ones for a page after `after_seq`,
    /// later changes for a page of changes.
    pub has_more: bool,
    /// The room's revision read before the page (0 for an unknown room):
    /// every change the page may not reflect has a higher one.
    pub revision: u64,
}

/// A storage failure, by what a caller can do about it: the server maps each
/// kind to one gRPC status code (`server::errors`), so a client can tell a
/// full disk from a transient failure worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk (or a quota) is full; nothing of the batch was written.
    #[error("storage is full: {0}")]
    Full(String),
    /// The database is locked by another connection or process, or an I/O
    /// call failed: the same write may well succeed if retried.
    #[error("storage temporarily unavailable: {0}")]
    Unavailable(String),
    /// The database file is damaged or is not a database.
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    /// The database file cannot be used: another store has it open, or it
    /// was deleted or replaced while open (see `db_file`).
    #[error("{0}")]
    File(String),
    /// The writer thread has stopped (the server is shutting down).
    #[error("the storage writer has stopped")]
    Stopped,
    /// Anything else: a bug, or a state of the file this program did not
    /// expect (a newer schema, a broken invariant).
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let message = e.to_string();
        match e.sqlite_error_code() {
            Some(C::DiskFull) => StoreError::Full(message),
            Some(
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::CannotOpen
                | C::FileLockingProtocolFailed
                | C::OutOfMemory
                | C::ReadOnly
                | C::PermissionDenied,
            ) => StoreError::Unavailable(message),
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Corrupt(message),
            _ => StoreError::Internal(message),
        }
    }
}

/// What the chat server needs from a storage engine.
pub trait Store: Send + Sync + 'static {
    /// Applies the writes in order as one atomic, durable transaction, and
    /// returns one [`Written`] per write, in order. Assigns each new message
    /// the next seq of its room. Called only from the writer thread.
    fn write_batch(&self, writes: Vec<Write>) -> Result<Vec<Written>, StoreError>;

    /// A page of a room's history (empty for an unknown room).
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;

    /// The messages of a room changed after a revision, each as it is now,
    /// in the order of their last change.
    fn changes(&self, query: &ChangesQuery) -> Result<HistoryPage, StoreError>;

    /// A page of the rooms that have messages, by the time of their newest
    /// message, newest first (ties: by room id, descending).
    fn rooms(&self, query: &RoomsQuery) -> Result<RoomsPage, StoreError>;

    /// A registered user, or `None`.
    fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Each room's newest seq and revision, in the order asked (0, 0 for a
    /// room without messages). The bus's check of what it lost; an engine
    /// shared by several servers answers in one query.
    fn room_tops(&self, rooms: &[String]) -> Result<Vec<(u64, u64)>, StoreError> {
        rooms
            .iter()
            .map(|room_id| {
                let page = self.history(&HistoryQuery {
                    room_id: room_id.clone(),
                    limit: 1,
                    before_seq: 0,
                    after_seq: None,
                })?;
                let seq = page.messages.last().map_or(0, |m| m.seq);
                Ok((seq, page.revision))
            })
            .collect()
    }

    /// Whether writes are still stored durably: false when the engine knows
    /// they no longer are (its file was deleted, say). Polled about once a
    /// second for the health check, so it must be cheap.
    fn healthy(&self) -> bool {
        true
    }
}
