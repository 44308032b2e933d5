//! Many secondaries: a master with eight. `w=9` needs every one of them and is answered with
//! `acks: 9` for writes from several clients at once, and every node ends with the same log;
//! `w=2` needs only the fastest secondary and is never held up by a slow one among the eight.

use crate::helpers::{
    assert_answer_in_log, assert_orders_rise, assert_pending, assert_well_formed, join_within,
    master_health, post, wait_for_len, write, DEADLINE,
};
use replog_testkit::{NodeClient, TestCluster, WriteAck, WriteOutcome};

/// The eight secondaries.
const EIGHT: [&str; 8] = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];

/// The master plus eight secondaries.
const NODES: u64 = 9;

/// Asserts a `201 Created` for `content` with write concern `w` in a nine-node cluster, with
/// `acks` between `w` and 9, and returns the answer.
fn created(outcome: &WriteOutcome, content: &str, w: u64) -> WriteAck {
    let WriteOutcome::Created(ack) = outcome else {
        panic!("writing {content:?} with w={w}: expected 201 Created, got {outcome:?}");
    };
    assert_eq!((ack.content.as_str(), ack.w), (content, w), "{ack:?}");
    assert!(
        (w..=NODES).contains(&ack.acks),
        "acks must be from w={w} to {NODES}: {ack:?}"
    );
    ack.clone()
}

/// `count` writes one after another from one client, each with write concern `w`.
async fn one_client(master: NodeClient, client: usize, count: usize, w: u64) -> Vec<WriteAck> {
    let mut answers = Vec::new();
    for i in 0..count {
        let content = format!("client{client}-{i}");
        answers.push(created(
            &post(&master, &write(&content, w)).await,
            &content,
            w,
        ));
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_secondaries_acknowledge_w9_writes_from_concurrent_clients_and_converge() {
    let cluster = TestCluster::builder().secondaries(&EIGHT).start().await;
    let master = cluster.master();
    let warm_up = created(&post(&master, &write("warm-up", NODES)).await, "warm-up", 9);
    assert_eq!(warm_up.acks, NODES, "{warm_up:?}");

    // Four clients, ten sequential w=9 writes each, all four at once.
    let (clients, per_client) = (4, 10);
    let tasks: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(one_client(master.clone(), client, per_client, NODES)))
        .collect();
    let mut answers = vec![warm_up];
    for (client, task) in tasks.into_iter().enumerate() {
        let what = format!("client {client}'s w=9 writes are answered");
        let mine = join_within(DEADLINE, &what, task).await;
        // A client's next write is numbered after its previous one was answered.
        assert_orders_rise(&mine);
        for answer in &mine {
            assert_eq!(
                answer.acks, NODES,
                "every node holds a w=9 write: {answer:?}"
            );
        }
        answers.extend(mine);
    }

    let written = 1 + clients * per_client;
    let log = cluster.wait_for_convergence(written).await;
    assert_well_formed(&log);
    for answer in &answers {
        assert_answer_in_log(&log, answer);
    }
    let health = master_health(&master).await;
    assert_eq!(health.secondaries.len(), EIGHT.len(), "{health:?}");
    assert!(
        health
            .secondaries
            .iter()
            .all(|secondary| secondary.acked == written as u64),
        "every secondary acknowledged all {written} entries: {health:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_w2_write_is_not_held_up_by_a_slow_secondary_among_eight() {
    // s8 makes each entry visible (and acknowledges it) two seconds after it arrives.
    let slow_ms = 2000;
    let cluster = TestCluster::builder()
        .secondaries(&EIGHT)
        .secondary_args("s8", &["--delay-ms", &slow_ms.to_string()])
        .start()
        .await;
    let master = cluster.master();
    let warm_up = created(&post(&master, &write("warm-up", NODES)).await, "warm-up", 9);
    assert_eq!(warm_up.acks, NODES, "{warm_up:?}");

    // A w=9 write waits for s8; it is numbered first.
    let waiting = {
        let master = master.clone();
        tokio::spawn(async move { post(&master, &write("needs-s8", NODES)).await })
    };
    wait_for_len("master", &master, 2).await;

    // w=2 writes numbered after it return while it still waits. s8 applies in order, so a w=2
    // write that had waited for s8 would have let the w=9 write finish first.
    let quick = one_client(master.clone(), 0, 10, 2).await;
    let waiting = assert_pending("the w=9 write (s8 is slow)", waiting).await;
    assert_orders_rise(&quick);
    assert!(quick.iter().all(|answer| answer.order > 2), "{quick:?}");

    let done = join_within(DEADLINE, "the w=9 write returns", waiting).await;
    let done = created(&done, "needs-s8", NODES);
    assert_eq!((done.order, done.acks), (2, NODES), "{done:?}");
    let log = cluster.wait_for_convergence(12).await;
    assert_well_formed(&log);
    for answer in quick.iter().chain([&warm_up, &done]) {
        assert_answer_in_log(&log, answer);
    }
}
