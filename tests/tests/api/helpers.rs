//! Assertions and fixtures shared by the tests. Everything that starts, stops or talks to a node
//! is testkit's ([`replog_testkit::TestCluster`], [`NodeClient`]); what is here only builds
//! requests, checks answers and logs, and waits with the suite's deadline. Nothing sleeps for a
//! fixed time: every wait polls a condition until a deadline ([`wait_for`], [`wait_until`]).

use futures_util::StreamExt;
use replog_common::wire::EntryMessage;
use replog_testkit::{
    describe_log, MasterHealth, NodeClient, SecondaryStatus, TestCluster, Write, WriteAck,
    WriteOutcome, WriteTimedOut,
};
use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

/// How long a condition may take before a test gives up. Generous because CI has two cores and
/// runs two clusters at once; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(50);

/// A write of `content` with write concern `w`.
pub fn write(content: &str, w: u64) -> Write {
    Write {
        content: content.to_owned(),
        w: Some(w),
        message_id: None,
        timeout_ms: None,
    }
}

/// A write of `content` with the master's default write concern.
pub fn write_default(content: &str) -> Write {
    Write {
        content: content.to_owned(),
        w: None,
        message_id: None,
        timeout_ms: None,
    }
}

/// A write of `content` under the client id `message_id`, with write concern `w`.
pub fn write_with_id(content: &str, message_id: &str, w: u64) -> Write {
    Write {
        message_id: Some(message_id.to_owned()),
        ..write(content, w)
    }
}

/// `POST /messages`; a request that gets no answer fails the test.
pub async fn post(node: &NodeClient, write: &Write) -> WriteOutcome {
    node.post_message(write)
        .await
        .unwrap_or_else(|error| panic!("POST {:?} to {}: {error}", write.content, node.url()))
}

/// The whole log `node` shows; a node that does not answer fails the test.
pub async fn messages(node: &NodeClient) -> Vec<EntryMessage> {
    node.all_messages()
        .await
        .unwrap_or_else(|error| panic!("GET /messages on {}: {error}", node.url()))
}

/// The master's `/health`.
pub async fn master_health(node: &NodeClient) -> MasterHealth {
    node.master_health()
        .await
        .unwrap_or_else(|error| panic!("GET /health on {}: {error}", node.url()))
}

/// Asserts a `201 Created` for a new entry in a three-node cluster and returns its answer.
pub fn assert_created(outcome: &WriteOutcome, content: &str, w: u64) -> WriteAck {
    let WriteOutcome::Created(ack) = outcome else {
        panic!("writing {content:?}: expected 201 Created, got {outcome:?}");
    };
    assert_eq!(ack.content, content, "{ack:?}");
    assert_eq!(ack.w, w, "{ack:?}");
    assert!(!ack.message_id.is_empty(), "{ack:?}");
    assert!(
        (w..=3).contains(&ack.acks),
        "acks must be at least w={w} and at most 3: {ack:?}"
    );
    assert!(ack.order >= 1, "order must be a positive integer: {ack:?}");
    ack.clone()
}

/// Asserts a `200 OK` naming an entry the log already held, and returns its answer.
pub fn assert_duplicate(outcome: &WriteOutcome) -> WriteAck {
    let WriteOutcome::Duplicate(ack) = outcome else {
        panic!("expected 200 OK for a duplicate, got {outcome:?}");
    };
    assert!(ack.duplicate, "{ack:?}");
    ack.clone()
}

/// Asserts a `504 Gateway Timeout` and returns its answer.
pub fn assert_timed_out(outcome: &WriteOutcome) -> WriteTimedOut {
    let WriteOutcome::TimedOut(answer) = outcome else {
        panic!("expected 504 Gateway Timeout, got {outcome:?}");
    };
    answer.clone()
}

/// One write for every node, answered `201` with `acks: 3`. Once it returns, every secondary
/// has finished starting up, so later entries reach them through their queues.
pub async fn warm_up(cluster: &TestCluster) -> WriteAck {
    let ack = assert_created(
        &post(&cluster.master(), &write("warm-up", 3)).await,
        "warm-up",
        3,
    );
    assert_eq!(ack.acks, 3, "{ack:?}");
    ack
}

/// Polls `probe` until it returns `Ok`, and returns that value; `Err` carries what was seen, so
/// that a timeout says how far things got.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    replog_testkit::wait_for(deadline, POLL, what, probe)
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"))
}

/// Polls `condition` until it holds.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(deadline, what, || {
        let holds = condition();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("the condition was false".to_owned())
            }
        }
    })
    .await
}

/// Polls until `node` (called `name` in messages) shows at least `len` entries.
pub async fn wait_for_len(name: &str, node: &NodeClient, len: usize) {
    let what = format!("{name} shows {len} entries");
    wait_for(DEADLINE, &what, || async move {
        let shown = messages(node).await;
        if shown.len() >= len {
            Ok(())
        } else {
            Err(describe(&shown))
        }
    })
    .await
}

/// Awaits a spawned request, failing after `deadline`.
pub async fn join_within<T>(
    deadline: Duration,
    what: &str,
    handle: tokio::task::JoinHandle<T>,
) -> T {
    tokio::time::timeout(deadline, handle)
        .await
        .unwrap_or_else(|_| panic!("timed out after {deadline:?} waiting until {what}"))
        .unwrap_or_else(|error| panic!("the task for {what} failed: {error}"))
}

/// Fails if a write that should still be waiting has been answered.
pub async fn assert_pending<T: std::fmt::Debug>(
    what: &str,
    handle: tokio::task::JoinHandle<T>,
) -> tokio::task::JoinHandle<T> {
    if handle.is_finished() {
        let outcome = handle.await;
        panic!("{what} was answered while it had to wait: {outcome:?}");
    }
    handle
}

