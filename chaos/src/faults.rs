//! Fault injection: SIGKILL, SIGTERM and SIGSTOP/SIGCONT of the master and the secondaries,
//! and stop/start, SIGKILL/start and SIGSTOP/SIGCONT of the private broker, at random times;
//! a watchdog that notices processes dying on their own; and the final heal.
//!
//! Faults on different targets overlap freely; one target has at most one fault at a time (its
//! `busy` flag), and every fault heals itself after a random pause, so when the scheduler stops
//! and its faults end, everything is up again (the heal step makes sure).

use crate::brokers::Brokers;
use crate::history::now_us;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replog_testkit::Node;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a node restart is tried before the fault counts as failed.
const RESTART_ATTEMPTS: usize = 5;

/// Deliberate damage beyond what a correct system survives, to show that the checks notice
/// (a self-test of the checker: a sabotaged run must fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Sabotage {
    /// No damage: the normal run.
    #[default]
    None,
    /// Every SIGKILL of a secondary also deletes its data directory (a lost disk).
    WipeSecondary,
    /// Every SIGKILL of the master also deletes its data directory.
    WipeMaster,
    /// Once the secondaries hold order 1, an entry the master never wrote is published at
    /// order 1 on the entries exchange (a forked history): every secondary must refuse it and
    /// report `diverged`.
    Diverge,
}

impl Sabotage {
    /// Whether a SIGKILL of node `slot` (0 = master) wipes its data.
    pub fn wipes(self, slot: usize) -> bool {
        match self {
            Sabotage::None => false,
            Sabotage::WipeSecondary => slot > 0,
            Sabotage::WipeMaster => slot == 0,
            Sabotage::Diverge => false,
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FaultKind {
    /// SIGKILL a node, pause, start it again on the same data.
    Kill,
    /// SIGTERM a node (a clean stop), pause, start it again.
    Terminate,
    /// SIGSTOP a node, pause, SIGCONT.
    Freeze,
    /// `rabbitmqctl stop` the broker, pause, start it on the same data.
    BrokerStop,
    /// SIGKILL the broker's VM, pause, start it on the same data.
    BrokerKill,
    /// SIGSTOP the broker's VM, pause, SIGCONT.
    BrokerFreeze,
}

impl FaultKind {
    /// Every kind, with its relative frequency.
    const WEIGHTED: [(FaultKind, u32); 6] = [
        (FaultKind::Kill, 6),
        (FaultKind::Freeze, 6),
        (FaultKind::Terminate, 2),
        (FaultKind::BrokerFreeze, 2),
        (FaultKind::BrokerStop, 1),
        (FaultKind::BrokerKill, 1),
    ];

    /// For the summary.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::Terminate => "SIGTERM + restart",
            FaultKind::Freeze => "SIGSTOP ... SIGCONT",
            FaultKind::BrokerStop => "rabbitmqctl stop + start",
            FaultKind::BrokerKill => "kill -9 + start",
            FaultKind::BrokerFreeze => "SIGSTOP ... SIGCONT",
        }
    }

    /// Whether it targets the broker.
    pub fn on_broker(self) -> bool {
        matches!(
            self,
            FaultKind::BrokerStop | FaultKind::BrokerKill | FaultKind::BrokerFreeze
        )
    }

    /// How long the target stays down or frozen.
    fn pause(self, rng: &mut StdRng) -> Duration {
        let ms = match self {
            FaultKind::Kill => rng.random_range(200..=3000),
            FaultKind::Terminate => rng.random_range(200..=2000),
            FaultKind::Freeze => rng.random_range(300..=4000),
            FaultKind::BrokerStop | FaultKind::BrokerKill => rng.random_range(0..=2000),
            // Sometimes longer than the master's 5 s confirm timeout.
            FaultKind::BrokerFreeze => rng.random_range(500..=7000),
        };
        Duration::from_millis(ms)
    }
}

/// The random choices of the fault scheduler, apart from any timing: the same seed gives the
/// same sequence of gaps, kinds, targets and pauses.
#[derive(Debug)]
pub struct FaultPlan {
    /// Every choice comes from here.
    rng: StdRng,
    /// The mean gap between two faults.
    mean: Duration,
    /// How many nodes there are to pick from.
    nodes: usize,
    /// The kinds in play with their weights.
    kinds: Vec<(FaultKind, u32)>,
    /// How many broker nodes a broker fault picks from.
    broker_nodes: usize,
}

/// One planned fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedFault {
    /// How long to wait before it.
    pub gap: Duration,
    /// What to do.
    pub kind: FaultKind,
    /// Which node; `None` for the broker.
    pub target: Option<usize>,
    /// Which broker node a broker fault hits (0 with a single broker).
    pub broker_node: usize,
    /// How long the target stays down or frozen.
    pub pause: Duration,
}

