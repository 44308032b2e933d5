//! A cluster for one integration test: a [`Cluster`] in a broker namespace of its own, with
//! everything a test needs around it and nothing it must remember to undo.
//!
//! - Each [`TestCluster`] gets a fresh namespace (`test-<uuid>`) and a directory under
//!   `$TMPDIR/replog-tests/<namespace>` for the nodes' logs and data.
//! - Dropping it kills the nodes (and reaps them), then deletes the namespace's queues and
//!   exchange from the broker ([`NamespaceGuard`]). When the test is panicking it first prints
//!   the tail of every node's log and keeps the directory; otherwise the directory goes.
//! - It is for tests: a node that cannot be started or asked is a panic carrying what went
//!   wrong, never an error to handle.
//!
//! The broker is `REPLOG_AMQP_URL` when set, else the local RabbitMQ (guest/guest), else the
//! one named with [`TestClusterBuilder::amqp_url`] (a [`crate::PrivateBroker`]).

use crate::binaries::{Binaries, Profile};
use crate::client::NodeClient;
use crate::cluster::{unique_namespace, Cluster, ClusterSpec, Ports};
use crate::namespace::{
    delete_queues_and_exchanges, publish_raw_entry, secondary_queue, NamespaceGuard,
};
use crate::node::{Node, NodeSpec};
use crate::wait::wait_for;
use replog_common::wire::EntryMessage;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming the broker tests use.
pub const AMQP_URL_ENV: &str = "REPLOG_AMQP_URL";

/// The broker tests use when `REPLOG_AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How many lines of each node's log a failed test prints.
const LOG_TAIL_LINES: usize = 60;

/// How long the cluster-wide waits ([`TestCluster::wait_for_convergence`],
/// [`TestCluster::wait_for_acks`]) may take. Generous because CI has two cores and runs two
/// clusters at once; a passing test never waits this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often those waits poll.
const POLL: Duration = Duration::from_millis(50);

/// A single request from a test gives up after this long: a write expected to stay pending is
/// bounded by the test's own deadlines; this only keeps a forgotten request from hanging the
/// suite.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a node may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// `--heartbeat-ms` of every secondary under [`TestClusterBuilder::fast_heartbeats`].
pub const FAST_HEARTBEAT_MS: u64 = 100;

/// The master's `--suspect-after-ms` under [`TestClusterBuilder::fast_heartbeats`]: five
/// missed heartbeats.
pub const FAST_SUSPECT_AFTER_MS: u64 = 500;

/// The master's `--unhealthy-after-ms` under [`TestClusterBuilder::fast_heartbeats`].
pub const FAST_UNHEALTHY_AFTER_MS: u64 = 1500;

/// The broker tests use: `REPLOG_AMQP_URL`, or the local RabbitMQ.
pub fn amqp_url_from_env() -> String {
    std::env::var(AMQP_URL_ENV).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// How to start a [`TestCluster`]; [`TestCluster::builder`] gives the default: secondaries
/// `s1,s2`, default flags, fixed ports.
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    /// Everything but the directory and namespace, which are chosen at start.
    spec: ClusterSpec,
    /// A namespace chosen by the test (e.g. to create broker users for it first); a fresh
    /// one otherwise.
    namespace: Option<String>,
    /// The `--api-token` of every node, which the cluster's clients present.
    token: Option<String>,
}

