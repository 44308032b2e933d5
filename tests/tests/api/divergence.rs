//! Divergence: a secondary offered an entry at an order it already holds, with another
//! message_id, refuses it, says `diverged` on `/health` and `/ready`, logs both ids, and applies
//! nothing more until it is restarted. And what a secondary's `/health` and `/ready` report
//! while it works normally.

use crate::helpers::{
    assert_created, assert_timed_out, messages, post, wait_for, warm_up, write, write_with_id,
    DEADLINE,
};
use replog_common::wire::EntryMessage;
use replog_testkit::{NodeClient, SecondaryHealth, TestCluster, Write};

/// Polls `node`'s `/health` until `check` accepts it, and returns it.
async fn wait_for_health(
    node: &NodeClient,
    what: &str,
    check: impl Fn(&SecondaryHealth) -> bool,
) -> SecondaryHealth {
    wait_for(DEADLINE, what, || async {
        let health = node.secondary_health().await.map_err(|e| e.to_string())?;
        if check(&health) {
            Ok(health)
        } else {
            Err(format!("{health:?}"))
        }
    })
    .await
}

/// `GET /ready`, which must answer `200` or `503`.
async fn ready(node: &NodeClient) -> Result<(), String> {
    node.ready()
        .await
        .unwrap_or_else(|error| panic!("GET /ready on {}: {error}", node.url()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_entry_at_a_held_order_is_refused_and_the_secondary_diverges() {
    let mut cluster = TestCluster::start().await;
    let master = cluster.master();
    let mut held = Vec::new();
    for content in ["one", "two", "three"] {
        held.push(assert_created(
            &post(&master, &write(content, 3)).await,
            content,
            3,
        ));
    }
    for id in ["s1", "s2"] {
        let node = cluster.secondary(id);
        assert_eq!(ready(&node).await, Ok(()), "{id} before the forgery");
        let health = node.secondary_health().await.unwrap();
        assert_eq!(health.status, "ok", "{health:?}");
    }

    // An entry the master never numbered, at an order both secondaries hold.
    let forged = EntryMessage {
        message_id: "forged \"two\"".into(),
        order: 2,
        content: "forged".into(),
        master_incarnation: None,
    };
    cluster
        .publish_raw_entry(&serde_json::to_vec(&forged).unwrap())
        .await;

    for id in ["s1", "s2"] {
        let node = cluster.secondary(id);
        let health = wait_for_health(&node, &format!("{id} reports diverged"), |h| {
            h.status == "diverged"
        })
        .await;
        assert_eq!(health.applied, 3, "{health:?}");
        let why = ready(&node)
            .await
            .expect_err("a diverged node is not ready");
        assert!(why.starts_with("diverged: at order 2"), "{why}");
        assert!(why.contains(&format!("{:?}", held[1].message_id)), "{why}");
        assert!(why.contains(r#""forged \"two\"""#), "{why}");
        // It keeps serving what it stored: the master's entries, not the forgery.
        let shown: Vec<String> = messages(&node)
            .await
            .into_iter()
            .map(|e| e.message_id)
            .collect();
        let expected: Vec<String> = held.iter().map(|a| a.message_id.clone()).collect();
        assert_eq!(shown, expected, "{id}");
        // The error names both ids as quoted fields, with the evidence event for the checker.
        let log = std::fs::read_to_string(cluster.secondary_node(id).log_path()).unwrap();
        let line = log
            .lines()
            .find(|line| line.contains(r#"event="diverged""#))
            .unwrap_or_else(|| panic!("{id} logged no divergence:\n{log}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("order=2"), "{line}");
        assert!(
            line.contains(&format!("held={:?}", held[1].message_id)),
            "{line}"
        );
        assert!(line.contains(r#"offered="forged \"two\"""#), "{line}");
    }

    // Nothing more is applied: a write for two nodes finds no secondary to hold it.
    let late = Write {
        timeout_ms: Some(1500),
        ..write_with_id("four", "four", 2)
    };
    let answer = assert_timed_out(&post(&master, &late).await);
    assert_eq!((answer.order, answer.acks), (4, 1), "{answer:?}");
    for id in ["s1", "s2"] {
        let health = cluster.secondary(id).secondary_health().await.unwrap();
        assert_eq!(
            (health.status.as_str(), health.applied),
            ("diverged", 3),
            "{health:?}"
        );
    }

    // A restart clears the state. The conflicting delivery was rejected without requeue, so it
    // does not come back; the entry the diverged node left unsettled does, and is applied.
    cluster.restart("s1").await;
    let s1 = cluster.secondary("s1");
    let health = wait_for_health(&s1, "s1 applies entry 4 after its restart", |h| {
        h.applied == 4
    })
    .await;
    assert_eq!(health.status, "ok", "{health:?}");
    let shown = messages(&s1).await;
    assert_eq!(shown[1].message_id, held[1].message_id);
    assert_eq!(shown[3].message_id, "four");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_reports_its_incarnation_its_master_and_its_broker() {
    let mut cluster = TestCluster::start().await;
    warm_up(&cluster).await;
    let s1 = cluster.secondary("s1");
    let health = wait_for_health(&s1, "s1 has reached the master", |h| {
        h.master == "reachable"
    })
    .await;
    assert_eq!(health.status, "ok", "{health:?}");
    assert!(health.broker.connected, "{health:?}");
    let incarnation = health.incarnation.clone();
    assert_eq!(incarnation.len(), 36, "a UUID: {health:?}");
    assert_eq!(ready(&s1).await, Ok(()));

    // Without its master it still serves and consumes, so it stays ready; its next look at the
    // master (the idle check) finds it gone.
    cluster.kill("master").await;
    wait_for_health(&s1, "s1 sees the master unreachable", |h| {
        h.master == "unreachable"
    })
    .await;
    assert_eq!(ready(&s1).await, Ok(()));
    cluster.restart("master").await;
    wait_for_health(&s1, "s1 sees the master again", |h| h.master == "reachable").await;

    // The incarnation belongs to the data directory: kept across a restart, new once wiped.
    cluster.restart("s1").await;
    let s1 = cluster.secondary("s1");
    let health = s1.secondary_health().await.unwrap();
    assert_eq!(health.incarnation, incarnation, "{health:?}");
    cluster.kill("s1").await;
    cluster.wipe_state("s1");
    cluster.restart("s1").await;
    let health = cluster.secondary("s1").secondary_health().await.unwrap();
    assert_ne!(health.incarnation, incarnation, "{health:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_far_behind_the_master_is_not_ready_until_it_has_caught_up() {
    // s2 joins late: it learns the master's end from its first catch-up page, and holds that
    // page back for --delay-ms, so for a while it is consuming but more than its prefetch
    // behind.
    let mut cluster = TestCluster::builder()
        .secondary_args("s2", &["--prefetch", "5", "--delay-ms", "3000"])
        .start_master_only()
        .await;
    cluster.start_secondary("s1").await;
    let master = cluster.master();
    for n in 0..20 {
        let content = format!("e{n}");
        assert_created(&post(&master, &write(&content, 1)).await, &content, 1);
    }
    let s2 = cluster.start_secondary("s2").await;
    let why = wait_for(DEADLINE, "s2 is not ready while catching up", || async {
        match ready(&s2).await {
            Err(why) if why.starts_with("catching up") => Ok(why),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(why.contains("of the master's 20"), "{why}");
    assert!(why.contains("prefetch of 5"), "{why}");
    wait_for(DEADLINE, "s2 is ready once caught up", || async {
        ready(&s2).await
    })
    .await;
    let health = s2.secondary_health().await.unwrap();
    assert_eq!(health.applied, 20, "{health:?}");
}
