//! The divergence fence and its way out: a master whose log lost acknowledged entries (a
//! damaged segment cut at start, an older backup restored) must never number new writes over
//! them; `--refill-from` brings them back from a secondary, with nothing renumbered.

use crate::helpers::{
    assert_created, messages, post, random_writes, wait_for, write, write_all, DEADLINE,
};
use crate::recovery::newest_segment;
use replog_testkit::TestCluster;
use std::fs;

/// The issue's scenario 2, exactly: 100 writes w=3, the master killed, one byte in the middle
/// of its newest segment damaged, the master restarted.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_that_lost_acknowledged_entries_refuses_new_ones_until_refilled() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("kept", 100, 3..=3),
        8,
        DEADLINE,
    )
    .await;
    let before = cluster.wait_for_convergence(100).await;

    cluster.kill("master").await;
    let data_dir = cluster
        .master_node()
        .data_dir()
        .expect("the master has a --data-dir");
    let segment = newest_segment(&data_dir);
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    fs::write(&segment, &bytes).unwrap();
    cluster.restart("master").await;

    let kept = messages(&cluster.master()).await;
    let end = kept.len();
    assert!(end < 100, "the damaged part of the log was served");
    assert_eq!(&kept[..], &before[..end], "the master serves a wrong entry");

    // A new write is refused, and nothing is numbered into the missing range. The confirmed
    // mark (written a few times a second) may lag the kill, so it may name less than all of
    // the gap; the secondaries' heartbeats, which report positions under this master's
    // incarnation, widen it to everything they hold.
    let missing = format!("orders {}..=100 are missing", end + 1);
    let error = wait_for(DEADLINE, "a 503 naming the whole missing range", || async {
        let refused = cluster
            .master()
            .post_raw(
                r#"{"content":"new after the damage","w":3}"#,
                Some("application/json"),
            )
            .await
            .expect("the master answers");
        assert_eq!(refused.status, 503, "a write was taken: {}", refused.body);
        let error = refused.json().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        if error.contains(&missing) {
            Ok(error)
        } else {
            Err(error)
        }
    })
    .await;
    assert!(
        error.starts_with(&format!("read-only: the log ends at {end} but ")),
        "{error}"
    );
    assert!(
        error.contains("--refill-from"),
        "the error names no way out: {error}"
    );
    assert_eq!(
        messages(&cluster.master()).await.len(),
        end,
        "a refused write was appended"
    );
    for id in ["s1", "s2"] {
        assert_eq!(
            messages(&cluster.secondary(id)).await,
            before,
            "{id} was handed an entry numbered over the lost range"
        );
    }
    // A retry of a write the log still holds is answered as usual.
    let retry = crate::helpers::write_with_id(&before[0].content, &before[0].message_id, 3);
    assert_eq!(
        crate::helpers::assert_duplicate(&post(&cluster.master(), &retry).await).order,
        1
    );

    // The way out: refill from a secondary that holds the range.
    let s1 = cluster.secondary("s1").url().to_owned();
    cluster.node_mut("master").set_flag("--refill-from", s1);
    cluster.restart("master").await;
    assert_eq!(
        messages(&cluster.master()).await,
        before,
        "the refill did not bring every lost entry back at its order"
    );
    let log = cluster.master_node().log_text();
    assert!(log.contains("log refilled from a secondary"), "{log}");

    let outcome = post(&cluster.master(), &write("after the refill", 3)).await;
    let ack = assert_created(&outcome, "after the refill", 3);
    assert_eq!(
        ack.order, 101,
        "numbering did not continue after the refilled entries"
    );
    let healed = cluster.wait_for_convergence(101).await;
    assert_eq!(&healed[..100], &before[..]);
}

/// A refill source that does not share the master's history is refused, and the master does
/// not start on a log it could not trust.
#[tokio::test(flavor = "multi_thread")]
async fn a_refill_from_another_lineage_is_refused() {
    let mut cluster = TestCluster::start().await;
    write_all(
        &cluster.master(),
        &random_writes("a", 5, 3..=3),
        2,
        DEADLINE,
    )
    .await;
    cluster.wait_for_convergence(5).await;
    let other = TestCluster::start().await;
    write_all(&other.master(), &random_writes("b", 8, 3..=3), 2, DEADLINE).await;
    other.wait_for_convergence(8).await;

    let foreign = other.secondary("s1").url().to_owned();
    let master = cluster.node_mut("master");
    master.set_flag("--refill-from", foreign);
    let outcome = master.restart().await;
    assert!(
        outcome.is_err(),
        "the master started on a refill from another log"
    );
    let log = cluster.master_node().log_text();
    assert!(
        log.contains("refusing to refill from another lineage"),
        "{log}"
    );
}
