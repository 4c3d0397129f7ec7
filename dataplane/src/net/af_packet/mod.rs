//! AF_PACKET with memory-mapped rings: whole Ethernet frames through the
//! kernel, on any interface, with no driver to bind.
//!
//! Each queue has two sockets on the interface:
//!
//! - **rx**: `TPACKET_V3`, a `PACKET_RX_RING` of blocks that the kernel
//!   fills with many frames each and hands over when a block is full or
//!   its retire timer (1 ms) expires, so one status check covers a burst.
//!   Frames are copied out of the block into mbufs from the queue's pool,
//!   and the block goes back to the kernel as soon as it is read. Frames
//!   this host sends are not looped back (`PACKET_IGNORE_OUTGOING`). With
//!   more than one queue, the rx sockets join one `PACKET_FANOUT` group
//!   whose classic-BPF program (`fanout`) picks each frame's queue from
//!   its addresses and ports, as a NIC's RSS spreads flows over its
//!   queues, but by a function a program can compute
//!   ([`Capabilities::steering`]), so a TCP stack can choose source ports
//!   whose replies come back to its own queue. The kernel's flow hash
//!   still comes with each mbuf. The interface is put in promiscuous mode with
//!   `PACKET_ADD_MEMBERSHIP` (the kernel undoes it when the socket closes).
//!   With [`PortConfig::low_latency`] the rx ring is `TPACKET_V2`
//!   instead: a status word per frame, each frame handed over as it is
//!   filled (no block timer; a server answering requests waits for none).
//! - **tx**: `TPACKET_V2`, a `PACKET_TX_RING` of fixed frames. A burst is
//!   copied into free frames, each marked `TP_STATUS_SEND_REQUEST`, and
//!   handed over with one `sendto` (the kick). `PACKET_QDISC_BYPASS` sends
//!   straight to the driver, as DPDK's `af_packet` PMD does. A frame comes
//!   back when the kernel has freed the skb built from it; when every
//!   frame is in flight the ring is full and `tx_burst` leaves the rest
//!   with the caller. A kick that the socket refused (`EAGAIN`, `ENOBUFS`)
//!   is retried on the next `tx_burst` or `rx_burst`.
//!
//! The tx socket is bound with protocol 0, so it receives nothing, and the
//! rx socket is created with protocol 0 and bound to the interface only
//! after its ring is set up, so no frame of another interface slips in.
//!
//! Drops: `PACKET_STATISTICS` (which resets on read, so it is accumulated)
//! gives the frames the kernel dropped for a full ring: `RxOverrun`.
//! Frames longer than an mbuf are `Oversized`; no free mbuf is `NoMbuf`.
//!
//! Device syntax: the interface name (`veth0`, `eth1`). Needs CAP_NET_RAW.

mod fanout;
mod ring;

use super::iface::{IfInfo, if_info, link_of, next_port_id, setsockopt};
use super::memory::alloc_from;
use super::{
    Backend, Capabilities, DropReason, Layer, LinkStatus, MAX_BURST, MbufBatch, Port, PortConfig,
    PortId, QueueId, QueueStats,
};
use crate::backend::Probe;
use crate::wire::rss::Steering;
use crate::{Error, Result};
use hugepages::mbuf::{Mbuf, MbufPool, MbufPoolConfig};
use ring::{Mapping, RxRing, TX_DATA_OFFSET, TxCounts, TxRing};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Block retire timeout: a partly filled rx block is handed over after this
/// long (`tp_retire_blk_tov`, in ms; 1 is the smallest the kernel takes).
pub const RX_BLOCK_RETIRE_MS: u32 = 1;

/// Bytes per rx block: a multiple of the page size; 64 KiB holds about 400
/// minimum-size frames or 30 full ones.
pub const RX_BLOCK_SIZE: usize = 1 << 16;

