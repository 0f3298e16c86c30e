//! Group commit for the analytics store: one thread owns every write
//! transaction and runs all the writes that queued while the previous
//! commit was fsync'd in one transaction, so the partitions' tasks share
//! fsyncs instead of waiting for one each (every event is a write here).
//! A bucket the batch's writes touch is decoded once and encoded once per
//! batch (`Batch`), however many of its events land in it. Batches commit
//! without an fsync unless a `sync` is among them: the processor syncs
//! before it commits its log position (`AnalyticsStore::sync`), so
//! projecting an event waits for no disk. The projection
//! store has the same group commit (`store/embedded/writer.rs`); the two
//! could share one module.
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::Batch;
use crate::store::StoreError;

/// Most writes in one transaction; bounds the wait of the first one.
const MAX_BATCH: usize = 1024;
const QUEUE_CAPACITY: usize = 8 * 1024;

/// Called once the batch that ran a write has committed (or failed).
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside the batch (`None` when no transaction could be
/// started), says whether it succeeded, and hands back how to answer its
/// caller after the commit.
type Job = Box<dyn FnOnce(Option<&mut Batch<'_>>) -> (bool, Completion) + Send>;

/// A job, and whether its caller waits until it is durable.
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
            .name("chatstream-analytics-writer".into())
            .spawn(move || run(&db, queue))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `work` in a batch and returns its result once the batch is
    /// committed; it is durable after the next `sync`. `work` sees the
    /// writes batched before it.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue(work, false).await
    }

    /// Returns once every write committed before is durable.
    pub(super) async fn sync(&self) -> Result<(), StoreError> {
        self.queue(|_| Ok(()), true).await
    }

    async fn queue<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
        durable: bool,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |batch| {
            let result = match batch {
                Some(batch) => work(batch),
                None => Err(StoreError::Unavailable(
                    "cannot start an analytics write transaction".into(),
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
        let stopped = || StoreError::Unavailable("the analytics store is closed".into());
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
            tracing::error!("analytics store writer thread panicked");
        }
    }
}

fn run(db: &Database, mut queue: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A sync in the batch makes the whole batch's commit durable (and
        // every commit before it).
        let durability = match batch.iter().any(|queued| queued.durable) {
            true => Durability::Immediate,
            false => Durability::None,
        };
        jobs.extend(batch.drain(..).map(|queued| queued.job));
        write_batch(db, &mut jobs, durability);
    }
}

/// One transaction for the whole batch. A write that fails aborts the
/// batch (its partial changes must not commit): it gets its own error, the
/// others are told to retry.
fn write_batch(db: &Database, jobs: &mut Vec<Job>, durability: Durability) {
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
            tracing::warn!(%error, "analytics write transaction could not start");
            for job in jobs.drain(..) {
                let (_, completion) = job(None);
                completion(Ok(()));
            }
            return;
        }
    };
    let mut all_ok = true;
    let mut batch = Batch::new(&txn);
    let completions: Vec<Completion> = jobs
        .drain(..)
        .map(|job| {
            let (ok, completion) = job(Some(&mut batch));
            all_ok &= ok;
            completion
        })
        .collect();
    if all_ok && let Err(error) = batch.store_buckets() {
        tracing::warn!(%error, "analytics buckets could not be written");
        all_ok = false;
    }
    let committed = if all_ok {
        txn.commit()
            .map_err(|error| StoreError::Unavailable(format!("analytics commit failed: {error}")))
    } else {
        let _ = txn.abort();
        Err(StoreError::Unavailable(
            "a write in the same analytics batch failed; retry".into(),
        ))
    };
    for completion in completions {
        completion(committed.clone());
    }
}
