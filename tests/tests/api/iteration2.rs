//! Iteration 2: write concern. A write with a small `w` returns while a slow secondary does not
//! show the entry yet (temporary inconsistency, visible), and every node still ends with the
//! same log in the same order. Retries with the same `message_id`, and with `--dedup content`
//! equal contents, add nothing.

use crate::helpers::{
    assert_created, assert_log_matches_answers, assert_well_formed, contents, describe,
    join_within, wait_until, write, write_all, TestCluster, DEADLINE,
};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// Long enough that a read issued right after a write's answer surely lands inside it, even on
/// a loaded two-core CI machine. Each test below first makes a warm-up write for every node, so
/// that the entry under test reaches s2 through its queue, where the delay applies, and not
/// through s2's start-up catch-up from the master (see
/// `iteration3::a_late_secondary_delays_what_it_fetches_too`).
const SLOW: &str = "3000";

#[tokio::test(flavor = "multi_thread")]
async fn w1_returns_while_a_delayed_secondary_does_not_show_the_entry() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", SLOW])
        .start()
        .await;

    cluster.warm_up().await;

    let (status, answer) = cluster.master.post_message(&write("early", 1)).await;
    let on_s2 = cluster.secondary("s2").messages().await;
    assert_created(status, &answer, "early", 1);
    assert_eq!(
        contents(&on_s2),
        ["warm-up"],
        "a w=1 write waited for the delayed s2: s2 already shows it"
    );
    assert_eq!(
        contents(&cluster.master.messages().await),
        ["warm-up", "early"]
    );

    // Eventually consistent: the delay passes and s2 catches up.
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(log[1].message_id, answer["message_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn w2_returns_once_one_secondary_has_the_entry() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", SLOW])
        .start()
        .await;

    cluster.warm_up().await;

    let (status, answer) = cluster.master.post_message(&write("two", 2)).await;
    let on_s1 = cluster.secondary("s1").messages().await;
    let on_s2 = cluster.secondary("s2").messages().await;
    assert_created(status, &answer, "two", 2);
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
async fn a_retried_message_id_answers_200_duplicate_and_adds_nothing() {
    let cluster = TestCluster::start().await;
    let first = json!({"content": "a", "message_id": "m-1", "w": 3});
    let (status, answer) = cluster.master.post_message(&first).await;
    assert_created(status, &answer, "a", 3);
    assert_eq!(answer["message_id"], "m-1", "{answer}");

    let (status, again) = cluster.master.post_message(&first).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["message_id"], "m-1", "{again}");
    assert_eq!(again["order"], 1, "{again}");
    assert_eq!(again["content"], "a", "{again}");

    // The id decides, not the content: the existing entry comes back unchanged.
    let changed = json!({"content": "changed", "message_id": "m-1", "w": 1});
    let (status, again) = cluster.master.post_message(&changed).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["content"], "a", "{again}");
    assert_eq!(again["order"], 1, "{again}");

    // The duplicates took no place in the log.
    let (status, answer) = cluster.master.post_message(&write("b", 3)).await;
    assert_eq!(assert_created(status, &answer, "b", 3), 2, "{answer}");
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["a", "b"]);
    assert_eq!(log[0].message_id, "m-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_answers_only_once_its_requested_w_holds() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    cluster.start_secondary("s1").await;

    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "d", "message_id": "d-1", "w": 1}))
        .await;
    assert_created(status, &answer, "d", 1);

    // The same id again, now asking for every node while s2 is down: it must wait.
    let master = cluster.master.api();
    let retry = tokio::spawn(async move {
        master
            .post_message(&json!({"content": "d", "message_id": "d-1", "w": 3}))
            .await
    });
    // Progress elsewhere: a later write completes and s1 shows both entries.
    let (status, answer) = cluster.master.post_message(&write("later", 2)).await;
    assert_created(status, &answer, "later", 2);
    let s1 = cluster.secondary("s1");
    wait_until(DEADLINE, "s1 shows both entries", || async move {
        s1.messages().await.len() == 2
    })
    .await;
    if retry.is_finished() {
        let outcome = retry.await;
        panic!("the w=3 retry of d-1 returned while s2 was down: {outcome:?}");
    }

    cluster.start_secondary("s2").await;
    let (status, again) = join_within(DEADLINE, "the w=3 retry returns", retry).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["order"], 1, "{again}");
    assert_eq!(again["acks"], 3, "{again}");
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(contents(&log), ["d", "later"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_equal_contents_are_separate_entries() {
    let cluster = TestCluster::builder().start_master_only().await;
    let (status, one) = cluster.master.post_message(&write("same", 1)).await;
    assert_eq!(assert_created(status, &one, "same", 1), 1);
    let (status, two) = cluster.master.post_message(&write("same", 1)).await;
    assert_eq!(assert_created(status, &two, "same", 1), 2);
    assert_ne!(one["message_id"], two["message_id"]);
    assert_eq!(contents(&cluster.master.messages().await), ["same", "same"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_content_folds_equal_contents_into_one_entry() {
    let cluster = TestCluster::builder()
        .master_args(&["--dedup", "content"])
        .start_master_only()
        .await;
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "same", "message_id": "a", "w": 1}))
        .await;
    assert_created(status, &answer, "same", 1);

    for retry in [
        json!({"content": "same", "message_id": "b", "w": 1}),
        json!({"content": "same", "w": 1}),
    ] {
        let (status, again) = cluster.master.post_message(&retry).await;
        assert_eq!(status, StatusCode::OK, "{retry} answered {again}");
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(again["message_id"], "a", "{again}");
        assert_eq!(again["order"], 1, "{again}");
    }
    let (status, answer) = cluster.master.post_message(&write("other", 1)).await;
    assert_eq!(assert_created(status, &answer, "other", 1), 2);
    let log = cluster.master.messages().await;
    assert_eq!(contents(&log), ["same", "other"]);
    assert_eq!(log[0].message_id, "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_lists_one_total_order() {
    // s1 delays what it shows, so entries are in flight on it side by side while writes go on.
    let cluster = TestCluster::builder()
        .secondary_args("s1", &["--delay-ms", "200"])
        .start()
        .await;
    let clients = ["left", "right"].map(|name| {
        let master = cluster.master.api();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..15 {
                let content = format!("{name}-{i}");
                let w = 1 + i % 2;
                let (status, answer) = master.post_message(&write(&content, w)).await;
                assert_created(status, &answer, &content, w);
                answers.push(answer);
            }
            answers
        })
    });
    let mut answers = Vec::new();
    for client in clients {
        let mine = join_within(DEADLINE, "a client's 15 writes", client).await;
        // One client's writes were sequential, so their orders must rise.
        let orders: Vec<u64> = mine.iter().map(|a| a["order"].as_u64().unwrap()).collect();
        assert!(
            orders.windows(2).all(|pair| pair[0] < pair[1]),
            "{orders:?}"
        );
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
    let answers = write_all(&cluster.master, &writes, 10, DEADLINE).await;
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
async fn concurrent_retries_of_one_message_id_make_one_entry() {
    let cluster = TestCluster::start().await;
    let body = json!({"content": "once", "message_id": "race-1", "w": 2});
    let requests = (0..10).map(|_| cluster.master.post_message(&body));
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .expect("ten retries return");
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created, 1,
        "exactly one retry creates the entry: {answers:?}"
    );
    for (status, answer) in &answers {
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::OK && answer["duplicate"] == true),
            "{status} {answer}"
        );
        assert_eq!(answer["order"], 1, "{answer}");
        assert_eq!(answer["message_id"], "race-1", "{answer}");
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
        let body = json!({"content": "same", "message_id": format!("id-{i}"), "w": 2});
        let master = cluster.master.api();
        async move { master.post_message(&body).await }
    });
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests))
        .await
        .expect("ten writes return");
    let created: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let winner = &created[0].1["message_id"];
    for (status, answer) in &answers {
        assert!(
            status.is_success() && answer["order"] == 1 && answer["message_id"] == *winner,
            "every answer names the one entry: {status} {answer}"
        );
    }
    let log = cluster.wait_for_convergence(1).await;
    assert_eq!(contents(&log), ["same"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_w_sets_the_write_concern_of_writes_that_name_none() {
    let mut cluster = TestCluster::builder()
        .master_args(&["--default-w", "1"])
        .start_master_only()
        .await;
    // No secondary is running, so only w=1 can return.
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "fast"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["w"], 1, "{answer}");
    assert_eq!(answer["acks"], 1, "{answer}");

    // A request's own w still wins.
    let master = cluster.master.api();
    let strict = tokio::spawn(async move { master.post_message(&write("strict", 2)).await });
    let master = &cluster.master;
    wait_until(
        DEADLINE,
        "the master sequences the w=2 write",
        || async move { master.messages().await.len() == 2 },
    )
    .await;
    if strict.is_finished() {
        let outcome = strict.await;
        panic!("a w=2 write returned with no secondary running: {outcome:?}");
    }
    cluster.start_secondary("s1").await;
    let (status, answer) = join_within(DEADLINE, "the w=2 write returns", strict).await;
    assert_created(status, &answer, "strict", 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_string_content_reaches_every_node_unchanged() {
    let cluster = TestCluster::start().await;
    let samples = [
        String::new(),
        "héllo ✓ 😀 — 日本語".to_owned(),
        "line\nbreak\t\"quoted\" \\ back\\slash {\"json\": true}".to_owned(),
        "\u{0}nul and \u{7f} controls".to_owned(),
        "x".repeat(600 * 1024),
    ];
    for content in &samples {
        let (status, answer) = cluster.master.post_message(&write(content, 3)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["content"].as_str(), Some(content.as_str()));
    }
    let log = cluster.wait_for_convergence(samples.len()).await;
    assert_eq!(
        contents(&log),
        samples.iter().map(String::as_str).collect::<Vec<_>>()
    );
}
