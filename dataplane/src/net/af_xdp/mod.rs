//! AF_XDP: whole Ethernet frames between the driver and our mbufs through
//! rings shared with the kernel, zero-copy on drivers that support it and
//! copy mode elsewhere (veth, or any interface through the generic hook).
//!
//! Per port, one XDP program (five instructions loaded through `bpf(2)`) is attached to the interface through a BPF link: it
//! redirects the frames of every queue that has a socket to that socket
//! through an `XSKMAP`, and passes the rest to the kernel's stack. The
//! driver's own hook (`XDP_FLAGS_DRV_MODE`) is tried first, then the
//! generic one; the mode is logged.
//!
//! Per queue, one AF_XDP socket with its own UMEM: the queue's
//! [`MbufPool`] region itself, registered in unaligned-chunk mode with one
//! chunk per mbuf buffer. So a received frame *is* an mbuf (the kernel
//! writes it into the buffer of an mbuf we lent it through the fill ring,
//! 256 bytes in, after its XDP headroom), and an mbuf of the queue's pool
//! is sent without a copy (its data address goes on the tx ring, and the
//! mbuf comes back to the pool when the completion ring returns the
//! address). Mbufs of any other pool are copied into one of ours first,
//! as DPDK's `net_af_xdp` does. The four rings are in [`ring`](self).
//!
//! Zero-copy (`XDP_ZEROCOPY`) is asked for when the program sits in the
//! driver's hook and the pool is on hugepages (a chunk must not cross a
//! page boundary that is not contiguous for the device); when the driver
//! refuses (veth has no zero-copy), the socket is made again in copy mode
//! (`XDP_COPY`) and the reason is logged. Sockets use need-wakeup
//! (`XDP_USE_NEED_WAKEUP`): the tx ring is kicked with `sendto` only when
//! the kernel asks (always, in copy mode), the fill ring with `recvfrom`.
//! Busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`,
//! `SO_BUSY_POLL_BUDGET`) is set where the kernel allows it; then an empty
//! rx ring costs one non-blocking `recvfrom`, which runs the driver's
//! NAPI poll on this lcore instead of in a softirq.
//!
//! Drops, from `XDP_STATISTICS`: frames the kernel could not place
//! because the fill ring was empty or the frame did not fit a chunk
//! (`rx_dropped`) count as `NoMbuf`; frames lost to a full rx ring as
//! `RxOverrun`; invalid descriptors as errors. Frames longer than the MTU
//! (plus the Ethernet header and a VLAN tag) are refused on tx as
//! `Oversized`.
//!
//! Device syntax: the interface name (`veth0`, `eth1`), as AF_PACKET's.
//! Needs CAP_NET_RAW, CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN, and
//! Linux 5.9 (BPF links for XDP; unaligned chunks and need-wakeup are 5.4).

mod ring;

use super::iface::{IfInfo, if_info, ioctl_socket, link_of, next_port_id, nic_rss, setsockopt};
use super::memory::alloc_from;
use super::{
    Backend, Capabilities, DropReason, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig,
    PortId, QueueId, QueueStats,
};
use crate::backend::Probe;
use crate::xdp as bpf;
use crate::{Error, Result};
use hugepages::mbuf::{Mbuf, MbufHeader, MbufPool, MbufPoolConfig};
use ring::Ring;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// The headroom the kernel leaves before a received frame in its chunk
/// (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: usize = 256;

/// In unaligned-chunk mode, an rx descriptor's address carries the frame's
/// offset in its chunk above this bit (`XSK_UNALIGNED_BUF_OFFSET_SHIFT`).
/// How long a bind that finds its queue busy is retried (a socket closed
/// just before is released by the kernel shortly after its close).
const BIND_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

const UNALIGNED_OFFSET_SHIFT: u32 = 48;
const UNALIGNED_ADDR_MASK: u64 = (1 << UNALIGNED_OFFSET_SHIFT) - 1;

/// An Ethernet header: the shortest frame sent.
const ETH_HLEN: usize = 14;

