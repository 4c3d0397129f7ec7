//! A latency histogram that an lcore records into and any thread reads,
//! with no lock: HdrHistogram's log-linear buckets (each power of two
//! split into [`SUB`] equal parts, so a value is known to within 1/16 of
//! itself, 6.25%) in a fixed array of atomic counters.
//!
//! Recording is three relaxed `fetch_add`s and a relaxed `fetch_max`,
//! never an allocation, whatever the value; the memory is fixed (976
//! buckets, 7.6 KiB). hdrhistogram's `Histogram` is more precise but
//! needs `&mut` to record, so a reader on another thread would need a
//! lock or a copy per publication; this one is read in place.
//!
//! A scrape encodes it as a Prometheus histogram with a bucket per power
//! of two from 1 µs to 64 s (`le` in seconds), which the fine buckets sum
//! into exactly, because every power of two is a fine bucket's lower
//! bound.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 4;
/// Sub-buckets per power of two.
pub const SUB: usize = 1 << SUB_BITS;
/// Buckets in all: values below [`SUB`] one each, then [`SUB`] per power
/// of two up to 2^64.
const BUCKETS: usize = SUB * (65 - SUB_BITS as usize);
/// The exposition's bucket bounds: 2^10 ns (about 1 µs) to 2^36 ns
/// (about 69 s), then +Inf.
const EXPO_FIRST: u32 = 10;
const EXPO_LAST: u32 = 36;

/// Which bucket `v` falls in.
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    SUB + shift as usize * SUB + ((v >> shift) as usize - SUB)
}

/// The values bucket `i` holds: `[low, high)` (`high` saturates at
/// `u64::MAX` for the last).
fn bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let shift = ((i - SUB) / SUB) as u32;
    let sub = ((i - SUB) % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    let high = ((SUB as u128 + sub as u128 + 1) << shift).min(u128::from(u64::MAX)) as u64;
    (low, high)
}

/// Latencies in nanoseconds (or any `u64` measure), recorded by one or
/// more threads and read by any: a handle, cheap to clone, to counters
/// they share.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// Empty.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Counts {
                buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum: AtomicU64::new(0),
                max: AtomicU64::new(0),
            }),
        }
    }

    /// Records one value.
    pub fn record(&self, ns: u64) {
        // Relaxed: readers want each counter untorn, not an order between
        // them; a scrape may see a count one ahead of its bucket.
        self.inner.buckets[index(ns)].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.inner.sum.fetch_add(ns, Ordering::Relaxed);
        self.inner.max.fetch_max(ns, Ordering::Relaxed);
    }

    /// Records `n` values of `ns` at once: for a histogram filled from
    /// another's buckets (a finer one kept on the data path, converted
    /// when scraped).
    pub fn record_n(&self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.inner.buckets[index(ns)].fetch_add(n, Ordering::Relaxed);
        self.inner.count.fetch_add(n, Ordering::Relaxed);
        self.inner
            .sum
            .fetch_add(ns.wrapping_mul(n), Ordering::Relaxed);
        self.inner.max.fetch_max(ns, Ordering::Relaxed);
    }

    /// Adds every value `other` holds (a merge: bucket by bucket, so
    /// nothing is lost to rounding).
    pub fn add(&self, other: &LatencyHistogram) {
        for (mine, theirs) in self.inner.buckets.iter().zip(other.inner.buckets.iter()) {
            let n = theirs.load(Ordering::Relaxed);
            if n != 0 {
                mine.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.inner.count.fetch_add(other.count(), Ordering::Relaxed);
        self.inner.sum.fetch_add(other.sum(), Ordering::Relaxed);
        self.inner.max.fetch_max(other.max(), Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Their sum (wrapping past 2^64 ns, 584 years of latency).
    pub fn sum(&self) -> u64 {
        self.inner.sum.load(Ordering::Relaxed)
    }

    /// The largest value recorded, exactly (0 when none).
    pub fn max(&self) -> u64 {
        self.inner.max.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0 to 1): the highest value of the
    /// bucket that holds it (within 6.25% above the true value, never
    /// below it, and never above [`Self::max`]); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (bounds(i).1 - 1).min(self.max());
            }
        }
        self.max()
    }

    /// Per-bucket counts at the exposition's bounds (seconds), the last
    /// `+Inf`: what [`EncodeMetric`] writes.
    fn exposition(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity((EXPO_LAST - EXPO_FIRST + 2) as usize);
        let mut start = 0;
        for k in EXPO_FIRST..=EXPO_LAST {
            let end = index(1u64 << k);
            let n = self.inner.buckets[start..end]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum();
            out.push(((1u64 << k) as f64 / 1e9, n));
            start = end;
        }
        let rest = self.inner.buckets[start..]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        out.push((f64::INFINITY, rest));
        out
    }
}

