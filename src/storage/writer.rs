//! [`Writer`]: the group-commit loop.
//!
//! Every write goes through one queue to one thread. That thread is the only
//! caller of [`Store::write_batch`], which gives each room a single order of
//! seqs and lets the store keep its seq cache without locking against other
//! writers. It takes whatever queued up while the previous commit ran and
//! applies it as one transaction: under load, batches grow by themselves and
//! one commit (one fsync) serves many messages; when idle, a lone write is
//! committed at once, as no time is spent waiting for a batch to fill.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Store, StoreError, Write, Written};

/// How the writer queues and batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most writes per transaction (at least 1). Default 1024.
    pub max_batch: usize,
    /// Writes that may wait in the queue before [`Writer::submit`] waits
    /// (at least 1). Default 65 536.
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 1024,
            queue: 65_536,
        }
    }
}

/// Queues writes for the writer thread. Cheap to clone; the thread stops
/// once every clone is dropped and the queue is drained.
///
/// `T` is a tag carried along with each write and handed back with its
/// result, so the caller can tell whose write it was.
pub struct Writer<T> {
    queue: mpsc::Sender<(Write, T)>,
}

// Not derived: that would require `T: Clone`.
impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Writer {
            queue: self.queue.clone(),
        }
    }
}

/// The writer thread, to wait for its end.
pub struct WriterHandle {
    thread: JoinHandle<()>,
}

impl<T: Send + 'static> Writer<T> {
    /// Starts the writer thread. `on_commit` is called on that thread after
    /// each batch, with every (tag, result) of the batch in submission order
    /// and the time the store took to commit it.
    /// It runs synchronously, before the next batch is taken, so whatever it
    /// does (fan out to subscribers) happens in commit order.
    ///
    /// Fails only if the thread cannot be created.
    pub fn spawn<S: Store + ?Sized>(
        store: Arc<S>,
        options: WriterOptions,
        on_commit: impl FnMut(Vec<(T, Result<Written, StoreError>)>, Duration) + Send + 'static,
    ) -> Result<(Writer<T>, WriterHandle), StoreError> {
        let (queue, receiver) = mpsc::channel(options.queue.max(1));
        let max_batch = options.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("wsgate-writer".into())
            .spawn(move || run(&*store, receiver, max_batch, on_commit))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok((Writer { queue }, WriterHandle { thread }))
    }

    /// Queues a write; waits only while the queue is full (backpressure).
    /// Fails if the writer thread has stopped.
    pub async fn submit(&self, write: Write, tag: T) -> Result<(), StoreError> {
        self.queue
            .send((write, tag))
            .await
            .map_err(|_| StoreError::Stopped)
    }
}

impl WriterHandle {
    /// Waits until every queued write is committed and the thread has
    /// exited, which happens once every [`Writer`] clone is dropped. Fails if
    /// the thread panicked (in `on_commit`: the loop itself does not panic).
    pub async fn join(self) -> Result<(), StoreError> {
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .map_err(|e| StoreError::Internal(format!("cannot wait for the writer thread: {e}")))?
            .map_err(|_| StoreError::Internal("the writer thread panicked".into()))
    }
}

