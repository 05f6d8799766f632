//! Durable storage of messages and users, behind the [`Store`] trait.
//!
//! # Layout
//! - [`Store`]: what the chat server needs from an engine. Its methods block:
//!   they run on the writer thread or under `spawn_blocking`, never on the
//!   async runtime's worker threads.
//! - `sqlite`: the embedded default engine, [`SqliteStore`].
//! - `db_file`: the lock that keeps two stores off one database file, and
//!   the watch that notices the file being deleted or replaced while open.
//! - `checkpointer`: the thread that copies SQLite's WAL back into the
//!   database file, so that no commit waits for a checkpoint.
//! - `writer`: the group-commit loop, [`Writer`]: one thread owns every write,
//!   applies whatever queued up while the previous commit ran as one
//!   transaction, then hands the results, in order, to a callback. That one
//!   thread is what gives every room a single order.

mod checkpointer;
mod db_file;
mod sqlite;
mod writer;

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
    /// Register a user (display name = id) unless already registered.
    EnsureUser { user_id: String, now_us: i64 },
    /// Set a user's display name, registering the user if new.
    SetUserName {
        user_id: String,
        name: String,
        now_us: i64,
    },
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
}

/// A history query, already normalised by the caller (limit in 1..=500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub room_id: String,
    pub limit: usize,
    /// 0 = no upper bound; else only seq < before_seq.
    pub before_seq: u64,
    /// 0 = none; else only seq > after_seq, and the page starts at the oldest.
    pub after_seq: u64,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<StoredMessage>,
    /// More messages lie beyond the page in the direction of the query: older
    /// ones for a backwards page, newer ones for a page after `after_seq`.
    pub has_more: bool,
}

/// A storage failure (I/O, corruption, a full disk...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
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

    /// A registered user, or `None`.
    fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Whether writes are still stored durably: false when the engine knows
    /// they no longer are (its file was deleted, say). Polled about once a
    /// second for the health check, so it must be cheap.
    fn healthy(&self) -> bool {
        true
    }
}
