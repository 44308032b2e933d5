//! One `master` or `secondary` process, controlled from the outside.
//!
//! A node prints exactly one stdout line, `listening on http://127.0.0.1:PORT`, once bound, and
//! logs to stderr. [`Node::start`] waits for that line (with a deadline) and appends stderr to a
//! log file that survives restarts, each start marked by a separator line. The faults are the
//! ones a machine produces: SIGKILL ([`Node::kill9`]), SIGSTOP/SIGCONT ([`Node::freeze`],
//! [`Node::thaw`]), SIGTERM ([`Node::terminate`]), and a start with the very same command line
//! ([`Node::restart`]). Give the node a fixed `--listen 127.0.0.1:PORT` (see
//! [`crate::ports::free_port`]) and its URL stays the same across restarts.

use crate::signal::{self, Signal};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How many lines of the log an error message carries.
const LOG_TAIL_LINES: usize = 40;

/// How many stray stdout lines are remembered.
const STRAY_KEPT: usize = 20;

/// How to start a node, kept for restarts.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `master` or the secondary's id: for messages and log separators.
    pub name: String,
    /// The binary.
    pub binary: PathBuf,
    /// The whole command line after the binary.
    pub args: Vec<String>,
    /// Extra environment (e.g. `RUST_LOG`). Inherited `REPLOG_*` variables are removed, so that
    /// a developer's shell cannot change what runs: flags alone configure the node.
    pub env: Vec<(String, String)>,
    /// The working directory; created if missing. Relative paths a node writes land here.
    pub dir: PathBuf,
    /// Where stderr is appended, across every start.
    pub log: PathBuf,
    /// How long the node may take to print its `listening on` line.
    pub startup_timeout: Duration,
}

impl NodeSpec {
    /// The value given to `flag` (e.g. `--data-dir`), if the command line has it.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|arg| arg == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Gives `flag` the value `value`: replaced where the command line has it, appended where
    /// it does not. For a copy of a spec that must differ in one flag (a rival master's
    /// `--data-dir`, a pinned `--listen`).
    pub fn set_flag(&mut self, flag: &str, value: impl Into<String>) {
        let value = value.into();
        match self.args.iter().position(|arg| arg == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value,
            Some(_) => self.args.push(value),
            None => self.args.extend([flag.to_owned(), value]),
        }
    }

    /// The port of a fixed `--listen 127.0.0.1:PORT`, if the arguments give one.
    pub fn fixed_port(&self) -> Option<u16> {
        let at = self.args.iter().position(|arg| arg == "--listen")?;
        let addr: std::net::SocketAddr = self.args.get(at + 1)?.parse().ok()?;
        (addr.port() != 0).then_some(addr.port())
    }
}

/// Why a node could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An OS call failed.
    #[error("{name}: cannot {what}: {source}")]
    Io {
        /// The node.
        name: String,
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The process ended before printing its `listening on` line.
    #[error("{name} exited ({status}) before printing `listening on`{log_tail}")]
    Exited {
        /// The node.
        name: String,
        /// How it ended.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The process printed no `listening on` line in time.
    #[error(
        "{name} printed no `listening on http://127.0.0.1:PORT` line within {after:?}{log_tail}"
    )]
    NoListeningLine {
        /// The node.
        name: String,
        /// How long it was given.
        after: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// The node bound another port than the fixed one it was given.
    #[error("{name} was told to listen on port {expected} but printed {got}")]
    WrongPort {
        /// The node.
        name: String,
        /// The port in `--listen`.
        expected: u16,
        /// The URL it printed.
        got: String,
    },
    /// The operation needs a running process.
    #[error("{name} is not running")]
    NotRunning {
        /// The node.
        name: String,
    },
}