// Socket options of include/uapi/asm-generic/socket.h that libc lacks.
const SO_BUSY_POLL: i32 = 46;
const SO_PREFER_BUSY_POLL: i32 = 69;
const SO_BUSY_POLL_BUDGET: i32 = 70;

/// Microseconds a busy-poll `recvfrom` may spin in the driver (only for
/// blocking calls: ours are non-blocking, one NAPI poll each).
const BUSY_POLL_US: i32 = 20;

/// Frames one busy-poll `recvfrom` may move through the driver: NAPI's
/// default weight (`NAPI_POLL_WEIGHT`), which is also DPDK's
/// `net_af_xdp` default (`busy_budget=64`).
const BUSY_POLL_BUDGET: i32 = 64;

/// The most `sendto` calls one kick makes (each sends up to 32 frames in
/// copy mode): a tx ring of 1024 emptied in one kick.
const MAX_KICKS: u32 = 32;

/// The AF_XDP backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct AfXdp;

fn getsockopt<T>(fd: BorrowedFd<'_>, level: i32, name: i32, value: &mut T) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, a live
    // `T` of plain data (every use below is a C struct of integers).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ctx(what: &str, ifname: &str) -> impl FnOnce(io::Error) -> Error + use<> {
    let context = format!("AF_XDP {ifname}: {what}");
    move |e| Error::io(context, e)
}

/// The XDP program of one port, attached for as long as a queue holds it.
#[derive(Debug)]
struct Attachment {
    map: OwnedFd,
    _prog: OwnedFd,
    /// Closing the link detaches the program.
    _link: OwnedFd,
    /// Whether the program runs in the driver's hook (else generic).
    driver_mode: bool,
}

impl Attachment {
    fn new(info: &IfInfo, ifname: &str, queues: u16) -> Result<Attachment> {
        let map = bpf::xskmap(u32::from(queues)).map_err(ctx("XSKMAP", ifname))?;
        let prog = bpf::load_program(map.as_fd()).map_err(ctx("load the XDP program", ifname))?;
        let (link, driver_mode) =
            match bpf::attach(prog.as_fd(), info.index, bpf::XDP_FLAGS_DRV_MODE) {
                Ok(link) => (link, true),
                Err(drv) if drv.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(Error::io(
                        format!(
                            "AF_XDP {ifname}: the interface already has an XDP program \
                             (another AF_XDP port, or a program someone attached)"
                        ),
                        drv,
                    ));
                }
                Err(drv) => {
                    let link =
                        bpf::attach(prog.as_fd(), info.index, bpf::XDP_FLAGS_SKB_MODE).map_err(
                            ctx("attach the XDP program (driver and generic mode)", ifname),
                        )?;
                    tracing::info!(
                        "AF_XDP {ifname}: the driver's XDP hook refused the program ({drv}); \
                         using the generic hook"
                    );
                    (link, false)
                }
            };
        Ok(Attachment {
            map,
            _prog: prog,
            _link: link,
            driver_mode,
        })
    }
}

/// A queue's pool as a UMEM: which of its mbufs the kernel holds.
struct Umem {
    pool: MbufPool,
    /// The region's start: UMEM address 0.
    base: *mut u8,
    len: usize,
    /// Bytes of buffer per mbuf: the chunk size.
    chunk: usize,
    /// Per mbuf, by its index in the pool: its header while it is lent to
    /// the kernel (fill ring, or tx until its completion). An address the
    /// kernel hands back is taken only if its mbuf is marked lent here, so
    /// a bad descriptor can never make two owners.
    lent: Box<[Option<NonNull<MbufHeader>>]>,
    lent_count: usize,
}

// SAFETY: `base` points into the pool's region, which `pool` keeps alive;
// a Umem is used by the one thread that owns its queue.
unsafe impl Send for Umem {}

