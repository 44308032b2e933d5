//! The checker's self-test for divergence: a run whose `--sabotage diverge` publishes a forged
//! entry at an order the secondaries hold must fail, both from the secondaries' logs (their
//! `diverged` events) and from their `/health` (status `diverged`).
//!
//! No faults, so the only damage is the forgery; the convergence deadline is short because a
//! diverged secondary never converges (it applies nothing more), which is a violation too.

use chaos::checker::Check;
use chaos::config::ChaosConfig;
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_conflicting_entry_is_caught_by_the_checker() {
    let config = ChaosConfig::parse_from([
        "chaos",
        "--seconds",
        "8",
        "--seed",
        "11",
        "--writers",
        "2",
        "--no-faults",
        "--sabotage",
        "diverge",
        "--converge-timeout-secs",
        "5",
    ]);
    let report = chaos::run(config)
        .await
        .expect("the chaos run could be carried out");
    eprintln!("{report}");
    assert!(!report.passed(), "a forged entry went unnoticed:\n{report}");
    let found: Vec<Check> = report.violations.iter().map(|v| v.check).collect();
    for expected in [Check::SecondaryDiverged, Check::ReportedDiverged] {
        let per_secondary = found.iter().filter(|&&check| check == expected).count();
        assert_eq!(
            per_secondary, 2,
            "{expected:?} once per secondary:\n{report}"
        );
    }
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.check == Check::SecondaryDiverged
                && v.detail.contains(r#"offered "sabotage-forged-1""#)),
        "{report}"
    );
    // The evidence contract held: the divergence lines parsed like every other event.
    assert_eq!(report.evidence.unreadable_events, 0, "{report}");
    // A failed run keeps its directory; this failure was the point, so it goes.
    let _ = std::fs::remove_dir_all(&report.run_dir);
}
