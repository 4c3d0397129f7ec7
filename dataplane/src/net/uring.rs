//! io_uring UDP and TCP sockets: an L4 port where each mbuf is one
//! datagram (UDP) or a piece of one stream (TCP; see the end).
//!
//! Each queue is a UDP socket with its own ring. The sockets of a port
//! share one address with `SO_REUSEPORT`, so the kernel spreads flows over
//! them by the 4-tuple hash, as RSS spreads them over a NIC's queues.
//!
//! **Receive.** One multishot `IORING_OP_RECVMSG` per queue, submitted once
//! and kept armed, takes buffers from a provided-buffer ring
//! (`IORING_REGISTER_PBUF_RING`) and posts one completion per datagram. The
//! buffers are the port pool's mbufs themselves, lent to the kernel: the
//! kernel writes `io_uring_recvmsg_out` and the peer's address into the
//! headroom and the payload at the normal data offset, so a datagram
//! arrives in its mbuf with no copy of ours; its peer address goes into the
//! mbuf's private area ([`super::meta`]). A lent mbuf is held as a raw
//! pointer, never as an `Mbuf`, until its completion hands it back; each
//! one taken is replaced from the pool in the same burst.
//!
//! **Send.** One SQE per datagram, to the address in its metadata (or the
//! port's default `peer`): `IORING_OP_SEND_ZC` from a registered buffer
//! (the pool's memory, registered with `IORING_REGISTER_BUFFERS`) for
//! datagrams of at least `zc` bytes from the port's own pool, and
//! `IORING_OP_SEND` otherwise (a small datagram is cheaper to copy than to
//! pin and wait for a notification for). The socket is a registered file.
//! The mbuf stays with the port until the kernel is done with it: the
//! completion for a copy, the notification for a zero-copy send.
//!
//! **Submission.** The ring is set up with `IORING_SETUP_COOP_TASKRUN` and
//! `IORING_SETUP_TASKRUN_FLAG`: the kernel does not interrupt the lcore to
//! post completions, it flags that work is pending. `tx_burst` submits
//! its SQEs with one `io_uring_enter`, which also runs that pending work;
//! `rx_burst` reads the completion ring directly and enters the kernel only
//! when the flag is up and nothing has entered since the last `rx_burst`.
//! A poll pass that receives and sends makes one system call.
//!
//! **Drops.** `SO_MEMINFO`'s drop count (datagrams the socket dropped with
//! its queue full, including while no buffer was lent) is `RxOverrun`; a
//! datagram longer than an mbuf's data room is `Oversized`; a datagram to
//! send with no destination is `Filtered`.
//!
//! Device syntax: `udp:LOCAL_ADDR:PORT[,peer=ADDR:PORT][,zc=BYTES|off]`,
//! e.g. `udp:10.0.0.1:9000,peer=10.0.0.2:9000` or `udp:[fd00::1]:53`. With
//! more than one queue the port must be given (not 0).
//!
//! **TCP.** `tcp:LOCAL_ADDR:PORT,peer=ADDR:PORT` connects one stream per
//! queue to the peer; `tcp:LOCAL_ADDR:PORT[,accept=SECS]` listens there and
//! waits (10 s by default) for one connection per queue when it opens.
//! Everything above holds with these differences: an mbuf is a piece of
//! the byte stream, not a message (boundaries are the kernel's, in order);
//! a send carries `MSG_WAITALL`, so the kernel finishes a short send
//! itself, and a burst's sends are one linked chain (`IOSQE_IO_LINK`) with
//! at most one chain in flight, so each mbuf goes out whole and in order
//! (sends in flight side by side on a stream are not ordered); no peer
//! metadata; and when the peer closes its side, the port's link goes down
//! and receiving stops.

use super::meta::{self, META_PRIV_SIZE};
use super::{
    Backend, Capabilities, DropReason, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig,
    PortId, QueueId, QueueStats,
};
use crate::backend::Probe;
use crate::{Error, Result};
use ::io_uring::{IoUring as Ring, cqueue, opcode, squeue, types};
use hugepages::mbuf::{Mbuf, MbufHeader, MbufPool, MbufPoolConfig};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The device prefix of an io_uring UDP port.
pub const UDP_PREFIX: &str = "udp:";

/// The device prefix of an io_uring TCP port.
pub const TCP_PREFIX: &str = "tcp:";

/// How long a listening `tcp:` port waits for its connections at open
/// unless `accept=SECS` says otherwise.
pub const TCP_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Datagrams of at least this many bytes from the port's own pool go out
/// with `SEND_ZC` from registered memory; below it, `SEND` copies (the
/// default; `zc=BYTES` in the device changes it). docs/performance.md has
/// the measurement behind the figure.
pub const ZC_MIN_BYTES: usize = 1024;

/// Bytes reserved for the peer's address in each receive buffer: a
/// `sockaddr_in6` (28) rounded up to 8.
const NAME_LEN: usize = 32;

/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags,
/// each a `__u32` (include/uapi/linux/io_uring.h).
const RECVMSG_OUT: usize = 16;

/// What the kernel writes before the payload: `io_uring_recvmsg_out` and
/// the name.
const RECV_PREFIX: usize = RECVMSG_OUT + NAME_LEN;