impl Umem {
    fn new(pool: MbufPool) -> std::result::Result<Umem, String> {
        let (base, len) = match pool.regions() {
            [only] => (only.as_ptr(), only.len()),
            more => return Err(format!("the pool spans {} regions, not one", more.len())),
        };
        Ok(Umem {
            chunk: pool.data_room(),
            lent: vec![None; pool.capacity()].into_boxed_slice(),
            pool,
            base,
            len,
            lent_count: 0,
        })
    }

    /// Lends `m` to the kernel; returns the UMEM address of `ptr` (a byte
    /// of its buffer).
    #[inline]
    fn lend(&mut self, m: Mbuf, ptr: *const u8) -> u64 {
        let hdr = m.into_raw();
        if let Some((idx, _)) = self.pool.mbuf_containing(hdr.as_ptr().cast_const().cast())
            && let Some(slot) = self.lent.get_mut(idx)
        {
            *slot = Some(hdr);
            self.lent_count += 1;
        } else {
            // Callers lend only mbufs of this pool (`owns`, or fresh ones).
            debug_assert!(false, "lent an mbuf of another pool");
        }
        (ptr.addr() - self.base.addr()) as u64
    }

    /// Takes back the mbuf holding UMEM address `addr`, if it is one the
    /// kernel holds.
    #[inline]
    fn reclaim(&mut self, addr: usize) -> Option<Mbuf> {
        if addr >= self.len {
            return None;
        }
        let (idx, _) = self.pool.mbuf_containing(self.base.wrapping_add(addr))?;
        let hdr = self.lent.get_mut(idx)?.take()?;
        self.lent_count -= 1;
        // SAFETY: `hdr` was lent to the kernel by `lend` (which gave up
        // ownership through into_raw); the kernel has handed it back, and
        // taking it out of `lent` makes this the only owner.
        Some(unsafe { Mbuf::from_raw(hdr) })
    }

    /// Whether `m` is one of this UMEM's mbufs (sendable without a copy).
    #[inline]
    fn owns(&self, m: &Mbuf) -> bool {
        let p = m.as_ptr().as_ptr().cast_const().cast::<u8>();
        m.is_native()
            && self
                .pool
                .mbuf_containing(p)
                .is_some_and(|(_, h)| h.as_ptr().cast_const().cast() == p)
    }

    /// Takes back every mbuf still lent (the socket is closed).
    fn reclaim_all(&mut self) -> Vec<Mbuf> {
        self.lent_count = 0;
        self.lent
            .iter_mut()
            .filter_map(Option::take)
            // SAFETY: as in `reclaim`: lent, and now ours alone.
            .map(|hdr| unsafe { Mbuf::from_raw(hdr) })
            .collect()
    }
}

/// The sizes of a queue's rings: powers of two.
#[derive(Debug, Clone, Copy)]
struct RingSizes {
    rx: u32,
    fill: u32,
    tx: u32,
    comp: u32,
}

impl RingSizes {
    fn for_config(cfg: &PortConfig) -> RingSizes {
        let rx = u32::from(cfg.rx_desc.max(64)).next_power_of_two();
        let tx = u32::from(cfg.tx_desc.max(64)).next_power_of_two();
        // Twice the rx ring, so the kernel has buffers while the rx ring
        // is full, but never more than half the pool: tx needs mbufs too.
        let half_pool = u32::try_from(cfg.mbufs / 2).unwrap_or(u32::MAX).max(64);
        let fill = (rx * 2).min(1 << (31 - half_pool.leading_zeros()));
        RingSizes {
            rx,
            fill,
            tx,
            comp: tx,
        }
    }
}

/// A bound socket and its rings.
struct Socket {
    fd: OwnedFd,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    zero_copy: bool,
    busy_poll: bool,
}

