//! The body of `GET /messages`, streamed: the log is read from the store and encoded one chunk
//! at a time, so a page of the whole log costs the memory of one chunk, not of the whole log.
//!
//! The page ends where the log ended when the request came, so a busy log does not hold the
//! response open, or earlier, once it holds [`PAGE_BYTES`] of entries: a client that reads a
//! page whole (catch-up, refill) never gets a gigabyte because entries are large; it asks again
//! from the order after the last one it got, until a page comes back empty. Chunks are bounded
//! the same way: each read is sized from the entries' sizes so far to about [`CHUNK_BYTES`]. A store error after the first chunk can no longer change the status (200 is
//! sent): the body is cut off, which a client sees as a broken response, never as valid JSON
//! with entries missing.

use crate::store::{LogStore, StoreError};
use axum::body::{Body, Bytes};
use replog_common::ids::Order;
use replog_common::wire::EntryMessage;
use replog_common::Entry;
use std::sync::Arc;

/// Why a chunk of a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store returned nothing where the log should go on.
    #[error("the store returned nothing from {from} on")]
    Nothing {
        /// Where the read started.
        from: Order,
    },
    /// The store returned an entry out of place, which would leave a gap in the page.
    #[error("the store returned order {got} where {expected} belongs")]
    OutOfPlace {
        /// The order that belongs there.
        expected: Order,
        /// The order the store returned.
        got: Order,
    },
}

/// Most entries read from the store for one piece of the body.
pub(crate) const CHUNK_ENTRIES: usize = 256;

/// Entries read for the first piece, before anything is known of their sizes.
pub(crate) const FIRST_CHUNK_ENTRIES: usize = 8;

/// About how many bytes of entries one piece of the body holds in memory.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A page ends after the entry that takes it past this many bytes (at least one entry is
/// always sent, so a client always moves on).
pub const PAGE_BYTES: usize = 4 << 20;

/// Where a streamed page stands.
pub(crate) struct PageBody {
    store: Arc<dyn LogStore>,
    /// The next order to read.
    next: Order,
    /// The last order the page may include.
    last: Order,
    /// Entries read before the response started; sent first.
    first_chunk: Option<Vec<Entry>>,
    /// Whether the opening `{"messages":[` has been sent.
    opened: bool,
    /// Whether an entry has been sent (the next one needs a comma).
    any_entry: bool,
    /// The closing `]}` is sent: nothing follows.
    finished: bool,
    /// Bytes of entries sent so far, against [`PAGE_BYTES`].
    sent: usize,
    /// How many entries the next read asks for, sized to about [`CHUNK_BYTES`].
    chunk_entries: usize,
}

impl PageBody {
    /// A page over `store` from `next` to `last` inclusive whose first chunk, starting at
    /// `next`, was read already.
    pub(crate) fn new(
        store: Arc<dyn LogStore>,
        next: Order,
        last: Order,
        first_chunk: Vec<Entry>,
    ) -> PageBody {
        PageBody {
            store,
            next,
            last,
            first_chunk: Some(first_chunk),
            opened: false,
            any_entry: false,
            finished: false,
            sent: 0,
            chunk_entries: FIRST_CHUNK_ENTRIES,
        }
    }

    /// The response body.
    pub(crate) fn into_body(self) -> Body {
        let stream = futures_util::stream::unfold(self, |mut page| async move {
            if page.finished {
                return None;
            }
            let chunk = match page.take_chunk().await {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::error!(%error, next = %page.next, "cannot read the log while streaming a page; cutting the response off");
                    page.finished = true;
                    return Some((Err(std::io::Error::other(error)), page));
                }
            };
            let bytes = page.encode(&chunk);
            Some((Ok(bytes), page))
        });
        Body::from_stream(stream)
    }

    /// The next entries to send: the first chunk, then reads of about [`CHUNK_BYTES`] (at most
    /// [`CHUNK_ENTRIES`]) until `last`. Empty when the page is complete.
    async fn take_chunk(&mut self) -> Result<Vec<Entry>, ChunkError> {
        if let Some(first) = self.first_chunk.take() {
            return Ok(first);
        }
        read_chunk(&self.store, self.next, self.last, self.chunk_entries).await
    }

    /// Encodes `chunk` as the next piece of JSON; an empty chunk closes the document.
    fn encode(&mut self, chunk: &[Entry]) -> Bytes {
        let mut out = Vec::with_capacity(64 + chunk.iter().map(encoded_size).sum::<usize>());
        if !self.opened {
            out.extend_from_slice(br#"{"messages":["#);
            self.opened = true;
        }
        let start = out.len();
        for entry in chunk.iter().take_while(|entry| entry.order <= self.last) {
            if self.any_entry {
                out.push(b',');
            }
            let before = out.len();
            serde_json::to_writer(&mut out, &EntryMessage::from(entry))
                .expect("an entry always encodes as JSON");
            self.any_entry = true;
            self.next = entry.order.next();
            self.sent += out.len() - before;
            if self.sent >= PAGE_BYTES {
                // The page ends here; the client asks again from `next`.
                self.last = entry.order;
                break;
            }
        }
        if !chunk.is_empty() {
            let per_entry = (out.len() - start) / chunk.len();
            self.chunk_entries = next_chunk_entries(per_entry);
        }
        if chunk.is_empty() || self.next > self.last {
            out.extend_from_slice(b"]}");
            self.finished = true;
        }
        Bytes::from(out)
    }
}

