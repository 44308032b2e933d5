//! The harness: builds the node binaries once, starts real `master` and `secondary` processes on
//! port 0 inside a broker namespace of their own, and talks to them over plain HTTP.
//!
//! Every test owns a [`TestCluster`]. Dropping it kills the node processes, deletes the
//! namespace's queues and exchange from the shared broker and, when the test failed, prints the
//! tail of every node's log. Nothing here sleeps for a fixed time to let something happen: every
//! wait polls a condition until a deadline ([`wait_until`], [`wait_for`]).

use futures_util::future::join_all;
use replog_common::wire::{EntryMessage, MessagesPage};
use replog_common::NodeId;
use replog_shell::topology::Topology;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a condition may take before a test gives up. Generous because CI has two cores and
/// runs two clusters at once; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a node may take to print its `listening on` line after it was spawned.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(50);

/// How many log lines of each node a failed test prints.
const LOG_TAIL_LINES: usize = 60;

/// The broker every test cluster shares, unless `REPLOG_AMQP_URL` names another.
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// Where the node binaries are, once built.
struct Binaries {
    /// `target/debug/master`.
    master: PathBuf,
    /// `target/debug/secondary`.
    secondary: PathBuf,
}

/// Built at most once per test process, however many tests ask at once; a build failure is kept
/// so that every test reports it instead of rebuilding.
static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();

