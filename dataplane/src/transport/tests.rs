//! The kernel engine against Linux's own TCP and UDP on loopback: std's
//! blocking sockets on threads as the peers, every byte compared.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// The configuration for `kind`'s engine.
fn cfg(kind: EngineKind) -> Config {
    Config {
        engine: crate::backend::Choice::Named(kind),
        ..Config::default()
    }
}

/// Whether `kind` runs here; where it does not, says so (and fails where
/// `DATAPLANE_REQUIRE` names io_uring).
fn runs(kind: EngineKind) -> bool {
    if kind == EngineKind::Epoll {
        return true;
    }
    let p = super::uring::probe();
    if !p.available {
        crate::require::available_or_skip(crate::require::Capability::IoUring, false, &p.reason);
    }
    p.available
}

/// Each test once per engine: `name::epoll` and `name::io_uring`.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn epoll() {
                    super::$name(EngineKind::Epoll);
                }
                #[test]
                fn io_uring() {
                    if runs(EngineKind::IoUring) {
                        super::$name(EngineKind::IoUring);
                    }
                }
            }
        )*
    };
}

on_every_engine!(
    echoes_a_large_stream_to_a_kernel_client_byte_for_byte,
    connects_out_writes_reads_and_sees_the_peers_fin,
    a_refused_connect_ends_with_its_errno,
    a_full_send_buffer_takes_less_and_says_writable_when_drained,
    write_from_takes_an_output_whole_or_copies_what_fits_behind_bytes_held,
    a_full_receive_buffer_stops_reading_until_consumed,
    idle_and_connect_timeouts_end_connections,
    abort_resets_the_peer,
    stale_ids_never_reach_a_new_connection_in_the_same_slot,
    many_connections_at_once_each_get_their_own_bytes,
    listeners_on_one_port_share_its_connections_across_threads,
    a_pinned_lcore_accepts_the_connections_its_cpu_received,
    udp_datagrams_arrive_whole_with_their_sender_and_go_back,
);

/// A transport with `config` listening on a loopback port, and the port.
fn listening(config: Config) -> (Transport, SocketAddr) {
    let mut t = Transport::new(config).expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    (t, addr)
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// Bytes that differ at every offset, from a seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs passes, handing each event to `f`, until `f` says done; panics
/// after [`LIMIT`].
fn drive(t: &mut Transport, mut f: impl FnMut(&mut Transport, Event) -> bool) {
    let end = Instant::now() + LIMIT;
    loop {
        t.poll().expect("poll");
        while let Some(ev) = t.next_event() {
            if f(t, ev) {
                return;
            }
        }
        assert!(
            Instant::now() < end,
            "no end after {LIMIT:?}: {:?}",
            t.stats()
        );
        std::thread::yield_now();
    }
}

/// An echo server's handling of one event: echo what fits, close after the
/// peer's FIN once everything is echoed.
fn echo(t: &mut Transport, ev: Event) {
    match ev {
        Event::Readable(c) | Event::Writable(c) => {
            let data = t.peek(c).expect("peek").to_vec();
            let n = t.write(c, &data).expect("write");
            t.consume(c, n).expect("consume");
            if t.peer_closed(c).expect("open") && t.peek(c).expect("peek").is_empty() {
                t.close(c).expect("close");
            }
        }
        Event::PeerClosed(c) if t.peek(c).expect("peek").is_empty() => {
            t.close(c).expect("close");
        }
        _ => {}
    }
}

fn echoes_a_large_stream_to_a_kernel_client_byte_for_byte(kind: EngineKind) {
    // Small buffers, the send buffer the smaller, so both directions fill
    // and push back many times.
    let mut t = Transport::new(Config {
        rx_buffer: 8192,
        tx_buffer: 4096,
        ..cfg(kind)
    })
    .expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let sent = pattern(4 << 20, 7);
    let expect = sent.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut r = s.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).expect("read");
            got
        });
        s.write_all(&sent).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        reader.join().expect("reader")
    });
    let mut closed = None;
    drive(&mut t, |t, ev| {
        if let Event::Closed(c, why) = ev {
            closed = Some((c, why));
            return true;
        }
        echo(t, ev);
        false
    });
    let got = client.join().expect("client");
    assert!(
        got == expect,
        "echo differs: {} bytes back of {}",
        got.len(),
        expect.len()
    );
    let (c, why) = closed.expect("closed");
    assert_eq!(why, CloseReason::Local);
    assert!(matches!(t.peek(c), Err(crate::Error::NotOpen(_))));
    let s = t.stats();
    assert_eq!((s.accepted, s.closed, s.open), (1, 1, 0));
    assert_eq!(s.rx_bytes, 4 << 20);
    assert_eq!(s.tx_bytes, 4 << 20);
    assert!(s.tx_full > 0, "the small send buffer never filled: {s:?}");
}

