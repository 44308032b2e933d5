//! Total order: every node lists the same entries in the same order, whatever the concurrency
//! and however entries are delayed; delayed entries become visible side by side, never out of
//! order; a secondary holds back what comes after a gap (and no more than its prefetch); a
//! second master in the same namespace publishes nothing.

use crate::helpers::{
    assert_created, assert_log_matches_answers, assert_orders_rise, assert_well_formed, contents,
    join_within, messages, post, random_writes, wait_for, wait_until, write, write_all, DEADLINE,
};
use replog_testkit::{TestCluster, WriteOutcome};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn every_node_lists_one_total_order() {
    // s1 delays what it shows, so entries are in flight on it side by side while writes go on.
    let cluster = TestCluster::builder()
        .secondary_args("s1", &["--delay-ms", "200"])
        .start()
        .await;
    let clients = ["left", "right"].map(|name| {
        let master = cluster.master();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..15 {
                let content = format!("{name}-{i}");
                let w = 1 + i % 2;
                let outcome = post(&master, &write(&content, w)).await;
                answers.push(assert_created(&outcome, &content, w));
            }
            answers
        })
    });
    let mut answers = Vec::new();
    for client in clients {
        let mine = join_within(DEADLINE, "a client's 15 writes", client).await;
        // One client's writes were sequential, so their orders must rise.
        assert_orders_rise(&mine);
        answers.extend(mine);
    }
    let log = cluster.wait_for_convergence(30).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_entries_become_visible_side_by_side_and_in_order() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "1000"])
        .start()
        .await;
    let writes: Vec<(String, u64)> = (0..10).map(|i| (format!("side-{i}"), 1)).collect();
    let started = Instant::now();
    let answers = write_all(&cluster.master(), &writes, 10, DEADLINE).await;
    // wait_for_convergence also checks that s2 only ever shows a prefix of the log.
    let log = cluster.wait_for_convergence(10).await;
    let took = started.elapsed();
    assert_log_matches_answers(&log, &answers);
    // One after another the ten delays would add up to 10 s.
    assert!(
        took < Duration::from_secs(6),
        "ten entries with a 1 s delay took {took:?} to show on s2: delayed one after another?"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_writers_agree_on_one_order() {
    let cluster = TestCluster::start().await;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let master = cluster.master();
            let writes = random_writes(&format!("writer{writer}"), 15, 1..=3);
            tokio::spawn(async move {
                // One at a time within a writer: its orders must rise.
                write_all(&master, &writes, 1, Duration::from_secs(90)).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for writer in writers {
        let mine = join_within(Duration::from_secs(100), "a writer's 15 writes", writer).await;
        assert_orders_rise(&mine);
        answers.extend(mine);
    }
    let log = cluster.wait_for_convergence(120).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_master_in_the_same_namespace_publishes_nothing() {
    // Two masters numbering into one namespace would make the secondaries diverge: the one that
    // holds the master role publishes, the other waits for the role and says so.
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let outcome = post(&master, &write("from the master", 3)).await;
    assert_created(&outcome, "from the master", 3);
    let rival = cluster.start_rival_master().await;
    let rival_client = replog_testkit::NodeClient::new(rival.url(), DEADLINE);
    // The rival numbers from 1: its second entry would take order 2 on the secondaries, ahead
    // of the real master's, if it were ever published.
    for content in ["rival 1", "rival 2"] {
        let outcome = post(&rival_client, &write(content, 1)).await;
        assert!(
            matches!(outcome, WriteOutcome::Created(_)),
            "{content}: {outcome:?}"
        );
    }

    // Progress elsewhere proves the secondaries had every chance to receive the rival's entry.
    let outcome = post(&master, &write("later", 3)).await;
    assert_created(&outcome, "later", 3);
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["from the master", "later"]);
    wait_until(
        DEADLINE,
        "the rival says it waits for the master role",
        || async {
            rival
                .log_text()
                .contains("another process already runs as master")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_only_the_master_can_fill_holds_back_no_more_than_the_prefetch() {
    // s2 starts for the first time while the master is down and its queue holds entries
    // 2..=61 but not entry 1, which exists only on the master and s1. Until the master is back
    // s2 can apply nothing, and it must not take the whole queue into memory meanwhile:
    // held-back deliveries stay unacked, so the prefetch window bounds them. The prefetch
    // counts deliveries, each a run of up to --run-entries entries: with runs of one, it
    // counts entries, which this test can see on /health.
    const PREFETCH: u64 = 8;
    let mut cluster = TestCluster::builder()
        .master_args(&["--run-entries", "1"])
        .secondary_args("s2", &["--prefetch", &PREFETCH.to_string()])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let master = cluster.master();
    let first = assert_created(&post(&master, &write("first", 2)).await, "first", 2);
    let mut answers = vec![first];
    // Once the master has recorded entry 1 as confirmed it never publishes it again, so
    // deleting s2's queue takes entry 1 out of s2's reach for good.
    let confirmed = cluster
        .master_node()
        .data_dir()
        .expect("the master has a --data-dir")
        .join("confirmed");
    wait_until(DEADLINE, "the master records entry 1 as confirmed", || {
        let mark = std::fs::read_to_string(&confirmed).unwrap_or_default();
        async move { mark.trim().parse::<u64>().is_ok_and(|mark| mark >= 1) }
    })
    .await;
    cluster.delete_secondary_queue("s2").await;
    cluster.kill("master").await;
    cluster.restart("master").await; // declares s2's queue again, empty
    let queued = random_writes("queued", 60, 1..=2);
    answers.extend(write_all(&master, &queued, 4, DEADLINE).await);
    cluster.kill("master").await;

    let s2 = cluster.start_secondary("s2").await;
    let retries = |cluster: &TestCluster| {
        cluster
            .secondary_node("s2")
            .log_text()
            .matches("cannot reach the master for catch-up")
            .count()
    };
    let held = wait_for(DEADLINE, "s2 holds back a full prefetch window", || {
        let s2 = s2.clone();
        async move {
            let health = s2.secondary_health().await.map_err(|e| e.to_string())?;
            if health.held_back >= PREFETCH {
                Ok(health.held_back)
            } else {
                Err(format!("{health:?}"))
            }
        }
    })
    .await;
    assert_eq!(held, PREFETCH, "more held back than the prefetch allows");
    // Give the consumer time it can be seen to have had: two more failed attempts to reach the
    // master (100 ms, doubling) after the window filled.
    let seen = retries(&cluster);
    wait_until(DEADLINE, "s2 retries the master twice more", || {
        let now = retries(&cluster);
        async move { now >= seen + 2 }
    })
    .await;
    let health = s2.secondary_health().await.expect("s2's health");
    assert_eq!(health.held_back, PREFETCH, "{health:?}");
    assert_eq!(health.applied, 0, "{health:?}");
    assert!(messages(&s2).await.is_empty());

    cluster.restart("master").await;
    let later = random_writes("later", 5, 3..=3);
    answers.extend(write_all(&master, &later, 4, DEADLINE).await);
    let log = cluster.wait_for_convergence(66).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}
