//! The command line of `load`, and its validation into a [`Plan`]: what to run, how long, and
//! against what. Every flag has an `REPLOG_BENCH_*` fallback; bad values are refused before
//! anything starts, with a message saying what is allowed.

use clap::Parser;
use std::time::Duration;

/// The AMQP URL used when none is given.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Flags of `load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "load",
    about = "Benchmark replog through HTTP, side by side with the bare RabbitMQ pipeline of the same shape (--raw)"
)]
pub struct Args {
    /// A running master to load instead of starting a cluster of release nodes with fresh data
    /// directories.
    #[arg(long, env = "REPLOG_BENCH_MASTER")]
    pub master: Option<String>,
    /// With `--master`: the secondaries' base URLs, comma-separated, whose `/health` gives the
    /// replication lag. Without them the lag is the master's view (its `acked` positions).
    #[arg(long, env = "REPLOG_BENCH_SECONDARY_URLS", value_delimiter = ',')]
    pub secondary_urls: Vec<String>,
    /// The broker of the bare pipeline and of the cluster started here.
    #[arg(long, env = "REPLOG_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_default_value = true)]
    pub amqp_url: String,
    /// Also run the bare RabbitMQ pipeline (one confirmed publisher, a fanout to one durable
    /// queue per secondary, batched `multiple=true` acks, one cumulative reply per batch) with
    /// the same clients and entry size, and print replog's ratio to it.
    #[arg(long, env = "REPLOG_BENCH_RAW")]
    pub raw: bool,
    /// Run only the bare pipeline, no replog.
    #[arg(long, env = "REPLOG_BENCH_RAW_ONLY")]
    pub raw_only: bool,
    /// Concurrent clients, or a comma-separated list of counts to run one after another.
    #[arg(
        long,
        alias = "concurrency",
        env = "REPLOG_BENCH_CLIENTS",
        default_value = "32"
    )]
    pub clients: String,
    /// Write concern: one value, or a comma-separated list of values run one after another.
    /// `all` is every node of the started cluster (1 + its secondaries, for each
    /// `--secondaries` count).
    #[arg(
        long,
        env = "REPLOG_BENCH_W",
        default_value = "1",
        conflicts_with = "w_mix"
    )]
    pub w: String,
    /// A mix of write concerns in one run, `w:weight,...` (e.g. `1:0.5,3:0.5`): each write
    /// draws its `w`.
    #[arg(long, env = "REPLOG_BENCH_W_MIX")]
    pub w_mix: Option<String>,
    /// Open loop: writes per second on a fixed schedule, whatever the answers do (latency counts
    /// from the scheduled time). Without it, closed loop: each client sends its next write when
    /// the previous one is answered.
    #[arg(long, env = "REPLOG_BENCH_RATE")]
    pub rate: Option<f64>,
    /// How long each cell runs (`10s`, `500ms`, `2m`; a bare number is seconds)
    /// [default: 10s unless --writes is given].
    #[arg(long, env = "REPLOG_BENCH_DURATION", conflicts_with = "writes")]
    pub duration: Option<String>,
    /// Writes per cell, instead of a duration.
    #[arg(long, env = "REPLOG_BENCH_WRITES")]
    pub writes: Option<u64>,
    /// Entry size in bytes.
    #[arg(long, env = "REPLOG_BENCH_SIZE", default_value_t = 100)]
    pub size: usize,
    /// Queue type of the secondaries' queues, or a comma-separated list (`classic,quorum`).
    #[arg(long, env = "REPLOG_BENCH_QUEUE_TYPE", default_value = "classic")]
    pub queue_type: String,
    /// Secondaries in the started cluster (and queues in the bare pipeline), or a
    /// comma-separated list of counts run one after another. 0 starts a master alone
    /// (`--secondaries ""`; replog only, w=1).
    #[arg(long, env = "REPLOG_BENCH_SECONDARIES", default_value = "2")]
    pub secondaries: String,
    /// Independent logs (each a master with its own secondaries and broker namespace) started
    /// side by side on the broker; each write goes to the log `partition_of(key, N)` picks
    /// for a key of its own. Throughput is reported per log and in total.
    #[arg(long, env = "REPLOG_BENCH_PARTITIONS", default_value_t = 1)]
    pub partitions: usize,
    /// How many times to repeat the whole matrix; every run is reported.
    #[arg(long, env = "REPLOG_BENCH_RUNS", default_value_t = 1)]
    pub runs: usize,
    /// Unanswered publishes the bare pipeline's publisher may have in flight.
    #[arg(long, env = "REPLOG_BENCH_WINDOW", default_value_t = 1000)]
    pub window: usize,
    /// Prefetch of the bare pipeline's consumers (the secondaries' default).
    #[arg(long, env = "REPLOG_BENCH_PREFETCH", default_value_t = 512)]
    pub prefetch: u16,
    /// How long one HTTP write may take before it counts as failed, in milliseconds.
    #[arg(long, env = "REPLOG_BENCH_TIMEOUT_MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Sample the resident memory (`VmRSS`) of every node of a cluster started here at this
    /// interval during each replog cell (`5s`), and report per node its RSS after warm-up, peak,
    /// last value and growth. Off by default.
    #[arg(long, env = "REPLOG_BENCH_MEMORY_EVERY")]
    pub memory_every: Option<String>,
    /// Extra flags for every master a cell starts, as one whitespace-separated string (e.g.
    /// `--linger-ms 0`), to compare a setting against the default in one invocation.
    #[arg(long, env = "REPLOG_BENCH_MASTER_FLAGS", allow_hyphen_values = true)]
    pub master_flags: Option<String>,
    /// Write every cell's results as JSON to this file.
    #[arg(long, env = "REPLOG_BENCH_JSON")]
    pub json: Option<std::path::PathBuf>,
    /// Write the markdown tables to this file (they are printed to stdout as well).
    #[arg(long, env = "REPLOG_BENCH_MARKDOWN")]
    pub markdown: Option<std::path::PathBuf>,
    /// Write a one-table summary of the replog cells (secondaries, partitions, clients, w,
    /// writes/s, latency, writes/s per partition) to this file.
    #[arg(long, env = "REPLOG_BENCH_SUMMARY")]
    pub summary: Option<std::path::PathBuf>,
}

