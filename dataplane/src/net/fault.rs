//! A port decorator that loses, duplicates and reorders the frames it
//! sends, as smoltcp's `FaultInjector` does for its devices: a lossy link
//! for tests of what runs over a port (the TCP stack's retransmission),
//! where `tc netem` cannot reach (memory ports, or a sender whose frames
//! bypass the qdisc, as AF_PACKET's do).

use super::{Capabilities, LinkStatus, MbufBatch, Port, PortId, QueueId, QueueStats};

/// What a [`FaultInjector`] does to frames sent through it, each out of
/// 1,000 frames, decided by a seeded generator (the same seed gives the
/// same faults for the same frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Frames dropped, per mille.
    pub loss: u32,
    /// Frames sent twice, per mille.
    pub duplicate: u32,
    /// Frames held back and sent after the next one (or at the next
    /// receive poll, if nothing is sent before it: a link delays, it does
    /// not keep), per mille.
    pub reorder: u32,
    /// Frames received and dropped before the caller sees them, per
    /// mille (the other direction's loss).
    pub rx_loss: u32,
    /// The generator's seed.
    pub seed: u64,
}

/// What a [`FaultInjector`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    /// Frames dropped.
    pub dropped: u64,
    /// Frames duplicated.
    pub duplicated: u64,
    /// Frames sent late.
    pub reordered: u64,
    /// Frames received and dropped.
    pub rx_dropped: u64,
}

/// Frames held back for reordering, at most.
const HELD_MAX: usize = 8;

/// A [`Port`] whose transmit side loses, duplicates and reorders frames.
#[derive(Debug)]
pub struct FaultInjector<P: Port> {
    inner: P,
    faults: Faults,
    held: MbufBatch,
    x: u64,
    counts: FaultCounts,
}

impl<P: Port> FaultInjector<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, faults: Faults) -> Self {
        FaultInjector {
            inner,
            faults,
            held: MbufBatch::new(),
            x: faults.seed | 1,
            counts: FaultCounts::default(),
        }
    }

    /// The port inside.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// What was done so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// xorshift64: a roll out of 1,000.
    fn roll(&mut self) -> u32 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % 1000) as u32
    }
}

