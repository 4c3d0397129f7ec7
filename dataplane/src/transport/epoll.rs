//! The epoll engine: non-blocking sockets, edge-triggered `epoll`,
//! `accept4`, one `recv` and one `send` per ready connection per pass.
//!
//! Readiness is kept per socket as two flags, `can_read` and `can_write`,
//! set by epoll's edges and cleared when a call finds the socket drained
//! (`EAGAIN`, or a short read before `EPOLLRDHUP`) or full (a short send).
//! Work is driven by lists, so a pass touches only the sockets that have
//! something to do: `dirty` (bytes to send, or a FIN or close waiting for
//! them) and `to_read` (readable, or readable again because the
//! application freed room in a full receive buffer).

use super::conn::Phase;
use super::state::{Core, io_err};
use super::{CloseReason, ConnId, Event, ListenerId};
use crate::Result;
use nix::errno::Errno;
use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, MsgFlags, SockFlag, SockaddrStorage};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What an epoll token names: the top two bits.
const KIND_CONN: u64 = 0;
const KIND_LISTENER: u64 = 1;
const KIND_UDP: u64 = 2;

fn token(kind: u64, index: u32, generation: u32) -> u64 {
    kind << 62 | u64::from(generation) << 32 | u64::from(index)
}

fn untoken(t: u64) -> (u64, u32, u32) {
    (t >> 62, t as u32, ((t >> 32) & 0x3fff_ffff) as u32)
}

/// Bytes read at once into the scratch buffer.
const SCRATCH: usize = 64 * 1024;

/// A receive goes straight into the connection's buffer when it has at
/// least this much allocated room, else through the scratch buffer.
const DIRECT_MIN: usize = 4096;

pub(super) struct Epoll {
    epoll: nix::sys::epoll::Epoll,
    /// Where a receive lands when the connection's buffer has little room
    /// allocated: one buffer for all connections, so that a connection's
    /// buffer grows only to what it holds (an idle or small-message
    /// connection keeps a small allocation) and no receive zero-fills a
    /// large one.
    scratch: Box<[u8]>,
    ready: Vec<EpollEvent>,
    to_read: Vec<(u32, u32)>,
}

