//! [`PgStore`]: the PostgreSQL engine, for several chat servers on one
//! database.
//!
//! # Why tokio-postgres, driven by a runtime of the store's own
//! The [`Store`] trait blocks (the writer thread, `spawn_blocking`). The
//! blocking `postgres` crate would fit that, but every one of its
//! connections owns a runtime of its own and panics when used or dropped
//! inside async code, where the server drops its store. Here one small
//! runtime, owned by the store, drives every connection, and the blocking
//! methods wait on it ([`tokio::runtime::Handle::block_on`]). The async
//! client also pipelines: the writer sends a batch's statements without
//! waiting for each reply (one round trip per batch, two when it edits or
//! resends, see `apply`), and concurrent reads share a connection. That,
//! and a handful of connections, is why there is no pool crate.
//!
//! # One order per room, with several servers writing
//! Every server may write any room. A batch's transaction locks the counter
//! row of each room it writes (`rooms.last_seq`, `SELECT ... FOR UPDATE`),
//! in the order of the room names, so that two servers writing the same
//! rooms queue instead of deadlocking. Holding the lock, it inserts its
//! messages numbered from the counter, advances the counter, and commits.
//! A message already stored (a resend, maybe to another server) fails the
//! insert on its unique key, and the batch goes again, reading first which
//! of its messages are stored (the lock means no other server can be
//! storing them right now) and numbering only the rest. A room's
//! seqs are thus handed out by one transaction at a time: from 1, with no
//! gap and no seq twice, whichever server wrote them. Nothing is cached
//! about a room but that it exists.
//!
//! # Schema
//! Created and migrated at start, under an advisory lock (two servers may
//! start at once), and versioned in `schema_version`. Tables live in the
//! connection's current schema (the first of its `search_path`), so one
//! database can hold several independent chat systems, as the tests do.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::{
    ChangeKind, ChangeRefused, ChangesQuery, HistoryPage, HistoryQuery, MessageChange, NewMessage,
    RoomRecord, RoomsPage, RoomsQuery, Store, StoreError, StoredMessage, UserRecord, Write,
    Written,
};

/// Stored in `schema_version`; bump it and add a step to [`MIGRATIONS`]
/// whenever the schema changes.
const SCHEMA_VERSION: i32 = 1;

/// `MIGRATIONS[v]` takes the schema from version `v` to `v + 1`.
///
/// Identifiers are `COLLATE "C"`: compared byte by byte, which is what a
/// room or user id means, and cheaper to index than a linguistic collation.
/// Messages carry no foreign key to `rooms`: the writer inserts them under
/// the room's lock, and a key check would cost an index probe per message.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE rooms (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE \"C\" UNIQUE NOT NULL,
    -- The last seq handed out: the row every writer of the room locks.
    last_seq bigint NOT NULL,
    -- The last revision (edit or deletion) handed out.
    last_revision bigint NOT NULL DEFAULT 0,
    -- When its newest message was stored: the directory's order.
    last_message_us bigint NOT NULL DEFAULT 0
);
CREATE INDEX rooms_by_activity ON rooms (last_message_us, name, last_seq);
CREATE TABLE messages (
    room bigint NOT NULL,
    seq bigint NOT NULL,
    id text COLLATE \"C\" NOT NULL,
    sender_id text COLLATE \"C\" NOT NULL,
    content text NOT NULL,
    timestamp_us bigint NOT NULL,
    edited_us bigint,
    deleted boolean NOT NULL DEFAULT false,
    revision bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX messages_by_id ON messages (room, id, sender_id);
CREATE INDEX messages_by_revision ON messages (room, revision) WHERE revision > 0;
CREATE TABLE users (
    id text COLLATE \"C\" PRIMARY KEY,
    name text NOT NULL,
    created_at bigint NOT NULL
);
"];

/// Serialises migrations of one schema across servers starting at once:
/// `CREATE TABLE IF NOT EXISTS` alone races on the catalog.
const MIGRATION_LOCK: &str = "
SELECT pg_advisory_xact_lock(hashtext('wsgate schema ' || current_schema()))";

const CREATE_VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
)";

/// Rooms the batch writes that this store has not seen yet; sorted, like
/// the locks, so that two servers creating the same rooms cannot deadlock.
const INSERT_ROOMS: &str = "
INSERT INTO rooms (name, last_seq)
SELECT name, 0 FROM unnest($1::text[]) AS name ORDER BY name
ON CONFLICT (name) DO NOTHING";

/// The counter rows, locked in name order (the lock is taken row by row as
/// the sorted rows come out).
const LOCK_ROOMS: &str = "
SELECT id, name, last_seq, last_revision FROM rooms WHERE name = ANY($1::text[])
ORDER BY name FOR UPDATE";

/// Which of the batch's (room, sender, id) are already stored. Run after
/// the locks, in a statement of its own, so that it sees whatever another
/// server committed to these rooms while this one waited for them.
///
/// One index probe per message, spelled out (`LATERAL ... LIMIT 1`): as a
/// plain join, the planner, told of a thousand keys, would rather hash
/// them and scan the whole table (measured: 110 ms a batch at 100k rows,
/// growing with the table).
const SELECT_DUPLICATES: &str = "
SELECT r.name, m.seq, m.id, m.sender_id, m.content, m.timestamp_us, m.edited_us, m.deleted,
       m.revision
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(room, sender_id, id)
JOIN rooms r ON r.name = k.room
CROSS JOIN LATERAL (
    SELECT * FROM messages m
    WHERE m.room = r.id AND m.id = k.id AND m.sender_id = k.sender_id
    LIMIT 1
) m";

/// The end of both message inserts: their senders not known to be users
/// (`$7`, `$8`), registered in the same statement.
macro_rules! register_senders {
    () => {
        "), u AS (
    INSERT INTO users (id, name, created_at)
    SELECT id, id, created_at FROM unnest($7::text[], $8::bigint[]) AS u(id, created_at)
    ON CONFLICT (id) DO NOTHING
)
SELECT 1"
    };
}

/// A run of new messages, and their senders not known to be registered, in
/// one statement. No `ON CONFLICT` on messages: under the room lock a clash
/// is a bug, and must fail the batch rather than lose a message.
const INSERT_MESSAGES: &str = concat!(
    "
WITH m AS (
    INSERT INTO messages (room, seq, id, sender_id, content, timestamp_us)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[])
",
    register_senders!()
);

/// A run of new messages numbered by the database, for a batch that does
/// not look for resends first (see `apply_numbered`): each message names
/// its room by its place in `$9` (the batch's rooms, as locked) and its
/// place among the batch's messages to that room, and its seq is the
/// room's counter, as locked, plus that place. Run after the lock, in a
/// statement of its own, so the counter read is the locked one. A room
/// that is not there leaves `room` NULL, which the table refuses: the batch
/// fails rather than a message going missing.
const INSERT_NUMBERED: &str = concat!(
    "
WITH base AS MATERIALIZED (
    SELECT n.i, r.id, r.last_seq
    FROM unnest($9::text[]) WITH ORDINALITY AS n(name, i)
    JOIN rooms r ON r.name = n.name
), m AS (
    INSERT INTO messages (room, seq, id, sender_id, content, timestamp_us)
    SELECT b.id, b.last_seq + k.place, k.id, k.sender_id, k.content, k.timestamp_us
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])
        AS k(i, place, id, sender_id, content, timestamp_us)
    LEFT JOIN base b ON b.i = k.i
",
    register_senders!()
);

/// The counters of a batch numbered by the database: each advanced by the
/// messages it got (every room of such a batch gets one at least).
const ADVANCE_NUMBERED: &str = "
UPDATE rooms SET last_seq = rooms.last_seq + a.added, last_message_us = a.last_message_us
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS a(name, added, last_message_us)
WHERE rooms.name = a.name";

/// The messages the batch's edits and deletions name, as they are (after
/// the locks, like the duplicates; one primary-key probe each, likewise).
const SELECT_TARGETS: &str = "
SELECT r.name, m.seq, m.id, m.sender_id, m.content, m.timestamp_us, m.edited_us, m.deleted,
       m.revision