/// How many entries to read next when each takes about `per_entry` bytes: about
/// [`CHUNK_BYTES`], from 1 to [`CHUNK_ENTRIES`].
fn next_chunk_entries(per_entry: usize) -> usize {
    (CHUNK_BYTES / per_entry.max(1)).clamp(1, CHUNK_ENTRIES)
}

/// Reads the next chunk of a page, at most `most` entries from `next` up to `last` inclusive,
/// on the blocking pool (a durable store reads from disk), and checks it; empty when `next` is
/// beyond `last`.
pub(crate) async fn read_chunk(
    store: &Arc<dyn LogStore>,
    next: Order,
    last: Order,
    most: usize,
) -> Result<Vec<Entry>, ChunkError> {
    let wanted = chunk_len(next, last).min(most);
    if wanted == 0 {
        return Ok(Vec::new());
    }
    let reader = store.clone();
    let chunk = crate::store::blocking(move || reader.read(next, wanted)).await?;
    check_chunk(next, &chunk)?;
    Ok(chunk)
}

/// Checks that a read meant to start at `from` returned consecutive entries from exactly
/// there: a store that returned nothing or something else would otherwise end the page early
/// as well-formed JSON, leave a gap in it, or never move on.
fn check_chunk(from: Order, chunk: &[Entry]) -> Result<(), ChunkError> {
    if chunk.is_empty() {
        return Err(ChunkError::Nothing { from });
    }
    let mut expected = from;
    for entry in chunk {
        if entry.order != expected {
            return Err(ChunkError::OutOfPlace {
                expected,
                got: entry.order,
            });
        }
        expected = expected.next();
    }
    Ok(())
}

/// How many entries to read next, from `next` up to `last` inclusive, at most a chunk.
fn chunk_len(next: Order, last: Order) -> usize {
    if next > last {
        return 0;
    }
    let left = last.get() - next.get() + 1;
    usize::try_from(left).map_or(CHUNK_ENTRIES, |left| left.min(CHUNK_ENTRIES))
}

