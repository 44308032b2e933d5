//! Durability: a node killed with SIGKILL comes back with every entry it stored, on the same data
//! directory, and the cluster goes on as if nothing happened.

use crate::helpers::{
    assert_created, assert_well_formed, contents, describe, join_within, random_writes, wait_until,
    write, write_all, TestCluster, DEADLINE,
};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_master_keeps_its_log_its_numbering_and_its_dedup_index() {
    let mut cluster = TestCluster::start().await;
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "kept", "message_id": "keep-1", "w": 3}))
        .await;
    assert_created(status, &answer, "kept", 3);
    let writes = random_writes("before", 20, 1..=3);
    write_all(&cluster.master, &writes, 4, DEADLINE).await;
    let before = cluster.wait_for_convergence(21).await;

    cluster.master.kill().await;
    // The secondaries still serve reads while the master is down.
    for id in ["s1", "s2"] {
        assert_eq!(cluster.secondary(id).messages().await, before, "{id}");
    }

    cluster.master.restart().await;
    assert_eq!(
        cluster.master.messages().await,
        before,
        "the restarted master lost or changed acknowledged entries"
    );
    let health = cluster.master.health().await;
    assert_eq!(health["last_order"], 21, "{health}");

    // The dedup index came back with the log.
    let (status, again) = cluster
        .master
        .post_message(&json!({"content": "kept", "message_id": "keep-1", "w": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["order"], 1, "{again}");

    // Numbering continues, and new writes reach every node again.
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "after"}))
        .await;
    assert_eq!(assert_created(status, &answer, "after", 3), 22);
    let writes = random_writes("after", 10, 1..=3);
    write_all(&cluster.master, &writes, 4, DEADLINE).await;
    let log = cluster.wait_for_convergence(32).await;
    assert_well_formed(&log);
    assert_eq!(&log[..21], &before[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_secondary_shows_what_it_stored_at_once() {
    let mut cluster = TestCluster::start().await;
    let writes = random_writes("stored", 15, 3..=3);
    write_all(&cluster.master, &writes, 4, DEADLINE).await;
    let before = cluster.wait_for_convergence(15).await;

    cluster.secondary_mut("s2").kill().await;
    cluster.secondary_mut("s2").restart().await;
    // Asked as soon as it listens: a node that reloads its log shows everything it acked.
    let shown = cluster.secondary("s2").messages().await;
    assert_eq!(
        contents(&shown),
        contents(&before),
        "s2 acked all 15 entries before it was killed"
    );
    let health = cluster.secondary("s2").health().await;
    assert_eq!(health["applied"], 15, "{health}");

    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "next"}))
        .await;
    assert_eq!(assert_created(status, &answer, "next", 3), 16);
    cluster.wait_for_convergence(16).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_master_crash_mid_stream() {
    let mut cluster = TestCluster::start().await;
    // Four clients write until the master dies under them.
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let master = cluster.master.api();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..500 {
                    let content = format!("c{client}-{i}");
                    let w = 1 + i % 2;
                    match master.try_post_message(&write(&content, w)).await {
                        Ok((StatusCode::CREATED, answer)) => acknowledged.push(answer),
                        Ok((status, answer)) => panic!("{content}: {status} {answer}"),
                        Err(_) => break,
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                acknowledged
            })
        })
        .collect();
    wait_until(DEADLINE, "40 writes are acknowledged", || {
        let answered = answered.clone();
        async move { answered.load(Ordering::SeqCst) >= 40 }
    })
    .await;
    cluster.master.kill().await;
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(join_within(DEADLINE, "a client stops", client).await);
    }
    assert!(
        acknowledged.len() >= 40,
        "only {} acknowledged",
        acknowledged.len()
    );

    cluster.master.restart().await;
    let log = cluster.master.messages().await;
    assert_well_formed(&log);
    for answer in &acknowledged {
        let order = answer["order"].as_u64().expect("an order") as usize;
        let entry = log.get(order - 1).unwrap_or_else(|| {
            panic!(
                "acknowledged {answer} is gone after the restart: {}",
                describe(&log)
            )
        });
        assert_eq!(entry.content, answer["content"], "{answer}");
        assert_eq!(entry.message_id, answer["message_id"], "{answer}");
    }

    // The cluster goes on: one write for every node, then every node holds the same log.
    let (status, answer) = cluster
        .master
        .post_message(&write("after the crash", 3))
        .await;
    let order = assert_created(status, &answer, "after the crash", 3);
    assert_eq!(order as usize, log.len() + 1, "{answer}");
    let converged = cluster.wait_for_convergence(log.len() + 1).await;
    assert_eq!(&converged[..log.len()], &log[..]);
}
