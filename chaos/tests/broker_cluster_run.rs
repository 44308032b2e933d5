//! A short chaos run on a private three-node RabbitMQ cluster with quorum queues: 35 s of
//! writes while the replog nodes are killed, terminated and frozen, and broker nodes are
//! stopped, killed and frozen one at a time (seed 12 plans kills, a freeze and stops across all
//! three broker nodes; a fault planned while another broker fault runs is skipped); then healing (the
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
        "12",
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
    let hit: std::collections::BTreeSet<&str> = broker_faults
        .iter()
        .map(|fault| fault.target.as_str())
        .collect();
    assert!(hit.len() >= 2, "only {hit:?} was hit: {report}");
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