FROM unnest($1::text[], $2::bigint[]) AS k(room, seq)
JOIN rooms r ON r.name = k.room
CROSS JOIN LATERAL (
    SELECT * FROM messages m WHERE m.room = r.id AND m.seq = k.seq
) m";

/// The final state of each message the batch changed; after the inserts,
/// so a message stored and changed in one batch is found.
const UPDATE_MESSAGES: &str = "
UPDATE messages SET content = u.content, edited_us = u.edited_us, deleted = u.deleted,
    revision = u.revision
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::boolean[], $6::bigint[])
    AS u(room, seq, content, edited_us, deleted, revision)
WHERE messages.room = u.room AND messages.seq = u.seq";

/// A room's time moves only when it got a message (NULL: it did not).
const ADVANCE_ROOMS: &str = "
UPDATE rooms SET last_seq = a.last_seq, last_revision = a.last_revision,
    last_message_us = coalesce(a.last_message_us, rooms.last_message_us)
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
    AS a(id, last_seq, last_revision, last_message_us)
WHERE rooms.id = a.id";

/// The user, inserted if new. An existing row comes from the second
/// branch; a new one from the first (the statement's snapshot predates it).
const ENSURE_USER: &str = "
WITH ins AS (
    INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)
    ON CONFLICT (id) DO NOTHING RETURNING id, name, created_at
)
SELECT id, name, created_at FROM ins
UNION ALL SELECT id, name, created_at FROM users WHERE id = $1";

const SET_USER_NAME: &str = "
INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET name = excluded.name
RETURNING id, name, created_at";

const SELECT_USER: &str = "SELECT id, name, created_at FROM users WHERE id = $1";

// Every query that reads messages returns these columns, in this order
// (see `message_row`): seq, id, sender_id, content, timestamp_us,
// edited_us, deleted, revision; the writer's have the room's name first.

/// Newest first; the caller reverses the page.
const HISTORY_BEFORE: &str = "
SELECT m.seq, m.id, m.sender_id, m.content, m.timestamp_us, m.edited_us, m.deleted, m.revision
FROM rooms r JOIN messages m ON m.room = r.id
WHERE r.name = $1 AND m.seq < $2
ORDER BY m.seq DESC LIMIT $3";

const HISTORY_AFTER: &str = "
SELECT m.seq, m.id, m.sender_id, m.content, m.timestamp_us, m.edited_us, m.deleted, m.revision
FROM rooms r JOIN messages m ON m.room = r.id
WHERE r.name = $1 AND m.seq > $2 AND m.seq < $3
ORDER BY m.seq LIMIT $4";

/// `revision > 0` matches the partial index's predicate.
const CHANGES: &str = "
SELECT m.seq, m.id, m.sender_id, m.content, m.timestamp_us, m.edited_us, m.deleted, m.revision
FROM rooms r JOIN messages m ON m.room = r.id
WHERE r.name = $1 AND m.revision > 0 AND m.revision > $2
ORDER BY m.revision LIMIT $3";

const SELECT_REVISION: &str = "SELECT last_revision FROM rooms WHERE name = $1";

/// Both keys descending: the cursor is one row comparison, the page one
/// backwards scan of `rooms_by_activity`.
const ROOMS: &str = "
SELECT name, last_seq, last_message_us FROM rooms
WHERE (last_message_us, name) < ($1, $2)
ORDER BY last_message_us DESC, name DESC LIMIT $3";

/// Used when the URL sets no `connect_timeout`: long enough for a loaded
/// database, short enough that a server whose database is unreachable says
/// so quickly (and a health check does not hang).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the health check waits for the database to answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How [`PgStore::connect`] sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections for history and user lookups (at least one). Each
    /// pipelines concurrent queries. Default 2.
    pub readers: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { readers: 2 }
    }
}

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A connection URL without its password, fit for logs and errors.
#[derive(Clone)]
pub struct PgTarget(Config);

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL (or a `key=value`
    /// string). The error never repeats the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<PgTarget, StoreError> {
        url.parse::<Config>().map(PgTarget).map_err(|e| {
            StoreError::Internal(format!(
                "invalid PostgreSQL connection URL: {}",
                describe(&e)
            ))
        })
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.0;
        write!(f, "postgres://{}@", config.get_user().unwrap_or(""))?;
        for (i, host) in config.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                tokio_postgres::config::Host::Tcp(name) => f.write_str(name)?,
                tokio_postgres::config::Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = config.get_ports().get(i) {
                write!(f, ":{port}")?;
            }
        }
        write!(f, "/{}", config.get_dbname().unwrap_or(""))
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({self})")
    }
}

/// A [`Store`] in a PostgreSQL database: one writer connection, a few
/// reader connections, one for health checks; each reconnects on its next
/// use after its connection was lost.
pub struct PgStore {
    /// Drives every connection. `None` only while dropping.
    runtime: Option<Runtime>,
    config: Config,
    writer: Mutex<WriterState>,
    readers: Vec<Mutex<Option<Arc<ReadConn>>>>,
    /// Where the next read starts (round robin).
    next_reader: AtomicUsize,
    /// Its own connection, so a health check never queues behind reads.
    health: Mutex<Option<Client>>,
}

struct WriterState {
    conn: Option<WriteConn>,
    cache: Cache,
}

/// What the writer knows to be in the database, only to skip statements:
/// both sets only grow (rooms and users are never deleted), and an entry is
/// added only once the transaction that wrote it has committed.
#[derive(Default)]
struct Cache {
    rooms: HashSet<String>,
    users: HashSet<String>,
}

/// The writer's connection, with its statements prepared once.
struct WriteConn {
    client: Client,
    insert_rooms: Statement,
    lock_rooms: Statement,
    select_duplicates: Statement,
    select_targets: Statement,
    insert_messages: Statement,
    insert_numbered: Statement,
    update_messages: Statement,
    advance_rooms: Statement,
    advance_numbered: Statement,
    ensure_user: Statement,
    set_user_name: Statement,
    select_user: Statement,
}

struct ReadConn {
    client: Client,
    history_before: Statement,
    history_after: Statement,
    changes: Statement,
    select_revision: Statement,
    rooms: Statement,
    select_user: Statement,
}

