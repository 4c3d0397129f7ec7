//! The stack on ports that claim what a NIC's queue would: a queue of a
//! port whose flow spreading is known (the source ports `connect`
//! picks), and a device that verifies checksums (the verdicts the stack
//! takes from each mbuf); and ICMP errors forged as a router would send
//! them.

use super::Stack;
use super::tests::{addr, config, ipv4_frame, pair, syn_frame};
use crate::net::memory::MemoryPort;
use crate::net::{MbufBatch, Port};
use crate::wire::EthernetAddress;
use std::net::SocketAddrV4;

/// A memory port that claims what a NIC's queue would: another queue
/// number and other capabilities.
struct Claiming {
    inner: MemoryPort,
    caps: crate::net::Capabilities,
    queue: u16,
}

impl Claiming {
    /// Queue 2 of a four-queue port spread by `steering`.
    fn steered(inner: MemoryPort, steering: crate::wire::rss::Steering) -> Self {
        let mut caps = inner.capabilities().clone();
        caps.queues = 4;
        caps.rss = true;
        caps.steering = Some(steering);
        Claiming {
            inner,
            caps,
            queue: 2,
        }
    }

    /// A port whose device verifies checksums on receive.
    fn rx_checksum(inner: MemoryPort) -> Self {
        let mut caps = inner.capabilities().clone();
        caps.rx_checksum = true;
        Claiming {
            inner,
            caps,
            queue: 0,
        }
    }
}

impl Port for Claiming {
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        self.inner.rx_burst(out)
    }
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        self.inner.tx_burst(pkts)
    }
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        self.inner.alloc_burst(n, out)
    }
    fn capabilities(&self) -> &crate::net::Capabilities {
        &self.caps
    }
    fn link(&self) -> crate::net::LinkStatus {
        self.inner.link()
    }
    fn stats(&self) -> crate::net::QueueStats {
        self.inner.stats()
    }
    fn id(&self) -> (crate::net::PortId, crate::net::QueueId) {
        (self.inner.id().0, crate::net::QueueId(self.queue))
    }
}

#[test]
fn connect_picks_source_ports_whose_replies_reach_its_queue() {
    use crate::wire::rss::{MICROSOFT_RSS_KEY, Steering};
    let (a, _b, _pa, _pb) = pair("steered");
    let reta: Vec<u16> = (0..128).map(|i| i % 4).collect();
    let steering = Steering::toeplitz(&MICROSOFT_RSS_KEY, reta).expect("valid");
    let mut cfg = config(1);
    cfg.neighbours
        .push((addr(2), EthernetAddress([2, 0, 0, 0, 0, 2])));
    let mut s = Stack::new(Claiming::steered(a, steering.clone()), cfg).expect("stack");
    let peer = SocketAddrV4::new(addr(2), 80);
    let mut ports = std::collections::HashSet::new();
    for _ in 0..200 {
        let c = s.connect(peer).expect("connect");
        let local = s.conn_stats(c).expect("open").local;
        assert_eq!(
            steering.queue_v4(addr(2), addr(1), 80, local.port()),
            2,
            "{local}: the SYN-ACK would reach another queue"
        );
        assert!(ports.insert(local.port()), "{local} used twice");
    }
    // A table that never names queue 2: no port can do, and connect says so.
    let (a, _b, _pa, _pb) = pair("steered-away");
    let away = Steering::toeplitz(&MICROSOFT_RSS_KEY, vec![0, 1, 3, 0]).expect("valid");
    let mut cfg = config(1);
    cfg.ephemeral_ports = (40_000, 40_999);
    let mut s = Stack::new(Claiming::steered(a, away), cfg).expect("stack");
    let e = s.connect(peer).expect_err("no port maps to queue 2");
    assert!(e.to_string().contains("reach queue 2"), "{e}");
}