/// Bytes per tx frame slot: a 1500-byte MTU frame with a VLAN tag plus the
/// 32-byte slot header fits (larger MTUs get the next power of two).
const TX_FRAME_SIZE_MIN: usize = 2048;

/// Bytes per tx block (the kernel's unit of allocation for the ring).
const TX_BLOCK_SIZE: usize = 1 << 16;

/// An Ethernet header: the shortest frame the kernel sends.
const ETH_HLEN: usize = 14;

/// `ETH_P_ALL` in network byte order, as the socket calls want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// The AF_PACKET backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct AfPacket;

/// An AF_PACKET raw socket with protocol 0 (it receives nothing until it
/// is bound with a protocol).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; it returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: BorrowedFd<'_>, ifindex: i32, protocol_be: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol_be;
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a valid sockaddr_ll of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ctx(what: &str, ifname: &str) -> impl FnOnce(io::Error) -> Error {
    let context = format!("AF_PACKET {ifname}: {what}");
    move |e| Error::io(context, e)
}

/// A fanout group id for one port: distinct per open in this process.
fn fanout_group() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Relaxed: only uniqueness matters.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id() as u16).wrapping_mul(31).wrapping_add(n)
}

/// The rx socket of one queue, with its ring mapped.
fn open_rx(cfg: &PortConfig, info: &IfInfo, fanout: Option<Fanout>) -> Result<(OwnedFd, RxRing)> {
    let ifname = cfg.device.as_str();
    let fd = packet_socket().map_err(ctx("socket", ifname))?;
    let (version, name) = if cfg.low_latency {
        (
            libc::tpacket_versions::TPACKET_V2,
            "PACKET_VERSION TPACKET_V2",
        )
    } else {
        (
            libc::tpacket_versions::TPACKET_V3,
            "PACKET_VERSION TPACKET_V3",
        )
    };
    setsockopt(
        fd.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        &(version as libc::c_int),
    )
    .map_err(ctx(name, ifname))?;
    let one: libc::c_int = 1;
    setsockopt(
        fd.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &one,
    )
    .map_err(ctx("PACKET_IGNORE_OUTGOING", ifname))?;
    // Ring bytes: rx_desc frames of 2 KiB, in whole blocks, at least 4.
    let frame_size = 2048usize;
    let blocks = (usize::from(cfg.rx_desc) * frame_size)
        .div_ceil(RX_BLOCK_SIZE)
        .max(4);
    let frames = RX_BLOCK_SIZE / frame_size * blocks;
    if cfg.low_latency {
        // Frame by frame: the kernel sets each frame's status as it fills
        // it, with no block to wait for.
        let req = libc::tpacket_req {
            tp_block_size: RX_BLOCK_SIZE as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(ctx("PACKET_RX_RING", ifname))?;
        let map = Mapping::new(fd.as_fd(), RX_BLOCK_SIZE * blocks)
            .map_err(ctx("mmap rx ring", ifname))?;
        join(fd.as_fd(), info, fanout, ifname)?;
        return Ok((fd, RxRing::new_v2(map, frame_size, frames)));
    }
    let req = libc::tpacket_req3 {
        tp_block_size: RX_BLOCK_SIZE as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: frame_size as u32,
        tp_frame_nr: frames as u32,
        tp_retire_blk_tov: RX_BLOCK_RETIRE_MS,
        tp_sizeof_priv: 0,
        tp_feature_req_word: libc::TP_FT_REQ_FILL_RXHASH,
    };
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
        .map_err(ctx("PACKET_RX_RING", ifname))?;
    let map =
        Mapping::new(fd.as_fd(), RX_BLOCK_SIZE * blocks).map_err(ctx("mmap rx ring", ifname))?;
    join(fd.as_fd(), info, fanout, ifname)?;
    Ok((fd, RxRing::new(map, RX_BLOCK_SIZE, blocks)))
}

/// A queue's place in its port's fanout group.
#[derive(Clone, Copy)]
struct Fanout {
    group: u16,
    queues: u16,
    /// The first member, which gives the group its program.
    first: bool,
}

/// Binds an rx socket whose ring is set up to the interface, and joins
/// the port's fanout group.
fn join(fd: BorrowedFd<'_>, info: &IfInfo, fanout: Option<Fanout>, ifname: &str) -> Result<()> {
    bind(fd, info.index, ETH_P_ALL_BE).map_err(ctx("bind", ifname))?;
    if let Some(f) = fanout {
        // The group's hook, not the socket's, decides whether frames this
        // host sends reach the group: the flag keeps them out, as
        // PACKET_IGNORE_OUTGOING does for a socket alone. Kernels before
        // 4.20 lack the flag: join without it there.
        let mode = libc::PACKET_FANOUT_CBPF;
        let arg = u32::from(f.group) | ((mode | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16);
        if let Err(e) = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg) {
            if f.first {
                tracing::info!(
                    ifname,
                    "PACKET_FANOUT_FLAG_IGNORE_OUTGOING refused ({e}): frames this host's stack sends reach the queues too"
                );
            }
            let arg = u32::from(f.group) | (mode << 16);
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                .map_err(ctx("PACKET_FANOUT", ifname))?;
        }
        if f.first {
            // The group's program, set once by its first member: the
            // kernel runs it for every frame and delivers to the member
            // at the index it returns (members in the order they joined:
            // queue order).
            let mut prog = fanout::program(f.queues);
            let fprog = libc::sock_fprog {
                len: prog.len() as libc::c_ushort,
                filter: prog.as_mut_ptr(),
            };
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
                .map_err(ctx("PACKET_FANOUT_DATA (the fanout program)", ifname))?;
        }
    }
    Ok(())
}

/// The tx socket of one queue, with its ring mapped.
fn open_tx(cfg: &PortConfig, info: &IfInfo) -> Result<(OwnedFd, TxRing)> {
    let ifname = cfg.device.as_str();
    let fd = packet_socket().map_err(ctx("socket", ifname))?;
    let v2 = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, &v2)
        .map_err(ctx("PACKET_VERSION TPACKET_V2", ifname))?;
    let one: libc::c_int = 1;
    setsockopt(
        fd.as_fd(),
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        &one,
    )
    .map_err(ctx("PACKET_QDISC_BYPASS", ifname))?;
    // Ethernet header, a VLAN tag and the slot header around the MTU.
    let frame_size = (info.mtu + 14 + 4 + TX_DATA_OFFSET)
        .next_power_of_two()
        .max(TX_FRAME_SIZE_MIN);
    let block_size = TX_BLOCK_SIZE.max(frame_size);
    let per_block = block_size / frame_size;
    let blocks = usize::from(cfg.tx_desc.max(1)).div_ceil(per_block);
    let frames = blocks * per_block;
    let req = libc::tpacket_req {
        tp_block_size: block_size as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: frame_size as u32,
        tp_frame_nr: frames as u32,
    };
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_TX_RING, &req)
        .map_err(ctx("PACKET_TX_RING", ifname))?;
    // Each frame in flight is an skb charged to the socket: room for all.
    let sndbuf = libc::c_int::try_from(frames * frame_size * 2).unwrap_or(libc::c_int::MAX);
    if setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf).is_err() {
        // Without CAP_NET_ADMIN: the ordinary limit (net.core.wmem_max).
        let _ = setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf);
    }
    let map = Mapping::new(fd.as_fd(), block_size * blocks).map_err(ctx("mmap tx ring", ifname))?;
    bind(fd.as_fd(), info.index, 0).map_err(ctx("bind", ifname))?;
    Ok((fd, TxRing::new(map, block_size, frame_size, frames)))
}