fn connects_out_writes_reads_and_sees_the_peers_fin(kind: EngineKind) {
    let server = TcpListener::bind(any_port()).expect("bind");
    let addr = server.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        let mut got = vec![0u8; 5];
        s.read_exact(&mut got).expect("read");
        s.write_all(b"world").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read to end");
        (got, rest)
    });
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let c = t.connect(addr).expect("connect");
    // Buffered until the connection is up.
    assert_eq!(t.write(c, b"hello").expect("write"), 5);
    let mut got = Vec::new();
    let mut connected = false;
    drive(&mut t, |t, ev| {
        match ev {
            Event::Connected(x) => {
                assert_eq!(x, c);
                connected = true;
            }
            Event::Readable(x) => {
                got.extend_from_slice(t.peek(x).expect("peek"));
                let n = got.len();
                t.consume(x, n).expect("consume");
            }
            Event::PeerClosed(x) => {
                assert!(t.peer_closed(x).expect("open"));
                // Half-closed: this side still writes, then closes.
                assert_eq!(t.write(x, b"!").expect("write"), 1);
                t.close(x).expect("close");
            }
            Event::Closed(_, why) => {
                assert_eq!(why, CloseReason::Local);
                return true;
            }
            _ => {}
        }
        false
    });
    assert!(connected);
    assert_eq!(got, b"world");
    let (hello, rest) = peer.join().expect("peer");
    assert_eq!(hello, b"hello");
    assert_eq!(rest, b"!");
    assert_eq!(t.stats().connected, 1);
}

fn a_refused_connect_ends_with_its_errno(kind: EngineKind) {
    // A port that was just free: bind, learn it, close.
    let addr = TcpListener::bind(any_port())
        .and_then(|l| l.local_addr())
        .expect("addr");
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let c = t.connect(addr).expect("connect");
    let mut why = None;
    drive(&mut t, |_, ev| match ev {
        Event::Closed(x, r) => {
            assert_eq!(x, c);
            why = Some(r);
            true
        }
        Event::Connected(_) => panic!("connected to a closed port"),
        _ => false,
    });
    assert_eq!(why, Some(CloseReason::ConnectFailed(libc::ECONNREFUSED)));
    assert_eq!(t.stats().connect_failed, 1);
    assert!(matches!(t.write(c, b"x"), Err(crate::Error::NotOpen(_))));
}

fn a_full_send_buffer_takes_less_and_says_writable_when_drained(kind: EngineKind) {
    let (mut t, addr) = listening(Config {
        tx_buffer: 64 * 1024,
        ..cfg(kind)
    });
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        // Not reading until told: the kernel's buffers and then ours fill.
        go_rx.recv().expect("go");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let chunk = pattern(16 * 1024, 3);
    let mut written = 0usize;
    let mut conn = None;
    // Write until a write takes less than it was given.
    drive(&mut t, |t, ev| {
        if let Event::Accepted { conn: c, .. } = ev {
            conn = Some(c);
        }
        let Some(c) = conn else { return false };
        loop {
            let n = t.write(c, &chunk).expect("write");
            written += n;
            if n < chunk.len() {
                return true;
            }
            if written > (64 << 20) {
                panic!("64 MiB taken with a reader that reads nothing");
            }
            t.poll().expect("poll");
        }
    });
    let c = conn.expect("accepted");
    assert_eq!(t.send_room(c).expect("room"), 0);
    assert!(t.stats().tx_full >= 1);
    go_tx.send(()).expect("go");
    drive(&mut t, |_, ev| ev == Event::Writable(c));
    assert!(t.send_room(c).expect("room") >= 32 * 1024);
    t.close(c).expect("close");
    drive(&mut t, |_, ev| matches!(ev, Event::Closed(..)));
    let got = client.join().expect("client");
    assert_eq!(got.len(), written);
    assert!(got.chunks(chunk.len()).all(|p| p == &chunk[..p.len()]));
}

