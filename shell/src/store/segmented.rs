//! A durable [`LogStore`]: an append-only log split into segment files on disk.
//!
//! # Files
//! A log lives in one directory holding segment files named by the order of their first entry,
//! zero-padded to 20 digits so that names sort like numbers: `00000000000000000001.seg`,
//! `00000000000000052311.seg`, ... Each segment is a plain sequence of records (see
//! [`record`] for the bytes: `[len u32][crc32 u32][payload]`, payload = order, message id,
//! content). There is no file header and no separate index file: the name says where a segment
//! starts, and the records say the rest. A new segment is started when the next record would
//! take the current one past [`SegmentedLogOptions::segment_bytes`]; only the newest segment is
//! ever written, the older ones are sealed.
//!
//! The durability, recovery and memory guarantees are documented on [`SegmentedLog`], where
//! users of the (private) module can read them.

mod record;

pub use record::TailDamage;

use super::{check_continues, LogStore, StoreError};
use record::{Frame, RecordReader};
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

/// The file name extension of segment files.
const SEGMENT_EXTENSION: &str = "seg";

/// Digits of the zero-padded first order in a segment's name: enough for any `u64`.
const SEGMENT_NAME_DIGITS: usize = 20;

/// Read buffer for scanning segments at start-up: big enough to read sequentially in few calls.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// Read buffer cap for serving reads, which usually want a page of entries near an index point.
const READ_BUFFER_BYTES: u64 = 64 * 1024;

/// The largest append buffer kept for reuse between appends.
const MAX_KEPT_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How a [`SegmentedLog`] lays out and syncs its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentedLogOptions {
    /// A new segment is started when the next record would take the current one past this many
    /// bytes. A record larger than this gets a segment of its own.
    pub segment_bytes: u64,
    /// Whether appends (and segment creation) are fsynced. `false` gives up durability across a
    /// machine crash or power loss, and a crash may then even leave a sealed segment damaged so
    /// that the log does not open; it exists to measure what the syncs cost.
    pub sync: bool,
    /// One index point is kept per this many bytes of records, so that a read scans at most
    /// about this much before reaching its first entry. Smaller is faster to read, larger
    /// takes less memory.
    pub index_interval_bytes: u64,
}

impl Default for SegmentedLogOptions {
    fn default() -> SegmentedLogOptions {
        SegmentedLogOptions {
            segment_bytes: 64 * 1024 * 1024,
            sync: true,
            index_interval_bytes: 64 * 1024,
        }
    }
}

/// What [`SegmentedLog::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files the log has after opening (a new log gets its first, empty, one).
    pub segments: usize,
    /// Intact records found across all segments.
    pub records: u64,
    /// The order of the last intact entry, or [`Order::ZERO`] for an empty log.
    pub last_order: Order,
    /// The damaged tail cut off the newest segment, if there was one.
    pub cut: Option<CutTail>,
}

/// A damaged tail that [`SegmentedLog::open`] cut off the newest segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutTail {
    /// The segment file that was truncated.
    pub file: PathBuf,
    /// The length the file was truncated to: where the first damaged record started.
    pub kept_bytes: u64,
    /// How many bytes were cut off.
    pub cut_bytes: u64,
    /// What was wrong with the first record that was cut.
    pub damage: TailDamage,
}