/// `user_data` of the multishot receive.
const RECV_TAG: u64 = 1 << 63;
/// `user_data` of a cancel request.
const CANCEL_TAG: u64 = (1 << 63) | 1;
/// `user_data` bit of a send; the low bits are its slot.
const SEND_TAG: u64 = 1 << 62;

/// The buffer group of the provided-buffer ring (one ring per port queue).
const BGID: u16 = 0;

/// How long dropping a port waits for the kernel to give back what it
/// holds before it leaks it instead (never freeing memory the kernel may
/// still write).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The io_uring UDP backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoUring;

/// The opcodes the port uses, by name, for the probe.
const NEEDED_OPS: [(u8, &str); 4] = [
    (opcode::RecvMsgMulti::CODE, "RECVMSG"),
    (opcode::Send::CODE, "SEND"),
    (opcode::SendZc::CODE, "SEND_ZC"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

fn probe_now() -> Probe {
    let base = crate::topology::io_uring_probe();
    if !base.available {
        return base;
    }
    let ring = match Ring::new(8) {
        Ok(r) => r,
        Err(e) => return Probe::unavailable(format!("io_uring_setup: {e}")),
    };
    let mut probe = ::io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Probe::unavailable(format!("IORING_REGISTER_PROBE failed: {e}"));
    }
    let missing: Vec<&str> = NEEDED_OPS
        .iter()
        .filter(|(op, _)| !probe.is_supported(*op))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Probe::unavailable(format!(
            "the kernel's io_uring lacks {} ({})",
            missing.join(", "),
            base.reason
        ));
    }
    // Provided-buffer rings (5.19) and multishot receive (6.0) have no
    // opcode of their own: register a small ring to see.
    match BufRing::new(8).and_then(|br| {
        // SAFETY: `br` is a page-aligned ring of 8 entries that outlives
        // its registration (unregistered just below, before it drops).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.addr(), 8, BGID, 0)
        }?;
        ring.submitter().unregister_buf_ring(BGID)
    }) {
        Ok(()) => Probe::ok(format!(
            "io_uring with multishot RECVMSG, SEND, SEND_ZC and provided-buffer rings ({})",
            base.reason
        )),
        Err(e) => Probe::unavailable(format!(
            "IORING_REGISTER_PBUF_RING failed ({e}): kernel older than 5.19? ({})",
            base.reason
        )),
    }
}

impl Backend for IoUring {
    fn probe(&self) -> Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(probe_now).clone()
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        UdpPort::open(cfg).map(|ports| {
            ports
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn Port>)
                .collect()
        })
    }
}

/// The transport of an io_uring port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// UDP: one datagram per mbuf.
    Udp,
    /// TCP: a connected stream per queue, a piece of it per mbuf.
    Tcp,
}

/// A parsed `udp:` or `tcp:` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDevice {
    /// UDP or TCP.
    pub transport: Transport,
    /// The address the sockets bind.
    pub local: SocketAddr,
    /// UDP: where datagrams without a peer in their metadata go. TCP: the
    /// address to connect to; `None` listens on `local`.
    pub peer: Option<SocketAddr>,
    /// The smallest datagram sent zero-copy; `None`: never.
    pub zc_min: Option<usize>,
    /// TCP without a peer: how long opening waits for the connections.
    pub accept_timeout: Duration,
}

impl UdpDevice {
    /// Parses `udp:LOCAL[,peer=ADDR][,zc=BYTES|off]` or
    /// `tcp:LOCAL[,peer=ADDR][,zc=BYTES|off][,accept=SECS]`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what part is wrong.
    pub fn parse(device: &str) -> Result<UdpDevice> {
        let bad = |why: String| Error::Config(format!("io_uring device {device:?}: {why}"));
        let (transport, rest) = if let Some(rest) = device.strip_prefix(UDP_PREFIX) {
            (Transport::Udp, rest)
        } else if let Some(rest) = device.strip_prefix(TCP_PREFIX) {
            (Transport::Tcp, rest)
        } else {
            return Err(bad(format!(
                "expected {UDP_PREFIX}ADDR:PORT[,peer=ADDR:PORT] or {TCP_PREFIX}ADDR:PORT[,peer=ADDR:PORT]"
            )));
        };
        let mut parts = rest.split(',');
        let local = parts
            .next()
            .unwrap_or_default()
            .parse::<SocketAddr>()
            .map_err(|e| bad(format!("local address: {e}")))?;
        let mut dev = UdpDevice {
            transport,
            local,
            peer: None,
            zc_min: Some(ZC_MIN_BYTES),
            accept_timeout: TCP_ACCEPT_TIMEOUT,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("peer", v)) => {
                    dev.peer = Some(v.parse().map_err(|e| bad(format!("peer: {e}")))?);
                }
                Some(("zc", "off")) => dev.zc_min = None,
                Some(("zc", v)) => {
                    dev.zc_min = Some(v.parse().map_err(|e| bad(format!("zc: {e}")))?);
                }
                Some(("accept", v)) if transport == Transport::Tcp => {
                    let secs: u64 = v.parse().map_err(|e| bad(format!("accept: {e}")))?;
                    dev.accept_timeout = Duration::from_secs(secs);
                }
                _ => return Err(bad(format!("unknown option {opt:?}"))),
            }
        }
        Ok(dev)
    }
}

