//! replog on a three-node RabbitMQ cluster with quorum queues: the broker node the master is
//! connected to is killed (SIGKILL), stopped, or frozen (SIGSTOP) in the middle of a stream of
//! `w=3` writes; writes go on through the other nodes, every acknowledged write is on every node
//! exactly once at its order, and the broker node comes back into the cluster. Frozen, the
//! master hears nobody for a while: with a short `--unhealthy-after-ms` it turns read-only, and a
//! write sent then is refused (`503`, nothing appended) until the master hears its secondaries
//! again; writers retry such refusals with their `message_id`, as the API asks. And a message
//! that a consumer requeues many times is still delivered (no delivery limit drops it). And the
//! test kit itself mends a partition that `autoheal` leaves, so that these tests do not fail on
//! RabbitMQ's healing instead of replog's behaviour.
//!
//! The cluster takes most of a minute to start on two cores, so one cluster serves every test
//! here: a `static`, locked by each test for its whole run (the faults must not overlap), healed
//! (thawed, started, all nodes running) before each test, and reaped when the test process
//! exits. Each test still has a namespace of its own.

use crate::helpers::{
    assert_log_matches_answers, assert_well_formed, post, random_writes, wait_until, write_all,
    write_with_id, DEADLINE,
};
use futures_util::StreamExt;
use replog_testkit::broker::requeue_repeatedly;
use replog_testkit::{
    BrokerCluster, BrokerOptions, NodeClient, TestCluster, WriteAck, WriteOutcome, AUTOHEAL_GRACE,
    CLUSTER_SIZE,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// The cluster every test here shares.
static CLUSTER: OnceCell<Mutex<BrokerCluster>> = OnceCell::const_new();

/// How long a fault may hold writes up before the test fails. The kill and the stop are
/// noticed at once (the TCP connections close); a freeze needs the AMQP heartbeat (3 s here)
/// to run out twice, or a confirm timeout, before a node moves on.
const WRITES_RESUME_WITHIN: Duration = Duration::from_secs(45);

/// How long a broker node may take to start again and rejoin (a restart and rejoin is 10-30 s,
/// up to 100 s on two cores that are busy with more than this test; a thawed node is restarted
/// by `autoheal`, or by the test kit when autoheal leaves the partition, after
/// `AUTOHEAL_GRACE`).
const REJOIN: Duration = Duration::from_secs(240);

/// Set while the partition test has switched autoheal off on running nodes, so that the next
/// test switches it on again should that test fail half-way.
static HEALING_SWITCHED_OFF: AtomicBool = AtomicBool::new(false);

/// The AMQP heartbeat the replog nodes use here, so that a frozen broker node is given up on
/// within seconds.
const HEARTBEAT_SECS: u32 = 3;

/// The shared cluster, healed, locked for the caller.
async fn broker_cluster() -> MutexGuard<'static, BrokerCluster> {
    let cell = CLUSTER
        .get_or_init(|| async {
            let began = Instant::now();
            let cluster = BrokerCluster::start_new(BrokerOptions {
                keep_dir: true,
                // The cluster took 115 s to start with both cores saturated: room for one node.
                start_timeout: Duration::from_secs(180),
                ..BrokerOptions::default()
            })
            .await
            .unwrap_or_else(|error| panic!("cannot start the private broker cluster: {error}"));
            cluster
                .reap_when_process_exits()
                .unwrap_or_else(|error| panic!("{error}"));
            eprintln!("private broker cluster started in {:?}", began.elapsed());
            Mutex::new(cluster)
        })
        .await;
    let mut cluster = cell.lock().await;
    cluster.set_autoheal_grace(AUTOHEAL_GRACE);
    if HEALING_SWITCHED_OFF.load(Ordering::SeqCst) {
        // The partition test failed half-way: nodes 1 and 2 still run with `ignore`.
        for index in cluster.healthy_nodes() {
            set_partition_handling(&cluster, index, "autoheal").await;
        }
        HEALING_SWITCHED_OFF.store(false, Ordering::SeqCst);
    }
    // A test that failed half-way may have left a node down or frozen.
    for index in 0..CLUSTER_SIZE {
        if cluster.node(index).is_frozen() {
            cluster.thaw(index).expect("thaw");
        }
        if !cluster.node(index).is_running() {
            cluster
                .start(index)
                .await
                .expect("start a broker node again");
        }
    }
    cluster
        .wait_all_running(REJOIN)
        .await
        .expect("every broker node runs in the cluster");
    cluster
}