/// Why the flags cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgsError {
    /// A flag's value is out of range or malformed.
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ArgsError {
    ArgsError::Invalid {
        flag,
        message: message.into(),
    }
}

/// The write concern of a cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum WSpec {
    /// Every write asks for this `w`.
    Fixed(u64),
    /// Every write asks for every node of the started cluster: resolved to a [`WSpec::Fixed`]
    /// by [`WSpec::resolve`] once the number of secondaries is known.
    All,
    /// Each write draws its `w` with these weights (normalised to sum to 1).
    Mix(Vec<(u64, f64)>),
}

impl WSpec {
    /// `all` as `1 + secondaries`; anything else as it is.
    pub fn resolve(&self, secondaries: usize) -> WSpec {
        match self {
            WSpec::All => WSpec::Fixed(secondaries as u64 + 1),
            other => other.clone(),
        }
    }

    /// The largest `w` a write of this cell may ask for (`None` for `all`: every node).
    pub fn max_w(&self) -> Option<u64> {
        match self {
            WSpec::Fixed(w) => Some(*w),
            WSpec::All => None,
            WSpec::Mix(weights) => weights.iter().map(|(w, _)| *w).max(),
        }
    }

    /// A `w` for one write, given a uniform draw from `[0, 1)`. `all` must have been resolved
    /// ([`WSpec::resolve`]); unresolved it asks for 1.
    pub fn pick(&self, draw: f64) -> u64 {
        match self {
            WSpec::Fixed(w) => *w,
            WSpec::All => 1,
            WSpec::Mix(weights) => {
                let mut left = draw;
                for (w, weight) in weights {
                    if left < *weight {
                        return *w;
                    }
                    left -= weight;
                }
                weights.last().map_or(1, |(w, _)| *w)
            }
        }
    }

    /// How the cell is labelled in the tables: `3`, `all`, or `1:0.50+3:0.50`.
    pub fn label(&self) -> String {
        match self {
            WSpec::Fixed(w) => w.to_string(),
            WSpec::All => "all".to_owned(),
            WSpec::Mix(weights) => weights
                .iter()
                .map(|(w, weight)| format!("{w}:{weight:.2}"))
                .collect::<Vec<_>>()
                .join("+"),
        }
    }
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Pace {
    /// Each client sends its next write when the previous one is answered.
    Closed,
    /// Writes are due on a fixed schedule at this rate per second; the clients take them in
    /// turn, and a write's latency counts from when it was due.
    Open {
        /// Writes per second.
        rate: f64,
    },
}

impl Pace {
    /// `closed`, or `open 500/s`.
    pub fn label(&self) -> String {
        match self {
            Pace::Closed => "closed".into(),
            Pace::Open { rate } => format!("open {rate}/s"),
        }
    }
}

/// When a cell stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long (writes in flight are still waited for).
    After(Duration),
    /// After this many writes.
    Writes(u64),
}

