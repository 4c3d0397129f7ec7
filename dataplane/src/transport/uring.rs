//! The io_uring engine: one ring per transport, one `io_uring_enter` per
//! pass that submits everything the pass queued and reaps what the kernel
//! finished.
//!
//! - **Accept**: one multishot `IORING_OP_ACCEPT` per listener, armed once
//!   and re-armed when the kernel ends it; at `max_connections` it is
//!   cancelled and the kernel's backlog holds the rest until a connection
//!   ends.
//! - **Receive**: one multishot `IORING_OP_RECV` per connection, taking
//!   buffers from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`)
//!   shared by all the transport's connections. A completion that finds
//!   the connection holding nothing is read in place: `peek` is a slice
//!   of the provided buffer, which goes back to the ring when it is
//!   consumed, or is copied into the connection's receive buffer at the
//!   start of the next pass (so a buffer is out one pass at most, as long
//!   as before: buffers given back are published at the start of a pass).
//!   Other completions' bytes are copied into the receive buffer, so that
//!   the application sees every byte as one slice, and the buffer goes
//!   back to the ring. When the receive buffer is full the bytes wait in their
//!   provided buffers and the receive is cancelled, so the kernel's socket
//!   buffer fills and TCP closes the peer's window; consuming re-arms it.
//! - **Send**: at most one send in flight per connection (sends side by
//!   side on one stream are not ordered). The send buffer is double: the
//!   application writes into one while the kernel sends from the other,
//!   which stays pinned until its completion. Sends of at least
//!   [`Config::zerocopy_min`](super::Config::zerocopy_min) bytes are
//!   `IORING_OP_SEND_ZC`, whose buffer stays pinned until the kernel's
//!   notification.
//! - **Connect**: `IORING_OP_CONNECT`.
//! - **Registered files**: every connection's socket is in the ring's
//!   fixed-file table at its slot's index (one `IORING_REGISTER_FILES_UPDATE`
//!   when it opens and one when it is freed), so the operations on it
//!   skip the file-table lookup and reference count.
//! - **UDP**: a multishot `IORING_OP_POLL_ADD` reports readability;
//!   datagrams then move with `recvmmsg`/`sendmmsg` as on the epoll engine.
//! - **Ending**: a connection that ends has its operations cancelled; its
//!   `Closed` event is queued at once, and its slot (with the memory the
//!   kernel may still use) is freed when the last completion arrives.
//!   Dropping the transport cancels everything and waits (two seconds at
//!   most) for the kernel to let go, and leaks rather than frees what it
//!   still holds after that.
//!
//! The ring is set up with `IORING_SETUP_DEFER_TASKRUN` (completion work
//! runs only when the lcore enters, so nothing interrupts it) where the
//! kernel has it, created disabled and enabled by the first pass, so the
//! thread that polls is its single issuer; cooperative task work
//! otherwise.

use super::buf::ByteBuf;
use super::conn::{GENERATION_MASK, Phase};
use super::state::Core;
use super::{CloseReason, Config, ConnId, Event, ListenerId};
use crate::backend::Probe;
use crate::uring::TaskRun;
use crate::uring::buf_ring::BufRing;
use crate::{Error, Result};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use nix::errno::Errno;
use nix::sys::socket::SockaddrStorage;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The buffer group of the provided-buffer ring.
const BGID: u16 = 0;

/// What a `user_data` names: the top four bits.
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CONNECT: u64 = 4;
const OP_CANCEL: u64 = 5;
const OP_UDP_POLL: u64 = 6;

fn user_data(op: u64, index: u32, generation: u32) -> u64 {
    op << 60 | u64::from(generation & GENERATION_MASK) << 32 | u64::from(index)
}

fn split(u: u64) -> (u64, u32, u32) {
    (u >> 60, u as u32, ((u >> 32) as u32) & GENERATION_MASK)
}

/// How long dropping a transport waits for the kernel to finish with the
/// memory it was lent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The opcodes the engine uses, by name, for the probe.
const NEEDED_OPS: [(u8, &str); 7] = [
    (opcode::AcceptMulti::CODE, "ACCEPT"),
    (opcode::RecvMulti::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::SendZc::CODE, "SEND_ZC"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
];

/// Whether the engine runs here: io_uring allowed (a seccomp profile or
/// `kernel.io_uring_disabled` may refuse it), the opcodes, provided-buffer
/// rings (5.19) and multishot receive (6.0).
pub(super) fn probe() -> Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(probe_now).clone()
}

