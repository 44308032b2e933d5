//! Resident memory of the nodes of a cluster started here, sampled during a cell: `VmRSS` from
//! `/proc/<pid>/status` at a fixed interval, summarised per node as its RSS once the cell has
//! warmed up, its peak, its last value, and its growth from warm-up to the end: absolute, and
//! per minute from a least-squares slope over every sample after warm-up, so that one noisy
//! sample (an allocator returning memory late, a compaction) does not decide whether memory is
//! flat. [`table`] writes them as markdown.

use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The longest warm-up: the first minute of a cell.
pub const WARM_UP_MAX: Duration = Duration::from_secs(60);

/// The warm-up of a cell shorter than ten minutes: this fraction of it.
pub const WARM_UP_FRACTION: f64 = 0.1;

const KIB_PER_MIB: f64 = 1024.0;

/// One reading of one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_s: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// What a node's samples say, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemorySummary {
    /// When the first sample at or after the end of warm-up (the first minute, or the first
    /// 10% of the sampled span when that is shorter) was read, in seconds since the load
    /// started.
    pub warm_up_s: f64,
    /// RSS at that sample.
    pub at_warm_up_mib: f64,
    /// The largest sample of the whole cell.
    pub peak_mib: f64,
    /// The last sample (at the end of the load).
    pub last_mib: f64,
    /// `last - at_warm_up` (negative when memory was given back).
    pub growth_mib: f64,
    /// Least-squares slope over the samples from the end of warm-up on, in MiB per minute;
    /// `None` with fewer than two such samples.
    pub slope_mib_per_min: Option<f64>,
    /// The same slope over the second half of the cell only: memory that grows while a cache
    /// fills to its cap and then stays flat shows a slope above zero from warm-up on and about
    /// zero here, where a leak shows the same slope in both.
    pub late_slope_mib_per_min: Option<f64>,
}

impl MemorySummary {
    /// The summary of `samples` (in time order); `None` when there are none.
    pub fn of(samples: &[Sample]) -> Option<MemorySummary> {
        let first = samples.first()?;
        let last = samples.last()?;
        let mib = |sample: &Sample| sample.rss_kib as f64 / KIB_PER_MIB;
        let span = last.at_s - first.at_s;
        let warm_up_ends = first.at_s + (span * WARM_UP_FRACTION).min(WARM_UP_MAX.as_secs_f64());
        // The last sample is always at or after the end of warm-up.
        let after: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.at_s >= warm_up_ends)
            .collect();
        let warmed_up = after.first().copied().unwrap_or(last);
        let at_warm_up = mib(warmed_up);
        let points: Vec<(f64, f64)> = after
            .iter()
            .map(|sample| (sample.at_s / 60.0, mib(sample)))
            .collect();
        let half_way = first.at_s + span / 2.0;
        let late: Vec<(f64, f64)> = samples
            .iter()
            .filter(|sample| sample.at_s >= half_way)
            .map(|sample| (sample.at_s / 60.0, mib(sample)))
            .collect();
        Some(MemorySummary {
            warm_up_s: warmed_up.at_s,
            at_warm_up_mib: at_warm_up,
            peak_mib: samples.iter().map(mib).fold(f64::MIN, f64::max),
            last_mib: mib(last),
            growth_mib: mib(last) - at_warm_up,
            slope_mib_per_min: slope(&points),
            late_slope_mib_per_min: slope(&late),
        })
    }
}

/// The least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    let sxy: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// One node's memory over a cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeMemory {
    /// `master`, `s1`, or `p0/s1` with partitions.
    pub name: String,
    /// The process id sampled.
    pub pid: u32,
    /// How often it was sampled, in seconds.
    pub every_s: f64,
    /// How many samples were read.
    pub samples: usize,
    /// Their summary; `None` when none could be read (the process was gone).
    pub summary: Option<MemorySummary>,
    /// Every sample, `[seconds since the load started, MiB]`, for plotting.
    pub series: Vec<[f64; 2]>,
}

