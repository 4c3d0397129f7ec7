//! The Internet checksum: RFC 1071's one's complement sum of 16-bit words,
//! with the pseudo-headers of RFC 768/9293 (IPv4) and RFC 8200 section 8.1
//! (IPv6), and RFC 1624's incremental update.
//!
//! Sums here are *folded but not complemented*: a header's checksum field
//! holds `!combine(&[...])`, and a header verifies when the sum over it,
//! checksum field included, is `0xffff`.
//!
//! [`data`] is the hot loop. It adds the buffer as native-endian 64-bit
//! words with end-around carry (four independent accumulators, so the
//! additions of one word do not wait for the previous one), folds the
//! result to 16 bits, and swaps bytes once at the end. RFC 1071 section
//! 2(A) and (B) are why this is right: one's complement addition is
//! associative, so 16-bit words can be added 64 bits at a time, and it is
//! byte-order independent, so summing in the host's order and swapping the
//! folded result gives the network-order sum.

use super::IpPair;
use super::IpProtocol;

/// Adds with end-around carry: the one's complement sum of two 64-bit
/// words. Cannot overflow: when `a + b` wraps, the wrapped value is at most
/// `2^64 - 2`.
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u64::from(carry)
}

/// Folds a 64-bit one's complement sum to 16 bits (2^16 - 1 divides
/// 2^64 - 1, so the fold keeps the value modulo 2^16 - 1).
#[inline(always)]
fn fold(sum: u64) -> u16 {
    // Each step adds the high half to the low half; the comments give the
    // largest possible result.
    let sum = (sum >> 32) + (sum & 0xffff_ffff); // 2^33 - 2
    let sum = (sum >> 32) + (sum & 0xffff_ffff); // 2^32 - 1
    let sum = (sum >> 16) + (sum & 0xffff); // 0x1fffe
    let sum = (sum >> 16) + (sum & 0xffff); // 0xffff
    sum as u16
}

/// The one's complement sum of `bytes` as big-endian 16-bit words, folded
/// to 16 bits, not complemented. An odd last byte is the high byte of a
/// word whose low byte is zero (RFC 1071 section 4.1).
///
/// Sums of consecutive pieces can be [`combine`]d when every piece but
/// the last has an even length.
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let (words, tail) = bytes.as_chunks::<8>();
    let (blocks, rest) = words.as_chunks::<4>();
    let mut acc = [0u64; 4];
    for block in blocks {
        for (a, word) in acc.iter_mut().zip(block) {
            *a = add_carry(*a, u64::from_ne_bytes(*word));
        }
    }
    let mut sum = add_carry(add_carry(acc[0], acc[1]), add_carry(acc[2], acc[3]));
    for word in rest {
        sum = add_carry(sum, u64::from_ne_bytes(*word));
    }
    // The last 0..=7 bytes, as a 4-, a 2- and a 1-byte read (a byte-wise
    // copy into a padded word compiles to a `memcpy` call, which costs more
    // than summing a whole IPv4 header). Each read starts at an even
    // offset, so its 16-bit lanes are words of the data. An odd last byte
    // is the high byte of a big-endian word padded with zero (RFC 1071
    // section 4.1): `[byte, 0]` in the host's order.
    let mut rest = tail;
    if let Some((word, after)) = rest.split_first_chunk::<4>() {
        sum = add_carry(sum, u64::from(u32::from_ne_bytes(*word)));
        rest = after;
    }
    if let Some((word, after)) = rest.split_first_chunk::<2>() {
        sum = add_carry(sum, u64::from(u16::from_ne_bytes(*word)));
        rest = after;
    }
    if let Some(&byte) = rest.first() {
        sum = add_carry(sum, u64::from(u16::from_ne_bytes([byte, 0])));
    }
    // Native-order lanes summed; the folded value is byte-swapped on
    // little-endian hosts (RFC 1071 section 2(B)).
    u16::from_be(fold(sum))
}

/// The one's complement sum of partial sums (each from [`data`],
/// [`pseudo_header`] or a header field), folded, not complemented.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    let sum = sums.iter().fold(0u64, |acc, &s| acc + u64::from(s));
    fold(sum)
}

/// The sum of the pseudo-header that UDP and TCP checksums cover: the
/// addresses, the protocol and the upper-layer length.
///
/// For IPv4 (RFC 768, RFC 9293 section 3.1) the length is the UDP length or
/// the TCP segment length (16 bits on the wire); for IPv6 (RFC 8200 section
/// 8.1) it is the upper-layer packet length (32 bits). Zero fields add
/// nothing, so both layouts sum to the same words.
#[inline]
pub fn pseudo_header(addrs: &IpPair, protocol: IpProtocol, length: u32) -> u16 {
    let addr_sum = match addrs {
        IpPair::V4 { src, dst } => {
            let (s, d) = (src.to_bits(), dst.to_bits());
            (s >> 16) as u64 + (s & 0xffff) as u64 + (d >> 16) as u64 + (d & 0xffff) as u64
        }
        IpPair::V6 { src, dst } => u64::from(data(&src.octets())) + u64::from(data(&dst.octets())),
    };
    let sum =
        addr_sum + u64::from(protocol.0) + u64::from(length >> 16) + u64::from(length & 0xffff);
    fold(sum)
}

