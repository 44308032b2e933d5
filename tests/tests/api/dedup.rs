//! Deduplication. On the master: a retry with the same `message_id` answers `200` with the
//! existing entry and adds nothing, even when retries race; with `--dedup content` equal
//! contents fold into one entry; by default they do not. On the secondaries: deliveries the
//! broker redelivers (forced with `--fail-rate`, on quorum and classic queues) are applied once.

use crate::helpers::{
    assert_created, assert_duplicate, assert_log_matches_answers, assert_well_formed, contents,
    join_within, messages, post, random_writes, wait_until, write, write_all, write_with_id,
    DEADLINE,
};
use replog_testkit::{TestCluster, WriteOutcome};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_message_id_answers_200_duplicate_and_adds_nothing() {
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let first = write_with_id("a", "m-1", 3);
    let answer = assert_created(&post(&master, &first).await, "a", 3);
    assert_eq!(answer.message_id, "m-1", "{answer:?}");

    let again = assert_duplicate(&post(&master, &first).await);
    assert_eq!(again.message_id, "m-1", "{again:?}");
    assert_eq!(again.order, 1, "{again:?}");
    assert_eq!(again.content, "a", "{again:?}");

    // The id decides, not the content: the existing entry comes back unchanged.
    let changed = write_with_id("changed", "m-1", 1);
    let again = assert_duplicate(&post(&master, &changed).await);
    assert_eq!(again.content, "a", "{again:?}");
    assert_eq!(again.order, 1, "{again:?}");

    // The duplicates took no place in the log.
    let answer = assert_created(&post(&master, &write("b", 3)).await, "b", 3);
    assert_eq!(answer.order, 2, "{answer:?}");
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["a", "b"]);
    assert_eq!(log[0].message_id, "m-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_answers_only_once_its_requested_w_holds() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    let s1 = cluster.start_secondary("s1").await;
    let master = cluster.master();

    assert_created(&post(&master, &write_with_id("d", "d-1", 1)).await, "d", 1);

    // The same id again, now asking for every node while s2 is down: it must wait.
    let client = master.clone();
    let retry = tokio::spawn(async move { post(&client, &write_with_id("d", "d-1", 3)).await });
    // Progress elsewhere: a later write completes and s1 shows both entries.
    assert_created(&post(&master, &write("later", 2)).await, "later", 2);
    let s1 = &s1;
    wait_until(DEADLINE, "s1 shows both entries", || async move {
        messages(s1).await.len() == 2
    })
    .await;
    if retry.is_finished() {
        let outcome = retry.await;
        panic!("the w=3 retry of d-1 returned while s2 was down: {outcome:?}");
    }

    cluster.start_secondary("s2").await;
    let outcome = join_within(DEADLINE, "the w=3 retry returns", retry).await;
    let again = assert_duplicate(&outcome);
    assert_eq!(again.order, 1, "{again:?}");
    assert_eq!(again.acks, 3, "{again:?}");
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["d", "later"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_equal_contents_are_separate_entries() {
    let cluster = TestCluster::builder().start_master_only().await;
    let master = cluster.master();
    let one = assert_created(&post(&master, &write("same", 1)).await, "same", 1);
    assert_eq!(one.order, 1);
    let two = assert_created(&post(&master, &write("same", 1)).await, "same", 1);
    assert_eq!(two.order, 2);
    assert_ne!(one.message_id, two.message_id);
    assert_eq!(contents(&messages(&master).await), ["same", "same"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_content_folds_equal_contents_into_one_entry() {
    let cluster = TestCluster::builder()
        .master_args(&["--dedup", "content"])
        .start_master_only()
        .await;
    let master = cluster.master();
    assert_created(
        &post(&master, &write_with_id("same", "a", 1)).await,
        "same",
        1,
    );

    for retry in [write_with_id("same", "b", 1), write("same", 1)] {
        let outcome = post(&master, &retry).await;
        let again = assert_duplicate(&outcome);
        assert_eq!(again.message_id, "a", "{retry:?} answered {again:?}");
        assert_eq!(again.order, 1, "{again:?}");
    }
    let answer = assert_created(&post(&master, &write("other", 1)).await, "other", 1);
    assert_eq!(answer.order, 2);
    let log = messages(&master).await;
    assert_eq!(contents(&log), ["same", "other"]);
    assert_eq!(log[0].message_id, "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_of_one_message_id_make_one_entry() {
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let body = write_with_id("once", "race-1", 2);
    let requests = (0..10).map(|_| post(&master, &body));
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .expect("ten retries return");
    let created = answers
        .iter()
        .filter(|outcome| matches!(outcome, WriteOutcome::Created(_)))
        .count();
    assert_eq!(
        created, 1,
        "exactly one retry creates the entry: {answers:?}"
    );
    for outcome in &answers {
        let answer = match outcome {
            WriteOutcome::Created(ack) => ack,
            WriteOutcome::Duplicate(ack) if ack.duplicate => ack,
            other => panic!("{other:?}"),
        };
        assert_eq!(answer.order, 1, "{answer:?}");
        assert_eq!(answer.message_id, "race-1", "{answer:?}");
    }
    let log = cluster.wait_for_convergence(1).await;
    assert_eq!(log[0].message_id, "race-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_equal_contents_make_one_entry_under_dedup_content() {
    let cluster = TestCluster::builder()
        .master_args(&["--dedup", "content"])
        .start()
        .await;
    let requests = (0..10).map(|i| {
        let body = write_with_id("same", &format!("id-{i}"), 2);
        let master = cluster.master();
        async move { post(&master, &body).await }
    });
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .expect("ten writes return");
    let created: Vec<_> = answers
        .iter()
        .filter_map(|outcome| match outcome {
            WriteOutcome::Created(ack) => Some(ack),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let winner = &created[0].message_id;
    for outcome in &answers {
        let named_one_entry = match outcome {
            WriteOutcome::Created(ack) | WriteOutcome::Duplicate(ack) => {
                ack.order == 1 && ack.message_id == *winner
            }
            _ => false,
        };
        assert!(
            named_one_entry,
            "every answer names the one entry: {outcome:?}"
        );
    }
    let log = cluster.wait_for_convergence(1).await;
    assert_eq!(contents(&log), ["same"]);
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
    let answers = write_all(&cluster.master(), &writes, 16, Duration::from_secs(120)).await;
    let log = cluster.wait_for_convergence(n).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
    cluster.wait_for_acks(n as u64).await;
    for id in ["s1", "s2"] {
        let health = cluster
            .secondary(id)
            .secondary_health()
            .await
            .unwrap_or_else(|error| panic!("{id}'s health: {error}"));
        assert_eq!(health.applied, n as u64, "{health:?}");
        // The API cannot show a redelivery, so the log is the one witness that `--fail-rate`
        // took effect and this test exercised redeliveries at all.
        let log = cluster.secondary_node(id).log_text();
        assert!(
            log.to_lowercase().contains("nack"),
            "{id} ran with --fail-rate 0.3 over {n} entries but its log mentions no nack"
        );
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
