//! The user-space TCP/IP stack (`dataplane::transport::stack`) against
//! Linux's TCP: two namespaces joined by a veth pair, our stack on an
//! AF_PACKET port in one (which has no address of its own, so its kernel
//! stays out of the conversation), real programs on the kernel's stack in
//! the other. `curl` downloads from a small HTTP server written on the
//! stack's API, `socat` uploads to it, and the stack as a client downloads
//! from and uploads to `socat` and fetches files from nginx over one
//! keep-alive connection; every byte is compared. Then the same over a
//! lossy, reordering, duplicating link with a small MTU.
//!
//! This kernel has no `netem` qdisc here, so the impairments come from
//! [`FaultInjector`] around our port: loss, duplication and reordering of
//! what we send, and loss of what the kernel sends to us.
//!
//! Needs the `netns` capability, and curl, socat and ethtool (the kernel
//! side's checksum and segmentation offloads are switched off, so that the
//! frames AF_PACKET shows carry whole checksums and no 64 KiB segments).

use dataplane::net::af_packet::AfPacketPort;
use dataplane::net::fault::{FaultInjector, Faults};
use dataplane::net::{Port, PortConfig};
use dataplane::transport::stack::{SharedNeighbours, Stack};
use dataplane::transport::{CloseReason, ConnId, Event};
use dataplane_tests::VethBed;
use dataplane_tests::stack_peers::{
    KERNEL, curl_and_socat_against_the_stack, have, stack_bed, stack_config, the_stack_as_a_client,
    the_stack_fetches_from_nginx,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The bed with the kernel's side configured, and our port.
fn setup(mtu: u16) -> Option<(VethBed, AfPacketPort)> {
    let bed = stack_bed(mtu)?;
    // Frame by frame (TPACKET_V2), as a server on the stack opens it; the
    // lossy test keeps TPACKET_V3's blocks, so both rings carry TCP.
    let cfg = PortConfig::new("veth0")
        .with_descriptors(1024, 512)
        .with_mbufs(4096, 0)
        .with_low_latency(mtu == 1500);
    let mut ports = bed
        .a
        .run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port");
    let port = ports.remove(0);
    Some((bed, port))
}

/// 2% of what we send lost, 1% duplicated, 2% reordered; 2% of what the
/// kernel sends us lost.
fn lossy(seed: u64) -> Faults {
    Faults {
        loss: 20,
        duplicate: 10,
        reorder: 20,
        rx_loss: 20,
        seed,
    }
}

fn stack<P: Port>(port: P, mtu: u16) -> Stack<P> {
    Stack::new(port, stack_config(mtu)).expect("stack")
}

#[test]
fn curl_and_socat_talk_to_a_server_on_the_stack() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    curl_and_socat_against_the_stack(bed.b.name(), &mut s, 8 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.arp_replies >= 1, "the kernel asked for our address");
    assert_eq!(st.accepted, 2);
    assert_eq!(st.rx_bad_checksum, 0);
    drop(s);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the port's pool");
}

#[test]
fn the_stack_downloads_from_and_uploads_to_socat() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let mut s = stack(port, 1500);
    the_stack_as_a_client(bed.b.name(), &mut s, 4 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.arp_requests >= 1, "we asked for the kernel's address");
    assert!(st.connected >= 2);
}

#[test]
fn the_stack_fetches_files_from_nginx_over_keep_alive() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    if !the_stack_fetches_from_nginx(bed.b.name(), &mut s, 4 << 20) {
        return;
    }
    let st = s.stats();
    println!("{st:?}");
    assert!(st.connected >= 1);
    assert_eq!(st.rx_bad_checksum, 0);
    drop(s);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the port's pool");
}

#[test]
fn transfers_with_linux_survive_loss_reordering_duplication_and_a_small_mtu() {
    let Some((bed, port)) = setup(1280) else {
        return;
    };
    let faults = lossy(0x5eed);
    let mut s = stack(FaultInjector::new(port, faults), 1280);
    curl_and_socat_against_the_stack(bed.b.name(), &mut s, 2 << 20);
    the_stack_as_a_client(bed.b.name(), &mut s, 2 << 20);
    the_stack_fetches_from_nginx(bed.b.name(), &mut s, 1 << 20);
    let st = s.stats();
    let counts = s.port().counts();
    println!("{st:?}\n{counts:?}");
    assert!(counts.dropped > 0 && counts.rx_dropped > 0 && counts.reordered > 0);
    assert!(
        st.tcp.fast_retransmits + st.tcp.timeout_retransmits > 0,
        "our retransmissions: {:?}",
        st.tcp
    );
    assert!(st.tcp.out_of_order > 0, "the kernel's losses: {:?}", st.tcp);
}

