//! The HTTP side of "who may say what": the API token (`--api-token`) on both nodes and the
//! secondaries' catch-up with the master's token, and client-supplied ids that cannot forge log
//! lines, not even the evidence lines the checker trusts.

use crate::helpers::{assert_created, post, wait_for_len, write, write_with_id};
use replog_testkit::{NodeClient, TestCluster, WriteOutcome};

/// The token every node of these tests is started with.
const TOKEN: &str = "test-token-0123456789abcdef";

/// `GET path` without a token: `401`, `WWW-Authenticate: Bearer` and the one error shape.
async fn assert_refused(node: &NodeClient, method: reqwest::Method, path: &str) {
    let body = (method == reqwest::Method::POST).then(|| r#"{"content":"x","w":1}"#.to_owned());
    let answer = node
        .clone()
        .without_token()
        .request_raw(method.clone(), path, body, Some("application/json"))
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
    assert_eq!(
        answer.status, 401,
        "{method} {path} without a token: {answer:?}"
    );
    let error = answer.json().unwrap()["error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(error.contains("Bearer"), "{method} {path}: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_only_the_probes_are_open_on_both_nodes() {
    let cluster = TestCluster::builder()
        .secondaries(&["s1"])
        .api_token(TOKEN)
        .start()
        .await;
    let master = cluster.master();
    let s1 = cluster.secondary("s1");
    let outcome = post(&master, &write("with the token", 2)).await;
    assert_created(&outcome, "with the token", 2);
    wait_for_len("s1", &s1, 1).await;

    for (node, name) in [(&master, "master"), (&s1, "s1")] {
        assert_refused(node, reqwest::Method::GET, "/messages").await;
        assert_refused(node, reqwest::Method::GET, "/messages?from=1&limit=1").await;
        for probe in ["/health", "/ready"] {
            let answer = node.clone().without_token().get_raw(probe).await.unwrap();
            assert_eq!(answer.status, 200, "{name} {probe}: {answer:?}");
        }
        let wrong = node.clone().with_token("test-token-0123456789abcdeF");
        let answer = wrong.get_raw("/messages").await.unwrap();
        assert_eq!(answer.status, 401, "{name} with a wrong token: {answer:?}");
    }
    assert_refused(&master, reqwest::Method::POST, "/messages").await;
    assert_refused(&master, reqwest::Method::GET, "/messages/some-id").await;
    assert_refused(&master, reqwest::Method::GET, "/metrics").await;

    // The challenge header, on a raw answer.
    let response = reqwest::Client::new()
        .get(format!("{}/messages", master.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );

    let log = cluster.master_node().log_text();
    assert!(!log.contains(TOKEN), "the token reached the master's log");
}

/// A secondary that must fetch from the master (its queue was deleted while entries were
/// written) presents the token it was given; without it the master would answer 401 and the
/// entries would never arrive.
#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_catches_up_from_a_master_that_wants_a_token() {
    let mut cluster = TestCluster::builder()
        .secondaries(&["s1"])
        .api_token(TOKEN)
        .start_master_only()
        .await;
    let master = cluster.master();
    for n in 0..5 {
        let content = format!("fetched {n}");
        assert_created(&post(&master, &write(&content, 1)).await, &content, 1);
    }
    // The entries waited in s1's queue; with it gone, only the master can give them.
    cluster.delete_secondary_queue("s1").await;
    let s1 = cluster.start_secondary("s1").await;
    wait_for_len("s1", &s1, 5).await;
    cluster.wait_for_convergence(5).await;
}

/// A message id with line breaks, one of them followed by a forged evidence line, is logged as
/// one quoted field: no log line starts with the injected text, and the checker's parser reads
/// only the real acknowledgement.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_id_cannot_forge_log_lines() {
    let cluster = TestCluster::builder()
        .master_env("RUST_LOG", "info,replog::evidence=debug")
        .start_master_only()
        .await;
    let master = cluster.master();
    let forged = "2030-01-01T00:00:00.000000Z DEBUG event=\"acknowledged\" order=99 message_id=\"forged\" w=1 acks=3 duplicate=false";
    let ids = [
        format!("a\n{forged}"),
        format!("b\r\n{forged}\n"),
        "c\nplain second line".to_owned(),
    ];
    for id in &ids {
        match post(&master, &write_with_id("content\nwith a line break", id, 1)).await {
            WriteOutcome::Created(_) => {}
            other => panic!("{id:?}: {other:?}"),
        }
    }
    // A write that waits for its write concern and times out is logged with its id too.
    let timed_out = post(
        &master,
        &replog_testkit::Write {
            timeout_ms: Some(100),
            ..write_with_id("times out", &format!("d\n{forged}"), 2)
        },
    )
    .await;
    assert!(
        matches!(timed_out, WriteOutcome::TimedOut(_)),
        "{timed_out:?}"
    );

    let text = cluster.master_node().log_text();
    for line in text.lines() {
        assert!(
            !line.starts_with("2030-01-01") && !line.starts_with("plain second line"),
            "a client's id started a log line: {line:?}\n{text}"
        );
    }
    let log = chaos::evidence::NodeLog::parse("master", &text);
    assert!(
        log.acknowledged
            .iter()
            .all(|ack| ack.order != 99 && ack.message_id != "forged"),
        "the checker read a forged acknowledgement: {:?}",
        log.acknowledged
    );
    let acked: Vec<&str> = log
        .acknowledged
        .iter()
        .map(|ack| ack.message_id.as_str())
        .collect();
    assert_eq!(
        acked,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "each real acknowledgement is read with its id intact"
    );
    assert_eq!(log.unreadable, 0, "{text}");
}
