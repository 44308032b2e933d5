//! The broker restarts: durable queues and persistent entries survive, every node reconnects by
//! itself, writes that were waiting complete, and nothing is lost or doubled. These tests stop a
//! private RabbitMQ node of their own, never the shared one.

use crate::helpers::{
    assert_log_matches_answers, assert_well_formed, join_within, master_health, post,
    random_writes, wait_until, write, write_all, DEADLINE,
};
use replog_testkit::{BrokerOptions, PrivateBroker, TestCluster, WriteOutcome};
use std::time::Duration;

/// Long enough for a reconnect with backoff after a broker start.
const RECOVERY: Duration = Duration::from_secs(90);

async fn private_broker() -> PrivateBroker {
    PrivateBroker::start_new(BrokerOptions::default())
        .await
        .unwrap_or_else(|error| panic!("cannot start a private RabbitMQ node: {error}"))
}

async fn survives(stop_how: &str) {
    let mut broker = private_broker().await;
    let cluster = TestCluster::builder()
        .amqp_url(&broker.amqp_url())
        .start()
        .await;
    let master = cluster.master();
    let mut answers = write_all(&master, &random_writes("before", 20, 1..=3), 4, DEADLINE).await;
    cluster.wait_for_convergence(20).await;

    match stop_how {
        "stop" => broker.stop().await.expect("the broker stops"),
        "kill" => broker.kill().await.expect("the broker dies"),
        other => unreachable!("{other}"),
    }
    // With the broker gone, a w=3 write is appended and waits; w=1 still works (the master
    // alone holds it) and is not held up by it.
    let client = master.clone();
    let waiting =
        tokio::spawn(async move { post(&client, &write("waits for the broker", 3)).await });
    wait_until(DEADLINE, "the w=3 write is in the master's log", || async {
        master_health(&master).await.last_order == 21
    })
    .await;
    let alone = match post(&master, &write("master only", 1)).await {
        WriteOutcome::Created(ack) => ack,
        other => panic!("a w=1 write with the broker down: {other:?}"),
    };
    assert!(
        !waiting.is_finished(),
        "a w=3 write returned while the broker was down"
    );

    broker.start().await.expect("the broker starts again");
    let waited = match join_within(RECOVERY, "the waiting w=3 write returns", waiting).await {
        WriteOutcome::Created(ack) => ack,
        other => panic!("the waiting w=3 write: {other:?}"),
    };
    answers.push(alone);
    answers.push(waited);
    answers.extend(write_all(&master, &random_writes("after", 10, 1..=3), 4, RECOVERY).await);

    let log = cluster.wait_for_convergence(32).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_recovers_when_the_broker_is_stopped_and_started() {
    survives("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_recovers_when_the_broker_is_killed_and_started() {
    survives("kill").await;
}
