//! The stack against itself over memory ports: handshakes, transfers both
//! ways checked byte for byte, loss, reordering and duplication on the
//! link, many connections, resets, ARP and ICMP, and every mbuf back in
//! its pool at the end.

use super::{Stack, StackConfig, TcpState};
use crate::net::fault::{FaultInjector, Faults};
use crate::net::memory::MemoryPort;
use crate::net::{MbufBatch, Port, PortConfig};
use crate::transport::{CloseReason, ConnId, Event};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, ChecksumMode, EtherType, EthernetAddress, EthernetFrame,
    EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, checksum,
};
use hugepages::mbuf::MbufPool;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// 3% loss, 1% duplication, 2% reordering on the way out, 1% loss on
/// the way in.
fn faults(seed: u64) -> Faults {
    Faults {
        loss: 30,
        duplicate: 10,
        reorder: 20,
        rx_loss: 10,
        seed,
    }
}

pub(super) fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

pub(super) fn config(last: u8) -> StackConfig {
    let mut c = StackConfig::new(format!("10.0.0.{last}/24").parse().expect("cidr"));
    // Short timers so that loss recovers within a test's time.
    c.time_wait = Duration::from_millis(20);
    c.fin_timeout = Duration::from_millis(500);
    c.delayed_ack = Duration::from_millis(2);
    c.rto_min = Duration::from_millis(5);
    c.rto_initial = Duration::from_millis(20);
    c.rto_max = Duration::from_millis(200);
    c.retries = 30;
    // SACK both ways (the default): every ACK with a hole behind it
    // round-trips through the wire code, and each sender's recovery uses
    // the blocks.
    c
}

pub(super) fn pair(name: &str) -> (MemoryPort, MemoryPort, MbufPool, MbufPool) {
    pair_with(PortConfig::new(name))
}

fn pair_with(mut cfg: PortConfig) -> (MemoryPort, MemoryPort, MbufPool, MbufPool) {
    cfg.mbufs = 8192;
    cfg.mbuf_cache = 0;
    let (mut a, mut b) = MemoryPort::pair(&cfg).expect("memory pair");
    let (a, b) = (a.remove(0), b.remove(0));
    let (pa, pb) = (a.pool().clone(), b.pool().clone());
    (a, b, pa, pb)
}

/// `len` pseudo-random bytes from `seed`.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    // splitmix64, a byte from the top of each word: every seed its own
    // stream (a xorshift seeded with `seed | 1` gave 0 and 1 the same),
    // and no pattern in the low bits to starve a fuzz body's branches.
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 56) as u8
        })
        .collect()
}

/// One side of a transfer: sends `send`, keeps what arrives, shuts down
/// its sending side when done, closes once the peer has too.
#[derive(Default)]
struct Side {
    send: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    peer_closed: bool,
    closed: Option<CloseReason>,
    shut: bool,
}

fn drive<P: Port>(
    stack: &mut Stack<P>,
    sides: &mut HashMap<ConnId, Side>,
    echo_new: Option<&[u8]>,
) {
    stack.poll();
    while let Some(ev) = stack.next_event() {
        match ev {
            Event::Accepted { conn, .. } => {
                let side = Side {
                    send: echo_new.map(<[u8]>::to_vec).unwrap_or_default(),
                    ..Side::default()
                };
                sides.insert(conn, side);
            }
            Event::Connected(_) | Event::Writable(_) => {}
            Event::Readable(c) => {
                let data = stack.peek(c).expect("open").to_vec();
                stack.consume(c, data.len()).expect("open");
                sides.entry(c).or_default().got.extend_from_slice(&data);
            }
            Event::PeerClosed(c) => sides.entry(c).or_default().peer_closed = true,
            Event::Closed(c, why) => sides.entry(c).or_default().closed = Some(why),
            Event::Datagrams(_) => {}
        }
    }
    for (&c, side) in sides.iter_mut() {
        if side.closed.is_some() {
            continue;
        }
        if side.sent < side.send.len() {
            let n = stack.write(c, &side.send[side.sent..]).expect("open");
            side.sent += n;
        }
        if side.sent == side.send.len() && !side.shut {
            if matches!(stack.conn_stats(c).map(|s| s.state), Ok(TcpState::SynSent)) {
                continue;
            }
            side.shut = true;
            stack.shutdown(c).expect("open");
        }
        if side.shut && side.peer_closed {
            let _ = stack.close(c);
        }
    }
    stack.flush();
}

/// Runs a transfer of `a_sends` from a client on `a` to a server on `b`
/// that answers with `b_sends`; returns the client's and the server's
/// sides once both have closed.
fn transfer<PA: Port, PB: Port>(
    a: &mut Stack<PA>,
    b: &mut Stack<PB>,
    conns: usize,
    a_sends: &[u8],
    b_sends: &[u8],
    passes: usize,
) -> (HashMap<ConnId, Side>, HashMap<ConnId, Side>) {
    let l = b.listen(80).expect("listen");
    let _ = l;
    let mut client = HashMap::new();
    let mut server = HashMap::new();
    for _ in 0..conns {
        let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
        client.insert(
            c,
            Side {
                send: a_sends.to_vec(),
                ..Side::default()
            },
        );
    }
    for _ in 0..passes {
        drive(a, &mut client, None);
        drive(b, &mut server, Some(b_sends));
        let done = |m: &HashMap<ConnId, Side>| m.values().all(|s| s.closed.is_some());
        if done(&client) && server.len() == conns && done(&server) {
            break;
        }
        std::thread::yield_now();
    }
    (client, server)
}

