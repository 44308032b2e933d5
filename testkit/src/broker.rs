//! A private RabbitMQ node: started with Debian's `rabbitmq-server`, on ports of its own, with
//! its data, logs, Erlang cookie and configuration in a temporary directory.
//!
//! It shares nothing with the machine's broker but the EPMD daemon (which only maps node names
//! to ports): another node name (`replog-<id>@localhost`), other ports, another `HOME` (the
//! Erlang cookie lives there, and `rabbitmqctl` is given the same one), and its own
//! `rabbitmq-env.conf`, `rabbitmq.conf`, `advanced.config` and `enabled_plugins` (empty), so
//! nothing in `/etc/rabbitmq` (such as a listener on 5672) applies to it. RabbitMQ 3.10 enables
//! no plugin by default, so no management (15672) or Prometheus (15692) listener can clash.
//!
//! ```text
//! <dir>/home/.erlang.cookie   created by the first start, reused by rabbitmqctl
//! <dir>/mnesia/               durable queues and persistent messages: kept across stop/start
//! <dir>/log/                  the node's log (NODE.log)
//! <dir>/pid                   the Erlang VM's pid, written at each start
//! ```
//!
//! [`PrivateBroker::start_new`] creates and starts one; [`PrivateBroker::stop`] and
//! [`PrivateBroker::start`] reuse the same node name and mnesia directory, so what was durable
//! survives. [`PrivateBroker::kill`] is SIGKILL to the VM;
//! [`PrivateBroker::freeze`]/[`PrivateBroker::thaw`] are SIGSTOP/SIGCONT. Dropping the broker
//! stops it (best effort, bounded) and removes the directory unless told to keep it.
//!
//! Measured on the 2-core test machine (RabbitMQ 3.10.8, Erlang 25): a start takes 3.4-8.3 s
//! until AMQP answers (median about 5 s; more while other builds and tests run), a
//! `rabbitmqctl stop` about 4-5 s.

use crate::ports::{free_port, PortError};
use crate::signal::{self, Signal};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where Debian installs the scripts; the versioned `sbin` is tried too.
const SCRIPT_DIRS: &[&str] = &["/usr/lib/rabbitmq/bin"];
/// The versioned directories' parent.
const VERSIONED_ROOT: &str = "/usr/lib/rabbitmq/lib";

/// Why the private broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `rabbitmq-server` and `rabbitmqctl` are not installed where expected.
    #[error("RabbitMQ scripts not found in /usr/lib/rabbitmq/bin or /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin")]
    NotInstalled,
    /// No free port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A file or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A RabbitMQ command failed.
    #[error("`{command}` failed ({status}): {output}{log_tail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or "timed out".
        status: String,
        /// What it printed.
        output: String,
        /// The end of the node's log.
        log_tail: String,
    },
    /// The node did not start accepting AMQP connections in time.
    #[error("the broker did not answer AMQP on port {port} within {after:?}{log_tail}")]
    NotAnswering {
        /// The AMQP port.
        port: u16,
        /// How long it was given.
        after: Duration,
        /// The end of the node's log.
        log_tail: String,
    },
    /// The Erlang VM did not go away after SIGKILL.
    #[error("the broker's VM (pid {0}) is still alive after SIGKILL")]
    Unkillable(u32),
    /// The operation needs a running broker.
    #[error("the broker is not running")]
    NotRunning,
}

/// How to set up a private broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Where to put the broker's directory; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// Keep the directory when the broker is dropped (for post-mortems).
    pub keep_dir: bool,
    /// How long a start may take, `rabbitmqctl wait` included.
    pub start_timeout: Duration,
    /// How long a graceful stop may take before the VM is killed.
    pub stop_timeout: Duration,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            dir: None,
            keep_dir: false,
            // A start takes 3-15 s on two busy cores, more on saturated ones.
            start_timeout: Duration::from_secs(90),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the broker's files live, and whether they go when it does.
#[derive(Debug)]
enum BrokerDir {
    /// Removed on drop.
    Temporary(tempfile::TempDir),
    /// Left in place.
    Kept(PathBuf),
}

