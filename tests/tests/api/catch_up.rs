//! Catch-up: a secondary that joins late, was killed while writes streamed in, lost its whole
//! state, or lost its queue while down gets every entry it missed (from the master) and keeps up
//! afterwards; every node ends with the same log.

use crate::helpers::{
    assert_created, assert_log_matches_answers, assert_well_formed, join_within, post,
    random_writes, wait_for, wait_for_len, write, write_all, DEADLINE,
};
use replog_testkit::{TestCluster, TestClusterBuilder};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_late_secondary_delays_what_it_fetches_too() {
    // `--delay-ms`: every entry becomes visible that long after it arrives, however it
    // arrives, so a late joiner's catch-up is delayed as well.
    let mut cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "2000"])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let outcome = post(&cluster.master(), &write("early", 1)).await;
    assert_created(&outcome, "early", 1);

    let started = Instant::now();
    let s2 = cluster.start_secondary("s2").await;
    wait_for_len("s2", &s2, 1).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "s2 (--delay-ms 2000) showed the entry {took:?} after it was started"
    );
    cluster.wait_for_convergence(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_secondary_catches_up_after_restart() {
    killed_secondary_catches_up(TestCluster::builder(), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_secondary_catches_up_on_quorum_queues_with_redeliveries() {
    let builder = TestCluster::builder()
        .queue_type("quorum")
        .secondary_args("s1", &["--fail-rate", "0.3"])
        .secondary_args("s2", &["--fail-rate", "0.3"]);
    killed_secondary_catches_up(builder, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_that_lost_its_state_catches_up() {
    killed_secondary_catches_up(TestCluster::builder(), true).await;
}

/// S2 is SIGKILLed while writes stream in, misses more writes while dead, and is restarted
/// (same id, same namespace) while writes go on: every node must end identical. With `wipe`,
/// s2 also loses everything it stored, so it must fetch the whole log again.
async fn killed_secondary_catches_up(builder: TestClusterBuilder, wipe: bool) {
    let mut cluster = builder.start().await;
    let master = cluster.master();
    let before = random_writes("before", 60, 1..=2);
    let client = master.clone();
    let first_batch =
        tokio::spawn(async move { write_all(&client, &before, 4, Duration::from_secs(60)).await });

    // Mid-stream: s2 has applied some entries and more are on their way.
    let s2 = cluster.secondary("s2");
    wait_for(DEADLINE, "s2 applies 10 entries", || {
        let s2 = s2.clone();
        async move {
            let health = s2.secondary_health().await.map_err(|e| e.to_string())?;
            if health.applied >= 10 {
                Ok(())
            } else {
                Err(format!("{health:?}"))
            }
        }
    })
    .await;
    cluster.kill("s2").await;
    let mut answers =
        join_within(Duration::from_secs(70), "the first 60 writes", first_batch).await;

    // More entries while s2 is down.
    let down = random_writes("down", 40, 1..=2);
    answers.extend(write_all(&master, &down, 4, Duration::from_secs(60)).await);

    // Restart with the same id and namespace, and keep writing while it catches up.
    if wipe {
        cluster.wipe_state("s2");
    }
    cluster.restart("s2").await;
    let after = random_writes("after", 40, 1..=2);
    answers.extend(write_all(&master, &after, 4, Duration::from_secs(60)).await);

    let log = cluster.wait_for_convergence(140).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);

    // The restarted s2 acks again: a write for every node completes.
    let answer = assert_created(&post(&master, &write("last", 3)).await, "last", 3);
    assert_eq!(answer.order, 141);
    assert_eq!(answer.acks, 3, "{answer:?}");
    cluster.wait_for_acks(141).await;
    let health = cluster
        .secondary("s2")
        .secondary_health()
        .await
        .expect("s2's health");
    assert_eq!(health.applied, 141, "{health:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_whose_queue_was_deleted_while_down_catches_up_and_keeps_up() {
    let mut cluster = TestCluster::start().await;
    let master = cluster.master();
    let first = random_writes("first", 10, 3..=3);
    let mut answers = write_all(&master, &first, 4, DEADLINE).await;

    cluster.kill("s2").await;
    cluster.delete_secondary_queue("s2").await;
    // These reach s2 through no queue at all: only the master can give them back.
    let lost = random_writes("lost", 10, 1..=2);
    answers.extend(write_all(&master, &lost, 4, DEADLINE).await);

    cluster.restart("s2").await;
    // And these need s2's queue to exist and be bound again.
    let later = random_writes("later", 10, 3..=3);
    answers.extend(write_all(&master, &later, 4, DEADLINE).await);

    let log = cluster.wait_for_convergence(30).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}