impl FaultPlan {
    /// A plan over `nodes` nodes, with or without broker faults.
    pub fn new(seed: u64, mean: Duration, nodes: usize, broker_faults: bool) -> FaultPlan {
        FaultPlan {
            rng: StdRng::seed_from_u64(seed ^ 0xFA17_FA17_FA17_FA17),
            mean,
            nodes,
            kinds: FaultKind::WEIGHTED
                .into_iter()
                .filter(|(kind, _)| broker_faults || !kind.on_broker())
                .collect(),
            broker_nodes: 1,
        }
    }

    /// Broker faults pick one of `n` broker nodes (a cluster's), uniformly.
    pub fn with_broker_nodes(mut self, n: usize) -> FaultPlan {
        self.broker_nodes = n.max(1);
        self
    }

    /// The next fault: exponential gaps (faults arrive as a Poisson process), kinds by
    /// weight, node targets uniformly.
    pub fn next_fault(&mut self) -> PlannedFault {
        let u: f64 = self.rng.random_range(0.0..1.0);
        let gap = self
            .mean
            .mul_f64(-(1.0 - u).ln())
            .clamp(Duration::from_millis(20), self.mean * 5);
        let total: u32 = self.kinds.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut kind = self.kinds[0].0;
        for (candidate, weight) in &self.kinds {
            if pick < *weight {
                kind = *candidate;
                break;
            }
            pick -= weight;
        }
        let target = (!kind.on_broker()).then(|| self.rng.random_range(0..self.nodes));
        // Drawn only with several broker nodes, so a single broker's seeds replay as before.
        let broker_node = if kind.on_broker() && self.broker_nodes > 1 {
            self.rng.random_range(0..self.broker_nodes)
        } else {
            0
        };
        let pause = kind.pause(&mut self.rng);
        PlannedFault {
            gap,
            kind,
            target,
            broker_node,
            pause,
        }
    }
}

/// When and how faults are injected.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Seed of the [`FaultPlan`].
    pub seed: u64,
    /// Mean gap between two faults.
    pub mean: Duration,
    /// No fault starts after this.
    pub until: Instant,
    /// Whether the broker is a target.
    pub broker_faults: bool,
    /// Every pause is multiplied by this (above 5, freezes outlast AMQP heartbeats).
    pub pause_scale: f64,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// What was done.
    pub kind: FaultKind,
    /// To whom.
    pub target: String,
    /// When it began (µs since the epoch).
    pub start_us: u64,
    /// When the target was healed again.
    pub end_us: u64,
    /// The pause between the fault and its heal.
    pub pause_ms: u64,
    /// Set when the fault or its heal failed.
    pub error: Option<String>,
}

/// A process that ended without being told to.
#[derive(Debug, Clone, Serialize)]
pub struct Crash {
    /// Which.
    pub target: String,
    /// When it was noticed (µs since the epoch).
    pub at_us: u64,
    /// How it ended, and the end of its log.
    pub detail: String,
}

