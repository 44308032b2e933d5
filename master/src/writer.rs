//! The log writer: the one place that numbers entries.
//!
//! Writes arrive from many HTTP handlers at once; a single writer thread takes them in batches,
//! lets the [`Sequencer`] admit each one (new with the next order, or already in the log),
//! appends the batch's new entries to the store in one call (one sync for a durable store) and
//! only then tells the publisher and answers the handlers. One thread means one total order with
//! no lock held across I/O. The rules live in the sequencer; this thread only carries out what
//! it decides: snapshot the on-disk keys, admit, append, answer, flush keys.
//!
//! Look-ups by message id ([`LogWriter::find`]) go through the same thread: the newest keys
//! live only in the sequencer's memory until they are flushed to the on-disk index, so only
//! here is every entry of the log found. They are answered after the batch they came with is
//! stored, and change nothing.

use crate::dedup_keys::DedupKeys;
use replog_common::rules::sequencer::{Admitted, KnownKeys, Sequencer, Write};
use replog_common::{events, Entry, MessageId, Order};
use replog_shell::store::{LogStore, StoreError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use replog_common::rules::sequencer::DedupFlush;

/// How many queued writes the writer takes in one batch at most.
const MAX_BATCH: usize = 1024;

/// What became of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// A new entry was appended.
    New(Entry),
    /// The log already held this write (same message id, or same content with `--dedup content`).
    Existing(Entry),
}

impl Appended {
    /// The entry, new or existing.
    pub fn entry(&self) -> &Entry {
        match self {
            Appended::New(entry) | Appended::Existing(entry) => entry,
        }
    }
}

/// Why a write could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The store failed; the master stops rather than run with a log it cannot write. Shared,
    /// because one failed batch answers every write in it with the same error.
    #[error("the log store failed: {0}")]
    Storage(#[from] Arc<StoreError>),
    /// The dedup index names an entry the log does not hold.
    #[error("entry {0} is indexed but missing from the log")]
    IndexedButMissing(Order),
    /// The master is read-only and the log does not hold this write.
    #[error("the master is read-only and this write is not in the log")]
    ReadOnly,
    /// The writer has stopped (the master is shutting down).
    #[error("the master is shutting down")]
    Stopped,
}

/// Whether a write may become a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New entries are numbered as usual.
    Any,
    /// The master is read-only: a write the log already holds is answered as usual, any other
    /// is refused with [`AppendError::ReadOnly`] and nothing is appended.
    ExistingOnly,
}

/// One write waiting for the writer.
struct AppendRequest {
    /// Whether it may become a new entry.
    admission: Admission,
    /// The client's id, or `None` for a fresh UUID.
    message_id: Option<MessageId>,
    /// The payload.
    content: String,
    /// Where the outcome goes.
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// One look-up by message id waiting for the writer.
struct FindRequest {
    /// The id looked for.
    message_id: MessageId,
    /// Where the entry (or `None`) goes.
    reply: oneshot::Sender<Result<Option<Entry>, AppendError>>,
}

/// What the writer thread is asked.
enum Request {
    /// Append a write, or find the entry holding it.
    Append(AppendRequest),
    /// Find an entry by message id, appending nothing.
    Find(FindRequest),
}

/// A handle to send writes to the writer thread.
#[derive(Clone)]
pub struct LogWriter {
    /// Bounded, so a flood of writes pushes back on HTTP instead of growing memory.
    requests: mpsc::Sender<Request>,
}

impl LogWriter {
    /// Starts the writer thread. After each stored batch the new end of the log goes to
    /// `stored` (the publisher follows it); a store failure cancels `fatal` so the node stops.
    pub fn spawn(
        store: Arc<dyn LogStore>,
        dedup: DedupKeys,
        flush: DedupFlush,
        stored: watch::Sender<Order>,
        fatal: CancellationToken,
    ) -> (LogWriter, std::thread::JoinHandle<()>) {
        let (requests, inbox) = mpsc::channel(4 * MAX_BATCH);
        // The on-disk index has caught up with the log before the writer starts.
        let sequencer = Sequencer::new(
            dedup.mode(),
            crate::dedup_keys::digest,
            store.last_order(),
            flush,
            Instant::now(),
        );
        let writer = Writer {
            store,
            dedup,
            sequencer,
            stored,
            fatal,
        };
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let fatal = writer.fatal.clone();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(inbox)))
                    .is_err()
                {
                    tracing::error!("the log writer panicked; stopping the master");
                    fatal.cancel();
                }
            })
            .expect("spawn the log writer thread");
        (LogWriter { requests }, thread)
    }

    /// Appends a write, or finds the entry that already holds it.
    pub async fn append(
        &self,
        message_id: Option<MessageId>,
        content: String,
    ) -> Result<Appended, AppendError> {
        self.submit(message_id, content, Admission::Any).await
    }

    /// Like [`LogWriter::append`], but with `admission` saying whether a new entry may be made.
    pub async fn submit(
        &self,
        message_id: Option<MessageId>,
        content: String,
        admission: Admission,
    ) -> Result<Appended, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request::Append(AppendRequest {
                admission,
                message_id,
                content,
                reply,
            }))
            .await
            .map_err(|_| AppendError::Stopped)?;
        outcome.await.map_err(|_| AppendError::Stopped)?
    }

    /// The entry the log holds with `message_id`, if any: read-only, whether its key is still
    /// in memory or already in the on-disk index.
    pub async fn find(&self, message_id: MessageId) -> Result<Option<Entry>, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request::Find(FindRequest { message_id, reply }))
            .await
            .map_err(|_| AppendError::Stopped)?;
        outcome.await.map_err(|_| AppendError::Stopped)?
    }
}

