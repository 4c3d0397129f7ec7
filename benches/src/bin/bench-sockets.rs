//! One side of the socket-backend comparison that `scripts/bench-sockets.sh`
//! runs between two network namespaces: a single thread that sends or
//! receives 64-byte frames (18-byte UDP payloads) flat out for a while,
//! over the AF_XDP backend, DPDK's `net_af_xdp` driver on the same
//! interface (through the DPDK backend, so the loop is the same), the
//! AF_PACKET backend, the io_uring UDP backend, or a plain
//! `sendmmsg`/`recvmmsg` loop on a UDP socket (the baseline), 32 packets
//! per call in each.
//!
//! ```text
//! bench-sockets send|recv af_xdp|dpdk_af_xdp|af_packet|io_uring|mmsg SECS IFACE LOCAL_IP PEER_IP PEER_MAC
//! ```
//!
//! Prints one line of `key=value` pairs: packets, seconds, packets per
//! second, the CPU seconds the process used (user + system, from
//! `getrusage`) and packets per CPU second, which is what "per core"
//! means here. Receivers count from the first packet to the last, so
//! their start before the sender does not dilute the rate; they busy-poll
//! (`MSG_DONTWAIT` for the baseline), as a poll-mode lcore does.

use dataplane::net::{self, BackendChoice, BackendKind, MbufBatch, Port, PortConfig};
use dataplane::wire::Ipv4Packet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Packets per call (DPDK's MAX_PKT_BURST).
const BURST: usize = 32;
/// UDP payload of a 64-byte frame: 64 - 4 (FCS) - 14 - 20 - 8.
const PAYLOAD: usize = 18;
const SRC_PORT: u16 = 9001;
const DST_PORT: u16 = 9000;

struct Opts {
    send: bool,
    backend: String,
    secs: f64,
    iface: String,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    peer_mac: [u8; 6],
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-sockets send|recv af_xdp|dpdk_af_xdp|af_packet|io_uring|mmsg SECS IFACE LOCAL_IP PEER_IP PEER_MAC"
    );
    std::process::exit(2)
}

fn opts() -> Opts {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 7 {
        usage();
    }
    let mac: Vec<u8> = a[6]
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let (Ok(secs), Ok(local), Ok(peer), Ok(peer_mac)) = (
        a[2].parse(),
        a[4].parse(),
        a[5].parse(),
        <[u8; 6]>::try_from(mac.as_slice()),
    ) else {
        usage()
    };
    let send = match a[0].as_str() {
        "send" => true,
        "recv" => false,
        _ => usage(),
    };
    Opts {
        send,
        backend: a[1].clone(),
        secs,
        iface: a[3].clone(),
        local,
        peer,
        peer_mac,
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// An Ethernet/IPv4/UDP frame of 60 bytes (64 with the FCS).
fn frame(o: &Opts, own_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + PAYLOAD];
    f[..6].copy_from_slice(&o.peer_mac);
    f[6..12].copy_from_slice(&own_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&o.local.octets());
    ip[16..20].copy_from_slice(&o.peer.octets());
    Ipv4Packet::new_unchecked(&mut f[14..34]).fill_checksum();
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&SRC_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&DST_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f
}

/// Counts packets and the time from the first to the last.
struct Meter {
    n: u64,
    first: Option<Instant>,
    last: Instant,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            n: 0,
            first: None,
            last: Instant::now(),
        }
    }
    fn add(&mut self, n: usize) {
        if n > 0 {
            let now = Instant::now();
            self.first.get_or_insert(now);
            self.last = now;
            self.n += n as u64;
        }
    }
    fn secs(&self) -> f64 {
        self.first
            .map_or(0.0, |f| (self.last - f).as_secs_f64())
            .max(1e-9)
    }
}