/// RFC 1624's incremental update: the checksum after one 16-bit word of the
/// data it covers changed from `old` to `new`, without summing the rest
/// again.
///
/// Equation 3 of RFC 1624, `HC' = ~(~HC + ~m + m')`. Unlike RFC 1141's
/// equation, it never produces `0x0000` from a header that a full
/// computation would give `0xffff`, so the two always agree.
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !combine(&[!checksum, !old, new])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Address, Ipv6Address};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Byte at a time, big-endian words, as RFC 1071 defines it.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let v = if i % 2 == 0 {
                u32::from(b) << 8
            } else {
                u32::from(b)
            };
            sum += v;
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(!data(&bytes), 0x220d);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured IPv4 header (192.168.0.1 -> 192.168.0.199, UDP,
        // total length 0x73) whose checksum field holds b861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(data(&header), 0xffff, "a correct header sums to ffff");
        header[10] = 0;
        header[11] = 0;
        assert_eq!(!data(&header), 0xb861);
    }

    #[test]
    fn edge_values() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xff]), 0xff00);
        assert_eq!(data(&[0xff, 0xff]), 0xffff);
        // Every carry path: all-ones of every length folds to ffff (or
        // ff00 + ... for odd lengths), as the reference says.
        for len in 0..=300 {
            let ones = vec![0xffu8; len];
            assert_eq!(data(&ones), reference(&ones), "len {len}");
        }
    }

    #[test]
    fn matches_reference_at_every_length_and_alignment() {
        let mut rng = SmallRng::seed_from_u64(0x1071);
        let mut buf = vec![0u8; 1500 + 8];
        rng.fill(&mut buf[..]);
        for len in 0..=1500 {
            for align in 0..8 {
                let bytes = &buf[align..align + len];
                assert_eq!(data(bytes), reference(bytes), "len {len} align {align}");
            }
        }
    }

    #[test]
    fn combine_splits_at_even_offsets() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut buf = vec![0u8; 257];
        rng.fill(&mut buf[..]);
        for split in (0..=buf.len()).step_by(2) {
            let (a, b) = buf.split_at(split);
            assert_eq!(combine(&[data(a), data(b)]), data(&buf), "split {split}");
        }
    }

    #[test]
    fn pseudo_headers_match_their_byte_layouts() {
        let mut rng = SmallRng::seed_from_u64(768);
        for _ in 0..1000 {
            let (s4, d4): (u32, u32) = (rng.random(), rng.random());
            let protocol = IpProtocol(rng.random());
            let len: u16 = rng.random();
            let mut v4 = Vec::new();
            v4.extend_from_slice(&s4.to_be_bytes());
            v4.extend_from_slice(&d4.to_be_bytes());
            v4.extend_from_slice(&[0, protocol.0]);
            v4.extend_from_slice(&len.to_be_bytes());
            let pair = IpPair::V4 {
                src: Ipv4Address::from_bits(s4),
                dst: Ipv4Address::from_bits(d4),
            };
            assert_eq!(
                pseudo_header(&pair, protocol, u32::from(len)),
                reference(&v4)
            );

            let (s6, d6): (u128, u128) = (rng.random(), rng.random());
            let len6: u32 = rng.random();
            let mut v6 = Vec::new();
            v6.extend_from_slice(&s6.to_be_bytes());
            v6.extend_from_slice(&d6.to_be_bytes());
            v6.extend_from_slice(&len6.to_be_bytes());
            v6.extend_from_slice(&[0, 0, 0, protocol.0]);
            let pair = IpPair::V6 {
                src: Ipv6Address::from_bits(s6),
                dst: Ipv6Address::from_bits(d6),
            };
            assert_eq!(pseudo_header(&pair, protocol, len6), reference(&v6));
        }
    }

    #[test]
    fn incremental_update_matches_recomputing() {
        let mut rng = SmallRng::seed_from_u64(1624);
        for _ in 0..10_000 {
            let mut words: Vec<u16> = (0..rng.random_range(1..40)).map(|_| rng.random()).collect();
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let before = !data(&bytes(&words));
            let i = rng.random_range(0..words.len());
            let old = words[i];
            words[i] = rng.random();
            let after = !data(&bytes(&words));
            let updated = update(before, old, words[i]);
            // Both must verify; RFC 1624's equation also gives the same bits
            // whenever the data is not all zero.
            if words.iter().any(|&w| w != 0) {
                assert_eq!(updated, after, "words {words:x?}");
            }
        }
    }
}
