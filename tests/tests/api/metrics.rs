//! `GET /metrics` on every node, and the Grafana dashboard that reads them: the metrics exist
//! with HELP lines and sane values after a few writes, every `replog_*` name a dashboard panel
//! uses is exported by some node, and the dashboard JSON is well formed (panels with targets,
//! datasources that the provisioning defines).

use crate::helpers::{
    assert_created, assert_duplicate, post, wait_for, wait_until_all_healthy, write, write_with_id,
    DEADLINE,
};
use replog_testkit::{BrokerOptions, NodeClient, PrivateBroker, TestCluster, WriteOutcome};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// One scrape, parsed: the samples by series (`name{labels}` exactly as rendered, labels
/// sorted) and the names that have a `# HELP` line.
#[derive(Debug, Default)]
struct Scrape {
    /// `series → value`; a series without labels is its bare name.
    samples: BTreeMap<String, f64>,
    /// Metric names with a HELP line.
    helped: BTreeSet<String>,
    /// Metric names by their `# TYPE`.
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the Prometheus text format 0.0.4 (the subset the exporter writes).
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                scrape.helped.insert(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("a sample line without a value: {line:?}"));
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("a sample with a bad value: {line:?}"));
                scrape.samples.insert(normalise(series), value);
            }
        }
        scrape
    }

    /// The value of one series, e.g. `replog_writes_total{outcome="created"}`.
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(&normalise(series)).copied()
    }

    /// The value of a series that must exist.
    fn get(&self, series: &str) -> f64 {
        self.value(series).unwrap_or_else(|| {
            panic!(
                "no series {series} in the scrape; it has:\n{}",
                self.samples.keys().cloned().collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// Every metric name the scrape exports (a histogram's `_bucket`, `_sum` and `_count`
    /// series under their base name too).
    fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.types.keys().cloned().collect();
        names.extend(
            self.samples
                .keys()
                .map(|series| base_name(series).to_owned()),
        );
        names
    }

    /// Asserts that each of `names` has a HELP line and a sample.
    fn assert_described(&self, names: &[&str]) {
        let exported = self.names();
        for name in names {
            assert!(self.helped.contains(*name), "no # HELP line for {name}");
            assert!(exported.contains(*name), "{name} is not exported");
        }
    }
}

/// A series with its labels sorted, so that `{a="1",b="2"}` and `{b="2",a="1"}` are one key.
fn normalise(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let labels = labels.trim_end_matches('}');
    let mut pairs: Vec<&str> = labels.split(',').filter(|pair| !pair.is_empty()).collect();
    pairs.sort_unstable();
    format!("{name}{{{}}}", pairs.join(","))
}

/// The metric name of a series, without labels.
fn base_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// Scrapes `node`'s `/metrics`, checking the content type a Prometheus server expects.
async fn scrape(node: &NodeClient) -> Scrape {
    let response = reqwest::get(format!("{}/metrics", node.url()))
        .await
        .unwrap_or_else(|error| panic!("GET /metrics on {}: {error}", node.url()));
    assert_eq!(response.status(), 200, "GET /metrics on {}", node.url());
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type:?}"
    );
    Scrape::parse(&response.text().await.unwrap())
}

/// Scrapes `node` until `holds` accepts the scrape (gauges follow heartbeats and acks).
async fn scrape_until(node: &NodeClient, what: &str, holds: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_for(DEADLINE, what, || async {
        let scrape = scrape(node).await;
        if holds(&scrape) {
            Ok(scrape)
        } else {
            Err(format!("{:#?}", scrape.samples))
        }
    })
    .await
}

/// A file of the repository, e.g. `monitoring/prometheus.yml`.
fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    let path = repo_file("monitoring/grafana/dashboards/replog.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// Every panel of the dashboard, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    let top = dashboard["panels"]
        .as_array()
        .expect("the dashboard has a panels array");
    for panel in top {
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(panel);
        }
    }
    panels
}

