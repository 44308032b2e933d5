//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.
//!
//! The nodes record with the `metrics` facade (`metrics::counter!`, `gauge!`, `histogram!`);
//! this module installs the `metrics-exporter-prometheus` recorder once and serves what it
//! holds in the Prometheus text format. Names follow the Prometheus conventions: a `replog_`
//! prefix, base units (`_seconds`), `_total` on counters, and labels with few values (`outcome`,
//! `w`, `secondary`).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The handle a node keeps to render its metrics.
pub use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Bucket bounds of every `_seconds` histogram: 100 µs to 60 s, the range from a local fsync to
/// a write-concern wait on a slow secondary.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// How often histogram samples are drained into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The installed recorder's handle, shared by every caller in the process.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("bucket bounds are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test process that builds several
            // nodes): then this handle renders nothing, which only affects that test process.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was already installed in this process");
            }
            // Histogram samples wait in the recorder until drained: drain them every few
            // seconds so memory stays flat whether or not anybody scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

/// Connections to the broker opened after the first: each replaced a lost one.
pub const BROKER_RECONNECTS_TOTAL: &str = "replog_broker_reconnects_total";

/// Broker handles this process made: each one's first connection is no reconnect.
static BROKERS: AtomicU64 = AtomicU64::new(0);

/// Broker connections this process opened.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Describes the metrics both nodes export and creates their counters at 0; each node calls it
/// once after [`install`].
pub fn describe_shared() {
    metrics::describe_counter!(
        BROKER_RECONNECTS_TOTAL,
        "Connections to the broker opened to replace a lost one"
    );
    metrics::counter!(BROKER_RECONNECTS_TOTAL).absolute(0);
}

/// Notes that a broker handle was made (a node makes its handles before it connects).
pub fn broker_created() {
    BROKERS.fetch_add(1, Ordering::AcqRel);
}

/// Notes that a broker handle opened a new connection: every connection beyond one per handle
/// replaced a lost one and is counted in [`BROKER_RECONNECTS_TOTAL`]. (Should one handle
/// reconnect before another first connected, the count is only late, never wrong.)
pub fn broker_connection_opened() {
    let opened = CONNECTIONS.fetch_add(1, Ordering::AcqRel) + 1;
    if opened > BROKERS.load(Ordering::Acquire) {
        metrics::counter!(BROKER_RECONNECTS_TOTAL).increment(1);
    }
}

/// Renders `handle` as a `GET /metrics` answer in the Prometheus text format 0.0.4.
pub fn render(handle: &PrometheusHandle) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
