//! Group commit: writes that arrive while a transaction is being made
//! durable wait for it, then share the next transaction and its one fsync.
//!
//! One writer task per store takes everything queued (up to a maximum) and
//! hands it to the store's [`BatchWriter`], which writes it in one
//! transaction in the order given. Each caller is answered only after that
//! transaction has committed, so durability before the reply is unchanged;
//! the audit chain stays linear because the batch appends its records in
//! order inside the one transaction.
//!
//! A write that fails in a way that spoils the transaction (a database
//! error, not a refusal) is answered with its error and the batch is written
//! again without it, so one bad write never fails its neighbours. A caller
//! that goes away still has its write committed, as if its reply were lost:
//! writes are idempotent and fenced by their stores.
//!
//! There is no timer: a batch is whatever queued while the previous one
//! committed, so a lone write pays nothing for the batching.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::metrics;

/// Why a batch's transaction was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFailure<E> {
    /// The write at this index spoilt the transaction: it fails with this
    /// error, and the rest are written again without it.
    Write(usize, E),
    /// The transaction itself failed (begin or commit): every write fails.
    Transaction(E),
}

/// What a batch answered: one result per write, in the order given.
pub type BatchOutcome<O, E> = Result<Vec<Result<O, E>>, BatchFailure<E>>;

/// A store's way of writing many writes in one durable transaction.
pub trait BatchWriter: Send + Sync + 'static {
    type Write: Send + 'static;
    type Output: Send + 'static;
    type Error: Clone + Send + 'static;

    /// Writes `writes` in one transaction, in their order, and commits.
    /// A write's own refusal (written nothing) is its `Err` in the vector;
    /// a [`BatchFailure`] means nothing was committed.
    fn write_batch(
        &self,
        writes: &[Self::Write],
    ) -> impl Future<Output = BatchOutcome<Self::Output, Self::Error>> + Send;

    /// The error a caller gets when the writer task is gone (the process is
    /// shutting down, or the task panicked).
    fn stopped() -> Self::Error;
}

/// The order to write a batch in: by `key` (a trial id, say), arrival
/// order among equal keys. A store that locks one row per key as it reaches
/// it then takes those locks in one order in every batch, and so cannot
/// deadlock with another replica's batch.
pub fn order_by_key<T, K: Ord + ?Sized>(writes: &[T], key: impl Fn(&T) -> &K) -> Vec<usize> {
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by(|a, b| key(&writes[*a]).cmp(key(&writes[*b])));
    order
}

struct Queued<W: BatchWriter> {
    write: W::Write,
    reply: oneshot::Sender<Result<W::Output, W::Error>>,
}

/// How many transactions the writer committed, and the largest batch: for
/// tests and the benchmark, which show that writes really share them.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    batches: AtomicUsize,
    writes: AtomicUsize,
    largest: AtomicUsize,
}

impl GroupCommitStats {
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn largest_batch(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }

    fn record(&self, size: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(size, Ordering::Relaxed);
        self.largest.fetch_max(size, Ordering::Relaxed);
    }
}

/// The queue in front of one store's writer task.
pub struct GroupCommit<W: BatchWriter> {
    queue: mpsc::UnboundedSender<Queued<W>>,
    stats: Arc<GroupCommitStats>,
}

impl<W: BatchWriter> GroupCommit<W> {
    /// Starts the writer task on the current Tokio runtime. It ends when
    /// the last `GroupCommit` handle is dropped and the queue is empty.
    /// `service` labels the batch-size metric.
    pub fn start(writer: W, max_batch: usize, service: &'static str) -> Self {
        // Unbounded: the servers' concurrency limits already bound how many
        // calls can be waiting, and a send that never waits keeps the order
        // in which callers arrived.
        let (queue, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(GroupCommitStats::default());
        let writer = Writer {
            writer,
            max_batch: max_batch.max(1),
            stats: stats.clone(),
            service,
        };
        tokio::spawn(writer.run(receiver));
        Self { queue, stats }
    }

    /// Queues `write` and waits until the transaction holding it committed.
    pub async fn submit(&self, write: W::Write) -> Result<W::Output, W::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, reply })
            .map_err(|_| W::stopped())?;
        answer.await.unwrap_or_else(|_| Err(W::stopped()))
    }

    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }
}

/// The task that owns the store's writes.
struct Writer<W: BatchWriter> {
    writer: W,
    max_batch: usize,
    stats: Arc<GroupCommitStats>,
    service: &'static str,
}

impl<W: BatchWriter> Writer<W> {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Queued<W>>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(queued) => batch.push(queued),
                    Err(_) => break,
                }
            }
            self.write_and_answer(batch).await;
        }
    }

    /// Writes the batch, taking out each write that spoils the transaction,
    /// until it commits or nothing is left; answers every caller.
    async fn write_and_answer(&self, batch: Vec<Queued<W>>) {
        let (mut writes, mut replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|q| (q.write, q.reply)).unzip();
        while !writes.is_empty() {
            match self.writer.write_batch(&writes).await {
                Ok(results) => {
                    self.stats.record(writes.len());
                    metrics::record_batch(self.service, writes.len());
                    answer_all(replies, results);
                    return;
                }
                Err(BatchFailure::Write(index, error)) if index < writes.len() => {
                    writes.remove(index);
                    // The caller may have gone; its write was not committed.
                    let _ = replies.remove(index).send(Err(error));
                }
                Err(BatchFailure::Write(_, error) | BatchFailure::Transaction(error)) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                    return;
                }
            }
        }
    }
}