fn write_from_takes_an_output_whole_or_copies_what_fits_behind_bytes_held(kind: EngineKind) {
    let (mut t, addr) = listening(Config {
        tx_buffer: 64 * 1024,
        ..cfg(kind)
    });
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let mut conn = None;
    drive(&mut t, |_, ev| {
        if let Event::Accepted { conn: c, .. } = ev {
            conn = Some(c);
        }
        conn.is_some()
    });
    let c = conn.expect("accepted");
    let mut sent = Vec::new();
    // An empty send buffer takes the whole output; the Vec comes back
    // empty, to be filled again.
    let mut out = pattern(30_000, 1);
    sent.extend_from_slice(&out);
    assert_eq!(t.write_from(c, &mut out).expect("write_from"), 30_000);
    assert!(out.is_empty());
    // Behind bytes held, it copies what fits and leaves the rest, in
    // order, at the front of the Vec.
    let second = pattern(50_000, 2);
    out.extend_from_slice(&second);
    let n = t.write_from(c, &mut out).expect("write_from");
    assert_eq!(n, 64 * 1024 - 30_000);
    assert_eq!(out, second[n..]);
    sent.extend_from_slice(&second);
    // Outputs of every size until 2 MiB have gone, each pass's output
    // written with whatever the last pass left.
    let mut seed = 3;
    let mut polls = 0u64;
    while sent.len() < 2 << 20 || !out.is_empty() {
        if sent.len() < 2 << 20 {
            let more = pattern((seed as usize * 7919) % 40_000 + 1, seed);
            seed += 1;
            out.extend_from_slice(&more);
            sent.extend_from_slice(&more);
        }
        t.write_from(c, &mut out).expect("write_from");
        t.poll().expect("poll");
        while t.next_event().is_some() {}
        polls += 1;
        assert!(polls < 10_000_000, "the client stopped reading");
    }
    assert_eq!(t.write_from(c, &mut Vec::new()).expect("nothing"), 0);
    t.shutdown(c).expect("shutdown");
    let mut late = b"late".to_vec();
    assert!(t.write_from(c, &mut late).is_err());
    assert_eq!(late, b"late", "refused, and untouched");
    t.close(c).expect("close");
    drive(&mut t, |_, ev| matches!(ev, Event::Closed(..)));
    let got = client.join().expect("client");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every byte, in order");
}

fn a_full_receive_buffer_stops_reading_until_consumed(kind: EngineKind) {
    let mut t = Transport::new(Config {
        rx_buffer: 1000,
        ..cfg(kind)
    })
    .expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let sent = pattern(100_000, 11);
    let expect = sent.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&sent).expect("write");
    });
    let mut got = Vec::new();
    let mut most = 0;
    drive(&mut t, |t, ev| {
        if let Event::Readable(c) = ev {
            let held = t.peek(c).expect("peek").len();
            most = most.max(held);
            // Take at most 300 bytes a pass, so the buffer fills.
            let take = held.min(300);
            got.extend_from_slice(&t.peek(c).expect("peek")[..take]);
            t.consume(c, take).expect("consume");
        }
        if let Event::PeerClosed(c) = ev {
            let rest = t.peek(c).expect("peek").to_vec();
            got.extend_from_slice(&rest);
            t.consume(c, rest.len()).expect("consume");
        }
        got.len() == expect.len()
    });
    client.join().expect("client");
    assert!(got == expect);
    assert_eq!(most, 1000, "the receive buffer held more than its size");
}

