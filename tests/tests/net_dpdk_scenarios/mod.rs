//! The child side of `net_dpdk`: each scenario runs with a fresh EAL in a
//! child process of its own and checks that every packet is accounted for
//! and every mbuf is home.

use dataplane::net::dpdk::{self, EalConfig, EalState, Memory, PciScan, PoolState};
use dataplane::net::{Backend, DropReason, MbufBatch, Port, PortConfig};
use dataplane::wire::rss::Steering;
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use std::process::Command;
use std::time::{Duration, Instant};

fn eal_config(memory: Memory) -> EalConfig {
    EalConfig::new()
        .memory(memory)
        .pci(PciScan::None)
        .log_level("*:warning")
}

fn small_port(device: &str, queues: u16) -> PortConfig {
    PortConfig::new(device)
        .with_queues(queues)
        .with_descriptors(256, 256)
        .with_mbufs(2048, 64)
}

/// Every pool the backend made is freed with all its mbufs back; then the
/// EAL shuts down cleanly.
fn all_mbufs_home_and_shutdown() {
    let pools = dpdk::pools();
    assert!(!pools.is_empty(), "no pools were made");
    for p in &pools {
        assert_eq!(p.state, PoolState::Freed, "{p:?}");
        assert_eq!(p.available, p.size, "{p:?}: mbufs missing");
    }
    let report = dpdk::shutdown().expect("shutdown");
    assert!(report.eal_cleaned_up, "{report:?}");
    assert!(report.pools_leaked.is_empty(), "{report:?}");
    assert!(matches!(dpdk::state(), EalState::ShutDown));
}

/// A frame numbered `seq`: broadcast Ethernet, an experimental ethertype,
/// the number in the payload.
fn fill_frame(m: &mut Mbuf, seq: u32, len: usize) {
    let data = m.append(len).expect("room for the frame");
    data.fill(0);
    data[..6].fill(0xff);
    data[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    data[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    data[14..18].copy_from_slice(&seq.to_be_bytes());
}

fn frame_seq(m: &Mbuf) -> Option<u32> {
    let d = m.data();
    (d.len() >= 18 && d[12..14] == 0x88b5u16.to_be_bytes())
        .then(|| u32::from_be_bytes([d[14], d[15], d[16], d[17]]))
}

/// net_ring0 loops every queue's transmit ring back to its receive ring.
pub fn ring(memory: Memory) {
    dpdk::configure(eal_config(memory).vdev("net_ring0")).expect("configure");
    let info = dpdk::init().expect("EAL init");
    println!("EAL: {info:?}");
    // net_ring in DPDK 22.11 counts no bytes: the queues count them.
    let cfg = small_port("net_ring0", 2).with_software_byte_counts(true);
    let mut queues = dpdk::open(&cfg).expect("open net_ring0");
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0].capabilities().backend, "dpdk");

    // This thread registered as an EAL lcore of its own.
    let me = dpdk::lcore_id().expect("an lcore id for the test thread");

    let per_queue = 3000u32;
    let mut attempted = 0u64;
    let mut unsent = 0u64;
    let mut received = 0u64;
    for q in queues.iter_mut() {
        let (mut next, mut expect) = (0u32, 0u32);
        let mut batch = MbufBatch::new();
        let mut rx = MbufBatch::new();
        while expect < per_queue {
            if next < per_queue {
                let want = (per_queue - next).min(32) as usize;
                let got = q.alloc_burst(want, &mut batch);
                assert!(got > 0, "pool empty while only {} in flight", next - expect);
                for m in batch.iter_mut() {
                    fill_frame(m, next, 60);
                    next += 1;
                }
                attempted += got as u64;
                q.tx_burst(&mut batch);
                // What the ring did not take is the caller's: counted and
                // freed, and sent again under a new number.
                unsent += batch.len() as u64;
                next -= batch.len() as u32;
                batch.clear();
            }
            let n = q.rx_burst(&mut rx);
            received += n as u64;
            for m in rx.drain() {
                assert_eq!(frame_seq(&m), Some(expect), "out of order or corrupt");
                assert_eq!(m.len(), 60);
                expect += 1;
            }
        }
        let s = q.stats();
        assert_eq!(s.tx_packets, u64::from(per_queue));
        assert_eq!(s.rx_packets, u64::from(per_queue));
        assert_eq!(s.rx_bytes, 60 * u64::from(per_queue));
        assert_eq!(s.tx_bytes, s.rx_bytes);
    }
    assert_eq!(
        attempted,
        received + unsent,
        "sent = received + counted drops"
    );
    #[cfg(dpdk)]
    callbacks_run(&mut queues[0]);

    // Another thread gets an lcore id of its own; when it exits, the id
    // is given back (and the next thread may get it again).
    let q1 = queues.pop().expect("queue 1");
    let (q1, other) = std::thread::spawn(move || {
        let mut q1 = q1;
        let mut b = MbufBatch::new();
        q1.alloc_burst(8, &mut b);
        drop(b);
        (q1, dpdk::lcore_id())
    })
    .join()
    .expect("thread");
    assert!(other.is_some() && other != Some(me), "{other:?} vs {me}");

    // Packets left in the ring at close are drained back to the pool.
    let mut b = MbufBatch::new();
    let n = queues[0].alloc_burst(40, &mut b);
    assert_eq!(n, 40);
    for (i, m) in b.iter_mut().enumerate() {
        fill_frame(m, i as u32, 60);
    }
    assert_eq!(queues[0].tx_burst(&mut b), 40);
    drop(q1);
    drop(queues);

    // The port can be opened again after its close (detached and probed
    // afresh, with the EAL's --vdev arguments).
    let again = dpdk::open(&small_port("net_ring0", 1)).expect("reopen net_ring0");
    drop(again);
    all_mbufs_home_and_shutdown();
}