impl PgStore {
    /// Connects, creates or migrates the schema, and opens the connections.
    /// Blocks: call it outside async code (`spawn_blocking`).
    pub fn connect(target: &PgTarget, options: PgOptions) -> Result<PgStore, StoreError> {
        let mut config = target.0.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("wsgate");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wsgate-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Internal(format!("cannot start the PostgreSQL runtime: {e}"))
            })?;
        let store = PgStore {
            runtime: Some(runtime),
            config,
            writer: Mutex::new(WriterState {
                conn: None,
                cache: Cache::default(),
            }),
            readers: (0..options.readers.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next_reader: AtomicUsize::new(0),
            health: Mutex::new(None),
        };
        store.block_on(store.migrate())?;
        // Every connection now, so that a database that refuses them (too
        // many clients, say) is a startup error rather than a later one.
        {
            let mut writer = store.lock_writer();
            writer.conn = Some(store.block_on(store.connect_writer())?);
        }
        for slot in &store.readers {
            let conn = store.block_on(store.connect_reader())?;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(conn));
        }
        Ok(store)
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            // Dropping takes the runtime; nothing calls in after that.
            None => unreachable!("the PostgreSQL runtime is gone"),
        }
    }

    /// A new connection, driven by the store's runtime until it breaks.
    async fn open(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection lost");
            }
        });
        Ok(client)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.open().await?;
        let tx = client.transaction().await?;
        if tx
            .query_one("SELECT current_schema()", &[])
            .await?
            .try_get::<_, Option<String>>(0)?
            .is_none()
        {
            return Err(StoreError::Internal(
                "no schema to create tables in: the search_path names no existing schema".into(),
            ));
        }
        tx.execute(MIGRATION_LOCK, &[]).await?;
        tx.batch_execute(CREATE_VERSION_TABLE).await?;
        let version: i32 = match tx
            .query_opt("SELECT version FROM schema_version", &[])
            .await?
        {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        if !(0..=SCHEMA_VERSION).contains(&version) {
            return Err(StoreError::Internal(format!(
                "database schema version {version} is newer than this program's ({SCHEMA_VERSION})"
            )));
        }
        for step in MIGRATIONS.iter().skip(version as usize) {
            tx.batch_execute(step).await?;
        }
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            &[&SCHEMA_VERSION],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn connect_writer(&self) -> Result<WriteConn, StoreError> {
        let client = self.open().await?;
        Ok(WriteConn {
            insert_rooms: client.prepare(INSERT_ROOMS).await?,
            lock_rooms: client.prepare(LOCK_ROOMS).await?,
            select_duplicates: client.prepare(SELECT_DUPLICATES).await?,
            select_targets: client.prepare(SELECT_TARGETS).await?,
            insert_messages: client.prepare(INSERT_MESSAGES).await?,
            insert_numbered: client.prepare(INSERT_NUMBERED).await?,
            update_messages: client.prepare(UPDATE_MESSAGES).await?,
            advance_rooms: client.prepare(ADVANCE_ROOMS).await?,
            advance_numbered: client.prepare(ADVANCE_NUMBERED).await?,
            ensure_user: client.prepare(ENSURE_USER).await?,
            set_user_name: client.prepare(SET_USER_NAME).await?,
            select_user: client.prepare(SELECT_USER).await?,
            client,
        })
    }

    async fn connect_reader(&self) -> Result<ReadConn, StoreError> {
        let client = self.open().await?;
        Ok(ReadConn {
            history_before: client.prepare(HISTORY_BEFORE).await?,
            history_after: client.prepare(HISTORY_AFTER).await?,
            changes: client.prepare(CHANGES).await?,
            select_revision: client.prepare(SELECT_REVISION).await?,
            rooms: client.prepare(ROOMS).await?,
            select_user: client.prepare(SELECT_USER).await?,
            client,
        })
    }

    /// The writer. A panic while it was held may have left the cache ahead
    /// of the (rolled back) database, so a poisoned writer starts afresh.
    fn lock_writer(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            self.writer.clear_poison();
            let mut writer = poisoned.into_inner();
            writer.cache = Cache::default();
            writer.conn = None;
            writer
        })
    }

    /// A reader connection, reconnected if its connection was lost.
    fn reader(&self, slot: usize) -> Result<Arc<ReadConn>, StoreError> {
        let mut slot = self.readers[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = slot.as_ref().filter(|conn| !conn.client.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(self.block_on(self.connect_reader())?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn forget_reader(&self, slot: usize) {
        *self.readers[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs `query` on a reader. A read is safe to repeat, so one whose
    /// connection turns out to be lost (the database restarted since its
    /// last use) is retried once on a new connection.
    fn read<R, F>(&self, query: impl Fn(Arc<ReadConn>) -> F) -> Result<R, StoreError>
    where
        F: Future<Output = Result<R, tokio_postgres::Error>>,
    {
        let slot = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.reader(slot)?;
        match self.block_on(query(conn)) {
            Err(e) if connection_lost(&e) => {
                self.forget_reader(slot);
                let conn = self.reader(slot)?;
                Ok(self.block_on(query(conn))?)
            }
            result => Ok(result?),
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Without waiting: the store may be dropped on an async thread,
        // where a runtime may not block. The connections' tasks end, which
        // closes their sockets.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn write_batch(&self, writes: Vec<Write>) -> Result<Vec<Written>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.lock_writer();
        let WriterState { conn, cache } = &mut *writer;
        if conn.as_ref().is_none_or(|conn| conn.client.is_closed()) {
            *conn = None;
            *conn = Some(self.block_on(self.connect_writer())?);
        }
        let Some(active) = conn.as_ref() else {
            return Err(StoreError::Internal("no writer connection".into()));
        };
        let mut applied = self.block_on(apply(active, cache, &writes));
        // The database restarted since the last batch: the connection is
        // found dead only now, at the batch's start, so the batch can go
        // again on a new one. Through `apply_checked`, which looks for
        // resends under the lock: if the dead connection did run a batch
        // sent in one round trip (its replies lost with the connection,
        // which the first reply cannot rule out), its messages are found
        // and told as stored, never stored twice.
        if let Err(Failure::Retryable(e)) = &applied
            && connection_lost(e)
        {
            *conn = None;
            let fresh = self.block_on(self.connect_writer())?;
            applied = self.block_on(apply_checked(&fresh, cache, &writes));
            *conn = Some(fresh);
        }
        match applied {
            Ok(written) => Ok(written),
            Err(failure) => {
                // The transaction may still be open (a statement failed
                // before COMMIT was sent): end it, or, if that fails too,
                // the connection, which ends it on the server's side.
                let ended = conn.as_ref().is_some_and(|active| {
                    !active.client.is_closed()
                        && self
                            .block_on(active.client.batch_execute("ROLLBACK"))
                            .is_ok()
                });
                if !ended {
                    *conn = None;
                }
                Err(failure.into_error())
            }
        }
    }

    /// Whether the database answers, reconnecting if need be.
    fn healthy(&self) -> bool {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let check = async {
            let client = match health.take() {
                Some(client) if !client.is_closed() => client,
                _ => self.open().await?,
            };
            tokio::time::timeout(HEALTH_TIMEOUT, client.simple_query(""))
                .await
                .map_err(|_| StoreError::Unavailable("the database did not answer".into()))??;
            Ok::<_, StoreError>(client)
        };
        match self.block_on(check) {
            Ok(client) => {
                *health = Some(client);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "PostgreSQL health check failed");
                false
            }
        }
    }

    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        // One row more than the page: if it comes back, there is more.
        let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let before = match query.before_seq {
            0 => i64::MAX,
            before => seq_bound(before),
        };
        let (revision, rows) = self.read(|conn| async move {
            // Pipelined, in this order: the revision is read before the
            // page, in an earlier statement, so it is a lower bound for it.
            let room: [&(dyn ToSql + Sync); 1] = [&query.room_id];
            let revision = conn.client.query_opt(&conn.select_revision, &room);
            let page = async {
                match query.after_seq {
                    None => {
                        conn.client
                            .query(&conn.history_before, &[&query.room_id, &before, &fetch])
                            .await
                    }
                    Some(after) => {
                        conn.client
                            .query(
                                &conn.history_after,
                                &[&query.room_id, &seq_bound(after), &before, &fetch],
                            )
                            .await
                    }
                }
            };
            let (revision, page) = futures_util::join!(revision, page);
            Ok((revision?, page?))
        })?;
        let mut messages = rows
            .iter()
            .map(|row| message_row(&query.room_id, row, 0))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let has_more = messages.len() > query.limit;
        messages.truncate(query.limit);
        if query.after_seq.is_none() {
            messages.reverse();
        }
        Ok(HistoryPage {
            messages,
            has_more,
            revision: revision_of(revision.as_ref())?,
        })
    }

    fn changes(&self, query: &ChangesQuery) -> Result<HistoryPage, StoreError> {
        let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let after = seq_bound(query.after_revision);
        let (revision, rows) = self.read(|conn| async move {
            let room: [&(dyn ToSql + Sync); 1] = [&query.room_id];
            let params: [&(dyn ToSql + Sync); 3] = [&query.room_id, &after, &fetch];
            let revision = conn.client.query_opt(&conn.select_revision, &room);
            let page = conn.client.query(&conn.changes, &params);
            let (revision, page) = futures_util::join!(revision, page);
            Ok((revision?, page?))
        })?;
        let mut messages = rows
            .iter()
            .map(|row| message_row(&query.room_id, row, 0))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let has_more = messages.len() > query.limit;
        messages.truncate(query.limit);
        Ok(HistoryPage {
            messages,
            has_more,
            revision: revision_of(revision.as_ref())?,
        })
    }

    fn rooms(&self, query: &RoomsQuery) -> Result<RoomsPage, StoreError> {
        let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let (before_us, before_name) = match &query.after {
            Some(cursor) => (cursor.last_message_us, cursor.room_id.as_str()),
            // Every room sorts before (i64::MAX, ""): no message is stored
            // at the end of time.
            None => (i64::MAX, ""),
        };
        let rows = self.read(|conn| async move {
            conn.client
                .query(&conn.rooms, &[&before_us, &before_name, &fetch])
                .await
        })?;
        let mut rooms = rows
            .iter()
            .map(|row| {
                Ok(RoomRecord {
                    room_id: row.try_get(0)?,
                    last_seq: seq_column(row, 1)?,
                    last_message_us: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let has_more = rooms.len() > query.limit;
        rooms.truncate(query.limit);
        Ok(RoomsPage { rooms, has_more })
    }

    fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self.read(|conn| async move {
            conn.client.query_opt(&conn.select_user, &[&user_id]).await
        })?;
        row.as_ref().map(row_to_user).transpose()
    }

    /// One query for all the rooms (the bus asks once a second).
    fn room_tops(&self, rooms: &[String]) -> Result<Vec<(u64, u64)>, StoreError> {
        let rows = self.read(|conn| async move {
            conn.client
                .query(
                    "SELECT name, last_seq, last_revision FROM rooms WHERE name = ANY($1)",
                    &[&rooms],
                )
                .await
        })?;
        let mut tops = HashMap::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get(0)?;
            tops.insert(name, (seq_column(row, 1)?, seq_column(row, 2)?));
        }
        Ok(rooms
            .iter()
            .map(|room| tops.get(room).copied().unwrap_or((0, 0)))
            .collect())
    }
}

/// Why a batch failed: at its start (its first reply, so the connection
/// was dead already: it may go again, looking for resends), or later (it
/// may or may not have been committed, and only the client's resend with
/// the same id can tell); or, in [`apply_numbered`], because it resends a
/// stored message (rolled back: it goes again through [`apply_checked`]).
enum Failure {
    Retryable(tokio_postgres::Error),
    After(StoreError),
    Resent,
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Retryable(e) => e.into(),
            Failure::After(e) => e,
            Failure::Resent => StoreError::Internal("a resent message was not looked for".into()),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::After(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::After(e.into())
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + 'a>>;

/// A room of the batch: its id and its counters, as locked, then as the
/// batch advances them.
struct LockedRoom {
    id: i64,
    last_seq: u64,
    last_revision: u64,
    /// The time of the batch's last new message in it, if any.
    last_message_us: Option<i64>,
}

/// A message's key for idempotence: (room, sender, id).
type Key = (String, String, String);

/// A message's place: (room, seq).
type Place = (String, u64);

/// The new messages between two user writes: one INSERT.
#[derive(Default)]
struct Run {
    /// Room ids; for `INSERT_NUMBERED`, places in the batch's rooms (from 1).
    rooms: Vec<i64>,
    /// Seqs; for `INSERT_NUMBERED`, places among the batch's messages to
    /// the room (from 1).
    seqs: Vec<i64>,
    ids: Vec<String>,
    senders: Vec<String>,
    contents: Vec<String>,
    timestamps: Vec<i64>,
    new_users: Vec<String>,
    new_user_times: Vec<i64>,
}

impl Run {
    /// Adds a message; `new_sender`: register its sender too.
    fn push(&mut self, room: i64, seq: i64, message: &NewMessage, new_sender: bool) {
        self.rooms.push(room);
        self.seqs.push(seq);
        self.ids.push(message.id.clone());
        self.senders.push(message.sender_id.clone());
        self.contents.push(message.content.clone());
        self.timestamps.push(message.timestamp_us);
        if new_sender {
            self.new_users.push(message.sender_id.clone());
            self.new_user_times.push(message.timestamp_us);
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.rooms,
            &self.seqs,
            &self.ids,
            &self.senders,
            &self.contents,
            &self.timestamps,
            &self.new_users,
            &self.new_user_times,
        ]
    }
}

/// One statement of the batch's writes, in batch order.
enum Step {
    Messages(Run),
    EnsureUser(String, String, i64),
    SetUserName(String, String, i64),
}

/// The statements of a batch's writes, in batch order: runs of messages
/// cut by user writes.
#[derive(Default)]
struct Steps<'a> {
    steps: Vec<Step>,
    run: Run,
    /// Users this batch registers (new senders, user writes).
    registered: HashSet<&'a str>,
}

impl<'a> Steps<'a> {
    /// Adds a new message to the current run.
    fn message(&mut self, room: i64, seq: i64, message: &'a NewMessage, cache: &Cache) {
        let new_sender =
            !cache.users.contains(&message.sender_id) && self.registered.insert(&message.sender_id);
        self.run.push(room, seq, message, new_sender);
    }

    /// A user write: its statement between the runs before and after it.
    /// Returns its result, to be filled in from the statement's reply
    /// ([`after_commit`]); `None` for a write that is not a user write.
    fn user(&mut self, write: &'a Write) -> Option<Written> {
        let (user_id, step) = match write {
            Write::EnsureUser {
                user_id,
                name,
                now_us,
            } => {
                let name = name.clone().unwrap_or_else(|| user_id.clone());
                (user_id, Step::EnsureUser(user_id.clone(), name, *now_us))
            }
            Write::SetUserName {
                user_id,
                name,
                now_us,
            } => (
                user_id,
                Step::SetUserName(user_id.clone(), name.clone(), *now_us),
            ),
            Write::Message(_) | Write::Change(_) => return None,
        };
        self.steps
            .push(Step::Messages(std::mem::take(&mut self.run)));
        self.steps.push(step);
        self.registered.insert(user_id);
        Some(Written::User(UserRecord {
            id: user_id.clone(),
            name: String::new(),
            created_at_us: 0,
        }))
    }

    /// The statements, without empty runs.
    fn finish(mut self) -> (Vec<Step>, HashSet<&'a str>) {
        self.steps.push(Step::Messages(self.run));
        self.steps
            .retain(|step| !matches!(step, Step::Messages(run) if run.ids.is_empty()));
        (self.steps, self.registered)
    }
}

/// Each step's parameters; `rooms`: the batch's rooms, for runs numbered
/// by the database (`INSERT_NUMBERED`'s `$9`).
fn step_params<'a>(
    steps: &'a [Step],
    rooms: Option<&'a Vec<&str>>,
) -> Vec<Vec<&'a (dyn ToSql + Sync)>> {
    steps
        .iter()
        .map(|step| -> Vec<&(dyn ToSql + Sync)> {
            match step {
                Step::Messages(run) => {
                    let mut params = run.params();
                    if let Some(rooms) = rooms {
                        params.push(rooms);
                    }
                    params
                }
                Step::EnsureUser(id, name, now) | Step::SetUserName(id, name, now) => {
                    vec![id, name, now]
                }
            }
        })
        .collect()
}

/// Each step's statement, sent (in order) as it is pushed.
fn step_queries<'a>(
    conn: &'a WriteConn,
    steps: &'a [Step],
    params: &'a [Vec<&'a (dyn ToSql + Sync)>],
    insert: &'a Statement,
) -> Vec<Pending<'a>> {
    steps
        .iter()
        .zip(params)
        .map(|(step, params)| -> Pending<'a> {
            let statement = match step {
                Step::Messages(_) => insert,
                Step::EnsureUser(..) => &conn.ensure_user,
                Step::SetUserName(..) => &conn.set_user_name,
            };
            Box::pin(conn.client.query(statement, params))
        })
        .collect()
}

/// The rooms a batch writes, sorted (the lock order), and those of them
/// this store has not seen yet (only messages create rooms: a change to an
/// unknown room is refused).
fn batch_rooms<'a>(writes: &'a [Write], cache: &Cache) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut rooms: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Message(m) => Some(m.room_id.as_str()),
            Write::Change(c) => Some(c.room_id.as_str()),
            _ => None,
        })
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    let mut new_rooms: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Message(m) if !cache.rooms.contains(&m.room_id) => Some(m.room_id.as_str()),
            _ => None,
        })
        .collect();
    new_rooms.sort_unstable();
    new_rooms.dedup();
    (rooms, new_rooms)
}

