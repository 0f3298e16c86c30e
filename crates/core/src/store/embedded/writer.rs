//! Group commit for the projection store, as the log does it: one thread
//! owns every write transaction, runs all the writes that queued up while
//! the previous commit was fsync'd in one transaction, and commits once.
//! Concurrent projections (one task per partition, plus the gateway) then
//! share fsyncs instead of queueing for one each.
//!
//! Unsynced writes (see `ProjectionStore::append_history_unsynced`) go in a
//! transaction of their own, committed without an fsync before the batch's
//! durable one: they wait for no disk, and the next durable commit (a
//! `sync`) makes them durable with everything before it.
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::store_error;
use crate::store::StoreError;

/// Most writes in one transaction; bounds the wait of the first one.
const MAX_BATCH: usize = 1024;
const QUEUE_CAPACITY: usize = 8 * 1024;

/// Called once the batch that ran a write has committed (or failed).
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside the batch's transaction (`None` when none could be
/// started), says whether it succeeded, and hands back how to answer its
/// caller after the commit.
type Job = Box<dyn FnOnce(Option<&WriteTransaction>) -> (bool, Completion) + Send>;

/// A job and whether its caller waits for it to be durable.
struct Queued {
    job: Job,
    durable: bool,
}

pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Queued>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("chatstream-store-writer".into())
            .spawn(move || run(&db, queue))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `work` in a write transaction and returns its result once that
    /// transaction is durable. `work` sees the writes batched before it.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue(work, true).await
    }

    /// `write`, returning once the transaction is committed, before it is
    /// durable (the next durable commit makes it so).
    pub(super) async fn write_unsynced<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue(work, false).await
    }

    /// Returns once every write committed before is durable.
    pub(super) async fn sync(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    async fn queue<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
        durable: bool,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let result = match txn {
                Some(txn) => work(txn).map_err(store_error),
                None => Err(StoreError::Unavailable(
                    "cannot start a write transaction".into(),
                )),
            };
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let outcome = match (result, committed) {
                    (Err(error), _) | (Ok(_), Err(error)) => Err(error),
                    (Ok(value), Ok(())) => Ok(value),
                };
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
        let stopped = || StoreError::Unavailable("the projection store is closed".into());
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Queued { job, durable })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue stops the thread after it answered what it holds;
        // joining it releases its handle on the file.
        drop(self.jobs.take());
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("projection store writer thread panicked");
        }
    }
}

fn run(db: &Database, mut queue: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let (mut unsynced, mut durable) = (Vec::new(), Vec::new());
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Jobs of one batch were queued concurrently, so neither class need
        // wait for the other; the unsynced go first, so the durable commit
        // covers them too.
        for Queued { job, durable: sync } in batch.drain(..) {
            match sync {
                true => durable.push(job),
                false => unsynced.push(job),
            }
        }
        if !unsynced.is_empty() {
            write_batch(db, &mut unsynced, Durability::None);
        }
        if !durable.is_empty() {
            write_batch(db, &mut durable, Durability::Immediate);
        }
    }
}

/// One transaction for the whole batch. A write that fails aborts the
/// batch (its partial changes must not commit); the others are told the
/// store is unavailable and their callers retry.
fn write_batch(db: &Database, batch: &mut Vec<Job>, durability: Durability) {
    let begun = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|mut txn| {
            txn.set_durability(durability)?;
            Ok(txn)
        });
    let txn = match begun {
        Ok(txn) => txn,
        Err(error) => {
            tracing::warn!(%error, "projection store write transaction could not start");
            for job in batch.drain(..) {
                let (_, completion) = job(None);
                completion(Ok(()));
            }
            return;
        }
    };
    let mut all_ok = true;
    let completions: Vec<Completion> = batch
        .drain(..)
        .map(|job| {
            let (ok, completion) = job(Some(&txn));
            all_ok &= ok;
            completion
        })
        .collect();
    let committed = if all_ok {
        txn.commit()
            .map_err(|error| store_error(redb::Error::from(error)))
    } else {
        let _ = txn.abort();
        Err(StoreError::Unavailable(
            "a write in the same batch failed; retry".into(),
        ))
    };
    for completion in completions {
        completion(committed.clone());
    }
}