fn binaries() -> &'static Binaries {
    match BINARIES.get_or_init(build_binaries) {
        Ok(binaries) => binaries,
        Err(error) => panic!("{error}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
        .to_path_buf()
}

/// Runs `cargo build` for both node packages: `cargo test -p replog-tests` does not build other
/// packages' binaries, and a stale binary would test old code.
fn build_binaries() -> Result<Binaries, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "-p", "replog-master", "-p", "replog-secondary"])
        .output()
        .map_err(|error| format!("cannot run {cargo:?}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the node binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // A relative CARGO_TARGET_DIR is relative to where cargo runs, which is the root here.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let binary = |name: &str| {
        let path = target
            .join("debug")
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("cargo built, but {} is missing", path.display()))
        }
    };
    Ok(Binaries {
        master: binary("master")?,
        secondary: binary("secondary")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Processes and their logs
// ---------------------------------------------------------------------------------------------

/// `REPLOG_TEST_LOGS=1` lets node logs through to the terminal instead of into files.
fn logs_inherited() -> bool {
    std::env::var("REPLOG_TEST_LOGS").is_ok_and(|value| value == "1")
}

/// The last lines of a node's log, ready to append to a panic message.
fn log_tail(path: &Path) -> String {
    if logs_inherited() {
        return String::from("\n(node logs went to the terminal: REPLOG_TEST_LOGS=1)");
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            format!(
                "\n----- last {} lines of {} -----\n{}\n-----",
                lines.len() - start,
                path.display(),
                lines[start..].join("\n")
            )
        }
        Err(error) => format!("\n(cannot read {}: {error})", path.display()),
    }
}

/// One node's OS process, and what it takes to start it again.
struct NodeProcess {
    /// `master` or `s1`, for messages.
    name: String,
    /// The binary, kept for restarts.
    binary: PathBuf,
    /// The full command line, kept for restarts: same id, same namespace.
    args: Vec<String>,
    /// Its working directory, which holds its data directory; kept across restarts.
    home: PathBuf,
    /// Where stderr goes; restarts append to it.
    log: PathBuf,
    /// `None` once killed.
    child: Option<Child>,
    /// Whatever it printed on stdout besides the `listening on` line.
    stray: StrayStdout,
}

/// Lines a node printed on stdout besides its `listening on` line, which the contract forbids.
#[derive(Clone, Default)]
pub struct StrayStdout {
    /// `(printed before the listening line?, line)`, the first few only.
    lines: Arc<Mutex<Vec<(bool, String)>>>,
    /// Set once the listening line was read.
    listening: Arc<AtomicBool>,
}

impl StrayStdout {
    /// Enough to show what went wrong.
    const KEEP: usize = 5;

    fn record(&self, log: &Path, line: &str) {
        let before = !self.listening.load(Ordering::SeqCst);
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() < Self::KEEP {
            lines.push((before, line.to_owned()));
        }
        drop(lines);
        // Copied into the log, where a human reading it will look.
        if let Ok(mut file) = OpenOptions::new().append(true).open(log) {
            let _ = writeln!(file, "[stdout] {line}");
        }
    }

    fn mark_listening(&self) {
        self.listening.store(true, Ordering::SeqCst);
    }

    /// The first stray lines, each marked with whether it came before the listening line.
    pub fn lines(&self) -> Vec<(bool, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The base URL in a `listening on http://127.0.0.1:PORT` line.
fn listening_url(line: &str) -> Option<String> {
    let url = line.strip_prefix("listening on ")?;
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.parse::<u16>()
        .is_ok_and(|port| port != 0)
        .then(|| url.to_owned())
}

impl NodeProcess {
    /// Spawns the node and waits for its one stdout line; returns the process and its base URL.
    async fn spawn(
        name: &str,
        binary: &Path,
        args: Vec<String>,
        home: PathBuf,
        log: PathBuf,
    ) -> (NodeProcess, String) {
        std::fs::create_dir_all(&home)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", home.display()));
        let mut command = Command::new(binary);
        command
            .args(&args)
            // Whatever a node writes to relative paths stays in this test's own directory, out
            // of the repository and away from the other tests running at the same time.
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A panicking test must not leave nodes behind.
            .kill_on_drop(true);
        // Flags alone configure the node: a REPLOG_* variable in the developer's shell must not
        // change what a test runs.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REPLOG_") {
                command.env_remove(key);
            }
        }
        if logs_inherited() {
            command.stderr(Stdio::inherit());
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap_or_else(|error| panic!("cannot open {}: {error}", log.display()));
            command.stderr(file);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({}): {error}", binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        // The contract: once bound, the node prints exactly `listening on http://127.0.0.1:PORT`
        // and nothing else on stdout. Other lines are tolerated here so that one broken promise
        // does not hide every other result; they are recorded, and `startup.rs` asserts there
        // are none.
        let stray = StrayStdout::default();
        let url = tokio::time::timeout(STARTUP_DEADLINE, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match listening_url(&line) {
                        Some(url) => return url,
                        None => stray.record(&log, &line),
                    },
                    Ok(None) => {
                        let status = child.wait().await;
                        panic!(
                            "{name} exited ({status:?}) before printing `listening on`{}",
                            log_tail(&log)
                        )
                    }
                    Err(error) => {
                        panic!("cannot read {name}'s stdout: {error}{}", log_tail(&log))
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{name} printed no `listening on http://127.0.0.1:PORT` line within \
                 {STARTUP_DEADLINE:?}{}",
                log_tail(&log)
            )
        });
        stray.mark_listening();
        // Keep reading so that a chatty node never blocks on a full pipe.
        let after = stray.clone();
        let stray_log = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                after.record(&stray_log, &line);
            }
        });
        let process = NodeProcess {
            name: name.to_owned(),
            binary: binary.to_owned(),
            args,
            home,
            log,
            child: Some(child),
            stray,
        };
        (process, url)
    }

    /// SIGKILL, then reap: no graceful shutdown, the way a crash looks.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .unwrap_or_else(|error| panic!("cannot kill {}: {error}", self.name));
        }
    }

    /// Starts the same command line again (a new port); returns the new base URL.
    async fn restart(&mut self) -> String {
        self.kill().await;
        if !logs_inherited() {
            if let Ok(mut file) = OpenOptions::new().append(true).open(&self.log) {
                let _ = writeln!(file, "----- test harness: restarting {} -----", self.name);
            }
        }
        let (process, url) = NodeProcess::spawn(
            &self.name,
            &self.binary,
            self.args.clone(),
            self.home.clone(),
            self.log.clone(),
        )
        .await;
        *self = process;
        url
    }

    /// For `Drop`, where nothing can be awaited: SIGKILL now, reap briefly so that the node's
    /// broker connection is gone before its queues are deleted.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let give_up = Instant::now() + Duration::from_secs(5);
            while Instant::now() < give_up {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// Typed requests against one node. Cheap to clone, so a test can move one into a spawned task
/// (a write that is expected to stay pending).
#[derive(Clone, Debug)]
pub struct NodeApi {
    /// `master` or the secondary's id, for messages.
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Shared connection pool.
    client: reqwest::Client,
}

impl NodeApi {
    /// `POST /messages` with a JSON body and `Content-Type: application/json`.
    pub async fn post_message(&self, body: &Value) -> (StatusCode, Value) {
        self.post_raw(body.to_string(), Some("application/json"))
            .await
    }

    /// `POST /messages` with a JSON body; `Err` when no answer came (the node died).
    pub async fn try_post_message(&self, body: &Value) -> Result<(StatusCode, Value), String> {
        let response = self
            .client
            .post(format!("{}/messages", self.url))
            .json(body)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|error| error.to_string())?;
        let body = serde_json::from_str(&text).map_err(|error| {
            format!("{status} with a body that is not JSON ({error}): {text:?}")
        })?;
        Ok((status, body))
    }

    /// `POST /messages` with any body and any (or no) `Content-Type`.
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/messages", self.url))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap_or_else(|error| {
            panic!(
                "POST {}/messages on {} failed: {error}",
                self.url, self.name
            )
        });
        self.read_json("POST /messages", response).await
    }

    /// `GET <path_and_query>`: the status and the JSON body.
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("GET {path_and_query} on {} failed: {error}", self.name)
            });
        self.read_json(&format!("GET {path_and_query}"), response)
            .await
    }

    /// `GET /messages`: the whole log this node shows.
    pub async fn messages(&self) -> Vec<EntryMessage> {
        let (status, body) = self.get("/messages").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET /messages on {}: {body}",
            self.name
        );
        let page: MessagesPage = serde_json::from_value(body.clone()).unwrap_or_else(|error| {
            panic!(
                "GET /messages on {} is not a messages page ({error}): {body}",
                self.name
            )
        });
        page.messages
    }

    /// `GET /health`, which must answer 200.
    pub async fn health(&self) -> Value {
        let (status, body) = self.get("/health").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET /health on {}: {body}",
            self.name
        );
        body
    }

    /// Every answer of the API is JSON, errors included: a body that is not is a failure.
    async fn read_json(&self, what: &str, response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        let text = response.text().await.unwrap_or_else(|error| {
            panic!("{what} on {}: cannot read the body: {error}", self.name)
        });
        let body = serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!(
                "{what} on {} answered {status} with a body that is not JSON ({error}): {text:?}",
                self.name
            )
        });
        (status, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// The running master.
pub struct MasterNode {
    /// Requests against it.
    api: NodeApi,
    /// Its process.
    process: NodeProcess,
}

impl MasterNode {
    /// What it printed on stdout besides its `listening on` line.
    pub fn stray_stdout(&self) -> Vec<(bool, String)> {
        self.process.stray.lines()
    }

    /// A handle to move into a spawned task.
    pub fn api(&self) -> NodeApi {
        self.api.clone()
    }

    /// Its data directory (`--data-dir`), for tests that damage files while it is down.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.process.home)
    }

    /// Its log so far; `None` when logs go to the terminal (`REPLOG_TEST_LOGS=1`).
    pub fn log_text(&self) -> Option<String> {
        if logs_inherited() {
            return None;
        }
        Some(std::fs::read_to_string(&self.process.log).unwrap_or_default())
    }

    /// SIGKILL: what the master did not store is lost; its data directory stays.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts it again on the same address, with the same flags and data directory, so that
    /// the secondaries' `--master-url` still points at it.
    pub async fn restart(&mut self) {
        let address = self
            .api
            .url
            .strip_prefix("http://")
            .expect("an http URL")
            .to_owned();
        set_flag(&mut self.process.args, "--listen", address);
        let url = self.process.restart().await;
        assert_eq!(url, self.api.url, "the master came back on another address");
    }
}