/// Once committed: the users' records from the replies of their
/// statements (`replies`: one per step, in order), and what the cache
/// learnt.
async fn after_commit(
    conn: &WriteConn,
    cache: &mut Cache,
    writes: &[Write],
    steps: &[Step],
    replies: impl IntoIterator<Item = Vec<Row>>,
    registered: HashSet<&str>,
    mut written: Vec<Written>,
) -> Result<Vec<Written>, Failure> {
    let mut user_replies = steps
        .iter()
        .zip(replies)
        .filter(|(step, _)| !matches!(step, Step::Messages(_)))
        .map(|(_, rows)| rows);
    for entry in &mut written {
        if let Written::User(user) = entry {
            let rows = user_replies.next().unwrap_or_default();
            *user = match rows.first() {
                Some(row) => row_to_user(row)?,
                // Inserted by another server after this statement began:
                // committed by now.
                None => match conn
                    .client
                    .query_opt(&conn.select_user, &[&user.id])
                    .await?
                {
                    Some(row) => row_to_user(&row)?,
                    None => {
                        return Err(Failure::After(StoreError::Internal(format!(
                            "user {:?} vanished",
                            user.id
                        ))));
                    }
                },
            };
        }
    }
    cache.rooms.extend(writes.iter().filter_map(|w| match w {
        Write::Message(m) => Some(m.room_id.clone()),
        _ => None,
    }));
    cache
        .users
        .extend(registered.into_iter().map(str::to_owned));
    Ok(written)
}