/// With SACK (on by default, set here all the same), Linux negotiates
/// it, our ACKs carry blocks while data waits beyond a hole, and
/// downloads from Linux under loss complete with every byte.
#[test]
fn with_sack_on_linux_takes_our_sack_blocks_under_loss() {
    let Some((bed, port)) = setup(1280) else {
        return;
    };
    let faults = lossy(0x5ac4);
    let mut cfg = stack_config(1280);
    cfg.sack = true;
    let mut s = Stack::new(FaultInjector::new(port, faults), cfg).expect("stack");
    the_stack_as_a_client(bed.b.name(), &mut s, 1 << 20);
    the_stack_fetches_from_nginx(bed.b.name(), &mut s, 1 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert!(st.tcp.out_of_order > 0, "{:?}", st.tcp);
    assert!(st.tcp.sack_acks > 0, "{:?}", st.tcp);
}

/// Our sender's loss recovery against Linux's receiver: 2 MiB each way
/// (socat both ends) with 5% of what we send lost, once with SACK off
/// (NewReno's recovery) and once on (RFC 6675's, from the blocks Linux
/// sends), durations printed for comparison, not asserted. With SACK,
/// holes Linux's blocks show lost go again without waiting a round trip
/// each.
#[test]
fn our_sender_recovers_from_loss_with_linux_s_sack_blocks() {
    let mut runs = Vec::new();
    for sack in [false, true] {
        let Some((bed, port)) = setup(1500) else {
            return;
        };
        let faults = Faults {
            loss: 50,
            seed: 0x5ac5,
            ..Faults::default()
        };
        let mut cfg = stack_config(1500);
        cfg.sack = sack;
        let mut s = Stack::new(FaultInjector::new(port, faults), cfg).expect("stack");
        let started = std::time::Instant::now();
        the_stack_as_a_client(bed.b.name(), &mut s, 2 << 20);
        let took = started.elapsed();
        // The counters are a connection's once it ends (TIME-WAIT over).
        for _ in 0..200_000 {
            if s.stats().connections == 0 {
                break;
            }
            s.poll();
            std::thread::sleep(Duration::from_micros(20));
        }
        let st = s.stats();
        println!("sack {sack}: {took:?} {:?}", st.tcp);
        assert!(s.port().counts().dropped > 0);
        runs.push(st.tcp);
    }
    let (newreno, sack) = (runs[0], runs[1]);
    assert_eq!(newreno.sack_retransmits, 0, "{newreno:?}");
    assert!(newreno.fast_retransmits > 0, "{newreno:?}");
    assert!(
        sack.sack_retransmits > 0,
        "Linux's blocks never used: {sack:?}"
    );
}

#[test]
fn udp_datagrams_cross_between_the_stack_and_a_kernel_socket() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    const COUNT: u32 = 200;
    // A kernel socket in the other namespace echoes what it receives until
    // it hears "stop" (or nothing for 10 s); it says when it is bound.
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let echo = bed
        .b
        .spawn(move || {
            let sock = std::net::UdpSocket::bind("10.99.0.2:7000").expect("bind");
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            bound_tx.send(()).expect("the test waits");
            let mut buf = [0u8; 2048];
            let mut echoed = 0u32;
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"stop" {
                    break;
                }
                sock.send_to(&buf[..n], from).expect("echo");
                echoed += 1;
            }
            echoed
        })
        .expect("a thread in the namespace");
    bound.recv().expect("the echo socket is bound");
    let u = s.bind_udp(5000).expect("bind");
    let peer = std::net::SocketAddrV4::new([10, 99, 0, 2].into(), 7000);
    // Datagram i: its number, then 996 bytes that depend on it.
    let datagram = |i: u32| -> Vec<u8> {
        let mut d = i.to_be_bytes().to_vec();
        d.extend((0..996u32).map(|k| (i * 7 + k) as u8));
        d
    };
    let mut back = vec![false; COUNT as usize];
    let (mut next, mut done, mut resent, mut idle) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..400_000 {
        // Ten outstanding at most; UDP may lose one (a full ring), so a
        // datagram not echoed within about 0.1 s is sent again.
        let oldest = (0..next).find(|&i| !back[i as usize]);
        if next < COUNT && oldest.is_none_or(|o| next - o < 10) {
            assert!(s.send_to(u, peer, &datagram(next)).expect("send"));
            next += 1;
        } else if idle > 2_000
            && let Some(o) = oldest
        {
            assert!(s.send_to(u, peer, &datagram(o)).expect("send"));
            resent += 1;
            idle = 0;
        }
        s.poll();
        while s.next_event().is_some() {}
        idle += 1;
        while let Some((from, data)) = s.peek_datagram(u).expect("open") {
            assert_eq!(from, peer);
            let i = u32::from_be_bytes(data[..4].try_into().expect("a number"));
            assert!(
                data == datagram(i).as_slice(),
                "datagram {i} came back changed"
            );
            if !back[i as usize] {
                back[i as usize] = true;
                done += 1;
                idle = 0;
            }
            s.consume_datagram(u).expect("open");
        }
        if done == COUNT {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    assert!(s.send_to(u, peer, b"stop").expect("send"));
    for _ in 0..10 {
        s.poll();
    }
    let echoed = echo.join().expect("echo thread").expect("in the namespace");
    let st = s.stats();
    println!("{st:?}, {resent} sent again, {echoed} echoed");
    assert_eq!(done, COUNT, "{st:?}");
    assert!(
        resent <= COUNT / 10,
        "{resent} of {COUNT} sent again: {st:?}"
    );
    assert_eq!(st.udp_tx, u64::from(COUNT + resent) + 1);
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

/// One stack per queue of a three-queue AF_PACKET port, each opening
/// connections to a Linux listener: the port's fanout program spreads
/// what arrives by the 4-tuple, so each stack must pick source ports whose
/// replies reach its own queue, or another stack (which has never heard of
/// the connection) receives the SYN-ACK and answers it with a reset. The
/// kernel's ARP replies all reach queue 0; the stacks share what they
/// learn.
#[test]
fn outbound_connections_from_every_queue_get_their_replies() {
    const QUEUES: u16 = 3;
    const PER_QUEUE: usize = 8;
    const TOTAL: usize = QUEUES as usize * PER_QUEUE;
    let Some(bed) = stack_bed(1500) else {
        return;
    };
    let cfg = PortConfig::new("veth0")
        .with_queues(QUEUES)
        .with_descriptors(512, 256)
        .with_mbufs(2048, 0)
        .with_low_latency(true);
    let ports = bed
        .a
        .run(move || AfPacketPort::open(&cfg))
        .expect("thread in the namespace")
        .expect("AF_PACKET port");
    // ARP replies, having no ports, all reach queue 0: the stacks share
    // one neighbour table, so the stacks of queues 1 and 2 learn the
    // kernel's MAC from the reply to their request that queue 0 received.
    let kernel: Ipv4Addr = KERNEL.parse().expect("address");
    let pools: Vec<_> = ports.iter().map(|p| p.pool().clone()).collect();
    let shared = SharedNeighbours::new();
    let mut stacks: Vec<_> = ports
        .into_iter()
        .map(|p| {
            let mut c = stack_config(1500);
            c.shared_neighbours = Some(shared.clone());
            Stack::new(p, c).expect("stack")
        })
        .collect();
    // The kernel's side: a listener that echoes one line per connection.
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let server = bed
        .b
        .spawn(move || {
            let l = std::net::TcpListener::bind("10.99.0.2:7100").expect("bind");
            bound_tx.send(()).expect("the test waits");
            let mut echoed = 0;
            for _ in 0..TOTAL {
                let Ok((mut c, _)) = l.accept() else { break };
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut line = [0u8; 16];
                if c.read_exact(&mut line).is_ok() && c.write_all(&line).is_ok() {
                    echoed += 1;
                }
                // Until our FIN.
                let _ = c.read_to_end(&mut Vec::new());
            }
            echoed
        })
        .expect("a thread in the namespace");
    bound.recv().expect("the listener is bound");
    let peer = SocketAddrV4::new(kernel, 7100);
    let line = |q: usize, i: usize| format!("queue{q:>2} conn{i:>3}\n").into_bytes();
    // Per stack, its connections: (id, the line sent, what came back).
    type Exchange = (ConnId, Vec<u8>, Vec<u8>);
    let mut conns: Vec<Vec<Exchange>> = vec![Vec::new(); stacks.len()];
    let mut closed = 0;
    for _ in 0..2_000_000 {
        for (q, s) in stacks.iter_mut().enumerate() {
            // One connection in flight per stack at a time: the kernel's
            // side answers them one after another.
            let open = conns[q].iter().filter(|c| c.2.len() < 16).count();
            if conns[q].len() < PER_QUEUE && open == 0 {
                let c = s.connect(peer).expect("connect");
                let sent = line(q, conns[q].len());
                conns[q].push((c, sent, Vec::new()));
            }
            s.poll();
            while let Some(ev) = s.next_event() {
                match ev {
                    Event::Connected(c) => {
                        let sent = &conns[q].iter().find(|x| x.0 == c).expect("ours").1;
                        assert_eq!(s.write(c, sent).expect("open"), 16);
                    }
                    Event::Readable(c) => {
                        let data = s.peek(c).expect("open").to_vec();
                        s.consume(c, data.len()).expect("open");
                        let got = &mut conns[q].iter_mut().find(|x| x.0 == c).expect("ours").2;
                        got.extend_from_slice(&data);
                        if got.len() >= 16 {
                            s.close(c).expect("open");
                        }
                    }
                    Event::Closed(c, why) => {
                        assert_eq!(why, CloseReason::Local, "queue {q}, {c}");
                        closed += 1;
                    }
                    _ => {}
                }
            }
            s.flush();
        }
        if closed == TOTAL {
            break;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    for (q, s) in stacks.iter().enumerate() {
        let st = s.stats();
        println!("queue {q}: {st:?}");
        assert_eq!(
            st.tcp_no_socket, 0,
            "queue {q} got another queue's segments"
        );
        assert_eq!(st.connected, PER_QUEUE as u64, "queue {q}");
        for (_, sent, got) in &conns[q] {
            assert_eq!(got, sent, "queue {q}");
        }
    }
    assert_eq!(closed, TOTAL);
    assert!(shared.get(kernel).is_some(), "{shared:?}");
    assert_eq!(server.join().expect("server").expect("namespace"), TOTAL);
    drop(stacks);
    for p in pools {
        assert_eq!(p.in_use(), 0, "every mbuf back in {}", p.name());
    }
}

/// A datagram from Linux to a port of ours with no socket is answered
/// with ICMP port unreachable, which Linux turns into `ECONNREFUSED` on
/// its connected socket, as between two kernels.
#[test]
fn linux_sees_connection_refused_for_a_closed_udp_port() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    let mut s = stack(port, 1500);
    let kernel = bed
        .b
        .spawn(|| {
            let sock = std::net::UdpSocket::bind("10.99.0.2:0").expect("bind");
            sock.connect("10.99.0.1:9").expect("connect");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            // A few tries: the first waits for ARP.
            let mut buf = [0u8; 16];
            for _ in 0..5 {
                let _ = sock.send(b"anyone?");
                match sock.recv(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
                    _ => continue,
                }
            }
            false
        })
        .expect("a thread in the namespace");
    for _ in 0..400_000 {
        s.poll();
        while s.next_event().is_some() {}
        if kernel.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let refused = kernel.join().expect("kernel thread").expect("namespace");
    let st = s.stats();
    println!("{st:?}");
    assert!(refused, "Linux never saw ECONNREFUSED: {st:?}");
    assert!(st.icmp_unreachable_sent >= 1, "{st:?}");
}

/// Fragments both ways: Linux's `ping -s 4000` (its requests go in three
/// fragments, and so must our replies) and a kernel UDP socket sending
/// datagrams up to 65,507 bytes to an echo on the stack, which sends each
/// back whole in fragments; the kernel compares every byte.
#[test]
fn linux_pings_and_echoes_datagrams_past_the_mtu_in_fragments() {
    let Some((bed, port)) = setup(1500) else {
        return;
    };
    if !have("ping") {
        return;
    }
    let pool = port.pool().clone();
    let mut s = stack(port, 1500);
    let u = s.bind_udp(7000).expect("bind");
    const SIZES: [usize; 4] = [1473, 5000, 20_000, 65_507];
    let kernel = bed
        .b
        .spawn(|| {
            let ping = std::process::Command::new("ping")
                .args(["-c", "3", "-i", "0.2", "-W", "2", "-s", "4000", "10.99.0.1"])
                .output()
                .expect("ping runs");
            let sock = std::net::UdpSocket::bind("10.99.0.2:0").expect("bind");
            sock.connect("10.99.0.1:7000").expect("connect");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = vec![0u8; 65_536];
            let mut echoed = Vec::new();
            for (i, &n) in SIZES.iter().enumerate() {
                let sent: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
                // A datagram lost with its fragments is sent again.
                let back = (0..3).any(|_| {
                    sock.send(&sent).expect("send");
                    sock.recv(&mut buf).is_ok_and(|m| buf[..m] == sent[..])
                });
                echoed.push(back);
            }
            (ping, echoed)
        })
        .expect("a thread in the namespace");
    for _ in 0..1_000_000 {
        s.poll();
        while s.next_event().is_some() {}
        while let Some((from, data)) = s.peek_datagram(u).expect("open") {
            let data = data.to_vec();
            s.consume_datagram(u).expect("open");
            assert!(s.send_to(u, from, &data).expect("echo"));
        }
        if kernel.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    let (ping, echoed) = kernel.join().expect("kernel thread").expect("namespace");
    let st = s.stats();
    let out = String::from_utf8_lossy(&ping.stdout);
    println!("{out}\n{st:?}");
    assert!(ping.status.success(), "ping got no reply: {out}");
    assert!(out.contains("4008 bytes from 10.99.0.1"), "{out}");
    assert_eq!(echoed, [true; 4], "datagrams that came back whole: {st:?}");
    assert!(st.reassembled >= 6 && st.tx_fragmented >= 6, "{st:?}");
    drop(s);
    assert_eq!(pool.in_use(), 0);
}