/// A queue's socket.
#[derive(Debug)]
enum Socket {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Socket {
    fn raw(&self) -> std::os::fd::RawFd {
        match self {
            Socket::Udp(s) => s.as_raw_fd(),
            Socket::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Udp(s) => s.local_addr(),
            Socket::Tcp(s) => s.local_addr(),
        }
    }
}

/// The connected streams of a `tcp:` device, one per queue: connected to
/// the peer, or accepted on `local` within the device's timeout.
fn tcp_streams(dev: &UdpDevice, queues: u16) -> io::Result<Vec<TcpStream>> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if dev.local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let tune = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        // io_uring waits for readiness itself; blocking mode would make
        // the kernel park a worker thread per receive instead.
        s.set_nonblocking(true)
    };
    let mut out = Vec::with_capacity(usize::from(queues));
    if let Some(peer) = dev.peer {
        for _ in 0..queues {
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            if dev.local.port() != 0 {
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            }
            // Several queues from one address: only the first may name
            // the port; the others take ephemeral ones.
            let mut local = dev.local;
            if !out.is_empty() {
                local.set_port(0);
            }
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
            socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(peer))?;
            let s = TcpStream::from(fd);
            tune(&s)?;
            out.push(s);
        }
        return Ok(out);
    }
    let listener = TcpListener::bind(dev.local)?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + dev.accept_timeout;
    while out.len() < usize::from(queues) {
        match listener.accept() {
            Ok((s, _)) => {
                tune(&s)?;
                out.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{} of {queues} connections accepted on {} within {:?}",
                            out.len(),
                            dev.local,
                            dev.accept_timeout
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A provided-buffer ring: `io_uring_buf` entries in page-aligned memory
/// shared with the kernel, the tail in the first entry's `resv` field.
#[derive(Debug)]
struct BufRing {
    base: NonNull<u8>,
    bytes: usize,
    entries: u16,
    tail: u16,
}

/// `struct io_uring_buf`: addr (u64), len (u32), bid (u16), resv (u16).
const BUF_ENTRY: usize = 16;

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        let bytes = (usize::from(entries) * BUF_ENTRY).next_multiple_of(4096);
        // SAFETY: a fresh private anonymous mapping; nothing else is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(BufRing {
            base,
            bytes,
            entries,
            tail: 0,
        })
    }

    fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes an entry at the tail, not yet visible to the kernel.
    fn add(&mut self, addr: u64, len: u32, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        let e = self.base.as_ptr().wrapping_add(slot * BUF_ENTRY);
        // SAFETY: `slot < entries`, so the 16-byte entry is in the mapping;
        // the kernel reads entries only between its head and our published
        // tail, and this one is past the tail.
        unsafe { e.cast::<u64>().write_volatile(addr) };
        // SAFETY: as above.
        unsafe { e.wrapping_add(8).cast::<u32>().write_volatile(len) };
        // SAFETY: as above.
        unsafe { e.wrapping_add(12).cast::<u16>().write_volatile(bid) };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries added so far visible (`io_uring_buf_ring_advance`).
    fn publish(&self) {
        let tail = self.base.as_ptr().wrapping_add(14).cast::<u16>();
        // Release: the entries written before are visible to the kernel once
        // it reads this tail (it loads it with `smp_load_acquire`).
        // SAFETY: the ring's tail field (`resv` of entry 0), 2-byte aligned
        // in the mapping, which lives as long as `self`.
        let t = unsafe { AtomicU16::from_ptr(tail) };
        t.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped. The owner unregisters the ring
        // first; if that failed, the kernel still holds its own pin on the
        // pages, so unmapping our view cannot make it write freed memory.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// A send the kernel has not finished with.
#[derive(Debug)]
struct TxSlot {
    mbuf: Option<NonNull<MbufHeader>>,
    addr: libc::sockaddr_in6,
    /// A zero-copy send whose notification is still to come.
    notif_pending: bool,
}

/// One queue of an io_uring UDP port.
pub struct UdpPort {
    id: (PortId, QueueId),
    ring: Ring,
    socket: Socket,
    /// TCP: the peer closed its side (a zero-length receive).
    eof: bool,
    bufs: BufRing,
    /// The mbuf lent to the kernel under each buffer id, as a raw pointer
    /// (kernel-owned: never read while it is lent).
    lent: Vec<Option<NonNull<MbufHeader>>>,
    /// Buffer ids with no mbuf (the pool ran dry), refilled later.
    empty: Vec<u16>,
    buf_offset: usize,
    buf_len: u32,
    msghdr: Box<libc::msghdr>,
    /// Where `msghdr.msg_name` points (the kernel writes names into the
    /// buffers instead; kept alive for the request's lifetime).
    _name_area: Box<[u8; NAME_LEN]>,
    recv_armed: bool,
    entered_since_rx: bool,
    stash: MbufBatch,
    tx: Box<[TxSlot]>,
    tx_free: Vec<u32>,
    /// The pool's memory as registered fixed buffers: (start, len, index).
    fixed: Vec<(usize, usize, u16)>,
    zc_min: Option<usize>,
    peer: Option<SocketAddr>,
    pool: MbufPool,
    caps: Capabilities,
    burst: usize,
    stats: QueueStats,
}

// SAFETY: the raw pointers are mbufs (Send) and the port's own boxed
// memory; the port is used by one thread at a time (`&mut self`).
unsafe impl Send for UdpPort {}

impl std::fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPort")
            .field("id", &self.id)
            .field("local", &self.socket.local_addr().ok())
            .field("peer", &self.peer)
            .field("lent", &self.lent.iter().flatten().count())
            .field("tx_in_flight", &(self.tx.len() - self.tx_free.len()))
            .finish()
    }
}

