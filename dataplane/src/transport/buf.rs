//! A connection's byte buffer: one allocation, the bytes held contiguous
//! from `start` to `end`, so that a parser always sees every buffered byte
//! as one slice and a flush is one `send`. Space freed at the front is
//! reclaimed by moving the held bytes down when the back runs out, which
//! costs less than a second `iovec` on every call. The allocation is made
//! when the first byte arrives and given back when the buffer empties
//! after holding more than [`KEEP`] bytes, so thousands of idle
//! connections hold no buffers.

/// An emptied buffer keeps an allocation up to this size.
const KEEP: usize = 16 * 1024;

/// Bytes held in `data[start..end]`; at most `capacity` of them.
pub(crate) struct ByteBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    capacity: usize,
}

impl ByteBuf {
    /// An empty buffer that holds at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            end: 0,
            capacity,
        }
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of the allocation beyond those held: how much a
    /// [`Self::tail`] gives without allocating.
    pub(crate) fn spare(&self) -> usize {
        (self.data.len() - self.len()).min(self.room())
    }

    /// How many more bytes it takes.
    pub(crate) fn room(&self) -> usize {
        self.capacity - self.len()
    }

    /// Drops the first `n` bytes held (all of them if `n` is more).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > KEEP {
                self.data = Vec::new();
            }
        }
    }

    /// Space for up to `want` more bytes (at most [`Self::room`]) after
    /// those held, to be filled and then committed with [`Self::commit`].
    pub(crate) fn tail(&mut self, want: usize) -> &mut [u8] {
        let want = want.min(self.room());
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < want {
                // Grow to what is needed, in steps that double, at most
                // the capacity.
                let need = self.end + want;
                let new_len = need.max(self.data.len() * 2).min(self.capacity).max(need);
                self.data.resize(new_len, 0);
            }
        }
        &mut self.data[self.end..self.end + want]
    }

    /// Counts `n` bytes written into the last [`Self::tail`] as held.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end = (self.end + n).min(self.data.len());
    }

    /// Appends as much of `src` as there is room for; returns how much.
    pub(crate) fn push(&mut self, src: &[u8]) -> usize {
        let dst = self.tail(src.len());
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        self.commit(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::ByteBuf;

    #[test]
    fn holds_bytes_in_order_and_never_more_than_its_capacity() {
        let mut b = ByteBuf::new(8);
        assert_eq!(b.push(b"abcde"), 5);
        assert_eq!(b.push(b"fghij"), 3);
        assert_eq!(b.bytes(), b"abcdefgh");
        assert_eq!(b.room(), 0);
        b.consume(3);
        assert_eq!(b.bytes(), b"defgh");
        // The front gap is reclaimed by moving the held bytes down.
        assert_eq!(b.push(b"XYZW"), 3);
        assert_eq!(b.bytes(), b"defghXYZ");
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.room(), 8);
    }

    #[test]
    fn a_random_sequence_matches_a_plain_queue() {
        use std::collections::VecDeque;
        let mut b = ByteBuf::new(1000);
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u64 {
            let r = next();
            if r % 2 == 0 {
                let len = (r >> 8) as usize % 300;
                let src: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
                let n = b.push(&src);
                assert_eq!(n, len.min(1000 - model.len()));
                model.extend(&src[..n]);
            } else {
                let n = (r >> 8) as usize % 300;
                b.consume(n);
                for _ in 0..n.min(model.len()) {
                    model.pop_front();
                }
            }
            assert_eq!(b.len(), model.len());
            assert!(b.bytes().iter().eq(model.iter()));
        }
    }
}
