//! Opening a log directory and recovering from a crash: every segment is scanned once, its
//! sparse index rebuilt, and a torn or corrupt tail of the newest segment is cut off (see
//! "Start-up" on [`SegmentedLog`]).

use super::record::{self, Frame, RecordReader};
use super::{
    create_segment, segment_path, sync_dir, IndexPoint, Segment, SegmentedLog, SegmentedLogOptions,
    TailDamage, Writer, SEGMENT_EXTENSION, SEGMENT_NAME_DIGITS,
};
use crate::store::StoreError;
use replog_common::ids::Order;
use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Read buffer for scanning segments at start-up: big enough to read sequentially in few calls.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

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