/// The batch's edits and deletions as final states: one UPDATE.
#[derive(Default)]
struct Updates {
    rooms: Vec<i64>,
    seqs: Vec<i64>,
    contents: Vec<String>,
    edited: Vec<Option<i64>>,
    deleted: Vec<bool>,
    revisions: Vec<i64>,
}

/// Applies a batch in one transaction: in one round trip
/// ([`apply_numbered`]) unless it edits or deletes, or resends a stored
/// message; else in two ([`apply_checked`]).
async fn apply(
    conn: &WriteConn,
    cache: &mut Cache,
    writes: &[Write],
) -> Result<Vec<Written>, Failure> {
    if !writes.iter().any(|w| matches!(w, Write::Change(_))) {
        match apply_numbered(conn, cache, writes).await {
            Err(Failure::Resent) => {
                tracing::debug!("a batch resends stored messages: looking for them");
            }
            done => return done,
        }
    }
    apply_checked(conn, cache, writes).await
}

/// Applies a batch of messages and user writes in one round trip: begin,
/// lock the rooms, insert the messages numbered by the database from the
/// counters as locked (`INSERT_NUMBERED`: counter plus the place worked
/// out here), the user writes, advance the counters by what was added,
/// commit, all sent without waiting. The lock's reply says where each
/// room's numbers started, which gives the seqs here too.
///
/// Resends are not looked for first: a stored message sent again makes
/// the insert fail on `messages_by_id` (a unique index sees every
/// committed row), the transaction rolls back, and the caller sends the
/// batch again through [`apply_checked`], which looks for them. A resend
/// follows a reconnect, so that second round trip is rare; a message sent
/// twice within the batch is found here, and stored once.
async fn apply_numbered(
    conn: &WriteConn,
    cache: &mut Cache,
    writes: &[Write],
) -> Result<Vec<Written>, Failure> {
    let client = &conn.client;
    let (rooms, new_rooms) = batch_rooms(writes, cache);
    // Per room of `rooms`: messages the batch adds, the last one's time.
    let mut added = vec![0_i64; rooms.len()];
    let mut last_us = vec![0_i64; rooms.len()];
    let mut written = Vec::with_capacity(writes.len());
    // Each new message: its place in `written` and its room's in `rooms`;
    // each copy within the batch: its place and its first's.
    let mut numbered: Vec<(usize, usize)> = Vec::new();
    let mut copies: Vec<(usize, usize)> = Vec::new();
    let mut firsts: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut steps = Steps::default();
    for write in writes {
        let Write::Message(message) = write else {
            match steps.user(write) {
                Some(user) => written.push(user),
                None => {
                    return Err(Failure::After(StoreError::Internal(
                        "a change in a batch numbered by the database".into(),
                    )));
                }
            }
            continue;
        };
        let key = (
            message.room_id.as_str(),
            message.sender_id.as_str(),
            message.id.as_str(),
        );
        if let Some(&first) = firsts.get(&key) {
            copies.push((written.len(), first));
            // Replaced by a copy of the first once its seq is known.
            written.push(Written::Refused(ChangeRefused::NotFound));
            continue;
        }
        let Ok(r) = rooms.binary_search(&key.0) else {
            return Err(Failure::After(StoreError::Internal(format!(
                "room {:?} is not among the batch's",
                message.room_id
            ))));
        };
        added[r] += 1;
        last_us[r] = message.timestamp_us;
        // `r` < rooms.len() <= writes.len(): both fit.
        let room = i64::try_from(r + 1).unwrap_or(i64::MAX);
        steps.message(room, added[r], message, cache);
        firsts.insert(key, written.len());
        numbered.push((written.len(), r));
        // Its place for now; the room's counter is added once known.
        written.push(Written::Stored(store_message(message, added[r] as u64)));
    }
    let (steps, registered) = steps.finish();

    let params_new: [&(dyn ToSql + Sync); 1] = [&new_rooms];
    let params_lock: [&(dyn ToSql + Sync); 1] = [&rooms];
    let params = step_params(&steps, Some(&rooms));
    let params_advance: [&(dyn ToSql + Sync); 3] = [&rooms, &added, &last_us];
    let begin = client.batch_execute("BEGIN");
    let mut statements: Vec<Pending<'_>> = Vec::new();
    if !new_rooms.is_empty() {
        statements.push(Box::pin(client.query(&conn.insert_rooms, &params_new)));
    }
    let lock_at = statements.len();
    let steps_at = lock_at + 1;
    statements.push(Box::pin(client.query(&conn.lock_rooms, &params_lock)));
    statements.extend(step_queries(conn, &steps, &params, &conn.insert_numbered));
    if !rooms.is_empty() {
        statements.push(Box::pin(
            client.query(&conn.advance_numbered, &params_advance),
        ));
    }
    let commit = client.batch_execute("COMMIT");
    let (begun, replies, committed) =
        futures_util::join!(begin, futures_util::future::join_all(statements), commit);
    // No reply to BEGIN: the connection was dead, or died under the batch.
    begun.map_err(Failure::Retryable)?;
    // A failed statement aborts the transaction, and COMMIT then rolls it
    // back without an error of its own: the statements' replies decide.
    let replies = match replies.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(replies) => replies,
        // Rolled back: the batch goes again, unless the connection went
        // with the rollback (then it is `UNAVAILABLE`, like any other).
        Err(e) if is_resend(&e) => {
            return Err(committed.map_or_else(Failure::from, |()| Failure::Resent));
        }
        Err(e) => return Err(e.into()),
    };
    committed?;

    let mut base = vec![None; rooms.len()];
    for row in &replies[lock_at] {
        let name: String = row.try_get(1)?;
        if let Ok(r) = rooms.binary_search(&name.as_str()) {
            base[r] = Some(seq_column(row, 2)?);
        }
    }
    for &(at, r) in &numbered {
        let (Written::Stored(message), Some(base)) = (&mut written[at], base[r]) else {
            return Err(Failure::After(StoreError::Internal(format!(
                "room {:?} was not locked",
                rooms[r]
            ))));
        };
        message.seq += base;
    }
    for &(at, first) in &copies {
        if let Written::Stored(original) = &written[first] {
            written[at] = Written::Duplicate(original.clone());
        }
    }
    let step_replies = replies.into_iter().skip(steps_at).take(steps.len());
    after_commit(
        conn,
        cache,
        writes,
        &steps,
        step_replies,
        registered,
        written,
    )
    .await
}

/// Whether a statement failed because a message of the batch is stored
/// already (its key is in `messages_by_id`).
fn is_resend(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("messages_by_id")
    })
}

