//! The write concern `w`: a write returns once `w` nodes hold the entry and not before. The
//! default (every node) waits for a secondary slowed by `--delay-ms`; a small `w` returns while a
//! slow secondary does not show the entry yet (temporary inconsistency, visible), and every node
//! still ends with the same log. `--default-w`, timeouts (`504`, the entry stays and replicates)
//! and `--wc-timeout-ms`, and a pending write completing once a killed secondary is back.

use crate::helpers::{
    assert_created, assert_duplicate, assert_timed_out, contents, describe, join_within, messages,
    post, wait_for_len, wait_until, warm_up, write, write_default, write_with_id, DEADLINE,
};
use replog_common::wire::EntryMessage;
use replog_testkit::{TestCluster, Write, WriteTimedOut};
use std::time::{Duration, Instant};

/// Long enough that a read issued right after a write's answer surely lands inside it, even on
/// a loaded two-core CI machine. Each test using it first makes a warm-up write for every node,
/// so that the entry under test reaches s2 through its queue, where the delay applies, and not
/// through s2's start-up catch-up from the master (see
/// `catch_up::a_late_secondary_delays_what_it_fetches_too`).
const SLOW: &str = "3000";

#[tokio::test(flavor = "multi_thread")]
async fn a_default_write_returns_only_once_the_delayed_secondary_shows_it() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "1500"])
        .start()
        .await;
    let (master, s2) = (cluster.master(), cluster.secondary("s2"));

    let mut expected = Vec::new();
    for (index, content) in ["hello", "again"].into_iter().enumerate() {
        let started = Instant::now();
        let outcome = post(&master, &write_default(content)).await;
        let took = started.elapsed();
        // Asked first, before anything else can pass: at the moment the answer arrived, s2
        // had to show the entry already.
        let on_s2 = messages(&s2).await;

        // The default w is every node.
        let answer = assert_created(&outcome, content, 3);
        assert_eq!(answer.acks, 3, "{answer:?}");
        assert_eq!(answer.order, index as u64 + 1, "{answer:?}");
        expected.push(EntryMessage {
            message_id: answer.message_id.clone(),
            order: index as u64 + 1,
            content: content.into(),
            master_incarnation: None,
        });
        assert_eq!(
            on_s2, expected,
            "{content:?} returned after {took:?} but the delayed s2 did not show it yet"
        );
        // The first write may race s2's start-up catch-up from the master, which (see
        // catch_up::a_late_secondary_delays_what_it_fetches_too) can skip the delay; the
        // second one surely travels through s2's queue, so it cannot return before the delay.
        if index == 1 {
            assert!(
                took >= Duration::from_millis(1400),
                "{content:?} returned after {took:?}, before s2's 1500 ms delay could pass"
            );
        }
    }
    for (name, node) in cluster.running_nodes() {
        assert_eq!(messages(&node).await, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_default_write_waits_for_both_delayed_secondaries() {
    let cluster = TestCluster::builder()
        .secondary_args("s1", &["--delay-ms", "300"])
        .secondary_args("s2", &["--delay-ms", "600"])
        .start()
        .await;
    let master = cluster.master();
    for (index, content) in ["one", "two", "three"].into_iter().enumerate() {
        let outcome = post(&master, &write_default(content)).await;
        let on_s1 = messages(&cluster.secondary("s1")).await;
        let on_s2 = messages(&cluster.secondary("s2")).await;
        let answer = assert_created(&outcome, content, 3);
        assert_eq!(answer.order, index as u64 + 1, "{answer:?}");
        assert_eq!(answer.acks, 3, "{answer:?}");
        for (id, shown) in [("s1", on_s1), ("s2", on_s2)] {
            assert_eq!(
                shown.last().map(|e| e.content.as_str()),
                Some(content),
                "{content:?} returned before {id} showed it: {}",
                describe(&shown)
            );
            assert_eq!(shown.len(), index + 1, "{id}");
        }
    }
    let log = cluster.wait_for_convergence(3).await;
    assert_eq!(contents(&log), ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn w1_returns_while_a_delayed_secondary_does_not_show_the_entry() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", SLOW])
        .start()
        .await;
    let master = cluster.master();

    warm_up(&cluster).await;

    let outcome = post(&master, &write("early", 1)).await;
    let on_s2 = messages(&cluster.secondary("s2")).await;
    let answer = assert_created(&outcome, "early", 1);
    assert_eq!(
        contents(&on_s2),
        ["warm-up"],
        "a w=1 write waited for the delayed s2: s2 already shows it"
    );
    assert_eq!(contents(&messages(&master).await), ["warm-up", "early"]);

    // Eventually consistent: the delay passes and s2 catches up.
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(log[1].message_id, answer.message_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn w2_returns_once_one_secondary_has_the_entry() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", SLOW])
        .start()
        .await;

    warm_up(&cluster).await;

    let outcome = post(&cluster.master(), &write("two", 2)).await;
    let on_s1 = messages(&cluster.secondary("s1")).await;
    let on_s2 = messages(&cluster.secondary("s2")).await;
    assert_created(&outcome, "two", 2);
    assert_eq!(
        contents(&on_s1),
        ["warm-up", "two"],
        "w=2 returned before any secondary held the entry"
    );
    assert_eq!(
        contents(&on_s2),
        ["warm-up"],
        "w=2 waited for the delayed s2 as well: {}",
        describe(&on_s2)
    );
    cluster.wait_for_convergence(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_w_sets_the_write_concern_of_writes_that_name_none() {
    let mut cluster = TestCluster::builder()
        .master_args(&["--default-w", "1"])
        .start_master_only()
        .await;
    let master = cluster.master();
    // No secondary is running, so only w=1 can return.
    let outcome = post(&master, &write_default("fast")).await;
    let answer = assert_created(&outcome, "fast", 1);
    assert_eq!(answer.acks, 1, "{answer:?}");

    // A request's own w still wins.
    let client = master.clone();
    let strict = tokio::spawn(async move { post(&client, &write("strict", 2)).await });
    wait_until(DEADLINE, "the master sequences the w=2 write", || async {
        messages(&master).await.len() == 2
    })
    .await;
    if strict.is_finished() {
        let outcome = strict.await;
        panic!("a w=2 write returned with no secondary running: {outcome:?}");
    }
    cluster.start_secondary("s1").await;
    let outcome = join_within(DEADLINE, "the w=2 write returns", strict).await;
    assert_created(&outcome, "strict", 2);
}

/// Checks a `504` answer: the fields, and that the entry stayed at `order`.
fn assert_timed_out_at(answer: &WriteTimedOut, message_id: &str, order: u64) {
    assert!(!answer.error.is_empty(), "{answer:?}");
    if !message_id.is_empty() {
        assert_eq!(answer.message_id, message_id, "{answer:?}");
    } else {
        assert!(!answer.message_id.is_empty(), "{answer:?}");
    }
    assert_eq!(answer.order, order, "{answer:?}");
    assert!(
        matches!(answer.acks, 1..=2),
        "S2 is down, so 1 or 2 nodes hold the entry: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_concern_timeout_answers_504_and_the_entry_still_replicates() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    let s1 = cluster.start_secondary("s1").await;
    let master = cluster.master();
    let request = Write {
        timeout_ms: Some(500),
        ..write_with_id("slow", "to-1", 3)
    };

    let started = Instant::now();
    let outcome = post(&master, &request).await;
    let took = started.elapsed();
    assert_timed_out_at(&assert_timed_out(&outcome), "to-1", 1);
    assert!(
        took >= Duration::from_millis(450),
        "the 504 came after {took:?}, before the 500 ms timeout"
    );
    // The entry stays and still replicates.
    assert_eq!(contents(&messages(&master).await), ["slow"]);
    wait_for_len("s1", &s1, 1).await;

    // Retrying with the same id waits again, and times out again: still one entry.
    let retry = Write {
        timeout_ms: Some(300),
        ..write_with_id("slow", "to-1", 3)
    };
    let started = Instant::now();
    let outcome = post(&master, &retry).await;
    let took = started.elapsed();
    assert_timed_out_at(&assert_timed_out(&outcome), "to-1", 1);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(messages(&master).await.len(), 1);

    cluster.start_secondary("s2").await;
    let log = cluster.wait_for_convergence(1).await;
    assert_eq!(log[0].message_id, "to-1");

    let outcome = post(&master, &write_with_id("slow", "to-1", 3)).await;
    let answer = assert_duplicate(&outcome);
    assert_eq!(answer.order, 1, "{answer:?}");
    assert_eq!(answer.acks, 3, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wc_timeout_flag_applies_when_the_request_sets_none() {
    let mut cluster = TestCluster::builder()
        .master_args(&["--wc-timeout-ms", "400"])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let master = cluster.master();

    let started = Instant::now();
    let outcome = post(&master, &write_default("default w")).await;
    let took = started.elapsed();
    assert_timed_out_at(&assert_timed_out(&outcome), "", 1);
    assert!(took >= Duration::from_millis(350), "{took:?}");

    // A write S1 alone can satisfy is unaffected.
    let outcome = post(&master, &write("w2", 2)).await;
    assert_eq!(assert_created(&outcome, "w2", 2).order, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_write_completes_when_a_killed_secondary_comes_back() {
    let mut cluster = TestCluster::start().await;
    warm_up(&cluster).await;
    cluster.kill("s2").await;

    let master = cluster.master();
    let pending = tokio::spawn(async move { post(&master, &write("needs s2", 3)).await });
    wait_for_len("s1", &cluster.secondary("s1"), 2).await;
    let pending = crate::helpers::assert_pending("a w=3 write while s2 is dead", pending).await;

    cluster.restart("s2").await;
    let outcome = join_within(DEADLINE, "the w=3 write returns", pending).await;
    let answer = assert_created(&outcome, "needs s2", 3);
    assert_eq!(answer.order, 2);
    assert_eq!(answer.acks, 3, "{answer:?}");
    cluster.wait_for_convergence(2).await;
}
