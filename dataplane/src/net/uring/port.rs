//! One queue of an io_uring socket port: its state, and opening it.

use super::device::SocketDevice;
use super::socket::*;
use super::*;
use crate::uring::buf_ring::BufRing;
use crate::uring::{MAX_FIXED_BUFFER, TaskRun, fixed_buffers};

/// A send the kernel has not finished with.
#[derive(Debug)]
pub(super) struct TxSlot {
    pub(super) mbuf: Option<NonNull<MbufHeader>>,
    pub(super) addr: libc::sockaddr_in6,
    /// A zero-copy send whose notification is still to come.
    pub(super) notif_pending: bool,
}

/// One queue of an io_uring UDP port.
pub struct SocketPort {
    pub(super) id: (PortId, QueueId),
    pub(super) ring: Ring,
    pub(super) socket: Socket,
    /// TCP: the peer closed its side (a zero-length receive).
    pub(super) eof: bool,
    pub(super) bufs: BufRing,
    /// The mbuf lent to the kernel under each buffer id, as a raw pointer
    /// (kernel-owned: never read while it is lent).
    pub(super) lent: Vec<Option<NonNull<MbufHeader>>>,
    /// Buffer ids with no mbuf (the pool ran dry), refilled later.
    pub(super) empty: Vec<u16>,
    pub(super) buf_offset: usize,
    pub(super) buf_len: u32,
    pub(super) msghdr: Box<libc::msghdr>,
    /// Where `msghdr.msg_name` points (the kernel writes names into the
    /// buffers instead; kept alive for the request's lifetime).
    pub(super) _name_area: Box<[u8; NAME_LEN]>,
    pub(super) recv_armed: bool,
    pub(super) entered_since_rx: bool,
    pub(super) stash: MbufBatch,
    pub(super) tx: Box<[TxSlot]>,
    pub(super) tx_free: Vec<u32>,
    /// The pool's memory as registered fixed buffers: (start, len, index).
    pub(super) fixed: Vec<(usize, usize, u16)>,
    pub(super) zc_min: Option<usize>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) pool: MbufPool,
    pub(super) caps: Capabilities,
    pub(super) burst: usize,
    pub(super) stats: QueueStats,
}

// SAFETY: the raw pointers are mbufs (Send) and the port's own boxed
// memory; the port is used by one thread at a time (`&mut self`).
unsafe impl Send for SocketPort {}

impl std::fmt::Debug for SocketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketPort")
            .field("id", &self.id)
            .field("local", &self.socket.local_addr().ok())
            .field("peer", &self.peer)
            .field("lent", &self.lent.iter().flatten().count())
            .field("tx_in_flight", &(self.tx.len() - self.tx_free.len()))
            .finish()
    }
}

pub(super) fn next_port_id() -> PortId {
    static NEXT: AtomicU16 = AtomicU16::new(0x6000);
    // Relaxed: only uniqueness matters.
    PortId(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl SocketPort {
    /// Opens `cfg.device` (`udp:...`), one [`SocketPort`] per queue.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed device, zero queues, a burst over
    /// [`MAX_BURST`], or several queues on port 0; [`Error::Io`] naming
    /// the step that failed; [`Error::Memory`] when a pool cannot be made.
    pub fn open(cfg: &PortConfig) -> Result<Vec<SocketPort>> {
        let dev = SocketDevice::parse(&cfg.device)?;
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
            .map(|(socket, q)| SocketPort::open_queue(cfg, &dev, socket, id, QueueId(q)))
            .collect()
    }

    fn open_queue(
        cfg: &PortConfig,
        dev: &SocketDevice,
        socket: Socket,
        id: PortId,
        q: QueueId,
    ) -> Result<SocketPort> {
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
        // Cooperative task work at best: the port is opened on one thread
        // (in its namespace) and polled on another, which DEFER_TASKRUN's
        // single issuer does not allow.
        let (ring, _) = crate::uring::build_ring(&crate::uring::RingSetup {
            entries: sq,
            cq_entries: cq,
            modes: &[TaskRun::Coop, TaskRun::Plain],
            disabled: false,
            iopoll: false,
            sqpoll: None,
        })
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
        let mut port = SocketPort {
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
}

/// Registers the pool's regions as fixed buffers for zero-copy sends;
/// empty (sends copy) when the kernel refuses, which is logged.
pub(super) fn register_pool(ring: &Ring, pool: &MbufPool, dev: &str) -> Vec<(usize, usize, u16)> {
    let iovecs = fixed_buffers(pool.regions(), MAX_FIXED_BUFFER);
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