/// Applies a batch in one transaction, in two round trips: (1) begin, lock
/// the rooms, read the duplicates and the messages to change; (2) every
/// insert, user write and update, the counters, commit. Nothing in (2)
/// waits for a reply of (2): seqs, revisions and what each change does
/// are worked out here from what (1) returned.
async fn apply_checked(
    conn: &WriteConn,
    cache: &mut Cache,
    writes: &[Write],
) -> Result<Vec<Written>, Failure> {
    let client = &conn.client;
    let (rooms, new_rooms) = batch_rooms(writes, cache);
    let (mut key_rooms, mut key_senders, mut key_ids) = (Vec::new(), Vec::new(), Vec::new());
    let (mut target_rooms, mut target_seqs) = (Vec::new(), Vec::new());
    for write in writes {
        match write {
            Write::Message(m) => {
                key_rooms.push(m.room_id.as_str());
                key_senders.push(m.sender_id.as_str());
                key_ids.push(m.id.as_str());
            }
            Write::Change(c) => {
                target_rooms.push(c.room_id.as_str());
                target_seqs.push(seq_bound(c.seq));
            }
            _ => {}
        }
    }

    // Round trip 1.
    let params_new: [&(dyn ToSql + Sync); 1] = [&new_rooms];
    let params_lock: [&(dyn ToSql + Sync); 1] = [&rooms];
    let params_keys: [&(dyn ToSql + Sync); 3] = [&key_rooms, &key_senders, &key_ids];
    let params_targets: [&(dyn ToSql + Sync); 2] = [&target_rooms, &target_seqs];
    let begin = client.batch_execute("BEGIN");
    let mut first: Vec<Pending<'_>> = Vec::new();
    if !new_rooms.is_empty() {
        first.push(Box::pin(client.query(&conn.insert_rooms, &params_new)));
    }
    let lock_at = first.len();
    if !rooms.is_empty() {
        first.push(Box::pin(client.query(&conn.lock_rooms, &params_lock)));
        first.push(Box::pin(
            client.query(&conn.select_duplicates, &params_keys),
        ));
        if !target_rooms.is_empty() {
            first.push(Box::pin(
                client.query(&conn.select_targets, &params_targets),
            ));
        }
    }
    let (begun, replies) = futures_util::join!(begin, futures_util::future::join_all(first));
    begun.map_err(Failure::Retryable)?;
    let replies = replies
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Retryable)?;
    let mut locked: HashMap<String, LockedRoom> = HashMap::with_capacity(rooms.len());
    // Every message the batch may touch, as it is now, and where each
    // known key is: filled from the database, then kept up to date.
    let mut current: HashMap<Place, StoredMessage> = HashMap::new();
    let mut places: HashMap<Key, Place> = HashMap::new();
    if let [lock, duplicates, targets @ ..] = &replies[lock_at..] {
        for row in lock {
            let name: String = row.try_get(1)?;
            locked.insert(
                name,
                LockedRoom {
                    id: row.try_get(0)?,
                    last_seq: seq_column(row, 2)?,
                    last_revision: seq_column(row, 3)?,
                    last_message_us: None,
                },
            );
        }
        for row in duplicates.iter().chain(targets.iter().flatten()) {
            let message = message_row(&row.try_get::<_, String>(0)?, row, 1)?;
            let key = (
                message.room_id.clone(),
                message.sender_id.clone(),
                message.id.clone(),
            );
            let place = (message.room_id.clone(), message.seq);
            places.insert(key, place.clone());
            current.insert(place, message);
        }
    }

    // Seqs, duplicates, changes and the statements of round trip 2.
    let mut written = Vec::with_capacity(writes.len());
    let mut steps = Steps::default();
    let mut changed: Vec<Place> = Vec::new();
    for write in writes {
        match write {
            Write::Message(message) => {
                let key = (
                    message.room_id.clone(),
                    message.sender_id.clone(),
                    message.id.clone(),
                );
                if let Some(original) = places.get(&key).and_then(|place| current.get(place)) {
                    // As it is now: edited or deleted since, maybe.
                    written.push(Written::Duplicate(original.clone()));
                    continue;
                }
                let Some(room) = locked.get_mut(&message.room_id) else {
                    return Err(Failure::After(StoreError::Internal(format!(
                        "room {:?} was not locked",
                        message.room_id
                    ))));
                };
                room.last_seq += 1;
                room.last_message_us = Some(message.timestamp_us);
                let new = store_message(message, room.last_seq);
                steps.message(room.id, seq_to_sql(new.seq)?, message, cache);
                let place = (new.room_id.clone(), new.seq);
                places.insert(key, place.clone());
                current.insert(place, new.clone());
                written.push(Written::Stored(new));
            }
            Write::Change(change) => {
                let place = (change.room_id.clone(), change.seq);
                let (Some(room), Some(message)) =
                    (locked.get_mut(&change.room_id), current.get_mut(&place))
                else {
                    written.push(Written::Refused(ChangeRefused::NotFound));
                    continue;
                };
                let outcome = apply_change(message, change, room.last_revision + 1);
                if matches!(outcome, Written::Changed(_)) {
                    room.last_revision += 1;
                    changed.push(place);
                }
                written.push(outcome);
            }
            Write::EnsureUser { .. } | Write::SetUserName { .. } => {
                written.extend(steps.user(write));
            }
        }
    }
    let (steps, registered) = steps.finish();
    let mut updates = Updates::default();
    changed.sort_unstable();
    changed.dedup();
    for place in &changed {
        let (Some(room), Some(message)) = (locked.get(&place.0), current.get(place)) else {
            continue;
        };
        updates.rooms.push(room.id);
        updates.seqs.push(seq_to_sql(message.seq)?);
        updates.contents.push(message.content.clone());
        updates.edited.push(message.edited_us);
        updates.deleted.push(message.deleted);
        updates.revisions.push(seq_to_sql(message.revision)?);
    }
    let mut advance: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<Option<i64>>) = Default::default();
    for room in locked.values() {
        advance.0.push(room.id);
        advance.1.push(seq_to_sql(room.last_seq)?);
        advance.2.push(seq_to_sql(room.last_revision)?);
        advance.3.push(room.last_message_us);
    }

    // Round trip 2.
    let params = step_params(&steps, None);
    let params_updates: [&(dyn ToSql + Sync); 6] = [
        &updates.rooms,
        &updates.seqs,
        &updates.contents,
        &updates.edited,
        &updates.deleted,
        &updates.revisions,
    ];
    let params_advance: [&(dyn ToSql + Sync); 4] = [&advance.0, &advance.1, &advance.2, &advance.3];
    let mut second = step_queries(conn, &steps, &params, &conn.insert_messages);
    if !updates.rooms.is_empty() {
        second.push(Box::pin(
            client.query(&conn.update_messages, &params_updates),
        ));
    }
    if !advance.0.is_empty() {
        second.push(Box::pin(client.query(&conn.advance_rooms, &params_advance)));
    }
    let commit = client.batch_execute("COMMIT");
    let (replies, committed) = futures_util::join!(futures_util::future::join_all(second), commit);
    // A failed statement aborts the transaction, and COMMIT then rolls it
    // back without an error of its own: the statements' replies decide.
    let replies = replies.into_iter().collect::<Result<Vec<_>, _>>()?;
    committed?;

    after_commit(conn, cache, writes, &steps, replies, registered, written).await
}

/// What a change does to `message` (updated in place if it changes it),
/// the same rules as SQLite's: whose it is first, then deleted or not.
fn apply_change(message: &mut StoredMessage, change: &MessageChange, revision: u64) -> Written {
    if message.sender_id != change.sender_id {
        return Written::Refused(ChangeRefused::NotSender);
    }
    match &change.kind {
        ChangeKind::Delete if message.deleted => Written::Unchanged(message.clone()),
        ChangeKind::Edit(_) if message.deleted => Written::Refused(ChangeRefused::Deleted),
        ChangeKind::Edit(content) if *content == message.content => {
            Written::Unchanged(message.clone())
        }
        ChangeKind::Edit(content) => {
            message.content = content.clone();
            message.edited_us = Some(change.now_us);
            message.revision = revision;
            Written::Changed(message.clone())
        }
        ChangeKind::Delete => {
            message.content = String::new();
            message.deleted = true;
            message.revision = revision;
            Written::Changed(message.clone())
        }
    }
}

