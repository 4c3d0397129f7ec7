//! [`TxBuffer`]: packets gathered into bursts before `tx_burst`, flushed
//! when a burst is full or when a TSC drain timer says they have waited
//! long enough (DPDK's `rte_eth_tx_buffer` with the `drain_tsc` check of
//! examples/l2fwd).

use super::{DropReason, MAX_BURST, MbufBatch, Port};
use crate::time::TscTimer;
use hugepages::mbuf::Mbuf;
use std::time::Duration;

/// The drain period DPDK's l2fwd uses: "TX drain every ~100us"
/// (`BURST_TX_DRAIN_US`, examples/l2fwd/main.c).
pub const TX_DRAIN_US: u64 = 100;

/// What a flush does with packets the port would not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Free them and count them as [`DropReason::TxFull`]: DPDK's default
    /// (`rte_eth_tx_buffer_drop_callback`). The caller never waits, and a
    /// stuck port costs packets, not progress. l2fwd and l3fwd use this.
    #[default]
    Drop,
    /// Keep them, in order, for the next flush: the buffer pushes back. It
    /// holds up to [`MAX_BURST`] packets, and [`TxBuffer::push`] hands a
    /// packet back only when all of those are waiting. For pipelines where
    /// loss is not acceptable: the caller reads its input only while
    /// [`TxBuffer::room`] has space for a whole burst, so the backpressure
    /// reaches whatever feeds it.
    Keep,
}

/// Packets for one port queue, gathered into bursts.
///
/// ```
/// use dataplane::net::{MbufBatch, OnFull, Port, PortConfig, TxBuffer};
/// use dataplane::time::rdtsc;
/// use std::time::Duration;
///
/// let mut cfg = PortConfig::new("memory:txbuf-doc");
/// cfg.mbufs = 128;
/// cfg.mbuf_cache = 0;
/// let (mut a, mut b) = dataplane::net::memory::MemoryPort::pair(&cfg)?;
/// let mut buf = TxBuffer::new(32, Duration::from_micros(100), OnFull::Drop, rdtsc());
/// let mut pkts = MbufBatch::new();
/// a[0].alloc_burst(3, &mut pkts);
/// for m in pkts.drain() {
///     buf.push(m, &mut a[0]).expect("Drop mode never hands back");
/// }
/// assert_eq!(buf.len(), 3);             // under a burst: still buffered
/// buf.flush(&mut a[0]);                 // the drain timer would do this
/// let mut got = MbufBatch::new();
/// assert_eq!(b[0].rx_burst(&mut got), 3);
/// # Ok::<(), dataplane::Error>(())
/// ```
#[derive(Debug)]
pub struct TxBuffer {
    pkts: MbufBatch,
    burst: usize,
    timer: TscTimer,
    on_full: OnFull,
    sent: u64,
    dropped: u64,
}

impl TxBuffer {
    /// A buffer that sends in bursts of `burst` (clamped to 1..=
    /// [`MAX_BURST`]) and whose drain timer fires every `drain` from `now`
    /// (a TSC reading, [`crate::time::rdtsc`]).
    pub fn new(burst: usize, drain: Duration, on_full: OnFull, now: u64) -> Self {
        TxBuffer {
            pkts: MbufBatch::new(),
            burst: burst.clamp(1, MAX_BURST),
            timer: TscTimer::new(drain, now),
            on_full,
            sent: 0,
            dropped: 0,
        }
    }

    /// Buffers `m`, and flushes to `port` when a burst is complete; returns
    /// how many packets the port took.
    ///
    /// # Errors
    ///
    /// With [`OnFull::Keep`], the packet is handed back when the buffer is
    /// full and the port would take nothing. [`OnFull::Drop`] never fails.
    #[inline]
    pub fn push<P: Port + ?Sized>(&mut self, m: Mbuf, port: &mut P) -> Result<usize, Mbuf> {
        let mut sent = 0;
        if self.pkts.len() >= self.burst {
            sent = self.flush(port);
        }
        // Fails only with OnFull::Keep, when MAX_BURST packets wait.
        self.pkts.push(m)?;
        if self.pkts.len() >= self.burst {
            sent += self.flush(port);
        }
        Ok(sent)
    }