/// Polls both stacks until their tables are empty (TIME-WAIT over).
fn settle<PA: Port, PB: Port>(a: &mut Stack<PA>, b: &mut Stack<PB>) {
    for _ in 0..200_000 {
        a.poll();
        b.poll();
        while a.next_event().is_some() {}
        while b.next_event().is_some() {}
        if a.stats().connections == 0 && b.stats().connections == 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_transfer_both_ways_arrives_byte_for_byte_and_every_mbuf_returns() {
    let (pa, pb, pool_a, pool_b) = pair("stk-xfer");
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    let up = pattern(1, 3 << 20);
    let down = pattern(2, 1 << 20);
    let (client, server) = transfer(&mut a, &mut b, 1, &up, &down, 2_000_000);
    let (c, s) = (
        client.values().next().expect("client"),
        server.values().next().expect("server"),
    );
    assert_eq!(s.got.len(), up.len());
    assert!(s.got == up, "the server's bytes differ");
    assert!(
        c.got == down,
        "the client's bytes differ ({} of {})",
        c.got.len(),
        down.len()
    );
    assert_eq!(c.closed, Some(CloseReason::Local));
    assert_eq!(s.closed, Some(CloseReason::Local));
    settle(&mut a, &mut b);
    assert_eq!(a.stats().connections, 0, "{:?}", a.stats());
    assert_eq!(b.stats().connections, 0, "{:?}", b.stats());
    assert!(a.stats().arp_requests >= 1);
    assert_eq!(b.stats().accepted, 1);
    assert_eq!(a.stats().connected, 1);
    drop((a, b));
    assert_eq!(pool_a.in_use(), 0);
    assert_eq!(pool_b.in_use(), 0);
}

#[test]
fn loss_reordering_and_duplication_are_recovered_from() {
    // Several loss patterns: which frames a seed drops decides which of
    // the recovery paths (fast retransmit, partial ACKs, timeouts, a lost
    // SYN, FIN or ARP) a run goes through.
    let mut sack_retransmits = 0;
    for (i, (sa, sb)) in [(7, 11), (3, 5), (13, 17), (21, 23), (99, 101)]
        .into_iter()
        .enumerate()
    {
        sack_retransmits += lossy_transfer(&format!("stk-lossy{i}"), sa, sb);
    }
    // Some recoveries began with a scoreboard and sent holes it showed.
    assert!(sack_retransmits > 0);
}

/// Transfers both ways over lossy links; the holes sent again from the
/// peers' SACK blocks.
fn lossy_transfer(name: &str, seed_a: u64, seed_b: u64) -> u64 {
    let (pa, pb, pool_a, pool_b) = pair(name);
    let mut a = Stack::new(FaultInjector::new(pa, faults(seed_a)), config(1)).expect("stack a");
    let mut b = Stack::new(FaultInjector::new(pb, faults(seed_b)), config(2)).expect("stack b");
    let up = pattern(seed_a, 512 << 10);
    let down = pattern(seed_b, 256 << 10);
    let (client, server) = transfer(&mut a, &mut b, 4, &up, &down, 4_000_000);
    assert_eq!(server.len(), 4, "seeds {seed_a}/{seed_b}");
    for s in server.values() {
        assert!(
            s.got == up,
            "seeds {seed_a}/{seed_b}: server got {} of {} bytes ({:?}); client {:?}; server {:?}",
            s.got.len(),
            up.len(),
            s.closed,
            a.stats(),
            b.stats()
        );
        assert_eq!(s.closed, Some(CloseReason::Local));
    }
    for c in client.values() {
        assert!(
            c.got == down,
            "seeds {seed_a}/{seed_b}: client got {} of {} bytes",
            c.got.len(),
            down.len()
        );
        assert_eq!(c.closed, Some(CloseReason::Local));
    }
    settle(&mut a, &mut b);
    let (sa, sb) = (a.stats(), b.stats());
    let retransmits = sa.tcp.fast_retransmits
        + sa.tcp.timeout_retransmits
        + sb.tcp.fast_retransmits
        + sb.tcp.timeout_retransmits;
    assert!(retransmits > 0, "{sa:?} {sb:?}");
    assert!(sa.tcp.out_of_order + sb.tcp.out_of_order > 0);
    // Both offered SACK-permitted: what arrived beyond a hole was told.
    assert!(sa.tcp.sack_acks + sb.tcp.sack_acks > 0, "{sa:?} {sb:?}");
    assert_eq!((sa.connections, sb.connections), (0, 0), "{sa:?} {sb:?}");
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
    sa.tcp.sack_retransmits + sb.tcp.sack_retransmits
}

#[test]
fn a_thousand_connections_open_talk_and_close_and_leave_nothing_behind() {
    let (pa, pb, pool_a, pool_b) = pair("stk-many");
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    let (client, server) = transfer(&mut a, &mut b, 1000, b"ping", b"pong", 1_000_000);
    assert_eq!(server.len(), 1000);
    assert!(
        client
            .values()
            .all(|c| c.got == b"pong" && c.closed == Some(CloseReason::Local))
    );
    assert!(
        server
            .values()
            .all(|s| s.got == b"ping" && s.closed == Some(CloseReason::Local))
    );
    settle(&mut a, &mut b);
    assert_eq!((a.stats().connections, b.stats().connections), (0, 0));
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
}

#[test]
fn a_connect_to_a_closed_port_is_refused_and_a_reset_ends_a_connection() {
    let (pa, pb, _, _) = pair("stk-rst");
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    let c = a.connect(SocketAddrV4::new(addr(2), 81)).expect("connect");
    let mut closed = None;
    for _ in 0..100_000 {
        a.poll();
        b.poll();
        while let Some(ev) = a.next_event() {
            if let Event::Closed(id, why) = ev {
                assert_eq!(id, c);
                closed = Some(why);
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(
        closed,
        Some(CloseReason::ConnectFailed(libc::ECONNREFUSED)),
        "{:?} {:?}",
        a.stats(),
        b.stats()
    );
    assert!(b.stats().tcp_no_socket >= 1);
    assert!(a.peek(c).is_err(), "a closed id is refused");

    // An abort resets the peer.
    b.listen(80).expect("listen");
    let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
    let mut server = None;
    let mut reset = None;
    for _ in 0..100_000 {
        a.poll();
        b.poll();
        while let Some(ev) = a.next_event() {
            if ev == Event::Connected(c) {
                a.abort(c).expect("abort");
            }
        }
        while let Some(ev) = b.next_event() {
            match ev {
                Event::Accepted { conn, .. } => server = Some(conn),
                Event::Closed(id, why) if Some(id) == server => reset = Some(why),
                _ => {}
            }
        }
        if reset.is_some() {
            break;
        }
    }
    assert_eq!(reset, Some(CloseReason::Reset));
    assert_eq!(b.stats().reset, 1);
}

#[test]
fn arp_requests_and_pings_are_answered() {
    let (pa, mut raw, _, _) = pair("stk-icmp");
    let mut s = Stack::new(pa, config(1)).expect("stack");
    let ours = s.mac();
    let theirs = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);
    let mut batch = MbufBatch::new();
    // An ARP request for our address.
    raw.alloc_burst(2, &mut batch);
    let mut frames = Vec::new();
    {
        let mut m = batch.pop().expect("mbuf");
        let buf = m.append(60).expect("room");
        buf.fill(0);
        EthernetRepr {
            src_addr: theirs,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EtherType::ARP,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
        .expect("eth");
        ArpRepr {
            operation: ArpOperation::REQUEST,
            sender_hardware_addr: theirs,
            sender_protocol_addr: addr(9),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: addr(1),
        }
        .emit(&mut ArpPacket::new_unchecked(&mut buf[14..]))
        .expect("arp");
        frames.push(m);
    }
    {
        // An echo request with 32 bytes of data.
        let mut m = batch.pop().expect("mbuf");
        let icmp_len = 8 + 32;
        let buf = m.append(34 + icmp_len).expect("room");
        EthernetRepr {
            src_addr: theirs,
            dst_addr: ours,
            ethertype: EtherType::IPV4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
        .expect("eth");
        Ipv4Repr {
            src_addr: addr(9),
            dst_addr: addr(1),
            protocol: IpProtocol::ICMP,
            payload_len: icmp_len,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[14..]),
            ChecksumMode::Software,
        )
        .expect("ip");
        let icmp = &mut buf[34..];
        icmp[..8].copy_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 7]);
        for (i, b) in icmp[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let sum = !checksum::data(icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        frames.push(m);
    }
    let mut out = MbufBatch::new();
    for m in frames {
        let _ = out.push(m);
    }
    assert_eq!(raw.tx_burst(&mut out), 2);
    s.poll();
    let mut got = MbufBatch::new();
    let mut replies = Vec::new();
    for _ in 0..1000 {
        raw.rx_burst(&mut got);
        for m in got.drain() {
            replies.push(m.data().to_vec());
        }
        if replies.len() >= 2 {
            break;
        }
        s.poll();
    }
    assert_eq!(replies.len(), 2, "{:?}", s.stats());
    let arp =
        ArpRepr::parse(&ArpPacket::new_checked(&replies[0][14..]).expect("arp")).expect("arp");
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(arp.sender_hardware_addr, ours);
    assert_eq!(arp.sender_protocol_addr, addr(1));
    let ip = Ipv4Packet::new_checked(&replies[1][14..]).expect("ip");
    assert_eq!(ip.dst_addr(), addr(9));
    let icmp = ip.payload();
    assert_eq!(icmp[0], 0, "an echo reply");
    assert_eq!(&icmp[4..8], &[0x12, 0x34, 0, 7]);
    assert_eq!(checksum::data(icmp), 0xffff);
    assert_eq!(s.stats().icmp_echo, 1);
}

#[test]
fn random_segment_sequences_keep_a_connection_s_invariants() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let cases = if cfg!(miri) { 20 } else { 3000 };
    for case in 0..cases {
        let len = 16 + (case % 400);
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Err(e) = super::tcb::fuzz_drive(&data) {
            panic!("case {case}: {e}\ninput: {data:?}");
        }
    }
}

#[test]
fn a_transport_over_a_port_speaks_the_kernel_engines_api() {
    use crate::transport::{Config, EngineKind, Transport};
    let (pa, pb, _, pool_b) = pair("stk-transport");
    let mut client = Stack::new(pa, config(1)).expect("stack");
    let mut server =
        Transport::over_port(Box::new(pb), config(2), Config::default()).expect("transport");
    assert_eq!(server.engine(), EngineKind::Stack);
    assert!(
        server
            .bind_udp("10.0.0.9:53".parse().expect("addr"))
            .is_err()
    );
    let u = server
        .bind_udp("0.0.0.0:53".parse().expect("addr"))
        .expect("bind");
    assert_eq!(
        server.udp_addr(u).expect("open"),
        "10.0.0.2:53".parse().expect("addr")
    );
    assert!(server.listen("10.0.0.9:80".parse().expect("addr")).is_err());
    let l = server
        .listen("0.0.0.0:80".parse().expect("addr"))
        .expect("listen");
    assert_eq!(
        server.listener_addr(l).expect("addr"),
        "10.0.0.2:80".parse().expect("addr")
    );
    let c = client
        .connect(SocketAddrV4::new(addr(2), 80))
        .expect("connect");
    let mut echoed = Vec::new();
    let mut sent = false;
    let mut server_closed = false;
    for _ in 0..200_000 {
        client.poll();
        while let Some(ev) = client.next_event() {
            match ev {
                Event::Connected(_) => {
                    client.write(c, b"hello, stack").expect("write");
                    sent = true;
                }
                Event::Readable(_) => {
                    let n = client.peek(c).expect("open").len();
                    echoed.extend_from_slice(client.peek(c).expect("open"));
                    client.consume(c, n).expect("open");
                }
                Event::PeerClosed(_) => client.close(c).expect("open"),
                _ => {}
            }
        }
        server.poll().expect("poll");
        while let Some(ev) = server.next_event() {
            match ev {
                Event::Readable(s) => {
                    let mut buf = [0u8; 64];
                    let n = server.read(s, &mut buf).expect("read");
                    assert!(server.send_room(s).expect("open") >= n);
                    server.write(s, &buf[..n]).expect("write");
                    assert!(!server.peer_closed(s).expect("open"));
                    let cs = server.conn_stats(s).expect("open");
                    assert_eq!(cs.peer.ip(), std::net::IpAddr::V4(addr(1)));
                    assert_eq!(cs.local, "10.0.0.2:80".parse().expect("addr"));

                    server.close(s).expect("close");
                    assert!(server.peek(s).is_err(), "closed for the application");
                }
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local);
                    server_closed = true;
                }
                _ => {}
            }
        }
        if server_closed && echoed == b"hello, stack" {
            break;
        }
    }
    assert!(sent);
    assert_eq!(echoed, b"hello, stack");
    assert!(server_closed);
    let st = server.stats();
    assert_eq!((st.accepted, st.closed), (1, 1), "{st:?}");
    assert_eq!(st.rx_bytes, 12);
    drop(server);
    // The server's last frames are still on the link: the client takes
    // them (and frees them into the server's pool).
    for _ in 0..10 {
        client.poll();
    }
    assert_eq!(pool_b.in_use(), 0);
}

#[test]
fn keepalive_probes_an_idle_peer_and_gives_up_on_a_silent_one() {
    use super::KeepAlive;
    let (pa, pb, _, _) = pair("stk-keepalive");
    let mut ca = config(1);
    ca.keepalive = Some(KeepAlive {
        idle: Duration::from_millis(20),
        interval: Duration::from_millis(10),
        probes: 3,
    });
    let mut a = Stack::new(pa, ca).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    b.listen(80).expect("listen");
    let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
    // Idle but answering: probes go out, and the connection stays.
    let mut connected = false;
    for _ in 0..2_000 {
        a.poll();
        b.poll();
        while let Some(ev) = a.next_event() {
            connected |= ev == Event::Connected(c);
            assert!(!matches!(ev, Event::Closed(..)), "{ev:?}");
        }
        while b.next_event().is_some() {}
        if a.conn_stats(c)
            .is_ok_and(|s| s.counters.keepalive_probes >= 4)
        {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(connected);
    let st = a.conn_stats(c).expect("open");
    assert!(st.counters.keepalive_probes >= 4, "{st:?}");
    assert_eq!(st.state, TcpState::Established);
    // The peer goes silent (its stack stops running): three probes, then
    // the connection times out.
    let mut closed = None;
    for _ in 0..2_000 {
        a.poll();
        while let Some(ev) = a.next_event() {
            if let Event::Closed(_, why) = ev {
                closed = Some(why);
            }
        }
        if closed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(closed, Some(CloseReason::TimedOut));
    assert_eq!(a.stats().timed_out, 1);
}

/// An IPv4 frame from `src` (at MAC 02:00:00:00:00:99) to the stack at
/// 10.0.0.1 (`to`), taken from the raw end of the link, its `len` bytes
/// of payload written by `fill`.
pub(super) fn ipv4_frame(
    raw: &mut MemoryPort,
    to: EthernetAddress,
    src: Ipv4Addr,
    protocol: IpProtocol,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> hugepages::mbuf::Mbuf {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: addr(1),
        protocol,
        payload_len: len,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    ip_frame(raw, to, ip, fill)
}

/// A frame from MAC 02:00:00:00:00:99 to `to` with the IPv4 header
/// `ip`, taken from the raw end of the link, its payload written by
/// `fill`.
pub(super) fn ip_frame(
    raw: &mut MemoryPort,
    to: EthernetAddress,
    ip: Ipv4Repr,
    fill: impl FnOnce(&mut [u8]),
) -> hugepages::mbuf::Mbuf {
    let mut batch = MbufBatch::new();
    raw.alloc_burst(1, &mut batch);
    let mut m = batch.pop().expect("mbuf");
    let buf = m.append(34 + ip.payload_len).expect("room");
    EthernetRepr {
        src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x99]),
        dst_addr: to,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]))
    .expect("eth");
    ip.emit(
        &mut Ipv4Packet::new_unchecked(&mut buf[14..]),
        ChecksumMode::Software,
    )
    .expect("ip");
    fill(&mut buf[34..]);
    m
}

/// A SYN from `src_port` to port 80, sequence number 1000, MSS 1460.
pub(super) fn syn_repr(src_port: u16) -> crate::wire::TcpRepr {
    crate::wire::TcpRepr {
        src_port,
        dst_port: 80,
        seq_number: 1000,
        ack_number: 0,
        flags: crate::wire::TcpFlags::SYN,
        window_len: 65535,
        urgent_at: 0,
        max_seg_size: Some(1460),
        window_scale: None,
        sack_permitted: false,
        sack: Default::default(),
        timestamps: None,
        payload_len: 0,
    }
}

/// A SYN from `src_port` of 10.0.0.9 to the stack's port 80.
pub(super) fn syn_frame(
    raw: &mut MemoryPort,
    to: EthernetAddress,
    src_port: u16,
) -> hugepages::mbuf::Mbuf {
    use crate::wire::{IpPair, TcpPacket};
    let tcp = syn_repr(src_port);
    let addrs = IpPair::V4 {
        src: addr(9),
        dst: addr(1),
    };
    ipv4_frame(raw, to, addr(9), IpProtocol::TCP, tcp.buffer_len(), |out| {
        tcp.emit(
            &mut TcpPacket::new_unchecked(out),
            &addrs,
            ChecksumMode::Software,
        )
        .expect("tcp");
    })
}

#[test]
fn a_syn_flood_fills_the_backlog_and_the_rest_is_counted_and_dropped() {
    let (pa, mut raw, pool_a, _) = pair("stk-synflood");
    let mut cfg = config(1);
    cfg.backlog = 8;
    cfg.rto_initial = Duration::from_secs(10);
    let mut s = Stack::new(pa, cfg).expect("stack");
    s.listen(80).expect("listen");
    let mac = s.mac();
    for i in 0..100u16 {
        let mut out = MbufBatch::new();
        let _ = out.push(syn_frame(&mut raw, mac, 10_000 + i));
        assert_eq!(raw.tx_burst(&mut out), 1);
        s.poll();
    }
    let st = s.stats();
    assert_eq!(st.syn_dropped, 92, "{st:?}");
    assert_eq!(st.connections, 8);
    assert_eq!(st.accepted, 0);
    // Eight SYN-ACKs came back, and nothing else.
    let mut got = MbufBatch::new();
    let mut replies = 0;
    for _ in 0..10 {
        raw.rx_burst(&mut got);
        replies += got.drain().count();
    }
    assert_eq!(replies, 8);
    drop(s);
    assert_eq!(pool_a.in_use(), 0);
}

#[test]
fn udp_datagrams_cross_both_ways_and_a_full_socket_drops_and_counts() {
    let (pa, pb, pool_a, pool_b) = pair("stk-udp");
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut cb = config(2);
    cb.datagram_queue = 64;
    let mut b = Stack::new(pb, cb).expect("stack b");
    let ua = a.bind_udp(5000).expect("bind");
    let ub = b.bind_udp(6000).expect("bind");
    assert!(b.bind_udp(6000).is_err(), "one socket per port");
    let to_b = SocketAddrV4::new(addr(2), 6000);
    // The first datagrams wait for ARP, built, and leave once it answers.
    for i in 0..10u8 {
        assert!(a.send_to(ua, to_b, &[i; 100]).expect("send"));
    }
    assert!(
        !a.send_to(ua, to_b, &[0; 65_508]).expect("send"),
        "longer than an IPv4 datagram holds"
    );
    let mut got = Vec::new();
    for _ in 0..1000 {
        a.poll();
        b.poll();
        while let Some(ev) = b.next_event() {
            assert_eq!(ev, Event::Datagrams(ub));
            while let Some((from, data)) = b.peek_datagram(ub).expect("open") {
                assert_eq!(from, SocketAddrV4::new(addr(1), 5000));
                got.push(data.to_vec());
                let echo = data.to_vec();
                b.consume_datagram(ub).expect("open");
                assert!(b.send_to(ub, from, &echo).expect("send"));
            }
        }
        if got.len() == 10 {
            break;
        }
    }
    assert_eq!(got.len(), 10);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d, &vec![i as u8; 100]);
    }
    let mut echoed = 0;
    for _ in 0..1000 {
        a.poll();
        b.poll();
        while a.next_event().is_some() {}
        while let Some((_, d)) = a.peek_datagram(ua).expect("open") {
            assert_eq!(d.len(), 100);
            echoed += 1;
            a.consume_datagram(ua).expect("open");
        }
        if echoed == 10 {
            break;
        }
    }
    assert_eq!(echoed, 10);
    // Nobody reads b's socket: it keeps 64 and drops the rest, counted.
    for i in 0..100u32 {
        assert!(a.send_to(ua, to_b, &i.to_be_bytes()).expect("send"));
        if i % 16 == 15 {
            a.poll();
            b.poll();
        }
    }
    for _ in 0..100 {
        a.poll();
        b.poll();
    }
    let st = b.stats();
    assert_eq!(st.udp_rx, 10 + 64, "{st:?}");
    assert_eq!(st.udp_rx_dropped, 36, "{st:?}");
    assert!(
        a.send_to(ua, SocketAddrV4::new(addr(2), 7), b"x")
            .expect("send")
    );
    for _ in 0..10 {
        a.poll();
        b.poll();
    }
    // A port with no socket is counted, and answered with port
    // unreachable, which the sender counts.
    assert_eq!(b.stats().udp_no_socket, 1);
    assert_eq!(b.stats().icmp_unreachable_sent, 1);
    assert_eq!(a.stats().icmp_unreachable_received, 1);
    b.close_udp(ub).expect("close");
    assert!(b.peek_datagram(ub).is_err());
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
}