fn store_message(message: &NewMessage, seq: u64) -> StoredMessage {
    StoredMessage {
        id: message.id.clone(),
        room_id: message.room_id.clone(),
        sender_id: message.sender_id.clone(),
        content: message.content.clone(),
        timestamp_us: message.timestamp_us,
        seq,
        edited_us: None,
        deleted: false,
        revision: 0,
    }
}

/// A message from the message columns, starting at column `first`.
fn message_row(room_id: &str, row: &Row, first: usize) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        seq: seq_column(row, first)?,
        id: row.try_get(first + 1)?,
        room_id: room_id.to_owned(),
        sender_id: row.try_get(first + 2)?,
        content: row.try_get(first + 3)?,
        timestamp_us: row.try_get(first + 4)?,
        edited_us: row.try_get(first + 5)?,
        deleted: row.try_get(first + 6)?,
        revision: seq_column(row, first + 7)?,
    })
}

/// A room's revision from its row; 0 for a room that does not exist.
fn revision_of(row: Option<&Row>) -> Result<u64, StoreError> {
    row.map_or(Ok(0), |row| seq_column(row, 0))
}

fn row_to_user(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at_us: row.try_get(2)?,
    })
}

fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Internal(format!("seq {seq} out of range")))
}

fn seq_column(row: &Row, index: usize) -> Result<u64, StoreError> {
    let seq: i64 = row.try_get(index)?;
    u64::try_from(seq).map_err(|_| StoreError::Internal(format!("stored seq {seq} is negative")))
}

/// A seq used as a query bound: no stored seq exceeds `i64::MAX`.
fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The error and its causes: tokio-postgres says only "db error" or "error
/// connecting to server" and keeps the why in its source.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether `e` says the connection is gone: closed, or ended by the server
/// (terminated, shutting down). The next use needs a new connection.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        })
}

/// A failed connection attempt: the database is down, restarting, or
/// refusing connections, which retrying later may cure; or the URL names
/// something that will never work (a wrong password, no such database).
fn connect_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(code) if is_permanent(code) => {
            StoreError::Internal(format!("cannot connect: {}", describe(&e)))
        }
        _ => StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", describe(&e))),
    }
}

fn is_permanent(code: &SqlState) -> bool {
    [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_CATALOG_NAME,
    ]
    .contains(code)
}

impl From<tokio_postgres::Error> for StoreError {
    /// By what the caller can do: a lost connection, a database shutting
    /// down or starting, lock trouble between servers and resource limits
    /// are worth retrying (`Unavailable`); a full disk is `Full`.
    fn from(e: tokio_postgres::Error) -> Self {
        let message = describe(&e);
        if e.is_closed() {
            return StoreError::Unavailable(message);
        }
        let Some(code) = e.code() else {
            // No SQLSTATE: an I/O error, a timeout, or a value that does
            // not convert; only the first two reach the socket.
            return if e.as_db_error().is_none()
                && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            {
                StoreError::Unavailable(message)
            } else {
                StoreError::Internal(message)
            };
        };
        let class = &code.code()[..2];
        match code {
            c if *c == SqlState::DISK_FULL => StoreError::Full(message),
            c if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
                StoreError::Corrupt(message)
            }
            c if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::QUERY_CANCELED
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                StoreError::Unavailable(message)
            }
            // 08: connection exception; 53: insufficient resources (out of
            // memory, too many connections); 57P: the server shutting down,
            // crashed, or not accepting connections yet.
            _ if class == "08" || class == "53" || code.code().starts_with("57P") => {
                StoreError::Unavailable(message)
            }
            _ => StoreError::Internal(message),
        }
    }
}