    /// Queues a whole burst (`rte_eth_tx_buffer` for each packet, without
    /// the per-packet move): when nothing is buffered and the burst is at
    /// least a transmit burst long, it goes to the port with one
    /// `tx_burst`, as testpmd's io mode sends what it received; a short
    /// burst joins the buffer, which is flushed whenever it holds a
    /// transmit burst. Returns how many packets were sent. What the port
    /// does not take is dropped and counted ([`OnFull::Drop`], as at a
    /// flush) or buffered, and once the buffer is full left in order at
    /// the front of `batch` ([`OnFull::Keep`]).
    #[inline]
    pub fn push_batch<P: Port + ?Sized>(&mut self, batch: &mut MbufBatch, port: &mut P) -> usize {
        let mut sent = 0;
        if self.pkts.is_empty() && batch.len() >= self.burst {
            // A flush of the burst in place, with a flush's outcome.
            let n = port.tx_burst(batch);
            self.sent += n as u64;
            sent = n;
            if self.on_full == OnFull::Drop && !batch.is_empty() {
                self.dropped += batch.len() as u64;
                Mbuf::free_bulk(batch.drain());
            }
        }
        while !batch.is_empty() {
            if self.pkts.len() >= self.burst {
                sent += self.flush(port);
            }
            let moved = self.pkts.append(batch);
            if self.pkts.len() >= self.burst {
                sent += self.flush(port);
            }
            if moved == 0 {
                // Keep mode with the buffer full and the port refusing.
                break;
            }
        }
        sent
    }

    /// Sends what is buffered (`rte_eth_tx_buffer_flush`); returns how many
    /// the port took. What it did not take is freed and counted
    /// ([`OnFull::Drop`]) or kept ([`OnFull::Keep`]).
    #[inline]
    pub fn flush<P: Port + ?Sized>(&mut self, port: &mut P) -> usize {
        if self.pkts.is_empty() {
            return 0;
        }
        let n = port.tx_burst(&mut self.pkts);
        self.sent += n as u64;
        if self.on_full == OnFull::Drop && !self.pkts.is_empty() {
            self.dropped += self.pkts.len() as u64;
            Mbuf::free_bulk(self.pkts.drain());
        }
        n
    }

    /// The drain check of l2fwd's loop: flushes when the timer has expired
    /// at `now` (once per period however late the check), and also when
    /// the buffer holds a whole burst; returns how many were sent.
    #[inline]
    pub fn poll<P: Port + ?Sized>(&mut self, port: &mut P, now: u64) -> usize {
        let expired = self.timer.expired(now);
        if expired || self.pkts.len() >= self.burst {
            self.flush(port)
        } else {
            0
        }
    }

    /// Packets that can still be buffered ([`MAX_BURST`] in all).
    pub fn room(&self) -> usize {
        self.pkts.spare()
    }