/// On a port whose device verifies checksums, the stack takes the
/// device's word from each mbuf's flags: a frame it found bad is dropped
/// and counted, one it found good is not checked again, and one it did not
/// look at is checked in software.
#[test]
fn a_devices_checksum_verdict_is_taken_from_the_mbuf() {
    use hugepages::mbuf::offload as o;
    let (pa, mut raw, _, _) = pair("stk-rxcsum");
    let mut s = Stack::new(Claiming::rx_checksum(pa), config(1)).expect("stack");
    s.listen(80).expect("listen");
    let mac = s.mac();
    // A SYN with its TCP checksum spoilt (offset 34 + 16), or not.
    let mut syn = |port: u16, spoil: bool, flags: u64| {
        let mut m = syn_frame(&mut raw, mac, port);
        if spoil {
            m.data_mut()[50] ^= 0x5a;
        }
        m.set_ol_flags(flags);
        let mut out = MbufBatch::new();
        let _ = out.push(m);
        assert_eq!(raw.tx_burst(&mut out), 1);
        s.poll();
        let mut got = MbufBatch::new();
        raw.rx_burst(&mut got);
        let replies = got.drain().count();
        (replies, s.stats())
    };
    // Right, but the device says the TCP checksum is bad: dropped.
    let (replies, st) = syn(1000, false, o::RX_IP_CKSUM_GOOD | o::RX_L4_CKSUM_BAD);
    assert_eq!((replies, st.rx_bad_checksum, st.tcp_rx), (0, 1, 0));
    // Wrong, but the device vouched for it: not checked again, answered.
    let (replies, st) = syn(1001, true, o::RX_IP_CKSUM_GOOD | o::RX_L4_CKSUM_GOOD);
    assert_eq!((replies, st.rx_bad_checksum, st.tcp_rx), (1, 1, 1));
    assert_eq!(st.rx_checksum_offloaded, 1);
    // Wrong, and the device did not look (no flags): checked here.
    let (replies, st) = syn(1002, true, 0);
    assert_eq!((replies, st.rx_bad_checksum, st.tcp_rx), (0, 2, 1));
    // Right, not looked at: checked here and answered.
    let (replies, st) = syn(1003, false, 0);
    assert_eq!((replies, st.rx_bad_checksum, st.tcp_rx), (1, 2, 2));
    assert_eq!(st.rx_checksum_offloaded, 1);
    // The field is not the sum but the device verified the data (NONE,
    // as virtual devices report): taken, not checked here.
    let (replies, st) = syn(1004, true, o::RX_IP_CKSUM_NONE | o::RX_L4_CKSUM_NONE);
    assert_eq!((replies, st.rx_bad_checksum, st.tcp_rx), (1, 2, 3));
    assert_eq!(st.rx_checksum_offloaded, 2);
}

/// An ICMP message from a router (10.0.0.9): destination unreachable
/// (`code`) about a segment from `local` to `peer`, quoting its header
/// with sequence number `seq`.
fn unreachable_frame(
    raw: &mut MemoryPort,
    to: EthernetAddress,
    code: u8,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    seq: u32,
) -> hugepages::mbuf::Mbuf {
    use crate::wire::{IpProtocol, checksum};
    // The quoted header: IPv4 from us to the peer, then TCP's first 8
    // bytes (ports and sequence number).
    let mut quote = [0u8; 28];
    quote[0] = 0x45;
    quote[2..4].copy_from_slice(&60u16.to_be_bytes());
    quote[8] = 64;
    quote[9] = 6;
    quote[12..16].copy_from_slice(&local.ip().octets());
    quote[16..20].copy_from_slice(&peer.ip().octets());
    quote[20..22].copy_from_slice(&local.port().to_be_bytes());
    quote[22..24].copy_from_slice(&peer.port().to_be_bytes());
    quote[24..28].copy_from_slice(&seq.to_be_bytes());
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quote);
    let sum = !checksum::data(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(raw, to, addr(9), IpProtocol::ICMP, icmp.len(), |out| {
        out.copy_from_slice(&icmp);
    })
}

/// A router's destination unreachable about a connection still opening
/// ends it with the code's error, but only if it quotes the SYN's
/// sequence number; one about an established connection changes nothing.
#[test]
fn destination_unreachable_ends_a_connect_that_it_names() {
    use crate::transport::{CloseReason, Event};
    let (pa, mut raw, _, _) = pair("stk-icmp");
    let mut cfg = config(1);
    cfg.neighbours
        .push((addr(2), EthernetAddress([2, 0, 0, 0, 0, 2])));
    let mut s = Stack::new(pa, cfg).expect("stack");
    let mac = s.mac();
    let peer = SocketAddrV4::new(addr(2), 80);
    let c = s.connect(peer).expect("connect");
    s.poll();
    // The SYN as sent: its source port and sequence number.
    let mut got = MbufBatch::new();
    raw.rx_burst(&mut got);
    let syn = got.drain().next().expect("a SYN");
    let d = syn.data();
    let local = SocketAddrV4::new(addr(1), u16::from_be_bytes([d[34], d[35]]));
    let iss = u32::from_be_bytes([d[38], d[39], d[40], d[41]]);
    drop(syn);
    let send = |raw: &mut MemoryPort, m| {
        let mut b = MbufBatch::new();
        let _ = b.push(m);
        assert_eq!(raw.tx_burst(&mut b), 1);
    };
    // A forger who does not know the sequence number: ignored.
    let forged = unreachable_frame(&mut raw, mac, 3, local, peer, iss.wrapping_add(7));
    send(&mut raw, forged);
    s.poll();
    assert_eq!(s.stats().icmp_unreachable_received, 1);
    assert!(s.conn_stats(c).is_ok(), "still opening");
    // The real one: port unreachable, ECONNREFUSED.
    let real = unreachable_frame(&mut raw, mac, 3, local, peer, iss);
    send(&mut raw, real);
    s.poll();
    let mut ended = None;
    while let Some(ev) = s.next_event() {
        if let Event::Closed(x, why) = ev {
            assert_eq!(x, c);
            ended = Some(why);
        }
    }
    assert_eq!(ended, Some(CloseReason::ConnectFailed(libc::ECONNREFUSED)));
    assert_eq!(s.stats().icmp_unreachable_received, 2);
}