impl prometheus_client::metrics::TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// A Prometheus histogram in seconds: buckets at each power of two from
/// 2^10 ns to 2^36 ns. Bucket `le` bounds are exclusive of the bound
/// itself (a value of exactly 2^k ns counts in the next bucket), which a
/// nanosecond makes no matter.
impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.exposition();
        // The count from the buckets, so that the +Inf bucket and the
        // count agree within one scrape.
        let count = buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum() as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::{BUCKETS, LatencyHistogram, SUB, bounds, index};

    #[test]
    fn every_value_falls_in_the_bucket_whose_bounds_hold_it() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let samples = (0..200_000u64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x >> (x % 64)
            })
            .chain([0, 1, 15, 16, 17, 1023, 1024, 1025, u64::MAX, u64::MAX - 1]);
        for v in samples {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            let (lo, hi) = bounds(i);
            assert!(lo <= v && (v < hi || hi == u64::MAX), "{v} in [{lo}, {hi})");
            // No wider than a sixteenth of its lower bound.
            assert!(hi - lo <= (lo / SUB as u64).max(1), "[{lo}, {hi})");
        }
        // The buckets tile the line: each starts where the last ended.
        for i in 1..BUCKETS {
            assert_eq!(bounds(i).0, bounds(i - 1).1, "{i}");
        }
    }

    #[test]
    fn record_n_is_n_records() {
        let (one, many) = (LatencyHistogram::new(), LatencyHistogram::new());
        for (v, n) in [(0u64, 3u64), (1_500, 7), (2_000_000, 1), (77, 0)] {
            for _ in 0..n {
                one.record(v);
            }
            many.record_n(v, n);
        }
        assert_eq!(
            (one.count(), one.sum(), one.max()),
            (many.count(), many.sum(), many.max())
        );
        assert_eq!(one.exposition(), many.exposition());
        assert_eq!(
            many.max(),
            2_000_000,
            "a value never recorded (n 0) is not the max"
        );
    }

    #[test]
    fn quantiles_are_within_a_sixteenth_above_the_exact_ones() {
        let h = LatencyHistogram::new();
        let mut x: u64 = 12345;
        let mut all: Vec<u64> = (0..50_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // 1 µs to about 1 s, log-spread.
                (1_000u64 << ((x >> 33) % 20)) | ((x >> 40) % 1000)
            })
            .collect();
        for &v in &all {
            h.record(v);
        }
        all.sort_unstable();
        assert_eq!(h.count(), all.len() as u64);
        assert_eq!(h.max(), *all.last().expect("values"));
        assert_eq!(h.sum(), all.iter().sum::<u64>());
        for q in [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = all[((q * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1];
            let got = h.quantile(q);
            assert!(got >= exact, "q {q}: {got} < {exact}");
            assert!(got <= exact + exact / SUB as u64, "q {q}: {got} vs {exact}");
        }
        assert_eq!(LatencyHistogram::new().quantile(0.5), 0);
    }

    /// More recording threads than cores, and a reader scraping all the
    /// while: nothing is lost, and no scrape shows more than was recorded.
    #[test]
    fn many_threads_record_while_one_reads() {
        let h = LatencyHistogram::new();
        let threads = 8u64;
        let each = 20_000u64;
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut scrapes = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let n = h.count();
                    assert!(n <= threads * each);
                    let _ = h.quantile(0.99);
                    scrapes += 1;
                }
                scrapes
            });
            let writers: Vec<_> = (0..threads)
                .map(|t| {
                    let h = h.clone();
                    s.spawn(move || {
                        for i in 0..each {
                            h.record(1 + (i * 7919 + t) % 5_000_000);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer");
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            assert!(reader.join().expect("reader") > 0);
        });
        assert_eq!(h.count(), threads * each);
        let expected: u64 = (0..threads)
            .flat_map(|t| (0..each).map(move |i| 1 + (i * 7919 + t) % 5_000_000))
            .sum();
        assert_eq!(h.sum(), expected);
        assert_eq!(h.quantile(1.0), h.max());
    }

    #[test]
    fn a_scrape_shows_cumulative_buckets_in_seconds() {
        let h = LatencyHistogram::new();
        for v in [500, 1_500, 3_000, 3_000, 5_000_000, 100_000_000_000] {
            h.record(v);
        }
        let mut r = prometheus_client::registry::Registry::default();
        r.register("batch_latency_seconds", "Latency", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(
            out.contains("# TYPE batch_latency_seconds histogram"),
            "{out}"
        );
        assert!(out.contains("batch_latency_seconds_count 6"), "{out}");
        // 2^10 ns holds the 500; 2^12 ns (4.096 µs) all but the last two.
        assert!(
            out.contains("batch_latency_seconds_bucket{le=\"0.000001024\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("batch_latency_seconds_bucket{le=\"0.000004096\"} 4"),
            "{out}"
        );
        assert!(
            out.contains("batch_latency_seconds_bucket{le=\"+Inf\"} 6"),
            "{out}"
        );
    }
}