/// Replaces the value of `flag` in a node's command line, which must hold it.
fn set_flag(args: &mut [String], flag: &str, value: String) {
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("the node was started with {flag}"));
    args[at + 1] = value;
}

/// `cluster.master.post_message(..)` reads better than going through a field each time.
impl Deref for MasterNode {
    type Target = NodeApi;

    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

/// One secondary, running or killed.
pub struct SecondaryNode {
    /// Its `--id`.
    pub id: String,
    /// Requests against it; the URL changes on restart.
    api: NodeApi,
    /// Its process.
    process: NodeProcess,
}

impl SecondaryNode {
    /// Its log so far; `None` when logs go to the terminal (`REPLOG_TEST_LOGS=1`).
    pub fn log_text(&self) -> Option<String> {
        if logs_inherited() {
            return None;
        }
        Some(std::fs::read_to_string(&self.process.log).unwrap_or_default())
    }

    /// What it printed on stdout besides its `listening on` line.
    pub fn stray_stdout(&self) -> Vec<(bool, String)> {
        self.process.stray.lines()
    }

    /// A handle to move into a spawned task; stale once the node restarts.
    pub fn api(&self) -> NodeApi {
        self.api.clone()
    }

    /// SIGKILL: the secondary loses what it held in memory and its unacked deliveries; what
    /// it stored in its data directory stays.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Its data directory (`--data-dir`), for tests that damage files while it is down.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.process.home)
    }

