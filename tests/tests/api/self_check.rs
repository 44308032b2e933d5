//! The assignment's self-check scenario, step by step: master and S1 up, S2 down; `Msg1` (w=1)
//! and `Msg2` (w=2) return; `Msg3` (w=3) waits; `Msg4` (w=1) returns meanwhile; once S2 starts
//! it catches up with all four in order, and `Msg3` returns.

use crate::helpers::{
    assert_created, assert_pending, assert_well_formed, contents, join_within, messages, post,
    wait_for_len, write, DEADLINE,
};
use replog_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn the_self_check_scenario() {
    // Master and S1 only; S2 is configured but not started.
    let mut cluster = TestCluster::builder().start_master_only().await;
    let s1 = cluster.start_secondary("s1").await;
    let master = cluster.master();

    assert_eq!(
        assert_created(&post(&master, &write("Msg1", 1)).await, "Msg1", 1).order,
        1
    );
    assert_eq!(
        assert_created(&post(&master, &write("Msg2", 2)).await, "Msg2", 2).order,
        2
    );

    let client = master.clone();
    let msg3 = tokio::spawn(async move { post(&client, &write("Msg3", 3)).await });
    // Msg3 is sequenced before Msg4 is sent, so it gets order 3.
    wait_for_len("master", &master, 3).await;

    assert_eq!(
        assert_created(&post(&master, &write("Msg4", 1)).await, "Msg4", 1).order,
        4
    );
    wait_for_len("s1", &s1, 4).await;
    let msg3 = assert_pending("Msg3 (w=3, S2 down)", msg3).await;

    let s2 = cluster.start_secondary("s2").await;
    wait_for_len("s2", &s2, 4).await;
    let on_s2 = messages(&s2).await;
    assert_eq!(contents(&on_s2), ["Msg1", "Msg2", "Msg3", "Msg4"]);
    assert_eq!(on_s2, messages(&master).await);

    let outcome = join_within(DEADLINE, "Msg3's request returns", msg3).await;
    let answer = assert_created(&outcome, "Msg3", 3);
    assert_eq!(answer.order, 3);
    assert_eq!(answer.acks, 3, "{answer:?}");
    let log = cluster.wait_for_convergence(4).await;
    assert_well_formed(&log);
}