/// Callbacks added with DPDK's own API run on the framework's burst path
/// (which reads DPDK's fast-path table itself rather than calling
/// `rte_eth_rx_burst`): each sees every packet of its queue, and what a
/// callback returns is what the caller gets.
#[cfg(dpdk)]
fn callbacks_run(q: &mut dpdk::DpdkPort) {
    use dpdk_sys::rte_mbuf;
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicU64, Ordering};

    static RX_SEEN: AtomicU64 = AtomicU64::new(0);
    static TX_SEEN: AtomicU64 = AtomicU64::new(0);

    /// Counts the packets received and hands back all but the last of a
    /// burst of more than one, which it frees (as a filtering callback
    /// would).
    unsafe extern "C" fn on_rx(
        _port: u16,
        _queue: u16,
        pkts: *mut *mut rte_mbuf,
        nb: u16,
        _max: u16,
        seen: *mut c_void,
    ) -> u16 {
        // SAFETY: `seen` is the static counter registered below.
        let seen = unsafe { &*seen.cast::<AtomicU64>() };
        seen.fetch_add(u64::from(nb), Ordering::Relaxed);
        if nb > 1 {
            // SAFETY: `pkts` holds `nb` mbufs.
            let last = unsafe { pkts.add(usize::from(nb) - 1) };
            // SAFETY: the last mbuf just received, not handed to the caller
            // (the returned count excludes it).
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(last, 1) };
            return nb - 1;
        }
        nb
    }

    unsafe extern "C" fn on_tx(
        _port: u16,
        _queue: u16,
        _pkts: *mut *mut rte_mbuf,
        nb: u16,
        seen: *mut c_void,
    ) -> u16 {
        // SAFETY: `seen` is the static counter registered below.
        let seen = unsafe { &*seen.cast::<AtomicU64>() };
        seen.fetch_add(u64::from(nb), Ordering::Relaxed);
        nb
    }

    let (port, queue) = (q.port_id(), q.queue_id());
    // SAFETY: an open, started port and its queue; the callbacks and their
    // static counters live for the whole process.
    let rx_seen = (&raw const RX_SEEN).cast_mut().cast();
    let tx_seen = (&raw const TX_SEEN).cast_mut().cast();
    // SAFETY: an open, started port and its queue; the callback and its
    // static counter live for the whole process.
    let rx = unsafe { dpdk_sys::rte_eth_add_rx_callback(port, queue, Some(on_rx), rx_seen) };
    // SAFETY: as above.
    let tx = unsafe { dpdk_sys::rte_eth_add_tx_callback(port, queue, Some(on_tx), tx_seen) };
    assert!(!rx.is_null() && !tx.is_null(), "DPDK refused a callback");

    let mut batch = MbufBatch::new();
    assert_eq!(q.alloc_burst(8, &mut batch), 8);
    for (i, m) in batch.iter_mut().enumerate() {
        fill_frame(m, i as u32, 60);
    }
    assert_eq!(q.tx_burst(&mut batch), 8);
    assert_eq!(
        TX_SEEN.load(Ordering::Relaxed),
        8,
        "the tx callback saw the burst"
    );
    let mut rx_batch = MbufBatch::new();
    let got = q.rx_burst(&mut rx_batch);
    assert_eq!(
        RX_SEEN.load(Ordering::Relaxed),
        8,
        "the rx callback saw the burst"
    );
    assert_eq!(got, 7, "the rx callback's count is what the caller gets");
    let seqs: Vec<_> = rx_batch.iter().map(frame_seq).collect();
    assert_eq!(seqs, (0..7).map(Some).collect::<Vec<_>>());
}