impl TestClusterBuilder {
    /// Points every node at this broker instead of the shared one.
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.spec.amqp_url = url.to_owned();
        self
    }

    /// Runs the cluster in `namespace` (which must be unique to the test) instead of a fresh
    /// one, e.g. [`crate::unique_namespace`]'s, chosen before the broker users the
    /// nodes log in as are created for it.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// The master's `--secondaries`.
    pub fn secondaries(mut self, ids: &[&str]) -> Self {
        self.spec.secondaries = strings(ids);
        self
    }

    /// Extra master flags, e.g. `["--dedup", "content"]`.
    pub fn master_args(mut self, args: &[&str]) -> Self {
        self.spec.master_args.extend(strings(args));
        self
    }

    /// Extra flags for one secondary, used whenever it starts, e.g.
    /// `("s2", ["--delay-ms", "1500"])`.
    pub fn secondary_args(mut self, id: &str, args: &[&str]) -> Self {
        self.spec
            .secondary_args_by_id
            .push((id.to_owned(), strings(args)));
        self
    }

    /// Extra flags for every secondary, used whenever one starts.
    pub fn every_secondary_args(mut self, args: &[&str]) -> Self {
        self.spec.secondary_args.extend(strings(args));
        self
    }

    /// Heartbeats every [`FAST_HEARTBEAT_MS`], a secondary suspected after
    /// [`FAST_SUSPECT_AFTER_MS`] of silence and unhealthy after [`FAST_UNHEALTHY_AFTER_MS`]:
    /// node states change within a second or two instead of ten.
    pub fn fast_heartbeats(self) -> Self {
        let heartbeat = FAST_HEARTBEAT_MS.to_string();
        let suspect = FAST_SUSPECT_AFTER_MS.to_string();
        let unhealthy = FAST_UNHEALTHY_AFTER_MS.to_string();
        self.every_secondary_args(&["--heartbeat-ms", &heartbeat])
            .master_args(&[
                "--suspect-after-ms",
                &suspect,
                "--unhealthy-after-ms",
                &unhealthy,
            ])
    }

    /// An environment variable for the master (e.g. `RUST_LOG`).
    pub fn master_env(mut self, key: &str, value: &str) -> Self {
        self.spec
            .master_env
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// An environment variable for every secondary.
    pub fn secondary_env(mut self, key: &str, value: &str) -> Self {
        self.spec
            .secondary_env
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// `--api-token` for every node (through `REPLOG_API_TOKEN`, so it is not on a command
    /// line): the clients [`TestCluster::master`] and [`TestCluster::secondary`] hand out
    /// present it, and the secondaries use it for catch-up from the master.
    pub fn api_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self.master_env("REPLOG_API_TOKEN", token)
            .secondary_env("REPLOG_API_TOKEN", token)
    }

    /// `--queue-type` for the master and every secondary.
    pub fn queue_type(mut self, kind: &str) -> Self {
        self.spec.queue_type = Some(kind.to_owned());
        self
    }

    /// Which ports the nodes listen on ([`Ports::Fixed`] unless told).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.spec.ports = ports;
        self
    }

    /// Starts the master and every configured secondary.
    pub async fn start(self) -> TestCluster {
        let ids = self.spec.secondaries.clone();
        let mut cluster = self.start_master_only().await;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        cluster.start_secondaries(&ids).await;
        cluster
    }

    /// Starts the master alone; secondaries come later with [`TestCluster::start_secondary`].
    pub async fn start_master_only(mut self) -> TestCluster {
        let binaries = Binaries::get(Profile::of_this_build()).unwrap_or_else(|e| panic!("{e}"));
        self.spec.namespace = self
            .namespace
            .take()
            .unwrap_or_else(|| unique_namespace("test"));
        self.spec.dir = std::env::temp_dir()
            .join("replog-tests")
            .join(&self.spec.namespace);
        std::fs::create_dir_all(&self.spec.dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.spec.dir.display()));
        // Armed before the master starts: its queues go even if it never prints its URL.
        let guard = NamespaceGuard::new(
            &self.spec.namespace,
            &self.spec.amqp_url,
            &self.spec.secondaries,
        );
        let cluster = match Cluster::start_master_only(&self.spec, &binaries).await {
            Ok(cluster) => cluster,
            Err(error) => panic!("{error}\nlogs kept in {}", self.spec.dir.display()),
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("the HTTP client builds");
        TestCluster {
            cluster,
            spec: self.spec,
            binaries,
            http,
            token: self.token,
            _guard: guard,
        }
    }
}

