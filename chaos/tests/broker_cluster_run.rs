//! A short chaos run on a private three-node RabbitMQ cluster with quorum queues: 35 s of
//! writes while the replog nodes are killed, terminated and frozen, and broker nodes are
//! stopped, killed and frozen one at a time (seed 5 plans several of each); then healing (the
//! cluster whole again), convergence and every check. Like `short_run`, it waits on conditions,
//! never for fixed times, and fails only on a violation or a run that proves nothing.

use chaos::config::ChaosConfig;
use chaos::faults::FaultKind;
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_on_a_broker_cluster_finds_no_violation() {
    let config = ChaosConfig::parse_from([
        "chaos",
        "--seconds",
        "35",
        "--seed",
        "5",
        "--broker-nodes",
        "3",
        "--queue-type",
        "quorum",
    ]);
    let report = chaos::run(config)
        .await
        .expect("the chaos run could be carried out");
    eprintln!("{report}");
    assert!(
        report.passed(),
        "the chaos run found violations (logs kept in {}):\n{report}",
        report.run_dir.display()
    );
    assert!(report.writes.acknowledged >= 50, "{report}");
    assert!(report.converged_after.is_some(), "{report}");
    // Broker nodes were actually hit, and not only one of them.
    let broker_faults: Vec<_> = report
        .faults
        .iter()
        .filter(|fault| fault.kind.on_broker())
        .collect();
    assert!(broker_faults.len() >= 2, "{report}");
    assert!(
        broker_faults
            .iter()
            .all(|fault| fault.target.starts_with("broker-")),
        "{report}"
    );
    assert!(
        report
            .faults
            .iter()
            .any(|fault| matches!(fault.kind, FaultKind::Kill | FaultKind::Freeze)),
        "{report}"
    );
}
