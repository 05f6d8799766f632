//! Guards on the database file itself, outside SQLite.
//!
//! - [`Lock`]: one store per database file. Two processes writing the same
//!   file each keep their own seq cache, so their inserts collide
//!   (`UNIQUE constraint failed: messages.room, messages.seq`) and messages
//!   fail at random; the second store must refuse to open instead.
//! - [`Watch`]: notices that the path no longer names the file the store has
//!   open (deleted, or replaced by a rename). SQLite goes on writing into the
//!   open, now nameless, file, so every message confirmed after that would be
//!   gone at the next start.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::StoreError;

/// Why a database file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbFileError {
    #[error(
        "{} is in use by process {pid}, which holds {}: stop it, or give this one another database file",
        db.display(), lock.display()
    )]
    InUseBy {
        db: PathBuf,
        lock: PathBuf,
        pid: u32,
    },
    /// The holder has not written its pid yet, or is a store in this process
    /// (the pid would then be ours, which says nothing).
    #[error(
        "{} is in use by another store (the lock on {} is held): stop it, or give this one another database file",
        db.display(), lock.display()
    )]
    InUse { db: PathBuf, lock: PathBuf },
    #[error("cannot lock {}: {source}", lock.display())]
    Lock { lock: PathBuf, source: io::Error },
    #[error(
        "the database file {} was deleted or replaced while open ({reason}); messages are no longer stored durably: restart the server",
        db.display()
    )]
    Replaced { db: PathBuf, reason: String },
}

impl From<DbFileError> for StoreError {
    fn from(e: DbFileError) -> Self {
        StoreError::File(e.to_string())
    }
}

/// An exclusive lock on `<db>.lock`, held for the store's lifetime, with the
/// holder's pid written in it so that a refusal can name the holder.
///
/// A sidecar rather than the database itself: SQLite takes POSIX (`fcntl`)
/// locks on the database, and POSIX locks belong to the process, so closing
/// any other descriptor of that file, such as one opened here to lock it,
/// would silently release SQLite's own locks. `flock` on a file SQLite never
/// touches cannot interfere. The lock is per open file description, so it
/// also refuses a second store in the same process. The kernel drops it when
/// the process dies, however it dies: a stale file never blocks a restart.
#[derive(Debug)]
pub(super) struct Lock {
    file: File,
}

impl Lock {
    pub(super) fn acquire(db: &Path) -> Result<Lock, DbFileError> {
        let lock = lock_path(db);
        let io_error = |source| DbFileError::Lock {
            lock: lock.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let db = db.to_owned();
                return Err(match holder(&mut file) {
                    Some(pid) if pid != std::process::id() => {
                        DbFileError::InUseBy { db, lock, pid }
                    }
                    _ => DbFileError::InUse { db, lock },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io_error)?;
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // The file itself stays: removing it would let a store that opened
        // it just before the removal lock the removed file while a third one
        // creates and locks a new one. Emptying it keeps a stale pid from
        // being read by anyone; the lock goes with the descriptor.
        let _ = self.file.set_len(0);
    }
}

/// `<db>.lock`, beside SQLite's own `<db>-wal` and `<db>-shm`.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The pid the lock's holder wrote, if it has written it yet.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Which file a path names. Taken with `stat`, never by opening the file: a
/// descriptor of the database closed here would drop SQLite's POSIX locks
/// (see [`Lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    #[cfg(unix)]
    fn of(path: &Path) -> io::Result<Identity> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Without inode numbers, only a deletion can be seen.
    #[cfg(not(unix))]
    fn of(path: &Path) -> io::Result<Identity> {
        std::fs::metadata(path).map(|_| Identity { dev: 0, ino: 0 })
    }
}

/// Remembers which files the store opened, and tells when a path stops
/// naming them. Once it has, it stays lost: the store cannot get back to the
/// file the next start will open.
#[derive(Debug)]
pub(super) struct Watch {
    db: PathBuf,
    /// Each path with the file it named at open: the database and its WAL,
    /// which holds every commit since the last checkpoint, so losing it loses
    /// them as surely as losing the database.
    files: Vec<(PathBuf, Identity)>,
    lost: AtomicBool,
}

impl Watch {
    /// Call once SQLite has opened (and created) the database and its WAL.
    pub(super) fn new(db: &Path) -> Result<Watch, StoreError> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let files = [db.to_owned(), PathBuf::from(wal)]
            .into_iter()
            .map(|path| {
                let identity = Identity::of(&path).map_err(|e| {
                    StoreError::Unavailable(format!("cannot stat {}: {e}", path.display()))
                })?;
                Ok((path, identity))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Watch {
            db: db.to_owned(),
            files,
            lost: AtomicBool::new(false),
        })
    }

    /// Fails if the files were found lost before; does not look again.
    pub(super) fn ensure_not_lost(&self) -> Result<(), DbFileError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(self.replaced("found earlier".into()));
        }
        Ok(())
    }

    /// Fails if any path no longer names the file opened. One `stat` per
    /// file. The first failure is logged; it is the one that matters.
    pub(super) fn check(&self) -> Result<(), DbFileError> {
        self.ensure_not_lost()?;
        let Some(reason) = self
            .files
            .iter()
            .find_map(|(path, opened)| match Identity::of(path) {
                Ok(now) if now == *opened => None,
                Ok(_) => Some(format!("{} is another file now", path.display())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Some(format!("{} is gone", path.display()))
                }
                Err(e) => Some(format!("cannot stat {}: {e}", path.display())),
            })
        else {
            return Ok(());
        };
        let err = self.replaced(reason);
        if !self.lost.swap(true, Ordering::AcqRel) {
            tracing::error!("{err}; every write from now on fails");
        }
        Err(err)
    }

    fn replaced(&self, reason: String) -> DbFileError {
        DbFileError::Replaced {
            db: self.db.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let first = Lock::acquire(&db).unwrap();
        let pid = std::fs::read_to_string(dir.path().join("chat.db.lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let err = Lock::acquire(&db).unwrap_err();
        assert!(matches!(err, DbFileError::InUse { .. }), "{err:?}");
        assert!(err.to_string().contains(&db.display().to_string()), "{err}");

        drop(first);
        Lock::acquire(&db).unwrap();
    }

    #[test]
    fn a_watch_sees_deletion_and_replacement_and_stays_lost() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let wal = dir.path().join("chat.db-wal");
        std::fs::write(&db, "db").unwrap();
        std::fs::write(&wal, "wal").unwrap();
        let watch = Watch::new(&db).unwrap();
        watch.check().unwrap();
        // Rewriting in place is the same file.
        std::fs::write(&db, "db, changed").unwrap();
        watch.check().unwrap();

        let other = dir.path().join("other");
        std::fs::write(&other, "another").unwrap();
        std::fs::rename(&other, &wal).unwrap();
        let err = watch.check().unwrap_err();
        assert!(err.to_string().contains("is another file now"), "{err}");
        assert!(watch.ensure_not_lost().is_err());

        let watch = Watch::new(&db).unwrap();
        std::fs::remove_file(&db).unwrap();
        let err = watch.check().unwrap_err();
        assert!(err.to_string().contains("is gone"), "{err}");
        assert!(err.to_string().contains("restart the server"), "{err}");
        // Even once a file is back at the path.
        std::fs::write(&db, "db").unwrap();
        assert!(watch.check().is_err());
    }
}