/// A node process, running or not.
#[derive(Debug)]
pub struct Node {
    /// How it is started.
    spec: NodeSpec,
    /// The process; `None` while it is down.
    child: Option<Child>,
    /// Whether we sent SIGSTOP without SIGCONT since.
    frozen: bool,
    /// The base URL from the last `listening on` line.
    url: String,
    /// How many times the process was started.
    starts: u32,
    /// Stdout lines besides `listening on`, which the contract forbids; first few only.
    stray: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts the node and waits for its `listening on` line.
    pub async fn start(spec: NodeSpec) -> Result<Node, NodeError> {
        let mut node = Node {
            spec,
            child: None,
            frozen: false,
            url: String::new(),
            starts: 0,
            stray: Arc::new(Mutex::new(Vec::new())),
        };
        node.spawn().await?;
        Ok(node)
    }

    /// `master` or the secondary's id.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How it is started.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// `http://127.0.0.1:PORT` from the last start.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether a process is up (possibly frozen). A process that died on its own still counts
    /// until [`Node::exited`] notices.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is frozen by [`Node::freeze`].
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// How many times the process was started, the first start included.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The stderr log, across every start.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// Stdout lines other than `listening on` (the first few).
    pub fn stray_stdout(&self) -> Vec<String> {
        self.stray.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }

    /// The whole log so far (empty if it cannot be read), for tests that look for a line.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The node's `--data-dir`, if its command line names one: for tests that damage or wipe
    /// its files while it is down.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.spec.flag("--data-dir").map(PathBuf::from)
    }

    /// Makes later starts bind the address this start bound: a node started on port 0 keeps
    /// its URL across restarts from now on (what others were told about it stays true). Does
    /// nothing before the first start or when the port was fixed already.
    pub fn keep_address(&mut self) {
        if let Some(address) = self.url.strip_prefix("http://") {
            let address = address.to_owned();
            self.spec.set_flag("--listen", address);
        }
    }

    /// SIGKILL and reap within a few seconds, without async: for `Drop` implementations that
    /// must know the process (and its broker connection) is gone before cleaning up after it.
    pub fn kill_now(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.frozen = false;
        let _ = child.start_kill();
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < give_up {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// If the process ended without being told to, returns how; the node then counts as down.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.frozen = false;
        Some(status)
    }

    /// SIGKILL, then reap: no shutdown code runs, as in a crash.
    pub async fn kill9(&mut self) -> Result<(), NodeError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        self.frozen = false;
        // A stopped process dies of SIGKILL too.
        child.kill().await.map_err(|source| self.io("kill", source))
    }

    /// SIGSTOP: the process stops, its sockets stay open, requests to it hang.
    pub fn freeze(&mut self) -> Result<(), NodeError> {
        let pid = self.running_pid()?;
        signal::send(pid, Signal::Stop).map_err(|source| self.io("send SIGSTOP", source))?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT: a frozen process resumes.
    pub fn thaw(&mut self) -> Result<(), NodeError> {
        let pid = self.running_pid()?;
        signal::send(pid, Signal::Cont).map_err(|source| self.io("send SIGCONT", source))?;
        self.frozen = false;
        Ok(())
    }

    /// SIGTERM and wait up to `grace` for a clean exit; SIGKILL after that. Returns the exit
    /// status, or `None` when it had to be killed (or was not running).
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>, NodeError> {
        let Some(pid) = self.pid() else {
            self.child = None;
            return Ok(None);
        };
        if self.frozen {
            // A stopped process only acts on SIGTERM once it runs again.
            self.thaw()?;
        }
        signal::send(pid, Signal::Term).map_err(|source| self.io("send SIGTERM", source))?;
        let child = self.child.as_mut().expect("a pid means a child");
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(Err(source)) => Err(self.io("wait", source)),
            Err(_) => {
                self.kill9().await?;
                Ok(None)
            }
        }
    }

    /// Gives `flag` the value `value` for the next start (see [`NodeSpec::set_flag`]): a
    /// restart with one flag changed, e.g. a master started with `--refill-from`.
    pub fn set_flag(&mut self, flag: &str, value: impl Into<String>) {
        self.spec.set_flag(flag, value);
    }

    /// Kills the process if it runs, and starts the same command line again.
    pub async fn restart(&mut self) -> Result<(), NodeError> {
        self.kill9().await?;
        self.spawn().await
    }

    /// Starts the process (which must be down) and waits for its `listening on` line.
    pub async fn start_again(&mut self) -> Result<(), NodeError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn().await
    }

    fn running_pid(&self) -> Result<u32, NodeError> {
        self.pid().ok_or_else(|| NodeError::NotRunning {
            name: self.spec.name.clone(),
        })
    }

    fn io(&self, what: &str, source: std::io::Error) -> NodeError {
        NodeError::Io {
            name: self.spec.name.clone(),
            what: what.to_owned(),
            source,
        }
    }

    async fn spawn(&mut self) -> Result<(), NodeError> {
        let spec = &self.spec;
        std::fs::create_dir_all(&spec.dir)
            .map_err(|source| self.io(&format!("create {}", spec.dir.display()), source))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|source| self.io(&format!("open {}", spec.log.display()), source))?;
        let _ = writeln!(
            log,
            "----- testkit: starting {} (start #{}) -----",
            spec.name,
            self.starts + 1
        );
        let mut command = Command::new(&spec.binary);
        command
            .args(&spec.args)
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Whatever happens to the caller, no node outlives it.
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REPLOG_") {
                command.env_remove(key);
            }
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .map_err(|source| self.io(&format!("start {}", spec.binary.display()), source))?;
        self.starts += 1;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let stray = self.stray.clone();
        let log_path = spec.log.clone();
        let name = spec.name.clone();
        let waited = tokio::time::timeout(spec.startup_timeout, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match listening_url(&line) {
                        Some(url) => return Ok(url),
                        None => record_stray(&stray, &log_path, &line),
                    },
                    Ok(None) | Err(_) => {
                        let status = child
                            .wait()
                            .await
                            .map_or_else(|e| e.to_string(), |s| s.to_string());
                        return Err(NodeError::Exited {
                            name: name.clone(),
                            status,
                            log_tail: log_tail(&log_path, LOG_TAIL_LINES),
                        });
                    }
                }
            }
        })
        .await;
        let url = match waited {
            Ok(Ok(url)) => url,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                let _ = child.kill().await;
                return Err(NodeError::NoListeningLine {
                    name,
                    after: spec.startup_timeout,
                    log_tail: log_tail(&spec.log, LOG_TAIL_LINES),
                });
            }
        };
        if let Some(expected) = spec.fixed_port() {
            if !url.ends_with(&format!(":{expected}")) {
                let _ = child.kill().await;
                return Err(NodeError::WrongPort {
                    name,
                    expected,
                    got: url,
                });
            }
        }
        // Keep draining stdout so a chatty node never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                record_stray(&stray, &log_path, &line);
            }
        });
        self.url = url;
        self.child = Some(child);
        self.frozen = false;
        Ok(())
    }
}

