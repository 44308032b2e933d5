//! How nodes start: the one line they print on stdout, and their health right after.

use crate::helpers::{assert_created, TestCluster};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn stdout_carries_only_the_listening_line() {
    let cluster = TestCluster::start().await;
    // Some work, so that a node logging to stdout has something to say.
    let (status, answer) = cluster.master.post_message(&json!({"content": "x"})).await;
    assert_created(status, &answer, "x", 3);

    let mut offenders = Vec::new();
    offenders.push(("master", cluster.master.stray_stdout()));
    for id in ["s1", "s2"] {
        offenders.push((id, cluster.secondary(id).stray_stdout()));
    }
    for (name, lines) in offenders {
        assert!(
            lines.is_empty(),
            "{name} must print exactly one stdout line, `listening on http://127.0.0.1:PORT`, \
             and log to stderr; it also printed (before_listening, line): {lines:#?}"
        );
    }
}
