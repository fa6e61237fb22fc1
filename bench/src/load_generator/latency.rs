//! Latency histograms: one per client thread, merged at the end. Values are
//! microseconds at 3 significant figures (hdrhistogram).

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram holds; larger values are clamped to it.
/// A minute is far past any drain deadline, so nothing real is clamped.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Significant figures kept by every histogram.
const SIGNIFICANT_FIGURES: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder::new()
    }
}

impl LatencyRecorder {
    /// An empty histogram covering 1 µs to [`LATENCY_US_MAX`]. It never
    /// resizes, so recording never allocates.
    pub fn new() -> LatencyRecorder {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_FIGURES)
            .expect("bounds are valid constants");
        LatencyRecorder { histogram }
    }

    /// Records one latency; values past the range are clamped.
    pub fn record_us(&mut self, latency_us: u64) {
        self.histogram.saturating_record(latency_us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share their bounds");
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles a report shows; all zero when nothing was recorded.
    pub fn summary(&self) -> LatencySummary {
        let histogram = &self.histogram;
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// The median.
    pub p50_us: u64,
    /// The 90th percentile.
    pub p90_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The 99.9th percentile.
    pub p999_us: u64,
    /// The largest value (hdrhistogram reports the top of its bucket).
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_report_ordered_percentiles() {
        let mut first = LatencyRecorder::new();
        let mut second = LatencyRecorder::new();
        for latency_us in 1..=1000 {
            first.record_us(latency_us);
            second.record_us(latency_us * 10);
        }
        first.merge(&second);
        let summary = first.summary();
        assert_eq!(first.count(), 2000);
        assert!(summary.p50_us <= summary.p90_us);
        assert!(summary.p90_us <= summary.p99_us);
        assert!(summary.p99_us <= summary.p999_us);
        assert!(summary.p999_us <= summary.max_us);
        assert!((9_990..=10_010).contains(&summary.max_us));
    }

    #[test]
    fn values_past_the_range_are_clamped_not_lost() {
        let mut recorder = LatencyRecorder::new();
        recorder.record_us(LATENCY_US_MAX * 10);
        assert_eq!(recorder.count(), 1);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyRecorder::new().summary(), LatencySummary::default());
    }
}