fn next_port_id() -> PortId {
    static NEXT: AtomicU16 = AtomicU16::new(0x6000);
    // Relaxed: only uniqueness matters.
    PortId(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn udp_socket(local: SocketAddr, reuseport: bool) -> io::Result<UdpSocket> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Room for bursts while the lcore is busy elsewhere (the kernel caps
    // it at net.core.rmem_max unless forced, which needs CAP_NET_ADMIN).
    let want = 4 << 20;
    if socket::setsockopt(&fd, sockopt::RcvBufForce, &want).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &want);
    }
    if socket::setsockopt(&fd, sockopt::SndBufForce, &want).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::SndBuf, &want);
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    Ok(UdpSocket::from(fd))
}

/// `addr` as the kernel's `sockaddr_in6` (an IPv4 address in the
/// `sockaddr_in` layout at its start); returns its length.
fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_in6) -> libc::socklen_t {
    // SAFETY: sockaddr_in6 is plain data; zeroes are valid.
    *out = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let dst = std::ptr::from_mut(out).cast::<libc::sockaddr_in>();
            // SAFETY: a sockaddr_in (16 bytes) fits in the sockaddr_in6
            // (28) that `dst` points at, with no stricter alignment.
            unsafe { dst.write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Parses the name bytes the kernel wrote before a datagram.
fn from_name(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a = name.get(4..8)?;
            Some(SocketAddr::from(([a[0], a[1], a[2], a[3]], port)))
        }
        libc::AF_INET6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(name.get(8..24)?);
            let word = |r: std::ops::Range<usize>| -> Option<u32> {
                Some(u32::from_ne_bytes(name.get(r)?.try_into().ok()?))
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                word(4..8)?,
                word(24..28)?,
            )))
        }
        _ => None,
    }
}

fn io_err(what: &str, dev: &str) -> impl FnOnce(io::Error) -> Error {
    let context = format!("io_uring {dev}: {what}");
    move |e| Error::io(context, e)
}

impl UdpPort {
    /// Opens `cfg.device` (`udp:...`), one [`UdpPort`] per queue.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed device, zero queues, a burst over
    /// [`MAX_BURST`], or several queues on port 0; [`Error::Io`] naming
    /// the step that failed; [`Error::Memory`] when a pool cannot be made.
    pub fn open(cfg: &PortConfig) -> Result<Vec<UdpPort>> {
        let dev = UdpDevice::parse(&cfg.device)?;
        if cfg.queues == 0 || cfg.burst == 0 || cfg.burst > MAX_BURST {
            return Err(Error::Config(format!(
                "io_uring {}: {} queues, burst {} (need >= 1 queue and a burst of 1..={MAX_BURST})",
                cfg.device, cfg.queues, cfg.burst
            )));
        }
        if cfg.queues > 1 && dev.local.port() == 0 && dev.transport == Transport::Udp {
            return Err(Error::Config(format!(
                "io_uring {}: {} queues share one port through SO_REUSEPORT; give the port",
                cfg.device, cfg.queues
            )));
        }
        let id = next_port_id();
        let sockets: Vec<Socket> = match dev.transport {
            Transport::Udp => (0..cfg.queues)
                .map(|_| udp_socket(dev.local, cfg.queues > 1).map(Socket::Udp))
                .collect::<io::Result<_>>()
                .map_err(io_err("socket", &cfg.device))?,
            Transport::Tcp => tcp_streams(&dev, cfg.queues)
                .map_err(io_err(
                    if dev.peer.is_some() {
                        "connect"
                    } else {
                        "accept"
                    },
                    &cfg.device,
                ))?
                .into_iter()
                .map(Socket::Tcp)
                .collect(),
        };
        sockets
            .into_iter()
            .zip(0..cfg.queues)
            .map(|(socket, q)| UdpPort::open_queue(cfg, &dev, socket, id, QueueId(q)))
            .collect()
    }

