//! `GET /messages?from=<order>&limit=<n>`: pages of the log, `from` inclusive.

use crate::helpers::{write_all, TestCluster, DEADLINE};
use replog_common::wire::MessagesPage;
use reqwest::StatusCode;

/// The orders on one page, asking `query`.
async fn page(cluster: &TestCluster, query: &str) -> Vec<u64> {
    let (status, body) = cluster.master.get(&format!("/messages?{query}")).await;
    assert_eq!(status, StatusCode::OK, "?{query}: {body}");
    let page: MessagesPage = serde_json::from_value(body.clone())
        .unwrap_or_else(|error| panic!("?{query} is not a messages page ({error}): {body}"));
    page.messages.iter().map(|entry| entry.order).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn from_and_limit_page_the_log() {
    let cluster = TestCluster::builder().start_master_only().await;
    let writes: Vec<(String, u64)> = (1..=10).map(|i| (format!("p{i}"), 1)).collect();
    // One at a time, so that content pN has order N.
    write_all(&cluster.master, &writes, 1, DEADLINE).await;

    let cases: [(&str, Vec<u64>); 9] = [
        ("from=1&limit=3", vec![1, 2, 3]),
        ("from=4&limit=3", vec![4, 5, 6]),
        ("from=8&limit=5", vec![8, 9, 10]),
        ("from=10&limit=1", vec![10]),
        ("from=11", vec![]),
        ("from=5", vec![5, 6, 7, 8, 9, 10]),
        ("limit=2", vec![1, 2]),
        ("from=1", (1..=10).collect()),
        ("limit=10&from=3", (3..=10).collect()),
    ];
    for (query, expected) in cases {
        assert_eq!(page(&cluster, query).await, expected, "?{query}");
    }

    // Walking the pages yields the whole log, each entry once, as the unpaged read shows it.
    let mut walked = Vec::new();
    let mut from = 1;
    loop {
        let (_, body) = cluster
            .master
            .get(&format!("/messages?from={from}&limit=4"))
            .await;
        let page: MessagesPage = serde_json::from_value(body).expect("a page");
        if page.messages.is_empty() {
            break;
        }
        from = page.messages.last().unwrap().order + 1;
        walked.extend(page.messages);
    }
    assert_eq!(walked, cluster.master.messages().await);
    assert_eq!(walked.len(), 10);
    assert!(walked
        .iter()
        .zip(1..)
        .all(|(entry, n)| entry.content == format!("p{n}")));
}
