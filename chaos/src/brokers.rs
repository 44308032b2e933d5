//! The broker the checker runs replog on: one private RabbitMQ node (the default), or a private
//! cluster of three (`--broker-nodes 3`, with quorum queues). Broker faults act on one node at
//! a time, so a cluster never loses a majority for longer than one fault's pause.

use replog_testkit::{BrokerCluster, BrokerError, BrokerOptions, PrivateBroker};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a cluster node may take to rejoin after the final heal.
const REJOIN: Duration = Duration::from_secs(240);

/// One private broker node, or a private cluster.
#[derive(Debug)]
pub enum Brokers {
    /// One node.
    Single(PrivateBroker),
    /// Three clustered nodes.
    Cluster(BrokerCluster),
}

impl Brokers {
    /// Starts `nodes` broker nodes (1, or 3 as a cluster) with their files under `dir`.
    pub async fn start(nodes: usize, dir: &Path) -> Result<Brokers, BrokerError> {
        if nodes <= 1 {
            let broker = PrivateBroker::start_new(BrokerOptions {
                dir: Some(dir.join("broker")),
                keep_dir: true,
                ..BrokerOptions::default()
            })
            .await?;
            Ok(Brokers::Single(broker))
        } else {
            // Under the run directory, which keeps or removes it with the nodes' logs; the
            // watchdog kills its VMs should the checker itself die.
            let cluster = BrokerCluster::start_new(BrokerOptions {
                dir: Some(dir.to_path_buf()),
                keep_dir: true,
                ..BrokerOptions::default()
            })
            .await?;
            cluster.reap_when_process_exits()?;
            Ok(Brokers::Cluster(cluster))
        }
    }

    /// How many broker nodes there are.
    pub fn len(&self) -> usize {
        match self {
            Brokers::Single(_) => 1,
            Brokers::Cluster(cluster) => cluster.nodes().len(),
        }
    }

    /// Always false: there is at least one broker node.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `--amqp-url` for the replog nodes: the node, or every node of the cluster.
    pub fn amqp_url(&self) -> String {
        match self {
            Brokers::Single(broker) => broker.amqp_url(),
            Brokers::Cluster(cluster) => cluster.amqp_urls(),
        }
    }

    /// A broker node (0-based).
    pub fn node(&self, index: usize) -> &PrivateBroker {
        match self {
            Brokers::Single(broker) => broker,
            Brokers::Cluster(cluster) => cluster.node(index),
        }
    }

    /// A broker node, to act on it.
    pub fn node_mut(&mut self, index: usize) -> &mut PrivateBroker {
        match self {
            Brokers::Single(broker) => broker,
            Brokers::Cluster(cluster) => cluster.node_mut(index),
        }
    }

    /// The name faults and crashes are reported under: `broker`, or `broker-2` in a cluster.
    pub fn name(&self, index: usize) -> String {
        match self {
            Brokers::Single(_) => "broker".to_owned(),
            Brokers::Cluster(_) => format!("broker-{}", index + 1),
        }
    }

    /// Where the broker's logs are.
    pub fn dir(&self) -> &Path {
        match self {
            Brokers::Single(broker) => broker.dir(),
            Brokers::Cluster(cluster) => cluster.dir(),
        }
    }

    /// Waits until a cluster is whole again (every node running, no partition); at once for
    /// one node. A partition autoheal leaves is mended by killing and starting the untrusted
    /// broker node (see `BrokerCluster::wait_all_running`), logged as `restarted`.
    pub async fn wait_joined(&mut self) -> Result<(), BrokerError> {
        match self {
            Brokers::Single(_) => Ok(()),
            Brokers::Cluster(cluster) => {
                let began = Instant::now();
                let rejoined = cluster.wait_all_running(REJOIN).await?;
                tracing::info!(
                    took = ?began.elapsed(),
                    restarted = ?rejoined.restarted,
                    "broker cluster whole again"
                );
                Ok(())
            }
        }
    }

    /// SIGKILL to every node: the tear-down.
    pub async fn kill_all(&mut self) {
        for index in 0..self.len() {
            let _ = self.node_mut(index).kill().await;
        }
    }
}