/// The queue type of the secondaries' queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// The classic durable queue.
    Classic,
    /// The Raft-replicated quorum queue.
    Quorum,
}

impl QueueKind {
    /// The name the nodes' `--queue-type` and the broker's `x-queue-type` use.
    pub fn name(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
        }
    }
}

/// Where replog runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Start a cluster of release nodes with fresh data directories for every cell.
    Start,
    /// Load a running master; lag from these secondaries' `/health` (or the master's view).
    Running {
        /// The master's base URL.
        master: String,
        /// The secondaries' base URLs.
        secondaries: Vec<String>,
    },
}

/// What one invocation runs: validated flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Run the bare pipeline.
    pub raw: bool,
    /// Run replog.
    pub replog: bool,
    /// Where replog runs.
    pub target: Target,
    /// The broker.
    pub amqp_url: String,
    /// Client counts, one cell each.
    pub clients: Vec<usize>,
    /// Write concerns, one replog cell each.
    pub w: Vec<WSpec>,
    /// Closed or open loop.
    pub pace: Pace,
    /// When each cell stops.
    pub stop: Stop,
    /// Entry size in bytes.
    pub size: usize,
    /// Queue types, one set of cells each.
    pub queue_types: Vec<QueueKind>,
    /// Secondary counts (queues of the bare pipeline), one set of cells each.
    pub secondaries: Vec<usize>,
    /// Independent logs started side by side, writes routed by key hash.
    pub partitions: usize,
    /// Repetitions of the whole matrix.
    pub runs: usize,
    /// The bare publisher's confirm window.
    pub window: usize,
    /// The bare consumers' prefetch.
    pub prefetch: u16,
    /// Per-write HTTP timeout.
    pub timeout: Duration,
    /// How often the nodes' resident memory is sampled during a replog cell; `None`: never.
    pub memory_every: Option<Duration>,
    /// Extra flags for every master a cell starts.
    pub master_flags: Vec<String>,
}

/// The most clients (or secondaries) a cell may have: beyond it the load generator measures
/// itself.
pub const MAX_CLIENTS: usize = 10_000;
/// The most secondaries.
pub const MAX_SECONDARIES: usize = 16;
/// The most partitions (each a whole cluster of processes on this machine).
pub const MAX_PARTITIONS: usize = 8;