#[test]
fn connect_and_close_timeouts_end_what_the_peer_never_completes() {
    let (pa, pb, _, _) = pair("stk-timeouts");
    let mut ca = config(1);
    ca.connect_timeout = Duration::from_millis(30);
    ca.close_timeout = Duration::from_millis(30);
    let mut cb = config(2);
    cb.rx_buffer = 1024;
    let mut b = Stack::new(pb, cb).expect("stack b");
    ca.neighbours = vec![(addr(2), b.mac())];
    let mut a = Stack::new(pa, ca).expect("stack a");
    // Nobody answers (b does not run): the connect times out.
    let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
    let mut closed = None;
    for _ in 0..2_000 {
        a.poll();
        while let Some(ev) = a.next_event() {
            if let Event::Closed(id, why) = ev {
                assert_eq!(id, c);
                closed = Some(why);
            }
        }
        if closed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(closed, Some(CloseReason::ConnectFailed(libc::ETIMEDOUT)));
    // b never reads: its window shuts, a closes with bytes unsent, and is
    // reset after the close timeout rather than held for ever.
    while b.poll() > 0 || b.next_event().is_some() {}
    b.listen(80).expect("listen");
    let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
    let mut up = false;
    let mut closed = None;
    let mut b_closed = None;
    for _ in 0..5_000 {
        a.poll();
        b.poll();
        while let Some(ev) = a.next_event() {
            match ev {
                Event::Connected(_) => {
                    assert_eq!(a.write(c, &[7u8; 20_000]).expect("write"), 20_000);
                    a.close(c).expect("close");
                    up = true;
                }
                Event::Closed(_, why) => closed = Some(why),
                _ => {}
            }
        }
        while let Some(ev) = b.next_event() {
            if let Event::Closed(_, why) = ev {
                b_closed = Some(why);
            }
        }
        if closed.is_some() && b_closed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(up);
    assert_eq!(closed, Some(CloseReason::TimedOut));
    assert_eq!(b_closed, Some(CloseReason::Reset), "the reset reached b");
}

#[test]
fn tls_runs_over_the_stack_engine_too() {
    use crate::transport::tests::tls::{Pki, localhost};
    use crate::transport::{Config, Transport};
    let pki = Pki::new("stack");
    let (pa, pb, pool_a, pool_b) = pair("stk-tls");
    let mut client =
        Transport::over_port(Box::new(pa), config(1), Config::default()).expect("transport");
    let mut server =
        Transport::over_port(Box::new(pb), config(2), Config::default()).expect("transport");
    server
        .listen_tls("0.0.0.0:443".parse().expect("addr"), pki.server())
        .expect("listen");
    let c = client
        .connect_tls(
            "10.0.0.2:443".parse().expect("addr"),
            pki.client(),
            localhost(),
        )
        .expect("connect");
    // More than one TLS record and more than the window's first flight.
    let data = pattern(5, 300 * 1024);
    let mut sent = 0;
    let mut echoed = Vec::new();
    let mut done = 0;
    for _ in 0..500_000 {
        client.poll().expect("poll");
        if sent < data.len() {
            sent += client.write(c, &data[sent..]).expect("write");
            if sent == data.len() {
                client.shutdown(c).expect("shutdown");
            }
        }
        while let Some(ev) = client.next_event() {
            match ev {
                Event::Readable(_) => {
                    echoed.extend_from_slice(client.peek(c).expect("open"));
                    client.consume(c, usize::MAX).expect("open");
                }
                Event::PeerClosed(_) => client.close(c).expect("close"),
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local);
                    done += 1;
                }
                _ => {}
            }
        }
        server.poll().expect("poll");
        while let Some(ev) = server.next_event() {
            match ev {
                Event::Readable(s) | Event::Writable(s) => {
                    let n = server.send_room(s).expect("open");
                    let got = server.peek(s).expect("open");
                    let n = n.min(got.len());
                    let got = got[..n].to_vec();
                    assert_eq!(server.write(s, &got).expect("write"), n);
                    server.consume(s, n).expect("open");
                    if server.peer_closed(s).expect("open")
                        && server.peek(s).expect("open").is_empty()
                    {
                        server.close(s).expect("close");
                    }
                }
                Event::PeerClosed(s) if server.peek(s).expect("open").is_empty() => {
                    server.close(s).expect("close");
                }
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local);
                    done += 1;
                }
                _ => {}
            }
        }
        if done == 2 {
            break;
        }
    }
    assert_eq!(
        done,
        2,
        "client {:?} server {:?}",
        client.stats(),
        server.stats()
    );
    assert!(
        echoed == data,
        "the echo differs ({} of {} bytes)",
        echoed.len(),
        data.len()
    );
    assert_eq!(client.stats().tls_handshakes, 1);
    assert_eq!(server.stats().tls_handshakes, 1);
    drop((client, server));
    let _ = (pool_a, pool_b);
}

