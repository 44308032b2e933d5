//! Bad input over real HTTP: the exact status, a JSON `{"error": "..."}` body, and no entry added.
//! Accepted body encodings and the body size limit live here too.
//!
//! Most of these tests start the master alone: validation must not depend on any secondary, and
//! every valid write there uses `w: 1`. Malformed bodies go through testkit's raw requests; the
//! last tests check that what is accepted (any string content, the longest id) replicates
//! unchanged.

use crate::helpers::{
    assert_created, contents, master_health, messages, post, write, write_with_id,
};
use replog_testkit::{NodeClient, TestCluster, Write, WriteOutcome};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A body as the API receives it from a client that builds JSON by hand.
fn body_of(write: &Write) -> String {
    serde_json::to_string(write).expect("a write serialises")
}

/// Sends `method path` with an optional body and `Content-Type`; the answer must be JSON.
async fn raw(
    node: &NodeClient,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    let what = format!("{method} {path} on {}", node.url());
    let answer = node
        .request_raw(method, path, body, content_type)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let status = StatusCode::from_u16(answer.status).expect("a valid status");
    let body = answer
        .json()
        .unwrap_or_else(|error| panic!("{what} answered {error}"));
    (status, body)
}

/// `POST /messages` with any body and any (or no) `Content-Type`.
async fn post_raw(
    node: &NodeClient,
    body: String,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    raw(
        node,
        reqwest::Method::POST,
        "/messages",
        Some(body),
        content_type,
    )
    .await
}

/// Sends each body and expects `400` with a JSON error; then checks the log is still empty.
async fn assert_all_rejected(cluster: &TestCluster, cases: &[(&str, String)]) {
    for (label, body) in cases {
        let (status, answer) =
            post_raw(&cluster.master(), body.clone(), Some("application/json")).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{label}: body {body:?} answered {answer}"
        );
        assert_error_body(label, &answer);
    }
    assert_log_empty(cluster).await;
}

