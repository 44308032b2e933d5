//! Statistics of one measured cell: latency percentiles (nearest rank, exact: every sample is
//! kept, a 10-second cell holds at most a few hundred thousand), lag means and maxima, and the
//! ratio of replog to the bare pipeline.

use serde::Serialize;
use std::time::Duration;

/// Latency percentiles of one cell, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest write.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Latency {
    /// The percentiles of `samples` (microseconds, any order); all zero when there are none.
    pub fn of_micros(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let ms = |micros: u64| micros as f64 / 1000.0;
        let mean_ms = if samples.is_empty() {
            0.0
        } else {
            ms(samples.iter().sum::<u64>()) / samples.len() as f64
        };
        Latency {
            p50_ms: ms(percentile(samples, 0.50)),
            p90_ms: ms(percentile(samples, 0.90)),
            p99_ms: ms(percentile(samples, 0.99)),
            max_ms: ms(percentile(samples, 1.0)),
            mean_ms,
        }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 1) of `sorted` (ascending): the smallest sample
/// with at least `p` of all samples at or below it. Zero for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in whole microseconds, saturating (a latency never comes near `u64::MAX`).
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `numerator / denominator`, or `None` when the denominator is zero (a ratio to a run that
/// measured nothing means nothing).
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator > 0.0 && numerator.is_finite() && denominator.is_finite() {
        Some(numerator / denominator)
    } else {
        None
    }
}

/// Mean and maximum of lag samples (entries behind), taken at a fixed interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LagEntries {
    /// Mean over the samples.
    pub mean: f64,
    /// The largest sample.
    pub max: u64,
    /// How many samples were taken.
    pub samples: usize,
}

impl LagEntries {
    /// The summary of `samples`.
    pub fn of(samples: &[u64]) -> LagEntries {
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<u64>() as f64 / samples.len() as f64
        };
        LagEntries {
            mean,
            max: samples.iter().copied().max().unwrap_or(0),
            samples: samples.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.90), 90);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
        // Below the first rank: the smallest sample, never an index underflow.
        assert_eq!(percentile(&sorted, 0.001), 1);
    }

    #[test]
    fn percentiles_of_few_samples_round_up() {
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[1, 2], 0.5), 1);
        assert_eq!(percentile(&[1, 2, 3], 0.5), 2);
        assert_eq!(percentile(&[1, 2, 3], 0.99), 3);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn latency_sorts_and_converts_to_milliseconds() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|n| n * 1000).collect();
        let latency = Latency::of_micros(&mut samples);
        assert_eq!(latency.p50_ms, 500.0);
        assert_eq!(latency.p90_ms, 900.0);
        assert_eq!(latency.p99_ms, 990.0);
        assert_eq!(latency.max_ms, 1000.0);
        assert_eq!(latency.mean_ms, 500.5);
        assert!(latency.p50_ms <= latency.p99_ms);
    }

    #[test]
    fn no_samples_give_zeros_not_a_panic() {
        let latency = Latency::of_micros(&mut []);
        assert_eq!(latency.max_ms, 0.0);
        assert_eq!(latency.mean_ms, 0.0);
        assert_eq!(LagEntries::of(&[]), LagEntries::default());
    }

    #[test]
    fn ratios_refuse_a_zero_denominator() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(0.0, 2.0), Some(0.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn lag_mean_and_max() {
        let lag = LagEntries::of(&[0, 2, 4, 10]);
        assert_eq!(lag.mean, 4.0);
        assert_eq!(lag.max, 10);
        assert_eq!(lag.samples, 4);
    }

    #[test]
    fn micros_of_a_duration() {
        assert_eq!(micros(Duration::from_millis(3)), 3000);
    }
}
