//! `--linger-ms`: entries no write waits for gather before they are published, and nothing else
//! waits for the linger. A replicated write (`w >= 2`) publishes at once, a full run goes at
//! once, and a stopping master publishes what lingers before it exits. Each test sets a linger
//! far longer than it could wait, so a publish it sees cannot have come from the linger running
//! out; and it checks that the secondaries got the entries through their queues, not by
//! fetching them from the master (the safety net a secondary uses after 3 s without progress).

use crate::helpers::{
    assert_created, describe, messages, post, wait_for, wait_until, warm_up, write, DEADLINE,
};
use replog_testkit::{NodeClient, TestCluster, Write};
use std::time::Duration;

/// Longer than any of these tests waits, and than a secondary's stuck check (3 s).
const LONG_LINGER: &str = "10000";

/// How many catch-up pages `secondary` has fetched from the master (failed fetches, such as
/// those at a stopped master, bring nothing and are not counted).
async fn fetched_pages(secondary: &NodeClient) -> u64 {
    let metrics = secondary
        .get_raw("/metrics")
        .await
        .unwrap_or_else(|error| panic!("GET /metrics on {}: {error}", secondary.url()));
    metrics
        .body
        .lines()
        .filter(|line| line.starts_with("replog_catchup_fetches_total{outcome=\"ok\"}"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until every secondary of `cluster` shows `len` entries.
async fn wait_for_secondaries(cluster: &TestCluster, len: usize) {
    for id in ["s1", "s2"] {
        let node = cluster.secondary(id);
        let what = format!("{id} shows {len} entries");
        wait_for(DEADLINE, &what, || {
            let node = node.clone();
            async move {
                let shown = messages(&node).await;
                if shown.len() >= len {
                    Ok(())
                } else {
                    Err(describe(&shown))
                }
            }
        })
        .await;
    }
}

/// A cluster whose master lingers for [`LONG_LINGER`] (and takes `extra` flags), warmed up,
/// with the catch-up pages its secondaries fetched so far.
async fn start_lingering(extra: &[&str]) -> (TestCluster, Vec<u64>) {
    let mut args = vec!["--linger-ms", LONG_LINGER];
    args.extend_from_slice(extra);
    let cluster = TestCluster::builder().master_args(&args).start().await;
    warm_up(&cluster).await;
    let fetched = fetches(&cluster).await;
    (cluster, fetched)
}

/// Waits until both secondaries show `len` entries, and checks that they fetched no page from
/// the master since `fetched` was counted: `what` came through their queues.
async fn assert_delivered_through_queues(
    cluster: &TestCluster,
    len: usize,
    fetched: &[u64],
    what: &str,
) {
    wait_for_secondaries(cluster, len).await;
    assert_eq!(
        fetches(cluster).await,
        fetched,
        "{what} reached the secondaries by a fetch from the master, not through their queues"
    );
}

/// The catch-up pages each secondary fetched so far, once each has finished its start-up
/// catch-up (which may still be paging after the warm-up write returned).
async fn fetches(cluster: &TestCluster) -> Vec<u64> {
    for id in ["s1", "s2"] {
        let what = format!("{id} finished its start-up catch-up");
        wait_until(DEADLINE, &what, || async move {
            cluster
                .secondary_node(id)
                .log_text()
                .contains("start-up catch-up from the master done")
        })
        .await;
    }
    let mut counts = Vec::new();
    for id in ["s1", "s2"] {
        counts.push(fetched_pages(&cluster.secondary(id)).await);
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_write_publishes_at_once_with_what_lingered_before_it() {
    let (cluster, fetched) = start_lingering(&[]).await;
    let master = cluster.master();

    // Nobody waits for this one: it lingers.
    assert_created(&post(&master, &write("unhurried", 1)).await, "unhurried", 1);
    // This one waits for both secondaries, for less than the linger: it cannot linger.
    let hurried = Write {
        timeout_ms: Some(8000),
        ..write("hurried", 3)
    };
    let answer = assert_created(&post(&master, &hurried).await, "hurried", 3);
    assert_eq!(answer.acks, 3, "{answer:?}");

    // The entry before it went out in the same publish.
    assert_delivered_through_queues(&cluster, 3, &fetched, "the entries").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_is_published_without_waiting_for_the_linger() {
    let (cluster, fetched) = start_lingering(&["--run-entries", "4"]).await;
    let master = cluster.master();

    for index in 0..4 {
        let content = format!("calm {index}");
        assert_created(&post(&master, &write(&content, 1)).await, &content, 1);
    }
    assert_delivered_through_queues(&cluster, 5, &fetched, "the full run").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_master_publishes_what_lingers() {
    let (mut cluster, fetched) = start_lingering(&[]).await;
    let master = cluster.master();

    assert_created(
        &post(&master, &write("last words", 1)).await,
        "last words",
        1,
    );
    let status = cluster
        .node_mut("master")
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    // The master is gone: only its queue can bring the entry.
    assert_delivered_through_queues(&cluster, 2, &fetched, "the entry").await;
    let log = messages(&cluster.secondary("s1")).await;
    assert_eq!(log[1].content, "last words", "{}", describe(&log));
}
