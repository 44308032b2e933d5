//! Iteration 3: the self-check scenario step by step, redeliveries caused by
//! `--fail-rate` (on quorum and classic queues), many concurrent writers, a secondary that
//! crashes and catches up, write-concern timeouts, and clients that never wait on each other.

use crate::helpers::{
    assert_created, assert_log_matches_answers, assert_well_formed, contents, join_within,
    random_writes, wait_for, wait_until, write, write_all, NodeApi, TestCluster, DEADLINE,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Fails if a write that should still be waiting has been answered.
async fn assert_pending(
    what: &str,
    handle: tokio::task::JoinHandle<(StatusCode, Value)>,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    if handle.is_finished() {
        let outcome = handle.await;
        panic!("{what} was answered while it had to wait: {outcome:?}");
    }
    handle
}

/// Polls until `node` shows at least `len` entries.
async fn wait_for_len(node: &NodeApi, len: usize) {
    let what = format!("{} shows {len} entries", node.name);
    wait_for(DEADLINE, &what, || async move {
        let shown = node.messages().await;
        if shown.len() >= len {
            Ok(())
        } else {
            Err(crate::helpers::describe(&shown))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_self_check_scenario() {
    // Master and S1 only; S2 is configured but not started.
    let mut cluster = TestCluster::builder().start_master_only().await;
    cluster.start_secondary("s1").await;

    let (status, answer) = cluster.master.post_message(&write("Msg1", 1)).await;
    assert_eq!(assert_created(status, &answer, "Msg1", 1), 1);
    let (status, answer) = cluster.master.post_message(&write("Msg2", 2)).await;
    assert_eq!(assert_created(status, &answer, "Msg2", 2), 2);

    let master = cluster.master.api();
    let msg3 = tokio::spawn(async move { master.post_message(&write("Msg3", 3)).await });
    // Msg3 is sequenced before Msg4 is sent, so it gets order 3.
    wait_for_len(&cluster.master, 3).await;

    let (status, answer) = cluster.master.post_message(&write("Msg4", 1)).await;
    assert_eq!(assert_created(status, &answer, "Msg4", 1), 4);
    wait_for_len(cluster.secondary("s1"), 4).await;
    let msg3 = assert_pending("Msg3 (w=3, S2 down)", msg3).await;

    cluster.start_secondary("s2").await;
    wait_for_len(cluster.secondary("s2"), 4).await;
    let on_s2 = cluster.secondary("s2").messages().await;
    assert_eq!(contents(&on_s2), ["Msg1", "Msg2", "Msg3", "Msg4"]);
    assert_eq!(on_s2, cluster.master.messages().await);

    let (status, answer) = join_within(DEADLINE, "Msg3's request returns", msg3).await;
    assert_eq!(assert_created(status, &answer, "Msg3", 3), 3);
    assert_eq!(answer["acks"], 3, "{answer}");
    let log = cluster.wait_for_convergence(4).await;
    assert_well_formed(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_secondary_delays_what_it_fetches_too() {
    // `--delay-ms`: every entry becomes visible that long after it arrives, however it
    // arrives, so a late joiner's catch-up is delayed as well.
    let mut cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "2000"])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let (status, answer) = cluster.master.post_message(&write("early", 1)).await;
    assert_created(status, &answer, "early", 1);

    let started = Instant::now();
    cluster.start_secondary("s2").await;
    wait_for_len(cluster.secondary("s2"), 1).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "s2 (--delay-ms 2000) showed the entry {took:?} after it was started"
    );
    cluster.wait_for_convergence(1).await;
}

/// `n` concurrent writes with random `w` against a cluster whose secondaries nack 30 % of
/// deliveries; every node must end with the same well-formed log.
async fn redeliveries_leave_every_node_identical(queue_type: &str, n: usize) {
    let cluster = TestCluster::builder()
        .queue_type(queue_type)
        .secondary_args("s1", &["--fail-rate", "0.3"])
        .secondary_args("s2", &["--fail-rate", "0.3"])
        .start()
        .await;
    let writes = random_writes(queue_type, n, 1..=3);
    let answers = write_all(&cluster.master, &writes, 16, Duration::from_secs(120)).await;
    let log = cluster.wait_for_convergence(n).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
    cluster.wait_for_acks(n as u64).await;
    for id in ["s1", "s2"] {
        let node = cluster.secondary(id);
        let health = node.health().await;
        assert_eq!(health["applied"], n, "{health}");
        // The API cannot show a redelivery, so the log is the one witness that `--fail-rate`
        // took effect and this test exercised redeliveries at all.
        if let Some(log) = node.log_text() {
            assert!(
                log.to_lowercase().contains("nack"),
                "{id} ran with --fail-rate 0.3 over {n} entries but its log mentions no nack"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redeliveries_on_quorum_queues_leave_every_node_identical() {
    redeliveries_leave_every_node_identical("quorum", 300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redeliveries_on_classic_queues_leave_every_node_identical() {
    redeliveries_leave_every_node_identical("classic", 100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_writers_agree_on_one_order() {
    let cluster = TestCluster::start().await;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let master = cluster.master.api();
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
        let orders: Vec<u64> = mine.iter().map(|a| a["order"].as_u64().unwrap()).collect();
        assert!(
            orders.windows(2).all(|pair| pair[0] < pair[1]),
            "{orders:?}"
        );
        answers.extend(mine);
    }
    let log = cluster.wait_for_convergence(120).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
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
async fn killed_secondary_catches_up(builder: crate::helpers::ClusterBuilder, wipe: bool) {
    let mut cluster = builder.start().await;
    let master = cluster.master.api();
    let before = random_writes("before", 60, 1..=2);
    let first_batch =
        tokio::spawn(async move { write_all(&master, &before, 4, Duration::from_secs(60)).await });

    // Mid-stream: s2 has applied some entries and more are on their way.
    let s2 = cluster.secondary("s2").api();
    wait_for(DEADLINE, "s2 applies 10 entries", || {
        let s2 = s2.clone();
        async move {
            let health = s2.health().await;
            match health["applied"].as_u64() {
                Some(applied) if applied >= 10 => Ok(()),
                _ => Err(health.to_string()),
            }
        }
    })
    .await;
    cluster.secondary_mut("s2").kill().await;
    let mut answers =
        join_within(Duration::from_secs(70), "the first 60 writes", first_batch).await;

    // More entries while s2 is down.
    let down = random_writes("down", 40, 1..=2);
    answers.extend(write_all(&cluster.master, &down, 4, Duration::from_secs(60)).await);

    // Restart with the same id and namespace, and keep writing while it catches up.
    if wipe {
        cluster.secondary("s2").wipe_state();
    }
    cluster.secondary_mut("s2").restart().await;
    let after = random_writes("after", 40, 1..=2);
    answers.extend(write_all(&cluster.master, &after, 4, Duration::from_secs(60)).await);

    let log = cluster.wait_for_convergence(140).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);

    // The restarted s2 acks again: a write for every node completes.
    let (status, answer) = cluster.master.post_message(&write("last", 3)).await;
    assert_eq!(assert_created(status, &answer, "last", 3), 141);
    assert_eq!(answer["acks"], 3, "{answer}");
    cluster.wait_for_acks(141).await;
    let health = cluster.secondary("s2").health().await;
    assert_eq!(health["applied"], 141, "{health}");
}

/// Checks a `504` answer: the JSON fields, and that the entry stayed at `order`.
fn assert_timed_out(status: StatusCode, answer: &Value, message_id: &str, order: u64) {
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    if !message_id.is_empty() {
        assert_eq!(answer["message_id"], message_id, "{answer}");
    } else {
        assert!(answer["message_id"].as_str().is_some(), "{answer}");
    }
    assert_eq!(answer["order"], order, "{answer}");
    let acks = answer["acks"].as_u64();
    assert!(
        matches!(acks, Some(1..=2)),
        "S2 is down, so 1 or 2 nodes hold the entry: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_concern_timeout_answers_504_and_the_entry_still_replicates() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    cluster.start_secondary("s1").await;
    let request = json!({"content": "slow", "w": 3, "timeout_ms": 500, "message_id": "to-1"});

    let started = Instant::now();
    let (status, answer) = cluster.master.post_message(&request).await;
    let took = started.elapsed();
    assert_timed_out(status, &answer, "to-1", 1);
    assert!(
        took >= Duration::from_millis(450),
        "the 504 came after {took:?}, before the 500 ms timeout"
    );
    // The entry stays and still replicates.
    assert_eq!(contents(&cluster.master.messages().await), ["slow"]);
    wait_for_len(cluster.secondary("s1"), 1).await;

    // Retrying with the same id waits again, and times out again: still one entry.
    let retry = json!({"content": "slow", "w": 3, "timeout_ms": 300, "message_id": "to-1"});
    let started = Instant::now();
    let (status, answer) = cluster.master.post_message(&retry).await;
    let took = started.elapsed();
    assert_timed_out(status, &answer, "to-1", 1);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(cluster.master.messages().await.len(), 1);

    cluster.start_secondary("s2").await;
    let log = cluster.wait_for_convergence(1).await;
    assert_eq!(log[0].message_id, "to-1");

    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "slow", "w": 3, "message_id": "to-1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(answer["order"], 1, "{answer}");
    assert_eq!(answer["acks"], 3, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wc_timeout_flag_applies_when_the_request_sets_none() {
    let mut cluster = TestCluster::builder()
        .master_args(&["--wc-timeout-ms", "400"])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;

    let started = Instant::now();
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "default w"}))
        .await;
    let took = started.elapsed();
    assert_timed_out(status, &answer, "", 1);
    assert!(took >= Duration::from_millis(350), "{took:?}");

    // A write S1 alone can satisfy is unaffected.
    let (status, answer) = cluster.master.post_message(&write("w2", 2)).await;
    assert_eq!(assert_created(status, &answer, "w2", 2), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_clients_are_never_blocked_by_waiting_writes() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    cluster.start_secondary("s1").await;

    // Three writes that cannot complete while S2 is down.
    let mut waiting = Vec::new();
    for i in 0..3 {
        let master = cluster.master.api();
        let content = format!("waiting-{i}");
        waiting.push(tokio::spawn(async move {
            master.post_message(&write(&content, 3)).await
        }));
    }
    wait_for_len(&cluster.master, 3).await;

    // Twenty other clients at once: none of them waits on the three.
    let writes: Vec<(String, u64)> = (0..20).map(|i| (format!("free-{i}"), 1 + i % 2)).collect();
    write_all(&cluster.master, &writes, 20, Duration::from_secs(20)).await;
    let mut still_waiting = Vec::new();
    for (i, handle) in waiting.into_iter().enumerate() {
        still_waiting.push(assert_pending(&format!("waiting-{i} (w=3, S2 down)"), handle).await);
    }

    cluster.start_secondary("s2").await;
    for (i, handle) in still_waiting.into_iter().enumerate() {
        let content = format!("waiting-{i}");
        let (status, answer) = join_within(DEADLINE, "a waiting write returns", handle).await;
        assert_created(status, &answer, &content, 3);
        assert_eq!(answer["acks"], 3, "{answer}");
    }
    let log = cluster.wait_for_convergence(23).await;
    assert_well_formed(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_write_completes_when_a_killed_secondary_comes_back() {
    let mut cluster = TestCluster::start().await;
    cluster.warm_up().await;
    cluster.secondary_mut("s2").kill().await;

    let master = cluster.master.api();
    let pending = tokio::spawn(async move { master.post_message(&write("needs s2", 3)).await });
    wait_for_len(cluster.secondary("s1"), 2).await;
    let pending = assert_pending("a w=3 write while s2 is dead", pending).await;

    cluster.secondary_mut("s2").restart().await;
    let (status, answer) = join_within(DEADLINE, "the w=3 write returns", pending).await;
    assert_eq!(assert_created(status, &answer, "needs s2", 3), 2);
    assert_eq!(answer["acks"], 3, "{answer}");
    cluster.wait_for_convergence(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_whose_queue_was_deleted_while_down_catches_up_and_keeps_up() {
    let mut cluster = TestCluster::start().await;
    let first = random_writes("first", 10, 3..=3);
    let mut answers = write_all(&cluster.master, &first, 4, DEADLINE).await;

    cluster.secondary_mut("s2").kill().await;
    cluster.delete_secondary_queue("s2").await;
    // These reach s2 through no queue at all: only the master can give them back.
    let lost = random_writes("lost", 10, 1..=2);
    answers.extend(write_all(&cluster.master, &lost, 4, DEADLINE).await);

    cluster.secondary_mut("s2").restart().await;
    // And these need s2's queue to exist and be bound again.
    let later = random_writes("later", 10, 3..=3);
    answers.extend(write_all(&cluster.master, &later, 4, DEADLINE).await);

    let log = cluster.wait_for_convergence(30).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_master_in_the_same_namespace_publishes_nothing() {
    // Two masters numbering into one namespace would make the secondaries diverge: the one that
    // holds the master role publishes, the other waits for the role and says so.
    let cluster = TestCluster::start().await;
    let (status, answer) = cluster
        .master
        .post_message(&write("from the master", 3))
        .await;
    assert_created(status, &answer, "from the master", 3);
    let rival = cluster.start_rival_master().await;
    // The rival numbers from 1: its second entry would take order 2 on the secondaries, ahead
    // of the real master's, if it were ever published.
    for content in ["rival 1", "rival 2"] {
        let (status, answer) = rival.post_message(&write(content, 1)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    // Progress elsewhere proves the secondaries had every chance to receive the rival's entry.
    let (status, answer) = cluster.master.post_message(&write("later", 3)).await;
    assert_created(status, &answer, "later", 3);
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["from the master", "later"]);
    wait_until(
        DEADLINE,
        "the rival says it waits for the master role",
        || async {
            // With REPLOG_TEST_LOGS=1 the log goes to the terminal and cannot be read here.
            rival
                .log_text()
                .is_none_or(|log| log.contains("another process already runs as master"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_only_the_master_can_fill_holds_back_no_more_than_the_prefetch() {
    // s2 starts for the first time while the master is down and its queue holds entries
    // 2..=61 but not entry 1, which exists only on the master and s1. Until the master is back
    // s2 can apply nothing, and it must not take the whole queue into memory meanwhile:
    // held-back deliveries stay unacked, so the prefetch window bounds them.
    const PREFETCH: u64 = 8;
    let mut cluster = TestCluster::builder()
        .secondary_args("s2", &["--prefetch", &PREFETCH.to_string()])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let (status, first) = cluster.master.post_message(&write("first", 2)).await;
    assert_created(status, &first, "first", 2);
    let mut answers = vec![first];
    // Once the master has recorded entry 1 as confirmed it never publishes it again, so
    // deleting s2's queue takes entry 1 out of s2's reach for good.
    let confirmed = cluster.master.data_dir().join("confirmed");
    wait_until(DEADLINE, "the master records entry 1 as confirmed", || {
        let mark = std::fs::read_to_string(&confirmed).unwrap_or_default();
        async move { mark.trim().parse::<u64>().is_ok_and(|mark| mark >= 1) }
    })
    .await;
    cluster.delete_secondary_queue("s2").await;
    cluster.master.kill().await;
    cluster.master.restart().await; // declares s2's queue again, empty
    let queued = random_writes("queued", 60, 1..=2);
    answers.extend(write_all(&cluster.master, &queued, 4, DEADLINE).await);
    cluster.master.kill().await;

    cluster.start_secondary("s2").await;
    let retries = |cluster: &TestCluster| {
        cluster
            .secondary("s2")
            .log_text()
            .map(|log| log.matches("cannot reach the master for catch-up").count())
    };
    let held = wait_for(DEADLINE, "s2 holds back a full prefetch window", || {
        let s2 = cluster.secondary("s2").api();
        async move {
            let health = s2.health().await;
            match health["held_back"].as_u64() {
                Some(held) if held >= PREFETCH => Ok(held),
                _ => Err(health.to_string()),
            }
        }
    })
    .await;
    assert_eq!(held, PREFETCH, "more held back than the prefetch allows");
    // Give the consumer time it can be seen to have had: two more failed attempts to reach the
    // master (100 ms, doubling) after the window filled.
    if let Some(seen) = retries(&cluster) {
        wait_until(DEADLINE, "s2 retries the master twice more", || {
            let now = retries(&cluster);
            async move { now.is_some_and(|now| now >= seen + 2) }
        })
        .await;
    }
    let health = cluster.secondary("s2").health().await;
    assert_eq!(health["held_back"], PREFETCH, "{health}");
    assert_eq!(health["applied"], 0, "{health}");
    assert!(cluster.secondary("s2").messages().await.is_empty());

    cluster.master.restart().await;
    let later = random_writes("later", 5, 3..=3);
    answers.extend(write_all(&cluster.master, &later, 4, DEADLINE).await);
    let log = cluster.wait_for_convergence(66).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}
