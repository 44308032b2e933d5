//! What the master knows of its secondaries: heartbeats and node states (`healthy`,
//! `suspected`, `unhealthy`) on `/health`, quorum append (read-only without a quorum, writable
//! again by itself), incarnations (a secondary that lost its data no longer counts for what it
//! held), and reports the master must not believe (a second process with the same id, a
//! position beyond the log, a payload without an incarnation).
//!
//! Every cluster here runs with short thresholds ([`TestClusterBuilder::fast_heartbeats`]):
//! heartbeats every 100 ms, suspected after 500 ms of silence, unhealthy after 1500 ms.

use crate::helpers::{
    assert_created, assert_duplicate, assert_timed_out, master_health, messages, post,
    secondary_in, wait_for_health, wait_for_status, wait_until, wait_until_all_healthy, write,
    write_with_id, DEADLINE,
};
use replog_common::wire::AckMessage;
use replog_common::{Incarnation, NodeId};
use replog_testkit::{
    free_port, MasterHealth, NodeClient, RawResponse, SecondaryStatus, TestCluster, Write,
    FAST_HEARTBEAT_MS, FAST_SUSPECT_AFTER_MS, FAST_UNHEALTHY_AFTER_MS,
};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A cluster of master, s1 and s2 with short thresholds, every secondary healthy.
async fn fast_cluster(master_args: &[&str]) -> TestCluster {
    let cluster = TestCluster::builder()
        .fast_heartbeats()
        .master_args(master_args)
        .start()
        .await;
    wait_until_all_healthy(&cluster.master()).await;
    cluster
}

/// How often `needle` appears in the master's log.
fn master_log_count(cluster: &TestCluster, needle: &str) -> usize {
    cluster.master_node().log_text().matches(needle).count()
}

/// The incarnation the master shows for `id`; unknown fails the test.
async fn incarnation_of(master: &NodeClient, id: &str) -> String {
    let health = master_health(master).await;
    secondary_in(&health, id)
        .incarnation
        .unwrap_or_else(|| panic!("the master knows no incarnation of {id}: {health:?}"))
}

/// The incarnation kept in a data directory.
fn incarnation_in(data_dir: &Path) -> String {
    let path = data_dir.join("INCARNATION");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
        .trim()
        .to_owned()
}

/// A report as secondary `id` of data directory `incarnation` would send it now.
fn report(id: &str, incarnation: &str, applied: u64, master: Option<&str>) -> AckMessage {
    AckMessage {
        id: NodeId::parse(id).expect("a valid id"),
        incarnation: incarnation.parse::<Incarnation>().expect("a UUID"),
        applied,
        sent_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64,
        master_incarnation: master.map(|raw| raw.parse().expect("a UUID")),
    }
}

