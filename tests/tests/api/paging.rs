//! `GET /messages?from=<order>&limit=<n>`: pages of the log, `from` inclusive.

use crate::helpers::{messages, write_all, DEADLINE};
use replog_common::wire::MessagesPage;
use replog_testkit::{NodeClient, TestCluster};

/// One page, asking `query`; anything but `200` with a messages page fails.
async fn page(node: &NodeClient, query: &str) -> MessagesPage {
    let answer = node
        .get_raw(&format!("/messages?{query}"))
        .await
        .unwrap_or_else(|error| panic!("?{query}: {error}"));
    assert_eq!(answer.status, 200, "?{query}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|error| {
        panic!("?{query} is not a messages page ({error}): {}", answer.body)
    })
}

/// The orders on one page, asking `query`.
async fn orders(node: &NodeClient, query: &str) -> Vec<u64> {
    let page = page(node, query).await;
    page.messages.iter().map(|entry| entry.order).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn from_and_limit_page_the_log() {
    let cluster = TestCluster::builder().start_master_only().await;
    let master = cluster.master();
    let writes: Vec<(String, u64)> = (1..=10).map(|i| (format!("p{i}"), 1)).collect();
    // One at a time, so that content pN has order N.
    write_all(&master, &writes, 1, DEADLINE).await;

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
        assert_eq!(orders(&master, query).await, expected, "?{query}");
    }

    // Walking the pages yields the whole log, each entry once, as the unpaged read shows it.
    let mut walked = Vec::new();
    let mut from = 1;
    loop {
        let page = page(&master, &format!("from={from}&limit=4")).await;
        if page.messages.is_empty() {
            break;
        }
        from = page.messages.last().unwrap().order + 1;
        walked.extend(page.messages);
    }
    let unpaged: MessagesPage = {
        let answer = master.get_raw("/messages").await.expect("GET /messages");
        serde_json::from_str(&answer.body).expect("a messages page")
    };
    assert_eq!(walked, unpaged.messages);
    assert_eq!(walked, messages(&master).await);
    assert_eq!(walked.len(), 10);
    assert!(walked
        .iter()
        .zip(1..)
        .all(|(entry, n)| entry.content == format!("p{n}")));
}