    /// Deletes everything a killed secondary stored, as if its disk were replaced.
    pub fn wipe_state(&self) {
        assert!(
            !self.is_running(),
            "kill {} before wiping its state",
            self.id
        );
        let data = data_dir(&self.process.home);
        // Missing would mean the node keeps its state elsewhere and this wipes nothing.
        std::fs::remove_dir_all(&data)
            .unwrap_or_else(|error| panic!("cannot remove {}: {error}", data.display()));
    }

    /// Starts it again with the same id, namespace and flags.
    pub async fn restart(&mut self) {
        self.api.url = self.process.restart().await;
    }

    fn is_running(&self) -> bool {
        self.process.child.is_some()
    }
}

/// `cluster.secondary("s1").messages()`.
impl Deref for SecondaryNode {
    type Target = NodeApi;

    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// How to start a cluster; [`TestCluster::builder`] gives the default: secondaries `s1,s2`, all
/// default flags.
pub struct ClusterBuilder {
    /// What the master's `--secondaries` lists.
    configured: Vec<String>,
    /// Extra master flags.
    master_args: Vec<String>,
    /// Extra flags per secondary, used whenever that secondary is started.
    secondary_args: Vec<(String, Vec<String>)>,
    /// `--queue-type` for every node, or the nodes' default.
    queue_type: Option<String>,
    /// A broker of the test's own (a private node it may stop); the shared one when `None`.
    amqp_url: Option<String>,
}

impl ClusterBuilder {
    /// Points every node at this broker instead of the shared one.
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_url = Some(url.to_owned());
        self
    }

    /// The master's `--secondaries`.
    pub fn secondaries(mut self, ids: &[&str]) -> Self {
        self.configured = ids.iter().map(|id| id.to_string()).collect();
        self
    }

    /// Extra master flags, e.g. `["--dedup", "content"]`.
    pub fn master_args(mut self, args: &[&str]) -> Self {
        self.master_args = args.iter().map(|arg| arg.to_string()).collect();
        self
    }

    /// Extra flags for one secondary, e.g. `("s2", ["--delay-ms", "1500"])`.
    pub fn secondary_args(mut self, id: &str, args: &[&str]) -> Self {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        self.secondary_args.push((id.to_owned(), args));
        self
    }

    /// `--queue-type` for the master and every secondary.
    pub fn queue_type(mut self, kind: &str) -> Self {
        self.queue_type = Some(kind.to_owned());
        self
    }

    /// Starts the master and every configured secondary.
    pub async fn start(self) -> TestCluster {
        let ids = self.configured.clone();
        let mut cluster = self.start_master_only().await;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        cluster.start_secondaries(&ids).await;
        cluster
    }

