//! Receive-side scaling as software can predict it: which queue of a
//! port a flow's packets arrive on.
//!
//! A NIC spreads received flows over its queues by a hash of the packet's
//! addresses and ports: the Toeplitz hash of the Microsoft RSS
//! specification, under a 40-byte key, whose low bits index a
//! redirection table (RETA) of queue numbers. AF_PACKET ports spread them
//! with a classic-BPF fanout program of ours that mixes the same fields. Either way the queue is a function a program can compute,
//! and a [`Steering`] is that function. Its user is the TCP stack's
//! `connect`: one stack runs per queue, and it picks a source port whose
//! replies hash to its own queue (as Seastar and F-Stack do), so a reply
//! never lands on a stack that does not know the connection.
//!
//! ```
//! use dataplane::wire::rss::{MICROSOFT_RSS_KEY, Steering};
//! use std::net::Ipv4Addr;
//!
//! // Four queues, the redirection table DPDK programs by default.
//! let rss = Steering::toeplitz(&MICROSOFT_RSS_KEY, (0..128).map(|i| i % 4).collect())?;
//! let q = rss.queue_v4(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), 80, 40000);
//! assert!(q < 4);
//! # Ok::<(), String>(())
//! ```

use serde::Serialize;
use std::net::Ipv4Addr;

/// The length of a Toeplitz key for IPv4 and IPv6 with ports (40 bytes:
/// the 36-byte IPv6 input plus the 4 the window slides over).
pub const RSS_KEY_LEN: usize = 40;

/// Microsoft's RSS key, the default of most NICs (and of DPDK's testpmd),
/// from "Verifying the RSS Hash Calculation" in the RSS specification.
pub const MICROSOFT_RSS_KEY: [u8; RSS_KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// One IPv4 test vector of "Verifying the RSS Hash Calculation" (the
/// Microsoft RSS specification), under [`MICROSOFT_RSS_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssVector {
    /// The destination address and port.
    pub dst: ([u8; 4], u16),
    /// The source address and port.
    pub src: ([u8; 4], u16),
    /// The hash of the addresses alone.
    pub ip_hash: u32,
    /// The hash of the addresses and TCP ports.
    pub tcp_hash: u32,
}

/// The specification's five IPv4 vectors, for the tests of every
/// Toeplitz implementation (this one, and the accelerator's kernels).
pub const MICROSOFT_RSS_VECTORS: [RssVector; 5] = [
    RssVector {
        dst: ([161, 142, 100, 80], 1766),
        src: ([66, 9, 149, 187], 2794),
        ip_hash: 0x323e_8fc2,
        tcp_hash: 0x51cc_c178,
    },
    RssVector {
        dst: ([65, 69, 140, 83], 4739),
        src: ([199, 92, 111, 2], 14230),
        ip_hash: 0xd718_262a,
        tcp_hash: 0xc626_b0ea,
    },
    RssVector {
        dst: ([12, 22, 207, 184], 38024),
        src: ([24, 19, 198, 95], 12898),
        ip_hash: 0xd2d0_a5de,
        tcp_hash: 0x5c2b_394a,
    },
    RssVector {
        dst: ([209, 142, 163, 6], 2217),
        src: ([38, 27, 205, 30], 48228),
        ip_hash: 0x8298_9176,
        tcp_hash: 0xafc7_327f,
    },
    RssVector {
        dst: ([202, 188, 127, 2], 1303),
        src: ([153, 39, 163, 191], 44251),
        ip_hash: 0x5d18_09c5,
        tcp_hash: 0x10e8_28a2,
    },
];

/// The Toeplitz hash of `input` under `key`: for each set bit of the
/// input, XOR in the 32 key bits that start at that bit's position. Key
/// bits past the key's end count as zero (a key should be at least four
/// bytes longer than the input).
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let bit = |i: usize| key.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
    let mut window: u32 = (0..32).fold(0, |w, i| (w << 1) | u32::from(bit(i)));
    let mut hash = 0;
    for (n, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from(bit(n * 8 + b + 32));
        }
    }
    hash
}

/// The Toeplitz input of an IPv4 TCP or UDP packet: source address,
/// destination address, source port, destination port, in network order.
pub fn ipv4_input(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&src_port.to_be_bytes());
    input[10..].copy_from_slice(&dst_port.to_be_bytes());
    input
}

/// [`Steering::Mix`]'s multiplier of the addresses' XOR (the golden
/// ratio's, as Fibonacci hashing uses).
pub const ADDR_MUL: u32 = 0x9e37_79b1;
/// [`Steering::Mix`]'s final multiplier (MurmurHash3's first mixing
/// constant); the queue is taken from bits 16 and up of the product.
pub const MIX_MUL: u32 = 0x85eb_ca6b;

