//! Stopping within a bounded time: a client that reads a large `GET /messages` slowly (or not
//! at all) does not hold a node that was told to stop (SIGTERM) beyond its shutdown grace.

use crate::helpers::{assert_created, post, write};
use replog_testkit::TestCluster;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The entry that makes the page: far larger than any socket buffer, so the node's write of
/// the page blocks on a client that does not read.
const ENTRY_BYTES: usize = 20 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_a_slow_read_of_a_large_page_within_ten_seconds() {
    let mut cluster = TestCluster::builder()
        .master_args(&["--max-body-bytes", &(32usize << 20).to_string()])
        .start_master_only()
        .await;
    let master = cluster.master();
    let content = "x".repeat(ENTRY_BYTES);
    assert_created(&post(&master, &write(&content, 1)).await, &content, 1);

    // A raw client with a small receive buffer that reads the head of the answer and then
    // stops reading, with the connection left open.
    let addr = master
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("the master's address");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /messages HTTP/1.1\r\nHost: replog\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut head))
        .await
        .expect("the page starts within 10 s")
        .unwrap();
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..read])
    );

    let started = Instant::now();
    let status = cluster
        .node_mut("master")
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        status.is_some() && took < Duration::from_secs(10),
        "the master took {took:?} to stop (exit {status:?}) while a client held a page"
    );
    assert!(status.unwrap().success(), "{status:?}");
    let log = cluster.master_node().log_text();
    assert!(
        log.contains("still in flight after the shutdown grace"),
        "the stop did not have to cut the slow reader off:\n{log}"
    );
    drop(stream);
}