/// net_null: an endless source (64-byte frames from the queue's pool) and
/// a sink that frees what it is given.
pub fn null(memory: Memory) {
    dpdk::configure(eal_config(memory)).expect("configure");
    // Not in the EAL's --vdev list: open creates it (rte_dev_probe).
    let mut queues = dpdk::open(&small_port("net_null0,size=64", 1)).expect("open net_null0");
    let q = &mut queues[0];
    assert!(q.checks_natives_by_address(), "a window of DPDK memory");
    let size = q.pool_size();
    let mut batch = MbufBatch::new();
    let mut forwarded = 0u64;
    for _ in 0..1000 {
        let n = q.rx_burst(&mut batch);
        assert_eq!(n, 32);
        assert!(batch.iter().all(|m| m.len() == 64 && !m.is_native()));
        forwarded += q.tx_burst(&mut batch) as u64;
        assert!(batch.is_empty(), "net_null takes every packet");
    }
    let s = q.stats();
    assert_eq!(s.rx_packets, 32_000);
    assert_eq!(s.tx_packets, forwarded);
    // The driver's count, which net_null in DPDK 22.11 does not keep.
    assert!(
        s.rx_bytes == 0 || s.rx_bytes == 64 * 32_000,
        "{} bytes in 32000 frames of 64",
        s.rx_bytes
    );
    assert_eq!(q.pool_available(), size);

    // An empty pool: the driver cannot receive, nothing is lost.
    let mut held = Vec::new();
    loop {
        let mut b = MbufBatch::new();
        if q.alloc_burst(64, &mut b) == 0 {
            break;
        }
        held.push(b);
    }
    assert_eq!(q.pool_available(), 0);
    assert_eq!(q.rx_burst(&mut batch), 0);
    let held_count: usize = held.iter().map(|b| b.len()).sum();
    assert_eq!(held_count as u32, size);
    drop(held);
    assert_eq!(q.pool_available(), size);

    // A native mbuf is copied into a DPDK one to be sent; one too large
    // for a DPDK mbuf is dropped and counted.
    let native = MbufPool::new(MbufPoolConfig {
        name: "native".into(),
        count: 64,
        cache_size: 0,
        data_room: 9216,
        ..MbufPoolConfig::default()
    })
    .expect("native pool");
    let mut b = MbufBatch::new();
    let mut m = native.alloc().expect("native mbuf");
    fill_frame(&mut m, 7, 100);
    b.push(m).expect("room");
    let mut big = native.alloc().expect("native mbuf");
    fill_frame(&mut big, 8, 4000);
    b.push(big).expect("room");
    assert_eq!(q.tx_burst(&mut b), 1);
    assert!(b.is_empty());
    assert_eq!(q.native_copies(), 1);
    assert_eq!(q.stats().dropped(DropReason::Oversized), 1);
    assert_eq!(native.in_use(), 0);
    assert_eq!(q.pool_available(), size);

    // The queue's own mbufs, told by their addresses, with a native one
    // among them: only that one is copied, and the order is kept.
    let mut b = MbufBatch::new();
    assert_eq!(q.alloc_burst(2, &mut b), 2);
    let mut m = native.alloc().expect("native mbuf");
    fill_frame(&mut m, 9, 60);
    b.push(m).expect("room");
    assert_eq!(q.alloc_burst(2, &mut b), 2);
    assert_eq!(q.tx_burst(&mut b), 5);
    assert_eq!(q.native_copies(), 2);
    let mut b = MbufBatch::new();
    assert_eq!(q.alloc_burst(4, &mut b), 4);
    assert_eq!(q.tx_burst(&mut b), 4);
    assert_eq!(q.native_copies(), 2, "own mbufs are sent as they are");
    assert_eq!(native.in_use(), 0);
    assert_eq!(q.pool_available(), size);

    drop(queues);
    // Opened again after its close.
    let again = dpdk::Dpdk
        .open(&small_port("net_null0", 1))
        .expect("reopen net_null0");
    drop(again);

    // Four queues: net_null has RSS (its key and redirection table can be
    // read, though it spreads nothing), so the port reports a Toeplitz
    // steering that the TCP stack can pick source ports by.
    let mut four =
        dpdk::open(&small_port("net_null1", 4)).expect("open net_null1 with four queues");
    // Each queue has a pool of its own: queue 0 sends queue 1's mbufs as
    // they are (a DPDK pool that is not its own).
    let mut b = MbufBatch::new();
    assert_eq!(four[1].alloc_burst(8, &mut b), 8);
    assert_eq!(four[0].tx_burst(&mut b), 8);
    assert_eq!(four[0].native_copies(), 0);
    let caps = four[0].capabilities();
    assert!(caps.rss);
    match caps.steering.clone().expect("steering") {
        Steering::Toeplitz { key, reta } => {
            println!("net_null: {}-byte key, {} entries", key.len(), reta.len());
            assert!(key.len() >= 16);
            assert!(reta.len().is_power_of_two());
            assert!(reta.iter().all(|&q| q < 4), "{reta:?}");
        }
        other => panic!("{other:?}"),
    }
    // Each queue on a thread of its own, more threads than cores, all
    // forwarding and reading their counters at once (the port's driver
    // counters are read under one lock and shared): every count only
    // grows, and every mbuf comes home.
    let threads: Vec<_> = four
        .drain(..)
        .map(|mut q| {
            std::thread::spawn(move || {
                let mut batch = MbufBatch::new();
                let first = q.stats();
                let mut last = first;
                for i in 0..3000 {
                    q.rx_burst(&mut batch);
                    q.tx_burst(&mut batch);
                    assert!(batch.is_empty(), "net_null takes every packet");
                    if i % 16 == 0 {
                        let s = q.stats();
                        assert!(s.rx_packets >= last.rx_packets && s.tx_packets >= last.tx_packets);
                        assert!(s.rx_bytes >= last.rx_bytes && s.tx_bytes >= last.tx_bytes);
                        last = s;
                    }
                }
                let s = q.stats();
                let received = s.rx_packets - first.rx_packets;
                assert!(received > 0, "{s:?}");
                assert_eq!(s.tx_packets - first.tx_packets, received, "{s:?}");
                q
            })
        })
        .collect();
    four = threads
        .into_iter()
        .map(|t| t.join().expect("queue thread"))
        .collect();
    for q in &four {
        assert_eq!(
            q.pool_available(),
            q.pool_size(),
            "queue {} mbufs home",
            q.queue_id()
        );
    }
    drop(four);
    all_mbufs_home_and_shutdown();
}

