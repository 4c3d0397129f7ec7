//! A connection's receive buffer with reassembly: the bytes in order from
//! `RCV.NXT` back to the oldest one the application has not consumed, held
//! contiguous (so that [`peek`](super::Stack::peek) is one slice), and
//! after them, in the same allocation, segments that arrived ahead of a
//! hole, at their offset from `RCV.NXT`. The free space is the receive
//! window (RFC 9293 section 3.8.6.2): a segment beyond it is cut at the
//! window's right edge, so the buffer never holds more than its capacity.
//!
//! **Bytes read in place.** A segment that arrives in order into an empty
//! buffer is not copied: the buffer keeps the rx mbuf that carried it
//! ([`lend`](RxBuf::lend), then [`attach`](RxBuf::attach)) and
//! [`bytes`](RxBuf::bytes) is a slice of that mbuf's data. That is the
//! request/response case, where the application parses and consumes what
//! arrived in the pass it arrived in; the mbuf goes back to its pool at
//! the start of the next pass (freeing it as its last byte was consumed,
//! in the middle of the application's handling, cost 14% of the request
//! rate at 256 connections: docs/performance.md). Anything else settles
//! the lent bytes into the buffer's own memory first (one copy, as for
//! every other segment): more bytes arriving behind them, or the stack's
//! [`settle`](RxBuf::settle) at the start of the next pass, so an mbuf is
//! held for one pass at most and a slow reader never pins the port's
//! pool.

use hugepages::mbuf::Mbuf;

/// Ranges of bytes held beyond a hole, at most this many; a segment that
/// would make one more is dropped (the sender retransmits it once the
/// holes before it fill).
pub(crate) const MAX_RANGES: usize = 16;

/// A receive buffer of at most `capacity` bytes.
#[derive(Debug)]
pub(crate) struct RxBuf {
    data: Vec<u8>,
    /// Where the unconsumed in-order bytes start in `data`, or in the lent
    /// mbuf's data.
    start: usize,
    /// How many in-order bytes are held.
    len: usize,
    capacity: usize,
    /// Byte ranges `[from, to)` held beyond the in-order bytes, as offsets
    /// from their end (from `RCV.NXT`), sorted, disjoint and not adjacent.
    ranges: Vec<(usize, usize)>,
    /// The in-order bytes are `len` bytes from `start` of this mbuf's data,
    /// not in `data` (no range is held then).
    lent: Lent,
}

/// Where the in-order bytes are.
#[derive(Debug, Default)]
enum Lent {
    /// In the buffer's own memory.
    #[default]
    No,
    /// Counted by [`RxBuf::lend`], to be in the mbuf [`RxBuf::attach`]
    /// hands over next.
    Awaited,
    /// In this rx mbuf.
    Frame(Mbuf),
}