/// The writer thread's state.
struct Writer {
    /// The master's log.
    store: Arc<dyn LogStore>,
    /// Which writes the log holds, up to the last flush (on disk).
    dedup: DedupKeys,
    /// Numbers new writes, remembers the keys since the last flush, decides when to flush.
    sequencer: Sequencer,
    /// The end of the stored log, for the publisher.
    stored: watch::Sender<Order>,
    /// Cancelled when the store fails.
    fatal: CancellationToken,
}

/// What a request in a batch resolved to before the batch is stored.
enum Resolved {
    /// Index into the batch's new entries.
    New(usize),
    /// Already in the log at this order.
    Existing(Order),
    /// Not in the log, and the master takes no new entries.
    Refused,
}

impl Writer {
    fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut finds = Vec::new();
        let take = |request: Request, batch: &mut Vec<_>, finds: &mut Vec<_>| match request {
            Request::Append(append) => batch.push(append),
            Request::Find(find) => finds.push(find),
        };
        while let Some(first) = inbox.blocking_recv() {
            take(first, &mut batch, &mut finds);
            while batch.len() + finds.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(request) => take(request, &mut batch, &mut finds),
                    Err(_) => break,
                }
            }
            let written = if batch.is_empty() {
                Ok(())
            } else {
                self.write_batch(&mut batch)
            };
            // After the batch: a look-up sent with a write sees it.
            for find in finds.drain(..) {
                let _ = find.reply.send(self.find(&find.message_id));
            }
            if let Err(error) = written {
                tracing::error!(%error, "cannot write to the log; stopping the master");
                let error = Arc::new(error);
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(AppendError::Storage(error.clone())));
                }
                self.fatal.cancel();
                return;
            }
        }
        if let Err(error) = self.flush_dedup() {
            tracing::warn!(%error, "cannot record the newest dedup keys; they are re-indexed from the log at the next start");
        }
        tracing::debug!("log writer stopped");
    }

    fn write_batch(&mut self, batch: &mut Vec<AppendRequest>) -> Result<(), StoreError> {
        let mut fresh: Vec<Entry> = Vec::new();
        let mut resolved = Vec::with_capacity(batch.len());
        // The on-disk index only changes between batches: one read transaction serves them all.
        let snapshot = self.dedup.snapshot()?;
        for request in batch.iter_mut() {
            let content = std::mem::take(&mut request.content);
            let write = match request.message_id.take() {
                Some(id) => Write::with_client_id(id, content),
                // A UUID v4 cannot be in the log already: the sequencer never looks it up.
                None => Write::with_fresh_id(MessageId::random(), content),
            };
            if request.admission == Admission::ExistingOnly {
                let known = self.sequencer.lookup(&write, &snapshot)?;
                if let Some(order) = known {
                    tracing::debug!(target: events::TARGET, event = events::DEDUPLICATED, order = order.get(), message_id = write.message_id.as_str());
                }
                resolved.push(known.map_or(Resolved::Refused, Resolved::Existing));
                continue;
            }
            match self.sequencer.admit(write, &snapshot)? {
                Admitted::New(entry) => {
                    resolved.push(Resolved::New(fresh.len()));
                    fresh.push(entry);
                }
                Admitted::Existing { order, message_id } => {
                    tracing::debug!(target: events::TARGET, event = events::DEDUPLICATED, order = order.get(), message_id = message_id.as_str());
                    resolved.push(Resolved::Existing(order));
                }
            }
        }
        if !fresh.is_empty() {
            self.store.append(&fresh)?;
            for entry in &fresh {
                tracing::debug!(target: events::TARGET, event = events::SEQUENCED, order = entry.order.get(), message_id = entry.message_id.as_str());
            }
            self.stored.send_replace(fresh[fresh.len() - 1].order);
        }
        for (request, resolved) in batch.drain(..).zip(resolved) {
            let outcome = match resolved {
                Resolved::New(index) => Ok(Appended::New(fresh[index].clone())),
                Resolved::Existing(order) => self.existing(order, &fresh),
                Resolved::Refused => Err(AppendError::ReadOnly),
            };
            let _ = request.reply.send(outcome);
        }
        // After the answers: the batch is stored whatever becomes of its keys, and keys the
        // index misses in a crash are indexed from the log at the next start.
        if self.sequencer.flush_due(Instant::now()) {
            self.flush_dedup()?;
        }
        Ok(())
    }

    /// Moves the keys of the stored entries from memory to the on-disk index. Only called
    /// between batches, when every entry the sequencer admitted is in the log.
    fn flush_dedup(&mut self) -> Result<(), StoreError> {
        if !self.sequencer.recent().is_empty() {
            self.dedup
                .record(self.sequencer.recent(), self.store.last_order())?;
        }
        self.sequencer.flushed(Instant::now());
        Ok(())
    }

    /// The stored entry with `message_id`: its key in memory first, then on disk.
    fn find(&self, message_id: &MessageId) -> Result<Option<Entry>, AppendError> {
        let storage = |error: StoreError| AppendError::Storage(Arc::new(error));
        let order = match self.sequencer.recent().find_id(message_id) {
            Some(order) => Some(order),
            None => self
                .dedup
                .snapshot()
                .and_then(|snapshot| snapshot.find_id(message_id))
                .map_err(storage)?,
        };
        // Past the log's end only if the batch that admitted it failed: not in the log then.
        let Some(order) = order.filter(|&order| order <= self.store.last_order()) else {
            return Ok(None);
        };
        let entry = self
            .store
            .read(order, 1)
            .map_err(storage)?
            .into_iter()
            .next()
            .ok_or(AppendError::IndexedButMissing(order))?;
        Ok(Some(entry))
    }

    fn existing(&self, order: Order, fresh: &[Entry]) -> Result<Appended, AppendError> {
        if let Some(entry) = fresh.iter().find(|entry| entry.order == order) {
            return Ok(Appended::Existing(entry.clone()));
        }
        let entries = self
            .store
            .read(order, 1)
            .map_err(|e| AppendError::Storage(Arc::new(e)))?;
        let entry = entries
            .into_iter()
            .next()
            .ok_or(AppendError::IndexedButMissing(order))?;
        Ok(Appended::Existing(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::rules::dedup::DedupMode;
    use replog_shell::store::MemoryLog;
    use std::time::Duration;

    /// A writer over a memory log, with its dedup index in a temporary directory (kept as
    /// long as the returned guard lives).
    fn writer(
        mode: DedupMode,
    ) -> (
        LogWriter,
        Arc<MemoryLog>,
        watch::Receiver<Order>,
        tempfile::TempDir,
    ) {
        writer_flushing(mode, DedupFlush::default())
    }

    fn writer_flushing(
        mode: DedupMode,
        flush: DedupFlush,
    ) -> (
        LogWriter,
        Arc<MemoryLog>,
        watch::Receiver<Order>,
        tempfile::TempDir,
    ) {
        let store = Arc::new(MemoryLog::new());
        let dir = tempfile::tempdir().unwrap();
        let keys = DedupKeys::open(&dir.path().join("dedup.redb"), mode).unwrap();
        let (stored, stored_end) = watch::channel(Order::ZERO);
        let (writer, _thread) =
            LogWriter::spawn(store.clone(), keys, flush, stored, CancellationToken::new());
        (writer, store, stored_end, dir)
    }

    #[tokio::test]
    async fn concurrent_writes_get_distinct_contiguous_orders() {
        let (writer, store, stored_end, _dir) = writer(DedupMode::Id);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(None, format!("m{i}")).await.unwrap() })
            })
            .collect();
        let mut orders = Vec::new();
        for task in tasks {
            orders.push(task.await.unwrap().entry().order.get());
        }
        orders.sort_unstable();
        assert_eq!(orders, (1..=200).collect::<Vec<_>>());
        assert_eq!(store.last_order(), Order(200));
        assert_eq!(
            *stored_end.borrow(),
            Order(200),
            "the publisher is told the end"
        );
        let contents: std::collections::HashSet<String> = store
            .read(Order(1), 500)
            .unwrap()
            .into_iter()
            .map(|e| e.content)
            .collect();
        assert_eq!(contents.len(), 200, "every write stored exactly once");
    }

    #[tokio::test]
    async fn a_read_only_writer_answers_retries_and_appends_nothing_new() {
        let (writer, store, _stored_end, _dir) = writer(DedupMode::Id);
        let id = MessageId::parse("kept").unwrap();
        let first = writer.append(Some(id.clone()), "a".into()).await.unwrap();
        let retry = writer
            .submit(Some(id), "a".into(), Admission::ExistingOnly)
            .await
            .unwrap();
        assert_eq!(retry, Appended::Existing(first.entry().clone()));
        let new = writer
            .submit(None, "b".into(), Admission::ExistingOnly)
            .await;
        assert!(matches!(new, Err(AppendError::ReadOnly)), "{new:?}");
        assert_eq!(store.last_order(), Order(1), "nothing appended");
    }

    #[tokio::test]
    async fn a_retried_message_id_returns_the_original_entry() {
        let (writer, store, _stored_end, _dir) = writer(DedupMode::Id);
        let id = MessageId::parse("client-1").unwrap();
        let first = writer.append(Some(id.clone()), "a".into()).await.unwrap();
        let again = writer.append(Some(id), "different".into()).await.unwrap();
        assert!(matches!(first, Appended::New(_)));
        assert_eq!(again, Appended::Existing(first.entry().clone()));
        assert_eq!(store.last_order(), Order(1));
    }

    #[tokio::test]
    async fn content_dedup_matches_equal_payloads() {
        let (writer, store, _stored_end, _dir) = writer(DedupMode::Content);
        writer.append(None, "same".into()).await.unwrap();
        let again = writer.append(None, "same".into()).await.unwrap();
        assert!(matches!(again, Appended::Existing(ref e) if e.order == Order(1)));
        assert_eq!(store.last_order(), Order(1));
    }

    #[tokio::test]
    async fn ids_and_contents_moved_to_disk_still_deduplicate() {
        // Flushing after every batch leaves nothing in memory: every match comes from disk.
        let every_batch = DedupFlush {
            interval: Duration::ZERO,
            entries: 1,
        };
        let (writer, store, _stored_end, _dir) = writer_flushing(DedupMode::Content, every_batch);
        let id = MessageId::parse("client-1").unwrap();
        let first = writer.append(Some(id.clone()), "a".into()).await.unwrap();
        writer.append(None, "b".into()).await.unwrap();
        let by_id = writer.append(Some(id), "other".into()).await.unwrap();
        let by_content = writer.append(None, "b".into()).await.unwrap();
        assert_eq!(by_id, Appended::Existing(first.entry().clone()));
        assert!(matches!(by_content, Appended::Existing(ref e) if e.order == Order(2)));
        assert_eq!(store.last_order(), Order(2));
    }

    #[tokio::test]
    async fn a_retried_id_on_disk_beats_equal_content_in_memory() {
        // `a` reaches disk with the first flush (two entries), `b` stays in memory.
        let two_at_a_time = DedupFlush {
            interval: Duration::from_secs(3600),
            entries: 2,
        };
        let (writer, _store, _stored_end, _dir) =
            writer_flushing(DedupMode::Content, two_at_a_time);
        let a = MessageId::parse("a").unwrap();
        let first = writer.append(Some(a.clone()), "x".into()).await.unwrap();
        writer.append(None, "z".into()).await.unwrap();
        writer.append(None, "y".into()).await.unwrap();
        // A retry of `a` whose content equals the in-memory entry's is still `a`.
        let retry = writer.append(Some(a), "y".into()).await.unwrap();
        assert_eq!(retry, Appended::Existing(first.entry().clone()));
    }

    #[tokio::test]
    async fn entries_are_found_by_id_before_and_after_their_keys_reach_disk() {
        // Keys stay in memory until two entries are there; then they move to disk.
        let two_at_a_time = DedupFlush {
            interval: Duration::from_secs(3600),
            entries: 2,
        };
        let (writer, store, _stored_end, _dir) = writer_flushing(DedupMode::Id, two_at_a_time);
        let a = MessageId::parse("a").unwrap();
        let first = writer.append(Some(a.clone()), String::new()).await.unwrap();
        assert_eq!(
            writer.find(a.clone()).await.unwrap().as_ref(),
            Some(first.entry()),
            "found while its key is only in memory"
        );
        let second = writer.append(None, "b".into()).await.unwrap();
        writer.append(None, "c".into()).await.unwrap();
        assert_eq!(writer.find(a).await.unwrap().as_ref(), Some(first.entry()));
        assert_eq!(
            writer
                .find(second.entry().message_id.clone())
                .await
                .unwrap()
                .as_ref(),
            Some(second.entry()),
            "found from the on-disk index"
        );
        // Empty content is a valid entry: a look-up by id never matches on content.
        let unknown = MessageId::parse("nobody").unwrap();
        assert_eq!(writer.find(unknown).await.unwrap(), None);
        assert_eq!(store.last_order(), Order(3), "a look-up appends nothing");
    }
}