/// The base URL in a `listening on http://127.0.0.1:PORT` line.
fn listening_url(line: &str) -> Option<String> {
    let url = line.trim_end().strip_prefix("listening on ")?;
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.parse::<u16>()
        .is_ok_and(|port| port != 0)
        .then(|| url.to_owned())
}

fn record_stray(stray: &Mutex<Vec<String>>, log: &Path, line: &str) {
    let mut kept = stray.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() < STRAY_KEPT {
        kept.push(line.to_owned());
    }
    drop(kept);
    // Copied into the log, where whoever reads it will look.
    if let Ok(mut file) = OpenOptions::new().append(true).open(log) {
        let _ = writeln!(file, "[stdout] {line}");
    }
}

/// The last `lines` lines of a log file, formatted to append to a message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "\n----- last {} lines of {} -----\n{}\n-----",
                all.len() - start,
                path.display(),
                all[start..].join("\n")
            )
        }
        Err(error) => format!("\n(cannot read {}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_is_recognised_strictly() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(listening_url("listening on http://127.0.0.1:0"), None);
        assert_eq!(listening_url("listening on http://0.0.0.0:80"), None);
        assert_eq!(listening_url("hello"), None);
    }

    fn fake(script: &str, args: &[&str]) -> (NodeSpec, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut full = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()];
        full.extend(args.iter().map(|a| a.to_string()));
        let spec = NodeSpec {
            name: "fake".into(),
            binary: "/bin/sh".into(),
            args: full,
            env: vec![],
            dir: dir.path().join("home"),
            log: dir.path().join("fake.log"),
            startup_timeout: Duration::from_secs(10),
        };
        (spec, dir)
    }

    #[tokio::test]
    async fn a_fake_node_is_started_frozen_thawed_killed_and_restarted() {
        let (spec, _dir) = fake(
            "echo noise; echo err >&2; echo 'listening on http://127.0.0.1:4567'; exec sleep 60",
            &[],
        );
        let mut node = Node::start(spec).await.unwrap();
        assert_eq!(node.url(), "http://127.0.0.1:4567");
        assert_eq!(node.stray_stdout(), vec!["noise".to_owned()]);
        let pid = node.pid().unwrap();
        node.freeze().unwrap();
        assert!(node.is_frozen());
        node.thaw().unwrap();
        assert!(node.exited().is_none());
        node.kill9().await.unwrap();
        assert!(!node.is_running());
        assert!(!signal::alive(pid));
        node.restart().await.unwrap();
        assert_eq!(node.starts(), 2);
        assert!(node
            .terminate(Duration::from_secs(5))
            .await
            .unwrap()
            .is_some());
        let log = std::fs::read_to_string(node.log_path()).unwrap();
        assert!(log.contains("start #2"), "{log}");
        assert_eq!(log.matches("err").count(), 2, "{log}");
    }

    #[tokio::test]
    async fn a_node_that_dies_or_stays_silent_is_reported() {
        let (spec, _dir) = fake("echo broken >&2; exit 3", &[]);
        let error = Node::start(spec).await.unwrap_err();
        assert!(matches!(error, NodeError::Exited { .. }), "{error}");
        assert!(error.to_string().contains("broken"), "{error}");

        let (mut spec, _dir) = fake("exec sleep 60", &[]);
        spec.startup_timeout = Duration::from_millis(200);
        let error = Node::start(spec).await.unwrap_err();
        assert!(
            matches!(error, NodeError::NoListeningLine { .. }),
            "{error}"
        );
    }

    #[test]
    fn flags_are_read_replaced_and_added() {
        let (mut spec, _dir) = fake("true", &["--listen", "127.0.0.1:0", "--data-dir"]);
        assert_eq!(spec.flag("--listen"), Some("127.0.0.1:0"));
        assert_eq!(spec.flag("--data-dir"), None);
        spec.set_flag("--listen", "127.0.0.1:4567");
        spec.set_flag("--data-dir", "/d");
        spec.set_flag("--id", "s1");
        assert_eq!(spec.fixed_port(), Some(4567));
        assert_eq!(spec.flag("--data-dir"), Some("/d"));
        assert_eq!(spec.flag("--id"), Some("s1"));
    }

    #[tokio::test]
    async fn a_node_on_port_0_keeps_its_address_once_told() {
        // The fake prints the port it was given, or 4567 for port 0, as a kernel would pick.
        let script = r#"port=${2##*:}; [ "$port" = 0 ] && port=4567; \
            echo "listening on http://127.0.0.1:$port"; exec sleep 60"#;
        let (spec, _dir) = fake(script, &["--listen", "127.0.0.1:0"]);
        let mut node = Node::start(spec).await.unwrap();
        assert_eq!(node.spec().fixed_port(), None);
        node.keep_address();
        assert_eq!(node.spec().flag("--listen"), Some("127.0.0.1:4567"));
        node.restart().await.unwrap();
        assert_eq!(node.url(), "http://127.0.0.1:4567");
        node.kill_now();
        assert!(!node.is_running());
    }

    #[tokio::test]
    async fn a_fixed_port_must_be_the_one_printed() {
        let (spec, _dir) = fake(
            "echo 'listening on http://127.0.0.1:4567'; exec sleep 60",
            &["--listen", "127.0.0.1:4568"],
        );
        assert_eq!(spec.fixed_port(), Some(4568));
        let error = Node::start(spec).await.unwrap_err();
        assert!(matches!(error, NodeError::WrongPort { .. }), "{error}");
    }
}