impl<P: Port> Port for FaultInjector<P> {
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        if !self.held.is_empty() {
            // Nothing was sent since they were held: they go now, late.
            self.tx_burst(&mut MbufBatch::new());
        }
        if self.faults.rx_loss == 0 {
            return self.inner.rx_burst(out);
        }
        let mut got = MbufBatch::new();
        self.inner.rx_burst(&mut got);
        let mut n = 0;
        while let Some(m) = got.pop_front() {
            if self.roll() < self.faults.rx_loss {
                self.counts.rx_dropped += 1;
                continue;
            }
            match out.push(m) {
                Ok(()) => n += 1,
                Err(m) => {
                    // No room left in `out`: lost, like an overrun ring.
                    drop(m);
                    self.counts.rx_dropped += 1;
                }
            }
        }
        n
    }

    /// Takes every frame of `pkts` (a dropped frame counts as taken, as
    /// on a wire); what the port inside cannot take is dropped too.
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let n = pkts.as_slice().len();
        let f = self.faults;
        let mut out = MbufBatch::new();
        let mut late = std::mem::take(&mut self.held);
        while let Some(m) = pkts.pop_front() {
            let r = self.roll();
            if r < f.loss {
                self.counts.dropped += 1;
                continue;
            }
            let reorder = r < f.loss + f.reorder;
            if reorder && self.held.as_slice().len() < HELD_MAX {
                self.counts.reordered += 1;
                let _ = self.held.push(m);
                continue;
            }
            // A frame rolled for reordering while the hold is full goes
            // now, as it is: the roll is not also a duplicate's.
            if !reorder && r < f.loss + f.reorder + f.duplicate {
                let mut copy = MbufBatch::new();
                if self.inner.alloc_burst(1, &mut copy) == 1
                    && let Some(mut c) = copy.pop()
                    && let Ok(buf) = c.append(m.len())
                {
                    buf.copy_from_slice(m.data());
                    // The same frame to the device: its offload requests
                    // (checksums it is to finish) too.
                    c.copy_metadata_from(&m);
                    self.counts.duplicated += 1;
                    let _ = out.push(c);
                }
            }
            let _ = out.push(m);
            // Frames held back go after the first frame of the next burst.
            out.append(&mut late);
        }
        out.append(&mut late);
        while !out.as_slice().is_empty() {
            if self.inner.tx_burst(&mut out) == 0 {
                break;
            }
        }
        self.counts.dropped += out.as_slice().len() as u64;
        out.clear();
        n
    }

    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        self.inner.alloc_burst(n, out)
    }

    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn link(&self) -> LinkStatus {
        self.inner.link()
    }

    fn stats(&self) -> QueueStats {
        self.inner.stats()
    }

    fn id(&self) -> (PortId, QueueId) {
        self.inner.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PortConfig;
    use crate::net::memory::MemoryPort;
    use hugepages::mbuf::offload;

    #[test]
    fn a_duplicate_asks_the_device_for_what_its_original_asks() {
        let cfg = PortConfig::new("fault-dup").with_mbufs(64, 0);
        let (mut a, mut b) = MemoryPort::pair(&cfg).expect("pair");
        let faults = Faults {
            duplicate: 1000,
            seed: 1,
            ..Faults::default()
        };
        let mut tx = FaultInjector::new(a.remove(0), faults);
        let mut rx = b.remove(0);
        let mut batch = MbufBatch::new();
        assert_eq!(tx.alloc_burst(1, &mut batch), 1);
        let flags = offload::TX_IPV4 | offload::TX_IP_CKSUM | offload::TX_TCP_CKSUM;
        for m in batch.iter_mut() {
            m.append(60).expect("room").fill(7);
            m.set_ol_flags(flags);
            m.set_tx_header_lens(14, 20, 0);
        }
        assert_eq!(tx.tx_burst(&mut batch), 1);
        let mut got = MbufBatch::new();
        rx.rx_burst(&mut got);
        assert_eq!(got.len(), 2, "the frame and its duplicate");
        for m in got.iter() {
            assert_eq!(m.data(), &[7u8; 60][..]);
            assert_eq!(m.ol_flags(), flags);
            assert_eq!(m.tx_header_lens(), (14, 20, 0));
        }
        assert_eq!(tx.counts().duplicated, 1);
    }

    #[test]
    fn reordering_delays_every_frame_once_and_keeps_none() {
        let cfg = PortConfig::new("fault-reorder").with_mbufs(256, 0);
        let (mut a, mut b) = MemoryPort::pair(&cfg).expect("pair");
        let faults = Faults {
            reorder: 500,
            seed: 3,
            ..Faults::default()
        };
        let mut tx = FaultInjector::new(a.remove(0), faults);
        let mut rx = b.remove(0);
        let mut sent = 0u8;
        for burst in [1usize, 31, 2, 32, 5] {
            let mut batch = MbufBatch::new();
            assert_eq!(tx.alloc_burst(burst, &mut batch), burst);
            for m in batch.iter_mut() {
                m.append(60).expect("room").fill(sent);
                sent += 1;
            }
            assert_eq!(tx.tx_burst(&mut batch), burst);
        }
        // The frames still held go out at the next receive poll.
        tx.rx_burst(&mut MbufBatch::new());
        let (mut seen, mut got) = (Vec::new(), MbufBatch::new());
        while rx.rx_burst(&mut got) > 0 {
            seen.extend(got.drain().map(|m| m.data()[0]));
        }
        assert_ne!(seen, (0..sent).collect::<Vec<_>>(), "some came late");
        assert!(tx.counts().reordered > 8, "{:?}", tx.counts());
        seen.sort_unstable();
        assert_eq!(seen, (0..sent).collect::<Vec<_>>(), "each frame once");
        assert_eq!(tx.counts().duplicated + tx.counts().dropped, 0);
    }
}