/// Ports opened with `shared_pool` draw from one pool: one is made for
/// both ports (three queues), each port's mbufs are forwarded through the
/// other, and the pool stays while either port is open or an mbuf of it
/// is out, then is freed with every mbuf home; four ports opened at once
/// from four threads get one pool. Too small a shared pool, or a port
/// whose queues the pool cannot also serve, is refused with the reason.
pub fn shared_pool(memory: Memory) {
    dpdk::configure(eal_config(memory)).expect("configure");
    let cfg = |dev: &str, queues| small_port(dev, queues).with_shared_pool(8192);

    let refused = dpdk::open(&small_port("net_null0,size=64", 1).with_shared_pool(100))
        .expect_err("a pool of 100 cannot fill 256 descriptors");
    assert!(
        refused.to_string().contains("shared pool of 100 mbufs"),
        "{refused}"
    );

    let mut a = dpdk::open(&cfg("net_null0,size=64", 1)).expect("open net_null0");
    let mut b = dpdk::open(&cfg("net_null1,size=64", 2)).expect("open net_null1");
    let pools = dpdk::pools();
    assert_eq!(pools.len(), 1, "one pool for both ports: {pools:?}");
    assert!(pools[0].shared && pools[0].size == 8192, "{pools:?}");
    let size = a[0].pool_size();
    assert_eq!(size, 8192);
    assert_eq!(b[1].pool_size(), size);

    let mut batch = MbufBatch::new();
    for _ in 0..500 {
        assert_eq!(a[0].rx_burst(&mut batch), 32);
        assert_eq!(b[0].tx_burst(&mut batch), 32);
        assert_eq!(b[1].rx_burst(&mut batch), 32);
        assert_eq!(a[0].tx_burst(&mut batch), 32);
    }
    assert_eq!(a[0].stats().rx_packets, 16_000);
    assert_eq!(b[0].stats().tx_packets + b[1].stats().rx_packets, 32_000);
    assert_eq!(a[0].pool_available(), size, "every mbuf home");

    // The pool promises each queue its receive ring and a burst (288 here,
    // 864 for the three queues); a port whose queues would take more than
    // is left is refused with the reason, and the pool is untouched.
    let big = |dev: &str| cfg(dev, 1).with_descriptors(4096, 256);
    let c = dpdk::open(&big("net_null2,size=64")).expect("4128 more fit in 8192");
    let refused = dpdk::open(&big("net_null3,size=64")).expect_err("another 4128 do not");
    assert!(refused.to_string().contains("promised"), "{refused}");
    drop(c);
    assert_eq!(dpdk::pools().len(), 1, "the refusal made no pool");

    // Closing one port leaves the pool to the other, with mbufs of the
    // closed port's receive still out.
    assert_eq!(a[0].rx_burst(&mut batch), 32);
    drop(a);
    assert_eq!(dpdk::pools()[0].state, PoolState::InUse);
    assert_eq!(b[0].pool_available(), size - 32);
    assert_eq!(b[0].tx_burst(&mut batch), 32);
    assert_eq!(b[0].pool_available(), size);
    drop(b);

    // Ports opened at once from more threads than cores share one pool
    // too (a new one: the first was freed with its last port).
    let threads: Vec<_> = (2..6)
        .map(|i| {
            std::thread::spawn(move || {
                let mut q = dpdk::open(&cfg(&format!("net_null{i},size=64"), 1)).expect("open");
                let mut batch = MbufBatch::new();
                for _ in 0..100 {
                    assert_eq!(q[0].rx_burst(&mut batch), 32);
                    assert_eq!(q[0].tx_burst(&mut batch), 32);
                }
                q
            })
        })
        .collect();
    let ports: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let live: Vec<_> = dpdk::pools()
        .into_iter()
        .filter(|p| p.state == PoolState::InUse)
        .collect();
    assert_eq!(live.len(), 1, "one pool for the four ports: {live:?}");
    assert_eq!(ports[0][0].pool_available(), size);
    drop(ports);
    all_mbufs_home_and_shutdown();
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {} failed", args.join(" "));
}