impl Args {
    /// Validates the flags into a plan.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let clients = parse_list(&self.clients, "clients", |text| {
            let n: usize = text
                .parse()
                .map_err(|_| format!("{text:?} is not a count"))?;
            if n == 0 || n > MAX_CLIENTS {
                return Err(format!("{n} is outside 1..={MAX_CLIENTS}"));
            }
            Ok(n)
        })?;
        let secondaries = parse_list(&self.secondaries, "secondaries", |text| {
            let n: usize = text
                .parse()
                .map_err(|_| format!("{text:?} is not a count"))?;
            if n > MAX_SECONDARIES {
                return Err(format!("at most {MAX_SECONDARIES}, got {n}"));
            }
            Ok(n)
        })?;
        let raw = self.raw || self.raw_only;
        if raw && secondaries.contains(&0) {
            return Err(invalid(
                "secondaries",
                "the bare pipeline needs at least one queue (1 or more)",
            ));
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(invalid(
                "partitions",
                format!("from 1 to {MAX_PARTITIONS}, got {}", self.partitions),
            ));
        }
        let target = match &self.master {
            Some(master) => Target::Running {
                master: master.trim_end_matches('/').to_owned(),
                secondaries: self
                    .secondary_urls
                    .iter()
                    .filter(|url| !url.is_empty())
                    .map(|url| url.trim_end_matches('/').to_owned())
                    .collect(),
            },
            None if !self.secondary_urls.is_empty() => {
                return Err(invalid(
                    "secondary-urls",
                    "only with --master (a started cluster knows its secondaries)",
                ))
            }
            None => Target::Start,
        };
        if let Target::Running { .. } = target {
            if self.partitions > 1 {
                return Err(invalid(
                    "partitions",
                    "only for clusters started here (a running master is one log)",
                ));
            }
            if secondaries.len() > 1 {
                return Err(invalid(
                    "secondaries",
                    "one count with --master (the running cluster has the secondaries it has)",
                ));
            }
        }
        // With a running master the number of secondaries is the master's business; without
        // one, w may not exceed the smallest cluster this tool starts.
        let fewest = secondaries.iter().copied().min().unwrap_or(0);
        let max_w = match &target {
            Target::Start => fewest as u64 + 1,
            Target::Running { .. } => u64::MAX,
        };
        let check_w = |w: u64| {
            if w == 0 || w > max_w {
                Err(format!(
                    "w={w} is outside 1..={max_w} (the master plus {fewest} secondaries)"
                ))
            } else {
                Ok(w)
            }
        };
        let w = match &self.w_mix {
            Some(mix) => vec![parse_mix(mix, check_w)?],
            None => parse_list(&self.w, "w", |text| {
                if text == "all" {
                    return match target {
                        Target::Start => Ok(WSpec::All),
                        Target::Running { .. } => Err(
                            "`all` only for a cluster started here; give a number with --master"
                                .to_owned(),
                        ),
                    };
                }
                let w = text
                    .parse()
                    .map_err(|_| format!("{text:?} is not a write concern (a number or `all`)"))?;
                check_w(w).map(WSpec::Fixed)
            })?,
        };
        let pace = match self.rate {
            None => Pace::Closed,
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => {
                Pace::Open { rate }
            }
            Some(rate) => {
                return Err(invalid(
                    "rate",
                    format!("{rate} is not a rate in (0, 1000000] writes/s"),
                ))
            }
        };
        let stop = match (self.writes, &self.duration) {
            (Some(0), _) => return Err(invalid("writes", "at least 1")),
            (Some(writes), _) => Stop::Writes(writes),
            (None, Some(text)) => {
                let duration =
                    parse_duration(text).map_err(|message| invalid("duration", message))?;
                if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
                    return Err(invalid("duration", "from 1ms to 24h"));
                }
                Stop::After(duration)
            }
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if self.size == 0 || self.size > 16 * 1024 * 1024 {
            return Err(invalid("size", "from 1 byte to 16 MiB"));
        }
        let queue_types = parse_list(&self.queue_type, "queue-type", |text| match text {
            "classic" => Ok(QueueKind::Classic),
            "quorum" => Ok(QueueKind::Quorum),
            other => Err(format!("{other:?} is neither classic nor quorum")),
        })?;
        if self.runs == 0 || self.runs > 100 {
            return Err(invalid("runs", "from 1 to 100"));
        }
        if self.window == 0 || self.window > 1_000_000 {
            return Err(invalid("window", "from 1 to 1000000"));
        }
        if self.prefetch == 0 {
            return Err(invalid("prefetch", "at least 1"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("timeout-ms", "at least 1"));
        }
        let memory_every = match &self.memory_every {
            None => None,
            Some(_) if target != Target::Start => {
                return Err(invalid(
                    "memory-every",
                    "only for a cluster started here (its nodes are this machine's processes)",
                ))
            }
            Some(text) => {
                let every =
                    parse_duration(text).map_err(|message| invalid("memory-every", message))?;
                if every < Duration::from_millis(100) || every > Duration::from_secs(3600) {
                    return Err(invalid("memory-every", "from 100ms to 1h"));
                }
                Some(every)
            }
        };
        let master_flags: Vec<String> = self
            .master_flags
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !master_flags.is_empty() && target != Target::Start {
            return Err(invalid(
                "master-flags",
                "only for a cluster started here (a running master has its flags already)",
            ));
        }
        Ok(Plan {
            raw,
            replog: !self.raw_only,
            target,
            amqp_url: self.amqp_url.clone(),
            clients,
            w,
            pace,
            stop,
            size: self.size,
            queue_types,
            secondaries,
            partitions: self.partitions,
            runs: self.runs,
            window: self.window,
            prefetch: self.prefetch,
            timeout: Duration::from_millis(self.timeout_ms),
            memory_every,
            master_flags,
        })
    }
}

