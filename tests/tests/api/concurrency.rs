//! Clients never wait on one another: while some writes wait for a write concern that cannot be
//! met yet, every other client is answered at once.

use crate::helpers::{
    assert_created, assert_pending, assert_well_formed, join_within, post, wait_for_len, write,
    write_all, DEADLINE,
};
use replog_testkit::TestCluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn parallel_clients_are_never_blocked_by_waiting_writes() {
    let mut cluster = TestCluster::builder().start_master_only().await;
    cluster.start_secondary("s1").await;
    let master = cluster.master();

    // Three writes that cannot complete while S2 is down.
    let mut waiting = Vec::new();
    for i in 0..3 {
        let master = master.clone();
        let content = format!("waiting-{i}");
        waiting.push(tokio::spawn(async move {
            post(&master, &write(&content, 3)).await
        }));
    }
    wait_for_len("master", &master, 3).await;

    // Twenty other clients at once: none of them waits on the three.
    let writes: Vec<(String, u64)> = (0..20).map(|i| (format!("free-{i}"), 1 + i % 2)).collect();
    write_all(&master, &writes, 20, Duration::from_secs(20)).await;
    let mut still_waiting = Vec::new();
    for (i, handle) in waiting.into_iter().enumerate() {
        still_waiting.push(assert_pending(&format!("waiting-{i} (w=3, S2 down)"), handle).await);
    }

    cluster.start_secondary("s2").await;
    for (i, handle) in still_waiting.into_iter().enumerate() {
        let content = format!("waiting-{i}");
        let outcome = join_within(DEADLINE, "a waiting write returns", handle).await;
        let answer = assert_created(&outcome, &content, 3);
        assert_eq!(answer.acks, 3, "{answer:?}");
    }
    let log = cluster.wait_for_convergence(23).await;
    assert_well_formed(&log);
}