impl RxBuf {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            len: 0,
            capacity,
            ranges: Vec::new(),
            lent: Lent::No,
        }
    }

    /// The in-order bytes not yet consumed.
    pub(crate) fn bytes(&self) -> &[u8] {
        let data = match &self.lent {
            Lent::No => &self.data[..],
            Lent::Awaited => &[],
            Lent::Frame(m) => m.data(),
        };
        data.get(self.start..self.start + self.len).unwrap_or(&[])
    }

    /// Whether a segment of `n` bytes at `RCV.NXT` may be read in place:
    /// the buffer holds nothing (a consumed mbuf it still keeps goes home
    /// when the next is lent), and `n` fits.
    pub(crate) fn can_lend(&self, n: usize) -> bool {
        self.len == 0 && self.ranges.is_empty() && !self.awaits_frame() && n <= self.capacity
    }

    /// Counts `n` bytes at `RCV.NXT` as received, to be read in place from
    /// `at` in a segment's payload, in the mbuf [`attach`](Self::attach)
    /// hands over before anything else touches the buffer. Only where
    /// [`can_lend`](Self::can_lend) said so.
    pub(crate) fn lend(&mut self, n: usize, at: usize) {
        debug_assert!(self.can_lend(n));
        self.len = n;
        self.start = at;
        self.lent = Lent::Awaited;
    }

    /// Whether [`lend`](Self::lend) counted bytes that wait for their mbuf.
    pub(crate) fn awaits_frame(&self) -> bool {
        matches!(self.lent, Lent::Awaited)
    }

    /// Hands over the mbuf whose data holds the segment's payload from
    /// `at`. False (the mbuf dropped) if nothing was lent or the data is
    /// too short, which the stack never does; the connection is then
    /// reset ([`Tcb::attach`](super::tcb::Tcb::attach)).
    pub(crate) fn attach(&mut self, m: Mbuf, at: usize) -> bool {
        let start = at + self.start;
        if !self.awaits_frame() || m.data().len() < start + self.len {
            return false;
        }
        self.start = start;
        self.lent = Lent::Frame(m);
        true
    }

    /// Whether in-order bytes are read in place in an mbuf.
    pub(crate) fn is_lent(&self) -> bool {
        self.len > 0 && matches!(self.lent, Lent::Frame(_))
    }

    /// Copies bytes read in place into the buffer's own memory and gives
    /// their mbuf back (kept, once consumed, until this or the next lend,
    /// so that it goes home with the others at the start of a pass rather
    /// than in the middle of the application's handling). Returns whether
    /// bytes were copied.
    pub(crate) fn settle(&mut self) -> bool {
        let Lent::Frame(m) = std::mem::take(&mut self.lent) else {
            return false;
        };
        if self.len == 0 {
            self.start = 0;
            return false;
        }
        if self.data.len() < self.capacity {
            self.data.resize(self.capacity, 0);
        }
        let from = m
            .data()
            .get(self.start..self.start + self.len)
            .unwrap_or(&[]);
        self.data[..from.len()].copy_from_slice(from);
        self.len = from.len();
        self.start = 0;
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The receive window: bytes the buffer can still take beyond
    /// `RCV.NXT`.
    pub(crate) fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// The ranges `[from, to)` held beyond the in-order bytes, as offsets
    /// from `RCV.NXT`, sorted.
    pub(crate) fn ranges(&self) -> &[(usize, usize)] {
        &self.ranges
    }

    /// Whether bytes are held beyond a hole.
    pub(crate) fn has_holes(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// Drops the first `n` in-order bytes (at most those held).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start += n;
        self.len -= n;
        if self.len == 0 && self.ranges.is_empty() {
            self.start = 0;
        }
    }

    /// Stores `src`, which starts `offset` bytes after `RCV.NXT`, cut at
    /// the window's edge. Returns the bytes of `src` stored and how many
    /// bytes became in order (by which `RCV.NXT` advances).
    pub(crate) fn write(&mut self, offset: usize, src: &[u8]) -> (usize, usize) {
        let free = self.free();
        if offset >= free || src.is_empty() {
            return (0, 0);
        }
        let n = src.len().min(free - offset);
        debug_assert!(
            !self.awaits_frame(),
            "a lent segment's mbuf was not attached"
        );
        self.settle();
        let (from, to) = (offset, offset + n);
        if from > 0 && !self.ranges.iter().any(|&(a, b)| a <= to && from <= b) {
            // A new range that touches no held one: refuse it if the list
            // is full (it is still inside the window, so the peer will send
            // it again).
            if self.ranges.len() >= MAX_RANGES {
                return (0, 0);
            }
        }
        if self.data.len() < self.capacity {
            self.data.resize(self.capacity, 0);
        }
        let held_end = self.ranges.last().map_or(0, |&(_, b)| b).max(to);
        if self.start + self.len + held_end > self.capacity {
            // Move the held bytes (in order and beyond) to the front.
            let end = self.start + self.len + self.ranges.last().map_or(0, |&(_, b)| b);
            self.data.copy_within(self.start..end, 0);
            self.start = 0;
        }
        let at = self.start + self.len + from;
        self.data[at..at + n].copy_from_slice(&src[..n]);
        self.add_range(from, to);
        let mut advanced = 0;
        if let Some(&(0, end)) = self.ranges.first() {
            advanced = end;
            self.ranges.remove(0);
            self.len += end;
            for r in &mut self.ranges {
                r.0 -= end;
                r.1 -= end;
            }
        }
        (n, advanced)
    }

    /// Adds `[from, to)` to the ranges, merging every range it overlaps or
    /// touches.
    fn add_range(&mut self, from: usize, to: usize) {
        let (mut from, mut to) = (from, to);
        let mut i = 0;
        while i < self.ranges.len() {
            let (a, b) = self.ranges[i];
            if b < from {
                i += 1;
            } else if a > to {
                break;
            } else {
                from = from.min(a);
                to = to.max(b);
                self.ranges.remove(i);
            }
        }
        self.ranges.insert(i, (from, to));
    }
}