/// `Transport`'s `idle_timeout` on the stack engine: a connection that
/// moved bytes and then nothing is reset and ends with `TimedOut`, while
/// one that keeps talking stays open.
#[test]
fn an_idle_connection_times_out_and_a_busy_one_does_not() {
    use crate::transport::{Config, Transport};
    let (pa, pb, pool_a, pool_b) = pair("stk-idle");
    let mut client = Stack::new(pa, config(1)).expect("stack");
    // Far longer than the busy connection's gap between writes, so that
    // only a stall of the whole machine that long could end it too.
    let idle = Duration::from_millis(300);
    let mut server = Transport::over_port(
        Box::new(pb),
        config(2),
        Config {
            idle_timeout: Some(idle),
            ..Config::default()
        },
    )
    .expect("transport");
    server
        .listen("0.0.0.0:80".parse().expect("addr"))
        .expect("listen");
    let quiet = client
        .connect(SocketAddrV4::new(addr(2), 80))
        .expect("connect");
    let busy = client
        .connect(SocketAddrV4::new(addr(2), 80))
        .expect("connect");
    let mut server_ends = Vec::new();
    let mut client_ends = HashMap::new();
    let mut busy_writes = 0u32;
    // Bounded by time, not passes: the idle timer runs on the clock, and an
    // optimised build makes millions of passes inside one idle period.
    let deadline = std::time::Instant::now() + 30 * idle;
    for pass in 0u32.. {
        if pass % 1024 == 0 && std::time::Instant::now() > deadline {
            break;
        }
        client.poll();
        while let Some(ev) = client.next_event() {
            match ev {
                Event::Connected(c) => {
                    client.write(c, b"hello").expect("write");
                }
                Event::Readable(c) => {
                    let n = client.peek(c).expect("open").len();
                    client.consume(c, n).expect("open");
                }
                Event::Closed(c, why) => {
                    client_ends.insert(c, why);
                }
                _ => {}
            }
        }
        // The busy one writes every 256 passes (a fraction of a
        // millisecond each), far inside the idle timeout.
        if pass % 256 == 0 && client.peek(busy).is_ok() {
            client.write(busy, b"ping").expect("write");
            busy_writes += 1;
        }
        server.poll().expect("poll");
        while let Some(ev) = server.next_event() {
            match ev {
                Event::Readable(s) => {
                    let n = server.peek(s).expect("open").len();
                    server.consume(s, n).expect("open");
                }
                Event::Closed(s, why) => server_ends.push((s, why)),
                _ => {}
            }
        }
        if client_ends.contains_key(&quiet) {
            break;
        }
    }
    // The quiet connection: the server ended it for idleness and reset
    // it; the busy one outlived it by many idle periods.
    assert_eq!(server_ends.len(), 1, "{server_ends:?}");
    assert_eq!(server_ends[0].1, CloseReason::TimedOut);
    assert_eq!(client_ends.get(&quiet), Some(&CloseReason::Reset));
    assert!(!client_ends.contains_key(&busy), "{client_ends:?}");
    assert!(busy_writes >= 2, "{busy_writes}");
    drop((client, server));
    let _ = (pool_a, pool_b);
}