    fn open_queue(
        cfg: &PortConfig,
        dev: &UdpDevice,
        socket: Socket,
        id: PortId,
        q: QueueId,
    ) -> Result<UdpPort> {
        let name = cfg.device.as_str();
        let pool = MbufPool::new(MbufPoolConfig {
            name: format!("uring{}q{}", id.0, q.0),
            count: cfg.mbufs,
            cache_size: cfg.mbuf_cache,
            priv_size: META_PRIV_SIZE,
            numa_node: cfg.numa_node,
            ..MbufPoolConfig::default()
        })?;
        // Lend at most half the pool, as a power of two the kernel takes.
        let lend = usize::from(cfg.rx_desc)
            .min(cfg.mbufs / 2)
            .clamp(2, 1 << 15);
        let entries = if lend.is_power_of_two() {
            lend
        } else {
            lend.next_power_of_two() / 2
        } as u16;
        let tx_slots = usize::from(cfg.tx_desc.max(1)).min(1 << 15);
        let sq = (tx_slots + 8).next_power_of_two() as u32;
        let cq = (sq * 2).max(u32::from(entries) * 2).next_power_of_two();
        let ring = Ring::builder()
            .setup_cqsize(cq)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(sq)
            .or_else(|_| Ring::builder().setup_cqsize(cq).build(sq))
            .map_err(io_err("io_uring_setup", name))?;
        ring.submitter()
            .register_files(&[socket.raw()])
            .map_err(io_err("IORING_REGISTER_FILES", name))?;
        let bufs = BufRing::new(entries).map_err(io_err("provided-buffer ring", name))?;
        // SAFETY: `bufs` is page aligned with `entries` entries and lives in
        // the port until Drop, which unregisters it before it is unmapped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.addr(), entries, BGID, 0)
        }
        .map_err(io_err("IORING_REGISTER_PBUF_RING", name))?;
        let fixed = if dev.zc_min.is_some() {
            register_pool(&ring, &pool, name)
        } else {
            Vec::new()
        };
        let mut caps = Capabilities::basic(
            "io_uring",
            Layer::L4,
            cfg.burst,
            pool.data_room() - hugepages::mbuf::PKTMBUF_HEADROOM,
            cfg.queues,
        );
        // UDP: SO_REUSEPORT spreads flows; TCP: each queue is a stream.
        caps.rss = cfg.queues > 1 && dev.transport == Transport::Udp;
        let mut msghdr: Box<libc::msghdr> = Box::new(
            // SAFETY: msghdr is plain data; zeroes are valid.
            unsafe { std::mem::zeroed() },
        );
        let mut name_scratch = Box::new([0u8; NAME_LEN]);
        msghdr.msg_name = name_scratch.as_mut_ptr().cast();
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut port = UdpPort {
            id: (id, q),
            ring,
            socket,
            eof: false,
            bufs,
            lent: vec![None; usize::from(entries)],
            empty: (0..entries).rev().collect(),
            buf_offset: hugepages::mbuf::PKTMBUF_HEADROOM - RECV_PREFIX,
            buf_len: 0,
            msghdr,
            _name_area: name_scratch,
            recv_armed: false,
            entered_since_rx: false,
            stash: MbufBatch::new(),
            tx: (0..tx_slots)
                .map(|_| TxSlot {
                    mbuf: None,
                    // SAFETY: plain data; zeroes are valid.
                    addr: unsafe { std::mem::zeroed() },
                    notif_pending: false,
                })
                .collect(),
            tx_free: (0..tx_slots as u32).rev().collect(),
            fixed,
            zc_min: dev.zc_min,
            peer: dev.peer,
            pool,
            caps,
            burst: cfg.burst,
            stats: QueueStats::default(),
        };
        port.buf_len = (port.pool.data_room() - port.buf_offset) as u32;
        port.refill();
        if port.empty.len() == usize::from(entries) {
            return Err(Error::Config(format!(
                "io_uring {name}: the pool of {} mbufs gave none to receive into",
                cfg.mbufs
            )));
        }
        port.arm_recv();
        port.enter();
        Ok(port)
    }

    /// The socket's bound address (the port the kernel chose for `:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Where datagrams without a peer in their metadata go.
    pub fn default_peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The pool received datagrams arrive in.
    pub fn pool(&self) -> &MbufPool {
        &self.pool
    }

    /// Lends an mbuf to every buffer id that has none, and publishes them.
    fn refill(&mut self) {
        let mut added = false;
        while let Some(&bid) = self.empty.last() {
            let Some(m) = self.pool.alloc() else { break };
            let h = m.header();
            let addr = h.buf_addr as u64 + self.buf_offset as u64;
            let raw = m.into_raw();
            self.lent[usize::from(bid)] = Some(raw);
            self.bufs.add(addr, self.buf_len, bid);
            self.empty.pop();
            added = true;
        }
        if added {
            self.bufs.publish();
        }
    }

    fn arm_recv(&mut self) {
        if self.recv_armed || self.eof || self.empty.len() == self.lent.len() {
            return;
        }
        let sqe = opcode::RecvMsgMulti::new(types::Fixed(0), &*self.msghdr, BGID)
            .build()
            .user_data(RECV_TAG);
        // SAFETY: the msghdr (and the scratch name it points at) are boxed
        // in the port and outlive the request: Drop cancels it and waits for
        // its last completion before they are freed.
        if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
            self.recv_armed = true;
        }
    }

    /// One `io_uring_enter`: submits what is queued and runs pending task
    /// work (completions then show up in the CQ).
    fn enter(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            // The CQ is backed up or the kernel is short of memory: the
            // SQEs stay queued and go with the next enter.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) => {}
            Err(_) => self.stats.errors += 1,
        }
        self.entered_since_rx = true;
    }

    /// Handles up to 64 completions; receives go to `out` while it has
    /// room (up to `room` of them), else to the stash. Returns how many
    /// completions there were.
    fn reap(&mut self, out: &mut MbufBatch, room: &mut usize) -> usize {
        let mut cqes = [(0u64, 0i32, 0u32); 64];
        let mut n = 0;
        {
            let cq = self.ring.completion();
            for cqe in cq {
                cqes[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                n += 1;
                if n == cqes.len() {
                    break;
                }
            }
        }
        let mut got_buffers = false;
        for &(ud, res, flags) in &cqes[..n] {
            if ud == RECV_TAG {
                if !cqueue::more(flags) {
                    self.recv_armed = false;
                    if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        self.stats.errors += 1;
                        // A stream that failed (reset, timed out) stays
                        // failed: link down, no re-arming.
                        if matches!(self.socket, Socket::Tcp(_)) {
                            self.eof = true;
                        }
                    }
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    got_buffers = true;
                    if let Some(m) = self.take_lent(bid) {
                        self.deliver(m, res, out, room);
                    }
                }
            } else if ud & SEND_TAG != 0 {
                self.send_done((ud & !SEND_TAG) as usize, res, flags);
            }
        }
        if got_buffers || !self.empty.is_empty() {
            self.refill();
        }
        n
    }

    fn take_lent(&mut self, bid: u16) -> Option<Mbuf> {
        let raw = self.lent.get_mut(usize::from(bid))?.take()?;
        self.empty.push(bid);
        // SAFETY: `raw` came from `into_raw` of an mbuf of our pool when it
        // was lent; the completion that named its buffer id hands it back,
        // so nobody else owns it now.
        Some(unsafe { Mbuf::from_raw(raw) })
    }

    /// Turns a filled receive buffer into a datagram mbuf.
    fn deliver(&mut self, mut m: Mbuf, res: i32, out: &mut MbufBatch, room: &mut usize) {
        let Ok(written) = usize::try_from(res) else {
            return;
        };
        // The kernel wrote the recvmsg_out header and the name into the
        // headroom, just before the data offset: expose them to read them.
        let Ok(head) = m.prepend(RECV_PREFIX) else {
            self.stats.errors += 1;
            return;
        };
        let word =
            |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let (payload, flags) = (word(8) as usize, word(12) as i32);
        let peer = from_name(&head[RECVMSG_OUT..RECVMSG_OUT + NAME_LEN]);
        if m.adj(RECV_PREFIX).is_err() {
            self.stats.errors += 1;
            return;
        }
        if payload == 0 && matches!(self.socket, Socket::Tcp(_)) {
            // The peer closed its side of the stream.
            self.eof = true;
            return;
        }
        if flags & libc::MSG_TRUNC != 0 || payload + RECV_PREFIX > written {
            self.stats.drop_one(DropReason::Oversized);
            return;
        }
        if m.set_len(payload).is_err() {
            self.stats.drop_one(DropReason::Oversized);
            return;
        }
        match peer {
            Some(p) => {
                meta::set_peer(&mut m, p);
            }
            None => meta::clear_peer(&mut m),
        }
        m.set_port(self.id.0.0);
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += payload as u64;
        if *room > 0 {
            *room -= 1;
            if let Err(m) = out.push(m) {
                // Cannot happen (room <= out's spare); keep it anyway.
                let _ = self.stash.push(m);
            }
        } else if let Err(m) = self.stash.push(m) {
            // The stash holds at most one reap's worth (64); unreachable.
            drop(m);
            self.stats.rx_packets -= 1;
            self.stats.drop_one(DropReason::NoMbuf);
        }
    }

    fn send_done(&mut self, slot: usize, res: i32, flags: u32) {
        let Some(s) = self.tx.get_mut(slot) else {
            self.stats.errors += 1;
            return;
        };
        if cqueue::notif(flags) {
            s.notif_pending = false;
        } else {
            if res < 0 {
                self.stats.errors += 1;
            } else {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += res as u64;
            }
            s.notif_pending = cqueue::more(flags);
        }
        if !s.notif_pending
            && let Some(raw) = s.mbuf.take()
        {
            // SAFETY: the mbuf was handed over with `into_raw` when the send
            // was queued, and the kernel is done with it (its completion, or
            // the zero-copy notification, has arrived).
            drop(unsafe { Mbuf::from_raw(raw) });
            self.tx_free.push(slot as u32);
        }
    }

    /// The fixed buffer holding `len` bytes at `p`, if the pool's memory
    /// is registered and holds them.
    fn fixed_index(&self, p: usize, len: usize) -> Option<u16> {
        self.fixed
            .iter()
            .find(|(start, n, _)| p >= *start && p + len <= start + n)
            .map(|&(_, _, i)| i)
    }

    /// Datagrams in flight (sent, not yet completed).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.len() - self.tx_free.len()
    }

    /// Cumulative drops the socket reports (`SO_MEMINFO`).
    fn socket_drops(&self) -> u64 {
        // SK_MEMINFO_VARS (linux/sock_diag.h).
        let mut info = [0u32; 9];
        let mut len = size_of_val(&info) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, which
        // lives for the call, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.raw(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            u64::from(info[libc::SK_MEMINFO_DROPS as usize])
        } else {
            0
        }
    }
}