    /// Packets buffered.
    pub fn len(&self) -> usize {
        self.pkts.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// Packets the port took, in total.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Packets freed because the port would not take them
    /// ([`DropReason::TxFull`]), in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The reason [`TxBuffer::dropped`] counts under.
    pub const DROP_REASON: DropReason = DropReason::TxFull;

    /// Frees what is buffered without sending it and counts it as dropped
    /// (for a port that is going away); returns how many.
    pub fn discard(&mut self) -> usize {
        let n = self.pkts.len();
        self.dropped += n as u64;
        self.pkts.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PortConfig;
    use crate::net::memory::MemoryPort;
    use crate::time::{duration_to_tsc, rdtsc};

    fn pair(depth: u16) -> (MemoryPort, MemoryPort) {
        let mut cfg = PortConfig::new("memory:txbuf");
        cfg.mbufs = 256;
        cfg.mbuf_cache = 0;
        cfg.rx_desc = depth;
        let (mut a, mut b) = MemoryPort::pair(&cfg).expect("pair");
        (a.remove(0), b.remove(0))
    }

    fn take(port: &mut MemoryPort, n: usize) -> Vec<Mbuf> {
        let mut out = Vec::with_capacity(n);
        let mut batch = MbufBatch::new();
        // A batch holds MAX_BURST: allocate in bursts of at most that.
        while out.len() < n {
            let want = (n - out.len()).min(MAX_BURST);
            assert_eq!(port.alloc_burst(want, &mut batch), want);
            out.extend(batch.drain());
        }
        out
    }

    #[test]
    fn flushes_at_a_burst_and_on_the_timer() {
        let (mut a, mut b) = pair(1024);
        let t0 = rdtsc();
        let mut buf = TxBuffer::new(4, Duration::from_micros(100), OnFull::Drop, t0);
        let mut got = MbufBatch::new();
        for (i, m) in take(&mut a, 6).into_iter().enumerate() {
            let sent = buf.push(m, &mut a).expect("drop mode");
            assert_eq!(sent, if i == 3 { 4 } else { 0 });
        }
        assert_eq!(b.rx_burst(&mut got), 4);
        assert_eq!(buf.len(), 2);
        // Not yet: the period has not passed at t0.
        assert_eq!(buf.poll(&mut a, t0), 0);
        let later = t0 + duration_to_tsc(Duration::from_micros(100)) + 1;
        assert_eq!(buf.poll(&mut a, later), 2);
        assert_eq!(b.rx_burst(&mut got), 2);
        assert_eq!((buf.sent(), buf.dropped()), (6, 0));
    }

    #[test]
    fn drop_mode_frees_and_counts_what_did_not_fit() {
        let (mut a, _b) = pair(2);
        let pool = a.pool().clone();
        let mut buf = TxBuffer::new(4, Duration::from_micros(100), OnFull::Drop, rdtsc());
        for m in take(&mut a, 4) {
            buf.push(m, &mut a).expect("drop mode");
        }
        assert_eq!((buf.sent(), buf.dropped()), (2, 2));
        assert!(buf.is_empty());
        // Two sit in the ring to b, nothing else is out.
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn a_burst_goes_straight_through_and_the_rest_is_buffered() {
        let (mut a, mut b) = pair(1024);
        let t0 = rdtsc();
        let mut buf = TxBuffer::new(4, Duration::from_micros(100), OnFull::Drop, t0);
        let mut got = MbufBatch::new();
        let mut batch = MbufBatch::new();
        // A full burst with nothing buffered: sent at once.
        batch.fill_from(&mut take(&mut a, 6).into_iter());
        assert_eq!(buf.push_batch(&mut batch, &mut a), 6);
        assert!(batch.is_empty() && buf.is_empty());
        assert_eq!(b.rx_burst(&mut got), 6);
        // Short bursts collect until a transmit burst is there.
        batch.fill_from(&mut take(&mut a, 3).into_iter());
        assert_eq!(buf.push_batch(&mut batch, &mut a), 0);
        assert_eq!(buf.len(), 3);
        batch.fill_from(&mut take(&mut a, 3).into_iter());
        assert_eq!(buf.push_batch(&mut batch, &mut a), 6);
        assert!(buf.is_empty() && batch.is_empty());
        // Drop mode: what a full port refuses is counted, not kept.
        let (mut c, _d) = pair(2);
        let pool = c.pool().clone();
        let mut buf = TxBuffer::new(4, Duration::from_micros(100), OnFull::Drop, t0);
        batch.fill_from(&mut take(&mut c, 5).into_iter());
        assert_eq!(buf.push_batch(&mut batch, &mut c), 2);
        assert!(batch.is_empty());
        assert_eq!((buf.sent(), buf.dropped(), buf.len()), (2, 3, 0));
        assert_eq!(pool.in_use(), 2, "two in the ring, the rest freed");
        // Keep mode: the buffer fills, the rest stays with the caller.
        let (mut e, _f) = pair(2);
        let mut buf = TxBuffer::new(2, Duration::from_micros(100), OnFull::Keep, t0);
        let mut big = MbufBatch::new();
        big.fill_from(&mut take(&mut e, MAX_BURST).into_iter());
        assert_eq!(buf.push_batch(&mut big, &mut e), 2);
        assert_eq!(buf.len() + big.len(), MAX_BURST - 2);
        assert_eq!(buf.dropped(), 0);
    }

    #[test]
    fn keep_mode_pushes_back() {
        let (mut a, mut b) = pair(2);
        let mut buf = TxBuffer::new(2, Duration::from_micros(100), OnFull::Keep, rdtsc());
        let mut pkts = take(&mut a, MAX_BURST + 3).into_iter();
        for m in pkts.by_ref().take(MAX_BURST + 2) {
            buf.push(m, &mut a).expect("room");
        }
        // Two went into the ring; the rest wait, in order, and the buffer
        // is full, so the next one comes back.
        assert_eq!((buf.len(), buf.room()), (MAX_BURST, 0));
        let last = pkts.next().expect("one more");
        let back = buf.push(last, &mut a).expect_err("full");
        let mut got = MbufBatch::new();
        assert_eq!(b.rx_burst(&mut got), 2);
        assert_eq!(buf.push(back, &mut a).expect("room now"), 2);
        assert_eq!(buf.dropped(), 0);
        assert_eq!(buf.len(), MAX_BURST - 1);
    }
}