#[cfg(test)]
mod tests {
    use super::RxBuf;
    use hugepages::mbuf::{MbufPool, MbufPoolConfig};

    #[test]
    fn in_order_bytes_are_one_slice_and_holes_fill() {
        let mut b = RxBuf::new(16);
        assert_eq!(b.write(0, b"abc"), (3, 3));
        assert_eq!(b.write(3, b"ghi"), (3, 0));
        assert!(b.has_holes());
        assert_eq!(b.bytes(), b"abc");
        assert_eq!(b.write(0, b"def"), (3, 6));
        assert_eq!(b.bytes(), b"abcdefghi");
        assert!(!b.has_holes());
        b.consume(4);
        assert_eq!(b.bytes(), b"efghi");
        assert_eq!(b.free(), 11);
        // Cut at the window's edge.
        assert_eq!(b.write(0, &[b'x'; 20]), (11, 11));
        assert_eq!(b.free(), 0);
        assert_eq!(b.write(0, b"y"), (0, 0));
    }

    #[test]
    fn random_segments_reassemble_to_the_stream_lent_or_copied() {
        let stream: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let pool = MbufPool::new(MbufPoolConfig {
            name: "rxbuf-unit".into(),
            count: 8,
            cache_size: 0,
            ..MbufPoolConfig::default()
        })
        .expect("pool");
        let mut lent = 0;
        let mut b = RxBuf::new(4096);
        let mut nxt = 0usize; // the stream offset of RCV.NXT
        let mut out = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            if out.len() == stream.len() {
                break;
            }
            let r = rand();
            if r % 3 == 0 {
                // Often all of it, as a server that parses whole requests.
                let n = if (r >> 40) % 2 == 0 {
                    usize::MAX
                } else {
                    (r >> 8) as usize % 1500
                };
                let take = n.min(b.len());
                out.extend_from_slice(&b.bytes()[..take]);
                b.consume(take);
            } else {
                // A segment somewhere in [nxt - 500, nxt + 5000), or
                // often the next in order.
                let at = if (r >> 50) % 2 == 0 {
                    nxt
                } else {
                    (nxt + (r >> 8) as usize % 5500).saturating_sub(500)
                };
                let len = 1 + (r >> 24) as usize % 1460;
                let end = (at + len).min(stream.len());
                if at >= end {
                    continue;
                }
                let skip = nxt.saturating_sub(at);
                if skip >= end - at {
                    continue;
                }
                let src = &stream[at + skip..end];
                let offset = at + skip - nxt;
                let n = src.len().min(b.free());
                if offset == 0 && r % 5 < 3 && n > 0 && b.can_lend(n) {
                    // Read in place: the segment in an mbuf, after a
                    // header of 54 bytes and the `skip` bytes already
                    // received.
                    let mut m = pool.alloc().expect("mbuf");
                    let frame = m.append(54 + skip + n).expect("room");
                    frame[54..].copy_from_slice(&stream[at..at + skip + n]);
                    b.lend(n, skip);
                    assert!(b.attach(m, 54));
                    lent += 1;
                    nxt += n;
                } else {
                    let (_, adv) = b.write(offset, src);
                    nxt += adv;
                }
            }
            if r % 7 == 0 {
                // The stack's settle at the start of a pass.
                b.settle();
            }
            assert!(b.len() <= b.capacity());
            assert!(pool.in_use() <= 1);
        }
        out.extend_from_slice(b.bytes());
        assert!(out.len() > 100_000, "only {} bytes reassembled", out.len());
        assert_eq!(out[..], stream[..out.len()]);
        assert!(lent > 50, "only {lent} segments lent");
        drop(b);
        assert_eq!(pool.in_use(), 0);
    }
}
