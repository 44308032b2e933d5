//! Bad input over real HTTP: the exact status, a JSON `{"error": "..."}` body, and no entry added.
//! Accepted body encodings and the body size limit live here too.
//!
//! These tests start the master alone: validation must not depend on any secondary, and every
//! valid write here uses `w: 1`.

use crate::helpers::{assert_created, write, TestCluster};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Sends each body and expects `400` with a JSON error; then checks the log is still empty.
async fn assert_all_rejected(cluster: &TestCluster, cases: &[(&str, String)]) {
    for (label, body) in cases {
        let (status, answer) = cluster
            .master
            .post_raw(body.clone(), Some("application/json"))
            .await;
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
    let entries = cluster.master.messages().await;
    assert!(entries.is_empty(), "refused writes added {entries:?}");
    let health = cluster.master.health().await;
    assert_eq!(health["last_order"], 0, "{health}");
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
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "b", "w": 2, "timeout_ms": 200}))
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert_eq!(answer["order"], 1, "{answer}");

    // Default w is "all nodes", here 2; the health report lists only s1.
    let health = cluster.master.health().await;
    let ids: Vec<&Value> = health["secondaries"]
        .as_array()
        .map(|list| list.iter().map(|s| &s["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec!["s1"], "{health}");
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
    let body = write(&"x".repeat(1024 * 1024 + 1), 1).to_string();
    let (status, answer) = cluster
        .master
        .post_raw(body, Some("application/json"))
        .await;
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
    let (status, answer) = cluster
        .master
        .post_raw(write(&"x".repeat(3000), 1).to_string(), None)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_error_body("3000 bytes over a 2048 limit", &answer);
    assert_log_empty(&cluster).await;

    // Under the limit the same write goes through: the 413 came from the size, not the body.
    let content = "x".repeat(1500);
    let (status, answer) = cluster.master.post_message(&write(&content, 1)).await;
    assert_created(status, &answer, &content, 1);
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
        let (status, answer) = cluster
            .master
            .post_raw(write(&content, 1).to_string(), *content_type)
            .await;
        let order = assert_created(status, &answer, &content, 1);
        assert_eq!(order, index as u64 + 1, "{label}: {answer}");
    }
    let entries = cluster.master.messages().await;
    let expected: Vec<String> = variants
        .iter()
        .map(|(label, _)| format!("sent with {label}"))
        .collect();
    assert_eq!(crate::helpers::contents(&entries), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paging_parameters_are_refused() {
    let cluster = TestCluster::builder().start_master_only().await;
    let (status, answer) = cluster.master.post_message(&write("only", 1)).await;
    assert_created(status, &answer, "only", 1);
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
        let (status, answer) = cluster.master.get(&format!("/messages?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "?{query}: {answer}");
        assert_error_body(query, &answer);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_json_errors() {
    let cluster = TestCluster::start().await;
    let client = reqwest::Client::new();
    for node in cluster.running_nodes() {
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
            let response = client
                .request(method.clone(), format!("{}{path}", node.url))
                .body(write("no", 1).to_string())
                .send()
                .await
                .unwrap_or_else(|error| panic!("{method} {path} on {}: {error}", node.name));
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert_eq!(
                status, expected,
                "{method} {path} on {}: {text:?}",
                node.name
            );
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|error| {
                panic!(
                    "{method} {path} on {} is not JSON ({error}): {text:?}",
                    node.name
                )
            });
            assert_error_body(&format!("{method} {path} on {}", node.name), &body);
        }
    }
    assert_log_empty(&cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_longest_allowed_message_id_replicates() {
    // 255 bytes is the most an AMQP short string (the message-id property) holds: an id the
    // master accepts must never stop its publisher.
    let cluster = TestCluster::start().await;
    let id = "i".repeat(255);
    let (status, answer) = cluster
        .master
        .post_message(&json!({"content": "long id", "w": 3, "message_id": id}))
        .await;
    assert_created(status, &answer, "long id", 3);
    let (status, next) = cluster.master.post_message(&write("after it", 3)).await;
    assert_created(status, &next, "after it", 3);
    let log = cluster.wait_for_convergence(2).await;
    assert_eq!(log[0].message_id, id);
}