/// A [`LogStore`] kept in segment files in one directory: files named by their first order
/// (`00000000000000000001.seg`, ...), each a sequence of `[len u32][crc32 u32][payload]` records
/// where the payload is `[order u64][id_len u32][message id][content_len u32][content]`, all
/// little-endian, and the CRC-32 covers the length bytes and the payload.
///
/// All methods take `&self`: one writer appends while any number of readers read.
///
/// # Durability
/// An append encodes its whole batch into one buffer, writes it with one `write` and makes it
/// durable with one `sync_data`, so entries that arrive together share one fsync. Creating a
/// segment also fsyncs the directory, so that the new file's name survives a crash. Readers only
/// see records below the durable end, never a record being written.
///
/// # Start-up
/// [`SegmentedLog::open`] reads every segment once from start to end, checking every checksum
/// and that orders run 1, 2, 3, ... without gaps across files. That costs one sequential read of
/// the whole log per start (it is also how the sparse read index is rebuilt); a per-segment index
/// file would bring it down to the newest segment, and is left for when logs grow large.
/// - Damage in the newest segment (a torn record, a checksum mismatch) is what a crash in the
///   middle of a write leaves behind: the file is truncated to the last intact record, fsynced,
///   and the cut is logged and reported in [`Recovery`]. Damage in the middle of the newest
///   segment cannot be told apart from a torn batch, so everything after it is cut too, even
///   entries that had been acknowledged; the cut says how many bytes went.
/// - Damage in a sealed segment, a gap between segments or a record that passes its checksum
///   but holds the wrong order is not what a crash does: it is [`StoreError::Corrupt`], and the
///   log does not open.
///
/// # Memory
/// The store keeps, per segment, its bounds and one index point (order → file offset) every
/// [`SegmentedLogOptions::index_interval_bytes`] of records, so memory grows with the number of
/// segments, not entries. Reads open the segment file, seek to the nearest index point at or
/// before the wanted order and scan forward.
///
/// One process must own a directory: nothing locks it against a second writer.
#[derive(Debug)]
pub struct SegmentedLog {
    /// The directory holding the segments.
    dir: PathBuf,
    /// Sizes and sync policy, fixed at open.
    options: SegmentedLogOptions,
    /// What readers may see: every segment's bounds and index, up to the durable end. Only the
    /// writer changes it, after its bytes are durable, so a reader never meets a half-written
    /// record.
    segments: RwLock<Vec<Segment>>,
    /// The single writer's state. Held for a whole append, so appends are serialised while
    /// readers only wait for the short moments when `segments` is updated.
    writer: Mutex<Writer>,
}

/// One segment file as readers see it.
#[derive(Debug)]
struct Segment {
    /// The order of the first entry, which is also the file's name.
    first: Order,
    /// The order of the last durable entry; `first - 1` while the segment is empty.
    last: Order,
    /// The durable length of the file: readers stop here.
    len: u64,
    /// Where the file is.
    path: PathBuf,
    /// Sparse index points in order, the first at offset 0 once the segment holds a record.
    index: Vec<IndexPoint>,
}

/// A record boundary a read can start scanning from.
#[derive(Debug, Clone, Copy)]
struct IndexPoint {
    /// The order of the record starting at `offset`.
    order: Order,
    /// Where that record's header starts in the segment file.
    offset: u64,
}

/// The writer's side of the log.
#[derive(Debug)]
struct Writer {
    /// The newest segment, open for writing.
    file: File,
    /// The offset from which the next record gets an index point.
    next_index_at: u64,
    /// Set when a write or sync failed: after a failed fsync the file's state on disk is
    /// unknown, so the log refuses appends until it is reopened and the disk re-read.
    halted: bool,
    /// The batch being encoded, reused between appends.
    buf: Vec<u8>,
}

impl SegmentedLog {
    /// Opens the log in `dir`, creating the directory and an empty log if needed, and recovers
    /// from a crash as described under "Start-up" above.
    ///
    /// Reads every segment in full once, which is the cost of a start.
    pub fn open(
        dir: &Path,
        options: SegmentedLogOptions,
    ) -> Result<(SegmentedLog, Recovery), StoreError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            // The new directory's own name must survive a crash too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }

        let files = list_segments(dir)?;
        let mut segments = Vec::with_capacity(files.len().max(1));
        let mut records = 0;
        let mut cut = None;
        let mut next_index_at = 0;
        let count = files.len();
        for (i, (first, path)) in files.into_iter().enumerate() {
            let expected = segments
                .last()
                .map_or(Order(1), |s: &Segment| s.last.next());
            if first != expected {
                return Err(StoreError::Corrupt(format!(
                    "{} starts at order {first}, but the log before it ends at {}: a segment is \
                     missing or out of place",
                    path.display(),
                    expected.get() - 1,
                )));
            }
            let scan = scan_segment(&path, first, options.index_interval_bytes)?;
            if let Some((kept_bytes, damage)) = scan.damage {
                if i + 1 < count {
                    return Err(StoreError::Corrupt(format!(
                        "{}: {damage} at offset {kept_bytes} of a sealed segment",
                        path.display()
                    )));
                }
                cut = Some(cut_tail(&path, kept_bytes, scan.file_len, damage)?);
            }
            records += scan.segment.last.get() + 1 - first.get();
            next_index_at = scan.next_index_at;
            segments.push(scan.segment);
        }

