//! Synthetic traffic for the accelerator programs (`gpu-offload`,
//! `dp-capture`) when they run without ports: a generator lcore on one end
//! of an in-memory port pair, the program's receive lcore on the other, as
//! it would own a NIC queue.

use dataplane::accel;
use dataplane::lcore::{PollContext, Poller};
use dataplane::net::{MbufBatch, Port};
use hugepages::mbuf::{Mbuf, MbufPool};

/// The byte string every `signature_every`-th frame carries in its payload
/// (one of the accelerator's default signatures).
pub const SIGNATURE: &[u8] = b"/bin/sh";

/// Sends UDP/IPv4 frames of a few hundred flows into its port, as fast as
/// the port and the pool allow, and frees whatever comes back on it (what
/// the other end sends on after its verdict).
pub struct Generator {
    /// Where frames come from.
    pub pool: MbufPool,
    /// Its end of the pair.
    pub port: Box<dyn Port>,
    /// Bytes per frame (FCS excluded), at least 64.
    pub frame_len: usize,
    /// One frame in this many carries [`SIGNATURE`] (0: none does).
    pub signature_every: u64,
    batch: MbufBatch,
    seq: u64,
    /// Payload bytes for every starting sequence number (see `frame`).
    filler: Vec<u8>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("frame_len", &self.frame_len)
            .field("signature_every", &self.signature_every)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator on `port` drawing from `pool`.
    pub fn new(
        pool: MbufPool,
        port: Box<dyn Port>,
        frame_len: usize,
        signature_every: u64,
    ) -> Self {
        Generator {
            pool,
            port,
            frame_len: frame_len.max(64),
            signature_every,
            batch: MbufBatch::new(),
            seq: 0,
            filler: (0..frame_len.max(64) + 128)
                .map(|k| ((k as u8) & 0x7f) | 0x40)
                .collect(),
        }
    }

    /// Frames made so far.
    pub fn generated(&self) -> u64 {
        self.seq
    }

    fn frame(&mut self, m: &mut Mbuf) -> bool {
        let len = self.frame_len;
        let Ok(f) = m.append(len) else {
            return false;
        };
        let s = self.seq;
        self.seq += 1;
        // A few hundred flows, as 5-tuples vary in real traffic.
        let flow = (s.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32;
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip.copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 0, 10, 1, 0, 0,
        ]);
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(s as u16).to_be_bytes());
        ip[14..16].copy_from_slice(&((flow >> 4) as u16).to_be_bytes());
        ip[19] = (flow & 0xff) as u8;
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&(1024 + (flow as u16 & 0x3ff)).to_be_bytes());
        udp[2..4].copy_from_slice(&4789u16.to_be_bytes());
        udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        let payload = &mut f[42..];
        // Byte k is ((s + k) & 0x7f) | 0x40: never a signature's first
        // byte, so only planted ones match. Copied from a table rather
        // than made byte by byte (the generator is a core's worth of work
        // at a million 1500-byte frames a second).
        let at = (s & 0x7f) as usize;
        payload.copy_from_slice(&self.filler[at..at + payload.len()]);
        if self.signature_every > 0 && s.is_multiple_of(self.signature_every) {
            payload[10..10 + SIGNATURE.len()].copy_from_slice(SIGNATURE);
        }
        accel::kernel::ipv4_update(f);
        true
    }
}

impl Poller for Generator {
    fn poll(&mut self, ctx: &PollContext) -> usize {
        // What came back after the verdict: home to the pool.
        let mut work = self.port.rx_burst(&mut self.batch);
        self.batch.clear();
        if ctx.stopping() {
            return work;
        }
        while !self.batch.is_full() {
            let Some(mut m) = self.pool.alloc() else {
                break; // pool empty: the pipeline is full, try again later
            };
            if !self.frame(&mut m) || self.batch.push(m).is_err() {
                break;
            }
        }
        work += self.port.tx_burst(&mut self.batch);
        // What the port did not take goes back to the pool (never sent).
        self.batch.clear();
        work
    }
}
