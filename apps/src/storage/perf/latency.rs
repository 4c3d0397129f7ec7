//! The latency histogram and the figures drawn from it.
//!
//! The histogram is the `hdrhistogram` crate's, preallocated for 1 ns to
//! 60 s at two significant digits (every value within 1% of its bucket),
//! so that recording on the lcore never allocates or resizes.

use hdrhistogram::Histogram as Hdr;
use serde::Serialize;

/// The largest latency recorded as itself, in ns; longer ones saturate.
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Histogram(Hdr<u64>);

impl Histogram {
    pub(crate) fn new() -> Self {
        // `new_with_bounds` refuses only a low bound under 1, a high bound
        // under twice the low one, or more than 5 digits: not these.
        #[allow(clippy::expect_used)]
        Histogram(Hdr::new_with_bounds(1, MAX_NS, 2).expect("valid constant bounds"))
    }

    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Adds the same values to the framework's exposition histogram (to
    /// the 1/16 of its buckets), for `/metrics`.
    pub(crate) fn export_into(&self, h: &dataplane::metrics::LatencyHistogram) {
        for v in self.0.iter_recorded() {
            h.record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    pub(crate) fn merge(&mut self, o: &Histogram) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&o.0);
    }
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The 99.9th percentile.
    pub p999_us: f64,
    /// The largest.
    pub max_us: f64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &h.0;
        if h.is_empty() {
            return Latency {
                mean_us: 0.0,
                p50_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
            };
        }
        Latency {
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_the_precision() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let l = Latency::from(&h);
        assert!((l.p50_us - 500.0).abs() / 500.0 < 0.01, "{l:?}");
        assert!((l.max_us - 1000.0).abs() / 1000.0 < 0.01, "{l:?}");
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us);
        let mut other = Histogram::new();
        other.record(MAX_NS * 10); // saturates instead of failing
        h.merge(&other);
        assert!(Latency::from(&h).max_us >= MAX_NS as f64 / 1000.0 * 0.99);
        assert_eq!(Latency::from(&Histogram::new()).p50_us, 0.0);
        // Exported for /metrics: every value, each within its bucket.
        let out = dataplane::metrics::LatencyHistogram::new();
        h.export_into(&out);
        assert_eq!(out.count(), h.0.len());
        assert!(out.max().abs_diff(h.0.max()) <= h.0.max() / 100);
    }
}