impl Socket {
    /// Makes, maps and binds a socket for queue `queue`; `zero_copy` asks
    /// for `XDP_ZEROCOPY` (else `XDP_COPY`).
    fn open(
        ifname: &str,
        info: &IfInfo,
        queue: u16,
        umem: &Umem,
        sizes: RingSizes,
        zero_copy: bool,
    ) -> Result<Socket> {
        let e = |what: &str| ctx(what, ifname);
        let fd = bpf::socket().map_err(e("socket"))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.base.addr() as u64,
            len: umem.len as u64,
            chunk_size: umem.chunk as u32,
            headroom: 0,
            flags: libc::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
            .map_err(e("XDP_UMEM_REG (the pool as UMEM)"))?;
        for (opt, n, what) in [
            (libc::XDP_UMEM_FILL_RING, sizes.fill, "XDP_UMEM_FILL_RING"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                sizes.comp,
                "XDP_UMEM_COMPLETION_RING",
            ),
            (libc::XDP_RX_RING, sizes.rx, "XDP_RX_RING"),
            (libc::XDP_TX_RING, sizes.tx, "XDP_TX_RING"),
        ] {
            setsockopt(fd.as_fd(), libc::SOL_XDP, opt, &n).map_err(e(what))?;
        }
        // SAFETY: xdp_mmap_offsets is plain data; zeroes are valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let got = getsockopt(fd.as_fd(), libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, &mut off)
            .map_err(e("XDP_MMAP_OFFSETS"))?;
        if got != size_of::<libc::xdp_mmap_offsets>() {
            return Err(Error::Config(format!(
                "AF_XDP {ifname}: the kernel's rings have no flags word (need-wakeup, Linux 5.4)"
            )));
        }
        let fill = Ring::map(
            fd.as_fd(),
            libc::XDP_UMEM_PGOFF_FILL_RING,
            &off.fr,
            sizes.fill,
        )
        .map_err(e("mmap fill ring"))?;
        let comp = Ring::map(
            fd.as_fd(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &off.cr,
            sizes.comp,
        )
        .map_err(e("mmap completion ring"))?;
        let rx = Ring::map(
            fd.as_fd(),
            libc::XDP_PGOFF_RX_RING as u64,
            &off.rx,
            sizes.rx,
        )
        .map_err(e("mmap rx ring"))?;
        let tx = Ring::map(
            fd.as_fd(),
            libc::XDP_PGOFF_TX_RING as u64,
            &off.tx,
            sizes.tx,
        )
        .map_err(e("mmap tx ring"))?;
        let one: libc::c_int = 1;
        let busy_poll = [
            (SO_PREFER_BUSY_POLL, one),
            (SO_BUSY_POLL, BUSY_POLL_US),
            (SO_BUSY_POLL_BUDGET, BUSY_POLL_BUDGET),
        ]
        .iter()
        .try_for_each(|(opt, v)| setsockopt(fd.as_fd(), libc::SOL_SOCKET, *opt, v))
        .inspect_err(|err| {
            tracing::debug!("AF_XDP {ifname} queue {queue}: no busy polling ({err})");
        })
        .is_ok();
        let mode = if zero_copy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: mode | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: info.index as u32,
            sxdp_queue_id: u32::from(queue),
            sxdp_shared_umem_fd: 0,
        };
        // A socket closed a moment ago may still hold the queue: the
        // kernel releases its buffer pool from a work queue after the
        // close returns, and a bind in between fails with EBUSY. Try again
        // for a while before saying another socket holds it.
        let deadline = std::time::Instant::now() + BIND_BUSY_WAIT;
        let failed = loop {
            // SAFETY: `sxdp` is a valid sockaddr_xdp of the length given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&sxdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break None;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EBUSY) || std::time::Instant::now() >= deadline {
                break Some(err);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        if let Some(err) = failed {
            let what = match err.raw_os_error() {
                Some(libc::EINVAL) => {
                    format!("bind to queue {queue} (does the interface have it?)")
                }
                Some(libc::EBUSY) => format!("bind to queue {queue} (another socket holds it)"),
                _ => format!("bind to queue {queue}"),
            };
            return Err(ctx(&what, ifname)(err));
        }
        let mut opts = libc::xdp_options { flags: 0 };
        let zero_copy = getsockopt(fd.as_fd(), libc::SOL_XDP, libc::XDP_OPTIONS, &mut opts)
            .is_ok_and(|_| opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0);
        Ok(Socket {
            fd,
            fill,
            comp,
            rx,
            tx,
            zero_copy,
            busy_poll,
        })
    }
}

impl Backend for AfXdp {
    fn probe(&self) -> Probe {
        bpf::probe()
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        AfXdpPort::open(cfg).map(|ports| {
            ports
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn Port>)
                .collect()
        })
    }
}

