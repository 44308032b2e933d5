//! A private three-node RabbitMQ cluster: three [`PrivateBroker`]s on free ports, sharing one
//! Erlang cookie (one temporary `HOME`), joined into one cluster the way an operator would:
//! the second and third run `rabbitmqctl stop_app`, `join_cluster FIRST`, `start_app`.
//!
//! ```text
//! <dir>/home/.erlang.cookie   written before the first start, shared by every node and rabbitmqctl
//! <dir>/node-1/               the first node's PrivateBroker directory (mnesia/, log/, pid, ...)
//! <dir>/node-2/, <dir>/node-3/
//! ```
//!
//! Each node has its own `RABBITMQ_NODENAME`, `RABBITMQ_NODE_PORT`, `RABBITMQ_DIST_PORT`,
//! `RABBITMQ_MNESIA_BASE`, `RABBITMQ_LOG_BASE` and `RABBITMQ_PID_FILE` (see [`crate::broker`]).
//! Two settings differ from a lone node, both so that faults heal within a test's deadlines:
//! `net_ticktime` is 10 s (peers notice a frozen node in 10-15 s instead of 60-75 s), and
//! `cluster_partition_handling = autoheal`: a node thawed after its peers gave up on it comes
//! back talking to them at once, never counting itself a minority, so `pause_minority` would
//! leave the cluster partitioned (seen: mnesia's `inconsistent_database` and no healing);
//! autoheal restarts the losing side, and the node rejoins. Autoheal itself was seen to leave
//! the partition in place for minutes (twice); [`BrokerCluster::wait_all_running`] then
//! restarts the untrusted node by hand, as RabbitMQ's partition guide says an operator should.
//!
//! One node at a time can be killed (SIGKILL), stopped, started, frozen (SIGSTOP) and thawed;
//! [`BrokerCluster::amqp_urls`] lists every node for `--amqp-url`. Dropping the cluster stops its
//! nodes; a cluster kept in a `static` (never dropped) is reaped by
//! [`BrokerCluster::reap_when_process_exits`].
//!
//! Measured on the 2-core test machine (RabbitMQ 3.10.8): three nodes start in parallel and
//! join in 16-70 s; 115 s with both cores saturated by two busy loops.