        if segments.is_empty() {
            let path = segment_path(dir, Order(1));
            create_segment(&path)?;
            sync_dir(dir)?;
            segments.push(Segment::empty(Order(1), path));
        }

        let newest = segments
            .last()
            .ok_or_else(|| StoreError::Corrupt("a log without a segment".to_owned()))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&newest.path)?;
        if options.sync {
            // A process killed between its write and its fsync leaves records in the page cache
            // that look intact; they count as stored (and get acked) only once they are on disk.
            file.sync_data()?;
            sync_dir(dir)?;
        }
        let recovery = Recovery {
            segments: segments.len(),
            records,
            last_order: newest.last,
            cut,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = recovery.segments,
            last_order = %recovery.last_order,
            "opened the segmented log"
        );

        let log = SegmentedLog {
            dir: dir.to_owned(),
            options,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                file,
                next_index_at,
                halted: false,
                buf: Vec::new(),
            }),
        };
        Ok((log, recovery))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reader access to the segments. A reader that panicked cannot have left them half
    /// changed, and the writer changes them in steps that do not panic, so a poisoned lock is
    /// still consistent.
    fn segments(&self) -> RwLockReadGuard<'_, Vec<Segment>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
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

impl LogStore for SegmentedLog {
    /// Writes the batch with one write and one `sync_data` per segment it lands in (one, unless
    /// it crosses a segment boundary). On an error, a prefix of the batch may have been stored
    /// (see [`LogStore::last_order`]); after an I/O error the log refuses further appends with
    /// [`StoreError::Halted`] until it is reopened.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
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

    fn last_order(&self) -> Order {
        self.segments()
            .last()
            .map_or(Order::ZERO, |newest| newest.last)
    }

    fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
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

impl Segment {
    fn empty(first: Order, path: PathBuf) -> Segment {
        Segment {
            first,
            last: Order(first.get() - 1),
            len: 0,
            path,
            index: Vec::new(),
        }
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

/// What scanning one segment found.
struct Scan {
    /// The segment's intact part.
    segment: Segment,
    /// The file's length on disk, damaged tail included.
    file_len: u64,
    /// Where the first damaged record starts and what is wrong with it.
    damage: Option<(u64, TailDamage)>,
    /// The offset from which the next appended record gets an index point.
    next_index_at: u64,
}

/// Reads `path` from start to end, checking every record, and builds its index.
fn scan_segment(path: &Path, first: Order, index_interval: u64) -> Result<Scan, StoreError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut records = RecordReader::new(
        BufReader::with_capacity(SCAN_BUFFER_BYTES, file),
        0,
        file_len,
    );
    let mut segment = Segment::empty(first, path.to_owned());
    let mut next_index_at = 0;
    let damage = loop {
        match records.next()? {
            Frame::Record { offset, payload } => {
                let corrupt = |what: String| {
                    StoreError::Corrupt(format!(
                        "{}: record at offset {offset} passes its checksum but {what}",
                        path.display()
                    ))
                };
                let parts = record::parse(payload).map_err(corrupt)?;
                let expected = segment.last.next();
                if parts.order != expected {
                    return Err(corrupt(format!(
                        "holds order {}, expected {expected}",
                        parts.order
                    )));
                }
                if offset >= next_index_at {
                    segment.index.push(IndexPoint {
                        order: parts.order,
                        offset,
                    });
                    next_index_at = offset.saturating_add(index_interval);
                }
                segment.last = parts.order;
                segment.len = offset + record::HEADER_LEN + payload.len() as u64;
            }
            Frame::End => break None,
            Frame::Damaged { offset, damage } => break Some((offset, damage)),
        }
    };
    Ok(Scan {
        segment,
        file_len,
        damage,
        next_index_at,
    })
}

/// Truncates the newest segment to its intact part, makes the cut durable and says so.
fn cut_tail(
    path: &Path,
    kept_bytes: u64,
    file_len: u64,
    damage: TailDamage,
) -> Result<CutTail, StoreError> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(kept_bytes)?;
    // The new length is metadata: sync_all, so that the garbage cannot come back.
    file.sync_all()?;
    let cut = CutTail {
        file: path.to_owned(),
        kept_bytes,
        cut_bytes: file_len - kept_bytes,
        damage,
    };
    tracing::warn!(
        file = %path.display(),
        kept_bytes,
        cut_bytes = cut.cut_bytes,
        %damage,
        "cut a damaged tail off the log, as a crash in the middle of a write leaves"
    );
    Ok(cut)
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

/// The segment files in `dir`, sorted by their first order. Other files are left alone, but a
/// `.seg` file with a name we would not have written is an error rather than a guess.
fn list_segments(dir: &Path) -> Result<Vec<(Order, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for dir_entry in fs::read_dir(dir)? {
        let path = dir_entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXTENSION) {
            continue;
        }
        let first = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.len() == SEGMENT_NAME_DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{} is not named like a segment file",
                    path.display()
                ))
            })?;
        files.push((Order(first), path));
    }
    files.sort();
    Ok(files)
}