fn idle_and_connect_timeouts_end_connections(kind: EngineKind) {
    let mut t = Transport::new(Config {
        idle_timeout: Some(Duration::from_millis(100)),
        ..cfg(kind)
    })
    .expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let mut s = TcpStream::connect(addr).expect("connect");
    let start = Instant::now();
    drive(&mut t, |_, ev| {
        matches!(ev, Event::Closed(_, CloseReason::TimedOut))
    });
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(t.stats().timed_out, 1);
    // The peer sees the reset.
    let mut b = [0u8; 1];
    assert!(s.read(&mut b).is_err() || s.read(&mut b).map(|n| n == 0).unwrap_or(true));

    // A connect to an address that drops SYNs (TEST-NET-1; no route is
    // also an outcome) ends as a failed connect, never hangs.
    let mut t = Transport::new(Config {
        connect_timeout: Duration::from_millis(100),
        ..cfg(kind)
    })
    .expect("transport");
    match t.connect("192.0.2.1:9".parse().expect("addr")) {
        Ok(_) => drive(&mut t, |_, ev| match ev {
            Event::Closed(_, r) => {
                assert!(
                    matches!(r, CloseReason::TimedOut | CloseReason::ConnectFailed(_)),
                    "{r:?}"
                );
                true
            }
            Event::Connected(_) => panic!("connected to TEST-NET-1"),
            _ => false,
        }),
        Err(e) => assert!(e.to_string().contains("192.0.2.1"), "{e}"),
    }
}

fn abort_resets_the_peer(kind: EngineKind) {
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut conn = None;
    drive(&mut t, |_, ev| {
        if let Event::Accepted { conn: c, .. } = ev {
            conn = Some(c);
            return true;
        }
        false
    });
    let c = conn.expect("accepted");
    t.abort(c).expect("abort");
    assert_eq!(t.next_event(), Some(Event::Closed(c, CloseReason::Aborted)));
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(t.abort(c).is_err());
}

fn stale_ids_never_reach_a_new_connection_in_the_same_slot(kind: EngineKind) {
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let _a = TcpStream::connect(addr).expect("connect");
    let mut first = None;
    drive(&mut t, |_, ev| {
        if let Event::Accepted { conn, .. } = ev {
            first = Some(conn);
        }
        first.is_some()
    });
    let first = first.expect("first");
    t.abort(first).expect("abort");
    let _b = TcpStream::connect(addr).expect("connect");
    let mut second = None;
    drive(&mut t, |_, ev| {
        if let Event::Accepted { conn, .. } = ev {
            second = Some(conn);
        }
        second.is_some()
    });
    let second = second.expect("second");
    assert_eq!(second.index, first.index, "the slot is reused");
    assert_ne!(second, first);
    assert!(t.write(first, b"x").is_err());
    assert_eq!(t.write(second, b"x").expect("write"), 1);
}

fn many_connections_at_once_each_get_their_own_bytes(kind: EngineKind) {
    // Thousands at once: each is two descriptors here (ours and the
    // client's), so the soft limit goes up to the hard one first.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, h)| h);
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    // The other tests of the process hold descriptors too.
    let n = 2000.min((hard.saturating_sub(512) / 4) as usize);
    let mut t = Transport::new(cfg(kind)).expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    // The clients: n sockets open together, each sends its own 1 KiB and
    // reads its echo; one thread drives them all with non-blocking I/O.
    let client = std::thread::spawn(move || {
        let mut socks: Vec<(TcpStream, Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_nonblocking(true).expect("nonblocking");
                (s, pattern(1024, i as u64 + 100), Vec::new())
            })
            .collect();
        for (s, msg, _) in &mut socks {
            s.set_nonblocking(false).expect("blocking");
            s.write_all(msg).expect("write");
            s.set_nonblocking(true).expect("nonblocking");
        }
        let end = Instant::now() + LIMIT;
        let mut done = 0;
        while done < n {
            assert!(Instant::now() < end, "echoes missing: {done} of {n}");
            done = 0;
            for (s, msg, got) in &mut socks {
                let mut b = [0u8; 2048];
                if let Ok(n) = s.read(&mut b) {
                    got.extend_from_slice(&b[..n]);
                }
                if got.len() >= msg.len() {
                    done += 1;
                }
            }
        }
        socks.iter().all(|(_, msg, got)| msg == got)
    });
    let mut open = 0u64;
    let mut most = 0u64;
    drive(&mut t, |t, ev| {
        if let Event::Accepted { .. } = ev {
            open += 1;
            most = most.max(t.stats().open);
        }
        echo(t, ev);
        client.is_finished()
    });
    assert!(client.join().expect("client"), "an echo differed");
    assert_eq!(open, n as u64);
    assert_eq!(most, n as u64);
}

