//! `GET /messages/{message_id}` on the master: where an entry stands and which nodes hold it,
//! `404` for an id the log does not hold.

use crate::helpers::{assert_created, post, wait_for, write_with_id, DEADLINE};
use replog_testkit::{EntryStatus, NodeClient, TestCluster};

/// The master's status of `message_id`, which must be known.
async fn status(master: &NodeClient, message_id: &str) -> EntryStatus {
    master
        .entry_status(message_id)
        .await
        .unwrap_or_else(|error| panic!("GET /messages/{message_id:?}: {error}"))
        .unwrap_or_else(|| panic!("the master does not know {message_id:?}"))
}

/// Polls until every node holds `message_id`.
async fn wait_for_all_holders(master: &NodeClient, message_id: &str) -> EntryStatus {
    wait_for(DEADLINE, "every node holds the entry", || async {
        let status = status(master, message_id).await;
        if status.held_by == ["master", "s1", "s2"] {
            Ok(status)
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_status_names_its_holders_as_they_ack() {
    let mut cluster = TestCluster::builder()
        .secondary_args("s2", &["--delay-ms", "1500"])
        .start()
        .await;
    let master = cluster.master();
    // An id that needs escaping in a path, and empty content.
    let id = "status 1/?#é";
    let ack = assert_created(&post(&master, &write_with_id("", id, 1)).await, "", 1);

    // Answered by w=1 at once: the master holds it, the delayed s2 cannot yet. The key is still
    // only in the writer's memory (flushed to the index about once a second).
    let first = status(&master, id).await;
    assert_eq!(first.message_id, id);
    assert_eq!((first.order, first.content.as_str()), (ack.order, ""));
    assert_eq!(first.held_by[0], "master", "{first:?}");
    assert!(!first.held_by.contains(&"s2".to_owned()), "{first:?}");
    assert_eq!(first.acks, first.held_by.len() as u64, "{first:?}");

    let all = wait_for_all_holders(&master, id).await;
    assert_eq!(all.acks, 3, "{all:?}");

    // After a restart the id is found in the on-disk index, and the holders come back as the
    // secondaries repeat their positions.
    cluster.restart("master").await;
    let master = cluster.master();
    let again = wait_for_all_holders(&master, id).await;
    assert_eq!(again.order, ack.order);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_id_is_a_404() {
    let cluster = TestCluster::start().await;
    let master = cluster.master();
    assert_eq!(master.entry_status("never-written").await.unwrap(), None);
    let raw = master.get_raw("/messages/never-written").await.unwrap();
    assert_eq!(raw.status, 404, "{raw:?}");
    assert_eq!(
        raw.json().unwrap()["error"],
        r#"no entry with message_id "never-written""#
    );
    // A secondary has no such route: its own 404 says where to go.
    let raw = cluster
        .secondary("s1")
        .get_raw("/messages/never-written")
        .await
        .unwrap();
    assert_eq!(raw.status, 404, "{raw:?}");
    let long = "x".repeat(256);
    let raw = master.get_raw(&format!("/messages/{long}")).await.unwrap();
    assert_eq!(raw.status, 400, "{raw:?}");
}