fn segment_path(dir: &Path, first: Order) -> PathBuf {
    dir.join(format!(
        "{:0width$}.{SEGMENT_EXTENSION}",
        first.get(),
        width = SEGMENT_NAME_DIGITS
    ))
}

fn create_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Makes the directory's entries (a new segment's name) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::ids::MessageId;
    use std::io::Read;

    fn entry(order: u64) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::parse(&format!("msg-{order}")).unwrap(),
            content: format!("content of entry {order}, padded a little"),
        }
    }

    fn entries(orders: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        orders.map(entry).collect()
    }

    /// Options that roll segments and place index points every few records.
    fn small() -> SegmentedLogOptions {
        SegmentedLogOptions {
            segment_bytes: 400,
            sync: true,
            index_interval_bytes: 150,
        }
    }

    fn open(dir: &Path, options: SegmentedLogOptions) -> (SegmentedLog, Recovery) {
        SegmentedLog::open(dir, options).unwrap()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXTENSION))
            .collect();
        files.sort();
        files
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    fn orders(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.order.get()).collect()
    }

    fn index_of(log: &SegmentedLog) -> Vec<Vec<(u64, u64)>> {
        log.segments()
            .iter()
            .map(|s| s.index.iter().map(|p| (p.order.get(), p.offset)).collect())
            .collect()
    }

    /// A log of entries 1..=5 in one segment; returns the offset where record 5 starts and the
    /// file's length.
    fn five_in_one_segment(dir: &Path) -> (PathBuf, u64, u64) {
        let (log, _) = open(dir, SegmentedLogOptions::default());
        log.append(&entries(1..=4)).unwrap();
        let path = segment_files(dir)[0].clone();
        let start = file_len(&path);
        log.append(&[entry(5)]).unwrap();
        (path.clone(), start, file_len(&path))
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn entries_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(recovery.last_order, Order::ZERO);
        assert_eq!(recovery.segments, 1);
        assert_eq!(log.last_order(), Order::ZERO);
        assert!(log.read(Order(1), 10).unwrap().is_empty());

        log.append(&entries(1..=3)).unwrap();
        log.append(&[]).unwrap();
        log.append(&entries(4..=10)).unwrap();
        assert_eq!(log.last_order(), Order(10));
        assert_eq!(log.read(Order(1), 100).unwrap(), entries(1..=10));
        assert_eq!(log.read(Order(4), 3).unwrap(), entries(4..=6));
        drop(log);

        let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(recovery.records, 10);
        assert_eq!(recovery.last_order, Order(10));
        assert_eq!(recovery.cut, None);
        assert_eq!(log.read(Order(1), 100).unwrap(), entries(1..=10));
    }

    #[test]
    fn a_reopened_log_continues_its_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small());
        log.append(&entries(1..=7)).unwrap();
        drop(log);

        let (log, _) = open(dir.path(), small());
        assert!(matches!(
            log.append(&[entry(1)]),
            Err(StoreError::OutOfOrder { .. })
        ));
        log.append(&entries(8..=20)).unwrap();
        drop(log);

        let (log, recovery) = open(dir.path(), small());
        assert_eq!(recovery.last_order, Order(20));
        assert_eq!(log.read(Order(1), 100).unwrap(), entries(1..=20));
    }

    #[test]
    fn segments_roll_and_reads_cross_them() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small());
        // Batches of varied sizes, some of which cross a segment boundary.
        let mut next = 1;
        for size in [1, 2, 9, 1, 17, 5, 30, 3, 12] {
            log.append(&entries(next..=next + size - 1)).unwrap();
            next += size;
        }
        let last = next - 1;

        let files = segment_files(dir.path());
        assert!(files.len() > 5, "only {} segments", files.len());
        let mut expected_first = 1;
        for file in &files {
            // Each file is named by its first order and stays within the size limit (no
            // record here is larger than a segment).
            let name = file.file_stem().unwrap().to_str().unwrap();
            assert_eq!(name.parse::<u64>().unwrap(), expected_first);
            assert_eq!(name.len(), SEGMENT_NAME_DIGITS);
            assert!(file_len(file) <= small().segment_bytes);
            let segments = log.segments();
            let segment = segments.iter().find(|s| &s.path == file).unwrap();
            expected_first = segment.last.get() + 1;
        }
        assert_eq!(expected_first, last + 1);

        let check_every_read = |log: &SegmentedLog| {
            for from in 0..=last + 2 {
                for limit in [1, 3, 10, 1000] {
                    let start = from.max(1);
                    let end = (start + limit - 1).min(last);
                    let expected = if start > last {
                        Vec::new()
                    } else {
                        entries(start..=end)
                    };
                    assert_eq!(
                        log.read(Order(from), limit as usize).unwrap(),
                        expected,
                        "from {from} limit {limit}"
                    );
                }
            }
        };
        check_every_read(&log);
        let index = index_of(&log);
        drop(log);

        // The index rebuilt by the start-up scan is the one the writer built.
        let (log, recovery) = open(dir.path(), small());
        assert_eq!(recovery.segments, files.len());
        assert_eq!(recovery.records, last);
        assert_eq!(index_of(&log), index);
        check_every_read(&log);
    }

    #[test]
    fn the_index_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let options = SegmentedLogOptions {
            index_interval_bytes: 4096,
            ..SegmentedLogOptions::default()
        };
        let (log, _) = open(dir.path(), options.clone());
        for batch in 0..100 {
            log.append(&entries(batch * 50 + 1..=batch * 50 + 50))
                .unwrap();
        }
        let bytes = file_len(&segment_files(dir.path())[0]);
        let points = index_of(&log)[0].len() as u64;
        assert!(
            points <= bytes / 4096 + 1,
            "{points} points for {bytes} bytes"
        );
        assert!(
            points >= bytes / 4096 / 2,
            "{points} points for {bytes} bytes"
        );
        assert_eq!(log.read(Order(4321), 2).unwrap(), entries(4321..=4322));
    }

    #[test]
    fn an_out_of_order_append_is_rejected_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        log.append(&entries(1..=2)).unwrap();
        let path = segment_files(dir.path())[0].clone();
        let len = file_len(&path);

        for bad in [vec![entry(4)], vec![entry(3), entry(5)], vec![entry(2)]] {
            assert!(matches!(
                log.append(&bad),
                Err(StoreError::OutOfOrder { .. })
            ));
        }
        assert_eq!(file_len(&path), len);
        assert_eq!(log.last_order(), Order(2));
        log.append(&[entry(3)]).unwrap();
        drop(log);

        let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(recovery.last_order, Order(3));
        assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=3));
    }

    #[test]
    fn a_record_torn_at_any_byte_is_cut_off() {
        let mut checked = 0;
        let mut at = 0;
        loop {
            let dir = tempfile::tempdir().unwrap();
            let (path, start, end) = five_in_one_segment(dir.path());
            let cut_at = start + at;
            if cut_at >= end {
                break;
            }
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(cut_at)
                .unwrap();

            let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
            assert_eq!(recovery.last_order, Order(4), "torn at +{at}");
            assert_eq!(recovery.records, 4);
            if at == 0 {
                // Torn exactly between records: nothing to cut.
                assert_eq!(recovery.cut, None);
            } else {
                let cut = recovery.cut.unwrap();
                assert_eq!(cut.file, path);
                assert_eq!(cut.kept_bytes, start);
                assert_eq!(cut.cut_bytes, at);
                assert_eq!(cut.damage, TailDamage::Incomplete);
            }
            assert_eq!(file_len(&path), start);
            assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=4));

            // The log carries on where the intact part ends.
            log.append(&[entry(5)]).unwrap();
            drop(log);
            let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
            assert_eq!(recovery.cut, None);
            assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=5));
            checked += 1;
            at += 1;
        }
        assert!(checked > 20);
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (path, start, end) = five_in_one_segment(dir.path());
        let pristine = fs::read(&path).unwrap();
        for offset in start..end {
            fs::write(&path, &pristine).unwrap();
            flip_byte(&path, offset);

            let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
            let cut = recovery
                .cut
                .unwrap_or_else(|| panic!("flip at {offset} not cut"));
            assert_eq!(cut.kept_bytes, start);
            assert_eq!(cut.cut_bytes, end - start);
            assert_eq!(recovery.last_order, Order(4));
            assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=4));
            assert_eq!(file_len(&path), start);
        }
    }

    #[test]
    fn damage_in_the_middle_of_the_newest_segment_cuts_from_there() {
        // A crash can only tear the end, but bit rot in the newest segment looks the same and
        // cannot be told apart from a torn batch: everything from the damage on goes.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        log.append(&entries(1..=2)).unwrap();
        let path = segment_files(dir.path())[0].clone();
        let second_starts = file_len(&path);
        log.append(&entries(3..=5)).unwrap();
        drop(log);
        flip_byte(&path, second_starts - 3);

        let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(recovery.last_order, Order(1));
        assert_eq!(recovery.cut.unwrap().damage, TailDamage::ChecksumMismatch);
        assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=1));
    }

    #[test]
    fn damage_in_a_sealed_segment_is_an_error() {
        for damage in ["flip", "truncate"] {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = open(dir.path(), small());
            log.append(&entries(1..=40)).unwrap();
            drop(log);
            let files = segment_files(dir.path());
            assert!(files.len() >= 3);
            let sealed = &files[1];
            match damage {
                "flip" => flip_byte(sealed, file_len(sealed) / 2),
                _ => OpenOptions::new()
                    .write(true)
                    .open(sealed)
                    .unwrap()
                    .set_len(file_len(sealed) - 3)
                    .unwrap(),
            }

            let damaged_len = file_len(sealed);
            let error = SegmentedLog::open(dir.path(), small()).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt(_)), "{damage}: {error}");
            // Nothing was cut: the evidence stays for whoever repairs it.
            assert_eq!(file_len(sealed), damaged_len);
        }
    }

    #[test]
    fn an_intact_record_with_the_wrong_order_is_an_error() {
        // A record that passes its checksum was written whole; if it holds the wrong order the
        // log is wrong, not torn, and must not be cut silently.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        log.append(&entries(1..=2)).unwrap();
        let path = segment_files(dir.path())[0].clone();
        let first_len = {
            let mut buf = Vec::new();
            record::encode(&entry(1), &mut buf);
            buf.len()
        };
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        let duplicate = bytes[first_len..].to_vec();
        bytes.extend_from_slice(&duplicate);
        fs::write(&path, bytes).unwrap();

        let error = SegmentedLog::open(dir.path(), SegmentedLogOptions::default()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    }

    #[test]
    fn an_empty_trailing_segment_is_used() {
        // A crash right after a segment was created leaves it empty.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        log.append(&entries(1..=3)).unwrap();
        drop(log);
        let empty = segment_path(dir.path(), Order(4));
        File::create(&empty).unwrap();

        let (log, recovery) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(recovery.segments, 2);
        assert_eq!(recovery.last_order, Order(3));
        assert_eq!(recovery.cut, None);
        assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=3));
        log.append(&entries(4..=5)).unwrap();
        assert!(file_len(&empty) > 0);
        assert_eq!(log.read(Order(2), 10).unwrap(), entries(2..=5));
        drop(log);
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        assert_eq!(log.read(Order(1), 10).unwrap(), entries(1..=5));
    }

    #[test]
    fn an_empty_log_reopens_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("nested").join("log");
        let (log, _) = open(&log_dir, SegmentedLogOptions::default());
        drop(log);
        let (log, recovery) = open(&log_dir, SegmentedLogOptions::default());
        assert_eq!(recovery.segments, 1);
        assert_eq!(recovery.records, 0);
        assert_eq!(log.last_order(), Order::ZERO);
        log.append(&[entry(1)]).unwrap();
    }

    #[test]
    fn missing_or_stray_segments_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small());
        log.append(&entries(1..=40)).unwrap();
        drop(log);
        let files = segment_files(dir.path());

        // An empty segment whose name leaves a gap.
        let gap = segment_path(dir.path(), Order(99));
        File::create(&gap).unwrap();
        assert!(matches!(
            SegmentedLog::open(dir.path(), small()),
            Err(StoreError::Corrupt(_))
        ));
        fs::remove_file(&gap).unwrap();

        // A badly named segment.
        let odd = dir.path().join("7.seg");
        File::create(&odd).unwrap();
        assert!(matches!(
            SegmentedLog::open(dir.path(), small()),
            Err(StoreError::Corrupt(_))
        ));
        fs::remove_file(&odd).unwrap();

        // Other files are none of our business.
        File::create(dir.path().join("notes.txt")).unwrap();
        open(dir.path(), small());

        // A missing sealed segment, and a missing first one.
        let middle = fs::read(&files[1]).unwrap();
        fs::remove_file(&files[1]).unwrap();
        assert!(matches!(
            SegmentedLog::open(dir.path(), small()),
            Err(StoreError::Corrupt(_))
        ));
        fs::write(&files[1], middle).unwrap();
        fs::remove_file(&files[0]).unwrap();
        assert!(matches!(
            SegmentedLog::open(dir.path(), small()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn reads_outside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small());
        log.append(&entries(1..=12)).unwrap();
        assert_eq!(log.read(Order(0), 2).unwrap(), entries(1..=2));
        assert_eq!(log.read(Order(0), 0).unwrap(), Vec::new());
        assert_eq!(log.read(Order(5), 0).unwrap(), Vec::new());
        assert_eq!(log.read(Order(12), 5).unwrap(), entries(12..=12));
        assert!(log.read(Order(13), 5).unwrap().is_empty());
        assert!(log.read(Order(u64::MAX), usize::MAX).unwrap().is_empty());
        assert_eq!(
            orders(&log.read(Order(10), usize::MAX).unwrap()),
            vec![10, 11, 12]
        );
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small());
        let mut big = entry(2);
        big.content = "x".repeat(1000);
        log.append(&[entry(1), big.clone(), entry(3)]).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 3);
        assert_eq!(
            log.read(Order(1), 5).unwrap(),
            vec![entry(1), big, entry(3)]
        );
    }

    #[test]
    fn readers_never_see_a_partial_batch() {
        let dir = tempfile::tempdir().unwrap();
        let options = SegmentedLogOptions {
            sync: false,
            ..small()
        };
        let (log, _) = open(dir.path(), options);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for reader in 0..2u64 {
                let (log, done) = (&log, &done);
                scope.spawn(move || {
                    let mut reads = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 10 {
                        let last = log.last_order().get();
                        let from = 1 + (reads * 7 + reader) % last.max(1);
                        let page = log.read(Order(from), 20).unwrap();
                        // At least what was durable before the read began, in order, intact.
                        let at_least = if last >= from {
                            (last + 1 - from).min(20)
                        } else {
                            0
                        };
                        assert!(page.len() as u64 >= at_least);
                        for (i, e) in page.iter().enumerate() {
                            assert_eq!(*e, entry(from + i as u64));
                        }
                        reads += 1;
                    }
                });
            }
            let mut next = 1;
            for size in (1..60).cycle().take(120) {
                log.append(&entries(next..=next + size - 1)).unwrap();
                next += size;
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    #[test]
    fn the_file_holds_exactly_the_framed_records() {
        // The format described in the module docs, checked byte by byte for one record.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), SegmentedLogOptions::default());
        let e = Entry {
            order: Order(1),
            message_id: MessageId::parse("ab").unwrap(),
            content: "xyz".to_owned(),
        };
        log.append(std::slice::from_ref(&e)).unwrap();
        let mut bytes = Vec::new();
        File::open(segment_path(dir.path(), Order(1)))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let payload: Vec<u8> = [
            &1u64.to_le_bytes()[..],
            &2u32.to_le_bytes(),
            b"ab",
            &3u32.to_le_bytes(),
            b"xyz",
        ]
        .concat();
        let len = (payload.len() as u32).to_le_bytes();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&len);
        hasher.update(&payload);
        let expected = [&len[..], &hasher.finalize().to_le_bytes(), &payload].concat();
        assert_eq!(bytes, expected);
    }
}