fn probe_now() -> Probe {
    let base = crate::topology::io_uring_probe();
    if !base.available {
        return base;
    }
    let ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return Probe::unavailable(format!("io_uring_setup: {e}")),
    };
    match crate::uring::missing_opcodes(&ring, &NEEDED_OPS) {
        Ok(m) if m.is_empty() => {}
        Ok(m) => {
            return Probe::unavailable(format!(
                "the kernel's io_uring lacks {} ({})",
                m.join(", "),
                base.reason
            ));
        }
        Err(e) => return Probe::unavailable(format!("IORING_REGISTER_PROBE failed: {e}")),
    }
    // Multishot receive (6.0) has no opcode of its own.
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major < 6 {
        return Probe::unavailable(format!(
            "kernel {release} is older than 6.0, which multishot receive needs"
        ));
    }
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
            "io_uring with multishot ACCEPT and RECV, SEND_ZC and provided-buffer rings ({})",
            base.reason
        )),
        Err(e) => Probe::unavailable(format!(
            "IORING_REGISTER_PBUF_RING failed ({e}) ({})",
            base.reason
        )),
    }
}

/// The operations' target: the fixed-file slot, or the descriptor when the
/// slot is past the table.
#[derive(Clone, Copy)]
enum Target {
    Fixed(u32),
    Fd(RawFd),
}

/// Builds an SQE on a [`Target`].
macro_rules! on {
    ($target:expr, |$t:ident| $build:expr) => {
        match $target {
            Target::Fixed(slot) => {
                let $t = types::Fixed(slot);
                $build
            }
            Target::Fd(fd) => {
                let $t = types::Fd(fd);
                $build
            }
        }
    };
}

pub(super) struct Uring {
    ring: IoUring,
    /// Created disabled: enabled by the first pass, on the polling thread.
    disabled: bool,
    bufs: BufRing,
    /// The provided buffers, `buf_size` bytes each; unmapped at Drop
    /// unless `leak` (the kernel kept some past the drain).
    buf_mem: std::mem::ManuallyDrop<memmap2::MmapMut>,
    leak: bool,
    buf_size: u32,
    /// Buffers given back since the ring's tail was last published.
    recycled: u32,
    /// Fixed-file slots registered (connections with a higher index use
    /// their descriptor).
    fixed_slots: u32,
    zerocopy_min: Option<usize>,
    /// Connections to re-arm a receive for, listeners an accept for.
    rearm: Vec<(u32, u32)>,
    /// Connections whose application freed receive room while bytes wait
    /// in provided buffers: copied at the next pass.
    to_drain: Vec<(u32, u32)>,
    /// Connections that were lent a provided buffer this pass.
    lent: Vec<(u32, u32)>,
    accept_rearm: Vec<u32>,
    /// Listeners whose accept was cancelled at `max_connections`.
    accept_paused: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
}

fn ring_err(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("transport: {what}"), e)
}