/// One queue of an AF_XDP port.
pub struct AfXdpPort {
    id: (PortId, QueueId),
    ifname: String,
    /// For the interface ioctls (link state).
    ctl: OwnedFd,
    /// `None` only while dropping: the socket closes before the mbufs the
    /// kernel held go back to the pool.
    sock: Option<Socket>,
    umem: Umem,
    attachment: Arc<Attachment>,
    /// A tx kick the kernel refused or did not finish, to retry.
    kick_pending: bool,
    max_frame: usize,
    caps: Capabilities,
    burst: usize,
    stats: QueueStats,
    /// `XDP_STATISTICS` when the socket closed (read while it is open).
    final_kernel: Option<libc::xdp_statistics>,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("id", &self.id)
            .field("ifname", &self.ifname)
            .field("zero_copy", &self.is_zero_copy())
            .field("driver_mode", &self.attachment.driver_mode)
            .field("pool", &self.umem.pool.name())
            .finish()
    }
}

impl AfXdpPort {
    /// Opens `cfg.device`, one [`AfXdpPort`] per queue (queue *q* binds
    /// the interface's rx/tx queue *q*).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step that failed (no such interface, no
    /// privilege, an XDP program already attached, a queue the interface
    /// lacks); [`Error::Config`] for zero queues, a burst over
    /// [`MAX_BURST`] or a pool that is not one region; [`Error::Memory`]
    /// when a pool cannot be made.
    pub fn open(cfg: &PortConfig) -> Result<Vec<AfXdpPort>> {
        let ifname = cfg.device.as_str();
        if cfg.queues == 0 || cfg.burst == 0 || cfg.burst > MAX_BURST {
            return Err(Error::Config(format!(
                "AF_XDP {ifname}: {} queues, burst {} (need >= 1 queue and a burst of 1..={MAX_BURST})",
                cfg.queues, cfg.burst
            )));
        }
        let ctl = ioctl_socket().map_err(ctx("socket", ifname))?;
        let info = if_info(ctl.as_fd(), ifname).map_err(ctx("interface", ifname))?;
        let attachment = Arc::new(Attachment::new(&info, ifname, cfg.queues)?);
        let id = next_port_id();
        let mut caps = Capabilities::basic("af_xdp", Layer::L2, cfg.burst, info.mtu, cfg.queues);
        caps.rss = cfg.queues > 1;
        caps.mac = info.mac;
        // The queues are the NIC's: its RSS decides which a flow reaches,
        // and the driver may say how (veth does not).
        if cfg.queues > 1 {
            caps.steering = match nic_rss(ctl.as_fd(), ifname) {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(
                        ifname,
                        "RSS not reported ({e}): outbound source ports are not steered"
                    );
                    None
                }
            };
        }
        let sizes = RingSizes::for_config(cfg);
        let mut ports = Vec::with_capacity(usize::from(cfg.queues));
        for q in 0..cfg.queues {
            let pool = MbufPool::new(MbufPoolConfig {
                name: format!("afx{}q{q}", id.0),
                count: cfg.mbufs,
                cache_size: cfg.mbuf_cache,
                numa_node: cfg.numa_node,
                ..MbufPoolConfig::default()
            })?;
            let hugepages = pool.regions().iter().all(|r| r.is_hugepage_backed());
            let umem = Umem::new(pool)
                .map_err(|why| Error::Config(format!("AF_XDP {ifname}: UMEM: {why}")))?;
            let try_zc = attachment.driver_mode && hugepages;
            let sock = match Socket::open(ifname, &info, q, &umem, sizes, try_zc) {
                Ok(s) => s,
                Err(zc) if try_zc => {
                    tracing::info!(
                        "AF_XDP {ifname} queue {q}: no zero-copy ({zc}); using copy mode"
                    );
                    Socket::open(ifname, &info, q, &umem, sizes, false)?
                }
                Err(e) => return Err(e),
            };
            if !try_zc {
                let why = if attachment.driver_mode {
                    "the pool is not on hugepages"
                } else {
                    "the program is in the generic hook"
                };
                tracing::info!("AF_XDP {ifname} queue {q}: copy mode ({why})");
            }
            bpf::xskmap_set(attachment.map.as_fd(), u32::from(q), sock.fd.as_fd())
                .map_err(ctx("XSKMAP update", ifname))?;
            // The kernel's own check: chunk minus its headroom.
            let rx_room = umem.chunk - XDP_PACKET_HEADROOM;
            let max_frame = (info.mtu + ETH_HLEN + 4).min(rx_room);
            let mut port = AfXdpPort {
                id: (id, QueueId(q)),
                ifname: ifname.to_owned(),
                ctl: ctl.try_clone().map_err(ctx("dup", ifname))?,
                sock: Some(sock),
                umem,
                attachment: attachment.clone(),
                kick_pending: false,
                max_frame,
                caps: caps.clone(),
                burst: cfg.burst,
                stats: QueueStats::default(),
                final_kernel: None,
            };
            port.refill();
            ports.push(port);
        }
        Ok(ports)
    }

    /// The pool the queue receives into and sends from without a copy.
    pub fn pool(&self) -> &MbufPool {
        &self.umem.pool
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether the socket runs zero-copy (the driver DMAs into our mbufs).
    pub fn is_zero_copy(&self) -> bool {
        self.sock.as_ref().is_some_and(|s| s.zero_copy)
    }

    /// Whether the XDP program runs in the driver's hook (else the
    /// generic one).
    pub fn is_driver_mode(&self) -> bool {
        self.attachment.driver_mode
    }

    /// Mbufs the kernel holds: in the fill ring, received but not yet
    /// read, or sent and not yet completed.
    pub fn lent_to_kernel(&self) -> usize {
        self.umem.lent_count
    }

    /// Tops the fill ring up with fresh mbufs.
    fn refill(&mut self) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        let mut free = sock.fill.free(u32::MAX) as usize;
        let mut batch = MbufBatch::new();
        while free > 0 {
            let got = alloc_from(&self.umem.pool, free.min(MAX_BURST), &mut batch);
            if got == 0 {
                break;
            }
            for m in batch.drain() {
                let chunk = m.header().buf_addr.cast_const();
                let addr = self.umem.lend(m, chunk);
                sock.fill.push(addr);
            }
            free -= got;
        }
        sock.fill.submit();
        if sock.fill.needs_wakeup() {
            wake_rx(sock.fd.as_fd());
        }
    }

    /// Returns the mbufs whose transmission completed to the pool.
    fn complete(&mut self) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        let n = sock.comp.ready(u32::MAX);
        if n == 0 {
            return;
        }
        // Freed a burst at a time from an inline batch: no allocation.
        let mut done = MbufBatch::new();
        for _ in 0..n {
            let addr = sock.comp.pop();
            match usize::try_from(addr & UNALIGNED_ADDR_MASK)
                .ok()
                .and_then(|a| self.umem.reclaim(a))
            {
                Some(m) => {
                    if let Err(m) = done.push(m) {
                        Mbuf::free_bulk(done.drain());
                        // Cannot fail: the batch was just emptied.
                        let _ = done.push(m);
                    }
                }
                None => self.stats.errors += 1,
            }
        }
        sock.comp.release();
        Mbuf::free_bulk(done.drain());
    }

    /// Asks the kernel to send what the tx ring holds. In copy mode one
    /// `sendto` sends at most a small batch (32 frames) and answers
    /// `EAGAIN` while more are queued, so it is repeated, the completion
    /// ring drained in between, until the ring is empty (as DPDK's
    /// `net_af_xdp` does) or a bounded number of calls made no headway:
    /// frames copied soon after they were written are still in the cache,
    /// where a ring left full would hold hundreds of cold ones.
    fn kick(&mut self) {
        let mut calls = 0;
        loop {
            let Some(sock) = self.sock.as_mut() else {
                return;
            };
            // SAFETY: a send of zero bytes from no buffer: for an AF_XDP
            // socket it means "process the tx ring".
            let rc = unsafe {
                libc::sendto(
                    sock.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let again = rc < 0
                && match io::Error::last_os_error().raw_os_error() {
                    // More queued than one call sends, or the kernel is
                    // busy with the ring, or out of skbs: retry.
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => true,
                    _ => {
                        self.stats.errors += 1;
                        false
                    }
                };
            let outstanding = sock.tx.outstanding();
            self.kick_pending = outstanding > 0;
            calls += 1;
            if !again || outstanding == 0 || calls >= MAX_KICKS {
                return;
            }
            self.complete();
        }
    }

    /// Counters the kernel keeps for the socket.
    fn kernel_stats(&self) -> Option<libc::xdp_statistics> {
        let sock = self.sock.as_ref()?;
        // SAFETY: xdp_statistics is plain data; zeroes are valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(
            sock.fd.as_fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            &mut st,
        )
        .ok()?;
        Some(st)
    }
}

