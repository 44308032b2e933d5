//! Smoke test of the bare pipeline against the broker at `$REPLOG_AMQP_URL` (default: the local
//! guest broker): two clients for about a second, and figures that make sense. Skipped, with a
//! message, when no broker answers.

use replog_bench::args::{Pace, QueueKind, Stop, DEFAULT_AMQP_URL};
use replog_bench::raw::{self, RawSpec};
use replog_bench::stats::Latency;
use std::time::Duration;

#[tokio::test]
async fn the_bare_pipeline_moves_entries_to_every_consumer() {
    let amqp_url = std::env::var("REPLOG_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()),
    )
    .await;
    match reachable {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "probe".into()).await;
        }
        _ => {
            eprintln!("skipped: no broker answers at $REPLOG_AMQP_URL (or the local default)");
            return;
        }
    }
    let spec = RawSpec {
        amqp_url,
        queue_type: QueueKind::Classic,
        consumers: 2,
        window: 1000,
        prefetch: 512,
        size: 100,
        clients: 2,
        pace: Pace::Closed,
        stop: Stop::After(Duration::from_secs(1)),
    };
    let mut measured = raw::run(&spec).await.expect("the bare pipeline runs");
    let outcome = &mut measured.outcome;
    assert_eq!(outcome.failed, 0, "{:?}", outcome.first_error);
    assert!(outcome.throughput() > 0.0);
    assert!(outcome.elapsed >= Duration::from_secs(1));
    let latency = Latency::of_micros(&mut outcome.latencies_us);
    assert!(latency.p50_ms > 0.0, "{latency:?}");
    assert!(latency.p50_ms <= latency.p99_ms, "{latency:?}");
    assert!(latency.p99_ms <= latency.max_ms, "{latency:?}");
    assert_eq!(measured.unconfirmed, 0);
    // Every consumer saw every write: a lag row each, with delivery times.
    assert_eq!(measured.lag.len(), 2);
    for lag in &measured.lag {
        assert!(lag.entries.samples > 0, "{lag:?}");
        assert!(lag.delivery.p50_ms > 0.0, "{lag:?}");
        // Closed loop with two clients: never more than two entries outstanding.
        assert!(lag.entries.max <= 2, "{lag:?}");
    }
}