fn listeners_on_one_port_share_its_connections_across_threads(kind: EngineKind) {
    // Two "lcores", each with its own transport listening on one port.
    let first = TcpListener::bind(any_port()).expect("probe");
    let addr = first.local_addr().expect("addr");
    drop(first);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let lcores: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let mut t = Transport::new(cfg(kind)).expect("transport");
                t.listen(addr).expect("listen");
                ready.send(()).expect("ready");
                let end = Instant::now() + LIMIT;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    assert!(Instant::now() < end);
                    t.poll().expect("poll");
                    while let Some(ev) = t.next_event() {
                        echo(&mut t, ev);
                    }
                    std::thread::yield_now();
                }
                t.stats()
            })
        })
        .collect();
    ready_rx.recv().expect("ready");
    ready_rx.recv().expect("ready");
    for i in 0..200u64 {
        let mut s = TcpStream::connect(addr).expect("connect");
        let msg = pattern(100, i + 1);
        s.write_all(&msg).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        assert_eq!(got, msg);
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let stats: Vec<Stats> = lcores
        .into_iter()
        .map(|h| h.join().expect("lcore"))
        .collect();
    let accepted: Vec<u64> = stats.iter().map(|s| s.accepted).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 200);
    // The kernel hashes the 4-tuple: both listeners get some.
    assert!(accepted.iter().all(|&a| a > 0), "{accepted:?}");
}

/// Two lcores pinned to CPUs 0 and 1 listen on one port; clients pinned
/// to each CPU connect over loopback, where the kernel takes each SYN on
/// the sending CPU. With `SO_INCOMING_CPU` on the listeners the reuseport
/// group hands each connection to the listener of the CPU that took its
/// SYN, so every connection stays on the cache and the core that handled
/// it in the kernel, not where the 4-tuple's hash would send it.
fn a_pinned_lcore_accepts_the_connections_its_cpu_received(kind: EngineKind) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .take(2)
        .collect();
    if cpus.len() < 2 {
        println!("skip: one CPU, nothing to steer between");
        return;
    }
    let pin = |cpu: usize| {
        let mut set = CpuSet::new();
        set.set(cpu).expect("cpu");
        sched_setaffinity(Pid::from_raw(0), &set).expect("pin");
    };
    let first = TcpListener::bind(any_port()).expect("probe");
    let addr = first.local_addr().expect("addr");
    drop(first);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let lcores: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let stop = stop.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                pin(cpu);
                let mut t = Transport::new(cfg(kind)).expect("transport");
                t.listen(addr).expect("listen");
                ready.send(()).expect("ready");
                // Per client CPU (the byte each client sends), connections
                // accepted here.
                let mut from = std::collections::BTreeMap::<u8, u32>::new();
                let mut seen = std::collections::HashSet::new();
                let end = Instant::now() + LIMIT;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    assert!(Instant::now() < end);
                    t.poll().expect("poll");
                    while let Some(ev) = t.next_event() {
                        if let Event::Readable(c) = ev
                            && let Some(&b) = t.peek(c).expect("open").first()
                            && seen.insert(c)
                        {
                            *from.entry(b).or_default() += 1;
                        }
                        echo(&mut t, ev);
                    }
                    std::thread::yield_now();
                }
                (cpu, from)
            })
        })
        .collect();
    for _ in &cpus {
        ready_rx.recv().expect("ready");
    }
    const EACH: u32 = 40;
    let clients: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                pin(cpu);
                for _ in 0..EACH {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(&[cpu as u8]).expect("write");
                    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).expect("read");
                    assert_eq!(got, [cpu as u8]);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for h in lcores {
        let (cpu, from) = h.join().expect("lcore");
        println!("lcore on cpu {cpu} accepted, by the client's cpu: {from:?}");
        for (&client, &n) in &from {
            assert_eq!(
                usize::from(client),
                cpu,
                "{n} connections from cpu {client} went to the lcore on cpu {cpu}"
            );
            total += n;
        }
    }
    assert_eq!(total, EACH * cpus.len() as u32);
}

