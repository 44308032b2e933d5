//! Durability: a node killed with SIGKILL comes back with every entry it stored, on the same data
//! directory, and the cluster goes on as if nothing happened.

use crate::helpers::{
    assert_answer_in_log, assert_created, assert_duplicate, assert_well_formed, contents,
    join_within, master_health, messages, post, random_writes, wait_until, write, write_all,
    write_default, write_with_id, DEADLINE,
};
use replog_testkit::{TestCluster, WriteOutcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_master_keeps_its_log_its_numbering_and_its_dedup_index() {
    let mut cluster = TestCluster::start().await;
    let master = cluster.master();
    let kept = write_with_id("kept", "keep-1", 3);
    assert_created(&post(&master, &kept).await, "kept", 3);
    let writes = random_writes("before", 20, 1..=3);
    write_all(&master, &writes, 4, DEADLINE).await;
    let before = cluster.wait_for_convergence(21).await;

    cluster.kill("master").await;
    // The secondaries still serve reads while the master is down.
    for id in ["s1", "s2"] {
        assert_eq!(messages(&cluster.secondary(id)).await, before, "{id}");
    }

    cluster.restart("master").await;
    assert_eq!(
        messages(&master).await,
        before,
        "the restarted master lost or changed acknowledged entries"
    );
    let health = master_health(&master).await;
    assert_eq!(health.last_order, 21, "{health:?}");

    // The dedup index came back with the log.
    let again = assert_duplicate(&post(&master, &kept).await);
    assert_eq!(again.order, 1, "{again:?}");

    // Numbering continues, and new writes reach every node again.
    let answer = assert_created(&post(&master, &write_default("after")).await, "after", 3);
    assert_eq!(answer.order, 22);
    let writes = random_writes("after", 10, 1..=3);
    write_all(&master, &writes, 4, DEADLINE).await;
    let log = cluster.wait_for_convergence(32).await;
    assert_well_formed(&log);
    assert_eq!(&log[..21], &before[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_secondary_shows_what_it_stored_at_once() {
    let mut cluster = TestCluster::start().await;
    let master = cluster.master();
    let writes = random_writes("stored", 15, 3..=3);
    write_all(&master, &writes, 4, DEADLINE).await;
    let before = cluster.wait_for_convergence(15).await;

    cluster.kill("s2").await;
    cluster.restart("s2").await;
    // Asked as soon as it listens: a node that reloads its log shows everything it acked.
    let s2 = cluster.secondary("s2");
    let shown = messages(&s2).await;
    assert_eq!(
        contents(&shown),
        contents(&before),
        "s2 acked all 15 entries before it was killed"
    );
    let health = s2.secondary_health().await.expect("s2's health");
    assert_eq!(health.applied, 15, "{health:?}");

    let answer = assert_created(&post(&master, &write_default("next")).await, "next", 3);
    assert_eq!(answer.order, 16);
    cluster.wait_for_convergence(16).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_master_crash_mid_stream() {
    let mut cluster = TestCluster::start().await;
    let master = cluster.master();
    // Four clients write until the master dies under them.
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let master = master.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..500 {
                    let content = format!("c{client}-{i}");
                    let w = 1 + i % 2;
                    match master.post_message(&write(&content, w)).await {
                        Ok(WriteOutcome::Created(answer)) => acknowledged.push(answer),
                        Ok(other) => panic!("{content}: {other:?}"),
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
    cluster.kill("master").await;
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(join_within(DEADLINE, "a client stops", client).await);
    }
    assert!(
        acknowledged.len() >= 40,
        "only {} acknowledged",
        acknowledged.len()
    );

    cluster.restart("master").await;
    let log = messages(&master).await;
    assert_well_formed(&log);
    // Each acknowledged entry is still there after the restart, at its order.
    for answer in &acknowledged {
        assert_answer_in_log(&log, answer);
    }

    // The cluster goes on: one write for every node, then every node holds the same log.
    let outcome = post(&master, &write("after the crash", 3)).await;
    let answer = assert_created(&outcome, "after the crash", 3);
    assert_eq!(answer.order as usize, log.len() + 1, "{answer:?}");
    let converged = cluster.wait_for_convergence(log.len() + 1).await;
    assert_eq!(&converged[..log.len()], &log[..]);
}
