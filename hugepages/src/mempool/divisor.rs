//! Exact division by an object stride, for turning an object's address
//! into its index on every put to the shared store without a divide
//! instruction (20-40 cycles of latency on current x86-64 cores, per
//! object) in the common cases.

/// `n / d` for a fixed `d >= 2`, when `d` divides `n`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divisor {
    d: usize,
    /// log2(d) when `d` is a power of two (then `d - 1` masks the rest).
    shift: Option<u32>,
    /// `ceil(2^64 / d)` when `d < 2^32`, else 0: Lemire, Kaser and Kurz,
    /// "Faster Remainder by Direct Computation" (2019), for 32-bit
    /// dividends: `n % d == 0` iff `n * magic mod 2^64 < magic`, and then
    /// `n / d` is the high half of `magic * n`.
    magic: u64,
}

impl Divisor {
    /// A divisor of `d` (the mempool's stride, at least 8).
    pub(crate) fn new(d: usize) -> Self {
        let d = d.max(2);
        let shift = d.is_power_of_two().then(|| d.trailing_zeros());
        let magic = match u64::try_from(d) {
            Ok(d64) if d64 <= u64::from(u32::MAX) => u64::MAX / d64 + 1,
            _ => 0,
        };
        Divisor { d, shift, magic }
    }

    /// `n / d` if `d` divides `n`, else `None`.
    #[inline]
    pub(crate) fn exact(&self, n: usize) -> Option<usize> {
        if let Some(shift) = self.shift {
            return (n & (self.d - 1) == 0).then_some(n >> shift);
        }
        if self.magic != 0
            && let Ok(n32) = u32::try_from(n)
        {
            let low = self.magic.wrapping_mul(u64::from(n32));
            // The high half of a 64 x 32-bit product fits in 32 bits.
            let q = ((u128::from(self.magic) * u128::from(n32)) >> 64) as usize;
            return (low < self.magic).then_some(q);
        }
        n.is_multiple_of(self.d).then(|| n / self.d)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::SmallRng};

    fn check(d: usize, n: usize) {
        let want = n.is_multiple_of(d).then(|| n / d);
        assert_eq!(Divisor::new(d).exact(n), want, "{n} / {d}");
    }

    #[test]
    fn matches_the_divide_instruction() {
        let mut rng = SmallRng::seed_from_u64(7);
        let iters = if cfg!(miri) { 20 } else { 20_000 };
        let strides = [8, 24, 64, 72, 192, 2176, 2304, 4096, 12_345, (1 << 31) + 8];
        let random: Vec<usize> = (0..20)
            .map(|_| rng.random_range(2..=u32::MAX as usize))
            .collect();
        for d in strides.into_iter().chain(random) {
            for k in [0, 1, 2, 3, 1000] {
                check(d, d * k);
                check(d, (d * k).wrapping_sub(1));
                check(d, d * k + 1);
            }
            check(d, u32::MAX as usize);
            check(d, (u32::MAX as usize / d) * d);
            check(d, 1 << 32);
            check(d, (1 << 40) / d * d);
            for _ in 0..iters / 10 {
                let q = rng.random_range(0..=u32::MAX as usize / d);
                check(d, q * d);
                check(d, q * d + rng.random_range(1..d));
                check(d, rng.random::<u64>() as usize);
            }
        }
    }
}
