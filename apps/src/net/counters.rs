//! Per-lcore packet counters that the main thread reads while the lcores
//! run: each lcore owns one [`LcoreCounters`], writes it alone (a plain
//! store, no locked instruction, as DPDK's per-lcore `struct
//! l2fwd_port_statistics`) and publishes its totals every few milliseconds.

use dataplane::net::{DropReason, QueueStats};
use std::sync::atomic::{AtomicU64, Ordering};

const FIELDS: usize = 6 + DropReason::ALL.len();

/// One lcore's totals, on lines of their own (two cache lines: adjacent
/// line prefetch pairs them on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LcoreCounters {
    v: [AtomicU64; FIELDS],
}

impl LcoreCounters {
    /// Publishes `s` as this lcore's totals. Called by the owning lcore
    /// only.
    pub fn publish(&self, s: &QueueStats) {
        let vals = [
            s.rx_packets,
            s.rx_bytes,
            s.tx_packets,
            s.tx_bytes,
            s.errors,
            0,
        ];
        let drops = s.drops;
        for (slot, v) in self.v.iter().zip(vals.iter().chain(drops.iter())) {
            // Relaxed: readers want untorn values, not an order between
            // counters; the lcore is the only writer.
            slot.store(*v, Ordering::Relaxed);
        }
    }

    /// The last totals published.
    pub fn snapshot(&self) -> QueueStats {
        let get = |i: usize| self.v[i].load(Ordering::Relaxed);
        let mut s = QueueStats {
            rx_packets: get(0),
            rx_bytes: get(1),
            tx_packets: get(2),
            tx_bytes: get(3),
            errors: get(4),
            ..QueueStats::default()
        };
        for (i, d) in s.drops.iter_mut().enumerate() {
            *d = get(6 + i);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = LcoreCounters::default();
        let mut s = QueueStats {
            rx_packets: 5,
            tx_bytes: 9,
            errors: 1,
            ..QueueStats::default()
        };
        s.drop_one(DropReason::NoRoute);
        c.publish(&s);
        assert_eq!(c.snapshot(), s);
    }
}