/// A comma-separated list, each item parsed by `item`; at least one item, no empty ones.
fn parse_list<T>(
    text: &str,
    flag: &'static str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ArgsError> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(invalid(flag, format!("{text:?} has an empty item")));
    }
    items
        .into_iter()
        .map(|text| item(text).map_err(|message| invalid(flag, message)))
        .collect()
}

/// `w:weight,...`: weights positive, normalised to sum to 1; each `w` at most once.
fn parse_mix(text: &str, check_w: impl Fn(u64) -> Result<u64, String>) -> Result<WSpec, ArgsError> {
    let pairs = parse_list(text, "w-mix", |pair| {
        let (w, weight) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not w:weight"))?;
        let w = check_w(
            w.trim()
                .parse()
                .map_err(|_| format!("{w:?} is not a write concern"))?,
        )?;
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{weight:?} is not a weight"))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!("weight {weight} must be positive"));
        }
        Ok((w, weight))
    })?;
    let mut seen: Vec<u64> = pairs.iter().map(|(w, _)| *w).collect();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != pairs.len() {
        return Err(invalid("w-mix", "each w may appear once"));
    }
    let total: f64 = pairs.iter().map(|(_, weight)| weight).sum();
    Ok(WSpec::Mix(
        pairs
            .into_iter()
            .map(|(w, weight)| (w, weight / total))
            .collect(),
    ))
}

