//! A connection's receive buffer with reassembly: the bytes in order from
//! `RCV.NXT` back to the oldest one the application has not consumed, held
//! contiguous (so that [`peek`](super::Stack::peek) is one slice), and
//! after them, in the same allocation, segments that arrived ahead of a
//! hole, at their offset from `RCV.NXT`. The free space is the receive
//! window (RFC 9293 section 3.8.6.2): a segment beyond it is cut at the
//! window's right edge, so the buffer never holds more than its capacity.

/// Ranges of bytes held beyond a hole, at most this many; a segment that
/// would make one more is dropped (the sender retransmits it once the
/// holes before it fill).
pub(crate) const MAX_RANGES: usize = 16;

/// A receive buffer of at most `capacity` bytes.
#[derive(Debug)]
pub(crate) struct RxBuf {
    data: Vec<u8>,
    /// Where the unconsumed in-order bytes start in `data`.
    start: usize,
    /// How many in-order bytes are held.
    len: usize,
    capacity: usize,
    /// Byte ranges `[from, to)` held beyond the in-order bytes, as offsets
    /// from their end (from `RCV.NXT`), sorted, disjoint and not adjacent.
    ranges: Vec<(usize, usize)>,
}

impl RxBuf {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            len: 0,
            capacity,
            ranges: Vec::new(),
        }
    }

    /// The in-order bytes not yet consumed.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.data
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
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
    fn random_segments_reassemble_to_the_stream() {
        let stream: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
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
                let n = (r >> 8) as usize % 1500;
                let take = n.min(b.len());
                out.extend_from_slice(&b.bytes()[..take]);
                b.consume(take);
            } else {
                // A segment somewhere in [nxt - 500, nxt + 5000).
                let at = (nxt + (r >> 8) as usize % 5500).saturating_sub(500);
                let len = 1 + (r >> 24) as usize % 1460;
                let end = (at + len).min(stream.len());
                if at >= end {
                    continue;
                }
                let skip = nxt.saturating_sub(at);
                if skip >= end - at {
                    continue;
                }
                let (_, adv) = b.write(at + skip - nxt, &stream[at + skip..end]);
                nxt += adv;
            }
            assert!(b.len() <= b.capacity());
        }
        out.extend_from_slice(b.bytes());
        assert!(out.len() > 100_000, "only {} bytes reassembled", out.len());
        assert_eq!(out[..], stream[..out.len()]);
    }
}