/// A non-blocking `recvfrom` of nothing: wakes the driver to use the fill
/// ring, or (with busy polling) runs one NAPI poll on this thread.
fn wake_rx(fd: BorrowedFd<'_>) {
    // SAFETY: a receive of zero bytes into no buffer, non-blocking.
    unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

impl Port for AfXdpPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        if self.kick_pending {
            self.kick();
        }
        self.complete();
        let room = out.spare().min(self.burst) as u32;
        let port = self.id.0.0;
        let Some(sock) = self.sock.as_mut() else {
            return 0;
        };
        let mut n = sock.rx.ready(room);
        if n == 0 && sock.busy_poll {
            wake_rx(sock.fd.as_fd());
            n = sock.rx.ready(room);
        }
        if n == 0 {
            return 0;
        }
        let (mut packets, mut bytes) = (0u64, 0u64);
        for _ in 0..n {
            let d = sock.rx.pop();
            let chunk = usize::try_from(d.addr & UNALIGNED_ADDR_MASK).unwrap_or(usize::MAX);
            let offset = (d.addr >> UNALIGNED_OFFSET_SHIFT) as usize;
            let Some(mut m) = self.umem.reclaim(chunk) else {
                self.stats.errors += 1;
                continue;
            };
            if m.set_data(offset, d.len as usize).is_err() {
                // A length past the chunk: the kernel never writes one.
                self.stats.errors += 1;
                continue;
            }
            m.set_port(port);
            bytes += u64::from(d.len);
            packets += 1;
            // Cannot fail: at most `room` are delivered.
            let _ = out.push(m);
        }
        sock.rx.release();
        self.stats.rx_packets += packets;
        self.stats.rx_bytes += bytes;
        self.refill();
        packets as usize
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        self.complete();
        let max = self.max_frame;
        let Some(sock) = self.sock.as_mut() else {
            return 0;
        };
        let mut free = sock.tx.free(pkts.len() as u32);
        let (mut taken, mut packets, mut bytes) = (0, 0u64, 0u64);
        // Mbufs done with here: refused, or copied into one of ours.
        let mut done = MbufBatch::new();
        while let Some(m) = pkts.first() {
            let len = m.len();
            let refused = if len > max {
                Some(DropReason::Oversized)
            } else if len < ETH_HLEN {
                Some(DropReason::Truncated)
            } else {
                None
            };
            if let Some(why) = refused {
                self.stats.drop_one(why);
            } else if free == 0 {
                break;
            } else {
                let frame = if self.umem.owns(m) {
                    pkts.pop_front()
                } else {
                    // Another pool's mbuf: copy it into one of ours (len
                    // <= max, which fits any of our buffers).
                    let Some(mut copy) = self.umem.pool.alloc() else {
                        break;
                    };
                    let Ok(dst) = copy.append(len) else { break };
                    dst.copy_from_slice(m.data());
                    if let Some(old) = pkts.pop_front() {
                        // Cannot fail: `done` holds at most what `pkts` held.
                        let _ = done.push(old);
                    }
                    Some(copy)
                };
                if let Some(frame) = frame {
                    let data = frame.data().as_ptr();
                    let addr = self.umem.lend(frame, data);
                    sock.tx.push(libc::xdp_desc {
                        addr,
                        len: len as u32,
                        options: 0,
                    });
                    free -= 1;
                    packets += 1;
                    bytes += len as u64;
                }
                taken += 1;
                continue;
            }
            if let Some(old) = pkts.pop_front() {
                let _ = done.push(old);
            }
            taken += 1;
        }
        Mbuf::free_bulk(done.drain());
        if packets > 0 {
            sock.tx.submit();
        }
        if (packets > 0 || self.kick_pending) && sock.tx.needs_wakeup() {
            self.kick();
        }
        self.stats.tx_packets += packets;
        self.stats.tx_bytes += bytes;
        taken
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        alloc_from(&self.umem.pool, n, out)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        link_of(self.ctl.as_fd(), &self.ifname)
    }

    fn stats(&self) -> QueueStats {
        let mut s = self.stats;
        if let Some(k) = self.kernel_stats().or(self.final_kernel) {
            s.drop_n(DropReason::NoMbuf, k.rx_dropped);
            s.drop_n(DropReason::RxOverrun, k.rx_ring_full);
            s.errors += k.rx_invalid_descs + k.tx_invalid_descs;
        }
        s
    }

    fn id(&self) -> (PortId, QueueId) {
        self.id
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        // Give the kernel what is queued, and take back what completed.
        if self.kick_pending {
            self.kick();
        }
        self.complete();
        self.final_kernel = self.kernel_stats();
        // Closing the socket unbinds it from the queue (and removes it
        // from the XSKMAP) before close(2) returns; only then is every
        // mbuf the kernel held ours again.
        drop(self.sock.take());
        Mbuf::free_bulk(self.umem.reclaim_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_and_leave_mbufs_for_tx() {
        let cfg = PortConfig::new("veth0")
            .with_descriptors(512, 300)
            .with_mbufs(2048, 0);
        let s = RingSizes::for_config(&cfg);
        assert_eq!((s.rx, s.fill, s.tx, s.comp), (512, 1024, 512, 512));
        let small = cfg.with_mbufs(700, 0);
        let s = RingSizes::for_config(&small);
        assert_eq!(s.fill, 256, "at most half the pool: {s:?}");
        assert!(s.fill.is_power_of_two());
    }

    #[test]
    fn a_umem_takes_back_only_what_it_lent() {
        let pool = MbufPool::new(MbufPoolConfig {
            name: "umem-unit".into(),
            count: 64,
            cache_size: 0,
            ..MbufPoolConfig::default()
        })
        .expect("pool");
        let mut umem = Umem::new(pool.clone()).expect("one region");
        let m = pool.alloc().expect("mbuf");
        let chunk = m.header().buf_addr.cast_const();
        let addr = umem.lend(m, chunk) as usize;
        assert_eq!(umem.lent_count, 1);
        assert_eq!(pool.in_use(), 1);
        // Any byte of the buffer names its mbuf.
        assert!(umem.reclaim(addr + 1000).is_some());
        // Once back, the same address is refused (no second owner).
        assert!(umem.reclaim(addr).is_none());
        assert!(umem.reclaim(usize::MAX >> 16).is_none());
        assert!(umem.reclaim(0).is_none());
        assert_eq!(umem.lent_count, 0);
        assert_eq!(pool.in_use(), 0);
        let m = pool.alloc().expect("mbuf");
        let chunk = m.header().buf_addr.cast_const();
        umem.lend(m, chunk);
        let back = umem.reclaim_all();
        assert_eq!(back.len(), 1);
        drop(back);
        assert_eq!(pool.in_use(), 0);
    }
}