/// Every `replog_*` metric name in `expr`, histogram series suffixes resolved to their base
/// name when `exported` knows the base (`x_bucket` → `x`).
fn metric_names(expr: &str, exported: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("replog_") {
        let before_ok = start == 0
            || !rest[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if before_ok {
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| exported.contains(*base))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The datasource uids the Grafana provisioning defines.
fn provisioned_datasource_uids() -> BTreeSet<String> {
    let path = repo_file("monitoring/grafana/provisioning/datasources/prometheus.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("uid:"))
        .map(|uid| uid.trim().trim_matches('"').trim_matches('\'').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_exports_its_metrics_and_the_dashboard_uses_only_those() {
    let cluster = TestCluster::builder().fast_heartbeats().start().await;
    let master = cluster.master();
    wait_until_all_healthy(&master).await;

    // Five new writes, one retry and one bad request: each outcome is counted once.
    const WRITES: u64 = 5;
    for n in 1..=WRITES {
        let content = format!("metric {n}");
        let id = format!("metric-{n}");
        assert_created(
            &post(&master, &write_with_id(&content, &id, 3)).await,
            &content,
            3,
        );
    }
    assert_duplicate(&post(&master, &write_with_id("metric 1", "metric-1", 2)).await);
    let bad = master.post_raw("{not json", None).await.unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_created(&post(&master, &write("w1", 1)).await, "w1", 1);
    let log_len = WRITES + 1;

    // Positions and states follow heartbeats: scrape until both secondaries report the end.
    let at_end = |s: &Scrape| {
        ["s1", "s2"].iter().all(|id| {
            s.value(&format!(
                "replog_secondary_acked_order{{secondary=\"{id}\"}}"
            )) == Some(log_len as f64)
        })
    };
    let m = scrape_until(&master, "both secondaries acked the log's end", at_end).await;
    m.assert_described(&[
        "replog_writes_total",
        "replog_write_concern_wait_seconds",
        "replog_secondary_acked_order",
        "replog_secondary_lag_entries",
        "replog_secondary_state",
        "replog_secondary_up",
        "replog_read_only",
        "replog_last_order",
        "replog_publish_confirm_seconds",
        "replog_republished_total",
        "replog_broker_reconnects_total",
    ]);
    assert_eq!(
        m.get(r#"replog_writes_total{outcome="created"}"#),
        (WRITES + 1) as f64
    );
    assert_eq!(m.get(r#"replog_writes_total{outcome="duplicate"}"#), 1.0);
    assert_eq!(m.get(r#"replog_writes_total{outcome="rejected"}"#), 1.0);
    for outcome in ["timeout", "read_only", "error", "shutting_down"] {
        assert_eq!(
            m.get(&format!("replog_writes_total{{outcome=\"{outcome}\"}}")),
            0.0,
            "{outcome}"
        );
    }
    assert_eq!(m.types["replog_write_concern_wait_seconds"], "histogram");
    assert_eq!(
        m.get(r#"replog_write_concern_wait_seconds_count{w="3"}"#),
        WRITES as f64
    );
    assert_eq!(
        m.get(r#"replog_write_concern_wait_seconds_count{w="2"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"replog_write_concern_wait_seconds_count{w="1"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"replog_write_concern_wait_seconds_bucket{w="3",le="+Inf"}"#),
        WRITES as f64
    );
    for id in ["s1", "s2"] {
        let label = format!("{{secondary=\"{id}\"}}");
        assert_eq!(m.get(&format!("replog_secondary_lag_entries{label}")), 0.0);
        assert_eq!(m.get(&format!("replog_secondary_state{label}")), 2.0);
        assert_eq!(m.get(&format!("replog_secondary_up{label}")), 1.0);
    }
    assert_eq!(m.get("replog_read_only"), 0.0);
    assert_eq!(m.get("replog_last_order"), log_len as f64);
    assert!(m.get("replog_publish_confirm_seconds_count") >= log_len as f64);
    assert_eq!(m.get("replog_republished_total"), 0.0);
    assert_eq!(m.get("replog_broker_reconnects_total"), 0.0);

    let mut exported = m.names();
    for id in ["s1", "s2"] {
        let s = scrape(&cluster.secondary(id)).await;
        s.assert_described(&[
            "replog_applied_order",
            "replog_held_back_entries",
            "replog_duplicates_dropped_total",
            "replog_redeliveries_total",
            "replog_catchup_fetches_total",
            "replog_fsync_seconds",
            "replog_diverged",
            "replog_broker_reconnects_total",
        ]);
        assert_eq!(s.get("replog_applied_order"), log_len as f64, "{id}");
        assert_eq!(s.get("replog_held_back_entries"), 0.0, "{id}");
        assert_eq!(s.get("replog_diverged"), 0.0, "{id}");
        assert_eq!(s.types["replog_fsync_seconds"], "histogram");
        let appends = s.get("replog_fsync_seconds_count");
        assert!(
            (1.0..=log_len as f64).contains(&appends),
            "{id}: {appends} appends"
        );
        assert!(s
            .value(r#"replog_catchup_fetches_total{outcome="ok"}"#)
            .is_some());
        assert_eq!(s.get("replog_broker_reconnects_total"), 0.0, "{id}");
        exported.extend(s.names());
    }

    // Every name a dashboard panel asks Prometheus for is one some node exports.
    let dashboard = dashboard();
    let mut used = BTreeSet::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            used.extend(metric_names(expr, &exported));
        }
    }
    assert!(
        used.len() >= 5,
        "the dashboard uses too few metrics: {used:?}"
    );
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics no node exports: {missing:?}; exported: {exported:?}"
    );
}

#[test]
fn the_dashboard_is_well_formed_and_uses_the_provisioned_datasource() {
    let dashboard = dashboard();
    assert!(dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let uids = provisioned_datasource_uids();
    assert!(
        !uids.is_empty(),
        "the provisioning defines no datasource uid"
    );
    let panels = panels(&dashboard);
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        titles.push(title.to_lowercase());
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: panel id {id} used twice");
        assert!(panel["type"].as_str().is_some(), "{title}: no type");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        let uid = panel["datasource"]["uid"].as_str().unwrap_or_default();
        assert!(
            uids.contains(uid),
            "{title}: datasource uid {uid:?} not in {uids:?}"
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("replog_"), "{title}: expr {expr:?}");
            assert!(
                target["refId"].as_str().is_some(),
                "{title}: a target without refId"
            );
            if let Some(uid) = target["datasource"]["uid"].as_str() {
                assert!(uids.contains(uid), "{title}: target datasource uid {uid:?}");
            }
        }
    }
    // What the issue asks the dashboard to show, each in some panel.
    let none = BTreeSet::new();
    let shows = |metric: &str| {
        panels.iter().any(|panel| {
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|target| {
                    metric_names(target["expr"].as_str().unwrap_or_default(), &none)
                        .iter()
                        .any(|name| name.starts_with(metric))
                })
        })
    };
    for metric in [
        "replog_writes_total",
        "replog_write_concern_wait_seconds",
        "replog_secondary_lag_entries",
        "replog_secondary_state",
        "replog_read_only",
    ] {
        assert!(shows(metric), "no panel shows {metric}");
    }
    assert!(
        titles.iter().any(|t| t.contains(" by w")),
        "the write-concern wait is shown by w: {titles:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_reconnects_are_counted_on_every_node() {
    let mut broker = PrivateBroker::start_new(BrokerOptions::default())
        .await
        .unwrap_or_else(|error| panic!("cannot start a private RabbitMQ node: {error}"));
    let cluster = TestCluster::builder()
        .amqp_url(&broker.amqp_url())
        .fast_heartbeats()
        .start()
        .await;
    let master = cluster.master();
    assert_created(&post(&master, &write("before", 3)).await, "before", 3);
    let nodes = [
        master.clone(),
        cluster.secondary("s1"),
        cluster.secondary("s2"),
    ];
    for node in &nodes {
        assert_eq!(
            scrape(node).await.get("replog_broker_reconnects_total"),
            0.0,
            "{}: the first connections are no reconnects",
            node.url()
        );
    }

    broker.kill().await.expect("the broker dies");
    broker.start().await.expect("the broker starts again");
    for node in &nodes {
        scrape_until(node, "a broker reconnect is counted", |s| {
            s.value("replog_broker_reconnects_total")
                .is_some_and(|reconnects| reconnects >= 1.0)
        })
        .await;
    }
    // And the cluster works again: a w=3 write is answered.
    wait_for(
        Duration::from_secs(90),
        "a w=3 write after the restart",
        || async {
            match master.post_message(&write("after", 3)).await {
                Ok(WriteOutcome::Created(ack)) => Ok(ack),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