use crate::broker::{BrokerError, BrokerOptions, Member, PrivateBroker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many nodes a [`BrokerCluster`] has: the smallest cluster that keeps a majority when one
/// node is lost.
pub const CLUSTER_SIZE: usize = 3;

/// How long one `rabbitmqctl` command may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings every member adds to its `rabbitmq.conf`.
const MEMBER_CONF: &str = "cluster_partition_handling = autoheal\n";

/// How long [`BrokerCluster::wait_all_running`] waits for `autoheal` before it restarts the
/// untrusted node itself: autoheal takes seconds when it works, and its loser gives up waiting
/// for the winner after 60 s (`autoheal_state_transition_timeout`), which healed the cluster
/// 62 s after the thaw when it happened.
pub const AUTOHEAL_GRACE: Duration = Duration::from_secs(90);

/// Every member's `advanced.config`: a frozen peer is noticed after about `net_ticktime`.
const MEMBER_ADVANCED_CONFIG: &str = "[{kernel, [{net_ticktime, 10}]}].\n";

/// Three RabbitMQ nodes of our own, clustered.
#[derive(Debug)]
pub struct BrokerCluster {
    /// The nodes; `nodes[0]` is the one the others joined.
    nodes: Vec<PrivateBroker>,
    /// The cluster's directory (removed on drop unless kept).
    dir: ClusterDir,
    /// See [`BrokerCluster::set_autoheal_grace`].
    autoheal_grace: Duration,
}

/// Where the cluster's files live, and whether they go when it does.
#[derive(Debug)]
enum ClusterDir {
    /// Removed on drop.
    Temporary(tempfile::TempDir),
    /// Left in place.
    Kept(PathBuf),
}

impl BrokerCluster {
    /// Creates three nodes in a fresh directory, starts them in parallel and joins the second
    /// and third to the first; returns once all three run as one cluster.
    pub async fn start_new(options: BrokerOptions) -> Result<BrokerCluster, BrokerError> {
        let began = Instant::now();
        // In `options.dir` when given (kept there when told), else a fresh temporary directory.
        let temporary = match &options.dir {
            Some(path) => {
                std::fs::create_dir_all(path)
                    .map_err(|source| io(&format!("create {}", path.display()), source))?;
                tempfile::Builder::new()
                    .prefix("broker-cluster-")
                    .tempdir_in(path)
            }
            None => tempfile::Builder::new()
                .prefix("replog-broker-cluster-")
                .tempdir(),
        }
        .map_err(|source| io("create the cluster directory", source))?;
        let dir = if options.keep_dir {
            ClusterDir::Kept(temporary.keep())
        } else {
            ClusterDir::Temporary(temporary)
        };
        let root = dir.path().to_path_buf();
        let home = root.join("home");
        write_cookie(&home)?;
        let mut nodes = Vec::with_capacity(CLUSTER_SIZE);
        for index in 1..=CLUSTER_SIZE {
            let node_options = BrokerOptions {
                dir: Some(root.join(format!("node-{index}"))),
                // The cluster's directory owns the nodes' files.
                keep_dir: true,
                ..options.clone()
            };
            let member = Member {
                home: home.clone(),
                extra_conf: MEMBER_CONF.to_owned(),
                advanced_config: MEMBER_ADVANCED_CONFIG.to_owned(),
            };
            nodes.push(PrivateBroker::create(node_options, Some(member))?);
        }
        let mut cluster = BrokerCluster {
            nodes,
            dir,
            autoheal_grace: AUTOHEAL_GRACE,
        };
        futures_util::future::try_join_all(cluster.nodes.iter_mut().map(|node| node.start()))
            .await?;
        let first = cluster.nodes[0].node_name().to_owned();
        for node in &cluster.nodes[1..] {
            node.rabbitmqctl(&["stop_app"], CTL_TIMEOUT).await?;
            node.rabbitmqctl(&["join_cluster", &first], CTL_TIMEOUT)
                .await?;
            node.rabbitmqctl(&["start_app"], CTL_TIMEOUT).await?;
        }
        cluster.wait_all_running(options.start_timeout).await?;
        tracing::info!(
            nodes = ?cluster.nodes.iter().map(|n| n.node_name()).collect::<Vec<_>>(),
            took = ?began.elapsed(),
            "private broker cluster started"
        );
        Ok(cluster)
    }

    /// Every node's AMQP URL, comma-separated, in node order: the value for `--amqp-url`.
    pub fn amqp_urls(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateBroker::amqp_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[PrivateBroker] {
        &self.nodes
    }

    /// One node (0-based).
    pub fn node(&self, index: usize) -> &PrivateBroker {
        &self.nodes[index]
    }

    /// One node (0-based), to act on it directly.
    pub fn node_mut(&mut self, index: usize) -> &mut PrivateBroker {
        &mut self.nodes[index]
    }

    /// The node listening on this AMQP port, if any.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port() == port)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL to one node's VM.
    pub async fn kill(&mut self, index: usize) -> Result<(), BrokerError> {
        self.nodes[index].kill().await
    }

    /// `rabbitmqctl stop` on one node.
    pub async fn stop(&mut self, index: usize) -> Result<(), BrokerError> {
        self.nodes[index].stop().await
    }

    /// Starts one node again on its data; it rejoins the cluster by itself.
    pub async fn start(&mut self, index: usize) -> Result<(), BrokerError> {
        self.nodes[index].start().await
    }

    /// SIGSTOP to one node's VM.
    pub fn freeze(&mut self, index: usize) -> Result<(), BrokerError> {
        self.nodes[index].freeze()
    }

    /// SIGCONT to one node's VM.
    pub fn thaw(&mut self, index: usize) -> Result<(), BrokerError> {
        self.nodes[index].thaw()
    }

    /// The indexes of the nodes that run and are not frozen, in order.
    pub fn healthy_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| self.nodes[index].is_running() && !self.nodes[index].is_frozen())
            .collect()
    }

    /// The index of some node that runs and is not frozen, other than `except`.
    pub fn healthy_node(&self, except: Option<usize>) -> Option<usize> {
        self.healthy_nodes()
            .into_iter()
            .find(|&index| Some(index) != except)
    }

    /// The cluster's running nodes as `node` sees them (`rabbitmqctl cluster_status`).
    pub async fn running_nodes(&self, via: usize) -> Result<Vec<String>, BrokerError> {
        Ok(self.cluster_status(via).await?.running)
    }

    /// The partitions the running nodes report, as `via` lists them: for each reporting node,
    /// the nodes it is partitioned from (empty when the cluster is whole).
    pub async fn partitions(
        &self,
        via: usize,
    ) -> Result<BTreeMap<String, Vec<String>>, BrokerError> {
        Ok(self.cluster_status(via).await?.partitions)
    }

    /// `rabbitmqctl cluster_status` on `via`: the running nodes, and the partitions each node
    /// reports.
    async fn cluster_status(&self, via: usize) -> Result<ClusterStatus, BrokerError> {
        let out = self.nodes[via]
            .rabbitmqctl(&["cluster_status", "--formatter", "json"], CTL_TIMEOUT)
            .await?;
        first_json(&out)
            .as_ref()
            .and_then(ClusterStatus::parse)
            .ok_or_else(|| BrokerError::Command {
                command: "rabbitmqctl cluster_status --formatter json".into(),
                status: "no running_nodes in its output".into(),
                output: out,
                log_tail: String::new(),
            })
    }

    /// How long [`BrokerCluster::wait_all_running`] leaves a partition to `autoheal` before it
    /// restarts the untrusted node itself; [`AUTOHEAL_GRACE`] unless set.
    pub fn set_autoheal_grace(&mut self, grace: Duration) {
        self.autoheal_grace = grace;
    }

    /// Waits until every node is running, seen running by a healthy node, and no partition is
    /// reported: a restarted or thawed node has rejoined.
    ///
    /// `autoheal` mends a partition within seconds, but RabbitMQ 3.10's was seen to take
    /// longer in two ways after a thaw. (a) The loser stops and waits for a "safe to start"
    /// that the winner never sends, until its own 60 s timeout; the cluster then heals. (b)
    /// Two contradictory decisions (the thawed node first won, by the stale connections it
    /// still counted, and restarted a peer; then it lost): the winner kept the thawed node in
    /// its partition list through every restart of the thawed node's app and asked for another
    /// restart each minute, with every node running and the partition reported for good.
    ///
    /// So once the cluster has not been whole for the grace ([`AUTOHEAL_GRACE`], well past
    /// (a)'s timeout) while every node's VM ran unfrozen, the untrusted node is restarted the
    /// way RabbitMQ's partition guide says to by hand: killed (SIGKILL) and started again. It
    /// is the one node the partition lists of all running nodes name most, strictly; on a tie,
    /// or with no partition reported, nothing is restarted and the wait goes on. A peer clears
    /// its partition list when it sees the node's rabbit go down while the node is unreachable:
    /// a killed VM always is, an app stopped in place (what autoheal and `rabbitmqctl stop` do
    /// first) may still answer then. Quorum queues lose nothing by it (the same as a crash of
    /// one node of three). At most one node is restarted per call; the answer names it.
    pub async fn wait_all_running(&mut self, timeout: Duration) -> Result<Rejoined, BrokerError> {
        let deadline = Instant::now() + timeout;
        let mut not_whole_since: Option<Instant> = None;
        let mut rejoined = Rejoined::default();
        let mut start_error: Option<String> = None;
        let mut last = String::new();
        loop {
            let every_vm_up = self.healthy_nodes().len() == self.nodes.len();
            if let Some(via) = self.healthy_node(None) {
                match self.cluster_status(via).await {
                    Ok(status) if status.is_whole(self.nodes.len()) => return Ok(rejoined),
                    Ok(status) => {
                        last = format!(
                            "running: {:?}, partitions: {:?}",
                            status.running, status.partitions
                        );
                        not_whole_since =
                            every_vm_up.then(|| not_whole_since.unwrap_or_else(Instant::now));
                        if not_whole_since
                            .is_some_and(|since| since.elapsed() >= self.autoheal_grace)
                            && rejoined.restarted.is_none()
                        {
                            if let Some((node, started)) =
                                self.restart_untrusted_node(&last).await?
                            {
                                rejoined.restarted = Some(node);
                                start_error = started.err().map(|error| error.to_string());
                                // However long the restart took, look once more before the
                                // deadline is checked.
                                continue;
                            }
                        }
                    }
                    Err(error) => last = error.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::Command {
                    command: "rabbitmqctl cluster_status (waiting for every node)".into(),
                    status: format!(
                        "not all {} nodes running after {timeout:?}{}",
                        self.nodes.len(),
                        match (&rejoined.restarted, &start_error) {
                            (Some(node), None) => format!(" (restarted {node})"),
                            (Some(node), Some(error)) => {
                                format!(" (restarted {node}; its start answered: {error})")
                            }
                            (None, _) => String::new(),
                        }
                    ),
                    output: last,
                    log_tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills (SIGKILL) and starts again the node the partition lists of all running nodes
    /// name most, if one node is named strictly most: its name, and how its start ended (a
    /// start that outlasts its timeout on a loaded machine may still finish, so that is no
    /// reason to stop waiting). `seen` is the cluster status that called for it, for the log.
    async fn restart_untrusted_node(
        &mut self,
        seen: &str,
    ) -> Result<Option<(String, Result<(), BrokerError>)>, BrokerError> {
        let mut partitions = BTreeMap::new();
        for index in self.healthy_nodes() {
            if let Ok(status) = self.cluster_status(index).await {
                partitions.extend(status.partitions);
            }
        }
        let Some(untrusted) = most_named(&partitions) else {
            tracing::warn!(
                seen,
                ?partitions,
                "the cluster is not whole after the autoheal grace, and no one node is untrusted; \
                 waiting on"
            );
            return Ok(None);
        };
        let Some(node) = self
            .nodes
            .iter_mut()
            .find(|node| node.node_name() == untrusted)
        else {
            return Ok(None);
        };
        tracing::warn!(
            node = untrusted,
            grace = ?self.autoheal_grace,
            seen,
            ?partitions,
            "the cluster is not whole after the autoheal grace; killing and starting the node"
        );
        node.kill().await?;
        let started = node.start().await;
        if let Err(error) = &started {
            tracing::warn!(node = untrusted, %error, "the restarted node did not start in time; waiting on");
        }
        Ok(Some((untrusted, started)))
    }

    /// The client connections the cluster holds: (the name the client gave its connection, the
    /// broker node's AMQP port it is connected to), from `rabbitmqctl list_connections name port` on a healthy node.
    /// This is how a test finds the broker node a replog node is on without the management
    /// plugin.
    pub async fn connections(&self) -> Result<Vec<(String, u16)>, BrokerError> {
        let via = self.healthy_node(None).ok_or(BrokerError::NotRunning)?;
        let out = self.nodes[via]
            .rabbitmqctl(
                &[
                    "list_connections",
                    "client_properties",
                    "port",
                    "--formatter",
                    "json",
                ],
                CTL_TIMEOUT,
            )
            .await?;
        let json = first_json(&out).unwrap_or_default();
        Ok(json
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| {
                        let name = connection_name(&row["client_properties"]);
                        let port = u16::try_from(row["port"].as_u64()?).ok()?;
                        Some((name, port))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The members of a quorum queue (`rabbitmqctl list_queues name members`), as node names.
    pub async fn queue_members(&self, queue: &str) -> Result<Vec<String>, BrokerError> {
        let via = self.healthy_node(None).ok_or(BrokerError::NotRunning)?;
        let out = self.nodes[via]
            .rabbitmqctl(
                &["list_queues", "name", "members", "--formatter", "json"],
                CTL_TIMEOUT,
            )
            .await?;
        let json = first_json(&out).unwrap_or_default();
        let members = json.as_array().and_then(|rows| {
            rows.iter()
                .find(|row| row["name"].as_str() == Some(queue))
                .and_then(|row| row["members"].as_array().cloned())
        });
        Ok(members
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect())
    }

    /// Starts a watchdog process that kills every node (by its pid file) and removes the
    /// cluster's directory once this process has exited: for a cluster kept in a `static`,
    /// which is never dropped.
    pub fn reap_when_process_exits(&self) -> Result<(), BrokerError> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let remove = matches!(self.dir, ClusterDir::Temporary(_));
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             for f in '{dir}'/node-*/pid; do [ -f \"$f\" ] && kill -CONT \"$(cat \"$f\")\" 2>/dev/null; \
             [ -f \"$f\" ] && kill -9 \"$(cat \"$f\")\" 2>/dev/null; done; {cleanup}",
            parent = std::process::id(),
            cleanup = if remove {
                format!("rm -rf '{dir}'")
            } else {
                String::new()
            },
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|source| io("start the broker cluster's watchdog", source))
    }
}

/// What [`BrokerCluster::wait_all_running`] had to do for the cluster to be whole.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejoined {
    /// The node killed and started again because `autoheal` left a partition; `None` when the
    /// cluster came together by itself.
    pub restarted: Option<String>,
}

/// What `rabbitmqctl cluster_status --formatter json` says of the cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ClusterStatus {
    /// The running nodes.
    running: Vec<String>,
    /// For each node that reports a partition, the nodes it is partitioned from.
    partitions: BTreeMap<String, Vec<String>>,
}

impl ClusterStatus {
    /// Reads `running_nodes` and `partitions` (an object of node → nodes, as RabbitMQ 3.x
    /// prints it; a list of `[node, [nodes]]` pairs is read too); `None` without
    /// `running_nodes`.
    fn parse(json: &serde_json::Value) -> Option<ClusterStatus> {
        let names = |value: &serde_json::Value| -> Option<Vec<String>> {
            value.as_array().map(|list| {
                list.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let partitions = match &json["partitions"] {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(node, from)| (node.clone(), names(from).unwrap_or_default()))
                .collect(),
            serde_json::Value::Array(pairs) => pairs
                .iter()
                .filter_map(|pair| {
                    Some((
                        pair[0].as_str()?.to_owned(),
                        names(&pair[1]).unwrap_or_default(),
                    ))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        Some(ClusterStatus {
            running: names(&json["running_nodes"])?,
            partitions,
        })
    }

    /// Every one of `size` nodes runs and none reports a partition.
    fn is_whole(&self, size: usize) -> bool {
        self.running.len() == size && self.partitions.is_empty()
    }
}

/// The node that the most reporters say they are partitioned from, if one is named strictly
/// most (a thawed node is named by each of its peers, each peer only by the thawed node).
fn most_named(partitions: &BTreeMap<String, Vec<String>>) -> Option<String> {
    let mut named: BTreeMap<&str, usize> = BTreeMap::new();
    for from in partitions.values() {
        for node in from {
            *named.entry(node.as_str()).or_default() += 1;
        }
    }
    let most = named.values().copied().max()?;
    let mut top = named.into_iter().filter(|&(_, count)| count == most);
    match (top.next(), top.next()) {
        (Some((node, _)), None) => Some(node.to_owned()),
        _ => None,
    }
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temporary(dir) => dir.path(),
            ClusterDir::Kept(path) => path,
        }
    }
}

/// The cookie every node and `rabbitmqctl` read from `HOME`; written before any node starts so
/// that three first starts cannot race to create three different ones.
fn write_cookie(home: &Path) -> Result<(), BrokerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(home).map_err(|source| io("create the cluster's HOME", source))?;
    let cookie = home.join(".erlang.cookie");
    let value = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    std::fs::write(&cookie, value).map_err(|source| io("write the Erlang cookie", source))?;
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
        .map_err(|source| io("restrict the Erlang cookie", source))
}

/// The `connection_name` among a connection's client properties as `rabbitmqctl` prints them
/// in JSON (`["connection_name", "longstr", "..."]` items, or an object); the whole properties
/// text when it is not found, so a `contains` still matches.
fn connection_name(properties: &serde_json::Value) -> String {
    let from_items = properties.as_array().and_then(|items| {
        items.iter().find_map(|item| {
            let item = item.as_array()?;
            (item.first()?.as_str()? == "connection_name")
                .then(|| item.last()?.as_str().map(str::to_owned))
                .flatten()
        })
    });
    from_items
        .or_else(|| properties["connection_name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| properties.to_string())
}

/// The JSON document in `rabbitmqctl --formatter json` output (which may have other lines).
fn first_json(out: &str) -> Option<serde_json::Value> {
    let start = out.find(['[', '{'])?;
    serde_json::from_str(&out[start..]).ok()
}

fn io(what: &str, source: std::io::Error) -> BrokerError {
    BrokerError::Io {
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(json: serde_json::Value) -> ClusterStatus {
        ClusterStatus::parse(&json).expect("running_nodes")
    }

    #[test]
    fn a_thawed_node_named_by_both_peers_is_the_untrusted_node() {
        let status = status(json!({
            "running_nodes": ["a@h", "b@h", "c@h"],
            "partitions": {"a@h": ["c@h"], "b@h": ["c@h"], "c@h": ["a@h", "b@h"]},
        }));
        assert!(!status.is_whole(3));
        assert_eq!(most_named(&status.partitions), Some("c@h".to_owned()));
    }

    #[test]
    fn the_list_form_of_partitions_is_read_too() {
        let status = status(json!({
            "running_nodes": ["a@h", "b@h", "c@h"],
            "partitions": [["a@h", ["c@h"]]],
        }));
        assert_eq!(most_named(&status.partitions), Some("c@h".to_owned()));
    }

    #[test]
    fn no_partitions_and_every_node_running_is_whole() {
        let status = status(json!({
            "running_nodes": ["a@h", "b@h", "c@h"],
            "partitions": {},
        }));
        assert!(status.is_whole(3));
        assert!(!status.is_whole(4));
        assert_eq!(most_named(&status.partitions), None);
    }

    #[test]
    fn a_tie_names_no_node() {
        let status = status(json!({
            "running_nodes": ["a@h", "b@h", "c@h"],
            "partitions": {"a@h": ["c@h"], "c@h": ["a@h"]},
        }));
        assert_eq!(most_named(&status.partitions), None);
    }

    #[test]
    fn output_without_running_nodes_is_not_a_status() {
        assert_eq!(ClusterStatus::parse(&serde_json::Value::Null), None);
        assert_eq!(ClusterStatus::parse(&json!({"partitions": {}})), None);
    }
}