impl Uring {
    pub(super) fn new(config: &Config) -> Result<Self> {
        let sq = config.ring_entries;
        let (ring, mode) = crate::uring::build_ring(&crate::uring::RingSetup {
            entries: sq,
            cq_entries: sq.saturating_mul(8).min(1 << 20),
            modes: &[TaskRun::Defer, TaskRun::Coop, TaskRun::Plain],
            disabled: true,
            iopoll: false,
            sqpoll: None,
        })
        .map_err(|e| ring_err("io_uring_setup", e))?;
        tracing::debug!(mode = mode.describe(), "transport: io_uring engine");
        let count = config.ring_buffers;
        let size = config.ring_buffer_size;
        let bufs = BufRing::new(count).map_err(|e| ring_err("provided-buffer ring", e))?;
        // SAFETY: `bufs` is page aligned with `count` entries and lives in
        // the engine until Drop, which unregisters it before it is unmapped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.addr(), count, BGID, 0)
        }
        .map_err(|e| ring_err("IORING_REGISTER_PBUF_RING", e))?;
        let buf_mem = memmap2::MmapOptions::new()
            .len(usize::from(count) * size as usize)
            .map_anon()
            .map_err(|e| ring_err("mapping the receive buffers", e))?;
        // The fixed-file table: as many slots as connections may be open,
        // at most the descriptors the process may hold.
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let fixed_slots = (config.max_connections as u64).min(nofile).min(1 << 20) as u32;
        ring.submitter()
            .register_files_sparse(fixed_slots)
            .map_err(|e| ring_err("IORING_REGISTER_FILES (sparse)", e))?;
        let mut u = Self {
            ring,
            disabled: true,
            bufs,
            buf_mem: std::mem::ManuallyDrop::new(buf_mem),
            leak: false,
            buf_size: size,
            recycled: 0,
            fixed_slots,
            zerocopy_min: config.zerocopy_min,
            rearm: Vec::new(),
            to_drain: Vec::new(),
            lent: Vec::new(),
            accept_rearm: Vec::new(),
            accept_paused: Vec::new(),
            cqes: Vec::with_capacity(1024),
        };
        for bid in 0..count {
            u.give_back(bid);
        }
        u.bufs.publish();
        u.recycled = 0;
        Ok(u)
    }

    /// The bytes a connection reads in place, if it was lent a buffer.
    pub(super) fn lent_bytes(&self, core: &Core, c: ConnId) -> Option<&[u8]> {
        let (bid, len, from) = core.conns.get(c.index, c.generation)?.ring.lent?;
        Some(self.buffer(bid, len, from))
    }

    /// Consumes up to `n` bytes read in place; returns how many. The
    /// buffer goes back to the ring once all of it is consumed.
    pub(super) fn consume_lent(&mut self, conn: &mut super::conn::Conn, n: usize) -> usize {
        let Some((bid, len, from)) = conn.ring.lent.as_mut() else {
            return 0;
        };
        let take = n.min((*len - *from) as usize);
        *from += take as u32;
        if *from == *len {
            let bid = *bid;
            conn.ring.lent = None;
            self.give_back(bid);
        }
        take
    }

    /// Copies what a connection still reads in place into its receive
    /// buffer (what does not fit waits as the first provided buffer) and
    /// gives the buffer back; its bytes were announced when they came.
    fn settle(&mut self, core: &mut Core, index: u32, generation: u32) {
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        let Some(lent) = conn.ring.lent.take() else {
            return;
        };
        core.stats.rx_in_place_copied += 1;
        conn.ring.pending.push_front(lent);
        self.copy_pending(conn);
    }

    fn give_back(&mut self, bid: u16) {
        let addr = self.buf_mem.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_size);
        self.bufs.add(addr, self.buf_size, bid);
        self.recycled += 1;
    }

    fn buffer(&self, bid: u16, len: u32, from: u32) -> &[u8] {
        let at = usize::from(bid) * self.buf_size as usize;
        &self.buf_mem[at + from as usize..at + len as usize]
    }

    fn target(&self, index: u32, fd: RawFd) -> Target {
        if index < self.fixed_slots {
            Target::Fixed(index)
        } else {
            Target::Fd(fd)
        }
    }

    /// Queues an SQE; a full submission queue is submitted first.
    fn push(&mut self, core: &mut Core, e: squeue::Entry) {
        loop {
            // SAFETY: every pointer an SQE carries (send buffers, connect
            // addresses) stays valid until its completion, which the
            // engine waits for before freeing them (see `end` and Drop).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            core.stats.waits += 1;
            if let Err(err) = self.ring.submit() {
                if err.raw_os_error() == Some(libc::EBUSY) {
                    // The completion queue is full: reap, then retry.
                    self.reap(core);
                } else {
                    tracing::warn!(error = %err, "transport: io_uring_enter");
                    return;
                }
            }
        }
    }

    pub(super) fn add_listener(&mut self, core: &mut Core, index: u32) -> Result<()> {
        self.arm_accept(core, index);
        Ok(())
    }

    fn arm_accept(&mut self, core: &mut Core, index: u32) {
        let Some(Some(l)) = core.listeners.get_mut(index as usize) else {
            return;
        };
        if l.armed {
            return;
        }
        l.armed = true;
        let fd = l.fd.as_raw_fd();
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(OP_ACCEPT, index, 0));
        self.push(core, e);
    }

    pub(super) fn remove_listener(&mut self, core: &mut Core, index: u32) {
        if let Some(Some(l)) = core.listeners.get(index as usize)
            && l.armed
        {
            let e = opcode::AsyncCancel2::new(
                types::CancelBuilder::user_data(user_data(OP_ACCEPT, index, 0)).all(),
            )
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
            self.push(core, e);
        }
        self.accept_rearm.retain(|&i| i != index);
        self.accept_paused.retain(|&i| i != index);
    }

    pub(super) fn add_udp(&mut self, core: &mut Core, index: u32) -> Result<()> {
        self.arm_udp(core, index);
        Ok(())
    }

    fn arm_udp(&mut self, core: &mut Core, index: u32) {
        let Some(Some(u)) = core.udps.get_mut(index as usize) else {
            return;
        };
        u.armed = true;
        let e = opcode::PollAdd::new(types::Fd(u.fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(OP_UDP_POLL, index, 0));
        self.push(core, e);
    }

    pub(super) fn remove_udp(&mut self, core: &mut Core, index: u32) {
        if let Some(Some(u)) = core.udps.get(index as usize)
            && u.armed
        {
            let e = opcode::AsyncCancel2::new(
                types::CancelBuilder::user_data(user_data(OP_UDP_POLL, index, 0)).all(),
            )
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
            self.push(core, e);
        }
    }

    /// Puts a new socket in a slot and in the fixed-file table.
    fn add_conn(
        &mut self,
        core: &mut Core,
        fd: OwnedFd,
        phase: Phase,
        peer: Option<SocketAddr>,
    ) -> Result<ConnId> {
        let (index, _) = core.conns.vacant();
        if index < self.fixed_slots {
            self.ring
                .submitter()
                .register_files_update(index, &[fd.as_raw_fd()])
                .map_err(|e| ring_err("IORING_REGISTER_FILES_UPDATE", e))?;
        }
        Ok(core.insert_conn(fd, phase, peer))
    }

    fn arm_recv(&mut self, core: &mut Core, index: u32, generation: u32) {
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        if conn.ring.recv_armed || conn.ring.recv_paused || conn.peer_closed || !conn.usable() {
            return;
        }
        conn.ring.recv_armed = true;
        conn.ring.ops += 1;
        let target = self.target(index, conn.fd.as_raw_fd());
        let e = on!(target, |t| opcode::RecvMulti::new(t, BGID).build())
            .user_data(user_data(OP_RECV, index, generation));
        self.push(core, e);
    }

    pub(super) fn connect(
        &mut self,
        core: &mut Core,
        fd: OwnedFd,
        addr: SocketAddr,
    ) -> Result<ConnId> {
        let raw = fd.as_raw_fd();
        let id = self.add_conn(core, fd, Phase::Connecting, Some(addr))?;
        let target = self.target(id.index, raw);
        let Some(conn) = core.conns.get_mut(id.index, id.generation) else {
            return Err(super::state::not_open(id));
        };
        let to = Box::new(SockaddrStorage::from(addr));
        let (ptr, len) = (
            nix::sys::socket::SockaddrLike::as_ptr(&*to),
            nix::sys::socket::SockaddrLike::len(&*to),
        );
        conn.ring.connect_to = Some(to);
        conn.ring.ops += 1;
        let e = on!(target, |t| opcode::Connect::new(t, ptr, len).build()).user_data(user_data(
            OP_CONNECT,
            id.index,
            id.generation,
        ));
        self.push(core, e);
        Ok(id)
    }

    pub(super) fn rx_freed(&mut self, conn: &mut super::conn::Conn, c: ConnId) {
        if (conn.ring.recv_paused || !conn.ring.pending.is_empty()) && !conn.queued_read {
            conn.queued_read = true;
            self.to_drain.push((c.index, c.generation));
        }
    }

    /// Copies the bytes waiting in provided buffers into the connection's
    /// receive buffer, in order, as far as it has room, giving back each
    /// buffer emptied; returns the bytes copied.
    fn copy_pending(&mut self, conn: &mut super::conn::Conn) -> usize {
        let mut copied = 0;
        while let Some(&(bid, len, from)) = conn.ring.pending.front() {
            let data = self.buffer(bid, len, from);
            let n = conn.rx.push(data);
            copied += n;
            if n < data.len() {
                if let Some(front) = conn.ring.pending.front_mut() {
                    front.2 += n as u32;
                }
                break;
            }
            conn.ring.pending.pop_front();
            self.give_back(bid);
        }
        copied
    }

    /// Copies what waits in provided buffers into the receive buffer as
    /// far as it has room (`Readable` when it copied any); when nothing
    /// waits, the FIN that waited behind them, or the receive re-armed.
    fn drain_pending(&mut self, core: &mut Core, index: u32, generation: u32) {
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        conn.queued_read = false;
        if !conn.usable() {
            return;
        }
        let copied = self.copy_pending(conn);
        let drained = conn.ring.pending.is_empty();
        let fin = drained && conn.ring.fin_pending;
        if drained && conn.ring.recv_paused && !conn.ring.recv_armed && !conn.ring.fin_pending {
            conn.ring.recv_paused = false;
            self.rearm.push((index, generation));
        }
        if fin {
            conn.ring.fin_pending = false;
            conn.peer_closed = true;
        }
        if copied > 0 {
            core.readable(index, generation);
        }
        if fin {
            core.events
                .push_back(Event::PeerClosed(ConnId { index, generation }));
        }
    }

    /// Ends a connection: `Closed` queued now; its operations cancelled and
    /// its slot freed when the last of them completes.
    pub(super) fn end(&mut self, core: &mut Core, index: u32, reason: CloseReason) {
        let Some(conn) = core.conns.get_index_mut(index) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        let (generation, phase) = (conn.generation, conn.phase);
        if matches!(reason, CloseReason::Aborted | CloseReason::TimedOut) {
            Core::linger_zero(&conn.fd);
        }
        conn.phase = Phase::Dead;
        let ops = conn.ring.ops;
        let target = self.target(index, conn.fd.as_raw_fd());
        core.dead += 1;
        core.closed(index, generation, phase, reason);
        if ops > 0 {
            let e = on!(target, |t| opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(t).all()
            )
            .build())
            .user_data(user_data(OP_CANCEL, 0, 0));
            self.push(core, e);
            if matches!(reason, CloseReason::Aborted | CloseReason::TimedOut) {
                // The RST goes out when the socket's last reference drops,
                // after the cancelled operations complete: now, not at the
                // next pass, as close(2) would.
                // The cancel's own completion is posted at submission, so
                // waiting for one returns at once, and GETEVENTS runs the
                // deferred work that completes the cancelled operations.
                core.stats.waits += 1;
                let _ = self.ring.submit_and_wait(1);
                self.reap(core);
            }
        }
        self.free_if_done(core, index, generation);
    }

    /// Frees an ended connection's slot once nothing is in flight on it.
    fn free_if_done(&mut self, core: &mut Core, index: u32, generation: u32) {
        let Some(conn) = core.conns.get(index, generation) else {
            return;
        };
        if conn.phase != Phase::Dead || conn.ring.ops > 0 {
            return;
        }
        let pending: Vec<u16> = conn.ring.pending.iter().map(|p| p.0).collect();
        let lent = conn.ring.lent.map(|l| l.0);
        for bid in pending.into_iter().chain(lent) {
            self.give_back(bid);
        }
        if index < self.fixed_slots
            && let Err(e) = self.ring.submitter().register_files_update(index, &[-1])
        {
            tracing::warn!(error = %e, "transport: removing a socket from the fixed-file table");
        }
        core.conns.remove(index);
        core.dead -= 1;
        // Room again: listeners paused at the limit accept again.
        if !self.accept_paused.is_empty() && core.conns.len < core.config.max_connections {
            self.accept_rearm.append(&mut self.accept_paused);
        }
    }

    pub(super) fn pass(&mut self, core: &mut Core) -> Result<()> {
        if self.disabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| ring_err("IORING_REGISTER_ENABLE_RINGS", e))?;
            self.disabled = false;
        }
        for (index, generation) in std::mem::take(&mut self.lent) {
            self.settle(core, index, generation);
        }
        self.flush_dirty(core);
        for (index, generation) in std::mem::take(&mut self.to_drain) {
            self.drain_pending(core, index, generation);
        }
        for (index, generation) in std::mem::take(&mut self.rearm) {
            self.arm_recv(core, index, generation);
        }
        for index in std::mem::take(&mut self.accept_rearm) {
            self.arm_accept(core, index);
        }
        if self.recycled > 0 {
            self.bufs.publish();
            self.recycled = 0;
        }
        // One enter: submits the pass's SQEs and (with GETEVENTS when the
        // kernel flagged task work) runs what completed.
        let flagged = self.ring.submission().taskrun() || self.ring.submission().cq_overflow();
        if !self.ring.submission().is_empty() || flagged {
            core.stats.waits += 1;
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(ring_err("io_uring_enter", e)),
            }
        }
        self.reap(core);
        Ok(())
    }

    fn reap(&mut self, core: &mut Core) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let (op, index, generation) = split(ud);
            match op {
                OP_ACCEPT => self.accepted(core, index, res, flags),
                OP_RECV => self.received(core, index, generation, res, flags),
                OP_SEND => self.sent(core, index, generation, res, flags),
                OP_CONNECT => self.connected(core, index, generation, res),
                OP_UDP_POLL => {
                    if res > 0 {
                        core.udp_readable(index);
                    }
                    if !cqueue::more(flags)
                        && let Some(Some(u)) = core.udps.get_mut(index as usize)
                    {
                        u.armed = false;
                        if res != -libc::ECANCELED {
                            self.arm_udp(core, index);
                        }
                    }
                }
                _ => {}
            }
        }
        self.cqes = cqes;
        if self.recycled > 0 {
            self.bufs.publish();
            self.recycled = 0;
        }
    }

    fn accepted(&mut self, core: &mut Core, index: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let open = matches!(core.listeners.get(index as usize), Some(Some(_)));
        if !more && let Some(Some(l)) = core.listeners.get_mut(index as usize) {
            l.armed = false;
        }
        if res >= 0 {
            // SAFETY: a successful accept's result is a new descriptor that
            // nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if !open {
                return;
            }
            if core.conns.len >= core.config.max_connections {
                // Accepted past the limit by the armed multishot before the
                // cancel took effect: reset, counted.
                Core::linger_zero(&fd);
                core.stats.accept_paused += 1;
                self.pause_accept(core, index);
                return;
            }
            match self.add_conn(core, fd, Phase::Open, None) {
                Ok(conn) => {
                    core.stats.accepted += 1;
                    core.events.push_back(Event::Accepted {
                        listener: ListenerId(index),
                        conn,
                    });
                    self.arm_recv(core, conn.index, conn.generation);
                    if core.conns.len >= core.config.max_connections {
                        self.pause_accept(core, index);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "transport: an accepted connection was dropped");
                }
            }
        } else if res != -libc::ECANCELED {
            tracing::debug!(listener = index, error = %Errno::from_raw(-res), "transport: accept");
        }
        if !more && open && res != -libc::ECANCELED && !self.accept_paused.contains(&index) {
            self.accept_rearm.push(index);
        }
    }

    fn pause_accept(&mut self, core: &mut Core, index: u32) {
        if self.accept_paused.contains(&index) {
            return;
        }
        self.accept_paused.push(index);
        if let Some(Some(l)) = core.listeners.get(index as usize)
            && l.armed
        {
            let e = opcode::AsyncCancel2::new(
                types::CancelBuilder::user_data(user_data(OP_ACCEPT, index, 0)).all(),
            )
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
            self.push(core, e);
        }
    }

    fn received(&mut self, core: &mut Core, index: u32, generation: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let now = core.pass_ns;
        let Some(conn) = core.conns.get_mut(index, generation) else {
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            return;
        };
        if !more {
            conn.ring.recv_armed = false;
            conn.ring.ops -= 1;
        }
        if !conn.usable() {
            // Closing or ended: nothing more is delivered.
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            self.free_if_done(core, index, generation);
            return;
        }
        if res > 0 {
            let Some(bid) = bid else {
                return;
            };
            let len = res as u32;
            conn.rx_bytes += u64::from(len);
            conn.since_ns = now;
            core.stats.rx_bytes += u64::from(len);
            if conn.ring.pending.is_empty()
                && conn.ring.lent.is_none()
                && conn.rx.is_empty()
                && len as usize <= conn.rx.room()
            {
                // Read in place until consumed or the next pass (never
                // more than the receive buffer would hold).
                conn.ring.lent = Some((bid, len, 0));
                core.stats.rx_in_place += 1;
                self.lent.push((index, generation));
            } else {
                if let Some(l) = conn.ring.lent.take() {
                    // Bytes read in place go first, now copied.
                    core.stats.rx_in_place_copied += 1;
                    conn.ring.pending.push_back(l);
                }
                conn.ring.pending.push_back((bid, len, 0));
                self.copy_pending(conn);
            }
            if !conn.ring.pending.is_empty() && conn.ring.recv_armed && !conn.ring.recv_paused {
                // Full: stop receiving until the application consumes.
                conn.ring.recv_paused = true;
                let e = opcode::AsyncCancel2::new(
                    types::CancelBuilder::user_data(user_data(OP_RECV, index, generation)).all(),
                )
                .build()
                .user_data(user_data(OP_CANCEL, 0, 0));
                self.push(core, e);
            } else if !conn.ring.pending.is_empty() {
                conn.ring.recv_paused = true;
            }
            core.readable(index, generation);
            if !more {
                self.rearm.push((index, generation));
            }
            return;
        }
        if res == 0 {
            if conn.ring.pending.is_empty() {
                conn.peer_closed = true;
                core.events
                    .push_back(Event::PeerClosed(ConnId { index, generation }));
            } else {
                // Not before the bytes ahead of it are in `rx`.
                conn.ring.fin_pending = true;
            }
            return;
        }
        match -res {
            libc::ECANCELED => {}
            libc::ENOBUFS => {
                // Every provided buffer is in use: try again next pass.
                core.stats.rx_no_buffer += 1;
                self.rearm.push((index, generation));
            }
            e => {
                let reason = Core::reason_of(Errno::from_raw(e));
                self.end(core, index, reason);
            }
        }
    }

    fn connected(&mut self, core: &mut Core, index: u32, generation: u32, res: i32) {
        let now = core.pass_ns;
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        conn.ring.ops -= 1;
        conn.ring.connect_to = None;
        if conn.phase != Phase::Connecting {
            self.free_if_done(core, index, generation);
            return;
        }
        if res < 0 {
            self.end(core, index, CloseReason::ConnectFailed(-res));
            return;
        }
        conn.phase = Phase::Open;
        conn.timer_ns = u64::MAX;
        conn.since_ns = now;
        let id = ConnId { index, generation };
        core.stats.connected += 1;
        core.events.push_back(Event::Connected(id));
        core.arm_timer(id);
        self.arm_recv(core, index, generation);
        core.mark_dirty(index, generation);
    }

    fn flush_dirty(&mut self, core: &mut Core) {
        if core.dirty.is_empty() {
            return;
        }
        let list = std::mem::take(&mut core.dirty);
        for &(index, generation) in &list {
            if let Some(conn) = core.conns.get_mut(index, generation) {
                conn.queued_dirty = false;
            }
            self.flush(core, index, generation);
        }
        let mut list = list;
        list.clear();
        list.append(&mut core.dirty);
        core.dirty = list;
    }

    /// Starts a send of what the connection holds, unless one is in flight
    /// (its completion starts the next); with nothing to send, the FIN or
    /// the close that waited.
    pub(super) fn flush(&mut self, core: &mut Core, index: u32, generation: u32) {
        let cap = core.config.tx_buffer;
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Connecting || conn.phase == Phase::Dead || conn.ring.sending {
            return;
        }
        if conn.tx.is_empty() {
            if core.after_send(index, generation, true) {
                self.end(core, index, CloseReason::Local);
            }
            return;
        }
        let mut flight = conn.ring.flight.take().unwrap_or_else(|| ByteBuf::new(cap));
        debug_assert!(flight.is_empty());
        std::mem::swap(&mut conn.tx, &mut flight);
        conn.ring.flight = Some(flight);
        self.submit_send(core, index, generation);
        // Room in the application's buffer again.
        if core.after_send(index, generation, false) {
            self.end(core, index, CloseReason::Local);
        }
    }

    fn submit_send(&mut self, core: &mut Core, index: u32, generation: u32) {
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        let Some(flight) = conn.ring.flight.as_ref() else {
            return;
        };
        let data = flight.bytes();
        let (ptr, len) = (data.as_ptr(), data.len().min(u32::MAX as usize) as u32);
        let zc = self.zerocopy_min.is_some_and(|min| data.len() >= min);
        conn.ring.sending = true;
        conn.ring.ops += 1;
        let target = self.target(index, conn.fd.as_raw_fd());
        let flags = libc::MSG_NOSIGNAL;
        let e = if zc {
            on!(target, |t| opcode::SendZc::new(t, ptr, len)
                .flags(flags)
                .build())
        } else {
            on!(target, |t| opcode::Send::new(t, ptr, len)
                .flags(flags)
                .build())
        };
        core.stats.send_calls += 1;
        self.push(core, e.user_data(user_data(OP_SEND, index, generation)));
    }

    fn sent(&mut self, core: &mut Core, index: u32, generation: u32, res: i32, flags: u32) {
        let now = core.pass_ns;
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        if cqueue::notif(flags) {
            // The zero-copy send's buffer is the kernel's no longer: only
            // now may its bytes be dropped (and the memory reused).
            conn.ring.notif_pending = false;
            conn.ring.ops -= 1;
            let n = std::mem::take(&mut conn.ring.zc_sent);
            if let Some(f) = conn.ring.flight.as_mut() {
                f.consume(n);
            }
        } else {
            let zc = cqueue::more(flags);
            if zc {
                conn.ring.notif_pending = true;
            } else {
                conn.ring.ops -= 1;
            }
            if res >= 0 {
                let n = res as usize;
                if zc {
                    conn.ring.zc_sent += n;
                } else if let Some(f) = conn.ring.flight.as_mut() {
                    f.consume(n);
                }
                conn.tx_bytes += n as u64;
                if conn.phase == Phase::Open {
                    conn.since_ns = now;
                }
                core.stats.tx_bytes += n as u64;
            } else if conn.usable() || conn.phase == Phase::Closing {
                conn.ring.sending = conn.ring.notif_pending;
                let reason = Core::reason_of(Errno::from_raw(-res));
                if -res != libc::ECANCELED {
                    self.end(core, index, reason);
                }
                self.free_if_done(core, index, generation);
                return;
            }
        }
        if conn.ring.notif_pending {
            return;
        }
        conn.ring.sending = false;
        if conn.phase == Phase::Dead {
            self.free_if_done(core, index, generation);
            return;
        }
        if conn.ring.flight.as_ref().is_some_and(|f| !f.is_empty()) {
            // A short send: the rest, in order, before anything newer.
            self.submit_send(core, index, generation);
            return;
        }
        self.flush(core, index, generation);
    }

    /// Cancels everything and waits for the kernel to give back what it
    /// holds; after [`DRAIN_TIMEOUT`] leaks it instead of freeing it.
    pub(super) fn drain(&mut self, core: &mut Core) {
        if self.disabled {
            return;
        }
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
        // SAFETY: as in `push`.
        let _ = unsafe { self.ring.submission().push(&e) };
        let end = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let busy = (0..core.conns.slots() as u32)
                .filter_map(|i| core.conns.get_index(i))
                .any(|c| c.ring.ops > 0);
            if !busy {
                return;
            }
            if Instant::now() > end {
                tracing::warn!("transport: the kernel kept buffers past the drain timeout; leaked");
                self.leak = true;
                for i in 0..core.conns.slots() as u32 {
                    if let Some(c) = core.conns.get_index_mut(i)
                        && c.ring.ops > 0
                    {
                        std::mem::forget(c.ring.flight.take());
                        std::mem::forget(c.ring.connect_to.take());
                    }
                }
                return;
            }
            let wait = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&wait);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for c in self.ring.completion() {
                let (op, index, generation) = split(c.user_data());
                let Some(conn) = core.conns.get_mut(index, generation) else {
                    continue;
                };
                match op {
                    OP_RECV | OP_CONNECT if !cqueue::more(c.flags()) => conn.ring.ops -= 1,
                    OP_SEND if cqueue::notif(c.flags()) || !cqueue::more(c.flags()) => {
                        conn.ring.ops -= 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Unregister the provided-buffer ring before its memory unmaps.
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        if !self.leak {
            // SAFETY: dropped once, here; nothing in flight uses it (the
            // transport drained the ring, else `leak` is set).
            unsafe { std::mem::ManuallyDrop::drop(&mut self.buf_mem) };
        }
    }
}