/// A write the master must refuse while read-only.
async fn post_raw_write(master: &NodeClient, content: &str) -> RawResponse {
    let body = json!({"content": content, "w": 1}).to_string();
    master
        .post_raw(body, Some("application/json"))
        .await
        .expect("the master answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_secondary_is_suspected_then_unhealthy_and_healthy_again_once_restarted() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    let first = assert_created(&post(&master, &write("before", 3)).await, "before", 3);
    let incarnation = incarnation_of(&master, "s2").await;

    cluster.kill("s2").await;
    let suspected = wait_for_status(&master, "s2", SecondaryStatus::SUSPECTED).await;
    let silence = suspected.last_seen_ms.expect("s2 was heard from");
    assert!(silence >= FAST_SUSPECT_AFTER_MS, "{suspected:?}");
    assert_eq!((suspected.acked, suspected.lag), (first.order, 0));
    let health = master_health(&master).await;
    assert_eq!(health.status, MasterHealth::DEGRADED, "{health:?}");
    assert!(health.writable, "{health:?}");

    let unhealthy = wait_for_status(&master, "s2", SecondaryStatus::UNHEALTHY).await;
    assert!(
        unhealthy.last_seen_ms.expect("s2 was heard from") >= FAST_UNHEALTHY_AFTER_MS,
        "{unhealthy:?}"
    );
    // A down secondary keeps its last position: it stored those entries durably.
    assert_eq!(unhealthy.acked, first.order, "{unhealthy:?}");
    let health = master_health(&master).await;
    assert_eq!(
        (
            health.quorum.nodes,
            health.quorum.needed,
            health.quorum.healthy
        ),
        (3, 2, 2),
        "{health:?}"
    );
    assert!(health.writable, "master and s1 are a majority: {health:?}");
    assert_eq!(health.status, MasterHealth::DEGRADED, "{health:?}");
    assert_eq!(
        secondary_in(&health, "s1").status,
        SecondaryStatus::HEALTHY,
        "{health:?}"
    );

    cluster.restart("s2").await;
    let healthy = wait_for_status(&master, "s2", SecondaryStatus::HEALTHY).await;
    assert_eq!(
        healthy.incarnation.as_deref(),
        Some(incarnation.as_str()),
        "same data directory, same incarnation"
    );
    assert!(
        healthy.last_seen_ms.expect("just heard") < FAST_SUSPECT_AFTER_MS,
        "{healthy:?}"
    );
    wait_until_all_healthy(&master).await;

    // Each transition is logged once, with its evidence.
    assert_eq!(master_log_count(&cluster, "secondary s2 is suspected"), 1);
    assert_eq!(master_log_count(&cluster, "secondary s2 is unhealthy"), 1);
    assert_eq!(master_log_count(&cluster, "secondary s1 is suspected"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_secondary_is_suspected_then_unhealthy_and_healthy_again_once_thawed() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    assert_created(&post(&master, &write("before", 3)).await, "before", 3);

    cluster
        .node_mut("s1")
        .freeze()
        .expect("s1 stops with SIGSTOP");
    wait_for_status(&master, "s1", SecondaryStatus::SUSPECTED).await;
    let unhealthy = wait_for_status(&master, "s1", SecondaryStatus::UNHEALTHY).await;
    assert_eq!(unhealthy.acked, 1, "{unhealthy:?}");

    cluster
        .node_mut("s1")
        .thaw()
        .expect("s1 goes on with SIGCONT");
    wait_for_status(&master, "s1", SecondaryStatus::HEALTHY).await;
    wait_until_all_healthy(&master).await;
    let after = assert_created(&post(&master, &write("after", 3)).await, "after", 3);
    assert_eq!(after.acks, 3, "{after:?}");
    assert_eq!(master_log_count(&cluster, "secondary s1 is unhealthy"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_are_not_delayed_with_the_entries() {
    let delay = Duration::from_millis(2000);
    let cluster = TestCluster::builder()
        .fast_heartbeats()
        .secondary_args("s2", &["--delay-ms", &delay.as_millis().to_string()])
        .start()
        .await;
    let master = cluster.master();
    wait_until_all_healthy(&master).await;

    let started = Instant::now();
    let client = master.clone();
    let slow = tokio::spawn(async move { post(&client, &write("slow", 3)).await });
    // All the while s2 holds the entry back, its heartbeats keep it healthy.
    let mut looks = 0;
    while !slow.is_finished() {
        let health = master_health(&master).await;
        assert_eq!(
            secondary_in(&health, "s2").status,
            SecondaryStatus::HEALTHY,
            "s2's heartbeats waited with its entries: {health:?}"
        );
        looks += 1;
        tokio::time::sleep(Duration::from_millis(FAST_HEARTBEAT_MS)).await;
    }
    assert!(started.elapsed() >= delay, "the write did not wait for s2");
    assert!(looks >= 10, "only {looks} looks at /health");
    let answer = assert_created(&slow.await.expect("the write task"), "slow", 3);
    assert_eq!(answer.acks, 3, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_quorum_the_master_is_read_only_and_writable_again_by_itself() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    let ready = master.get_raw("/ready").await.expect("/ready answers");
    assert_eq!(
        (ready.status, ready.json()),
        (200, Ok(json!({"status": "ready"})))
    );
    let held = write_with_id("held before", "held-1", 3);
    assert_created(&post(&master, &held).await, "held before", 3);

    cluster.kill("s1").await;
    cluster.kill("s2").await;
    let health = wait_for_health(&master, "the master turns read-only", |health| {
        !health.writable
    })
    .await;
    assert_eq!(health.status, MasterHealth::READ_ONLY, "{health:?}");
    assert_eq!(
        (
            health.quorum.nodes,
            health.quorum.needed,
            health.quorum.healthy
        ),
        (3, 2, 1),
        "{health:?}"
    );
    let before = messages(&master).await;

    let refused = post_raw_write(&master, "refused").await;
    let error = "read-only: no quorum (1 of 3 nodes healthy, 2 needed)";
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.json(),
        Ok(json!({"error": error, "healthy": 1, "needed": 2}))
    );
    assert_eq!(refused.retry_after.as_deref(), Some("1"), "{refused:?}");
    assert_eq!(messages(&master).await, before, "a refused write appended");
    // A retry of a write the log holds is answered as usual; the down secondaries keep the
    // positions they acked.
    let retried = assert_duplicate(&post(&master, &held).await);
    assert_eq!((retried.order, retried.acks), (1, 3), "{retried:?}");
    let not_ready = master.get_raw("/ready").await.expect("/ready answers");
    assert_eq!(
        (not_ready.status, not_ready.json()),
        (503, Ok(json!({"error": error})))
    );
    // Reads keep working.
    assert_eq!(messages(&master).await, before);

    cluster.restart("s1").await;
    let health = wait_for_health(&master, "the master is writable again", |health| {
        health.writable
    })
    .await;
    assert_eq!(
        health.status,
        MasterHealth::DEGRADED,
        "s2 is still down: {health:?}"
    );
    let after = assert_created(&post(&master, &write("after", 2)).await, "after", 2);
    assert_eq!(after.order, 2, "{after:?}");
    let ready = master.get_raw("/ready").await.expect("/ready answers");
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(
        master_log_count(&cluster, "read-only: no quorum (1 of 3"),
        1
    );
    assert_eq!(master_log_count(&cluster, "writable again"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_quorum_off_the_master_stays_writable() {
    let mut cluster = fast_cluster(&["--quorum", "off"]).await;
    let master = cluster.master();
    cluster.kill("s1").await;
    cluster.kill("s2").await;
    wait_for_status(&master, "s1", SecondaryStatus::UNHEALTHY).await;
    wait_for_status(&master, "s2", SecondaryStatus::UNHEALTHY).await;
    let health = master_health(&master).await;
    assert!(health.writable, "{health:?}");
    assert_eq!(health.status, MasterHealth::DEGRADED, "{health:?}");
    assert_eq!(
        (health.quorum.needed, health.quorum.healthy),
        (0, 1),
        "{health:?}"
    );
    let alone = assert_created(&post(&master, &write("alone", 1)).await, "alone", 1);
    assert_eq!(alone.acks, 1, "{alone:?}");
    let ready = master.get_raw("/ready").await.expect("/ready answers");
    assert_eq!(ready.status, 200, "{ready:?}");
}

/// The issue's first scenario, exactly: a secondary that lost its data and cannot catch up
/// must not count for the entries its old incarnation held.
#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_that_lost_its_data_counts_again_only_once_it_rebuilt() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    let keep = Write {
        content: "keep me".into(),
        w: Some(3),
        message_id: Some("m1".into()),
        timeout_ms: None,
    };
    let first = assert_created(&post(&master, &keep).await, "keep me", 3);
    assert_eq!(first.acks, 3, "{first:?}");
    let old = incarnation_of(&master, "s2").await;

    // s2 loses its disk and comes back unable to reach the master, so it cannot catch up.
    cluster.kill("s2").await;
    cluster.wipe_state("s2");
    let master_url = master.url().to_owned();
    let nowhere = format!("http://127.0.0.1:{}", free_port().expect("a free port"));
    cluster.node_mut("s2").set_flag("--master-url", nowhere);
    cluster.restart("s2").await;
    let s2 = cluster.secondary("s2");
    let health = wait_for_health(&master, "the master sees s2's new incarnation", |health| {
        let s2 = secondary_in(health, "s2");
        s2.incarnation.is_some() && s2.incarnation.as_deref() != Some(old.as_str())
    })
    .await;
    let renewed = secondary_in(&health, "s2");
    assert_eq!((renewed.acked, renewed.lag), (0, 1), "{renewed:?}");
    assert!(messages(&s2).await.is_empty(), "s2 must hold nothing");

    let retry = Write {
        timeout_ms: Some(1500),
        ..keep.clone()
    };
    let timed_out = assert_timed_out(&post(&master, &retry).await);
    assert_eq!(
        (timed_out.order, timed_out.acks),
        (first.order, 2),
        "only the master and s1 hold m1: {timed_out:?}"
    );
    assert!(messages(&s2).await.is_empty(), "s2 still holds nothing");
    assert_eq!(
        master_log_count(&cluster, "secondary s2 is a new incarnation"),
        1
    );

    // Given its master back, s2 rebuilds, and the retry is answered with acks 3.
    cluster.node_mut("s2").set_flag("--master-url", master_url);
    cluster.restart("s2").await;
    let answer = assert_duplicate(&post(&master, &keep).await);
    assert_eq!((answer.order, answer.acks), (first.order, 3), "{answer:?}");
    let s2 = cluster.secondary("s2");
    assert_eq!(messages(&s2).await, messages(&master).await);
    let health = master_health(&master).await;
    assert_eq!(
        secondary_in(&health, "s2").incarnation,
        renewed.incarnation,
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_with_the_same_id_reports_nothing() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    let original = incarnation_of(&master, "s1").await;
    let twin = cluster.start_twin_secondary("s1").await;
    let twin_incarnation = incarnation_in(&twin.data_dir().expect("the twin's --data-dir"));
    assert_ne!(twin_incarnation, original);
    wait_until(
        DEADLINE,
        "the twin is refused the role secondary.s1",
        || async {
            twin.log_text()
                .contains("another process already runs as secondary.s1")
        },
    )
    .await;

    // For twenty heartbeats the master hears only the original.
    let window = Duration::from_millis(20 * FAST_HEARTBEAT_MS);
    let started = Instant::now();
    while started.elapsed() < window {
        let health = master_health(&master).await;
        let s1 = secondary_in(&health, "s1");
        assert_eq!(
            s1.incarnation.as_deref(),
            Some(original.as_str()),
            "the twin's reports reached the master: {health:?}"
        );
        assert_eq!(s1.status, SecondaryStatus::HEALTHY, "{health:?}");
        tokio::time::sleep(Duration::from_millis(FAST_HEARTBEAT_MS / 2)).await;
    }
    assert!(twin.is_running(), "the twin must still run");
    assert!(twin
        .log_text()
        .contains("not reporting: this process does not hold the role"));

    // Once the original is gone, the twin takes the role and the master sees it: the window
    // above could have shown it.
    cluster.kill("s1").await;
    wait_for_health(&master, "the master hears the twin as s1", |health| {
        secondary_in(health, "s1").incarnation.as_deref() == Some(twin_incarnation.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_beyond_the_log_are_ignored_unless_this_master_published_them() {
    let mut cluster = fast_cluster(&[]).await;
    let master = cluster.master();
    assert_created(&post(&master, &write("one", 3)).await, "one", 3);
    let s2 = incarnation_of(&master, "s2").await;
    cluster.kill("s2").await;

    // Forged: s2's incarnation, a position the log never reached, no master incarnation or
    // another master's. Then a report without an incarnation (a secondary older than them),
    // whose log line says the ones before it were read.
    let another_master = Incarnation::random().to_string();
    cluster
        .publish_to_acks(&report("s2", &s2, 1_000_000, None).encode())
        .await;
    cluster
        .publish_to_acks(&report("s2", &s2, 1_000_001, Some(&another_master)).encode())
        .await;
    cluster
        .publish_to_acks(br#"{"id":"s2","applied":1000002}"#)
        .await;
    wait_until(DEADLINE, "the master read the forged reports", || async {
        master_log_count(&cluster, "dropping a malformed ack") == 1
    })
    .await;
    assert_eq!(
        master_log_count(
            &cluster,
            "ignoring a report of s2 at 1000000, beyond the log's end 1"
        ),
        1,
        "the first is logged"
    );
    assert_eq!(
        master_log_count(&cluster, "ignoring a report of s2"),
        1,
        "the second is rate-limited"
    );
    let health = master_health(&master).await;
    assert_eq!(secondary_in(&health, "s2").acked, 1, "{health:?}");
    assert!(health.writable, "{health:?}");

    // A w=3 write that s2 does not hold still waits for it.
    let mut late = write("s2 never saw this", 3);
    late.timeout_ms = Some(1000);
    let timed_out = assert_timed_out(&post(&master, &late).await);
    assert_eq!((timed_out.order, timed_out.acks), (2, 2), "{timed_out:?}");

    // The same position, reported as published by this very master, proves its log lost
    // entries: the fence goes up and new writes are refused.
    let this_master = incarnation_in(&cluster.master_node().data_dir().expect("--data-dir"));
    let s1 = incarnation_of(&master, "s1").await;
    cluster
        .publish_to_acks(&report("s1", &s1, 50, Some(&this_master)).encode())
        .await;
    let health = wait_for_health(&master, "the master fences itself", |health| {
        !health.writable
    })
    .await;
    assert_eq!(health.status, MasterHealth::READ_ONLY, "{health:?}");
    let refused = post_raw_write(&master, "refused").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let error = refused.json().expect("a JSON error")["error"]
        .as_str()
        .expect("an error text")
        .to_owned();
    assert!(
        error.starts_with("read-only: the log ends at 2 but secondary s1 shows entries up to 50"),
        "{error}"
    );
    assert_eq!(messages(&master).await.len(), 2);
}