/// The writer thread's loop: one batch per iteration, until the queue is
/// closed and empty.
fn run<S: Store + ?Sized, T>(
    store: &S,
    mut receiver: mpsc::Receiver<(Write, T)>,
    max_batch: usize,
    mut on_commit: impl FnMut(Vec<(T, Result<Written, StoreError>)>, Duration),
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut writes = vec![first.0];
        let mut tags = vec![first.1];
        while writes.len() < max_batch {
            let Ok((write, tag)) = receiver.try_recv() else {
                break;
            };
            writes.push(write);
            tags.push(tag);
        }
        let count = writes.len();
        let started = Instant::now();
        let written = store.write_batch(writes);
        let took = started.elapsed();
        let results = match written {
            Ok(written) if written.len() == count => written.into_iter().map(Ok).collect(),
            // A store breaking its contract must not make results go missing.
            Ok(written) => {
                let err = StoreError::Internal(format!(
                    "the store returned {} results for {count} writes",
                    written.len()
                ));
                tracing::error!(%err, "write batch failed");
                vec![Err(err); count]
            }
            Err(err) => {
                tracing::error!(%err, writes = count, "write batch failed");
                vec![Err(err); count]
            }
        };
        on_commit(tags.into_iter().zip(results).collect(), took);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;
    use crate::storage::{
        ChangesQuery, HistoryPage, HistoryQuery, NewMessage, RoomsPage, RoomsQuery, SqliteOptions,
        SqliteStore, UserRecord,
    };

    /// Generous: only reached when something is broken.
    const TIMEOUT: Duration = Duration::from_secs(10);

    type Batch<T> = Vec<(T, Result<Written, StoreError>)>;

    fn message(i: usize) -> Write {
        Write::Message(NewMessage {
            id: format!("m{i}"),
            room_id: "r".into(),
            sender_id: "alice".into(),
            content: format!("text {i}"),
            timestamp_us: 1_000,
        })
    }

    fn sqlite(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let path = dir.path().join("chat.db");
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap())
    }

    /// `on_commit` that forwards every batch to the returned receiver.
    fn forward<T: Send + 'static>() -> (
        impl FnMut(Batch<T>, Duration) + Send,
        std_mpsc::Receiver<Batch<T>>,
    ) {
        let (batches, received) = std_mpsc::channel();
        (move |batch, _| batches.send(batch).unwrap(), received)
    }

    async fn join(handle: WriterHandle) -> Result<(), StoreError> {
        tokio::time::timeout(TIMEOUT, handle.join()).await.unwrap()
    }

    #[tokio::test]
    async fn results_come_in_submission_order_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir);
        // The first on_commit holds the thread until everything else is
        // queued, so the batches that follow are known exactly.
        let (entered, first_entered) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel();
        let (mut forward, batches) = forward();
        let mut first = true;
        let on_commit = move |batch, took| {
            if std::mem::take(&mut first) {
                entered.send(()).unwrap();
                released.recv_timeout(TIMEOUT).unwrap();
            }
            forward(batch, took);
        };
        let options = WriterOptions {
            max_batch: 100,
            ..WriterOptions::default()
        };
        let (writer, handle) = Writer::spawn(store.clone(), options, on_commit).unwrap();

        writer.submit(message(0), 0).await.unwrap();
        first_entered.recv_timeout(TIMEOUT).unwrap();
        for i in 1..1000 {
            writer.submit(message(i), i).await.unwrap();
        }
        release.send(()).unwrap();
        drop(writer);
        join(handle).await.unwrap();

        let batches: Vec<_> = batches.try_iter().collect();
        let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
        let mut expected = vec![1];
        expected.extend([100; 9]);
        expected.push(99);
        assert_eq!(sizes, expected);
        for (i, (tag, result)) in batches.into_iter().flatten().enumerate() {
            assert_eq!(tag, i);
            match result {
                Ok(Written::Stored(message)) => {
                    assert_eq!((message.id, message.seq), (format!("m{i}"), i as u64 + 1));
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn join_flushes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir);
        let (on_commit, batches) = forward();
        let (writer, handle) =
            Writer::spawn(store.clone(), WriterOptions::default(), on_commit).unwrap();
        for i in 0..5000 {
            writer.submit(message(i), i).await.unwrap();
        }
        drop(writer);
        join(handle).await.unwrap();

        let tags: Vec<_> = batches.try_iter().flatten().map(|(tag, _)| tag).collect();
        assert_eq!(tags, (0..5000).collect::<Vec<_>>());
        let page = store
            .history(&HistoryQuery {
                room_id: "r".into(),
                limit: 1,
                before_seq: 0,
                after_seq: None,
            })
            .unwrap();
        assert_eq!(page.messages[0].seq, 5000);
    }

    /// Fails any batch with a write for user "fail", and returns one result
    /// too few for any batch with a write for user "short".
    struct FakeStore;

    impl Store for FakeStore {
        fn write_batch(&self, writes: Vec<Write>) -> Result<Vec<Written>, StoreError> {
            let mut written = Vec::new();
            for write in writes {
                let Write::EnsureUser {
                    user_id, now_us, ..
                } = write
                else {
                    return Err(StoreError::Internal("unexpected write".into()));
                };
                match user_id.as_str() {
                    "fail" => return Err(StoreError::Full("disk full".into())),
                    "short" => continue,
                    _ => written.push(Written::User(UserRecord {
                        name: user_id.clone(),
                        id: user_id,
                        created_at_us: now_us,
                    })),
                }
            }
            Ok(written)
        }

        fn history(&self, _: &HistoryQuery) -> Result<HistoryPage, StoreError> {
            Err(StoreError::Internal("not in this fake".into()))
        }

        fn changes(&self, _: &ChangesQuery) -> Result<HistoryPage, StoreError> {
            Err(StoreError::Internal("not in this fake".into()))
        }

        fn rooms(&self, _: &RoomsQuery) -> Result<RoomsPage, StoreError> {
            Err(StoreError::Internal("not in this fake".into()))
        }

        fn get_user(&self, _: &str) -> Result<Option<UserRecord>, StoreError> {
            Err(StoreError::Internal("not in this fake".into()))
        }
    }

    #[tokio::test]
    async fn the_loop_survives_a_failed_batch() {
        let (on_commit, batches) = forward();
        let (writer, handle) =
            Writer::spawn(Arc::new(FakeStore), WriterOptions::default(), on_commit).unwrap();
        // One write at a time, waiting for its batch, so each is a batch.
        for (i, user) in ["fail", "short", "ok"].into_iter().enumerate() {
            let write = Write::EnsureUser {
                user_id: user.into(),
                name: None,
                now_us: 7,
            };
            writer.submit(write, i).await.unwrap();
            let batch = batches.recv_timeout(TIMEOUT).unwrap();
            assert_eq!(batch.len(), 1);
            let (tag, result) = &batch[0];
            assert_eq!(*tag, i);
            match (user, result) {
                ("fail", Err(err)) => assert_eq!(err, &StoreError::Full("disk full".into())),
                ("short", Err(err)) => {
                    assert!(err.to_string().contains("0 results for 1 writes"), "{err}")
                }
                ("ok", Ok(Written::User(user))) => assert_eq!(user.id, "ok"),
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(writer);
        join(handle).await.unwrap();
    }

    #[tokio::test]
    async fn submit_fails_once_the_thread_is_gone() {
        let on_commit = |_: Batch<()>, _| panic!("on_commit failed");
        let (writer, handle) =
            Writer::spawn(Arc::new(FakeStore), WriterOptions::default(), on_commit).unwrap();
        let ensure = || Write::EnsureUser {
            user_id: "ok".into(),
            name: None,
            now_us: 7,
        };
        writer.submit(ensure(), ()).await.unwrap();
        assert!(
            join(handle)
                .await
                .unwrap_err()
                .to_string()
                .contains("panicked")
        );
        assert!(writer.submit(ensure(), ()).await.is_err());
    }
}