/// A master and its secondaries in a namespace of their own, torn down on drop (see the module
/// header).
pub struct TestCluster {
    /// The nodes. Dropped before the guard, after `Drop` killed them.
    cluster: Cluster,
    /// How the nodes were started, with the namespace and directory chosen.
    spec: ClusterSpec,
    /// The binaries, for a rival master.
    binaries: Binaries,
    /// One connection pool for every client this cluster hands out.
    http: reqwest::Client,
    /// The nodes' `--api-token`, presented by every client this cluster hands out.
    token: Option<String>,
    /// Deletes the namespace from the broker once the nodes are dead.
    _guard: NamespaceGuard,
}

impl TestCluster {
    /// The default cluster: secondaries `s1,s2`, default flags, fixed ports.
    pub fn builder() -> TestClusterBuilder {
        let mut spec = ClusterSpec::new(PathBuf::new(), amqp_url_from_env());
        spec.startup_timeout = STARTUP_TIMEOUT;
        TestClusterBuilder {
            spec,
            namespace: None,
            token: None,
        }
    }

    /// Master plus `s1` and `s2`, all with default flags.
    pub async fn start() -> TestCluster {
        TestCluster::builder().start().await
    }

    /// `test-<uuid>`: the prefix of this cluster's broker names.
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    /// Where the nodes' logs and data directories are.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// A client for the master; its URL holds across the master's restarts.
    pub fn master(&self) -> NodeClient {
        self.client(NodeClient::with_client(
            self.cluster.master.url(),
            self.http.clone(),
        ))
    }

    /// A client for a started secondary, valid until it restarts.
    pub fn secondary(&self, id: &str) -> NodeClient {
        self.client(NodeClient::with_client(
            self.secondary_node(id).url(),
            self.http.clone(),
        ))
    }

