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
//!
//! # Where things live
//! - this file: the [`SegmentedLog`] type, its options and durability contract, the shared
//!   in-memory shapes (segments, index points, the writer) and the [`LogStore`] wiring;
//! - `open`: opening a directory and recovering from a crash (the torn or corrupt tail cut,
//!   [`Recovery`], [`CutTail`]);
//! - `write`: appending, rolling to a new segment, fsyncing;
//! - `read`: planning a read from the sparse index and scanning the segment files;
//! - `record`: the framing of one record, with no I/O.

mod open;
mod read;
mod record;
mod write;

#[cfg(test)]
mod tests;

pub use open::{CutTail, Recovery};
pub use record::TailDamage;

use super::{LogStore, StoreError};
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

/// The file name extension of segment files.
const SEGMENT_EXTENSION: &str = "seg";

/// Digits of the zero-padded first order in a segment's name: enough for any `u64`.
const SEGMENT_NAME_DIGITS: usize = 20;

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
}

impl LogStore for SegmentedLog {
    /// Writes the batch with one write and one `sync_data` per segment it lands in (one, unless
    /// it crosses a segment boundary). On an error, a prefix of the batch may have been stored
    /// (see [`LogStore::last_order`]); after an I/O error the log refuses further appends with
    /// [`StoreError::Halted`] until it is reopened.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.append_entries(entries)
    }

    fn last_order(&self) -> Order {
        self.segments()
            .last()
            .map_or(Order::ZERO, |newest| newest.last)
    }

    fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.read_entries(from, limit)
    }
}

impl Segment {
    /// A segment holding no record yet, starting at `first`.
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

/// Where the segment starting at `first` lives in `dir`.
fn segment_path(dir: &Path, first: Order) -> PathBuf {
    dir.join(format!(
        "{:0width$}.{SEGMENT_EXTENSION}",
        first.get(),
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Creates a new, empty segment file; one that already exists is an error, never reused.
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
