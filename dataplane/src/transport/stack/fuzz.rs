//! The whole stack's receive path driven by arbitrary frames: the body of
//! the `stack_frames` fuzz target.
//!
//! Random bytes seldom make a frame that gets past Ethernet, IPv4 and a
//! checksum, so each record of the input picks a template (ARP, ICMP echo
//! or destination unreachable, UDP, TCP to the listener or to the
//! connection being opened, or raw bytes), fills its fields from the
//! input, and fixes the checksums up unless the record says to spoil
//! them; an IPv4 record may be a fragment as its input says, or its
//! datagram cut in two fragments that meet in reassembly. Between records
//! the stack polls, sometimes the application reads and writes, and the
//! peer end drains what the stack sent. At the end every mbuf must be
//! back in its pool.

use super::{Stack, StackConfig};
use crate::net::memory::MemoryPort;
use crate::net::{MbufBatch, Port, PortConfig};
use crate::transport::Event;
use crate::wire::{EthernetAddress, IpPair, IpProtocol, checksum};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The peer's MAC and address, known to the stack without ARP.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const OURS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// A reader of the input that yields zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Runs the stack over `data`'s records; the stack's counters at the end.
///
/// # Errors
/// The broken invariant (an mbuf not back in its pool), or a stack that
/// could not be made.
#[doc(hidden)]
pub fn fuzz_frames(data: &[u8]) -> Result<super::StackStats, String> {
    let cfg = PortConfig::new("fuzz-frames").with_mbufs(512, 0);
    let (mut a, mut b) = MemoryPort::pair(&cfg).map_err(|e| e.to_string())?;
    let (port, mut peer) = (a.remove(0), b.remove(0));
    let pools = [port.pool().clone(), peer.pool().clone()];
    let stats = {
        let mut sc = StackConfig::new(super::Ipv4Cidr {
            addr: OURS,
            prefix_len: 24,
        });
        sc.neighbours.push((PEER, EthernetAddress(PEER_MAC)));
        sc.sack = true;
        sc.rx_buffer = 4096;
        sc.tx_buffer = 4096;
        let mut s = Stack::new(port, sc).map_err(|e| e.to_string())?;
        let mac = s.mac().0;
        s.listen(80).map_err(|e| e.to_string())?;
        let udp = s.bind_udp(53).map_err(|e| e.to_string())?;
        let out = s
            .connect(SocketAddrV4::new(PEER, 8080))
            .map_err(|e| e.to_string())?;
        let mut input = Input(data);
        // The connect's source port and initial sequence number, from what
        // the stack sent (the ISN is keyed by a secret: the input offsets
        // from it to reach an established connection).
        let mut local_port = 0u16;
        let mut iss = 0u32;
        for _ in 0..64 {
            if input.0.is_empty() {
                break;
            }
            let op = input.u8();
            let spoil = op & 0x80 != 0;
            for frame in build(&mut input, op & 0x7f, mac, (local_port, iss), spoil) {
                let mut m = MbufBatch::new();
                if peer.alloc_burst(1, &mut m) == 1
                    && let Some(mut mb) = m.pop()
                    && let Ok(buf) = mb.append(frame.len())
                {
                    buf.copy_from_slice(&frame);
                    let mut one = MbufBatch::new();
                    let _ = one.push(mb);
                    peer.tx_burst(&mut one);
                }
            }
            s.poll();
            while let Some(ev) = s.next_event() {
                match ev {
                    Event::Readable(c) => {
                        let n = s.peek(c).map(<[u8]>::len).unwrap_or(0);
                        let _ = s.consume(c, n);
                        let _ = s.write(c, b"reply");
                    }
                    Event::PeerClosed(c) => {
                        let _ = s.close(c);
                    }
                    Event::Datagrams(u) => {
                        while let Ok(Some(_)) = s.peek_datagram(u) {
                            let _ = s.consume_datagram(u);
                        }
                    }
                    _ => {}
                }
            }
            if op & 0x40 != 0 {
                let _ = s.write(out, b"hello");
                let _ = s.send_to(udp, SocketAddrV4::new(PEER, 5353), b"q");
                if op & 1 != 0 {
                    // Past the MTU: sent in fragments.
                    let _ = s.send_to(udp, SocketAddrV4::new(PEER, 5353), &[op; 3000]);
                }
            }
            let mut got = MbufBatch::new();
            while peer.rx_burst(&mut got) > 0 {
                for m in got.drain() {
                    let d = m.data();
                    // A TCP segment of ours to port 8080: the connect's.
                    if d.len() >= 54 && d[23] == 6 && d[36..38] == 8080u16.to_be_bytes() {
                        local_port = u16::from_be_bytes([d[34], d[35]]);
                        if d[47] & 0x02 != 0 {
                            iss = u32::from_be_bytes([d[38], d[39], d[40], d[41]]);
                        }
                    }
                }
            }
        }
        s.stats()
    };
    for p in pools {
        if p.in_use() != 0 {
            return Err(format!("{} mbufs of {} not back", p.in_use(), p.name()));
        }
    }
    Ok(stats)
}