/// The processes faults act on, and what happened to them.
pub struct Targets {
    /// Master first, then the secondaries. Locked only while acting on a process.
    pub nodes: Vec<tokio::sync::Mutex<Node>>,
    /// Their names, in the same order.
    pub names: Vec<String>,
    /// The private broker: one node or a cluster.
    pub broker: tokio::sync::Mutex<Brokers>,
    /// One flag per node, then one for the broker (all its nodes: one broker node is faulted at
    /// a time, so a cluster keeps its majority): a fault is under way.
    busy: Vec<AtomicBool>,
    /// Every fault, once healed.
    events: Mutex<Vec<FaultEvent>>,
    /// Every process that died on its own.
    crashes: Mutex<Vec<Crash>>,
    /// When the run began, for progress messages.
    began: Instant,
    /// Deliberate damage, to show that the checks catch it.
    sabotage: Sabotage,
}

impl Targets {
    /// Wraps the running processes.
    pub fn new(nodes: Vec<Node>, broker: Brokers, began: Instant, sabotage: Sabotage) -> Targets {
        let names = nodes.iter().map(|n| n.name().to_owned()).collect();
        let busy = (0..=nodes.len()).map(|_| AtomicBool::new(false)).collect();
        Targets {
            nodes: nodes.into_iter().map(tokio::sync::Mutex::new).collect(),
            names,
            broker: tokio::sync::Mutex::new(broker),
            busy,
            events: Mutex::new(Vec::new()),
            crashes: Mutex::new(Vec::new()),
            began,
            sabotage,
        }
    }

    /// Every fault injected so far.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every process that died on its own so far.
    pub fn crashes(&self) -> Vec<Crash> {
        self.crashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn broker_slot(&self) -> usize {
        self.nodes.len()
    }

    fn elapsed(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// Starts node `index` again if it is down, trying a few times.
    async fn start_node(&self, index: usize) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=RESTART_ATTEMPTS {
            let mut node = self.nodes[index].lock().await;
            match node.start_again().await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(node = %self.names[index], attempt, %error, "restart failed");
                    last = error.to_string();
                }
            }
            drop(node);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(format!("{} did not restart: {last}", self.names[index]))
    }