/// Registers the pool's regions as fixed buffers for zero-copy sends;
/// empty (sends copy) when the kernel refuses, which is logged.
fn register_pool(ring: &Ring, pool: &MbufPool, dev: &str) -> Vec<(usize, usize, u16)> {
    let iovecs: Vec<libc::iovec> = pool
        .regions()
        .iter()
        .map(|r| libc::iovec {
            iov_base: r.as_ptr().cast(),
            iov_len: r.len(),
        })
        .collect();
    // SAFETY: the regions belong to the pool, which the port keeps (and
    // whose memory is never unmapped while the ring exists: the ring is
    // dropped first, as a field declared before the pool).
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => iovecs
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iov_base as usize, v.iov_len, i as u16))
            .collect(),
        Err(e) => {
            tracing::warn!(
                "io_uring {dev}: registering the pool for zero-copy sends failed ({e}); sends copy"
            );
            Vec::new()
        }
    }
}

impl Port for UdpPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let before = out.len();
        let mut room = out.spare().min(self.burst);
        while room > 0 {
            let Some(m) = self.stash.pop_front() else {
                break;
            };
            // Cannot fail: room <= spare.
            let _ = out.push(m);
            room -= 1;
        }
        if !self.recv_armed && !self.eof {
            self.refill();
            self.arm_recv();
        }
        // Pending SQEs, or task work the kernel flagged and no enter since
        // the last rx_burst has run: one enter.
        let flagged = self.ring.submission().taskrun();
        if !self.ring.submission().is_empty() || (flagged && !self.entered_since_rx) {
            self.enter();
        }
        self.entered_since_rx = false;
        while room > 0 && self.reap(out, &mut room) == 64 {}
        out.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let mut taken = 0;
        let mut queued = 0;
        let mut dropped = MbufBatch::new();
        let tcp = matches!(self.socket, Socket::Tcp(_));
        // TCP: a burst's sends are one linked chain, and a chain starts only
        // when the last one is done. Sends in flight side by side on a
        // stream socket are not ordered: one that waits for room in the
        // socket buffer is retried after later ones went.
        let mut chain_left = usize::MAX;
        if tcp {
            if self.tx_in_flight() > 0 {
                let mut none = 0;
                let mut scratch = MbufBatch::new();
                self.reap(&mut scratch, &mut none);
                if self.tx_in_flight() > 0 {
                    return 0;
                }
            }
            let sq = self.ring.submission();
            chain_left = pkts
                .len()
                .min(self.tx_free.len())
                .min(sq.capacity() - sq.len());
        }
        while let Some(m) = pkts.first() {
            if chain_left == 0 {
                break;
            }
            let dest = if tcp {
                // Connected: no address; any in the metadata is ignored.
                None
            } else {
                meta::peer(m).or(self.peer)
            };
            if dest.is_none() && !tcp {
                self.stats.drop_one(DropReason::Filtered);
                if let Some(m) = pkts.pop_front() {
                    let _ = dropped.push(m);
                }
                taken += 1;
                continue;
            }
            if self.tx_free.is_empty() {
                // Slots come back with completions: reap them.
                let mut none = 0;
                let mut scratch = MbufBatch::new();
                self.reap(&mut scratch, &mut none);
                if self.tx_free.is_empty() {
                    break;
                }
            }
            if self.ring.submission().is_full() {
                break;
            }
            let Some(slot) = self.tx_free.pop() else {
                break;
            };
            let (ptr, len) = (m.data().as_ptr(), m.len());
            let s = &mut self.tx[slot as usize];
            // UDP: the destination, in the slot. TCP: none, and
            // MSG_WAITALL, with which the kernel retries a short send on a
            // stream socket until the whole mbuf is out (io_uring's
            // io_net_retry), so the stream keeps the mbufs' order.
            let (addr, alen, msg_flags) = match dest {
                Some(dest) => {
                    let alen = to_sockaddr(dest, &mut s.addr);
                    (
                        std::ptr::from_ref(&s.addr).cast::<libc::sockaddr>(),
                        alen,
                        0,
                    )
                }
                None => (std::ptr::null(), 0, libc::MSG_WAITALL),
            };
            let fixed = match self.zc_min {
                Some(min) if len >= min => self.fixed_index(ptr as usize, len),
                _ => None,
            };
            let sqe = match fixed {
                Some(index) => opcode::SendZc::new(types::Fixed(0), ptr, len as u32)
                    .buf_index(Some(index))
                    .dest_addr(addr)
                    .dest_addr_len(alen)
                    .flags(msg_flags)
                    .build(),
                None => opcode::Send::new(types::Fixed(0), ptr, len as u32)
                    .dest_addr(addr)
                    .dest_addr_len(alen)
                    .flags(msg_flags)
                    .build(),
            }
            .user_data(SEND_TAG | u64::from(slot));
            let sqe = if tcp && chain_left > 1 {
                sqe.flags(squeue::Flags::IO_LINK)
            } else {
                sqe
            };
            // The address is in the same boxed slot, which does not move.
            // SAFETY: the data is the mbuf's, which moves into the slot below
            // and stays until the completion (and SEND_ZC's notification).
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.tx_free.push(slot);
                break;
            }
            if let Some(m) = pkts.pop_front() {
                self.tx[slot as usize].mbuf = Some(m.into_raw());
            }
            taken += 1;
            queued += 1;
            chain_left = chain_left.saturating_sub(1);
        }
        Mbuf::free_bulk(dropped.drain());
        if queued > 0 {
            self.enter();
        }
        taken
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        let before = out.len();
        let got = super::memory::alloc_from(&self.pool, n, out);
        for m in &mut out[before..] {
            meta::clear_peer(m);
        }
        got
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: !self.eof,
            speed_mbps: None,
            full_duplex: None,
        }
    }

    fn stats(&self) -> QueueStats {
        let mut s = self.stats;
        s.drop_n(DropReason::RxOverrun, self.socket_drops());
        s
    }

    fn id(&self) -> (PortId, QueueId) {
        self.id
    }
}

