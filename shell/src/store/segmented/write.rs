//! Appending to the log: a batch is encoded into one buffer, written with one `write` and made
//! durable with one `sync_data` per segment it lands in; a segment that would grow past its
//! size is sealed and a new one started.

use super::record;
use super::{create_segment, segment_path, sync_dir, IndexPoint, Segment, SegmentedLog, Writer};
use crate::store::{check_continues, StoreError};
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::io::{Seek, SeekFrom, Write};
use std::sync::{MutexGuard, PoisonError};

/// The largest append buffer kept for reuse between appends.
const MAX_KEPT_BUFFER_BYTES: usize = 4 * 1024 * 1024;

impl SegmentedLog {
    /// Appends `entries` as [`crate::store::LogStore::append`] documents it for this log.
    pub(super) fn append_entries(&self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut guard: MutexGuard<'_, Writer> =
            self.writer.lock().map_err(|_| StoreError::Halted)?;
        let writer = &mut *guard;
        if writer.halted {
            return Err(StoreError::Halted);
        }
        let (last, mut at) = {
            let segments = self.segments();
            segments
                .last()
                .map_or((Order::ZERO, 0), |newest| (newest.last, newest.len))
        };
        check_continues(last, entries)?;
        // Check every size before writing anything, so that a bad batch leaves no trace.
        for entry in entries {
            if record::encoded_len(entry).is_none() {
                return Err(StoreError::EntryTooLarge {
                    order: entry.order,
                    bytes: entry.content.len() + entry.message_id.as_str().len(),
                });
            }
        }

        writer.buf.clear();
        let mut points = Vec::new();
        let mut chunk_last = last;
        for entry in entries {
            let len = record::encoded_len(entry).unwrap_or(u64::MAX);
            let end = at + writer.buf.len() as u64;
            if end > 0 && end.saturating_add(len) > self.options.segment_bytes {
                self.commit(writer, at, chunk_last, &mut points)?;
                self.roll(writer, entry.order)?;
                at = 0;
            }
            let offset = at + writer.buf.len() as u64;
            if offset >= writer.next_index_at {
                points.push(IndexPoint {
                    order: entry.order,
                    offset,
                });
                writer.next_index_at = offset.saturating_add(self.options.index_interval_bytes);
            }
            record::encode(entry, &mut writer.buf);
            chunk_last = entry.order;
        }
        self.commit(writer, at, chunk_last, &mut points)
    }

    /// Writes `writer.buf` at `at` in the newest segment, syncs it, and shows the records it
    /// holds (the last being `last`, with index points `points`) to readers.
    fn commit(
        &self,
        writer: &mut Writer,
        at: u64,
        last: Order,
        points: &mut Vec<IndexPoint>,
    ) -> Result<(), StoreError> {
        if writer.buf.is_empty() {
            return Ok(());
        }
        let written = (|| {
            // An explicit position rather than append mode: the durable end is what counts,
            // whatever a failed write may have left after it.
            writer.file.seek(SeekFrom::Start(at))?;
            writer.file.write_all(&writer.buf)?;
            if self.options.sync {
                writer.file.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        })();
        if let Err(error) = written {
            halt(writer, at, &error);
            return Err(error.into());
        }

        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(newest) = segments.last_mut() {
            newest.len = at + writer.buf.len() as u64;
            newest.last = last;
            newest.index.append(points);
        }
        drop(segments);
        writer.buf.clear();
        if writer.buf.capacity() > MAX_KEPT_BUFFER_BYTES {
            // One huge batch should not pin its buffer for the life of the log.
            writer.buf = Vec::new();
        }
        Ok(())
    }

    /// Seals the newest segment (already synced by [`Self::commit`]) and starts one at `first`.
    fn roll(&self, writer: &mut Writer, first: Order) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, first);
        let created = create_segment(&path).and_then(|file| {
            if self.options.sync {
                sync_dir(&self.dir)?;
            }
            Ok(file)
        });
        let file = match created {
            Ok(file) => file,
            Err(error) => {
                // The old segment is intact; a new empty file, if one was made, is harmless at
                // the next open. Still stop: the directory's state is unknown.
                writer.halted = true;
                tracing::error!(%error, file = %path.display(), "could not start a segment; the log refuses further appends");
                return Err(error.into());
            }
        };
        writer.file = file;
        writer.next_index_at = 0;
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Segment::empty(first, path));
        Ok(())
    }
}

/// Stops the writer after a failed write or sync, cutting back to the durable end so that the
/// failed bytes can never be read as records at the next open.
fn halt(writer: &mut Writer, durable_len: u64, error: &std::io::Error) {
    writer.halted = true;
    if let Err(cut_error) = writer.file.set_len(durable_len) {
        tracing::error!(%cut_error, "could not cut a failed write back off the log");
    }
    tracing::error!(%error, "a log write failed; the log refuses further appends until reopened");
}
