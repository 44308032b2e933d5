//! A short chaos run, so that `cargo test --workspace` exercises the whole checker against real
//! processes: a private broker, a master and two secondaries, 45 s of writes while every kind of
//! fault is injected (seed 7 plans kills, SIGTERMs and freezes of the nodes, and a stop, a kill
//! and a freeze of the broker), then healing, convergence and every check.
//!
//! Nothing here sleeps for a fixed time to let something happen: the run waits on conditions
//! with generous deadlines (120 s to converge, 90 s per broker start), so a slow machine makes
//! it slower, not red. It fails on a violation, which is a bug in replog to report, not a
//! reason to loosen the checks.

use chaos::config::ChaosConfig;
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_finds_no_violation() {
    let config = ChaosConfig::parse_from(["chaos", "--seconds", "45", "--seed", "7"]);
    let report = chaos::run(config)
        .await
        .expect("the chaos run could be carried out");
    eprintln!("{report}");
    assert!(
        report.passed(),
        "the chaos run found violations (logs kept in {}):\n{report}",
        report.run_dir.display()
    );
    // A run that wrote nothing or broke nothing would prove nothing.
    assert!(report.writes.acknowledged >= 100, "{report}");
    assert!(report.faults.len() >= 5, "{report}");
    assert!(report.converged_after.is_some(), "{report}");
    // The write-concern and restart checks read the nodes' evidence events: if the logs held
    // none, or the checker could not parse them, those checks would pass without checking.
    let evidence = &report.evidence;
    assert!(evidence.events_read > 0, "{report}");
    assert_eq!(evidence.unreadable_events, 0, "{report}");
    assert!(evidence.acks_timed_by_master_log > 0, "{report}");
    assert!(evidence.restarts_checked > 0, "{report}");
    // Every acknowledgement the master logged was checked for w current holders, w=3 included.
    assert!(
        evidence.current_holder_acks_checked >= evidence.acks_timed_by_master_log,
        "{report}"
    );
    assert!(
        evidence
            .current_holder_acks_by_w
            .get(&3)
            .is_some_and(|n| *n > 0),
        "{report}"
    );
}
