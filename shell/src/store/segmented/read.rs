//! Reading from the log: the sparse index says which segments, and where in them, a read has
//! to scan; the files are then read without holding the lock.

use super::record::{self, Frame, RecordReader};
use super::{IndexPoint, Segment, SegmentedLog};
use crate::store::StoreError;
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;

/// Read buffer cap for serving reads, which usually want a page of entries near an index point.
const READ_BUFFER_BYTES: u64 = 64 * 1024;

impl SegmentedLog {
    /// Reads up to `limit` entries from `from`, as [`crate::store::LogStore::read`] documents.
    pub(super) fn read_entries(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let from = Order(from.get().max(1));
        let spans = plan_read(&self.segments(), from, limit);
        let mut out = Vec::new();
        for span in spans {
            read_span(&span, from, limit, &mut out)?;
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The part of one segment a read has to scan, copied out so that the file is read without
/// holding the lock.
#[derive(Debug)]
struct ReadSpan {
    /// The segment file.
    path: PathBuf,
    /// The index point to start scanning from.
    start: IndexPoint,
    /// The durable end of the segment when the read began.
    end: u64,
    /// The order of the last record before `end`.
    last: Order,
}

/// The segments (and where in them) a read of `limit` entries from `from` has to look.
fn plan_read(segments: &[Segment], from: Order, limit: usize) -> Vec<ReadSpan> {
    let mut spans = Vec::new();
    let first_segment = segments.partition_point(|s| s.first <= from);
    let Some(start) = first_segment.checked_sub(1) else {
        return spans;
    };
    let mut wanted = limit as u64;
    for segment in &segments[start..] {
        if wanted == 0 {
            break;
        }
        if segment.last < from || segment.last < segment.first {
            continue;
        }
        let skip_to = from.max(segment.first);
        let point = segment.index.partition_point(|p| p.order <= skip_to);
        let Some(start) = point.checked_sub(1).map(|i| segment.index[i]) else {
            // Cannot happen: every non-empty segment has a point for its first record.
            continue;
        };
        wanted = wanted.saturating_sub(segment.last.get() + 1 - skip_to.get());
        spans.push(ReadSpan {
            path: segment.path.clone(),
            start,
            end: segment.len,
            last: segment.last,
        });
    }
    spans
}

/// Reads entries with order `>= from` from `span` into `out` until it holds `limit`.
fn read_span(
    span: &ReadSpan,
    from: Order,
    limit: usize,
    out: &mut Vec<Entry>,
) -> Result<(), StoreError> {
    let mut file = File::open(&span.path)?;
    file.seek(SeekFrom::Start(span.start.offset))?;
    let buffer = (span.end - span.start.offset).min(READ_BUFFER_BYTES) as usize;
    let mut records = RecordReader::new(
        BufReader::with_capacity(buffer, file),
        span.start.offset,
        span.end,
    );
    let mut expected = span.start.order;
    while out.len() < limit && expected <= span.last {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("{}: {what}", span.path.display()));
        match records.next()? {
            Frame::Record { offset, payload } => {
                let parts = record::parse(payload)
                    .map_err(|e| corrupt(format!("record at offset {offset}: {e}")))?;
                if parts.order != expected {
                    return Err(corrupt(format!(
                        "record at offset {offset} holds order {}, expected {expected}",
                        parts.order
                    )));
                }
                if parts.order >= from {
                    out.push(
                        record::decode(payload)
                            .map_err(|e| corrupt(format!("record at offset {offset}: {e}")))?,
                    );
                }
                expected = expected.next();
            }
            // These bytes were intact when they were written or checked at open.
            Frame::Damaged { offset, damage } => {
                return Err(corrupt(format!("{damage} at offset {offset}")));
            }
            Frame::End => {
                return Err(corrupt(format!(
                    "ends before order {expected}, which it held"
                )));
            }
        }
    }
    Ok(())
}