fn answer_all<O, E>(replies: Vec<oneshot::Sender<Result<O, E>>>, results: Vec<Result<O, E>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // A caller that went away finds its write committed on retry.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records each batch it is given; a write `"spoil"` spoils the
    /// transaction, `"refuse"` is refused on its own, `"down"` fails the
    /// whole transaction.
    /// Every batch a [`Recorder`] was given, in order.
    type Batches = Arc<Mutex<Vec<Vec<&'static str>>>>;

    #[derive(Default)]
    struct Recorder {
        batches: Batches,
    }

    impl BatchWriter for Recorder {
        type Write = &'static str;
        type Output = String;
        type Error = String;

        async fn write_batch(&self, writes: &[&'static str]) -> BatchOutcome<String, String> {
            self.batches.lock().expect("lock").push(writes.to_vec());
            if writes.contains(&"down") {
                return Err(BatchFailure::Transaction("database down".into()));
            }
            if let Some(index) = writes.iter().position(|w| *w == "spoil") {
                return Err(BatchFailure::Write(index, "spoilt".into()));
            }
            Ok(writes
                .iter()
                .map(|w| match *w {
                    "refuse" => Err("refused".to_owned()),
                    other => Ok(format!("wrote {other}")),
                })
                .collect())
        }

        fn stopped() -> String {
            "stopped".into()
        }
    }

    fn started(max_batch: usize) -> (GroupCommit<Recorder>, Batches) {
        let recorder = Recorder::default();
        let batches = recorder.batches.clone();
        (GroupCommit::start(recorder, max_batch, "test"), batches)
    }

    /// On a one-thread runtime every submit below queues before the writer
    /// runs, so the batches are known exactly.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_queued_together_share_one_transaction_in_arrival_order() {
        let (group, batches) = started(64);
        let writes = ["a", "b", "refuse", "c"];
        let answers = futures_join(&group, &writes).await;
        assert_eq!(
            answers,
            vec![
                Ok("wrote a".to_owned()),
                Ok("wrote b".to_owned()),
                Err("refused".to_owned()),
                Ok("wrote c".to_owned()),
            ]
        );
        assert_eq!(*batches.lock().expect("lock"), vec![writes.to_vec()]);
        assert_eq!(group.stats().batches(), 1);
        assert_eq!(group.stats().largest_batch(), 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_that_spoils_the_transaction_fails_alone() {
        let (group, batches) = started(64);
        let answers = futures_join(&group, &["a", "spoil", "b"]).await;
        assert_eq!(
            answers,
            vec![
                Ok("wrote a".to_owned()),
                Err("spoilt".to_owned()),
                Ok("wrote b".to_owned()),
            ]
        );
        assert_eq!(
            *batches.lock().expect("lock"),
            vec![vec!["a", "spoil", "b"], vec!["a", "b"]]
        );
        assert_eq!(group.stats().batches(), 1, "only the second committed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_transaction_fails_every_write_in_it_and_no_later_one() {
        let (group, _) = started(64);
        let answers = futures_join(&group, &["a", "down"]).await;
        assert_eq!(
            answers,
            vec![
                Err("database down".to_owned()),
                Err("database down".to_owned())
            ]
        );
        assert_eq!(group.submit("c").await, Ok("wrote c".to_owned()));
    }

    #[test]
    fn batches_are_ordered_by_key_keeping_arrival_order_within_each() {
        let writes = ["B1", "A1", "B2", "A2", "C1"];
        assert_eq!(order_by_key(&writes, |w| &w[..1]), vec![1, 3, 0, 2, 4]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_are_cut_at_their_maximum() {
        let (group, batches) = started(2);
        let answers = futures_join(&group, &["a", "b", "c"]).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(
            *batches.lock().expect("lock"),
            vec![vec!["a", "b"], vec!["c"]]
        );
    }

    async fn futures_join(
        group: &GroupCommit<Recorder>,
        writes: &[&'static str],
    ) -> Vec<Result<String, String>> {
        let pending: Vec<_> = writes.iter().map(|w| group.submit(w)).collect();
        let mut answers = Vec::new();
        // Every submit has queued before the first await below returns.
        let handles: Vec<_> = pending.into_iter().map(Box::pin).collect();
        for handle in poll_all_once(handles).await {
            answers.push(handle);
        }
        answers
    }

    /// Polls every future once (so each queues its write), then awaits them
    /// in order.
    async fn poll_all_once<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut ready: Vec<Option<F::Output>> = futures
            .iter_mut()
            .map(|f| match std::pin::Pin::new(f).poll(&mut context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
            .collect();
        let mut outputs = Vec::new();
        for (future, done) in futures.into_iter().zip(ready.iter_mut()) {
            outputs.push(match done.take() {
                Some(output) => output,
                None => future.await,
            });
        }
        outputs
    }
}