impl Backend for AfPacket {
    fn probe(&self) -> Probe {
        match packet_socket() {
            Ok(_) => Probe::ok("AF_PACKET raw sockets open (CAP_NET_RAW)"),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                Probe::unavailable("AF_PACKET sockets need CAP_NET_RAW (EPERM)")
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                Probe::unavailable("the kernel has no AF_PACKET (EAFNOSUPPORT)")
            }
            Err(e) => Probe::unavailable(format!("AF_PACKET socket failed: {e}")),
        }
    }

    fn open(&self, cfg: &PortConfig) -> Result<Vec<Box<dyn Port>>> {
        AfPacketPort::open(cfg).map(|ports| {
            ports
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn Port>)
                .collect()
        })
    }
}

/// One queue of an AF_PACKET port.
pub struct AfPacketPort {
    id: (PortId, QueueId),
    ifname: String,
    rx_fd: OwnedFd,
    rx: RxRing,
    tx_fd: OwnedFd,
    tx: TxRing,
    kick_pending: bool,
    /// The longest frame the interface sends: its MTU, the Ethernet header
    /// and a VLAN tag (the kernel's `dev->mtu + hard_header_len +
    /// VLAN_HLEN` check), and at most a tx slot.
    max_frame: usize,
    pool: MbufPool,
    caps: Capabilities,
    burst: usize,
    stats: QueueStats,
    /// Drops reported by PACKET_STATISTICS so far (the call resets the
    /// kernel's counter, and `stats` takes `&self`).
    kernel_drops: Cell<u64>,
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("id", &self.id)
            .field("ifname", &self.ifname)
            .field("rx_fd", &self.rx_fd)
            .field("tx_fd", &self.tx_fd)
            .field("pool", &self.pool.name())
            .finish()
    }
}