impl Drop for UdpPort {
    fn drop(&mut self) {
        // Take the receive back from the kernel, and wait for every send,
        // before any lent or in-flight mbuf goes back to the pool.
        if self.recv_armed {
            let cancel = opcode::AsyncCancel::new(RECV_TAG)
                .build()
                .user_data(CANCEL_TAG);
            // SAFETY: a cancel names no buffer.
            let _ = unsafe { self.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut sink = MbufBatch::new();
        while (self.recv_armed || self.tx_in_flight() > 0) && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let mut room = 0;
            self.reap(&mut sink, &mut room);
            sink.clear();
            self.stash.clear();
        }
        if self.recv_armed || self.tx_in_flight() > 0 {
            // Never free what the kernel may still write: leak it.
            tracing::error!(
                "io_uring port {:?}: the kernel did not give back its buffers in {DRAIN_TIMEOUT:?}; leaking them",
                self.id
            );
            return;
        }
        let sub = self.ring.submitter();
        let _ = sub.unregister_buf_ring(BGID);
        // The ring's own teardown is asynchronous: drop its references to
        // the socket and the pool now, so that the port's address is free
        // and its pages unpinned when this returns.
        let _ = sub.unregister_files();
        if !self.fixed.is_empty() {
            let _ = sub.unregister_buffers();
        }
        for raw in self.lent.iter_mut().filter_map(Option::take) {
            // SAFETY: lent mbufs of our pool; the receive has ended (its last
            // completion came) and the ring is unregistered, so the kernel
            // holds none of them.
            drop(unsafe { Mbuf::from_raw(raw) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        let d = UdpDevice::parse("udp:10.0.0.1:9000,peer=10.0.0.2:9001,zc=off").expect("ok");
        assert_eq!(d.local, "10.0.0.1:9000".parse().expect("addr"));
        assert_eq!(d.peer, Some("10.0.0.2:9001".parse().expect("addr")));
        assert_eq!(d.zc_min, None);
        let d = UdpDevice::parse("udp:[::1]:53,zc=4096").expect("ok");
        assert!(d.local.is_ipv6());
        assert_eq!(d.zc_min, Some(4096));
        let d = UdpDevice::parse("tcp:127.0.0.1:0,peer=127.0.0.1:80").expect("ok");
        assert_eq!(d.transport, Transport::Tcp);
        assert_eq!(d.peer, Some("127.0.0.1:80".parse().expect("addr")));
        let d = UdpDevice::parse("tcp:0.0.0.0:7000,accept=3").expect("ok");
        assert_eq!((d.peer, d.accept_timeout), (None, Duration::from_secs(3)));
        for bad in [
            "veth0",
            "udp:1.2.3.4",
            "udp:1.2.3.4:5,peer=x",
            "udp:1.2.3.4:5,mtu=9",
            "udp:1.2.3.4:5,accept=3",
            "tcp:1.2.3.4:5,accept=soon",
        ] {
            assert!(UdpDevice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for addr in ["192.0.2.7:4242", "[fd00::5]:99"] {
            let a: SocketAddr = addr.parse().expect("addr");
            let mut raw: libc::sockaddr_in6 =
                // SAFETY: plain data; zeroes are valid.
                unsafe { std::mem::zeroed() };
            let len = to_sockaddr(a, &mut raw) as usize;
            let ptr = std::ptr::from_ref(&raw).cast::<u8>();
            // SAFETY: `raw` is `size_of::<sockaddr_in6>()` initialised bytes.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, size_of::<libc::sockaddr_in6>()) };
            assert!(len <= NAME_LEN);
            assert_eq!(from_name(bytes), Some(a));
        }
        assert_eq!(from_name(&[0; 4]), None);
    }

    #[test]
    fn the_probe_names_what_it_found() {
        let p = IoUring.probe();
        assert!(!p.reason.is_empty());
        println!("io_uring backend: {p}");
    }
}