    /// Starts broker node `index` again if it is down, trying a few times.
    async fn start_broker(&self, index: usize) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            let mut brokers = self.broker.lock().await;
            let broker = brokers.node_mut(index);
            match broker.start().await {
                Ok(()) => {
                    tracing::info!(took = ?broker.last_start_duration(), "broker up again");
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(attempt, %error, "broker start failed");
                    last = error.to_string();
                }
            }
            drop(brokers);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(format!("the broker did not start: {last}"))
    }

    async fn inject(&self, kind: FaultKind, slot: usize, broker_node: usize, pause: Duration) {
        let target = if kind.on_broker() {
            self.broker.lock().await.name(broker_node)
        } else {
            self.names[slot].clone()
        };
        tracing::info!(
            "[{:7.1}s] fault: {} {target} (pause {pause:?})",
            self.elapsed(),
            kind.label()
        );
        let start_us = now_us();
        let outcome = self.act(kind, slot, broker_node, pause).await;
        if let Err(error) = &outcome {
            tracing::warn!(%target, %error, "fault did not complete");
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FaultEvent {
                kind,
                target,
                start_us,
                end_us: now_us(),
                pause_ms: pause.as_millis() as u64,
                error: outcome.err(),
            });
        self.busy[slot].store(false, Ordering::SeqCst);
    }

    /// Deletes a stopped node's data directory, as if its disk had been replaced.
    async fn wipe_data(&self, slot: usize) -> Result<(), String> {
        let node = self.nodes[slot].lock().await;
        let args = &node.spec().args;
        let dir = args
            .iter()
            .position(|arg| arg == "--data-dir")
            .and_then(|at| args.get(at + 1))
            .ok_or_else(|| format!("{} has no --data-dir", node.name()))?;
        tracing::warn!(
            "[{:7.1}s] sabotage: wiping {}'s data directory",
            self.elapsed(),
            node.name()
        );
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot wipe {dir}: {e}"))
    }

    async fn act(
        &self,
        kind: FaultKind,
        slot: usize,
        broker_node: usize,
        pause: Duration,
    ) -> Result<(), String> {
        match kind {
            FaultKind::Kill => {
                self.nodes[slot]
                    .lock()
                    .await
                    .kill9()
                    .await
                    .map_err(|e| e.to_string())?;
                if self.sabotage.wipes(slot) {
                    self.wipe_data(slot).await?;
                }
                tokio::time::sleep(pause).await;
                self.start_node(slot).await
            }
            FaultKind::Terminate => {
                self.nodes[slot]
                    .lock()
                    .await
                    .terminate(Duration::from_secs(15))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(pause).await;
                self.start_node(slot).await
            }
            FaultKind::Freeze => {
                self.nodes[slot]
                    .lock()
                    .await
                    .freeze()
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(pause).await;
                self.nodes[slot]
                    .lock()
                    .await
                    .thaw()
                    .map_err(|e| e.to_string())
            }
            FaultKind::BrokerStop => {
                let stopped = self
                    .broker
                    .lock()
                    .await
                    .node_mut(broker_node)
                    .stop()
                    .await
                    .map_err(|e| e.to_string());
                tokio::time::sleep(pause).await;
                let started = self.start_broker(broker_node).await;
                stopped.and(started)
            }
            FaultKind::BrokerKill => {
                self.broker
                    .lock()
                    .await
                    .node_mut(broker_node)
                    .kill()
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(pause).await;
                self.start_broker(broker_node).await
            }
            FaultKind::BrokerFreeze => {
                self.broker
                    .lock()
                    .await
                    .node_mut(broker_node)
                    .freeze()
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(pause).await;
                self.broker
                    .lock()
                    .await
                    .node_mut(broker_node)
                    .thaw()
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Injects faults at random until `schedule.until`, then waits for every fault to heal.
    pub async fn schedule(self: Arc<Self>, schedule: Schedule) {
        let mut plan = FaultPlan::new(
            schedule.seed,
            schedule.mean,
            self.nodes.len(),
            schedule.broker_faults,
        )
        .with_broker_nodes(self.broker.lock().await.len());
        let until = schedule.until;
        let mut running = tokio::task::JoinSet::new();
        loop {
            let next = plan.next_fault();
            if Instant::now() + next.gap >= until {
                break;
            }
            tokio::time::sleep(next.gap).await;
            let slot = next.target.unwrap_or(self.broker_slot());
            if self.busy[slot].swap(true, Ordering::SeqCst) {
                tracing::debug!(kind = ?next.kind, slot, "target busy; fault skipped");
                continue;
            }
            let targets = self.clone();
            let pause = next.pause.mul_f64(schedule.pause_scale.max(0.0));
            running.spawn(async move {
                targets
                    .inject(next.kind, slot, next.broker_node, pause)
                    .await
            });
        }
        while running.join_next().await.is_some() {}
    }

    /// Until `stop`: notices processes that died without a fault, records them, and starts
    /// them again so the run goes on.
    pub async fn watchdog(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(300));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            for index in 0..self.nodes.len() {
                if self.busy[index].load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(mut node) = self.nodes[index].try_lock() else {
                    continue;
                };
                let Some(status) = node.exited() else {
                    continue;
                };
                let detail = format!("exited with {status}{}", node.log_tail(30));
                drop(node);
                self.crash(&self.names[index].clone(), detail);
                if self.busy[index].swap(true, Ordering::SeqCst) {
                    continue;
                }
                if let Err(error) = self.start_node(index).await {
                    tracing::warn!(%error, "cannot restart a crashed node");
                }
                self.busy[index].store(false, Ordering::SeqCst);
            }
            let slot = self.broker_slot();
            if self.busy[slot].load(Ordering::SeqCst) {
                continue;
            }
            let down = match self.broker.try_lock() {
                Ok(brokers) => (0..brokers.len()).find_map(|index| {
                    let broker = brokers.node(index);
                    (!broker.is_running()).then(|| (index, brokers.name(index), broker.log_tail()))
                }),
                Err(_) => None,
            };
            if let Some((index, name, log_tail)) = down {
                self.crash(&name, format!("the broker's VM is gone{log_tail}"));
                if !self.busy[slot].swap(true, Ordering::SeqCst) {
                    if let Err(error) = self.start_broker(index).await {
                        tracing::warn!(%error, "cannot restart the crashed broker");
                    }
                    self.busy[slot].store(false, Ordering::SeqCst);
                }
            }
        }
    }

    fn crash(&self, target: &str, detail: String) {
        tracing::warn!(
            "[{:7.1}s] {target} died on its own: {detail}",
            self.elapsed()
        );
        self.crashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Crash {
                target: target.to_owned(),
                at_us: now_us(),
                detail,
            });
    }

    /// Makes sure everything runs and nothing is frozen: thaws, starts what is down.
    pub async fn heal(&self) -> Result<(), HealError> {
        let mut failed = HealError::default();
        let broker_nodes = self.broker.lock().await.len();
        for index in 0..broker_nodes {
            {
                let mut brokers = self.broker.lock().await;
                let broker = brokers.node_mut(index);
                if broker.is_frozen() {
                    if let Err(error) = broker.thaw() {
                        failed.broker = Some(error.to_string());
                    }
                }
            }
            if !self.broker.lock().await.node(index).is_running() {
                if let Err(error) = self.start_broker(index).await {
                    failed.broker = Some(error);
                }
            }
        }
        if failed.broker.is_none() {
            if let Err(error) = self.broker.lock().await.wait_joined().await {
                failed.broker = Some(error.to_string());
            }
        }
        for index in 0..self.nodes.len() {
            let down = {
                let mut node = self.nodes[index].lock().await;
                if let Some(status) = node.exited() {
                    let detail = format!("exited with {status}{}", node.log_tail(30));
                    self.crash(&self.names[index].clone(), detail);
                }
                if node.is_frozen() {
                    if let Err(error) = node.thaw() {
                        failed.nodes.push(error.to_string());
                    }
                }
                !node.is_running()
            };
            if down {
                if let Err(error) = self.start_node(index).await {
                    failed.nodes.push(error);
                }
            }
        }
        if failed.broker.is_none() && failed.nodes.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }
}