/// How a port spreads received flows over its queues, where a program can
/// compute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Steering {
    /// A NIC's RSS: the Toeplitz hash under `key`, its low bits an index
    /// into `reta` (the redirection table, whose length is a power of
    /// two), whose entry is the queue.
    Toeplitz {
        /// The hash key.
        key: Vec<u8>,
        /// The redirection table.
        reta: Vec<u16>,
    },
    /// The AF_PACKET backend's fanout program: see [`Steering::queue_v4`]
    /// for the function. Symmetric: both directions of a flow land on the
    /// same queue.
    Mix {
        /// The queues it spreads over.
        queues: u16,
    },
}

impl Steering {
    /// A Toeplitz steering; refuses a key shorter than 16 bytes (the IPv4
    /// input plus the window) and a table that is empty or not a power of
    /// two long.
    ///
    /// # Errors
    /// The reason, for a key or table a NIC would not have.
    pub fn toeplitz(key: &[u8], reta: Vec<u16>) -> Result<Self, String> {
        if key.len() < 16 {
            return Err(format!(
                "an RSS key of {} bytes cannot hash an IPv4 4-tuple (16 at least)",
                key.len()
            ));
        }
        if !reta.len().is_power_of_two() {
            return Err(format!(
                "a redirection table of {} entries (a power of two is needed)",
                reta.len()
            ));
        }
        Ok(Steering::Toeplitz {
            key: key.to_vec(),
            reta,
        })
    }

    /// The queue an IPv4 TCP or UDP packet from `src:src_port` to
    /// `dst:dst_port` arrives on. For [`Steering::Mix`]:
    /// `h = ((src ^ dst) * ADDR_MUL ^ (src_port ^ dst_port)) * MIX_MUL`
    /// (wrapping, 32 bits), queue `(h >> 16) % queues`; ports 0 for a
    /// packet without them (a fragment, ICMP).
    pub fn queue_v4(&self, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> u16 {
        match self {
            Steering::Toeplitz { key, reta } => {
                let hash = toeplitz(key, &ipv4_input(src, dst, src_port, dst_port));
                // The constructor keeps the table a power of two long, so
                // this is the NIC's "low bits of the hash".
                reta.get(hash as usize & reta.len().wrapping_sub(1))
                    .copied()
                    .unwrap_or(0)
            }
            Steering::Mix { queues } => {
                let addrs = u32::from(src) ^ u32::from(dst);
                let ports = u32::from(src_port ^ dst_port);
                let h = (addrs.wrapping_mul(ADDR_MUL) ^ ports).wrapping_mul(MIX_MUL);
                ((h >> 16) % u32::from((*queues).max(1))) as u16
            }
        }
    }

    /// The queues it spreads over (the largest queue number plus one).
    pub fn queues(&self) -> u16 {
        match self {
            Steering::Toeplitz { reta, .. } => {
                reta.iter().max().map_or(1, |&q| q.saturating_add(1))
            }
            Steering::Mix { queues } => *queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toeplitz_matches_the_specification() {
        for v in MICROSOFT_RSS_VECTORS {
            let input = ipv4_input(v.src.0.into(), v.dst.0.into(), v.src.1, v.dst.1);
            assert_eq!(toeplitz(&MICROSOFT_RSS_KEY, &input), v.tcp_hash, "{v:?}");
            assert_eq!(
                toeplitz(&MICROSOFT_RSS_KEY, &input[..8]),
                v.ip_hash,
                "{v:?}"
            );
        }
    }

    #[test]
    fn the_queue_is_the_tables_entry_at_the_hashs_low_bits() {
        let reta: Vec<u16> = (0..128).map(|i| (i * 7 % 3) as u16).collect();
        let rss = Steering::toeplitz(&MICROSOFT_RSS_KEY, reta.clone()).expect("valid");
        assert_eq!(rss.queues(), 3);
        for v in MICROSOFT_RSS_VECTORS {
            let q = rss.queue_v4(v.src.0.into(), v.dst.0.into(), v.src.1, v.dst.1);
            assert_eq!(q, reta[v.tcp_hash as usize % 128]);
        }
    }

    #[test]
    fn mix_is_symmetric_and_spreads() {
        let rss = Steering::Mix { queues: 3 };
        let (a, b) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 168, 7, 9));
        let mut seen = [0u32; 3];
        for port in 1000..1300u16 {
            let q = rss.queue_v4(a, b, port, 80);
            assert_eq!(q, rss.queue_v4(b, a, 80, port));
            seen[usize::from(q)] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 60),
            "300 ports spread over 3 queues: {seen:?}"
        );
    }

    #[test]
    fn bad_keys_and_tables_are_refused() {
        assert!(Steering::toeplitz(&[0; 8], vec![0; 128]).is_err());
        assert!(Steering::toeplitz(&MICROSOFT_RSS_KEY, vec![0; 100]).is_err());
        assert!(Steering::toeplitz(&MICROSOFT_RSS_KEY, Vec::new()).is_err());
    }
}
