//! Tests of the segmented log: round trips, rolling, the sparse index, crash recovery and
//! concurrent readers.

use super::*;
use replog_common::ids::MessageId;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

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