fn udp_datagrams_arrive_whole_with_their_sender_and_go_back(kind: EngineKind) {
    let mut t = Transport::new(Config {
        datagram_size: 1500,
        datagram_burst: 8,
        ..cfg(kind)
    })
    .expect("transport");
    let u = t.bind_udp(any_port()).expect("bind");
    let addr = t.udp_addr(u).expect("addr");
    let peer = UdpSocket::bind(any_port()).expect("peer");
    peer.set_read_timeout(Some(LIMIT)).expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    // 50 datagrams (more than a burst), one too long for a slot.
    for i in 0..50u64 {
        peer.send_to(&pattern(10 + i as usize * 20, i + 1), addr)
            .expect("send");
    }
    peer.send_to(&[0u8; 2000], addr).expect("send");
    let mut seen = 0u64;
    drive(&mut t, |t, ev| {
        if let Event::Datagrams(x) = ev {
            while let Some((from, data)) = t.peek_datagram(x).expect("peek") {
                assert_eq!(from, peer_addr);
                assert_eq!(data, &pattern(10 + seen as usize * 20, seen + 1)[..]);
                let back = data.to_vec();
                assert!(t.send_to(x, from, &back).expect("send_to"));
                t.consume_datagram(x).expect("consume");
                seen += 1;
            }
        }
        t.stats().datagrams_truncated == 1 && seen == 50
    });
    t.poll().expect("poll");
    for i in 0..50u64 {
        let mut b = [0u8; 2048];
        let (n, from) = peer.recv_from(&mut b).expect("echo");
        assert_eq!(from, addr);
        assert_eq!(&b[..n], &pattern(10 + i as usize * 20, i + 1)[..]);
    }
    let s = t.stats();
    assert_eq!(
        (s.datagrams_rx, s.datagrams_tx, s.datagrams_truncated),
        (50, 50, 1)
    );
    // Too long to send: refused and counted.
    assert!(!t.send_to(u, peer_addr, &[0u8; 1501]).expect("send_to"));
    assert_eq!(t.stats().datagrams_tx_dropped, 1);
    t.close_udp(u).expect("close");
    assert!(t.udp_addr(u).is_err());
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    for (cfg, what) in [
        (
            Config {
                rx_buffer: 0,
                ..Config::default()
            },
            "rx_buffer",
        ),
        (
            Config {
                datagram_size: 70_000,
                ..Config::default()
            },
            "datagram_size",
        ),
        (
            Config {
                max_connections: 0,
                ..Config::default()
            },
            "max_connections",
        ),
    ] {
        let e = Transport::new(cfg).expect_err("refused");
        assert!(e.to_string().contains(what), "{e}");
    }
    let mut t = Transport::new(Config::default()).expect("transport");
    let busy = TcpListener::bind(any_port()).expect("bind");
    let addr = busy.local_addr().expect("addr");
    // A port held by a socket without SO_REUSEPORT is refused, naming it.
    let e = t.listen(addr).expect_err("in use");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

/// Runs `f` on a thread whose seccomp filter refuses `io_uring_setup` with
/// `EPERM`, as Docker's default profile does.
#[allow(unsafe_code)]
fn without_io_uring<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        const NR_IO_URING_SETUP: u32 = 425;
        let filter = [
            // A = seccomp_data.nr
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: NR_IO_URING_SETUP,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS");
        // SAFETY: `prog` points at `filter`, both alive for the call; the
        // filter applies to this thread only (no TSYNC).
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog,
                0,
                0,
            )
        };
        assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the filtered thread")
}

