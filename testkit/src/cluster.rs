//! A master and its secondaries, each with a data directory of its own, so that a restarted
//! node recovers its log. By default ([`Ports::Fixed`]) every node gets a port picked up front,
//! so that every URL (the secondaries' `--master-url` included) stays valid across restarts;
//! [`Ports::Any`] lets each node bind port 0 instead, keeping only the master's address across
//! restarts. Secondaries may start with the master or later, one by one
//! ([`Cluster::start_master_only`], [`Cluster::start_secondaries`]).
//!
//! ```text
//! <dir>/master.log, <dir>/s1.log, ...   stderr of every start
//! <dir>/master/data, <dir>/s1/data, ... the data directories
//! ```

use crate::binaries::Binaries;
use crate::client::NodeClient;
use crate::node::{Node, NodeError, NodeSpec};
use crate::ports::{free_port, PortError};
use futures_util::future::join_all;
use std::path::PathBuf;
use std::time::Duration;

/// Which ports the nodes listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ports {
    /// A free port per node, picked up front from outside the kernel's ephemeral range (see
    /// [`crate::ports`]): every node comes back on the same URL after a restart.
    #[default]
    Fixed,
    /// `--listen 127.0.0.1:0`: the kernel picks. The master keeps the port it got across
    /// restarts (the secondaries' `--master-url` names it); a restarted secondary gets a new one.
    Any,
}

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
    /// Extra flags for one secondary, by id, after [`ClusterSpec::secondary_args`]
    /// (e.g. `("s2", ["--delay-ms", "1500"])`).
    pub secondary_args_by_id: Vec<(String, Vec<String>)>,
    /// Extra environment for the master (e.g. `RUST_LOG`).
    pub master_env: Vec<(String, String)>,
    /// Extra environment for every secondary.
    pub secondary_env: Vec<(String, String)>,
    /// Which ports the nodes listen on.
    pub ports: Ports,
    /// How long a node may take to print its `listening on` line.
    pub startup_timeout: Duration,
}

impl ClusterSpec {
    /// A spec with secondaries `s1,s2`, default flags, fixed ports and a fresh namespace.
    pub fn new(dir: PathBuf, amqp_url: String) -> ClusterSpec {
        ClusterSpec {
            dir,
            amqp_url,
            namespace: unique_namespace("testkit"),
            secondaries: vec!["s1".into(), "s2".into()],
            queue_type: None,
            master_args: Vec::new(),
            secondary_args: Vec::new(),
            secondary_args_by_id: Vec::new(),
            master_env: Vec::new(),
            secondary_env: Vec::new(),
            ports: Ports::Fixed,
            startup_timeout: Duration::from_secs(30),
        }
    }

    /// `--listen` for one node.
    fn listen(&self) -> Result<String, PortError> {
        Ok(match self.ports {
            Ports::Fixed => format!("127.0.0.1:{}", free_port()?),
            Ports::Any => "127.0.0.1:0".to_owned(),
        })
    }

    /// The flags every node gets.
    fn common_args(&self, args: &mut Vec<String>) {
        args.extend(["--amqp-url".into(), self.amqp_url.clone()]);
        args.extend(["--namespace".into(), self.namespace.clone()]);
        if let Some(kind) = &self.queue_type {
            args.extend(["--queue-type".into(), kind.clone()]);
        }
    }

    /// The master's spec, listening on `listen`.
    fn master_spec(&self, binaries: &Binaries, listen: String) -> NodeSpec {
        let mut args = vec!["--listen".into(), listen];
        self.common_args(&mut args);
        args.extend(["--secondaries".into(), self.secondaries.join(",")]);
        let data = self.dir.join("master").join("data");
        args.extend(["--data-dir".into(), data.to_string_lossy().into_owned()]);
        args.extend(self.master_args.iter().cloned());
        NodeSpec {
            name: "master".into(),
            binary: binaries.master.clone(),
            args,
            env: self.master_env.clone(),
            dir: self.dir.join("master"),
            log: self.dir.join("master.log"),
            startup_timeout: self.startup_timeout,
        }
    }