impl AfPacketPort {
    /// Opens `cfg.device`, one [`AfPacketPort`] per queue.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step that failed (no such interface,
    /// EPERM without CAP_NET_RAW, a ring the kernel refused);
    /// [`Error::Config`] for zero queues or a burst over [`MAX_BURST`];
    /// [`Error::Memory`] when a pool cannot be made.
    pub fn open(cfg: &PortConfig) -> Result<Vec<AfPacketPort>> {
        if cfg.queues == 0 || cfg.burst == 0 || cfg.burst > MAX_BURST {
            return Err(Error::Config(format!(
                "AF_PACKET {}: {} queues, burst {} (need >= 1 queue and a burst of 1..={MAX_BURST})",
                cfg.device, cfg.queues, cfg.burst
            )));
        }
        let probe_fd = packet_socket().map_err(ctx("socket", &cfg.device))?;
        let info = if_info(probe_fd.as_fd(), &cfg.device).map_err(ctx("interface", &cfg.device))?;
        let group = (cfg.queues > 1).then(fanout_group);
        let id = next_port_id();
        let mut caps = Capabilities::basic("af_packet", Layer::L2, cfg.burst, info.mtu, cfg.queues);
        caps.rss = cfg.queues > 1;
        caps.steering = group.map(|_| Steering::Mix { queues: cfg.queues });
        caps.mac = info.mac;
        let mut ports = Vec::with_capacity(usize::from(cfg.queues));
        for q in 0..cfg.queues {
            let fanout = group.map(|group| Fanout {
                group,
                queues: cfg.queues,
                first: q == 0,
            });
            let (rx_fd, rx) = open_rx(cfg, &info, fanout)?;
            if q == 0 && cfg.promiscuous {
                let mreq = libc::packet_mreq {
                    mr_ifindex: info.index,
                    mr_type: libc::PACKET_MR_PROMISC as u16,
                    mr_alen: 0,
                    mr_address: [0; 8],
                };
                setsockopt(
                    rx_fd.as_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    &mreq,
                )
                .map_err(ctx("PACKET_ADD_MEMBERSHIP promiscuous", &cfg.device))?;
            }
            let (tx_fd, tx) = open_tx(cfg, &info)?;
            let max_frame = tx.max_frame().min(info.mtu + ETH_HLEN + 4);
            let pool = MbufPool::new(MbufPoolConfig {
                name: format!("afp{}q{q}", id.0),
                count: cfg.mbufs,
                cache_size: cfg.mbuf_cache,
                numa_node: cfg.numa_node,
                ..MbufPoolConfig::default()
            })?;
            ports.push(AfPacketPort {
                id: (id, QueueId(q)),
                ifname: cfg.device.clone(),
                rx_fd,
                rx,
                tx_fd,
                tx,
                kick_pending: false,
                max_frame,
                pool,
                caps: caps.clone(),
                burst: cfg.burst,
                stats: QueueStats::default(),
                kernel_drops: Cell::new(0),
            });
        }
        Ok(ports)
    }