/// `--amqp-url` for the replog nodes: every broker node, with a short heartbeat.
fn urls(cluster: &BrokerCluster) -> String {
    cluster
        .amqp_urls()
        .split(',')
        .map(|url| format!("{url}?heartbeat={HEARTBEAT_SECS}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The master's `--unhealthy-after-ms` in the freeze test: shorter than the master's blind
/// spell on a frozen broker node (at least two AMQP heartbeats), so that it turns read-only.
const FREEZE_UNHEALTHY_AFTER_MS: &str = "2000";

/// A replog cluster (master, s1, s2) on the broker cluster, with quorum queues; for the freeze
/// test, a failure detector short enough that the master's blind spell makes it read-only
/// (secondaries report every 250 ms, suspected after 1 s of silence, unhealthy after 2 s).
async fn replog_on(cluster: &BrokerCluster, fault: Fault) -> TestCluster {
    let builder = TestCluster::builder()
        .amqp_url(&urls(cluster))
        .queue_type("quorum");
    let builder = match fault {
        Fault::Freeze => builder
            .master_args(&[
                "--suspect-after-ms",
                "1000",
                "--unhealthy-after-ms",
                FREEZE_UNHEALTHY_AFTER_MS,
            ])
            .every_secondary_args(&["--heartbeat-ms", "250"]),
        Fault::Kill | Fault::Stop => builder,
    };
    builder.start().await
}

/// Which broker node (index) the connection called `name` is on.
async fn broker_node_of(cluster: &BrokerCluster, name: &str) -> usize {
    let connections = cluster.connections().await.expect("list_connections");
    let port = connections
        .iter()
        .find(|(connection, _)| connection.contains(name))
        .map(|(_, port)| *port)
        .unwrap_or_else(|| panic!("no connection named {name:?} in {connections:?}"));
    cluster
        .index_of_port(port)
        .unwrap_or_else(|| panic!("port {port} is no broker node's"))
}

/// Sends a `w=3` write of `content` under a `message_id` of its own the way a client that follows
/// the API does: a read-only master's `503` (no quorum: cut off from the secondaries' reports
/// longer than `--unhealthy-after-ms` while a broker node is frozen) appends nothing and asks
/// for a retry after `Retry-After`, so the same write is sent again, until `deadline`. The
/// write must end `201 Created`, not `200` for a duplicate: a refused attempt appended nothing.
/// Any other answer fails the test. Returns the answer and how often the write was refused.
async fn post_until_taken(
    master: &NodeClient,
    content: &str,
    deadline: Instant,
) -> (WriteAck, usize) {
    let message_id = format!("id-{content}");
    let mut refusals = 0;
    loop {
        match post(master, &write_with_id(content, &message_id, 3)).await {
            WriteOutcome::Created(ack) => return (ack, refusals),
            WriteOutcome::Unavailable { order: None, error }
                if error.starts_with("read-only: no quorum") && Instant::now() < deadline =>
            {
                refusals += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => panic!("the w=3 write {content:?}: {other:?}"),
        }
    }
}

/// `n` `w=3` writes of contents starting with `prefix`, four at a time, each taken with `201`
/// within `within` (retried while the master is read-only).
async fn take_all(master: &NodeClient, prefix: &str, n: usize, within: Duration) -> Vec<WriteAck> {
    let deadline = Instant::now() + within;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let master = master.clone();
            let content = format!("{prefix}-{i}");
            async move { post_until_taken(&master, &content, deadline).await.0 }
        })
        .buffered(4)
        .collect()
        .await
}

/// A stream of `w=3` writes from two clients, each write taken with `201` within
/// [`WRITES_RESUME_WITHIN`] (retried while the master is read-only).
struct WriteStream {
    /// Set to end the stream.
    stop: Arc<AtomicBool>,
    /// The writers, each returning its answers and how often it was refused.
    writers: Vec<tokio::task::JoinHandle<(Vec<WriteAck>, usize)>>,
}

impl WriteStream {
    fn start(master: &NodeClient, prefix: &str) -> WriteStream {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..2)
            .map(|writer| {
                let master = master.clone();
                let stop = stop.clone();
                let prefix = format!("{prefix}-{writer}");
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let mut refusals = 0;
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let content = format!("{prefix}-{n}");
                        n += 1;
                        let deadline = Instant::now() + WRITES_RESUME_WITHIN;
                        let (ack, refused) = post_until_taken(&master, &content, deadline).await;
                        answers.push(ack);
                        refusals += refused;
                    }
                    (answers, refusals)
                })
            })
            .collect();
        WriteStream { stop, writers }
    }

    async fn finish(self) -> (Vec<WriteAck>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let mut answers = Vec::new();
        let mut refusals = 0;
        for writer in self.writers {
            let joined = tokio::time::timeout(WRITES_RESUME_WITHIN + DEADLINE, writer)
                .await
                .expect("the write stream ends");
            let (acks, refused) = joined.expect("a stream writer panicked");
            answers.extend(acks);
            refusals += refused;
        }
        (answers, refusals)
    }
}