impl NodeMemory {
    /// `samples` of the node `name` (process `pid`), sampled every `every`.
    pub fn of(name: String, pid: u32, every: Duration, samples: &[Sample]) -> NodeMemory {
        NodeMemory {
            name,
            pid,
            every_s: every.as_secs_f64(),
            samples: samples.len(),
            summary: MemorySummary::of(samples),
            series: samples
                .iter()
                .map(|sample| [sample.at_s, sample.rss_kib as f64 / KIB_PER_MIB])
                .collect(),
        }
    }
}

/// The markdown table of `nodes`: a row per node, figures in MiB, `–` where there are none.
pub fn table(nodes: &[NodeMemory]) -> String {
    let mut out = String::from(
        "| node | pid | samples | warm-up s | at warm-up MiB | peak MiB | last MiB | growth MiB | slope MiB/min | second-half slope MiB/min |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for node in nodes {
        let figures = match node.summary {
            Some(summary) => format!(
                "{:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {} | {}",
                summary.warm_up_s,
                summary.at_warm_up_mib,
                summary.peak_mib,
                summary.last_mib,
                summary.growth_mib,
                signed(summary.slope_mib_per_min),
                signed(summary.late_slope_mib_per_min),
            ),
            None => "– | – | – | – | – | – | –".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {figures} |\n",
            node.name, node.pid, node.samples
        ));
    }
    out
}

/// A slope with its sign, or `–`.
fn signed(slope: Option<f64>) -> String {
    slope.map_or_else(|| "–".to_owned(), |slope| format!("{slope:+.2}"))
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    // The kernel has always written kB here; anything else is not a figure to trust.
    (words.next() == Some("kB")).then_some(value)
}

/// The resident set size of process `pid`, in KiB; `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss_kib(&status)
}