    /// `client` with the cluster's token, if it has one.
    fn client(&self, client: NodeClient) -> NodeClient {
        match &self.token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        }
    }

    /// The master's process.
    pub fn master_node(&self) -> &Node {
        &self.cluster.master
    }

    /// A started secondary's process.
    pub fn secondary_node(&self, id: &str) -> &Node {
        self.cluster
            .secondary_ref(id)
            .unwrap_or_else(|| panic!("secondary {id} was never started"))
    }

    /// `master` or a started secondary's process, to kill, freeze or restart it.
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        if name == self.cluster.master.name() {
            return &mut self.cluster.master;
        }
        self.cluster
            .secondary(name)
            .unwrap_or_else(|| panic!("secondary {name} was never started"))
    }

    /// Starts one configured secondary with the flags the builder gave it.
    pub async fn start_secondary(&mut self, id: &str) -> NodeClient {
        self.start_secondaries(&[id]).await;
        self.secondary(id)
    }

    /// Starts several configured secondaries at once.
    pub async fn start_secondaries(&mut self, ids: &[&str]) {
        if let Err(error) = self.cluster.start_secondaries(ids).await {
            panic!("{error}");
        }
    }

    /// SIGKILL to `master` or a secondary: what it did not store is lost, its data directory
    /// stays.
    pub async fn kill(&mut self, name: &str) {
        let node = self.node_mut(name);
        node.kill9()
            .await
            .unwrap_or_else(|error| panic!("cannot kill {name}: {error}"));
    }

    /// Starts `master` or a secondary again (killing it first if it runs), with the same flags,
    /// data directory and address.
    pub async fn restart(&mut self, name: &str) {
        let node = self.node_mut(name);
        node.restart()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Deletes everything a killed node stored, as if its disk were replaced.
    pub fn wipe_state(&self, name: &str) {
        let node = if name == self.cluster.master.name() {
            &self.cluster.master
        } else {
            self.secondary_node(name)
        };
        assert!(!node.is_running(), "kill {name} before wiping its state");
        let data = node
            .data_dir()
            .unwrap_or_else(|| panic!("{name} has no --data-dir"));
        // Missing would mean the node keeps its state elsewhere and this wipes nothing.
        std::fs::remove_dir_all(&data)
            .unwrap_or_else(|error| panic!("cannot remove {}: {error}", data.display()));
    }

    /// The master and every running secondary, each with its name.
    pub fn running_nodes(&self) -> Vec<(String, NodeClient)> {
        let secondaries = self.cluster.secondaries.iter().filter(|n| n.is_running());
        std::iter::once(&self.cluster.master)
            .chain(secondaries)
            .map(|node| {
                let client = self.client(NodeClient::with_client(node.url(), self.http.clone()));
                (node.name().to_owned(), client)
            })
            .collect()
    }

    /// Waits until the master and every running secondary list the same `len` entries, and
    /// returns them. Each secondary must at every look show a prefix of the master's log: a
    /// gap, a reordering or a foreign entry fails at once instead of at the deadline, and so
    /// does a master holding more than `len`.
    pub async fn wait_for_convergence(&self, len: usize) -> Vec<EntryMessage> {
        let what = format!("every node lists the same {len} entries");
        let master = self.master();
        let secondaries: Vec<(String, NodeClient)> =
            self.running_nodes().into_iter().skip(1).collect();
        let probe = || {
            let master = master.clone();
            let secondaries = secondaries.clone();
            async move {
                let mut shown = Vec::new();
                for (name, client) in &secondaries {
                    shown.push((name.clone(), read_log(name, client).await));
                }
                // Read after the secondaries: the master's log only grows, so it covers what
                // they showed.
                let log = read_log("master", &master).await;
                let mut seen = vec![format!("master: {} entries", log.len())];
                for (name, entries) in &shown {
                    assert_prefix(name, entries, &log);
                    seen.push(format!("{name}: {} entries", entries.len()));
                }
                assert!(
                    log.len() <= len,
                    "the master holds {} entries, more than the {len} written: {}",
                    log.len(),
                    describe_log(&log)
                );
                let done = log.len() == len && shown.iter().all(|(_, e)| e.len() == len);
                if done {
                    Ok(log)
                } else {
                    Err(seen.join(", "))
                }
            }
        };
        wait_for(DEADLINE, POLL, &what, probe)
            .await
            .unwrap_or_else(|timeout| panic!("{timeout}"))
    }

    /// Waits until the master's `/health` reports every configured secondary's `acked` at
    /// `order` or beyond.
    pub async fn wait_for_acks(&self, order: u64) {
        let what = format!("the master reports every secondary acked {order}");
        let master = self.master();
        let configured = self.spec.secondaries.len();
        let probe = || {
            let master = master.clone();
            async move {
                let health = master.master_health().await.map_err(|e| e.to_string())?;
                let positions = &health.secondaries;
                if positions.len() == configured && positions.iter().all(|s| s.acked >= order) {
                    Ok(())
                } else {
                    Err(format!("{health:?}"))
                }
            }
        };
        wait_for(DEADLINE, POLL, &what, probe)
            .await
            .unwrap_or_else(|timeout| panic!("{timeout}"))
    }

    /// Deletes a secondary's queue from the broker, as an operator tidying up would: whatever
    /// it held is gone.
    pub async fn delete_secondary_queue(&self, id: &str) {
        let queue = secondary_queue(&self.spec.namespace, id)
            .unwrap_or_else(|| panic!("{id:?} is not a valid node id"));
        delete_queues_and_exchanges(&self.spec.amqp_url, std::slice::from_ref(&queue), &[])
            .await
            .unwrap_or_else(|error| panic!("cannot delete {queue}: {error}"));
    }

    /// Starts a second process as secondary `id` (which must have been started), with its
    /// flags but a port and an empty data directory of its own: an operator's mistake the
    /// cluster must survive. It dies when dropped; its log stays in [`TestCluster::dir`].
    pub async fn start_twin_secondary(&self, id: &str) -> Node {
        let name = format!("{id}-twin");
        let mut spec: NodeSpec = self.secondary_node(id).spec().clone();
        let port = crate::ports::free_port().unwrap_or_else(|e| panic!("{e}"));
        spec.name = name.clone();
        spec.dir = self.spec.dir.join(&name);
        spec.log = self.spec.dir.join(format!("{name}.log"));
        spec.set_flag("--listen", format!("127.0.0.1:{port}"));
        let data = spec.dir.join("data").to_string_lossy().into_owned();
        spec.set_flag("--data-dir", data);
        Node::start(spec)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Publishes `payload` to this cluster's acks queue (`<ns>.acks`) as a secondary would,
    /// waiting for the broker's confirm: a forged or malformed report.
    pub async fn publish_to_acks(&self, payload: &[u8]) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let queue = format!("{}.acks", self.spec.namespace);
        let publish = async {
            let connection = lapin::Connection::connect(
                &self.spec.amqp_url,
                lapin::ConnectionProperties::default(),
            )
            .await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    lapin::BasicProperties::default(),
                )
                .await?
                .await?;
            let _ = connection.close(200, "published".into()).await;
            Ok::<_, lapin::Error>(confirm)
        };
        let confirm = publish
            .await
            .unwrap_or_else(|error| panic!("cannot publish to {queue}: {error}"));
        // An ack with a returned message means no queue took it (mandatory publish).
        let taken = matches!(confirm, lapin::Confirmation::Ack(None));
        assert!(
            taken,
            "the broker did not take the report for {queue}: {confirm:?}"
        );
    }

    /// Publishes `payload` on this cluster's entries exchange as if a master had sent it: every
    /// secondary's queue gets it. For forged and conflicting entries.
    pub async fn publish_raw_entry(&self, payload: &[u8]) {
        publish_raw_entry(&self.spec.amqp_url, &self.spec.namespace, payload)
            .await
            .unwrap_or_else(|error| panic!("cannot publish a raw entry: {error}"));
    }

    /// Starts a second master in this cluster's namespace, with the master's flags but a port
    /// and data directory of its own: a misconfiguration the cluster must survive. It dies when
    /// dropped; its log stays in [`TestCluster::dir`].
    pub async fn start_rival_master(&self) -> Node {
        let name = "rival-master";
        let mut spec: NodeSpec = self.cluster.master.spec().clone();
        let port = crate::ports::free_port().unwrap_or_else(|e| panic!("{e}"));
        spec.name = name.to_owned();
        spec.binary = self.binaries.master.clone();
        spec.dir = self.spec.dir.join(name);
        spec.log = self.spec.dir.join(format!("{name}.log"));
        spec.set_flag("--listen", format!("127.0.0.1:{port}"));
        let data = spec.dir.join("data").to_string_lossy().into_owned();
        spec.set_flag("--data-dir", data);
        Node::start(spec)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Reaped before the guard deletes the namespace, or a node could declare it again.
        self.cluster.master.kill_now();
        for node in &mut self.cluster.secondaries {
            node.kill_now();
        }
        if std::thread::panicking() {
            eprintln!("namespace: {}", self.spec.namespace);
            eprint!("{}", self.cluster.master.log_tail(LOG_TAIL_LINES));
            for node in &self.cluster.secondaries {
                eprint!("{}", node.log_tail(LOG_TAIL_LINES));
            }
            eprintln!("\nlogs kept in {}", self.spec.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.spec.dir);
        }
    }
}

/// The whole log a node shows; a node that does not answer fails the test.
async fn read_log(name: &str, client: &NodeClient) -> Vec<EntryMessage> {
    client
        .all_messages()
        .await
        .unwrap_or_else(|error| panic!("GET /messages on {name}: {error}"))
}

/// Fails unless `entries` is exactly the start of `log`.
pub fn assert_prefix(name: &str, entries: &[EntryMessage], log: &[EntryMessage]) {
    let agrees = entries.len() <= log.len() && entries == &log[..entries.len()];
    assert!(
        agrees,
        "{name} shows entries that are not a prefix of the master's log\n{name}: {}\nmaster: {}",
        describe_log(entries),
        describe_log(log)
    );
}

/// A short rendering of a log for failure messages: `order:content`, the first 40.
pub fn describe_log(entries: &[EntryMessage]) -> String {
    let shown: Vec<String> = entries
        .iter()
        .take(40)
        .map(|e| format!("{}:{}", e.order, e.content))
        .collect();
    let more = entries.len().saturating_sub(shown.len());
    if more > 0 {
        format!("[{} …and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}
