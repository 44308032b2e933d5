//! Iteration 1: blocking replication. With the default write concern (every node) a write
//! returns only once every secondary holds the entry; a secondary slowed by `--delay-ms` proves
//! that the master really waits for it.

use crate::helpers::{acked_by, assert_created, contents, TestCluster};
use replog_common::wire::EntryMessage;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_default_write_returns_only_once_the_delayed_secondary_shows_it() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "1500"])
        .start()
        .await;

    let mut expected = Vec::new();
    for (index, content) in ["hello", "again"].into_iter().enumerate() {
        let started = Instant::now();
        let (status, answer) = cluster
            .master
            .post_message(&json!({ "content": content }))
            .await;
        let took = started.elapsed();
        // Asked first, before anything else can pass: at the moment the answer arrived, s2
        // had to show the entry already.
        let on_s2 = cluster.secondary("s2").messages().await;

        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["w"], 3, "the default w is every node: {answer}");
        assert_eq!(answer["acks"], 3, "{answer}");
        assert_eq!(answer["order"], index + 1, "{answer}");
        expected.push(EntryMessage {
            message_id: answer["message_id"].as_str().expect("an id").to_owned(),
            order: index as u64 + 1,
            content: content.into(),
        });
        assert_eq!(
            on_s2, expected,
            "{content:?} returned after {took:?} but the delayed s2 did not show it yet"
        );
        // The first write may race s2's start-up catch-up from the master, which (see
        // iteration3::a_late_secondary_delays_what_it_fetches_too) can skip the delay; the
        // second one surely travels through s2's queue, so it cannot return before the delay.
        if index == 1 {
            assert!(
                took >= Duration::from_millis(1400),
                "{content:?} returned after {took:?}, before s2's 1500 ms delay could pass"
            );
        }
    }
    for node in cluster.running_nodes() {
        assert_eq!(node.messages().await, expected, "{}", node.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_default_write_waits_for_both_delayed_secondaries() {
    let cluster = TestCluster::builder()
        .secondary_args("s1", &["--delay-ms", "300"])
        .secondary_args("s2", &["--delay-ms", "600"])
        .start()
        .await;
    for (index, content) in ["one", "two", "three"].into_iter().enumerate() {
        let (status, answer) = cluster
            .master
            .post_message(&json!({"content": content}))
            .await;
        let on_s1 = cluster.secondary("s1").messages().await;
        let on_s2 = cluster.secondary("s2").messages().await;
        let order = assert_created(status, &answer, content, 3);
        assert_eq!(order, index as u64 + 1, "{answer}");
        assert_eq!(answer["acks"], 3, "{answer}");
        for (id, shown) in [("s1", on_s1), ("s2", on_s2)] {
            assert_eq!(
                shown.last().map(|e| e.content.as_str()),
                Some(content),
                "{content:?} returned before {id} showed it: {}",
                crate::helpers::describe(&shown)
            );
            assert_eq!(shown.len(), index + 1, "{id}");
        }
    }
    let log = cluster.wait_for_convergence(3).await;
    assert_eq!(contents(&log), ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_role_and_progress() {
    let cluster = TestCluster::start().await;
    let health = cluster.master.health().await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["role"], "master", "{health}");
    assert_eq!(health["last_order"], 0, "{health}");

    for content in ["a", "b"] {
        let (status, answer) = cluster
            .master
            .post_message(&json!({"content": content}))
            .await;
        assert_created(status, &answer, content, 3);
    }

    let health = cluster.master.health().await;
    assert_eq!(health["last_order"], 2, "{health}");
    assert_eq!(
        acked_by(&health),
        [("s1".to_owned(), 2), ("s2".to_owned(), 2)],
        "both writes waited for every node, so both secondaries have acked them: {health}"
    );
    for id in ["s1", "s2"] {
        let health = cluster.secondary(id).health().await;
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["role"], "secondary", "{health}");
        assert_eq!(health["id"], id, "{health}");
        assert_eq!(health["applied"], 2, "{health}");
    }
}