/// The frames of one record from the peer (`PEER_MAC`, `PEER`) to us,
/// after template `kind`: one, or a datagram's two fragments.
fn build(
    input: &mut Input<'_>,
    kind: u8,
    mac: [u8; 6],
    (local_port, iss): (u16, u32),
    spoil: bool,
) -> Vec<Vec<u8>> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&PEER_MAC);
    match kind % 8 {
        // ARP: a request or a reply about some address near ours.
        0 => {
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0]);
            f.push(1 + input.u8() % 2);
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&[10, 0, 0, input.u8()]);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&[10, 0, 0, 1 + input.u8() % 2]);
            return vec![f];
        }
        // Raw bytes after the MAC addresses.
        7 => {
            let n = usize::from(input.u8());
            f.extend_from_slice(input.bytes(n));
            return vec![f];
        }
        _ => {}
    }
    // IPv4 from the peer, then a transport header.
    let mut l4 = Vec::new();
    let proto = match kind % 8 {
        // ICMP echo request.
        1 => {
            l4.extend_from_slice(&[8, 0, 0, 0]);
            l4.extend_from_slice(&input.u32().to_be_bytes());
            let n = usize::from(input.u8() % 64);
            l4.extend_from_slice(input.bytes(n));
            1
        }
        // ICMP destination unreachable quoting a TCP header of ours.
        2 => {
            l4.extend_from_slice(&[3, input.u8() % 16, 0, 0, 0, 0, 0, 0]);
            let mut q = [0u8; 28];
            q[0] = 0x45;
            q[9] = 6;
            q[12..16].copy_from_slice(&OURS.octets());
            q[16..20].copy_from_slice(&PEER.octets());
            q[20..22].copy_from_slice(&local_port.to_be_bytes());
            q[22..24].copy_from_slice(&8080u16.to_be_bytes());
            q[24..28].copy_from_slice(&input.u32().to_be_bytes());
            l4.extend_from_slice(&q);
            1
        }
        // UDP to our socket or another port.
        3 => {
            let dst = if input.u8() & 1 == 0 { 53 } else { input.u16() };
            let n = usize::from(input.u8() % 64);
            let payload = input.bytes(n).to_vec();
            l4.extend_from_slice(&5353u16.to_be_bytes());
            l4.extend_from_slice(&dst.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            l4.extend_from_slice(&payload);
            17
        }
        // TCP to the listener (kinds 4 and 5) or to the connection being
        // opened (6), with any flags, numbers, options and payload.
        k => {
            let (sport, dport) = if k == 6 {
                (8080, local_port)
            } else {
                (input.u16() % 4 + 40_000, 80)
            };
            let opts = usize::from(input.u8() % 11) * 4;
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&input.u32().to_be_bytes());
            // To the connection being opened, mostly an ACK number near
            // what it sent; else anything.
            let ack = if k == 6 && input.u8() & 3 != 0 {
                iss.wrapping_add(u32::from(input.u8() % 8))
            } else {
                input.u32()
            };
            l4.extend_from_slice(&ack.to_be_bytes());
            l4.push((((20 + opts) / 4) << 4) as u8);
            l4.push(input.u8());
            l4.extend_from_slice(&input.u16().to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
            let o = input.bytes(opts).to_vec();
            l4.extend_from_slice(&o);
            l4.resize(20 + opts, 0);
            let n = usize::from(input.u8() % 128);
            l4.extend_from_slice(input.bytes(n));
            6
        }
    };
    let frag = if kind & 0x20 != 0 {
        input.u16()
    } else {
        0x4000
    };
    let ident = u16::from(input.u8() % 4);
    if !spoil {
        let at = match proto {
            1 => Some(2),
            6 => Some(16),
            17 => Some(6),
            _ => None,
        };
        if let Some(at) = at {
            let mut sum = checksum::data(&l4);
            if proto != 1 {
                let addrs = IpPair::V4 {
                    src: PEER,
                    dst: OURS,
                };
                let pseudo = checksum::pseudo_header(&addrs, IpProtocol(proto), l4.len() as u32);
                sum = checksum::combine(&[sum, pseudo]);
            }
            l4[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
        }
    }
    // Fragment mode: the fragment field as the input has it, or (0x1000
    // set) the datagram cut in two fragments at a multiple of 8, sent
    // first piece first or (0x0800) last first, to meet in reassembly.
    let mut pieces = vec![(&l4[..], frag)];
    if kind & 0x20 != 0 && frag & 0x1000 != 0 {
        let cut = (usize::from(frag & 0x7) + 1) * 8;
        if cut < l4.len() {
            pieces = vec![(&l4[..cut], 0x2000), (&l4[cut..], (cut / 8) as u16)];
            if frag & 0x0800 != 0 {
                pieces.reverse();
            }
        }
    }
    pieces
        .into_iter()
        .map(|(body, frag)| {
            let total = 20 + body.len();
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&ident.to_be_bytes());
            ip.extend_from_slice(&frag.to_be_bytes());
            ip.extend_from_slice(&[64, proto, 0, 0]);
            ip.extend_from_slice(&PEER.octets());
            ip.extend_from_slice(&OURS.octets());
            if !spoil {
                let sum = !checksum::data(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            let mut frame = f.clone();
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(body);
            frame
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Random inputs, as the fuzz target runs them, briefly: every run
    /// ends with every mbuf home, and the frames built reach every
    /// protocol's handling.
    #[test]
    fn random_records_leave_every_mbuf_home() {
        let mut sum = super::super::StackStats::default();
        for round in 0..300 {
            let data = super::super::tests::pattern(round as u64, (round % 60) * 16);
            match super::fuzz_frames(&data) {
                Ok(st) => {
                    sum.arp_replies += st.arp_replies;
                    sum.icmp_echo += st.icmp_echo;
                    sum.icmp_unreachable_sent += st.icmp_unreachable_sent;
                    sum.udp_rx += st.udp_rx;
                    sum.tcp_rx += st.tcp_rx;
                    sum.rx_bad_checksum += st.rx_bad_checksum;
                    sum.reassembled += st.reassembled;
                    sum.reassembly_dropped += st.reassembly_dropped;
                    sum.tx_fragmented += st.tx_fragmented;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        // The templates reach every protocol, with good sums and bad.
        assert!(sum.arp_replies > 0, "{sum:?}");
        assert!(sum.icmp_echo > 0, "{sum:?}");
        assert!(sum.icmp_unreachable_sent > 0, "{sum:?}");
        assert!(sum.udp_rx > 0, "{sum:?}");
        assert!(sum.tcp_rx > 0, "{sum:?}");
        assert!(sum.rx_bad_checksum > 0, "{sum:?}");
        assert!(sum.reassembled > 0 && sum.reassembly_dropped > 0, "{sum:?}");
        assert!(sum.tx_fragmented > 0, "{sum:?}");
    }
}
