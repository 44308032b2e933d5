//! Read-your-writes: `GET /messages?min_order=N&wait_ms=T` answers once the node has applied
//! through `N`, waiting up to `T`, or `504` with how far it got; bad values are refused.

use crate::helpers::{assert_created, post, wait_for_len, write};
use replog_testkit::{NodeClient, NotYetApplied, TestCluster};

/// `GET /messages?min_order=&wait_ms=[&from=&limit=]`, which must answer `200` or `504`.
async fn read_after(
    node: &NodeClient,
    min_order: u64,
    wait_ms: u64,
    page: Option<(u64, u64)>,
) -> Result<Vec<replog_common::wire::EntryMessage>, NotYetApplied> {
    node.messages_after(min_order, wait_ms, page)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "GET /messages?min_order={min_order} on {}: {error}",
                node.url()
            )
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_secondary_answers_once_it_holds_the_write() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "1500"])
        .start()
        .await;
    let master = cluster.master();
    let first = assert_created(&post(&master, &write("first", 3)).await, "first", 3);
    // w=1: answered as soon as the master holds it; s2 shows it 1.5 s after it arrives.
    let mine = assert_created(&post(&master, &write("mine", 1)).await, "mine", 1);
    assert_eq!(mine.order, 2);
    let s2 = cluster.secondary("s2");

    let late = read_after(&s2, mine.order, 0, None)
        .await
        .expect_err("s2 cannot hold the write yet");
    assert_eq!(late.applied, first.order, "{late:?}");
    assert!(late.error.contains("not yet through 2"), "{late:?}");

    let page = read_after(&s2, mine.order, 20_000, None)
        .await
        .unwrap_or_else(|late| panic!("s2 did not apply the write in time: {late:?}"));
    let ids: Vec<&str> = page.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, [first.message_id.as_str(), mine.message_id.as_str()]);

    // from and limit cut the page as usual once the condition holds.
    let page = read_after(&s2, 1, 0, Some((2, 5))).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].message_id, mine.message_id);

    // The master holds whatever it numbered: at once; beyond its end, 504 after the wait.
    let page = read_after(&master, mine.order, 0, None).await.unwrap();
    assert_eq!(page.len(), 2);
    let beyond = read_after(&master, 3, 200, None)
        .await
        .expect_err("nothing was numbered 3");
    assert_eq!(beyond.applied, 2, "{beyond:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_ends_first_is_a_504_and_bad_values_are_refused() {
    let cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "3000"])
        .start()
        .await;
    let master = cluster.master();
    let mine = assert_created(&post(&master, &write("mine", 1)).await, "mine", 1);
    let s2 = cluster.secondary("s2");
    let late = read_after(&s2, mine.order, 300, None)
        .await
        .expect_err("s2 shows the write 3 s after it arrives");
    assert_eq!(late.applied, 0, "{late:?}");
    assert!(late.error.contains("waited 300 ms"), "{late:?}");

    for (query, says) in [
        (
            "min_order=1&wait_ms=soon",
            "`wait_ms` must be an integer from 0 to 60000",
        ),
        (
            "min_order=1&wait_ms=60001",
            "`wait_ms` must be an integer from 0 to 60000",
        ),
        (
            "min_order=1&wait_ms=-5",
            "`wait_ms` must be an integer from 0 to 60000",
        ),
        (
            "min_order=x",
            "`min_order` must be an integer of at least 0",
        ),
        (
            "min_order=-1&wait_ms=10",
            "`min_order` must be an integer of at least 0",
        ),
    ] {
        for node in [&s2, &master] {
            let raw = node.get_raw(&format!("/messages?{query}")).await.unwrap();
            assert_eq!(raw.status, 400, "{query}: {raw:?}");
            let error = raw.json().unwrap()["error"].as_str().unwrap().to_owned();
            assert!(error.starts_with(says), "{query}: {error}");
        }
    }
    wait_for_len("s2", &s2, 1).await;
    // Once applied, no wait is needed.
    assert_eq!(read_after(&s2, 1, 0, None).await.unwrap().len(), 1);
}