#[test]
fn bytes_consumed_in_the_pass_they_arrive_are_read_in_place_and_the_rest_copied_once() {
    let (pa, pb, pool_a, pool_b) = pair("stk-lend");
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    b.listen(80).expect("listen");
    let c = a.connect(SocketAddrV4::new(addr(2), 80)).expect("connect");
    let mut s = None;
    for _ in 0..10_000 {
        a.poll();
        while a.next_event().is_some() {}
        b.poll();
        while let Some(ev) = b.next_event() {
            if let Event::Accepted { conn, .. } = ev {
                s = Some(conn);
            }
        }
        if s.is_some()
            && matches!(
                a.conn_stats(c).map(|st| st.state),
                Ok(TcpState::Established)
            )
        {
            break;
        }
    }
    let s = s.expect("accepted");
    // Mbufs out of the pools, less the ones each stack keeps to build
    // frames in.
    let out = |a: &Stack<MemoryPort>, b: &Stack<MemoryPort>| {
        pool_a.in_use() + pool_b.in_use() - a.io.spare.len() - b.io.spare.len()
    };
    // Sends `parts` as one segment each, in one burst, and polls the
    // server once: what it then holds in order.
    let send = |a: &mut Stack<MemoryPort>, b: &mut Stack<MemoryPort>, parts: &[&[u8]]| {
        for p in parts {
            assert_eq!(a.write(c, p).expect("write"), p.len());
            a.flush();
        }
        b.poll();
        let mut readable = false;
        while let Some(ev) = b.next_event() {
            readable |= ev == Event::Readable(s);
        }
        assert!(readable);
        b.peek(s).expect("open").to_vec()
    };
    // The server's pass, then the client's, which takes in (and frees)
    // whatever the server sent.
    let passes = |a: &mut Stack<MemoryPort>, b: &mut Stack<MemoryPort>| {
        b.poll();
        while b.next_event().is_some() {}
        a.poll();
        while a.next_event().is_some() {}
    };
    // Quiet: what the pools have out now (the ports' own) is what they
    // have out whenever both sides are quiet.
    passes(&mut a, &mut b);
    let quiet = out(&a, &b);
    // Requests consumed in the pass they arrive: read where they landed,
    // and each rx mbuf home at the start of the next pass.
    for i in 0..100u64 {
        let req = pattern(i, 1 + (i as usize * 37) % 1400);
        assert_eq!(send(&mut a, &mut b, &[&req]), req);
        assert!(out(&a, &b) > quiet, "request {i}: not held");
        b.consume(s, req.len()).expect("open");
        passes(&mut a, &mut b);
        assert_eq!(out(&a, &b), quiet, "request {i}: its mbuf stayed out");
    }
    let st = b.conn_stats(s).expect("open").counters;
    assert_eq!((st.rx_in_place, st.rx_in_place_copied), (100, 0));
    // Half consumed and left: the next pass copies the rest and gives the
    // mbuf back, and what arrives after joins it.
    let first = pattern(1000, 700);
    assert_eq!(send(&mut a, &mut b, &[&first]), first);
    b.consume(s, 300).expect("open");
    passes(&mut a, &mut b);
    assert_eq!(out(&a, &b), quiet, "the mbuf outlived its pass");
    assert_eq!(b.peek(s).expect("open"), &first[300..]);
    let second = pattern(1001, 900);
    let got = send(&mut a, &mut b, &[&second]);
    assert_eq!(got, [&first[300..], &second[..]].concat());
    b.consume(s, got.len()).expect("open");
    // (The second landed behind held bytes: copied, not lent.) Two
    // segments in one burst: the first lent, then copied when the
    // second lands behind it.
    let (x, y) = (pattern(1002, 1000), pattern(1003, 1000));
    let got = send(&mut a, &mut b, &[&x, &y]);
    assert_eq!(got, [&x[..], &y[..]].concat());
    b.consume(s, got.len()).expect("open");
    let st = b.conn_stats(s).expect("open").counters;
    assert_eq!((st.rx_in_place, st.rx_in_place_copied), (102, 2));
    assert_eq!(
        st.rx_bytes,
        (0..100).map(|i| 1 + (i * 37) % 1400).sum::<usize>() as u64 + 3600
    );
    // Closed with a lent mbuf still held: it goes home with the connection.
    let last = pattern(1004, 50);
    assert_eq!(send(&mut a, &mut b, &[&last]), last);
    b.abort(s).expect("open");
    a.close(c).expect("open");
    settle(&mut a, &mut b);
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
}