/// What could not be healed.
#[derive(Debug, Clone, Default)]
pub struct HealError {
    /// Why the broker is not up: a problem of the test machine, not of replog.
    pub broker: Option<String>,
    /// Why nodes are not up: a node that cannot start on its own data is a finding.
    pub nodes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_plan_is_replayable_and_covers_every_kind_and_target() {
        let mean = Duration::from_millis(2500);
        let first: Vec<PlannedFault> = {
            let mut plan = FaultPlan::new(1, mean, 3, true);
            (0..2000).map(|_| plan.next_fault()).collect()
        };
        let mut again = FaultPlan::new(1, mean, 3, true);
        assert!(first.iter().all(|fault| *fault == again.next_fault()));
        let mut kinds: HashMap<FaultKind, usize> = HashMap::new();
        let mut targets: HashMap<Option<usize>, usize> = HashMap::new();
        for fault in &first {
            *kinds.entry(fault.kind).or_default() += 1;
            *targets.entry(fault.target).or_default() += 1;
        }
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(targets.len(), 4, "{targets:?}");
        // Kill and freeze are six times as frequent as a broker stop.
        assert!(
            kinds[&FaultKind::Kill] > 3 * kinds[&FaultKind::BrokerStop],
            "{kinds:?}"
        );
        let mean_gap = first.iter().map(|f| f.gap.as_secs_f64()).sum::<f64>() / first.len() as f64;
        assert!((2.0..3.0).contains(&mean_gap), "{mean_gap}");

        let mut calm = FaultPlan::new(1, mean, 3, false);
        assert!((0..500).all(|_| !calm.next_fault().kind.on_broker()));
    }
}
