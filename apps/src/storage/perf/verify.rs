//! Read-after-write verification.

use hugepages::mempool::DmaBuf;

/// Read-after-write checking: each tag owns a lane of slots no other tag
/// touches, writes a pattern there that names the LBA and a generation,
/// then reads the slot back into a poisoned buffer and compares.
pub(crate) struct Verify {
    /// This tag's lane: slots `lane, lane + lanes, lane + 2 lanes, ...`.
    pub(crate) lanes: u64,
    pub(crate) lane_base: u64,
    /// Per tag: the slot written and the pattern's seed, until read back.
    pub(crate) written: Vec<Option<(u64, u64)>>,
    /// Per tag: the next sequential position in its lane.
    pub(crate) seq: Vec<u64>,
    pub(crate) generation: u64,
    pub(crate) checked: u64,
    pub(crate) mismatches: u64,
}

impl Verify {
    /// A verified operation completed: after a read, compare and free the
    /// tag's slot.
    #[inline]
    pub(crate) fn complete(
        &mut self,
        tag: u32,
        write: bool,
        ok: bool,
        buf: Option<&DmaBuf>,
        bytes: usize,
    ) {
        let t = tag as usize;
        if write {
            if !ok {
                // Nothing known was written; do not read it back.
                self.written[t] = None;
            }
            return;
        }
        let Some((slot, seed)) = self.written[t].take() else {
            return;
        };
        if !ok {
            return;
        }
        self.checked += 1;
        let good = buf.is_some_and(|b| check_pattern(&b[..bytes], slot, seed));
        if !good {
            self.mismatches += 1;
            if self.mismatches <= 8 {
                tracing::error!(
                    slot,
                    "verify: the data read back differs from what was written"
                );
            }
        }
    }
}

/// The 8-byte words of a verify pattern: word `k` of the I/O at `lba`
/// with `seed` (distinct per write, so a stale block is caught too).
#[inline]
fn pattern_word(lba: u64, seed: u64, k: u64) -> u64 {
    (lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.rotate_left(29)).wrapping_add(k)
}

pub(crate) fn fill_pattern(buf: &mut [u8], lba: u64, seed: u64) {
    for (k, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&pattern_word(lba, seed, k as u64).to_le_bytes());
    }
}

pub(crate) fn check_pattern(buf: &[u8], lba: u64, seed: u64) -> bool {
    buf.chunks_exact(8)
        .enumerate()
        .all(|(k, w)| w == pattern_word(lba, seed, k as u64).to_le_bytes())
}

/// Poison for a buffer about to be read into: a read that moves no data
/// fails the check.
pub(crate) const POISON: u8 = 0xa5;

#[cfg(test)]
mod tests {
    use super::{check_pattern, fill_pattern};

    #[test]
    fn patterns_name_their_block_and_write() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b, 7, 1);
        assert!(check_pattern(&b, 7, 1));
        assert!(!check_pattern(&b, 8, 1));
        assert!(!check_pattern(&b, 7, 2));
        b[4000] ^= 1;
        assert!(!check_pattern(&b, 7, 1));
    }
}
