//! The stack with IPv4 fragments: UDP datagrams longer than the MTU both
//! ways over a link that reorders, an echo request in fragments sent
//! backwards and answered in fragments, a SYN in two fragments, and an
//! overlapping fragment refused.

use super::tests::{addr, config, ip_frame, pair, pattern, syn_repr};
use super::{Stack, frag};
use crate::net::fault::{FaultInjector, Faults};
use crate::net::memory::MemoryPort;
use crate::net::{MbufBatch, Port};
use crate::wire::{
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, IpPair, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpFlags, TcpPacket, checksum,
};
use hugepages::mbuf::Mbuf;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A frame carrying `chunk` of datagram `ident` from `src` at `offset`.
fn fragment(
    raw: &mut MemoryPort,
    to: EthernetAddress,
    src: Ipv4Addr,
    protocol: IpProtocol,
    (ident, offset, more): Place,
    chunk: &[u8],
) -> Mbuf {
    let ip = frag::fragment_repr(src, addr(1), protocol, (ident, offset, more), chunk.len());
    ip_frame(raw, to, ip, |out| out.copy_from_slice(chunk))
}

/// A fragment's place: (identification, offset, more fragments).
type Place = (u16, usize, bool);

/// `datagram` cut into fragments of `size` bytes (the last shorter), as
/// their places and chunks.
fn cut(datagram: &[u8], size: usize, ident: u16) -> Vec<(Place, &[u8])> {
    datagram
        .chunks(size)
        .enumerate()
        .map(|(i, c)| {
            let at = i * size;
            ((ident, at, at + c.len() < datagram.len()), c)
        })
        .collect()
}

/// The frames the stack sent to `raw`, parsed: (header, payload).
fn sent(raw: &mut MemoryPort) -> Vec<(Ipv4Repr, Vec<u8>)> {
    let mut batch = MbufBatch::new();
    let mut out = Vec::new();
    while raw.rx_burst(&mut batch) > 0 {
        for m in batch.drain() {
            let frame = EthernetFrame::new_checked(m.data()).expect("frame");
            if frame.ethertype() != EtherType::IPV4 {
                continue;
            }
            let ip = Ipv4Packet::new_checked(frame.payload()).expect("ip");
            let repr = Ipv4Repr::parse(&ip, ChecksumMode::Software).expect("good header");
            out.push((repr, ip.payload().to_vec()));
        }
    }
    out
}

#[test]
fn udp_datagrams_past_the_mtu_cross_in_fragments_over_a_reordering_link() {
    let (pa, pb, pool_a, pool_b) = pair("stk-frag-udp");
    // A quarter of the frames held back behind the next: fragments
    // arrive out of order, none lost.
    let reorder = |seed| Faults {
        reorder: 250,
        seed,
        ..Faults::default()
    };
    let mut a = Stack::new(FaultInjector::new(pa, reorder(1)), config(1)).expect("a");
    let mut b = Stack::new(FaultInjector::new(pb, reorder(2)), config(2)).expect("b");
    let (ua, ub) = (
        a.bind_udp(5000).expect("bind"),
        b.bind_udp(6000).expect("bind"),
    );
    let to_b = SocketAddrV4::new(addr(2), 6000);
    let sizes = [1472, 1473, 3000, 8000, 20_000, 65_507];
    for (i, &n) in sizes.iter().enumerate() {
        assert!(a.send_to(ua, to_b, &pattern(i as u64, n)).expect("send"));
    }
    assert!(
        !a.send_to(ua, to_b, &[0; 65_508]).expect("send"),
        "longer than an IPv4 datagram holds"
    );
    let (mut got, mut echoed) = (Vec::new(), Vec::new());
    for _ in 0..2000 {
        a.poll();
        b.poll();
        while b.next_event().is_some() {}
        while let Some((from, data)) = b.peek_datagram(ub).expect("open") {
            let data = data.to_vec();
            b.consume_datagram(ub).expect("open");
            assert!(b.send_to(ub, from, &data).expect("echo"));
            got.push(data);
        }
        while a.next_event().is_some() {}
        while let Some((_, data)) = a.peek_datagram(ua).expect("open") {
            echoed.push(data.to_vec());
            a.consume_datagram(ua).expect("open");
        }
        if echoed.len() == sizes.len() {
            break;
        }
    }
    // Reordering may swap whole datagrams; each arrives whole, once.
    got.sort_by_key(Vec::len);
    echoed.sort_by_key(Vec::len);
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(got[i], pattern(i as u64, n), "datagram {i} at b");
        assert_eq!(echoed[i], pattern(i as u64, n), "datagram {i} back at a");
    }
    let (sa, sb) = (a.stats(), b.stats());
    // 1472 bytes fit one frame; the other five go in fragments.
    assert_eq!((sa.tx_fragmented, sb.tx_fragmented), (5, 5), "{sa:?}");
    assert_eq!((sa.reassembled, sb.reassembled), (5, 5), "{sb:?}");
    assert_eq!(sb.reassembly_dropped + sb.reassembly_timeouts, 0);
    // 2 + 3 + 6 + 14 + 45 fragments each way.
    assert_eq!((sa.rx_fragments, sb.rx_fragments), (70, 70));
    assert_eq!(sa.udp_tx_dropped, 1);
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
}