impl Epoll {
    pub(super) fn new() -> Result<Self> {
        let epoll = nix::sys::epoll::Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| io_err("transport: epoll_create1", e))?;
        Ok(Self {
            epoll,
            ready: vec![EpollEvent::empty(); 256],
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            to_read: Vec::new(),
        })
    }

    pub(super) fn add_listener(&mut self, core: &mut Core, index: u32) -> Result<()> {
        let Some(Some(l)) = core.listeners.get(index as usize) else {
            return Ok(());
        };
        // Level-triggered: a listener that stops at `max_connections` or
        // `accept_burst` is reported again next pass.
        self.epoll
            .add(
                &l.fd,
                EpollEvent::new(EpollFlags::EPOLLIN, token(KIND_LISTENER, index, 0)),
            )
            .map_err(|e| io_err("transport: epoll_ctl for a listener", e))
    }

    pub(super) fn remove_listener(&mut self, _core: &mut Core, _index: u32) {
        // Closing the descriptor removes it from the epoll set.
    }

    pub(super) fn add_udp(&mut self, core: &mut Core, index: u32) -> Result<()> {
        let Some(Some(u)) = core.udps.get(index as usize) else {
            return Ok(());
        };
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        self.epoll
            .add(&u.fd, EpollEvent::new(flags, token(KIND_UDP, index, 0)))
            .map_err(|e| io_err("transport: epoll_ctl for a UDP socket", e))
    }

    pub(super) fn remove_udp(&mut self, _core: &mut Core, _index: u32) {}

    fn add_conn(
        &mut self,
        core: &mut Core,
        fd: OwnedFd,
        phase: Phase,
        peer: Option<SocketAddr>,
    ) -> Result<ConnId> {
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        let (index, generation) = core.conns.vacant();
        self.epoll
            .add(
                &fd,
                EpollEvent::new(flags, token(KIND_CONN, index, generation)),
            )
            .map_err(|e| io_err("transport: epoll_ctl for a connection", e))?;
        let id = core.insert_conn(fd, phase, peer);
        debug_assert_eq!((id.index, id.generation), (index, generation));
        Ok(id)
    }

    pub(super) fn connect(
        &mut self,
        core: &mut Core,
        fd: OwnedFd,
        addr: SocketAddr,
    ) -> Result<ConnId> {
        let phase = match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
            Ok(()) => Phase::Open,
            Err(Errno::EINPROGRESS) => Phase::Connecting,
            Err(e) => return Err(io_err(format!("transport: connect to {addr}"), e)),
        };
        let id = self.add_conn(core, fd, phase, Some(addr))?;
        if phase == Phase::Open {
            core.stats.connected += 1;
            core.events.push_back(Event::Connected(id));
        }
        Ok(id)
    }

    pub(super) fn rx_freed(&mut self, conn: &mut super::conn::Conn, c: ConnId) {
        if conn.can_read && !conn.queued_read && conn.rx.room() > 0 {
            conn.queued_read = true;
            self.to_read.push((c.index, c.generation));
        }
    }

    /// Frees a connection at once (closing the descriptor takes it out of
    /// the epoll set) and queues its `Closed`.
    pub(super) fn end(&mut self, core: &mut Core, index: u32, reason: CloseReason) {
        let Some(conn) = core.conns.remove(index) else {
            return;
        };
        if matches!(reason, CloseReason::Aborted | CloseReason::TimedOut) {
            Core::linger_zero(&conn.fd);
        }
        core.closed(index, conn.generation, conn.phase, reason);
    }

    pub(super) fn pass(&mut self, core: &mut Core) -> Result<()> {
        self.flush_dirty(core);
        self.wait_ready(core)?;
        let list = std::mem::take(&mut self.to_read);
        for &(index, generation) in &list {
            self.read_conn(core, index, generation);
        }
        let mut list = list;
        list.clear();
        list.append(&mut self.to_read);
        self.to_read = list;
        self.flush_dirty(core);
        Ok(())
    }

    fn wait_ready(&mut self, core: &mut Core) -> Result<()> {
        core.stats.waits += 1;
        let n = match self.epoll.wait(&mut self.ready, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(io_err("transport: epoll_wait", e)),
        };
        for i in 0..n {
            let ev = self.ready[i];
            let (kind, index, generation) = untoken(ev.data());
            let flags = ev.events();
            match kind {
                KIND_LISTENER => self.accept_from(core, index),
                KIND_CONN => self.conn_ready(core, index, generation, flags),
                KIND_UDP if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) => {
                    core.udp_readable(index);
                }
                _ => {}
            }
        }
        if n == self.ready.len() && self.ready.len() < 4096 {
            // A full batch: take more next time.
            self.ready.resize(self.ready.len() * 2, EpollEvent::empty());
        }
        Ok(())
    }

    fn accept_from(&mut self, core: &mut Core, index: u32) {
        let Some(Some(l)) = core.listeners.get(index as usize) else {
            return;
        };
        let lfd = l.fd.as_raw_fd();
        for _ in 0..core.config.accept_burst {
            if core.conns.len >= core.config.max_connections {
                core.stats.accept_paused += 1;
                return;
            }
            let fd = match socket::accept4(lfd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: leave the rest in the backlog
                    // for a later pass.
                    tracing::warn!(listener = index, error = %e, "transport: accept4 failed");
                    return;
                }
            };
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            match self.add_conn(core, fd, Phase::Open, None) {
                Ok(conn) => {
                    core.stats.accepted += 1;
                    core.events.push_back(Event::Accepted {
                        listener: ListenerId(index),
                        conn,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "transport: an accepted connection was dropped");
                }
            }
        }
    }

    fn conn_ready(&mut self, core: &mut Core, index: u32, generation: u32, flags: EpollFlags) {
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            if !flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                return;
            }
            let err = socket::getsockopt(&conn.fd, nix::sys::socket::sockopt::SocketError)
                .unwrap_or(libc::EIO);
            if err != 0 {
                self.end(core, index, CloseReason::ConnectFailed(err));
                return;
            }
            conn.phase = Phase::Open;
            conn.timer_ns = u64::MAX;
            core.stats.connected += 1;
            let id = ConnId { index, generation };
            core.events.push_back(Event::Connected(id));
            let now = core.pass_ns;
            if let Some(conn) = core.conns.get_mut(index, generation) {
                conn.since_ns = now;
            }
            core.arm_timer(id);
        }
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        let hangup = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
        if flags.intersects(EpollFlags::EPOLLIN | hangup) {
            conn.can_read = true;
            if flags.intersects(hangup) {
                conn.hangup = true;
            }
            if !conn.queued_read {
                conn.queued_read = true;
                self.to_read.push((index, generation));
            }
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            conn.can_write = true;
            if !conn.tx.is_empty() || conn.shut_wanted {
                core.mark_dirty(index, generation);
            }
        }
    }

    fn read_conn(&mut self, core: &mut Core, index: u32, generation: u32) {
        let now = core.pass_ns;
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        conn.queued_read = false;
        if conn.phase == Phase::Closing {
            // Nothing is delivered after close; what arrives is dropped.
            let mut sink = [0u8; 4096];
            while let Ok(n) = socket::recv(conn.fd.as_raw_fd(), &mut sink, MsgFlags::empty()) {
                if n < sink.len() {
                    break;
                }
            }
            conn.can_read = false;
            return;
        }
        if !conn.can_read || conn.peer_closed {
            return;
        }
        let mut got = 0usize;
        let mut ended = None;
        let mut fin = false;
        while conn.rx.room() > 0 {
            let fd = conn.fd.as_raw_fd();
            let direct = conn.rx.spare() >= DIRECT_MIN;
            let dst = if direct {
                conn.rx.tail(conn.rx.spare())
            } else {
                &mut self.scratch[..conn.rx.room().min(SCRATCH)]
            };
            let want = dst.len();
            core.stats.recv_calls += 1;
            match socket::recv(fd, dst, MsgFlags::empty()) {
                Ok(0) => {
                    fin = true;
                    conn.can_read = false;
                    break;
                }
                Ok(n) => {
                    if direct {
                        conn.rx.commit(n);
                    } else {
                        conn.rx.push(&self.scratch[..n]);
                    }
                    got += n;
                    // A short read drained the socket, unless the FIN (or
                    // an error) is queued behind the data: that has no
                    // edge of its own.
                    if n < want && !conn.hangup {
                        conn.can_read = false;
                        break;
                    }
                }
                Err(Errno::EAGAIN) => {
                    conn.can_read = false;
                    break;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    ended = Some(Core::reason_of(e));
                    break;
                }
            }
        }
        if got > 0 {
            conn.rx_bytes += got as u64;
            conn.since_ns = now;
            core.stats.rx_bytes += got as u64;
            core.readable(index, generation);
        }
        if fin && let Some(conn) = core.conns.get_mut(index, generation) {
            conn.peer_closed = true;
            core.events
                .push_back(Event::PeerClosed(ConnId { index, generation }));
        }
        if let Some(reason) = ended {
            self.end(core, index, reason);
        }
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

    /// Sends what the connection holds as far as the socket takes it; then
    /// the FIN or the close that was waiting for it.
    pub(super) fn flush(&mut self, core: &mut Core, index: u32, generation: u32) {
        let now = core.now_ns();
        let Some(conn) = core.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            // Sent once connected (EPOLLOUT requeues it).
            return;
        }
        let mut sent = 0usize;
        let mut ended = None;
        // A socket not yet marked writable (accepted this pass, before its
        // first EPOLLOUT edge) is tried once: accepted sockets are almost
        // always writable, and waiting for the edge costs a pass.
        let mut try_once = !conn.can_write;
        while !conn.tx.is_empty() && (conn.can_write || try_once) {
            try_once = false;
            let data = conn.tx.bytes();
            core.stats.send_calls += 1;
            match socket::send(
                conn.fd.as_raw_fd(),
                data,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    let short = n < data.len();
                    conn.tx.consume(n);
                    sent += n;
                    if short {
                        conn.can_write = false;
                    }
                }
                Err(Errno::EAGAIN) => conn.can_write = false,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    ended = Some(Core::reason_of(e));
                    break;
                }
            }
        }
        if sent > 0 {
            conn.tx_bytes += sent as u64;
            if conn.phase == Phase::Open {
                conn.since_ns = now;
            }
            core.stats.tx_bytes += sent as u64;
        }
        if let Some(reason) = ended {
            self.end(core, index, reason);
            return;
        }
        if core.after_send(index, generation, true) {
            self.end(core, index, CloseReason::Local);
        }
    }
}