/// A guess of an entry's encoded size, to size the buffer once.
fn encoded_size(entry: &Entry) -> usize {
    entry.content.len() + entry.message_id.as_str().len() + 48
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{serve_page, PageQuery};
    use crate::store::MemoryLog;
    use crate::store::StoreError;
    use axum::extract::Query;
    use axum::http::StatusCode;
    use replog_common::wire::MessagesPage;

    /// An entry whose content needs escaping in JSON.
    fn entry(order: u64) -> Entry {
        Entry {
            content: format!("entry {order} \"quoted\" é"),
            ..Entry::sample(order)
        }
    }

    fn log_of(len: u64) -> (Arc<MemoryLog>, Vec<Entry>) {
        let store = Arc::new(MemoryLog::new());
        let entries: Vec<Entry> = (1..=len).map(entry).collect();
        store.append(&entries).unwrap();
        (store, entries)
    }

    async fn get(store: Arc<dyn LogStore>, from: Option<&str>, limit: Option<&str>) -> Vec<Entry> {
        let query = PageQuery {
            from: from.map(Into::into),
            limit: limit.map(Into::into),
            ..PageQuery::default()
        };
        let response = serve_page(store, Ok(Query(query))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let page: MessagesPage = serde_json::from_slice(&bytes).expect("a JSON page");
        page.messages
            .into_iter()
            .map(|message| Entry::try_from(message).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_whole_log_streams_in_chunks_and_parses_back() {
        let len = CHUNK_ENTRIES as u64 * 3 + 7;
        let (store, entries) = log_of(len);
        assert_eq!(get(store, None, None).await, entries);
    }

    #[tokio::test]
    async fn from_and_limit_cut_the_page_across_chunks() {
        let (store, entries) = log_of(1000);
        assert_eq!(
            get(store.clone(), Some("250"), Some("300")).await,
            entries[249..549]
        );
        assert_eq!(get(store.clone(), Some("990"), None).await, entries[989..]);
        assert_eq!(
            get(store.clone(), Some("1000"), Some("5")).await,
            entries[999..]
        );
        assert!(get(store, Some("1001"), None).await.is_empty());
    }

    #[tokio::test]
    async fn an_empty_log_is_an_empty_page() {
        let (store, _) = log_of(0);
        assert!(get(store, None, None).await.is_empty());
    }

    /// A log that fails every read after the first.
    struct FailsAfterFirstRead {
        inner: MemoryLog,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl LogStore for FailsAfterFirstRead {
        fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
            self.inner.append(entries)
        }
        fn last_order(&self) -> Order {
            self.inner.last_order()
        }
        fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
            if self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                return Err(StoreError::Corrupt("disk on fire".into()));
            }
            self.inner.read(from, limit)
        }
    }

    #[tokio::test]
    async fn a_read_error_mid_stream_cuts_the_body_off_rather_than_ending_it_well_formed() {
        let store = Arc::new(FailsAfterFirstRead {
            inner: MemoryLog::new(),
            reads: Default::default(),
        });
        let entries: Vec<Entry> = (1..=CHUNK_ENTRIES as u64 * 2).map(entry).collect();
        store.append(&entries).unwrap();
        let response = serve_page(store, Ok(Query(PageQuery::default())))
            .await
            .unwrap();
        assert!(axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_failing_first_read_is_an_error_before_anything_is_sent() {
        let store = Arc::new(FailsAfterFirstRead {
            inner: MemoryLog::new(),
            reads: 1.into(),
        });
        store.append(&[entry(1)]).unwrap();
        let result = serve_page(store, Ok(Query(PageQuery::default()))).await;
        assert!(matches!(
            result,
            Err(crate::http::PageError::Store(ChunkError::Store(_)))
        ));
    }

    #[test]
    fn a_chunk_must_start_where_asked_and_have_no_gap() {
        assert!(check_chunk(Order(3), &[Entry::sample(3), Entry::sample(4)]).is_ok());
        assert!(matches!(
            check_chunk(Order(3), &[]),
            Err(ChunkError::Nothing { from: Order(3) })
        ));
        assert!(matches!(
            check_chunk(Order(3), &[Entry::sample(4)]),
            Err(ChunkError::OutOfPlace {
                expected: Order(3),
                got: Order(4)
            })
        ));
        assert!(matches!(
            check_chunk(Order(3), &[Entry::sample(3), Entry::sample(5)]),
            Err(ChunkError::OutOfPlace {
                expected: Order(4),
                got: Order(5)
            })
        ));
    }

    #[test]
    fn chunks_stop_at_the_last_order() {
        assert_eq!(chunk_len(Order(1), Order::ZERO), 0);
        assert_eq!(chunk_len(Order(5), Order(5)), 1);
        assert_eq!(chunk_len(Order(1), Order(10_000)), CHUNK_ENTRIES);
    }

    #[test]
    fn chunks_are_sized_to_about_a_mebibyte() {
        assert_eq!(next_chunk_entries(100), CHUNK_ENTRIES);
        assert_eq!(next_chunk_entries(CHUNK_BYTES / 4), 4);
        assert_eq!(next_chunk_entries(CHUNK_BYTES * 8), 1);
        assert_eq!(next_chunk_entries(0), CHUNK_ENTRIES);
    }

    #[tokio::test]
    async fn a_page_of_large_entries_ends_after_the_byte_budget_and_the_rest_follows() {
        let big = |order: u64| Entry {
            content: "x".repeat(1 << 20),
            ..Entry::sample(order)
        };
        let store = Arc::new(MemoryLog::new());
        let entries: Vec<Entry> = (1..=10).map(big).collect();
        store.append(&entries).unwrap();
        let first = get(store.clone(), None, None).await;
        // 1 MiB each plus JSON: the fourth entry takes the page past 4 MiB.
        assert_eq!(first, entries[..4]);
        let second = get(store.clone(), Some("5"), Some("1000")).await;
        assert_eq!(second, entries[4..8]);
        let third = get(store.clone(), Some("9"), None).await;
        assert_eq!(third, entries[8..]);
        assert!(get(store, Some("11"), None).await.is_empty());
    }
}