/// Every error is `{"error": "<non-empty text>"}`.
fn assert_error_body(label: &str, answer: &Value) {
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{label}: the error body must be {{\"error\": \"...\"}}, got {answer}"
    );
}

/// No refused request may leave an entry behind.
async fn assert_log_empty(cluster: &TestCluster) {
    let entries = messages(&cluster.master()).await;
    assert!(entries.is_empty(), "refused writes added {entries:?}");
    let health = master_health(&cluster.master()).await;
    assert_eq!(health.last_order, 0, "{health:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_refused() {
    let cluster = TestCluster::builder().start_master_only().await;
    let cases = [
        ("empty body", String::new()),
        ("not JSON", "hello".to_owned()),
        ("truncated object", r#"{"content": "a""#.to_owned()),
        ("trailing comma", r#"{"content": "a",}"#.to_owned()),
        ("an array", r#"["a"]"#.to_owned()),
        ("a bare string", r#""a""#.to_owned()),
        ("null", "null".to_owned()),
        ("a number", "42".to_owned()),
    ];
    assert_all_rejected(&cluster, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn content_must_be_a_string() {
    let cluster = TestCluster::builder().start_master_only().await;
    let cases = [
        ("no content", json!({}).to_string()),
        ("only w", json!({"w": 1}).to_string()),
        ("content null", json!({"content": null, "w": 1}).to_string()),
        (
            "content a number",
            json!({"content": 1, "w": 1}).to_string(),
        ),
        (
            "content a bool",
            json!({"content": true, "w": 1}).to_string(),
        ),
        (
            "content an array",
            json!({"content": ["a"], "w": 1}).to_string(),
        ),
        (
            "content an object",
            json!({"content": {"a": 1}, "w": 1}).to_string(),
        ),
        ("misspelt key", json!({"contents": "a", "w": 1}).to_string()),
    ];
    assert_all_rejected(&cluster, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn w_must_be_an_integer_from_1_to_the_node_count() {
    let cluster = TestCluster::builder().start_master_only().await;
    // Two secondaries are configured, so w may be 1, 2 or 3.
    let cases = [
        ("w 0", r#"{"content": "a", "w": 0}"#.to_owned()),
        ("w 4", r#"{"content": "a", "w": 4}"#.to_owned()),
        ("w -1", r#"{"content": "a", "w": -1}"#.to_owned()),
        ("w 2.5", r#"{"content": "a", "w": 2.5}"#.to_owned()),
        ("w \"2\"", r#"{"content": "a", "w": "2"}"#.to_owned()),
        ("w true", r#"{"content": "a", "w": true}"#.to_owned()),
        ("w an array", r#"{"content": "a", "w": [1]}"#.to_owned()),
        (
            "w beyond u64",
            r#"{"content": "a", "w": 99999999999999999999}"#.to_owned(),
        ),
    ];
    assert_all_rejected(&cluster, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn w_range_follows_the_configured_secondaries() {
    // One secondary configured (and not running): w may be 1 or 2, never 3.
    let cluster = TestCluster::builder()
        .secondaries(&["s1"])
        .start_master_only()
        .await;
    let cases = [("w 3", r#"{"content": "a", "w": 3}"#.to_owned())];
    assert_all_rejected(&cluster, &cases).await;

    // w 2 is valid input: it is accepted and then times out waiting for s1, it is not a 400.
    let request = Write {
        timeout_ms: Some(200),
        ..write("b", 2)
    };
    let answer = match post(&cluster.master(), &request).await {
        WriteOutcome::TimedOut(answer) => answer,
        other => panic!("expected 504: {other:?}"),
    };
    assert_eq!(answer.order, 1, "{answer:?}");

    // Default w is "all nodes", here 2; the health report lists only s1.
    let health = master_health(&cluster.master()).await;
    let ids: Vec<&str> = health.secondaries.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["s1"], "{health:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_ms_must_be_a_non_negative_integer() {
    let cluster = TestCluster::builder().start_master_only().await;
    let cases = [
        (
            "timeout -1",
            r#"{"content": "a", "w": 1, "timeout_ms": -1}"#.to_owned(),
        ),
        (
            "timeout 1.5",
            r#"{"content": "a", "w": 1, "timeout_ms": 1.5}"#.to_owned(),
        ),
        (
            "timeout \"100\"",
            r#"{"content": "a", "w": 1, "timeout_ms": "100"}"#.to_owned(),
        ),
        (
            "timeout true",
            r#"{"content": "a", "w": 1, "timeout_ms": true}"#.to_owned(),
        ),
    ];
    assert_all_rejected(&cluster, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_id_must_be_a_non_empty_string() {
    let cluster = TestCluster::builder().start_master_only().await;
    let cases = [
        (
            "empty id",
            r#"{"content": "a", "w": 1, "message_id": ""}"#.to_owned(),
        ),
        (
            "numeric id",
            r#"{"content": "a", "w": 1, "message_id": 5}"#.to_owned(),
        ),
        (
            "bool id",
            r#"{"content": "a", "w": 1, "message_id": true}"#.to_owned(),
        ),
        (
            "object id",
            r#"{"content": "a", "w": 1, "message_id": {}}"#.to_owned(),
        ),
        (
            "id over 255 bytes",
            json!({"content": "a", "w": 1, "message_id": "x".repeat(256)}).to_string(),
        ),
    ];
    assert_all_rejected(&cluster, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_default_limit_get_413() {
    let cluster = TestCluster::builder().start_master_only().await;
    let body = body_of(&write(&"x".repeat(1024 * 1024 + 1), 1));
    let (status, answer) = post_raw(&cluster.master(), body, Some("application/json")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_error_body("1 MiB + 1 of content", &answer);
    assert_log_empty(&cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_body_bytes_sets_the_limit() {
    let cluster = TestCluster::builder()
        .master_args(&["--max-body-bytes", "2048"])
        .start_master_only()
        .await;
    let body = body_of(&write(&"x".repeat(3000), 1));
    let (status, answer) = post_raw(&cluster.master(), body, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_error_body("3000 bytes over a 2048 limit", &answer);
    assert_log_empty(&cluster).await;

    // Under the limit the same write goes through: the 413 came from the size, not the body.
    let content = "x".repeat(1500);
    assert_created(
        &post(&cluster.master(), &write(&content, 1)).await,
        &content,
        1,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_body_is_accepted_under_any_usual_content_type() {
    let cluster = TestCluster::builder().start_master_only().await;
    let variants = [
        ("no Content-Type", None),
        (
            "curl's default form type",
            Some("application/x-www-form-urlencoded"),
        ),
        ("application/json", Some("application/json")),
        (
            "application/json with charset",
            Some("application/json; charset=utf-8"),
        ),
    ];
    for (index, (label, content_type)) in variants.iter().enumerate() {
        let content = format!("sent with {label}");
        let (status, answer) = post_raw(
            &cluster.master(),
            body_of(&write(&content, 1)),
            *content_type,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {answer}");
        let outcome = WriteOutcome::Created(
            serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("{e}: {answer}")),
        );
        let ack = assert_created(&outcome, &content, 1);
        assert_eq!(ack.order, index as u64 + 1, "{label}: {answer}");
    }
    let entries = messages(&cluster.master()).await;
    let expected: Vec<String> = variants
        .iter()
        .map(|(label, _)| format!("sent with {label}"))
        .collect();
    assert_eq!(contents(&entries), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paging_parameters_are_refused() {
    let cluster = TestCluster::builder().start_master_only().await;
    assert_created(&post(&cluster.master(), &write("only", 1)).await, "only", 1);
    for query in [
        "from=0",
        "from=abc",
        "from=-1",
        "from=1.5",
        "limit=abc",
        "limit=-1",
        "limit=2.5",
        "from=1&limit=x",
    ] {
        let path = format!("/messages?{query}");
        let (status, answer) =
            raw(&cluster.master(), reqwest::Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "?{query}: {answer}");
        assert_error_body(query, &answer);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_json_errors() {
    let cluster = TestCluster::start().await;
    for (name, node) in cluster.running_nodes() {
        let cases = [
            (reqwest::Method::GET, "/nope", StatusCode::NOT_FOUND),
            (
                reqwest::Method::PUT,
                "/messages",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                reqwest::Method::DELETE,
                "/messages",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                reqwest::Method::POST,
                "/health",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (method, path, expected) in cases {
            let label = format!("{method} {path} on {name}");
            let body = Some(body_of(&write("no", 1)));
            let (status, answer) = raw(&node, method, path, body, None).await;
            assert_eq!(status, expected, "{label}: {answer}");
            assert_error_body(&label, &answer);
        }
    }
    assert_log_empty(&cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_longest_allowed_message_id_replicates() {
    // 255 bytes is the most an AMQP short string (the message-id property) holds: an id the
    // master accepts must never stop its publisher.
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let id = "i".repeat(255);
    let outcome = post(&master, &write_with_id("long id", &id, 3)).await;
    assert_created(&outcome, "long id", 3);
    assert_created(&post(&master, &write("after it", 3)).await, "after it", 3);
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(log[0].message_id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_string_content_reaches_every_node_unchanged() {
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    let samples = [
        String::new(),
        "héllo ✓ 😀 — 日本語".to_owned(),
        "line\nbreak\t\"quoted\" \\ back\\slash {\"json\": true}".to_owned(),
        "\u{0}nul and \u{7f} controls".to_owned(),
        "x".repeat(600 * 1024),
    ];
    for content in &samples {
        let outcome = post(&master, &write(content, 3)).await;
        let WriteOutcome::Created(answer) = &outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(answer.content, *content);
    }
    let log = cluster.wait_for_convergence(samples.len()).await;
    assert_eq!(
        contents(&log),
        samples.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

/// Zero and absurd intervals, timeouts and sizes are refused before a node does anything, with
/// a message that names the flag and the range it takes.
#[tokio::test(flavor = "multi_thread")]
async fn zero_and_absurd_flags_are_refused_at_start_with_the_allowed_range() {
    use replog_testkit::{Binaries, Profile};
    let binaries = Binaries::get(Profile::of_this_build()).unwrap_or_else(|e| panic!("{e}"));
    let cases: [(&std::path::Path, &[&str], &str); 7] = [
        (&binaries.secondary, &["--heartbeat-ms", "0"], "1..=60000"),
        (
            &binaries.secondary,
            &["--ack-interval-ms", "0"],
            "1..=60000",
        ),
        (
            &binaries.secondary,
            &["--catchup-after-ms", "0"],
            "1..=86400000",
        ),
        (&binaries.secondary, &["--prefetch", "0"], "1.."),
        (
            &binaries.master,
            &["--confirm-timeout-ms", "0"],
            "1..=86400000",
        ),
        (
            &binaries.master,
            &["--wc-timeout-ms", "86400001"],
            "1..=86400000",
        ),
        (
            &binaries.master,
            &["--http-header-timeout-ms", "0"],
            "100..=300000",
        ),
    ];
    for (binary, args, allowed) in cases {
        let mut command = tokio::process::Command::new(binary);
        if binary == binaries.secondary {
            command.args(["--id", "s1"]);
        }
        command
            .args(args)
            // Nothing else may be the reason it stops: no broker, no port, no data directory
            // is reached before flags are checked.
            .env("REPLOG_AMQP_URL", "amqp://127.0.0.1:1/%2f")
            .env("REPLOG_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true);
        let output = tokio::time::timeout(std::time::Duration::from_secs(10), command.output())
            .await
            .unwrap_or_else(|_| panic!("{args:?}: the node started instead of refusing"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted: {stderr}");
        // The deprecated alias is reported under the flag's own name.
        let flag = match args[0] {
            "--ack-interval-ms" => "--heartbeat-ms",
            other => other,
        };
        assert!(
            stderr.contains(flag) && stderr.contains(allowed),
            "{args:?}: the error must name {flag} and {allowed}: {stderr}"
        );
    }
}