/// The IPv4 header checksum of `h`.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram from 10.99.0.2:9999 to 10.99.0.1:`dport`, as a frame to
/// `dst`.
fn fill_udp(m: &mut Mbuf, dst: [u8; 6], dport: u16, seq: u32) {
    let payload = 8usize;
    let len = 14 + 20 + 8 + payload;
    let d = m.append(len).expect("room");
    d.fill(0);
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    d[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut d[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + payload) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 99, 0, 2]);
    ip[16..20].copy_from_slice(&[10, 99, 0, 1]);
    let c = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut d[34..42];
    udp[..2].copy_from_slice(&9999u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    // UDP checksum 0: none, allowed over IPv4.
    d[42..46].copy_from_slice(&seq.to_be_bytes());
}

/// net_tap: a kernel interface. The kernel sends UDP datagrams out of it
/// (DPDK receives them) and receives DPDK's datagrams on a socket.
pub fn tap_child(memory: Memory) {
    let iface = format!("dptap{}", std::process::id() % 100_000);
    dpdk::configure(eal_config(memory)).expect("configure");
    let mut queues =
        dpdk::open(&small_port(&format!("net_tap0,iface={iface}"), 1)).expect("open net_tap0");
    let q = &mut queues[0];
    let _ = Command::new("sysctl")
        .args(["-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")])
        .status();
    ip(&["link", "set", &iface, "up"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", &iface]);
    ip(&[
        "neigh",
        "add",
        "10.99.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        &iface,
    ]);
    let mac_text =
        std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).expect("the tap's MAC");
    let mut mac = [0u8; 6];
    for (i, part) in mac_text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).expect("hex");
    }

    // Kernel -> DPDK.
    let sender = std::net::UdpSocket::bind("10.99.0.1:0").expect("bind sender");
    let count = 200u32;
    let mut got = 0u32;
    let mut other = 0u64;
    let mut rx_bytes = 0u64;
    let mut batch = MbufBatch::new();
    for seq in 0..count {
        sender
            .send_to(&seq.to_be_bytes(), "10.99.0.2:9999")
            .expect("send");
        if seq % 16 == 15 {
            got += tap_receive(q, &mut batch, &mut other, &mut rx_bytes, Duration::ZERO);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < count && Instant::now() < deadline {
        got += tap_receive(
            q,
            &mut batch,
            &mut other,
            &mut rx_bytes,
            Duration::from_millis(1),
        );
    }
    assert_eq!(got, count, "kernel sent {count}, DPDK received {got}");
    println!("tap: {other} other frames from the kernel (ignored)");
    let s = q.stats();
    assert_eq!(s.rx_bytes, rx_bytes, "the driver's received bytes");
    assert_eq!(s.tx_bytes, 0);

    // DPDK -> kernel.
    let receiver = std::net::UdpSocket::bind("10.99.0.1:7777").expect("bind receiver");
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut sent = 0u32;
    let mut tx_bytes = 0u64;
    let mut delivered = 0u32;
    let mut buf = [0u8; 64];
    while sent < count {
        let mut b = MbufBatch::new();
        let n = q.alloc_burst(16.min((count - sent) as usize), &mut b);
        assert!(n > 0);
        for (i, m) in b.iter_mut().enumerate() {
            fill_udp(m, mac, 7777, sent + i as u32);
        }
        tx_bytes += b.iter().map(|m| m.len() as u64).sum::<u64>();
        let tx = q.tx_burst(&mut b);
        assert_eq!(tx, n, "the tap took fewer than offered");
        sent += tx as u32;
        for _ in 0..tx {
            let (len, from) = receiver.recv_from(&mut buf).expect("datagram from DPDK");
            assert_eq!(len, 8);
            assert_eq!(from.to_string(), "10.99.0.2:9999");
            delivered += 1;
        }
    }
    assert_eq!(
        delivered, sent,
        "DPDK sent {sent}, the kernel delivered {delivered}"
    );
    // The port reads its driver's counters at most every 10 ms: later
    // than that, the sends are in them.
    std::thread::sleep(Duration::from_millis(20));
    let s = q.stats();
    assert_eq!(s.tx_packets, u64::from(sent));
    assert_eq!(s.rx_packets, u64::from(count) + other);
    // Bytes are net_tap's own count (it keeps them per queue), which must
    // be what went through.
    assert_eq!(s.rx_bytes, rx_bytes, "the driver's received bytes");
    assert_eq!(s.tx_bytes, tx_bytes, "the driver's sent bytes");
    drop(batch);
    drop(queues);
    // The interface went away with the port.
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{iface}")).exists(),
        "{iface} outlived its port"
    );
    all_mbufs_home_and_shutdown();
}