/// How a broker node is taken away.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Stop,
    Freeze,
}

async fn survives(fault: Fault) {
    let mut cluster = broker_cluster().await;
    let replog = replog_on(&cluster, fault).await;
    let master = replog.master();
    let mut answers = take_all(&master, "before", 10, DEADLINE).await;
    replog.wait_for_convergence(answers.len()).await;

    // Three replicas of every queue: one per broker node.
    let ns = replog.namespace().to_owned();
    for queue in [format!("{ns}.secondary.s1"), format!("{ns}.acks")] {
        let members = cluster.queue_members(&queue).await.expect("list_queues");
        assert_eq!(members.len(), CLUSTER_SIZE, "{queue}: {members:?}");
    }

    // The kill and the freeze hit the master's broker node (its publishes must be re-sent
    // elsewhere); the graceful stop hits the node holding the most of this cluster's
    // connections (consumers must move).
    let connections: Vec<(String, u16)> = cluster
        .connections()
        .await
        .expect("list_connections")
        .into_iter()
        .filter(|(name, _)| name.contains(&ns))
        .collect();
    let target = match fault {
        Fault::Kill | Fault::Freeze => {
            broker_node_of(&cluster, &format!("replog master ({ns})")).await
        }
        Fault::Stop => (0..CLUSTER_SIZE)
            .max_by_key(|&index| {
                connections
                    .iter()
                    .filter(|(_, port)| *port == cluster.node(index).port())
                    .count()
            })
            .expect("three nodes"),
    };
    let on_target: Vec<&str> = connections
        .iter()
        .filter(|(_, port)| *port == cluster.node(target).port())
        .map(|(name, _)| name.as_str())
        .collect();
    eprintln!("{fault:?} broker node {} holding {on_target:?}", target + 1);

    let stream = WriteStream::start(&master, "stream");
    wait_until(DEADLINE, "the stream is flowing", || async {
        crate::helpers::master_health(&master).await.last_order >= 15
    })
    .await;
    let hit = Instant::now();
    match fault {
        Fault::Kill => cluster.kill(target).await.expect("SIGKILL the broker node"),
        Fault::Stop => cluster.stop(target).await.expect("stop the broker node"),
        Fault::Freeze => cluster.freeze(target).expect("SIGSTOP the broker node"),
    }
    // Frozen, the master hears nobody for longer than its --unhealthy-after-ms: a write sent
    // once /health (served without the broker) says read-only is refused, then taken.
    let during_read_only = matches!(fault, Fault::Freeze).then(|| {
        let master = master.clone();
        tokio::spawn(async move {
            wait_until(
                WRITES_RESUME_WITHIN,
                "the master turns read-only",
                || async { !crate::helpers::master_health(&master).await.writable },
            )
            .await;
            let deadline = Instant::now() + WRITES_RESUME_WITHIN;
            post_until_taken(&master, "while read-only", deadline).await
        })
    });
    // A write sent now is taken once the master and both secondaries are on other nodes.
    let (probe, probe_refusals) = tokio::time::timeout(
        WRITES_RESUME_WITHIN,
        post_until_taken(&master, "after the fault", hit + WRITES_RESUME_WITHIN),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("no w=3 write returned within {WRITES_RESUME_WITHIN:?} of {fault:?}")
    });
    let resumed = hit.elapsed();
    answers.push(probe);
    eprintln!(
        "{fault:?}: w=3 writes resumed {resumed:?} after the fault (refused {} times as \
         read-only first)",
        probe_refusals
    );

    if let Some(during_read_only) = during_read_only {
        let (ack, refusals) = during_read_only
            .await
            .expect("the write sent while read-only");
        eprintln!(
            "Freeze: the write sent while read-only was refused {refusals} times, then taken"
        );
        assert!(
            refusals >= 1,
            "the write sent while /health said read-only was taken at once: {ack:?}"
        );
        answers.push(ack);
    }
    if let Fault::Freeze = fault {
        // Long enough for the peers to notice (net_ticktime 10 s), then thawed.
        let frozen = cluster.node(target).node_name().to_owned();
        let via = cluster.healthy_node(Some(target)).expect("a healthy node");
        let began = Instant::now();
        loop {
            let running = cluster.running_nodes(via).await.unwrap_or_default();
            if !running.contains(&frozen) {
                break;
            }
            assert!(
                began.elapsed() < REJOIN,
                "the peers never noticed the frozen node"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("peers noticed the frozen node after {:?}", hit.elapsed());
        cluster.thaw(target).expect("SIGCONT");
    } else {
        cluster
            .start(target)
            .await
            .expect("the broker node starts again");
    }
    let rejoined = cluster
        .wait_all_running(REJOIN)
        .await
        .expect("the broker node rejoins the cluster");
    eprintln!(
        "{fault:?}: the broker node is back in the cluster {:?} after the fault{}",
        hit.elapsed(),
        match &rejoined.restarted {
            Some(node) => format!(" (autoheal left a partition; restarted {node})"),
            None => String::new(),
        }
    );

    let (streamed, refusals) = stream.finish().await;
    eprintln!(
        "{fault:?}: {} writes streamed, {} refusals as read-only retried",
        streamed.len(),
        refusals
    );
    answers.extend(streamed);
    answers.extend(take_all(&master, "after", 10, WRITES_RESUME_WITHIN).await);
    let log = replog.wait_for_convergence(answers.len()).await;
    assert_well_formed(&log);
    assert_log_matches_answers(&log, &answers);
    // The queues still have their three replicas.
    let members = cluster
        .queue_members(&format!("{ns}.secondary.s2"))
        .await
        .expect("list_queues");
    assert_eq!(members.len(), CLUSTER_SIZE, "{members:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_broker_node_loses_no_acknowledged_write() {
    survives(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_broker_node_loses_no_acknowledged_write() {
    survives(Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_broker_node_loses_no_acknowledged_write() {
    survives(Fault::Freeze).await;
}

/// RabbitMQ 4.x dead-letters (or drops) a quorum-queue message after 20 deliveries by default;
/// replog declares no limit (3.x has none) and asks for the policy `delivery-limit: -1` on 4.x.
/// Here entries sit in a stopped secondary's quorum queue while a consumer requeues each of them
/// 25 times; all are still there, and the secondary gets every one from its queue.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_requeued_many_times_is_still_delivered() {
    // Runs of one entry: each `w=1` write below is its own message (a full run, so it does not
    // linger either), and the queue holds one message per entry while s1 is down.
    let mut replog = TestCluster::builder()
        .secondaries(&["s1"])
        .queue_type("quorum")
        .master_args(&["--run-entries", "1"])
        .start()
        .await;
    let master = replog.master();
    let mut answers = write_all(&master, &random_writes("first", 1, 2..=2), 1, DEADLINE).await;
    replog.wait_for_convergence(1).await;

    replog.kill("s1").await;
    answers.extend(write_all(&master, &random_writes("queued", 5, 1..=1), 1, DEADLINE).await);
    let queue = format!("{}.secondary.s1", replog.namespace());
    let report = requeue_repeatedly(
        &replog_testkit::test_cluster::amqp_url_from_env(),
        &queue,
        25,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|error| panic!("requeueing {queue}: {error}"));
    assert_eq!(
        report.deliveries,
        25 * report.messages_before as usize,
        "entries stopped coming back: {report:?}"
    );
    assert!(
        report.max_delivery_count >= 24,
        "the broker did not count the redeliveries: {report:?}"
    );
    // The five queued entries, and the warm-up one if s1's deferred ack had not gone out yet.
    assert!(report.messages_before >= 5, "{report:?}");
    assert_eq!(
        report.messages_after, report.messages_before,
        "entries left the queue: {report:?}"
    );

    replog.restart("s1").await;
    let log = replog.wait_for_convergence(6).await;
    assert_log_matches_answers(&log, &answers);
}

/// Sets `cluster_partition_handling` on a running broker node (not in its config file: a
/// restarted node reads `autoheal` again).
async fn set_partition_handling(cluster: &BrokerCluster, index: usize, mode: &str) {
    let expr = format!("application:set_env(rabbit, cluster_partition_handling, {mode}).");
    cluster
        .node(index)
        .rabbitmqctl(&["eval", &expr], Duration::from_secs(60))
        .await
        .expect("rabbitmqctl eval set_env");
}

/// RabbitMQ 3.10's autoheal once left a thawed node's partition reported for good, every node
/// running (the winner kept the thawed node in its partition list through each restart of the
/// thawed node's app), and the freeze test failed on it. That state is made here on purpose:
/// healing is switched off (`ignore`) on nodes 1 and 2, and node 1 is told, the way mnesia
/// tells it after a real partition, that it ran partitioned from node 3. Nothing clears it by
/// itself; the test kit's wait kills and starts node 3 after the grace (5 s here), and the cluster
/// is whole again.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_autoheal_leaves_is_mended_by_restarting_the_untrusted_node() {
    let mut cluster = broker_cluster().await;
    let began = Instant::now();
    let third = cluster.node(2).node_name().to_owned();
    HEALING_SWITCHED_OFF.store(true, Ordering::SeqCst);
    for index in 0..2 {
        set_partition_handling(&cluster, index, "ignore").await;
    }
    let event = format!(
        "rabbit_node_monitor ! {{mnesia_system_event, \
         {{inconsistent_database, running_partitioned_network, '{third}'}}}}, ok."
    );
    cluster
        .node(0)
        .rabbitmqctl(&["eval", &event], Duration::from_secs(60))
        .await
        .expect("rabbitmqctl eval: the partition event");
    eprintln!(
        "autoheal off on nodes 1 and 2, the partition event sent after {:?}",
        began.elapsed()
    );
    let reported = crate::helpers::wait_for(
        DEADLINE,
        &format!("node 1 reports the partition from {third} alone"),
        || async {
            let partitions = cluster.partitions(0).await.map_err(|e| e.to_string())?;
            if partitions.values().flatten().collect::<Vec<_>>() == vec![&third] {
                Ok(partitions)
            } else {
                Err(format!("partitions: {partitions:?}"))
            }
        },
    )
    .await;
    eprintln!("node 1 reports {reported:?} after {:?}", began.elapsed());

    cluster.set_autoheal_grace(Duration::from_secs(5));
    let waited = Instant::now();
    let rejoined = cluster.wait_all_running(REJOIN).await;
    eprintln!("the wait ended after {:?}: {rejoined:?}", waited.elapsed());
    cluster.set_autoheal_grace(AUTOHEAL_GRACE);
    let rejoined = rejoined.expect("the cluster is whole again");
    for index in 0..2 {
        set_partition_handling(&cluster, index, "autoheal").await;
    }
    HEALING_SWITCHED_OFF.store(false, Ordering::SeqCst);
    assert_eq!(rejoined.restarted, Some(third));
}