/// Fails unless the log is well formed: orders exactly 1..=N in sequence, no id twice.
pub fn assert_well_formed(entries: &[EntryMessage]) {
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry.order,
            index as u64 + 1,
            "orders must run 1..=N without gaps or repeats: {}",
            describe(entries)
        );
    }
    let ids: HashSet<&str> = entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        entries.len(),
        "a message id appears twice: {}",
        describe(entries)
    );
}

/// A short rendering of a log for failure messages.
pub fn describe(entries: &[EntryMessage]) -> String {
    describe_log(entries)
}

/// The contents of a log, in order.
pub fn contents(entries: &[EntryMessage]) -> Vec<&str> {
    entries.iter().map(|e| e.content.as_str()).collect()
}

/// `(id, acked)` for each secondary in the master's `/health`, in the order listed.
pub fn acked_by(health: &MasterHealth) -> Vec<(String, u64)> {
    health
        .secondaries
        .iter()
        .map(|node| (node.id.clone(), node.acked))
        .collect()
}

/// Secondary `id` as the master's `/health` shows it; missing fails the test.
pub fn secondary_in(health: &MasterHealth, id: &str) -> SecondaryStatus {
    health
        .secondaries
        .iter()
        .find(|secondary| secondary.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("the master's /health lists no {id}: {health:?}"))
}

/// Polls the master's `/health` until `holds` accepts it (`what` says what is awaited), and
/// returns it.
pub async fn wait_for_health<F>(master: &NodeClient, what: &str, holds: F) -> MasterHealth
where
    F: Fn(&MasterHealth) -> bool,
{
    wait_for(DEADLINE, what, || async {
        let health = master_health(master).await;
        if holds(&health) {
            Ok(health)
        } else {
            Err(format!("{health:?}"))
        }
    })
    .await
}

/// Polls the master's `/health` until it shows secondary `id` as `status` (`healthy`,
/// `suspected` or `unhealthy`), and returns what it shows of it.
pub async fn wait_for_status(master: &NodeClient, id: &str, status: &str) -> SecondaryStatus {
    let what = format!("the master shows {id} {status}");
    let health = wait_for_health(master, &what, |health| {
        secondary_in(health, id).status == status
    })
    .await;
    secondary_in(&health, id)
}

/// Polls until the master shows every secondary healthy (`status: ok`): with short
/// thresholds, a secondary slower to start than `--unhealthy-after-ms` may briefly cost the
/// quorum, so tests that count on it wait for this first.
pub async fn wait_until_all_healthy(master: &NodeClient) -> MasterHealth {
    wait_for_health(master, "every secondary is healthy", |health| {
        health.status == MasterHealth::OK
            && health
                .secondaries
                .iter()
                .all(|secondary| secondary.status == SecondaryStatus::HEALTHY)
    })
    .await
}

/// Sends every `(content, w)` write with at most `concurrency` in flight; each must be answered
/// `201` for a new entry with `acks >= w`, all within `deadline`. Returns the answers in the
/// order of `writes`.
pub async fn write_all(
    node: &NodeClient,
    writes: &[(String, u64)],
    concurrency: usize,
    deadline: Duration,
) -> Vec<WriteAck> {
    // Owned items and an owned client: borrowed ones make the future unusable in tokio::spawn.
    let requests = futures_util::stream::iter(writes.to_vec())
        .map(|(content, w)| {
            let node = node.clone();
            async move { assert_created(&post(&node, &write(&content, w)).await, &content, w) }
        })
        .buffered(concurrency)
        .collect::<Vec<WriteAck>>();
    tokio::time::timeout(deadline, requests)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} writes did not all return within {deadline:?}",
                writes.len()
            )
        })
}

/// `n` writes with unique contents starting with `prefix` and a random `w` from `w_range`.
pub fn random_writes(
    prefix: &str,
    n: usize,
    w_range: std::ops::RangeInclusive<u64>,
) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| (format!("{prefix}-{i}"), rand::random_range(w_range.clone())))
        .collect()
}

/// Fails unless every content written appears exactly once in the log, at the order its write
/// was answered with, and nothing else does.
pub fn assert_log_matches_answers(log: &[EntryMessage], answers: &[WriteAck]) {
    assert_eq!(
        log.len(),
        answers.len(),
        "{} writes were answered 201 but the log holds {} entries: {}",
        answers.len(),
        log.len(),
        describe(log)
    );
    for answer in answers {
        assert_answer_in_log(log, answer);
    }
}

/// Fails unless the log holds `answer`'s entry at its order.
pub fn assert_answer_in_log(log: &[EntryMessage], answer: &WriteAck) {
    let entry = (answer.order as usize)
        .checked_sub(1)
        .and_then(|index| log.get(index))
        .unwrap_or_else(|| {
            panic!(
                "{answer:?} names an order outside the log: {}",
                describe(log)
            )
        });
    assert_eq!(
        entry.content, answer.content,
        "entry {} vs its answer {answer:?}",
        answer.order
    );
    assert_eq!(
        entry.message_id, answer.message_id,
        "entry {} vs its answer {answer:?}",
        answer.order
    );
}

/// Fails unless every answer in `answers` rose in order: one client's sequential writes.
pub fn assert_orders_rise(answers: &[WriteAck]) {
    let orders: Vec<u64> = answers.iter().map(|a| a.order).collect();
    assert!(
        orders.windows(2).all(|pair| pair[0] < pair[1]),
        "{orders:?}"
    );
}