/// Two vdevs wired to each other (memif server and client, the two ends
/// of a veth): both open through the backend, their links come up, and
/// numbered frames sent on `from` arrive on `to` in order (frames of
/// others, if any, are counted and ignored).
pub fn between(memory: Memory, from: &str, to: &str) {
    dpdk::configure(eal_config(memory)).expect("configure");
    // The receiving end first: a memif server must listen before its
    // client starts.
    let mut b = dpdk::open(&small_port(to, 1)).unwrap_or_else(|e| panic!("open {to}: {e}"));
    let mut a = dpdk::open(&small_port(from, 1)).unwrap_or_else(|e| panic!("open {from}: {e}"));
    let (tx, rx) = (&mut a[0], &mut b[0]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(tx.link().up && rx.link().up) {
        assert!(Instant::now() < deadline, "the links did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let count = 256u32;
    let (mut sent, mut expect, mut other) = (0u32, 0u32, 0u64);
    let mut batch = MbufBatch::new();
    let mut got = MbufBatch::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while expect < count {
        assert!(
            Instant::now() < deadline,
            "sent {sent}, received {expect} in order"
        );
        if sent < count {
            let n = tx.alloc_burst((count - sent).min(32) as usize, &mut batch);
            for (i, m) in batch.iter_mut().enumerate() {
                fill_frame(m, sent + i as u32, 60);
            }
            sent += tx.tx_burst(&mut batch) as u32;
            // What the port did not take is sent again under its number.
            debug_assert!(batch.len() <= n);
            batch.clear();
        }
        rx.rx_burst(&mut got);
        for m in got.drain() {
            match frame_seq(&m) {
                Some(seq) => {
                    assert_eq!(seq, expect, "out of order or corrupt");
                    expect += 1;
                }
                None => other += 1,
            }
        }
        if expect < sent {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    println!("{from} -> {to}: {count} frames, {other} others ignored");
    assert_eq!(tx.stats().tx_packets, u64::from(count));
    drop(batch);
    drop(a);
    drop(b);
    all_mbufs_home_and_shutdown();
}

/// Receives once (after `wait`), returns the datagrams to 10.99.0.2:9999
/// seen, counts the rest in `other`.
fn tap_receive(
    q: &mut dyn Port,
    batch: &mut MbufBatch,
    other: &mut u64,
    bytes: &mut u64,
    wait: Duration,
) -> u32 {
    std::thread::sleep(wait);
    q.rx_burst(batch);
    let mut got = 0;
    for m in batch.drain() {
        let d = m.data();
        *bytes += d.len() as u64;
        let ours = d.len() >= 42
            && d[12..14] == [0x08, 0x00]
            && d[30..34] == [10, 99, 0, 2]
            && d[36..38] == 9999u16.to_be_bytes();
        if ours {
            got += 1;
        } else {
            *other += 1;
        }
    }
    got
}

pub fn eal_failure() {
    let text = match dpdk::Dpdk.open(&small_port("net_null0", 1)) {
        Ok(_) => panic!("the EAL must fail on an unknown argument"),
        Err(e) => e.to_string(),
    };
    println!("open failed as it should: {text}");
    assert!(text.contains("rte_eal_init"), "{text}");
    assert!(text.contains("--no-such-eal-option"), "{text}");
    assert!(text.contains("Invalid argument"), "{text}");
    assert!(matches!(dpdk::state(), EalState::Failed(_)));
    let probe = dpdk::Dpdk.probe();
    assert!(!probe.available, "{probe}");
    assert!(probe.reason.contains("Invalid argument"), "{probe}");
    // Kept: DPDK cannot initialise twice.
    let again = dpdk::Dpdk.open(&small_port("net_null0", 1));
    assert!(again.is_err());
}

/// The user-space TCP/IP stack on `device` (one end of a veth; Linux's TCP
/// in namespace `peer_ns` on the other): curl and socat transfers, every
/// byte compared, every mbuf home.
pub fn tcp_stack(memory: Memory, device: &str, peer_ns: &str) {
    use dataplane::transport::stack::Stack;
    use dataplane_tests::stack_peers::{curl_and_socat_against_the_stack, stack_config};
    dpdk::configure(eal_config(memory)).expect("configure");
    let mut ports =
        dpdk::open(&small_port(device, 1)).unwrap_or_else(|e| panic!("open {device}: {e}"));
    let port = ports.remove(0);
    assert!(
        port.capabilities().mac.is_some(),
        "net_af_packet has the veth's MAC"
    );
    let mut s = Stack::new(port, stack_config(1500)).expect("stack");
    curl_and_socat_against_the_stack(peer_ns, &mut s, 4 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert_eq!(st.accepted, 2);
    assert_eq!(st.rx_bad_checksum, 0);
    drop(s);
    all_mbufs_home_and_shutdown();
}

/// The user-space TCP/IP stack on `net_tap`, whose PMD verifies checksums
/// on receive and computes them on transmit (in software, as a NIC would
/// in hardware): the stack leaves both to the port and reads the verdict
/// from each mbuf's flags. The tap's kernel side (10.99.0.2, in this
/// namespace, `peer_ns`) runs curl and socat; every byte is compared, so
/// a header the stack left for the device and the device did not finish
/// would show as a transfer that never completes.
pub fn tcp_stack_on_tap(memory: Memory, peer_ns: &str) {
    use dataplane::transport::stack::Stack;
    use dataplane_tests::stack_peers::{curl_and_socat_against_the_stack, stack_config};
    let iface = format!("dpst{}", std::process::id() % 100_000);
    dpdk::configure(eal_config(memory)).expect("configure");
    let cfg = small_port(&format!("net_tap0,iface={iface}"), 1).with_tx_checksum(true);
    let mut ports = dpdk::open(&cfg).expect("open net_tap0");
    let port = ports.remove(0);
    let caps = port.capabilities();
    assert!(caps.tx_checksum && caps.rx_checksum, "{caps:?}");
    let _ = Command::new("sysctl")
        .args(["-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")])
        .status();
    ip(&["link", "set", &iface, "up"]);
    ip(&["addr", "add", "10.99.0.2/24", "dev", &iface]);
    let mut s = Stack::new(port, stack_config(1500)).expect("stack");
    curl_and_socat_against_the_stack(peer_ns, &mut s, 1 << 20);
    let st = s.stats();
    println!("{st:?}");
    assert_eq!(st.accepted, 2);
    assert_eq!(st.rx_bad_checksum, 0);
    assert!(st.tx_checksum_offloaded > 100, "{st:?}");
    assert!(st.rx_checksum_offloaded > 100, "{st:?}");
    drop(s);
    all_mbufs_home_and_shutdown();
}
