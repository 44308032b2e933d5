//! Crash recovery on disk: a crash in the middle of a write leaves a torn record at the end of a
//! log file; start-up detects it by its checksum, cuts it off, says so, and never serves garbage.
//! The files are damaged by hand while the node is down, as a crash or a bad disk would.

use crate::helpers::{
    assert_created, assert_well_formed, messages, post, random_writes, write, write_all, DEADLINE,
};
use replog_testkit::{Node, TestCluster};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The newest segment file of the log in a node's data directory.
pub fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = fs::read_dir(data_dir.join("log"))
        .unwrap_or_else(|error| panic!("no log in {}: {error}", data_dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("the log has a segment")
}

/// A node's `--data-dir`.
fn data_dir(node: &Node) -> PathBuf {
    node.data_dir()
        .unwrap_or_else(|| panic!("{} has no --data-dir", node.name()))
}

fn append_bytes(file: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(file).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_record_at_the_end_of_the_masters_log_is_cut_and_numbering_goes_on() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("before", 12, 1..=3),
        4,
        DEADLINE,
    )
    .await;
    let before = cluster.wait_for_convergence(12).await;

    cluster.kill("master").await;
    // A batch whose write reached the disk only in part: a header announcing 200 bytes, and 13
    // bytes of payload.
    let segment = newest_segment(&data_dir(cluster.master_node()));
    let intact_len = fs::metadata(&segment).unwrap().len();
    let mut torn = 200u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xAB; 4 + 13]);
    append_bytes(&segment, &torn);

    cluster.restart("master").await;
    assert_eq!(
        messages(&cluster.master()).await,
        before,
        "the master serves garbage or lost entries"
    );
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        intact_len,
        "the torn tail was not cut off"
    );
    let log = cluster.master_node().log_text();
    assert!(
        log.contains("cut"),
        "the master did not say it cut a torn record:\n{log}"
    );

    let outcome = post(&cluster.master(), &write("after the crash", 3)).await;
    assert_eq!(assert_created(&outcome, "after the crash", 3).order, 13);
    let log = cluster.wait_for_convergence(13).await;
    assert_well_formed(&log);
    assert_eq!(&log[..12], &before[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_with_a_bad_checksum_at_the_end_is_cut_too() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("before", 5, 3..=3),
        2,
        DEADLINE,
    )
    .await;
    let before = cluster.wait_for_convergence(5).await;

    cluster.kill("master").await;
    // A complete record in length, whose checksum does not match: a sector that was not written.
    let segment = newest_segment(&data_dir(cluster.master_node()));
    let mut record = 16u32.to_le_bytes().to_vec();
    record.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    record.extend_from_slice(&[0u8; 16]);
    append_bytes(&segment, &record);

    cluster.restart("master").await;
    assert_eq!(messages(&cluster.master()).await, before);
    let outcome = post(&cluster.master(), &write("next", 3)).await;
    assert_eq!(assert_created(&outcome, "next", 3).order, 6);
    assert_well_formed(&cluster.wait_for_convergence(6).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_whose_log_was_damaged_cuts_it_and_refetches_what_it_lost() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("before", 20, 3..=3),
        4,
        DEADLINE,
    )
    .await;
    let before = cluster.wait_for_convergence(20).await;

    cluster.kill("s1").await;
    // Flip a byte in the middle of the file: every record from there on is suspect and is cut,
    // although s1 had acknowledged them. It must not serve them, and must get them back.
    let segment = newest_segment(&data_dir(cluster.secondary_node("s1")));
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    fs::write(&segment, &bytes).unwrap();

    cluster.restart("s1").await;
    let served = messages(&cluster.secondary("s1")).await;
    assert!(
        served.len() < 20,
        "s1 served entries from a damaged part of its log"
    );
    assert_eq!(
        &before[..served.len()],
        &served[..],
        "s1 served a wrong entry"
    );

    let log = cluster.wait_for_convergence(20).await;
    assert_eq!(log, before);
    write_all(
        &cluster.master(),
        &random_writes("after", 5, 3..=3),
        2,
        DEADLINE,
    )
    .await;
    assert_well_formed(&cluster.wait_for_convergence(25).await);
}
