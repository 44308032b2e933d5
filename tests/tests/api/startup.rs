//! How nodes start: the one line they print on stdout, and their health reports.

use crate::helpers::{acked_by, assert_created, master_health, post, write_default};
use replog_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn stdout_carries_only_the_listening_line() {
    let cluster = TestCluster::start().await;
    // Some work, so that a node logging to stdout has something to say.
    let outcome = post(&cluster.master(), &write_default("x")).await;
    assert_created(&outcome, "x", 3);

    let mut offenders = Vec::new();
    offenders.push(("master", cluster.master_node().stray_stdout()));
    for id in ["s1", "s2"] {
        offenders.push((id, cluster.secondary_node(id).stray_stdout()));
    }
    for (name, lines) in offenders {
        assert!(
            lines.is_empty(),
            "{name} must print exactly one stdout line, `listening on http://127.0.0.1:PORT`, \
             and log to stderr; it also printed: {lines:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_role_and_progress() {
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let health = master_health(&master).await;
    // Secondaries not heard from yet are `suspected`: the master is writable but `degraded`
    // until their first heartbeats arrive.
    assert!(
        ["ok", "degraded"].contains(&health.status.as_str()),
        "{health:?}"
    );
    assert!(health.writable, "{health:?}");
    assert_eq!(health.role, "master", "{health:?}");
    assert_eq!(health.last_order, 0, "{health:?}");

    for content in ["a", "b"] {
        assert_created(&post(&master, &write_default(content)).await, content, 3);
    }

    let health = master_health(&master).await;
    assert_eq!(health.last_order, 2, "{health:?}");
    assert_eq!(
        health.status, "ok",
        "both secondaries acked the writes, so both were heard from: {health:?}"
    );
    assert_eq!(
        acked_by(&health),
        [("s1".to_owned(), 2), ("s2".to_owned(), 2)],
        "both writes waited for every node, so both secondaries have acked them: {health:?}"
    );
    for id in ["s1", "s2"] {
        let health = cluster
            .secondary(id)
            .secondary_health()
            .await
            .unwrap_or_else(|error| panic!("{id}'s health: {error}"));
        assert_eq!(health.status, "ok", "{health:?}");
        assert_eq!(health.role, "secondary", "{health:?}");
        assert_eq!(health.id, id, "{health:?}");
        assert_eq!(health.applied, 2, "{health:?}");
    }
}