    /// Starts the master alone; secondaries come later with [`TestCluster::start_secondary`].
    pub async fn start_master_only(self) -> TestCluster {
        let binaries = binaries();
        let namespace = format!("test-{}", uuid::Uuid::new_v4());
        let amqp_url = self.amqp_url.clone().unwrap_or_else(|| {
            std::env::var("REPLOG_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
        });
        // Armed before the master starts: its queues go even if it never prints its URL.
        let broker = BrokerNamespace {
            namespace: namespace.clone(),
            amqp_url: amqp_url.clone(),
            configured: self.configured.clone(),
        };
        let log_dir = std::env::temp_dir().join("replog-tests").join(&namespace);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_dir.display()));
        let client = reqwest::Client::builder()
            // A write that should stay pending is bounded by the test's own deadlines; this only
            // keeps a forgotten request from hanging the suite.
            .timeout(Duration::from_secs(90))
            .build()
            .expect("the HTTP client builds");

        let mut args = strings(&["--listen", "127.0.0.1:0", "--amqp-url", &amqp_url]);
        args.extend(strings(&["--namespace", &namespace]));
        args.extend(strings(&["--secondaries", &self.configured.join(",")]));
        // Each node keeps its log in a directory of its own, kept across restarts.
        let master_data = data_dir(&log_dir.join("master"));
        args.extend(strings(&["--data-dir", &master_data.to_string_lossy()]));
        if let Some(kind) = &self.queue_type {
            args.extend(strings(&["--queue-type", kind]));
        }
        args.extend(self.master_args.iter().cloned());
        let (process, url) = NodeProcess::spawn(
            "master",
            &binaries.master,
            args,
            log_dir.join("master"),
            log_dir.join("master.log"),
        )
        .await;
        let master = MasterNode {
            api: NodeApi {
                name: "master".into(),
                url,
                client: client.clone(),
            },
            process,
        };
        TestCluster {
            namespace,
            master,
            secondaries: Vec::new(),
            configured: self.configured,
            secondary_args: self.secondary_args,
            queue_type: self.queue_type,
            amqp_url,
            log_dir,
            client,
            _broker: broker,
        }
    }
}

/// A master and its secondaries in a namespace of their own, torn down on drop.
pub struct TestCluster {
    /// `test-<uuid>`: the prefix of this cluster's broker names.
    pub namespace: String,
    /// The master.
    pub master: MasterNode,
    /// The secondaries started so far, killed ones included.
    secondaries: Vec<SecondaryNode>,
    /// The master's `--secondaries`, whose queues are deleted on drop.
    configured: Vec<String>,
    /// Extra flags per secondary id.
    secondary_args: Vec<(String, Vec<String>)>,
    /// `--queue-type` for every node.
    queue_type: Option<String>,
    /// The broker, for the secondaries' flags and for clean-up.
    amqp_url: String,
    /// Node logs; removed when the test passed.
    log_dir: PathBuf,
    /// Shared by every node's API.
    client: reqwest::Client,
    /// Deletes the namespace from the broker when dropped, after `Drop` killed the nodes.
    _broker: BrokerNamespace,
}