fn port(o: &Opts) -> Box<dyn Port> {
    let (device, kind) = match o.backend.as_str() {
        "af_packet" => (o.iface.clone(), BackendKind::AfPacket),
        "af_xdp" => (o.iface.clone(), BackendKind::AfXdp),
        "dpdk_af_xdp" => (format!("net_af_xdp0,iface={}", o.iface), BackendKind::Dpdk),
        "io_uring" => {
            let local = if o.send { SRC_PORT } else { DST_PORT };
            (
                format!("udp:{}:{local},peer={}:{DST_PORT},zc=off", o.local, o.peer),
                BackendKind::IoUring,
            )
        }
        _ => usage(),
    };
    let mut cfg = PortConfig::new(device);
    cfg.queues = 1;
    cfg.burst = BURST;
    cfg.mbufs = 8192;
    cfg.rx_desc = 2048;
    cfg.tx_desc = 1024;
    match net::open(&cfg, BackendChoice::Named(kind)) {
        Ok(mut o) if !o.value.is_empty() => o.value.remove(0),
        Ok(_) => {
            eprintln!("bench-sockets: no queue opened");
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("bench-sockets: {e}");
            std::process::exit(1)
        }
    }
}

fn run_port(o: &Opts, end: Instant, m: &mut Meter) {
    let mut p = port(o);
    let l2 = o.backend != "io_uring";
    let tpl = if l2 {
        frame(o, p.capabilities().mac.unwrap_or([2, 0, 0, 0, 0, 1]))
    } else {
        vec![0u8; PAYLOAD]
    };
    let mut batch = MbufBatch::new();
    while Instant::now() < end {
        if o.send {
            if batch.is_empty() {
                p.alloc_burst(BURST, &mut batch);
                for mb in batch.iter_mut() {
                    if let Ok(d) = mb.append(tpl.len()) {
                        d.copy_from_slice(&tpl);
                    }
                }
            }
            // What the port did not take goes again next time.
            m.add(p.tx_burst(&mut batch));
        } else {
            let n = p.rx_burst(&mut batch);
            batch.clear();
            m.add(n);
        }
    }
    batch.clear();
    let s = p.stats();
    if s.total_drops() > 0 || s.errors > 0 {
        eprintln!(
            "bench-sockets: {} {}: drops {:?}, errors {}",
            if o.send { "send" } else { "recv" },
            o.backend,
            s.drops,
            s.errors
        );
    }
}

fn run_mmsg(o: &Opts, end: Instant, m: &mut Meter) {
    let local = SocketAddrV4::new(o.local, if o.send { SRC_PORT } else { DST_PORT });
    let sock = UdpSocket::bind(local).unwrap_or_else(|e| {
        eprintln!("bench-sockets: bind {local}: {e}");
        std::process::exit(1)
    });
    if o.send
        && let Err(e) = sock.connect(SocketAddrV4::new(o.peer, DST_PORT))
    {
        eprintln!("bench-sockets: connect: {e}");
        std::process::exit(1)
    }
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; BURST];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: if o.send { PAYLOAD } else { b.len() },
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BURST).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    while Instant::now() < end {
        let n = if o.send {
            // SAFETY: the headers point at iovecs and buffers that live
            // for the whole loop; the socket is open.
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), BURST as u32, 0) }
        } else {
            // SAFETY: as above; a null timeout.
            unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    BURST as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            }
        };
        if n > 0 {
            m.add(n as usize);
        }
    }
}

fn main() {
    let o = opts();
    // A cache slot for the framework's mempools, as an lcore holds one
    // (DPDK's driver gets its lcore cache from the thread's registration).
    let _slot = hugepages::slot::claim().ok();
    // Receivers outlast the sender by a second; they report first-to-last.
    let secs = if o.send { o.secs } else { o.secs + 1.0 };
    let cpu0 = cpu_seconds();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut m = Meter::new();
    match o.backend.as_str() {
        "mmsg" => run_mmsg(&o, end, &mut m),
        _ => run_port(&o, end, &mut m),
    }
    let cpu = (cpu_seconds() - cpu0).max(1e-9);
    let wall = m.secs();
    println!(
        "role={} backend={} packets={} secs={:.3} pps={:.0} cpu_s={:.3} pps_per_core={:.0}",
        if o.send { "send" } else { "recv" },
        o.backend,
        m.n,
        wall,
        m.n as f64 / wall,
        cpu,
        // The busy loop runs the whole time: CPU time over the window it
        // counted is the core it took, at most one.
        m.n as f64 / wall / (cpu / secs).clamp(1e-9, 1.0),
    );
}