#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
mod test_schema;

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::test_schema::TestSchema;
    use super::*;
    use crate::storage::conformance::{Engine, conformance_tests, history, message, stored_seq};

    /// PostgreSQL stores over a schema of this test's own.
    pub(super) struct Pg(TestSchema);

    impl Pg {
        fn new() -> Pg {
            Pg(TestSchema::create())
        }
    }

    impl Engine for Pg {
        type Store = PgStore;
        fn open(&self) -> PgStore {
            connect(&self.0)
        }
    }

    fn connect(schema: &TestSchema) -> PgStore {
        let target = PgTarget::parse(&schema.url).unwrap();
        PgStore::connect(&target, PgOptions::default()).unwrap()
    }

    conformance_tests!(super::Pg::new());

    /// Two servers on one database, writing the same rooms at once, in
    /// batches naming the rooms in opposite orders (the order in which
    /// locks would be taken without sorting): every message is stored
    /// once, and each room's seqs run from 1 with no gap and no repeat.
    #[test]
    fn two_stores_writing_the_same_rooms_share_one_gapless_order() {
        let engine = Pg::new();
        let stores = [engine.open(), engine.open()];
        const BATCHES: usize = 100;
        const PER_BATCH: usize = 20;
        let start = Barrier::new(stores.len());
        let seqs: Vec<Vec<(String, u64)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(s, store)| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        let mut seqs = Vec::new();
                        for b in 0..BATCHES {
                            let rooms = if s == 0 { ["r", "q"] } else { ["q", "r"] };
                            let writes = (0..PER_BATCH)
                                .map(|i| {
                                    let room = rooms[i % 2];
                                    message(room, &format!("s{s}"), &format!("{b}-{i}"), "x")
                                })
                                .collect();
                            for written in store.write_batch(writes).unwrap() {
                                let Written::Stored(m) = written else {
                                    panic!("expected Stored, got {written:?}");
                                };
                                seqs.push((m.room_id, m.seq));
                            }
                        }
                        seqs
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let per_room = stores.len() * BATCHES * PER_BATCH / 2;
        for room in ["r", "q"] {
            let mut all: Vec<u64> = seqs
                .iter()
                .flatten()
                .filter(|(r, _)| r == room)
                .map(|(_, seq)| *seq)
                .collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (1..=per_room as u64).collect::<Vec<_>>(),
                "room {room}"
            );
        }
        // The history agrees: every seq once, each message under the seq
        // its writer was told.
        let told: HashSet<(String, u64)> = seqs.into_iter().flatten().collect();
        let page = stores[0]
            .history(&HistoryQuery {
                room_id: "r".into(),
                limit: 500,
                before_seq: 0,
                after_seq: Some(0),
            })
            .unwrap();
        assert_eq!(page.messages.len(), 500);
        for (i, m) in page.messages.iter().enumerate() {
            assert_eq!(m.seq, i as u64 + 1);
            assert!(told.contains(&("r".to_owned(), m.seq)));
        }
    }

    /// A batch of messages in two rooms, in runs cut by user writes: one
    /// round trip, each room numbered across the runs. Then the same with
    /// a resend of a stored message in it, which fails that round trip and
    /// goes the longer way (looking for resends first): the same numbering,
    /// the resend told its original, and the history agrees.
    #[test]
    fn runs_of_a_batch_are_numbered_per_room_with_or_without_a_resend() {
        let engine = Pg::new();
        let store = engine.open();
        let batch = |tag: &str, resend: bool| {
            let mut writes = vec![
                message("r", "alice", &format!("{tag}1"), "a"),
                message("q", "bob", &format!("{tag}2"), "b"),
                Write::EnsureUser {
                    user_id: "carol".into(),
                    name: None,
                    now_us: 5,
                },
                message("r", "carol", &format!("{tag}3"), "c"),
                Write::SetUserName {
                    user_id: "bob".into(),
                    name: "Bob".into(),
                    now_us: 6,
                },
                message("q", "bob", &format!("{tag}4"), "d"),
            ];
            if resend {
                writes.insert(2, message("r", "alice", "x1", "a"));
            }
            writes
        };
        let user = |written: &Written| match written {
            Written::User(user) => user.name.clone(),
            other => panic!("expected User, got {other:?}"),
        };
        let first = store.write_batch(batch("x", false)).unwrap();
        assert_eq!(
            [&first[0], &first[1], &first[3], &first[5]].map(stored_seq),
            [1, 1, 2, 2]
        );
        assert_eq!([user(&first[2]), user(&first[4])], ["carol", "Bob"]);

        let second = store.write_batch(batch("y", true)).unwrap();
        let Written::Stored(original) = &first[0] else {
            panic!("expected Stored, got {:?}", first[0]);
        };
        assert_eq!(second[2], Written::Duplicate(original.clone()));
        assert_eq!(
            [&second[0], &second[1], &second[4], &second[6]].map(stored_seq),
            [3, 3, 4, 4]
        );
        assert_eq!([user(&second[3]), user(&second[5])], ["carol", "Bob"]);

        for (room, ids) in [
            ("r", ["x1", "x3", "y1", "y3"]),
            ("q", ["x2", "x4", "y2", "y4"]),
        ] {
            let page = store
                .history(&HistoryQuery {
                    room_id: room.into(),
                    limit: 10,
                    before_seq: 0,
                    after_seq: Some(0),
                })
                .unwrap();
            let stored: Vec<_> = page
                .messages
                .iter()
                .map(|m| (m.seq, m.id.as_str()))
                .collect();
            assert_eq!(stored, (1..).zip(ids).collect::<Vec<_>>(), "room {room}");
        }
    }

    /// The same message resent to another server while the first stores
    /// it: stored once, and both are told the same seq.
    #[test]
    fn a_resend_to_another_store_is_recognised() {
        let engine = Pg::new();
        let (a, b) = (engine.open(), engine.open());
        let first = a
            .write_batch(vec![message("r", "alice", "m1", "x")])
            .unwrap();
        let again = b
            .write_batch(vec![
                message("r", "alice", "m1", "x"),
                message("r", "alice", "m2", "y"),
            ])
            .unwrap();
        let Written::Stored(original) = &first[0] else {
            panic!("{first:?}");
        };
        assert_eq!(again[0], Written::Duplicate(original.clone()));
        assert_eq!(stored_seq(&again[1]), 2);
    }

    /// Two servers editing one room: revisions, like seqs, are handed out
    /// under the room's lock, one order whoever writes.
    #[test]
    fn two_stores_editing_one_room_share_its_revisions() {
        let engine = Pg::new();
        let (a, b) = (engine.open(), engine.open());
        a.write_batch(vec![
            message("r", "alice", "m1", "x"),
            message("r", "bob", "m2", "y"),
        ])
        .unwrap();
        let change = |seq, sender: &str, content: &str| {
            Write::Change(MessageChange {
                room_id: "r".into(),
                seq,
                sender_id: sender.into(),
                kind: ChangeKind::Edit(content.into()),
                now_us: 7,
            })
        };
        let revision = |written: &[Written]| match &written[0] {
            Written::Changed(m) => m.revision,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            revision(&a.write_batch(vec![change(1, "alice", "x1")]).unwrap()),
            1
        );
        assert_eq!(
            revision(&b.write_batch(vec![change(2, "bob", "y1")]).unwrap()),
            2
        );
        assert_eq!(
            revision(&a.write_batch(vec![change(2, "bob", "y2")]).unwrap()),
            3
        );
        // b is told of a's edit when the message is resent to it.
        let again = b
            .write_batch(vec![message("r", "alice", "m1", "x")])
            .unwrap();
        assert!(
            matches!(&again[0], Written::Duplicate(m) if m.content == "x1"),
            "{again:?}"
        );
    }

    /// Servers starting at once on an empty schema: one creates it, the
    /// others wait for it (the advisory lock) and find it made.
    #[test]
    fn stores_starting_at_once_create_the_schema_once() {
        let schema = TestSchema::create();
        let start = Barrier::new(4);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    start.wait();
                    drop(connect(&schema));
                });
            }
        });
        assert_eq!(
            schema.query("SELECT version FROM schema_version"),
            [["1".to_owned()]]
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let schema = TestSchema::create();
        drop(connect(&schema));
        schema.query("UPDATE schema_version SET version = 99");
        let target = PgTarget::parse(&schema.url).unwrap();
        let err = PgStore::connect(&target, PgOptions::default())
            .err()
            .unwrap();
        assert!(
            matches!(&err, StoreError::Internal(m) if m.contains("version 99 is newer")),
            "{err:?}"
        );
    }

    /// The database ended every connection (as a restart does) while the
    /// store was idle: the next write, read and health check reconnect,
    /// and nothing is refused.
    #[test]
    fn connections_ended_while_idle_are_replaced() {
        let engine = Pg::new();
        let store = engine.open();
        store
            .write_batch(vec![message("r", "alice", "m1", "x")])
            .unwrap();
        assert_eq!(history(&store, 10, 0, None), (vec![1], false));
        assert!(store.healthy());
        // Writer, readers and the health connection.
        assert!(engine.0.terminate_connections() >= 3);
        let written = store
            .write_batch(vec![message("r", "alice", "m2", "y")])
            .unwrap();
        assert_eq!(stored_seq(&written[0]), 2);
        assert_eq!(history(&store, 10, 0, None), (vec![1, 2], false));
        assert_eq!(history(&store, 10, 0, None), (vec![1, 2], false));
        assert!(store.healthy());
    }

    /// A statement that fails (here a row the constraint refuses, put there
    /// behind the store's back) fails the whole batch and leaves nothing:
    /// no message, no user, no seq consumed; the next batch works.
    #[test]
    fn a_failed_batch_changes_nothing() {
        let engine = Pg::new();
        let store = engine.open();
        store
            .write_batch(vec![message("r", "zed", "m0", "x")])
            .unwrap();
        // Seq 2 taken by a row the store does not know about: the next
        // message of the room clashes on the primary key.
        engine
            .0
            .query("INSERT INTO messages SELECT room, 2, 'ghost', 'ghost', 'x', 0 FROM messages");
        let err = store
            .write_batch(vec![
                message("other", "newbie", "m1", "fine"),
                message("r", "newbie", "m2", "clash"),
            ])
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Internal(m) if m.contains("duplicate key")),
            "{err:?}"
        );
        assert_eq!(store.get_user("newbie").unwrap(), None);
        let other = store
            .history(&HistoryQuery {
                room_id: "other".into(),
                limit: 10,
                before_seq: 0,
                after_seq: None,
            })
            .unwrap();
        assert!(other.messages.is_empty());
        engine.0.query("DELETE FROM messages WHERE id = 'ghost'");
        let written = store
            .write_batch(vec![message("r", "newbie", "m2", "again")])
            .unwrap();
        assert_eq!(stored_seq(&written[0]), 2);
    }

    #[test]
    fn errors_are_typed_by_what_the_caller_can_do() {
        let db_error = |code: &str| {
            // An error as the server would send it, through the public
            // parser: a failing statement with that SQLSTATE.
            let schema_query =
                format!("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$");
            schema_query
        };
        let engine = Pg::new();
        let store = engine.open();
        let kind = |code: &str| {
            let conn = store.reader(0).unwrap();
            let e = store
                .block_on(conn.client.batch_execute(&db_error(code)))
                .unwrap_err();
            StoreError::from(e)
        };
        assert!(matches!(kind("53100"), StoreError::Full(_)));
        assert!(matches!(kind("40P01"), StoreError::Unavailable(_)));
        assert!(matches!(kind("57P01"), StoreError::Unavailable(_)));
        assert!(matches!(kind("53300"), StoreError::Unavailable(_)));
        assert!(matches!(kind("XX001"), StoreError::Corrupt(_)));
        assert!(matches!(kind("23505"), StoreError::Internal(_)));
    }

    #[test]
    fn the_password_is_never_shown() {
        let target = PgTarget::parse("postgres://alice:s3cret@db.example:6543/chat").unwrap();
        assert_eq!(target.to_string(), "postgres://alice@db.example:6543/chat");
        assert!(!format!("{target:?}").contains("s3cret"));
        let err = PgTarget::parse("postgres://alice:s3cret@db.example:notaport/chat")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid PostgreSQL connection URL"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn urls_choose_postgres() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("wsgate.db"));
        assert!(!is_postgres_url("/var/lib/postgres/chat.db"));
    }
}