#[test]
fn over_a_link_that_carries_checksums_neither_end_computes_them() {
    let (pa, pb, pool_a, pool_b) = pair_with(PortConfig::new("stk-csum").with_tx_checksum(true));
    let mut a = Stack::new(pa, config(1)).expect("stack a");
    let mut b = Stack::new(pb, config(2)).expect("stack b");
    let up = pattern(11, 1 << 20);
    let down = pattern(12, 256 << 10);
    let (client, server) = transfer(&mut a, &mut b, 2, &up, &down, 2_000_000);
    for s in server.values() {
        assert!(s.got == up, "the server's bytes differ");
    }
    for c in client.values() {
        assert!(c.got == down, "the client's bytes differ");
    }
    for st in [a.stats(), b.stats()] {
        // Every TCP segment both ways: sent with its sum left to the
        // link, taken as verified; ARP frames carry no sum.
        assert!(st.tcp_tx > 100 && st.tcp_rx > 100, "{st:?}");
        assert_eq!(st.tx_checksum_offloaded, st.tcp_tx, "{st:?}");
        assert_eq!(st.rx_checksum_offloaded, st.tcp_rx, "{st:?}");
        assert_eq!(st.rx_bad_checksum, 0);
    }
    settle(&mut a, &mut b);
    drop((a, b));
    assert_eq!((pool_a.in_use(), pool_b.in_use()), (0, 0));
}
