//! The entries wire format: runs of consecutive entries in one versioned message. A burst of
//! writes travels in few messages and is applied exactly once; a message of a version the
//! secondary does not read is neither guessed at nor dropped: the secondary stops and says why.

use crate::helpers::{assert_well_formed, random_writes, wait_until, write_all, DEADLINE};
use replog_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_and_repeated_runs_are_trimmed_and_applied_once() {
    let cluster = TestCluster::start().await;
    let answers = write_all(
        &cluster.master(),
        &random_writes("burst", 300, 1..=3),
        32,
        DEADLINE,
    )
    .await;
    let log = cluster.wait_for_convergence(300).await;
    assert_well_formed(&log);
    crate::helpers::assert_log_matches_answers(&log, &answers);
    // The same entries again, as a run overlapping what the secondaries hold (as after a
    // republish from an older confirmed mark): trimmed to nothing new, acked, no error.
    let run = replog_common::wire::run::encode_run(
        &log[100..=150]
            .iter()
            .cloned()
            .map(|entry| replog_common::Entry::try_from(entry).unwrap())
            .collect::<Vec<_>>(),
        None,
    );
    cluster.publish_raw_entry(&run).await;
    let again = cluster.wait_for_convergence(300).await;
    assert_eq!(again, log, "a repeated run changed a log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_of_an_unknown_version_stops_the_secondary_and_stays_queued() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("before", 3, 3..=3),
        2,
        DEADLINE,
    )
    .await;
    cluster.wait_for_convergence(3).await;
    cluster
        .publish_raw_entry(br#"{"v":2,"entries":[],"whatever":"comes next"}"#)
        .await;
    wait_until(DEADLINE, "s1 stops on the unknown version", || {
        let exited = cluster.node_mut("s1").exited().is_some();
        async move { exited }
    })
    .await;
    let log = cluster.secondary_node("s1").log_text();
    assert!(
        log.contains("entries message of wire version 2") && log.contains("upgrade this node"),
        "s1 did not say why it stopped:\n{log}"
    );
    // Not dropped: the message is still in s1's queue for a node that reads it.
    let queued = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "name", "messages"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let queue = format!("{}.secondary.s1", cluster.namespace());
    if let Some(line) = queued.lines().find(|line| line.starts_with(&queue)) {
        let count: u64 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        assert!(count >= 1, "the unknown message was dropped: {line}");
    }
}