impl BrokerDir {
    fn path(&self) -> &Path {
        match self {
            BrokerDir::Temporary(dir) => dir.path(),
            BrokerDir::Kept(path) => path,
        }
    }
}

/// A RabbitMQ node of our own.
#[derive(Debug)]
pub struct PrivateBroker {
    /// `replog-<id>@localhost`.
    node: String,
    /// The AMQP listener.
    amqp_port: u16,
    /// The Erlang distribution port (for `rabbitmqctl`).
    dist_port: u16,
    /// The node's files.
    dir: BrokerDir,
    /// The directory holding `rabbitmq-server` and `rabbitmqctl`.
    scripts: PathBuf,
    /// Limits.
    options: BrokerOptions,
    /// The Erlang VM's pid while it runs.
    pid: Option<u32>,
    /// Whether we sent SIGSTOP without SIGCONT since.
    frozen: bool,
    /// How long the last start took, until AMQP answered.
    last_start: Duration,
    /// Set for a member of a [`crate::BrokerCluster`]: the shared `HOME` and extra settings.
    member: Option<Member>,
}

/// What a cluster member shares with its peers or needs beyond a lone node.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The one `HOME` (and so the one Erlang cookie) of the whole cluster.
    pub(crate) home: PathBuf,
    /// Lines appended to `rabbitmq.conf`.
    pub(crate) extra_conf: String,
    /// The whole `advanced.config`.
    pub(crate) advanced_config: String,
}

impl PrivateBroker {
    /// Creates the node's directory and configuration on fresh free ports and starts it.
    pub async fn start_new(options: BrokerOptions) -> Result<PrivateBroker, BrokerError> {
        let mut broker = PrivateBroker::create(options, None)?;
        broker.start().await?;
        Ok(broker)
    }