#[test]
fn epoll_takes_over_where_io_uring_is_refused_and_says_why() {
    // The probe's answer is cached for the process: take it unfiltered, so
    // that this test cannot hide io_uring from the others.
    let _ = super::uring::probe();
    let (engine, skipped, echoed) = without_io_uring(|| {
        // io_uring_setup itself is refused here, as under Docker's seccomp
        // profile.
        assert!(io_uring::IoUring::new(8).is_err());
        // Nothing required (CI's DATAPLANE_REQUIRE names io_uring; the
        // refusal is checked below).
        let none = crate::require::Requirements::of(&[]);
        let (mut t, skipped) = Transport::open(Config::default(), &none).expect("transport");
        let l = t.listen(any_port()).expect("listen");
        let addr = t.listener_addr(l).expect("addr");
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"ping").expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read");
            got
        });
        drive(&mut t, |t, ev| {
            if matches!(ev, Event::Closed(..)) {
                return true;
            }
            echo(t, ev);
            false
        });
        (t.engine(), skipped, client.join().expect("client"))
    });
    assert_eq!(engine, EngineKind::Epoll);
    assert_eq!(echoed, b"ping");
    let skip = skipped
        .iter()
        .find(|s| s.backend == "io_uring")
        .expect("io_uring passed over");
    assert!(
        skip.reason.contains("Operation not permitted") || skip.reason.contains("EPERM"),
        "{}",
        skip.reason
    );

    // Where io_uring is required, the fallback is refused with the reason.
    let required = crate::require::Requirements::of(&[crate::require::Capability::IoUring]);
    let refused = without_io_uring(move || {
        Transport::open(Config::default(), &required)
            .map(|_| ())
            .expect_err("refused")
    });
    assert!(
        matches!(&refused, crate::Error::Required { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("io_uring"), "{refused}");
}

#[test]
fn a_named_engine_is_used_or_refused_never_replaced() {
    let _ = super::uring::probe();
    let named = Config {
        engine: crate::backend::Choice::Named(EngineKind::IoUring),
        ..Config::default()
    };
    let e = without_io_uring(move || Transport::new(named).map(|_| ()).expect_err("refused"));
    assert!(e.to_string().contains("io_uring"), "{e}");
    let t = Transport::new(cfg(EngineKind::Epoll)).expect("epoll");
    assert_eq!(t.engine(), EngineKind::Epoll);
    assert_eq!(
        "uring"
            .parse::<crate::backend::Choice<EngineKind>>()
            .expect("parse"),
        crate::backend::Choice::Named(EngineKind::IoUring)
    );
}

pub(super) mod tls;

/// io_uring: a request consumed in the pass it arrives is read in the
/// provided buffer it landed in; one left for a later pass is copied
/// into the receive buffer then, and its bytes are still all there.
#[test]
fn io_uring_reads_in_place_what_is_consumed_in_the_pass_it_arrives() {
    if !runs(EngineKind::IoUring) {
        return;
    }
    let mut t = Transport::new(cfg(EngineKind::IoUring)).expect("transport");
    let l = t.listen(any_port()).expect("listen");
    let addr = t.listener_addr(l).expect("addr");
    let (go, wait) = std::sync::mpsc::channel::<Vec<u8>>();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for req in wait {
            s.write_all(&req).expect("write");
            let mut back = vec![0; req.len()];
            s.read_exact(&mut back).expect("read");
            assert_eq!(back, req);
        }
    });
    // Echoes one request, consumed as it comes.
    let echo_one = |t: &mut Transport, req: Vec<u8>| {
        let len = req.len();
        go.send(req).expect("client");
        let mut got = 0;
        drive(t, |t, ev| {
            if let Event::Readable(c) = ev {
                let data = t.peek(c).expect("peek").to_vec();
                assert_eq!(t.write(c, &data).expect("write"), data.len());
                t.consume(c, data.len()).expect("consume");
                got += data.len();
            }
            got == len
        });
    };
    for i in 0..50u64 {
        echo_one(&mut t, pattern(1 + (i as usize * 97) % 1400, i));
    }
    let s = t.stats();
    assert!(s.rx_in_place >= 50, "{s:?}");
    // One left for a pass: still there after it, copied, then echoed.
    let req = pattern(1000, 99);
    go.send(req.clone()).expect("client");
    let mut conn = None;
    drive(&mut t, |t, ev| {
        if let Event::Readable(c) = ev
            && t.peek(c).expect("peek").len() == req.len()
        {
            conn = Some(c);
            return true;
        }
        false
    });
    let c = conn.expect("readable");
    t.poll().expect("poll");
    assert_eq!(t.peek(c).expect("peek"), &req[..]);
    // Copied by this pass, or by an earlier one if the kernel cut it.
    assert!(t.stats().rx_in_place_copied >= 1, "{:?}", t.stats());
    assert_eq!(t.write(c, &req).expect("write"), req.len());
    t.consume(c, req.len()).expect("consume");
    for _ in 0..100 {
        t.poll().expect("poll");
    }
    drop(go);
    client.join().expect("client");
}