    /// The pool received frames are copied into.
    pub fn pool(&self) -> &MbufPool {
        &self.pool
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Tx frames the kernel still holds (queued or being sent).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Hands the queued tx frames to the kernel: one `sendto` for all.
    fn kick(&mut self) {
        // SAFETY: a send of zero bytes from no buffer: with a TX ring, the
        // kernel sends the ring's SEND_REQUEST frames instead.
        let rc = unsafe {
            libc::sendto(
                self.tx_fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            self.kick_pending = false;
            return;
        }
        let e = io::Error::last_os_error();
        self.kick_pending = true;
        match e.raw_os_error() {
            // The socket's send budget is in use: the frames stay queued
            // and the next kick sends them.
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {}
            _ => self.stats.errors += 1,
        }
    }

    /// Adds what PACKET_STATISTICS has counted since the last call.
    fn poll_kernel_stats(&self) {
        // SAFETY: tpacket_stats_v3 is plain data; zeroes are valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st`, which
        // lives for the call, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.rx_fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut st).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
    }
}

impl Port for AfPacketPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        if self.kick_pending {
            self.kick();
        }
        let room = out.spare().min(self.burst);
        if room == 0 {
            return 0;
        }
        let pool = &self.pool;
        let c = self.rx.receive(
            room,
            || pool.alloc(),
            |m| {
                // Cannot fail: at most `room` are delivered.
                let _ = out.push(m);
            },
        );
        self.stats.rx_packets += c.packets;
        self.stats.rx_bytes += c.bytes;
        self.stats.drop_n(DropReason::NoMbuf, c.no_mbuf);
        self.stats.drop_n(DropReason::Oversized, c.oversized);
        self.stats.errors += c.corrupt;
        c.packets as usize
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let mut c = TxCounts::default();
        let max = self.max_frame;
        let mut taken = 0;
        let mut done = MbufBatch::new();
        while let Some(m) = pkts.first() {
            if m.len() > max {
                self.stats.drop_one(DropReason::Oversized);
            } else if m.len() < ETH_HLEN {
                self.stats.drop_one(DropReason::Truncated);
            } else if self.tx.has_room(&mut c) {
                self.tx.queue(m.data(), &mut c);
            } else {
                break;
            }
            if let Some(m) = pkts.pop_front() {
                // Cannot fail: `done` holds at most what `pkts` held.
                let _ = done.push(m);
            }
            taken += 1;
        }
        // The frames were copied into the ring: the mbufs go back now.
        Mbuf::free_bulk(done.drain());
        if c.packets > 0 || self.kick_pending {
            self.kick();
        }
        self.stats.tx_packets += c.packets;
        self.stats.tx_bytes += c.bytes;
        self.stats.errors += c.refused;
        taken
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        alloc_from(&self.pool, n, out)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        link_of(self.rx_fd.as_fd(), &self.ifname)
    }

    fn stats(&self) -> QueueStats {
        self.poll_kernel_stats();
        let mut s = self.stats;
        s.drop_n(DropReason::RxOverrun, self.kernel_drops.get());
        s
    }

    fn id(&self) -> (PortId, QueueId) {
        self.id
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        // Frames queued but not yet kicked would be lost with the socket.
        if self.kick_pending {
            self.kick();
        }
    }
}