impl TestCluster {
    /// The default cluster: secondaries `s1,s2`, default flags.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            configured: strings(&["s1", "s2"]),
            master_args: Vec::new(),
            secondary_args: Vec::new(),
            queue_type: None,
            amqp_url: None,
        }
    }

    /// Master plus `s1` and `s2`, all with default flags.
    pub async fn start() -> TestCluster {
        Self::builder().start().await
    }

    /// Starts a second master in this cluster's namespace, with the same flags but a data
    /// directory of its own: a misconfiguration the cluster must survive.
    pub async fn start_rival_master(&self) -> MasterNode {
        let home = self.log_dir.join("rival-master");
        let mut args = self.master.process.args.clone();
        set_flag(&mut args, "--listen", "127.0.0.1:0".into());
        set_flag(
            &mut args,
            "--data-dir",
            data_dir(&home).to_string_lossy().into_owned(),
        );
        let log = self.log_dir.join("rival-master.log");
        let (process, url) =
            NodeProcess::spawn("rival-master", &binaries().master, args, home, log).await;
        let client = self.master.api.client.clone();
        MasterNode {
            api: NodeApi {
                name: "rival-master".into(),
                url,
                client,
            },
            process,
        }
    }

    /// Starts one secondary with the flags the builder gave it.
    pub async fn start_secondary(&mut self, id: &str) -> &SecondaryNode {
        self.start_secondaries(&[id]).await;
        self.secondary(id)
    }

    /// Starts several secondaries at once.
    pub async fn start_secondaries(&mut self, ids: &[&str]) {
        let launches = ids.iter().map(|id| {
            assert!(
                self.secondaries.iter().all(|node| node.id != *id),
                "{id} was started already; use restart()"
            );
            let mut args = strings(&["--id", id, "--listen", "127.0.0.1:0"]);
            args.extend(strings(&["--amqp-url", &self.amqp_url]));
            args.extend(strings(&["--namespace", &self.namespace]));
            args.extend(strings(&["--master-url", &self.master.url]));
            let home = self.log_dir.join(id);
            args.extend(strings(&["--data-dir", &data_dir(&home).to_string_lossy()]));
            if let Some(kind) = &self.queue_type {
                args.extend(strings(&["--queue-type", kind]));
            }
            for (for_id, extra) in &self.secondary_args {
                if for_id == id {
                    args.extend(extra.iter().cloned());
                }
            }
            let log = self.log_dir.join(format!("{id}.log"));
            let binary = binaries().secondary.clone();
            async move {
                let (process, url) = NodeProcess::spawn(id, &binary, args, home, log).await;
                (id.to_string(), process, url)
            }
        });
        for (id, process, url) in join_all(launches).await {
            self.secondaries.push(SecondaryNode {
                api: NodeApi {
                    name: id.clone(),
                    url,
                    client: self.client.clone(),
                },
                id,
                process,
            });
        }
    }

    /// A secondary started earlier.
    pub fn secondary(&self, id: &str) -> &SecondaryNode {
        self.secondaries
            .iter()
            .find(|node| node.id == id)
            .unwrap_or_else(|| panic!("secondary {id} was never started"))
    }

    /// A secondary started earlier, to kill or restart it.
    pub fn secondary_mut(&mut self, id: &str) -> &mut SecondaryNode {
        self.secondaries
            .iter_mut()
            .find(|node| node.id == id)
            .unwrap_or_else(|| panic!("secondary {id} was never started"))
    }

    /// The master and every running secondary.
    pub fn running_nodes(&self) -> Vec<&NodeApi> {
        let secondaries = self
            .secondaries
            .iter()
            .filter(|node| node.is_running())
            .map(|node| &node.api);
        std::iter::once(&self.master.api)
            .chain(secondaries)
            .collect()
    }

    /// Waits until the master and every running secondary list the same `len` entries, and
    /// returns them. Each secondary must at every look show a prefix of the master's log: a
    /// gap, a reordering or a foreign entry fails at once instead of at the deadline.
    pub async fn wait_for_convergence(&self, len: usize) -> Vec<EntryMessage> {
        let what = format!("every node lists the same {len} entries");
        wait_for(DEADLINE, &what, || async move {
            let mut seen = Vec::new();
            let mut secondaries = Vec::new();
            for node in self.secondaries.iter().filter(|node| node.is_running()) {
                secondaries.push((node.id.clone(), node.messages().await));
            }
            // Read after the secondaries: the master's log only grows, so it covers what they
            // showed.
            let master = self.master.messages().await;
            for (name, entries) in &secondaries {
                assert_prefix(name, entries, &master);
                seen.push(format!("{name}: {} entries", entries.len()));
            }
            seen.insert(0, format!("master: {} entries", master.len()));
            let done = master.len() == len && secondaries.iter().all(|(_, e)| e.len() == len);
            assert!(
                master.len() <= len,
                "the master holds {} entries, more than the {len} written: {}",
                master.len(),
                describe(&master)
            );
            if done {
                Ok(master)
            } else {
                Err(seen.join(", "))
            }
        })
        .await
    }

    /// Deletes a secondary's queue from the broker, as an operator tidying up would: whatever
    /// it held is gone.
    pub async fn delete_secondary_queue(&self, id: &str) {
        let id = NodeId::parse(id).expect("a valid node id");
        let queue = Topology::new(self.namespace.clone()).secondary_queue(&id);
        delete_names(&self.amqp_url, std::slice::from_ref(&queue), &[])
            .await
            .unwrap_or_else(|error| panic!("cannot delete {queue}: {error}"));
    }

    /// One write for every node, answered `201` with `acks: 3`. Once it returns, every
    /// secondary has finished starting up, so later entries reach them through their queues.
    pub async fn warm_up(&self) -> Value {
        let (status, answer) = self
            .master
            .post_message(&json!({"content": "warm-up", "w": 3}))
            .await;
        assert_created(status, &answer, "warm-up", 3);
        assert_eq!(answer["acks"], 3, "{answer}");
        answer
    }

    /// Waits until the master's `/health` reports every configured secondary's `acked` at
    /// `order` or beyond.
    pub async fn wait_for_acks(&self, order: u64) {
        let what = format!("the master reports every secondary acked {order}");
        wait_for(DEADLINE, &what, || async move {
            let health = self.master.health().await;
            let acked: Vec<Option<u64>> = health["secondaries"]
                .as_array()
                .map(|list| list.iter().map(|s| s["acked"].as_u64()).collect())
                .unwrap_or_default();
            if acked.len() == self.configured.len() && acked.iter().all(|a| *a >= Some(order)) {
                Ok(())
            } else {
                Err(health.to_string())
            }
        })
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.master.process.kill_now();
        for node in &mut self.secondaries {
            node.process.kill_now();
        }
        if std::thread::panicking() {
            eprintln!("namespace: {}", self.namespace);
            eprint!("{}", log_tail(&self.master.process.log));
            for node in &self.secondaries {
                eprint!("{}", log_tail(&node.process.log));
            }
            eprintln!("\nlogs kept in {}", self.log_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// One test's names on the shared broker.
struct BrokerNamespace {
    /// `test-<uuid>`.
    namespace: String,
    /// Where to delete them.
    amqp_url: String,
    /// The master's `--secondaries`: one queue each.
    configured: Vec<String>,
}

impl Drop for BrokerNamespace {
    /// Deletes every name the contract derives from the namespace.
    fn drop(&mut self) {
        let topology = Topology::new(self.namespace.clone());
        let mut queues: Vec<String> = self
            .configured
            .iter()
            .filter_map(|id| NodeId::parse(id))
            .map(|id| topology.secondary_queue(&id))
            .collect();
        queues.push(topology.acks_queue());
        let exchanges = vec![topology.entries_exchange()];
        if let Err(error) = delete_broker_objects(self.amqp_url.clone(), queues, exchanges) {
            eprintln!(
                "warning: could not delete namespace {} from the broker: {error}",
                self.namespace
            );
        }
    }
}

/// Deletes a finished test's durable queues and exchange, so they do not pile up on a shared
/// broker. Runs on a thread of its own with its own runtime because `Drop` cannot await.
fn delete_broker_objects(
    amqp_url: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
) -> Result<(), String> {
    let work = move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(delete_names(&amqp_url, &queues, &exchanges))
    };
    std::thread::spawn(work)
        .join()
        .map_err(|_| "the clean-up thread panicked".to_owned())?
}

/// Deletes queues and exchanges over AMQP; what does not exist counts as deleted.
async fn delete_names(
    amqp_url: &str,
    queues: &[String],
    exchanges: &[String],
) -> Result<(), String> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let cleanup = async {
        let connection =
            lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
                .await
                .map_err(|error| format!("connect: {error}"))?;
        let mut failures = Vec::new();
        // A failed delete closes its channel, so each one gets a fresh channel.
        for queue in queues {
            let outcome = async {
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                channel.close(200, "done".into()).await
            };
            if let Err(error) = outcome.await {
                failures.push(format!("queue {queue}: {error}"));
            }
        }
        for exchange in exchanges {
            let outcome = async {
                let channel = connection.create_channel().await?;
                channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
                channel.close(200, "done".into()).await
            };
            if let Err(error) = outcome.await {
                failures.push(format!("exchange {exchange}: {error}"));
            }
        }
        let _ = connection.close(200, "done".into()).await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    };
    tokio::time::timeout(Duration::from_secs(15), cleanup)
        .await
        .map_err(|_| "timed out".to_owned())?
}

// ---------------------------------------------------------------------------------------------
// Waiting and checking
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every 50 ms until it returns `Ok`, and returns that value. `Err` carries what
/// was seen, so that a timeout says how far things got.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    replog_testkit::wait_for(deadline, POLL, what, probe)
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"))
}