/// Samples every node of `nodes` (`(name, pid)`) every `every` from now until `stop`, and once
/// more when it comes (the end of the load).
pub async fn sample(
    nodes: Vec<(String, u32)>,
    every: Duration,
    stop: CancellationToken,
) -> Vec<NodeMemory> {
    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); nodes.len()];
    let read = |samples: &mut Vec<Vec<Sample>>| {
        let at_s = started.elapsed().as_secs_f64();
        for ((_, pid), samples) in nodes.iter().zip(samples.iter_mut()) {
            if let Some(rss_kib) = rss_kib(*pid) {
                samples.push(Sample { at_s, rss_kib });
            }
        }
    };
    let mut tick = tokio::time::interval(every);
    // A late tick (a busy machine) moves the schedule instead of bunching samples up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => read(&mut samples),
        }
    }
    read(&mut samples);
    nodes
        .into_iter()
        .zip(samples)
        .map(|((name, pid), samples)| NodeMemory::of(name, pid, every, &samples))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(f64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(at_s, mib)| Sample {
                at_s,
                rss_kib: mib * 1024,
            })
            .collect()
    }

    #[test]
    fn the_slope_of_a_line_and_of_nothing() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(0.0, 7.0), (4.0, 7.0)]), Some(0.0));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
        // Noise around a flat line: the fit, not the last sample, decides.
        let fit = slope(&[
            (0.0, 10.0),
            (1.0, 12.0),
            (2.0, 10.0),
            (3.0, 12.0),
            (4.0, 10.0),
        ]);
        assert!(fit.is_some_and(|fit| fit.abs() < 1e-9), "{fit:?}");
    }

    #[test]
    fn a_ten_minute_cell_warms_up_for_a_minute() {
        // 40 MiB growing to 50 in the first minute, then 1 MiB a minute: 50, 51, ..., 59.
        let mut points = vec![(0.0, 40), (30.0, 45)];
        points.extend((0..10).map(|minute| (60.0 * (minute + 1) as f64, 50 + minute)));
        let summary = MemorySummary::of(&samples(&points)).unwrap();
        assert_eq!(summary.warm_up_s, 60.0);
        assert_eq!(summary.at_warm_up_mib, 50.0);
        assert_eq!(summary.peak_mib, 59.0);
        assert_eq!(summary.last_mib, 59.0);
        assert_eq!(summary.growth_mib, 9.0);
        let slope = summary.slope_mib_per_min.unwrap();
        assert!((slope - 1.0).abs() < 1e-9, "{slope}");
        let late = summary.late_slope_mib_per_min.unwrap();
        assert!(
            (late - 1.0).abs() < 1e-9,
            "a leak grows in the second half too: {late}"
        );
    }

    #[test]
    fn a_cache_filling_to_its_cap_is_flat_in_the_second_half() {
        // 40 MiB growing 4 MiB a minute for five minutes, then flat at 60 until minute ten.
        let points: Vec<(f64, u64)> = (0..=10)
            .map(|minute| (60.0 * minute as f64, 40 + 4 * minute.min(5)))
            .collect();
        let summary = MemorySummary::of(&samples(&points)).unwrap();
        assert!(summary.slope_mib_per_min.is_some_and(|slope| slope > 1.0));
        assert_eq!(summary.late_slope_mib_per_min, Some(0.0));
    }

    #[test]
    fn a_short_cell_warms_up_for_a_tenth_of_it() {
        // 40 s: warm-up 4 s; the sample at 5 s is the first after it.
        let summary =
            MemorySummary::of(&samples(&[(0.0, 100), (5.0, 30), (20.0, 30), (40.0, 28)])).unwrap();
        assert_eq!(summary.warm_up_s, 5.0);
        assert_eq!(summary.at_warm_up_mib, 30.0);
        assert_eq!(summary.peak_mib, 100.0);
        assert_eq!(summary.growth_mib, -2.0);
        assert!(summary.slope_mib_per_min.is_some_and(|slope| slope < 0.0));
    }

    #[test]
    fn one_sample_has_no_slope_and_none_no_summary() {
        let summary = MemorySummary::of(&samples(&[(3.0, 12)])).unwrap();
        assert_eq!(summary.at_warm_up_mib, 12.0);
        assert_eq!(summary.growth_mib, 0.0);
        assert_eq!(summary.slope_mib_per_min, None);
        assert_eq!(MemorySummary::of(&[]), None);
    }

    #[test]
    fn the_table_has_a_row_per_node() {
        let every = Duration::from_secs(5);
        let nodes = [
            NodeMemory::of(
                "master".into(),
                42,
                every,
                &samples(&[(0.0, 40), (10.0, 50), (100.0, 51)]),
            ),
            NodeMemory::of("s1".into(), 43, every, &[]),
        ];
        let table = table(&nodes);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(
            table.contains("| master | 42 | 3 | 10.0 | 50.0 | 51.0 | 51.0 | +1.0 | +0.67 |"),
            "{table}"
        );
        assert!(table.contains("| s1 | 43 | 0 | – | – |"), "{table}");
    }

    #[test]
    fn vm_rss_is_read_from_the_status_text() {
        let status = "Name:\tmaster\nVmPeak:\t  900000 kB\nVmRSS:\t   51234 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(51234));
        assert_eq!(vm_rss_kib("Name:\tzombie\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\tlots kB\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[tokio::test]
    async fn sampling_ends_with_a_last_sample_at_stop() {
        let stop = CancellationToken::new();
        let sampler = tokio::spawn(sample(
            vec![("self".into(), std::process::id())],
            Duration::from_millis(10),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(55)).await;
        stop.cancel();
        let nodes = sampler.await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].samples >= 3, "{:?}", nodes[0]);
        assert_eq!(nodes[0].series.len(), nodes[0].samples);
        assert!(nodes[0].summary.is_some());
    }
}