    /// Creates the node's directory and configuration on fresh free ports, not started.
    pub(crate) fn create(
        options: BrokerOptions,
        member: Option<Member>,
    ) -> Result<PrivateBroker, BrokerError> {
        let scripts = find_scripts().ok_or(BrokerError::NotInstalled)?;
        let dir = match &options.dir {
            Some(path) => {
                std::fs::create_dir_all(path)
                    .map_err(|source| io(&format!("create {}", path.display()), source))?;
                if options.keep_dir {
                    BrokerDir::Kept(path.clone())
                } else {
                    BrokerDir::Temporary(
                        tempfile::Builder::new()
                            .prefix("broker-")
                            .tempdir_in(path)
                            .map_err(|source| io("create the broker directory", source))?,
                    )
                }
            }
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("replog-broker-")
                    .tempdir()
                    .map_err(|source| io("create the broker directory", source))?;
                if options.keep_dir {
                    BrokerDir::Kept(temporary.keep())
                } else {
                    BrokerDir::Temporary(temporary)
                }
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let broker = PrivateBroker {
            node: format!("replog-{}@localhost", &id[..12]),
            amqp_port: free_port()?,
            dist_port: free_port()?,
            dir,
            scripts,
            options,
            pid: None,
            frozen: false,
            last_start: Duration::ZERO,
            member,
        };
        broker.write_config()?;
        Ok(broker)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqp://USER:PASSWORD@127.0.0.1:PORT/VHOST`, the vhost percent-encoded (`/` is `%2f`):
    /// for nodes that log in as users of their own (see [`PrivateBroker::rabbitmqctl`]).
    pub fn amqp_url_as(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2f");
        format!(
            "amqp://{user}:{password}@127.0.0.1:{}/{vhost}",
            self.amqp_port
        )
    }

    /// The command line and environment under which `rabbitmqctl` reaches this node, for a
    /// script that runs it itself (`scripts/broker-users` reads the command from
    /// `RABBITMQCTL`): `(command, environment)`.
    pub fn rabbitmqctl_command(&self) -> (String, Vec<(String, String)>) {
        let command = format!(
            "{} -n {}",
            self.scripts.join("rabbitmqctl").display(),
            self.node
        );
        (command, self.environment())
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.amqp_port
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The broker's directory (logs under `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Erlang VM's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the VM is up (possibly frozen).
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(signal::alive)
    }

    /// Whether it is frozen by [`PrivateBroker::freeze`].
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// How long the last start took, from `rabbitmq-server -detached` to an AMQP answer.
    pub fn last_start_duration(&self) -> Duration {
        self.last_start
    }

    /// Starts the node (on the same data as before) and waits until it answers AMQP.
    pub async fn start(&mut self) -> Result<(), BrokerError> {
        if self.is_running() {
            // Started already, perhaps by a start that gave up while the VM still booted: it
            // is up once it answers (a frozen VM never does, and is left as it is).
            if self.frozen {
                return Ok(());
            }
            return self.wait_answering(self.options.start_timeout).await;
        }
        let began = Instant::now();
        // A stale pid file would let `rabbitmqctl wait` watch the dead VM of the last run.
        let _ = std::fs::remove_file(self.pid_file());
        self.run_script(
            "rabbitmq-server",
            &["-detached"],
            self.options.start_timeout,
        )
        .await?;
        let pid_file = self.pid_file().to_string_lossy().into_owned();
        let timeout_secs = self.options.start_timeout.as_secs().max(1).to_string();
        let node = self.node.clone();
        let booted = self
            .run_script(
                "rabbitmqctl",
                &["-n", &node, "wait", &pid_file, "--timeout", &timeout_secs],
                self.options.start_timeout + Duration::from_secs(5),
            )
            .await;
        // A VM that is still booting when the wait gives up is ours all the same: known by its
        // pid, it is reaped, frozen or killed like the others, and not started a second time.
        self.pid = read_pid(&self.pid_file());
        self.frozen = false;
        booted?;
        let remaining = self.options.start_timeout.saturating_sub(began.elapsed());
        self.wait_answering(remaining.max(Duration::from_secs(5)))
            .await?;
        self.last_start = began.elapsed();
        tracing::info!(node = %self.node, port = self.amqp_port, took = ?self.last_start, "private broker started");
        Ok(())
    }

    /// Waits up to `within` for the node to answer AMQP on its port.
    async fn wait_answering(&self, within: Duration) -> Result<(), BrokerError> {
        let port = self.amqp_port;
        crate::wait::wait_for(
            within,
            Duration::from_millis(100),
            "the broker answers AMQP",
            || async move {
                tokio::task::spawn_blocking(move || amqp_answers(port))
                    .await
                    .map_err(|e| e.to_string())?
            },
        )
        .await
        .map_err(|_| BrokerError::NotAnswering {
            port,
            after: within,
            log_tail: self.log_tail(),
        })
    }

    /// `rabbitmqctl stop`: a clean shutdown that returns once the VM is gone. Persistent
    /// messages on durable queues survive it.
    pub async fn stop(&mut self) -> Result<(), BrokerError> {
        if !self.is_running() {
            self.pid = None;
            return Ok(());
        }
        if self.frozen {
            self.thaw()?;
        }
        let pid_file = self.pid_file().to_string_lossy().into_owned();
        let node = self.node.clone();
        let stopped = self
            .run_script(
                "rabbitmqctl",
                &["-n", &node, "stop", &pid_file],
                self.options.stop_timeout,
            )
            .await;
        if let Err(error) = stopped {
            tracing::warn!(%error, "rabbitmqctl stop failed; killing the broker");
            self.kill().await?;
            return Err(error);
        }
        self.wait_gone().await?;
        self.pid = None;
        Ok(())
    }

    /// SIGKILL to the Erlang VM: a crash. Returns once the process is gone.
    pub async fn kill(&mut self) -> Result<(), BrokerError> {
        let Some(pid) = self.pid.or_else(|| read_pid(&self.pid_file())) else {
            return Ok(());
        };
        if signal::alive(pid) {
            signal::send(pid, Signal::Kill)
                .map_err(|source| io("send SIGKILL to the broker", source))?;
        }
        self.pid = Some(pid);
        self.wait_gone().await?;
        self.pid = None;
        self.frozen = false;
        Ok(())
    }

    /// SIGSTOP to the Erlang VM: connections stay open and nothing answers.
    pub fn freeze(&mut self) -> Result<(), BrokerError> {
        let pid = self.pid.ok_or(BrokerError::NotRunning)?;
        signal::send(pid, Signal::Stop)
            .map_err(|source| io("send SIGSTOP to the broker", source))?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT to a frozen VM.
    pub fn thaw(&mut self) -> Result<(), BrokerError> {
        let pid = self.pid.ok_or(BrokerError::NotRunning)?;
        signal::send(pid, Signal::Cont)
            .map_err(|source| io("send SIGCONT to the broker", source))?;
        self.frozen = false;
        Ok(())
    }

    /// Runs `rabbitmqctl -n NODE ARGS...` against this node, with its environment (and so its
    /// cookie), and returns what it printed.
    pub async fn rabbitmqctl(&self, args: &[&str], limit: Duration) -> Result<String, BrokerError> {
        let mut full = vec!["-n", self.node.as_str()];
        full.extend_from_slice(args);
        self.run_script("rabbitmqctl", &full, limit).await
    }

    /// Whether the AMQP port answers the protocol header with a `Connection.Start`.
    pub fn answers(&self) -> bool {
        amqp_answers(self.amqp_port).is_ok()
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let log = self.dir().join("log").join(format!("{}.log", self.node));
        crate::node::log_tail(&log, 30)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir().join("pid")
    }

    async fn wait_gone(&self) -> Result<(), BrokerError> {
        let Some(pid) = self.pid else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while signal::alive(pid) {
            if Instant::now() >= deadline {
                return Err(BrokerError::Unkillable(pid));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn write_config(&self) -> Result<(), BrokerError> {
        let dir = self.dir();
        for sub in ["home", "mnesia", "log"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| io(&format!("create {}", path.display()), source))?;
        }
        let files = [
            ("enabled_plugins", "[].\n".to_owned()),
            // The env file replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
            // Distribution stays on loopback, as on the machine's broker.
            (
                "rabbitmq-env.conf",
                "ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n".to_owned(),
            ),
            (
                "rabbitmq.conf",
                format!(
                    "listeners.tcp.default = 127.0.0.1:{}\n\
                     # Tests write little; do not refuse publishers on a busy shared disk.\n\
                     disk_free_limit.absolute = 50MB\n\
                     log.file.level = info\n{}",
                    self.amqp_port,
                    self.member.as_ref().map_or("", |m| m.extra_conf.as_str()),
                ),
            ),
            (
                "advanced.config",
                self.member
                    .as_ref()
                    .map_or_else(|| "[].\n".to_owned(), |m| m.advanced_config.clone()),
            ),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .map_err(|source| io(&format!("write {}", path.display()), source))?;
        }
        Ok(())
    }

    /// The environment every RabbitMQ script runs with; the scripts read nothing else.
    fn environment(&self) -> Vec<(String, String)> {
        let dir = self.dir();
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        vec![
            (
                "HOME".into(),
                match &self.member {
                    Some(member) => member.home.to_string_lossy().into_owned(),
                    None => path("home"),
                },
            ),
            ("RABBITMQ_NODENAME".into(), self.node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT".into(), self.amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), path("log")),
            ("RABBITMQ_PID_FILE".into(), path("pid")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), path("rabbitmq.conf")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                path("advanced.config"),
            ),
            ("RABBITMQ_CONF_ENV_FILE".into(), path("rabbitmq-env.conf")),
        ]
    }

    /// Runs one of the RabbitMQ scripts with the node's environment and a time limit.
    async fn run_script(
        &self,
        script: &str,
        args: &[&str],
        limit: Duration,
    ) -> Result<String, BrokerError> {
        // Output goes to a file, not a pipe: the VM started by `-detached` could inherit a
        // pipe and keep it open for as long as it runs.
        let out_path = self.dir().join("log").join(format!("{script}.out"));
        let out = std::fs::File::create(&out_path)
            .map_err(|source| io(&format!("create {}", out_path.display()), source))?;
        let err = out
            .try_clone()
            .map_err(|source| io("clone a file handle", source))?;
        let mut command = tokio::process::Command::new(self.scripts.join(script));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // Nothing of the caller's RabbitMQ or Erlang settings may leak in.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("RABBITMQ_") || key_text.starts_with("ERL_") {
                command.env_remove(&key);
            }
        }
        command.envs(self.environment());
        let line = format!("{script} {}", args.join(" "));
        let mut child = command
            .spawn()
            .map_err(|source| io(&format!("run {line}"), source))?;
        let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(output()),
            Ok(Ok(status)) => Err(BrokerError::Command {
                command: line,
                status: status.to_string(),
                output: output(),
                log_tail: self.log_tail(),
            }),
            Ok(Err(source)) => Err(io(&format!("wait for {line}"), source)),
            Err(_) => {
                let _ = child.kill().await;
                Err(BrokerError::Command {
                    command: line,
                    status: format!("timed out after {limit:?}"),
                    output: output(),
                    log_tail: self.log_tail(),
                })
            }
        }
    }

    /// Stops the node without async, for `Drop`: `rabbitmqctl stop` with a time limit, then
    /// SIGKILL if the VM is still there.
    fn stop_blocking(&mut self) {
        let Some(pid) = self.pid.or_else(|| read_pid(&self.pid_file())) else {
            return;
        };
        if !signal::alive(pid) {
            return;
        }
        if self.frozen {
            let _ = signal::send(pid, Signal::Cont);
        }
        let mut command = std::process::Command::new(self.scripts.join("rabbitmqctl"));
        command
            .args(["-n", &self.node, "stop", &self.pid_file().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(self.environment());
        if let Ok(mut child) = command.spawn() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if signal::alive(pid) {
            let _ = signal::send(pid, Signal::Kill);
            let deadline = Instant::now() + Duration::from_secs(10);
            while signal::alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.pid = None;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop_blocking();
        // The directory goes with `BrokerDir::Temporary`'s own drop.
    }
}

fn io(what: &str, source: std::io::Error) -> BrokerError {
    BrokerError::Io {
        what: what.to_owned(),
        source,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn find_scripts() -> Option<PathBuf> {
    let has_both =
        |dir: &Path| dir.join("rabbitmq-server").exists() && dir.join("rabbitmqctl").exists();
    for dir in SCRIPT_DIRS {
        if has_both(Path::new(dir)) {
            return Some(PathBuf::from(dir));
        }
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(VERSIONED_ROOT)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("sbin")))
        .filter(|dir| has_both(dir))
        .collect();
    versioned.sort();
    versioned.pop()
}

/// Declares `queue` as a plain durable classic queue (no arguments) as whoever `amqp_url` logs
/// in as: what an older replog left behind, for tests of upgrades.
pub async fn declare_plain_queue(amqp_url: &str, queue: &str) -> Result<(), String> {
    use lapin::options::QueueDeclareOptions;
    let declare = async {
        let connection =
            lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.into(), options, Default::default())
            .await?;
        let _ = connection.close(200, "declared".into()).await;
        Ok::<_, lapin::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(15), declare).await {
        Ok(outcome) => outcome.map_err(|error| error.to_string()),
        Err(_) => Err("no answer within 15 s".to_owned()),
    }
}

/// Publishes `payload` to `exchange` (`""`: the default exchange) with `routing_key`, as
/// whoever `amqp_url` logs in as, with the AMQP `user_id` property when given, and waits for
/// the broker's confirm: for tests of who may publish what. `Err` carries the broker's refusal
/// (e.g. `ACCESS_REFUSED - access to exchange ... refused for user ...`, or
/// `PRECONDITION_FAILED - user_id property set to ...`), or says the message was unroutable.
pub async fn publish_as(
    amqp_url: &str,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    user_id: Option<&str>,
) -> Result<(), String> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let publish = async {
        let connection =
            lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
        let outcome = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let mut properties = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(user) = user_id {
                properties = properties.with_user_id(user.into());
            }
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?
                .await
        }
        .await;
        let _ = connection.close(200, "published".into()).await;
        outcome
    };
    match tokio::time::timeout(Duration::from_secs(15), publish).await {
        Ok(Ok(lapin::Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(other)) => Err(format!("not taken (unroutable or nacked): {other:?}")),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no confirm within 15 s".to_owned()),
    }
}

/// Sends the AMQP 0-9-1 protocol header and checks that a `Connection.Start` method frame comes
/// back: a broker that is up, not just a port that accepts. Blocking, bounded by short timeouts.
pub fn amqp_answers(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|_| stream.set_write_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .map_err(|e| format!("write: {e}"))?;
    // Frame header: type (1 = method), channel (2 bytes), size (4 bytes); then class 10
    // (connection), method 10 (start).
    let mut head = [0u8; 11];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("read: {e}"))?;
    let is_start = head[0] == 1 && head[1..3] == [0, 0] && head[7..11] == [0, 10, 0, 10];
    if is_start {
        Ok(())
    } else {
        Err(format!("not a Connection.Start frame: {head:?}"))
    }
}

/// What [`requeue_repeatedly`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequeueReport {
    /// How many deliveries were nacked with requeue in all (fewer than asked when the queue
    /// went silent for 5 s: messages were dropped).
    pub deliveries: usize,
    /// The highest `x-delivery-count` header a delivery carried (quorum queues set it).
    pub max_delivery_count: i64,
    /// How many messages the queue held before (a passive declare).
    pub messages_before: u32,
    /// How many messages the queue held afterwards (a passive declare).
    pub messages_after: u32,
}

/// Consumes `queue` and nacks every delivery with requeue until each message it holds has come
/// back `rounds` times: a consumer stuck in a fail-requeue loop, the case RabbitMQ 4.x's default
/// quorum-queue delivery limit (20) dead-letters. Bounded by `limit`.
pub async fn requeue_repeatedly(
    amqp_url: &str,
    queue: &str,
    rounds: usize,
    limit: Duration,
) -> Result<RequeueReport, String> {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    let work = async {
        let url = amqp_url.split(',').next().unwrap_or(amqp_url).trim();
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let count = |channel: lapin::Channel| async move {
            let declared = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("passive declare {queue}: {e}"))?;
            Ok::<u32, String>(declared.message_count())
        };
        let messages_before = count(
            connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?,
        )
        .await?;
        let messages = messages_before as usize;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        // Every message in flight at once, so each is requeued the same number of times.
        channel
            .basic_qos(
                u16::try_from(messages.max(1)).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "replog-test-requeue".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume {queue}: {e}"))?;
        let mut report = RequeueReport {
            deliveries: 0,
            max_delivery_count: 0,
            messages_before,
            messages_after: 0,
        };
        while report.deliveries < messages * rounds {
            // Silence means the queue ran dry: what was dropped or dead-lettered shows in
            // the counts below.
            let Ok(next) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
            else {
                break;
            };
            let delivery = next
                .ok_or("the consumer was cancelled")?
                .map_err(|e| e.to_string())?;
            let count = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
            let count = match count {
                Some(AMQPValue::LongLongInt(n)) => n,
                Some(AMQPValue::LongInt(n)) => i64::from(n),
                Some(AMQPValue::LongUInt(n)) => i64::from(n),
                Some(AMQPValue::ShortInt(n)) => i64::from(n),
                _ => 0,
            };
            report.max_delivery_count = report.max_delivery_count.max(count);
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            report.deliveries += 1;
        }
        // Closing the channel returns anything still delivered to it to the queue.
        let _ = channel.close(200, "done".into()).await;
        // The messages delivered to the closed channel go back to the queue asynchronously (a
        // quorum queue applies the return through Raft): give them a few seconds.
        let settle = Instant::now() + Duration::from_secs(10);
        loop {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            report.messages_after = count(channel).await?;
            if report.messages_after >= messages_before || Instant::now() >= settle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(report)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("requeueing did not finish within {limit:?}"))?
}