/// Polls `condition` every 50 ms until it holds.
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

/// Fails unless `entries` is exactly the start of `log`.
pub fn assert_prefix(name: &str, entries: &[EntryMessage], log: &[EntryMessage]) {
    let agrees = entries.len() <= log.len() && entries == &log[..entries.len()];
    assert!(
        agrees,
        "{name} shows entries that are not a prefix of the master's log\n{name}: {}\nmaster: {}",
        describe(entries),
        describe(log)
    );
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

/// The contents of a log, in order.
pub fn contents(entries: &[EntryMessage]) -> Vec<&str> {
    entries.iter().map(|e| e.content.as_str()).collect()
}

/// `(id, acked)` for each secondary in the master's `/health`, in the order listed.
pub fn acked_by(health: &Value) -> Vec<(String, u64)> {
    let list = health["secondaries"]
        .as_array()
        .unwrap_or_else(|| panic!("health has no secondaries list: {health}"));
    list.iter()
        .map(|node| {
            let id = node["id"].as_str();
            let acked = node["acked"].as_u64();
            match (id, acked) {
                (Some(id), Some(acked)) => (id.to_owned(), acked),
                _ => panic!("each secondary must have an id and an acked count: {health}"),
            }
        })
        .collect()
}

/// Sends every `(content, w)` write with at most `concurrency` in flight; each must be answered
/// `201` for a new entry with `acks >= w`, all within `deadline`. Returns the answers in the
/// order of `writes`.
pub async fn write_all(
    api: &NodeApi,
    writes: &[(String, u64)],
    concurrency: usize,
    deadline: Duration,
) -> Vec<Value> {
    use futures_util::StreamExt;
    // Owned items and an owned client: borrowed ones make the future unusable in tokio::spawn.
    let requests = futures_util::stream::iter(writes.to_vec())
        .map(|(content, w)| {
            let api = api.clone();
            async move {
                let (status, answer) = api.post_message(&write(&content, w)).await;
                assert_created(status, &answer, &content, w);
                answer
            }
        })
        .buffered(concurrency)
        .collect::<Vec<Value>>();
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
pub fn assert_log_matches_answers(log: &[EntryMessage], answers: &[Value]) {
    assert_eq!(
        log.len(),
        answers.len(),
        "{} writes were answered 201 but the log holds {} entries: {}",
        answers.len(),
        log.len(),
        describe(log)
    );
    for answer in answers {
        let order = answer["order"].as_u64().expect("an order") as usize;
        let entry = order
            .checked_sub(1)
            .and_then(|index| log.get(index))
            .unwrap_or_else(|| panic!("{answer} names an order outside the log"));
        assert_eq!(
            entry.content, answer["content"],
            "entry {order} vs its answer {answer}"
        );
        assert_eq!(
            entry.message_id, answer["message_id"],
            "entry {order} vs its answer {answer}"
        );
    }
}

/// A write request body.
pub fn write(content: &str, w: u64) -> Value {
    json!({ "content": content, "w": w })
}

/// Asserts a `201 Created` for a new entry in a three-node cluster and returns its order.
pub fn assert_created(status: StatusCode, body: &Value, content: &str, w: u64) -> u64 {
    assert_eq!(status, StatusCode::CREATED, "writing {content:?}: {body}");
    assert_eq!(body["content"], content, "{body}");
    assert_eq!(body["w"], w, "{body}");
    assert!(
        body["message_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    let acks = body["acks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no acks: {body}"));
    assert!(
        (w..=3).contains(&acks),
        "acks must be at least w={w} and at most 3: {body}"
    );
    body["order"]
        .as_u64()
        .filter(|order| *order >= 1)
        .unwrap_or_else(|| panic!("order must be a positive integer: {body}"))
}

/// A node's `--data-dir`, inside its working directory.
fn data_dir(home: &Path) -> PathBuf {
    home.join("data")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}
