//! [`Checkpointer`]: WAL checkpoints on their own thread.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1000 pages: that commit copies the pages back into the database file and
//! fsyncs both files before it returns, so every message in that batch (and
//! every one queued behind it) waits several milliseconds. Measured on the
//! 10 rooms x 10 clients, 1,000 msgs/s benchmark: p99 delivery latency
//! 4.6 ms with checkpoints in the commit, 1.85 ms without.
//!
//! So the writer connection's WAL hook (which replaces SQLite's automatic
//! checkpoint) only tells this thread that the WAL has grown; the thread runs
//! a `PASSIVE` checkpoint on its own connection, which never blocks the writer
//! or the readers: it copies what no reader still needs, and the writer
//! starts the WAL over from the beginning once all of it has been copied.
//!
//! That last condition is the catch: SQLite starts the WAL over only when a
//! write transaction begins with every frame copied, and a writer that commits
//! while each checkpoint runs never sees that, so under sustained load the WAL
//! would grow without end. Once it holds [`WAL_LIMIT_FACTOR`] times the
//! threshold, the writer therefore checkpoints itself, right after a commit:
//! the background checkpoints have copied nearly everything by then, so it
//! copies only the last frames, and its next transaction starts the WAL over.
//! That costs the writer a pause (two fsyncs) ten times less often than
//! SQLite's automatic checkpoint would.
//!
//! The writer skips its checkpoint while the thread's is running, and on a
//! loaded machine the thread can be descheduled for many commits; so past
//! [`WAL_HARD_FACTOR`] times the threshold the writer waits for the thread's
//! checkpoint to end and then runs its own. That bounds the WAL (and the
//! disk it takes) whatever the scheduler does.

use std::ffi::c_int;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode, MAIN_DB};

use super::StoreError;

/// The WAL size, as a multiple of the checkpoint threshold, at which the
/// writer checkpoints itself (see the module documentation).
const WAL_LIMIT_FACTOR: u32 = 10;

/// The WAL size, as a multiple of the checkpoint threshold, at which the
/// writer waits for a running checkpoint rather than skip its own.
pub(super) const WAL_HARD_FACTOR: u32 = 2 * WAL_LIMIT_FACTOR;

/// Installs the writer connection's WAL hook: asks the thread for a
/// checkpoint once the WAL holds `threshold` pages, and checkpoints on the
/// writer itself past [`WAL_LIMIT_FACTOR`] times that. Replaces SQLite's
/// automatic checkpoint.
pub(super) fn hook_writer(
    writer: &mut Connection,
    checkpointer: &Checkpointer,
    threshold: u32,
) -> rusqlite::Result<()> {
    let threshold = threshold.max(1);
    let limit = threshold.saturating_mul(WAL_LIMIT_FACTOR);
    let hard_limit = threshold.saturating_mul(WAL_HARD_FACTOR);
    let signal = checkpointer.signal();
    writer.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
        let pages = u32::try_from(pages).unwrap_or(0);
        if pages >= limit {
            // Only while the thread is idle, which it then stays until
            // released, so this checkpoint is not refused as busy; if it is
            // running, the next commit tries again, up to the hard limit.
            if signal.try_hold(pages >= hard_limit) {
                if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    tracing::warn!("WAL checkpoint on the writer failed: {e}");
                }
                signal.release();
            }
        } else if pages >= threshold {
            signal.request();
        }
        // The commit has happened whatever a checkpoint did.
        Ok(())
    }))
}

/// The state shared by the writer's WAL hook and the thread.
#[derive(Default)]
struct State {
    /// The WAL reached the threshold since the last checkpoint started.
    requested: bool,
    /// A checkpoint is running on the thread.
    running: bool,
    /// The writer is checkpointing: start nothing.
    held: bool,
    stop: bool,
    /// Checkpoints run so far (tests wait on it).
    done: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain flags and a counter: a panic cannot leave them torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the writer's WAL hook holds: asks for a checkpoint without waiting.
struct Signal {
    shared: Arc<Shared>,
}

impl Signal {
    fn request(&self) {
        let mut state = self.shared.lock();
        if !state.requested {
            state.requested = true;
            self.shared.changed.notify_all();
        }
    }

    /// If no checkpoint is running (or, with `wait`, once the running one
    /// has ended), keeps the thread from starting one and returns true: the
    /// caller checkpoints, then calls [`Signal::release`].
    fn try_hold(&self, wait: bool) -> bool {
        let mut state = self.shared.lock();
        while state.running {
            if !wait {
                return false;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.held = true;
        true
    }

    fn release(&self) {
        self.shared.lock().held = false;
        self.shared.changed.notify_all();
    }
}

/// The checkpoint thread. Dropping it stops the thread and waits for it.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to the database at `path` and starts the thread.
    pub(super) fn spawn(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(super::sqlite::BUSY_TIMEOUT)?;
        // Until it has read the database, a connection does not know that the
        // file is in WAL mode, and its checkpoints do nothing.
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!(
                "the checkpoint thread found journal_mode={mode}, not WAL"
            )));
        }
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("wsgate-checkpoint".into())
            .spawn({
                let shared = shared.clone();
                move || run(&conn, &shared)
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    fn signal(&self) -> Signal {
        Signal {
            shared: self.shared.clone(),
        }
    }

    /// Waits until at least `n` checkpoints have run.
    #[cfg(test)]
    pub(super) fn wait_for(&self, n: u64) {
        let mut state = self.shared.lock();
        while state.done < n {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // The loop does not panic; if it somehow did, there is nothing to
            // add to what the panic already printed.
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while (!state.requested || state.held) && !state.stop {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.requested = false;
            state.running = true;
        }
        // A failed checkpoint loses nothing (the pages stay in the WAL and
        // the next request copies them), so it is logged, not fatal.
        match conn.wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE) {
            Ok(_) => {}
            // Another connection holds the checkpoint lock (recovering the
            // WAL index when the database was just opened, say).
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                tracing::debug!("WAL checkpoint skipped: {e}");
            }
            Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
        }
        let mut state = shared.lock();
        state.running = false;
        state.done += 1;
        shared.changed.notify_all();
    }
}
