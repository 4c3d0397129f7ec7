//! The latency histogram and the figures drawn from it.

use serde::Serialize;

/// A latency histogram: log-linear buckets (8 sub-buckets per power of
/// two, HdrHistogram's layout with 3 bits of precision: every value within
/// 12.5% of its bucket's lower edge), in nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    pub(crate) max: u64,
}

const SUB_BITS: u32 = 3;

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: vec![0; (64 << SUB_BITS) as usize],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < (1 << SUB_BITS) {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let sub = (v >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((msb - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
    }

    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < (1 << SUB_BITS) {
            return i;
        }
        let exp = (i >> SUB_BITS) + u64::from(SUB_BITS) - 1;
        let sub = i & ((1 << SUB_BITS) - 1);
        (1 << exp) | (sub << (exp - u64::from(SUB_BITS)))
    }

    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        let i = Self::index(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    pub(crate) fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    pub(crate) fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                // The bucket's midpoint, capped by the true maximum.
                let lo = Self::lower(i);
                let hi = Self::lower(i + 1);
                return (lo + (hi - lo) / 2).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.percentile(50.0)),
            p99_us: us(h.percentile(99.0)),
            p999_us: us(h.percentile(99.9)),
            max_us: us(h.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [0u64, 1, 7, 8, 9, 15, 16, 100, 1000, 54_321, 1 << 40] {
            let i = Histogram::index(v);
            assert!(Histogram::lower(i) <= v, "{v}");
            assert!(Histogram::lower(i + 1) > v, "{v}");
        }
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.percentile(50.0) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.13, "{p50}");
        assert_eq!(h.max, 1_000_000);
        assert!(h.percentile(100.0) <= 1_000_000);
    }
}