    /// Secondary `id`'s spec, listening on `listen`, following the master at `master_url`.
    fn secondary_spec(
        &self,
        binaries: &Binaries,
        id: &str,
        listen: String,
        master_url: &str,
    ) -> NodeSpec {
        let mut args = vec!["--id".into(), id.to_owned()];
        args.extend(["--listen".into(), listen]);
        self.common_args(&mut args);
        args.extend(["--master-url".into(), master_url.to_owned()]);
        let data = self.dir.join(id).join("data");
        args.extend(["--data-dir".into(), data.to_string_lossy().into_owned()]);
        args.extend(self.secondary_args.iter().cloned());
        for (for_id, extra) in &self.secondary_args_by_id {
            if for_id == id {
                args.extend(extra.iter().cloned());
            }
        }
        NodeSpec {
            name: id.to_owned(),
            binary: binaries.secondary.clone(),
            args,
            env: self.secondary_env.clone(),
            dir: self.dir.join(id),
            log: self.dir.join(format!("{id}.log")),
            startup_timeout: self.startup_timeout,
        }
    }
}

/// A broker namespace no other cluster uses: `<prefix>-<uuid>`.
pub fn unique_namespace(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
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
    /// A secondary was asked for that the spec does not list, or that runs already.
    #[error("secondary {0} is not in the spec or was started already")]
    NotStartable(String),
}

/// The running nodes. Dropping it kills them.
#[derive(Debug)]
pub struct Cluster {
    /// The master.
    pub master: Node,
    /// The secondaries started so far, in the order they were started.
    pub secondaries: Vec<Node>,
    /// Specs of the configured secondaries not started yet, pointed at the master already.
    not_started: Vec<NodeSpec>,
}

impl Cluster {
    /// Starts the master, then every secondary at once.
    pub async fn start(spec: &ClusterSpec, binaries: &Binaries) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster::start_master_only(spec, binaries).await?;
        let ids: Vec<&str> = spec.secondaries.iter().map(String::as_str).collect();
        cluster.start_secondaries(&ids).await?;
        Ok(cluster)
    }

    /// Starts the master alone; the secondaries come later with
    /// [`Cluster::start_secondaries`] (a late joiner, a secondary down from the start).
    pub async fn start_master_only(
        spec: &ClusterSpec,
        binaries: &Binaries,
    ) -> Result<Cluster, ClusterError> {
        let mut master = Node::start(spec.master_spec(binaries, spec.listen()?)).await?;
        // The secondaries are told this URL once and for all.
        master.keep_address();
        let mut not_started = Vec::new();
        for id in &spec.secondaries {
            not_started.push(spec.secondary_spec(binaries, id, spec.listen()?, master.url()));
        }
        Ok(Cluster {
            master,
            secondaries: Vec::new(),
            not_started,
        })
    }

    /// Starts configured secondaries that are not running yet, all at once.
    pub async fn start_secondaries(&mut self, ids: &[&str]) -> Result<(), ClusterError> {
        let mut specs = Vec::new();
        for id in ids {
            let at = self
                .not_started
                .iter()
                .position(|spec| spec.name == *id)
                .ok_or_else(|| ClusterError::NotStartable((*id).to_owned()))?;
            specs.push(self.not_started.remove(at));
        }
        let mut failure = None;
        for started in join_all(specs.into_iter().map(Node::start)).await {
            match started {
                Ok(node) => self.secondaries.push(node),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        failure.map_or(Ok(()), |error| Err(error.into()))
    }

    /// The node specs the cluster would start, with fixed ports picked: for callers that want
    /// to own the nodes themselves.
    pub fn specs(
        spec: &ClusterSpec,
        binaries: &Binaries,
    ) -> Result<(NodeSpec, Vec<NodeSpec>), PortError> {
        let master_port = free_port()?;
        let master_url = format!("http://127.0.0.1:{master_port}");
        let master = spec.master_spec(binaries, format!("127.0.0.1:{master_port}"));
        let mut secondaries = Vec::new();
        for id in &spec.secondaries {
            let listen = format!("127.0.0.1:{}", free_port()?);
            secondaries.push(spec.secondary_spec(binaries, id, listen, &master_url));
        }
        Ok((master, secondaries))
    }

    /// A client for the master.
    pub fn master_client(&self, timeout: Duration) -> NodeClient {
        NodeClient::new(self.master.url(), timeout)
    }

    /// A started secondary by id.
    pub fn secondary(&mut self, id: &str) -> Option<&mut Node> {
        self.secondaries.iter_mut().find(|node| node.name() == id)
    }

    /// A started secondary by id, read-only.
    pub fn secondary_ref(&self, id: &str) -> Option<&Node> {
        self.secondaries.iter().find(|node| node.name() == id)
    }
}
