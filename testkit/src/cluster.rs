//! A master and its secondaries, each on a port fixed up front and with a data directory of its
//! own, so that every URL (the secondaries' `--master-url` included) stays valid across
//! restarts and a restarted node recovers its log.
//!
//! ```text
//! <dir>/master.log, <dir>/s1.log, ...   stderr of every start
//! <dir>/master/data, <dir>/s1/data, ... the data directories
//! ```

use crate::binaries::Binaries;
use crate::client::NodeClient;
use crate::node::{Node, NodeError, NodeSpec};
use crate::ports::{free_port, PortError};
use std::path::PathBuf;
use std::time::Duration;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where logs and data directories go.
    pub dir: PathBuf,
    /// The broker.
    pub amqp_url: String,
    /// The prefix of the cluster's broker names; make it unique.
    pub namespace: String,
    /// The secondaries' ids, which the master's `--secondaries` lists.
    pub secondaries: Vec<String>,
    /// `--queue-type` for every node, or the nodes' default.
    pub queue_type: Option<String>,
    /// Extra master flags.
    pub master_args: Vec<String>,
    /// Extra flags for every secondary.
    pub secondary_args: Vec<String>,
    /// Extra environment for the master (e.g. `RUST_LOG`).
    pub master_env: Vec<(String, String)>,
    /// Extra environment for every secondary.
    pub secondary_env: Vec<(String, String)>,
    /// How long a node may take to print its `listening on` line.
    pub startup_timeout: Duration,
}

impl ClusterSpec {
    /// A spec with secondaries `s1,s2`, default flags and a fresh namespace.
    pub fn new(dir: PathBuf, amqp_url: String) -> ClusterSpec {
        ClusterSpec {
            dir,
            amqp_url,
            namespace: format!("testkit-{}", uuid::Uuid::new_v4().simple()),
            secondaries: vec!["s1".into(), "s2".into()],
            queue_type: None,
            master_args: Vec::new(),
            secondary_args: Vec::new(),
            master_env: Vec::new(),
            secondary_env: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No free port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The running nodes. Dropping it kills them.
#[derive(Debug)]
pub struct Cluster {
    /// The master.
    pub master: Node,
    /// The secondaries, in the order of the spec.
    pub secondaries: Vec<Node>,
}

impl Cluster {
    /// Picks a port per node, then starts the master and every secondary.
    pub async fn start(spec: &ClusterSpec, binaries: &Binaries) -> Result<Cluster, ClusterError> {
        let (master_spec, secondary_specs) = Cluster::specs(spec, binaries)?;
        let master = Node::start(master_spec).await?;
        let mut secondaries = Vec::new();
        for spec in secondary_specs {
            secondaries.push(Node::start(spec).await?);
        }
        Ok(Cluster {
            master,
            secondaries,
        })
    }

    /// The node specs the cluster would start, with ports picked: for callers that want to
    /// own the nodes themselves.
    pub fn specs(
        spec: &ClusterSpec,
        binaries: &Binaries,
    ) -> Result<(NodeSpec, Vec<NodeSpec>), PortError> {
        let master_port = free_port()?;
        let master_url = format!("http://127.0.0.1:{master_port}");
        let common = |args: &mut Vec<String>| {
            args.extend(["--amqp-url".into(), spec.amqp_url.clone()]);
            args.extend(["--namespace".into(), spec.namespace.clone()]);
            if let Some(kind) = &spec.queue_type {
                args.extend(["--queue-type".into(), kind.clone()]);
            }
        };
        let mut args = vec!["--listen".into(), format!("127.0.0.1:{master_port}")];
        common(&mut args);
        args.extend(["--secondaries".into(), spec.secondaries.join(",")]);
        let data = spec.dir.join("master").join("data");
        args.extend(["--data-dir".into(), data.to_string_lossy().into_owned()]);
        args.extend(spec.master_args.iter().cloned());
        let master = NodeSpec {
            name: "master".into(),
            binary: binaries.master.clone(),
            args,
            env: spec.master_env.clone(),
            dir: spec.dir.join("master"),
            log: spec.dir.join("master.log"),
            startup_timeout: spec.startup_timeout,
        };
        let mut secondaries = Vec::new();
        for id in &spec.secondaries {
            let port = free_port()?;
            let mut args = vec!["--id".into(), id.clone()];
            args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
            common(&mut args);
            args.extend(["--master-url".into(), master_url.clone()]);
            let data = spec.dir.join(id).join("data");
            args.extend(["--data-dir".into(), data.to_string_lossy().into_owned()]);
            args.extend(spec.secondary_args.iter().cloned());
            secondaries.push(NodeSpec {
                name: id.clone(),
                binary: binaries.secondary.clone(),
                args,
                env: spec.secondary_env.clone(),
                dir: spec.dir.join(id),
                log: spec.dir.join(format!("{id}.log")),
                startup_timeout: spec.startup_timeout,
            });
        }
        Ok((master, secondaries))
    }

    /// A client for the master.
    pub fn master_client(&self, timeout: Duration) -> NodeClient {
        NodeClient::new(self.master.url(), timeout)
    }

    /// A secondary by id.
    pub fn secondary(&mut self, id: &str) -> Option<&mut Node> {
        self.secondaries.iter_mut().find(|node| node.name() == id)
    }
}