/// `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds (fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unit {unit:?} is none of ms, s, m, h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, ArgsError> {
        let mut argv = vec!["load"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("clap parses").plan()
    }

    #[test]
    fn defaults_start_a_cluster_for_ten_seconds() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.target, Target::Start);
        assert_eq!(plan.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(plan.clients, vec![32]);
        assert_eq!(plan.w, vec![WSpec::Fixed(1)]);
        assert_eq!(plan.pace, Pace::Closed);
        assert_eq!(plan.size, 100);
        assert_eq!(plan.queue_types, vec![QueueKind::Classic]);
        assert!(plan.replog && !plan.raw);
    }

    #[test]
    fn the_old_flags_still_work() {
        let plan = plan(&[
            "--master",
            "http://127.0.0.1:8000/",
            "--writes",
            "20000",
            "--concurrency",
            "64",
            "--w",
            "3",
            "--size",
            "200",
        ])
        .unwrap();
        assert_eq!(
            plan.target,
            Target::Running {
                master: "http://127.0.0.1:8000".into(),
                secondaries: vec![]
            }
        );
        assert_eq!(plan.stop, Stop::Writes(20000));
        assert_eq!(plan.clients, vec![64]);
        assert_eq!(plan.w, vec![WSpec::Fixed(3)]);
        assert_eq!(plan.size, 200);
    }

    #[test]
    fn lists_of_clients_w_and_queue_types() {
        let plan = plan(&[
            "--raw",
            "--clients",
            "1,16,64",
            "--w",
            "1,2,3",
            "--queue-type",
            "classic,quorum",
            "--duration",
            "500ms",
        ])
        .unwrap();
        assert_eq!(plan.clients, vec![1, 16, 64]);
        assert_eq!(
            plan.w,
            vec![WSpec::Fixed(1), WSpec::Fixed(2), WSpec::Fixed(3)]
        );
        assert_eq!(
            plan.queue_types,
            vec![QueueKind::Classic, QueueKind::Quorum]
        );
        assert_eq!(plan.stop, Stop::After(Duration::from_millis(500)));
        assert!(plan.raw && plan.replog);
    }

    #[test]
    fn a_mix_is_normalised_and_drawn_by_weight() {
        let plan = plan(&["--w-mix", "1:1,3:3"]).unwrap();
        let mix = &plan.w[0];
        assert_eq!(mix, &WSpec::Mix(vec![(1, 0.25), (3, 0.75)]));
        assert_eq!(mix.pick(0.0), 1);
        assert_eq!(mix.pick(0.2499), 1);
        assert_eq!(mix.pick(0.25), 3);
        assert_eq!(mix.pick(0.9999), 3);
        assert_eq!(mix.label(), "1:0.25+3:0.75");
    }

    #[test]
    fn open_loop_rate() {
        assert_eq!(
            plan(&["--rate", "500"]).unwrap().pace,
            Pace::Open { rate: 500.0 }
        );
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--rate=-3"]).is_err());
    }

    #[test]
    fn nonsense_is_refused_with_the_flag_named() {
        let refused = |args: &[&str], flag: &str| {
            let error = plan(args).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("--{flag}:")),
                "{args:?}: {error}"
            );
        };
        refused(&["--clients", "0"], "clients");
        refused(&["--clients", "1,,2"], "clients");
        refused(&["--clients", "many"], "clients");
        refused(&["--w", "4"], "w");
        refused(&["--w", "0"], "w");
        refused(&["--w-mix", "1:0.5,1:0.5"], "w-mix");
        refused(&["--w-mix", "1:-1"], "w-mix");
        refused(&["--w-mix", "2"], "w-mix");
        refused(&["--queue-type", "stream"], "queue-type");
        refused(&["--duration", "10 parsecs"], "duration");
        refused(&["--duration", "0s"], "duration");
        refused(&["--writes", "0"], "writes");
        refused(&["--size", "0"], "size");
        refused(&["--runs", "0"], "runs");
        refused(&["--raw", "--secondaries", "0"], "secondaries");
        refused(&["--raw", "--secondaries", "2,0"], "secondaries");
        refused(&["--secondaries", "17"], "secondaries");
        refused(&["--secondaries", "0", "--w", "2"], "w");
        refused(&["--secondaries", "1,4", "--w", "3"], "w");
        refused(&["--partitions", "0"], "partitions");
        refused(&["--partitions", "9"], "partitions");
        refused(&["--master", "http://m", "--partitions", "2"], "partitions");
        refused(&["--master", "http://m", "--w", "all"], "w");
        refused(
            &["--master", "http://m", "--secondaries", "1,2"],
            "secondaries",
        );
        refused(&["--secondary-urls", "http://x"], "secondary-urls");
        refused(&["--memory-every", "10ms"], "memory-every");
        refused(&["--memory-every", "often"], "memory-every");
        refused(
            &["--master", "http://m", "--memory-every", "5s"],
            "memory-every",
        );
    }

    #[test]
    fn all_is_every_node_of_each_cluster_size() {
        let plan = plan(&["--secondaries", "1,2,4,8", "--w", "all,2"]).unwrap();
        assert_eq!(plan.secondaries, vec![1, 2, 4, 8]);
        assert_eq!(plan.w, vec![WSpec::All, WSpec::Fixed(2)]);
        assert_eq!(plan.w[0].resolve(8), WSpec::Fixed(9));
        assert_eq!(plan.w[0].resolve(0), WSpec::Fixed(1));
        assert_eq!(plan.w[1].resolve(8), WSpec::Fixed(2));
        assert_eq!(plan.w[0].label(), "all");
        assert_eq!(plan.partitions, 1);
    }

    #[test]
    fn a_master_alone_and_partitions() {
        let plan = plan(&["--secondaries", "0,2", "--w", "1", "--partitions", "3"]).unwrap();
        assert_eq!(plan.secondaries, vec![0, 2]);
        assert_eq!(plan.partitions, 3);
    }

    #[test]
    fn w_may_exceed_the_default_cluster_for_a_running_master() {
        assert!(plan(&["--master", "http://m", "--w", "5"]).is_ok());
        assert!(plan(&["--secondaries", "4", "--w", "5"]).is_ok());
    }

    #[test]
    fn master_flags_are_split_and_only_for_a_started_cluster() {
        assert!(plan(&[]).unwrap().master_flags.is_empty());
        assert_eq!(
            plan(&["--master-flags", "--linger-ms 0  --run-entries 8"])
                .unwrap()
                .master_flags,
            ["--linger-ms", "0", "--run-entries", "8"]
        );
        let error = plan(&["--master", "http://m", "--master-flags", "--linger-ms 0"]).unwrap_err();
        assert!(error.to_string().starts_with("--master-flags:"), "{error}");
    }

    #[test]
    fn memory_sampling_is_off_unless_asked_for() {
        assert_eq!(plan(&[]).unwrap().memory_every, None);
        assert_eq!(
            plan(&["--memory-every", "5s"]).unwrap().memory_every,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn duration_and_writes_exclude_each_other() {
        assert!(Args::try_parse_from(["load", "--duration", "1s", "--writes", "5"]).is_err());
        assert!(Args::try_parse_from(["load", "--w", "1", "--w-mix", "1:1"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
