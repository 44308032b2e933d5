//! Partitioned logs: two independent logs (each its own master and secondaries, in a broker
//! namespace of its own) share one broker as the two partitions of one keyspace, and a client
//! routes each write by `partition_of(key, 2)`. Each log holds exactly the writes routed to it,
//! each once, and keeps the order of each key's writes; nothing leaks from one log into the
//! other. There is no order between the logs, and nothing here asserts one.

use crate::helpers::{assert_created, assert_well_formed, post, write, DEADLINE};
use futures_util::future::join_all;
use replog_common::partition::partition_of;
use replog_testkit::{NodeClient, TestCluster, WriteAck};
use std::collections::{BTreeMap, BTreeSet};

/// Partitions of the keyspace.
const PARTITIONS: usize = 2;

/// The content of a key's `seq`-th write: the key and its sequence number, so the log says
/// which key wrote it and in which order the client sent it.
fn content(key: &str, seq: usize) -> String {
    format!("{key}#{seq}")
}

/// Sends `count` writes of `key`, one after another, to the master of the key's partition.
async fn write_key(masters: Vec<NodeClient>, key: String, count: usize) -> Vec<(usize, WriteAck)> {
    let partition = partition_of(&key, masters.len());
    let mut answers = Vec::new();
    for seq in 0..count {
        let content = content(&key, seq);
        let outcome = post(&masters[partition], &write(&content, 3)).await;
        answers.push((partition, assert_created(&outcome, &content, 3)));
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn two_logs_on_one_broker_each_hold_exactly_their_keys_writes_in_key_order() {
    // Same secondary ids in both: only the namespace keeps their queues apart.
    let logs = [TestCluster::start().await, TestCluster::start().await];
    assert_ne!(logs[0].namespace(), logs[1].namespace());
    let masters: Vec<NodeClient> = logs.iter().map(TestCluster::master).collect();

    // Sixteen keys, each written four times in sequence by a client of its own, all at once.
    let keys: Vec<String> = (0..16).map(|i| format!("user-{i}")).collect();
    let per_key = 4;
    let clients = keys
        .iter()
        .map(|key| tokio::spawn(write_key(masters.clone(), key.clone(), per_key)));
    let answers: Vec<(usize, WriteAck)> = tokio::time::timeout(DEADLINE, join_all(clients))
        .await
        .expect("every write is answered in time")
        .into_iter()
        .flat_map(|task| task.expect("a client task"))
        .collect();

    // What each log must hold: the writes routed to it, and nothing else.
    let mut routed: Vec<BTreeSet<String>> = vec![BTreeSet::new(); PARTITIONS];
    for key in &keys {
        for seq in 0..per_key {
            routed[partition_of(key, PARTITIONS)].insert(content(key, seq));
        }
    }
    assert!(
        routed.iter().all(|writes| !writes.is_empty()),
        "the keys must fall into both partitions for the test to mean anything: {routed:?}"
    );

    for (partition, log) in logs.iter().enumerate() {
        let entries = log.wait_for_convergence(routed[partition].len()).await;
        assert_well_formed(&entries);
        let held: Vec<&str> = entries.iter().map(|e| e.content.as_str()).collect();
        let held_set: BTreeSet<String> = held.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            held_set.len(),
            held.len(),
            "log {partition} holds a write twice"
        );
        assert_eq!(
            held_set, routed[partition],
            "log {partition} must hold exactly the writes routed to it"
        );
        // Each key's writes in the order its client sent them.
        let mut seqs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for content in &held {
            let (key, seq) = content.split_once('#').expect("key#seq");
            seqs.entry(key)
                .or_default()
                .push(seq.parse().expect("a number"));
        }
        for (key, seqs) in &seqs {
            assert_eq!(
                seqs,
                &(0..per_key).collect::<Vec<_>>(),
                "log {partition}: {key}'s writes out of order"
            );
        }
        // Every answer names its entry in the log it was routed to.
        for (routed_to, answer) in answers.iter().filter(|(p, _)| *p == partition) {
            let entry = &entries[answer.order as usize - 1];
            assert_eq!(
                (&entry.content, &entry.message_id),
                (&answer.content, &answer.message_id),
                "log {routed_to}, order {}",
                answer.order
            );
        }
    }
}