#[test]
fn an_echo_request_in_backward_fragments_is_answered_in_fragments() {
    let (pa, mut raw, pool_a, pool_raw) = pair("stk-frag-echo");
    let mut s = Stack::new(pa, config(1)).expect("stack");
    let mac = s.mac();
    let mut request = pattern(7, 3000);
    request[..8].copy_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    let sum = !checksum::data(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut frames = MbufBatch::new();
    for (at, chunk) in cut(&request, 1480, 77).into_iter().rev() {
        let m = fragment(&mut raw, mac, addr(9), IpProtocol::ICMP, at, chunk);
        frames.push(m).expect("room");
    }
    assert_eq!(raw.tx_burst(&mut frames), 3);
    s.poll();
    // An ARP-free reply: it goes back to the request's MAC.
    let replies = sent(&mut raw);
    assert_eq!(replies.len(), 3, "three fragments");
    let ident = replies[0].0.ident;
    let mut whole = vec![0u8; 3000];
    for (i, (ip, payload)) in replies.iter().enumerate() {
        assert_eq!(ip.protocol, IpProtocol::ICMP);
        assert_eq!(ip.dst_addr, addr(9));
        assert_eq!(ip.ident, ident);
        assert!(!ip.dont_frag);
        assert_eq!(usize::from(ip.frag_offset), i * 1480);
        assert_eq!(ip.more_frags, i < 2);
        whole[i * 1480..i * 1480 + payload.len()].copy_from_slice(payload);
    }
    assert_eq!(whole[0], 0, "an echo reply");
    assert_eq!(
        checksum::data(&whole),
        0xffff,
        "its checksum over the whole"
    );
    assert_eq!(whole[4..], request[4..]);
    let st = s.stats();
    assert_eq!((st.rx_fragments, st.reassembled, st.icmp_echo), (3, 1, 1));
    assert_eq!(st.tx_fragmented, 1);

    // A fragment overlapping one held drops the datagram: no reply.
    let parts = cut(&request, 1480, 78);
    let (at, chunk) = parts[0];
    frames
        .push(fragment(
            &mut raw,
            mac,
            addr(9),
            IpProtocol::ICMP,
            at,
            chunk,
        ))
        .expect("room");
    let overlap = (78, 1472, true);
    let m = fragment(
        &mut raw,
        mac,
        addr(9),
        IpProtocol::ICMP,
        overlap,
        &request[1472..2952],
    );
    frames.push(m).expect("room");
    for (at, chunk) in &parts[1..] {
        let m = fragment(&mut raw, mac, addr(9), IpProtocol::ICMP, *at, chunk);
        frames.push(m).expect("room");
    }
    assert_eq!(raw.tx_burst(&mut frames), 4);
    s.poll();
    assert!(sent(&mut raw).is_empty(), "nothing answered");
    let st = s.stats();
    assert_eq!(
        (st.reassembled, st.reassembly_dropped, st.icmp_echo),
        (1, 1, 1)
    );
    drop(s);
    assert_eq!((pool_a.in_use(), pool_raw.in_use()), (0, 0));
}

#[test]
fn a_syn_in_two_fragments_is_answered() {
    let (pa, mut raw, _, _) = pair("stk-frag-syn");
    let mut cfg = config(1);
    cfg.reassembly.timeout = std::time::Duration::from_millis(20);
    let mut s = Stack::new(pa, cfg).expect("stack");
    s.listen(80).expect("listen");
    let mac = s.mac();
    let tcp = syn_repr(4000);
    let addrs = IpPair::V4 {
        src: addr(9),
        dst: addr(1),
    };
    let mut segment = vec![0u8; tcp.buffer_len()];
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &addrs,
        ChecksumMode::Software,
    )
    .expect("tcp");
    let mut frames = MbufBatch::new();
    for (at, chunk) in cut(&segment, 16, 5) {
        let m = fragment(&mut raw, mac, addr(9), IpProtocol::TCP, at, chunk);
        frames.push(m).expect("room");
    }
    assert_eq!(raw.tx_burst(&mut frames), 2);
    s.poll();
    let replies = sent(&mut raw);
    assert_eq!(replies.len(), 1);
    let (ip, payload) = &replies[0];
    assert!(ip.dont_frag && !ip.more_frags);
    let reply = TcpPacket::new_checked(&payload[..]).expect("tcp");
    assert_eq!(reply.flags(), TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(reply.ack_number(), 1001);
    assert_eq!(s.stats().reassembled, 1);
    // One fragment of a datagram never completed, left to the 20 ms
    // timeout: the ICMP messages the stack sent then.
    let mut abandon = |s: &mut Stack<MemoryPort>, (at, chunk): (Place, &[u8])| {
        let m = fragment(&mut raw, mac, addr(9), IpProtocol::TCP, at, chunk);
        frames.push(m).expect("room");
        assert_eq!(raw.tx_burst(&mut frames), 1);
        s.poll();
        assert_eq!(s.frags.pending(), 1);
        std::thread::sleep(std::time::Duration::from_millis(30));
        s.poll();
        assert_eq!(s.frags.pending(), 0);
        // (The SYN-ACK, unanswered, may have gone again meanwhile.)
        sent(&mut raw)
            .into_iter()
            .filter(|(ip, _)| ip.protocol == IpProtocol::ICMP)
            .collect::<Vec<_>>()
    };
    // The first fragment: its sender is told (time exceeded, quoting it).
    let told = abandon(&mut s, cut(&segment, 16, 6)[0]);
    let st = s.stats();
    assert_eq!((st.reassembly_timeouts, st.icmp_time_exceeded_sent), (1, 1));
    assert_eq!(told.len(), 1);
    let (ip, icmp) = &told[0];
    assert_eq!((ip.dst_addr, ip.protocol), (addr(9), IpProtocol::ICMP));
    assert_eq!(&icmp[..2], &[11, 1], "fragment reassembly time exceeded");
    assert_eq!(checksum::data(icmp), 0xffff, "a good checksum");
    let quoted = Ipv4Packet::new_unchecked(&icmp[8..28]);
    assert_eq!((quoted.ident(), quoted.more_frags()), (6, true));
    assert_eq!(&icmp[28..], &segment[..8], "and the first eight bytes");
    // A lone later fragment (the first never came): dropped, no message.
    let told = abandon(&mut s, cut(&segment, 16, 7)[1]);
    let st = s.stats();
    assert_eq!((st.reassembly_timeouts, st.icmp_time_exceeded_sent), (2, 1));
    assert!(told.is_empty());
}
