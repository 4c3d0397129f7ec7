//! What both engines share: connections and their buffers, listeners,
//! UDP sockets, events, timers and counters, with the steps that do not
//! depend on the engine (UDP's `recvmmsg`/`sendmmsg`, timers, what follows
//! a send).

use super::conn::{Conn, Listener, Phase, Slab, Udp};
use super::{CloseReason, Config, ConnId, Event, Stats, UdpId};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrStorage, sockopt,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

/// Everything but the engine.
pub(super) struct Core {
    pub(super) config: Config,
    pub(super) conns: Slab<Conn>,
    pub(super) listeners: Vec<Option<Listener>>,
    pub(super) udps: Vec<Option<Udp>>,
    pub(super) events: VecDeque<Event>,
    /// Connections with bytes to send, or a FIN or close waiting for them.
    pub(super) dirty: Vec<(u32, u32)>,
    pub(super) udp_to_read: Vec<u32>,
    pub(super) udp_dirty: Vec<u32>,
    pub(super) timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// The transport's clock: nanoseconds on the TSC since it was made.
    pub(super) clock: crate::time::TscClock,
    /// The clock read once at the start of this pass (`now_ns` then): what
    /// the completions and events a pass handles are stamped with, for
    /// idle and close timeouts, which a pass's length cannot move. One
    /// clock read a pass rather than one a completion (two a request).
    pub(super) pass_ns: u64,
    /// `SO_INCOMING_CPU` for listeners: the one CPU this thread may run on.
    pub(super) incoming_cpu: Option<i32>,
    pub(super) stats: Stats,
    /// Passes so far (`Readable` is queued at most once per connection per
    /// pass).
    pub(super) pass: u64,
    /// Connections ended whose slots wait for the kernel (io_uring).
    pub(super) dead: u64,
}

pub(super) fn io_err(context: impl Into<String>, e: Errno) -> Error {
    Error::io(context, std::io::Error::from(e))
}

pub(super) fn not_open(what: impl std::fmt::Display) -> Error {
    Error::NotOpen(what.to_string())
}

pub(super) fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(super) fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    addr.as_sockaddr_in6()
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

pub(super) fn local_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| to_std(&a))
}

pub(super) fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| to_std(&a))
}

/// The one CPU this thread is allowed on, if it is pinned to one.
pub(super) fn pinned_cpu() -> Option<i32> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let mut found = None;
    for cpu in 0..nix::sched::CpuSet::count() {
        if set.is_set(cpu).unwrap_or(false) {
            if found.is_some() {
                return None;
            }
            found = Some(cpu as i32);
        }
    }
    found
}

/// A new TCP or UDP socket for `addr`'s family, non-blocking.
pub(super) fn new_socket(addr: &SocketAddr, ty: SockType) -> nix::Result<OwnedFd> {
    socket::socket(
        family(addr),
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
}

impl Core {
    /// Nanoseconds since the transport was made, read now (calls from the
    /// application, between passes).
    pub(super) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// [`Self::pass_ns`], read at the start of a pass.
    pub(super) fn start_pass_clock(&mut self) {
        self.pass_ns = self.now_ns();
    }

    /// Connections ended but not yet freed (io_uring, ops in flight).
    pub(super) fn stats_dead(&self) -> u64 {
        self.dead
    }

    pub(super) fn conn(&self, c: ConnId) -> Result<&Conn> {
        match self.conns.get(c.index, c.generation) {
            Some(conn) if conn.usable() => Ok(conn),
            _ => Err(not_open(c)),
        }
    }

    pub(super) fn conn_mut(&mut self, c: ConnId) -> Result<&mut Conn> {
        match self.conns.get_mut(c.index, c.generation) {
            Some(conn) if conn.usable() => Ok(conn),
            _ => Err(not_open(c)),
        }
    }

    pub(super) fn udp(&self, u: UdpId) -> Result<&Udp> {
        self.udps
            .get(u.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| not_open(u))
    }

    pub(super) fn udp_mut(&mut self, u: UdpId) -> Result<&mut Udp> {
        self.udps
            .get_mut(u.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| not_open(u))
    }

    pub(super) fn mark_dirty(&mut self, index: u32, generation: u32) {
        if let Some(conn) = self.conns.get_mut(index, generation)
            && !conn.queued_dirty
        {
            conn.queued_dirty = true;
            self.dirty.push((index, generation));
        }
    }

    /// A new connection in a slot: its timer armed.
    pub(super) fn insert_conn(
        &mut self,
        fd: OwnedFd,
        phase: Phase,
        peer: Option<SocketAddr>,
    ) -> ConnId {
        let now = self.now_ns();
        let (rx, tx) = (self.config.rx_buffer, self.config.tx_buffer);
        let (index, generation) = self
            .conns
            .insert(|generation| Conn::new(fd, generation, phase, peer, rx, tx, now));
        let id = ConnId { index, generation };
        self.arm_timer(id);
        id
    }

    /// Queues `Readable` for a connection, once per pass.
    pub(super) fn readable(&mut self, index: u32, generation: u32) {
        let pass = self.pass;
        if let Some(conn) = self.conns.get_mut(index, generation)
            && conn.readable_pass != pass
        {
            conn.readable_pass = pass;
            self.events
                .push_back(Event::Readable(ConnId { index, generation }));
        }
    }

    /// Counts a connection's end and queues its `Closed`; the engine frees
    /// the slot (at once, or when its operations are done).
    pub(super) fn closed(
        &mut self,
        index: u32,
        generation: u32,
        phase: Phase,
        reason: CloseReason,
    ) {
        match reason {
            CloseReason::Reset => self.stats.reset += 1,
            CloseReason::TimedOut => self.stats.timed_out += 1,
            CloseReason::ConnectFailed(_) => self.stats.connect_failed += 1,
            _ => {}
        }
        if phase == Phase::Connecting && reason == CloseReason::TimedOut {
            self.stats.connect_failed += 1;
        }
        self.stats.closed += 1;
        self.events
            .push_back(Event::Closed(ConnId { index, generation }, reason));
    }

    /// RST rather than FIN at the descriptor's close, for an abort or a
    /// timeout; the kernel drops what is unsent.
    pub(super) fn linger_zero(fd: &OwnedFd) {
        let _ = socket::setsockopt(
            fd,
            sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
    }

    pub(super) fn reason_of(e: Errno) -> CloseReason {
        match e {
            Errno::ECONNRESET | Errno::EPIPE => CloseReason::Reset,
            Errno::ETIMEDOUT => CloseReason::TimedOut,
            e => CloseReason::Error(e as i32),
        }
    }

    /// After bytes left the send buffer: the FIN that waited for them,
    /// `Writable` when half the buffer is free after a write was cut
    /// short. Returns true when a closing connection is done (the caller
    /// ends it).
    pub(super) fn after_send(&mut self, index: u32, generation: u32, tx_idle: bool) -> bool {
        let cap = self.config.tx_buffer;
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return false;
        };
        if tx_idle && conn.tx.is_empty() && conn.shut_wanted && !conn.shut_done {
            conn.shut_done = true;
            let _ = socket::shutdown(conn.fd.as_raw_fd(), socket::Shutdown::Write);
        }
        if conn.phase == Phase::Closing && tx_idle && conn.tx.is_empty() {
            return true;
        }
        if conn.tx_was_full && conn.tx.room() * 2 >= cap {
            conn.tx_was_full = false;
            if conn.usable() {
                self.events
                    .push_back(Event::Writable(ConnId { index, generation }));
            }
        }
        false
    }

    // ---- timers ------------------------------------------------------------

    /// The deadline a connection's state gives it, if any.
    pub(super) fn deadline(&self, conn: &Conn) -> Option<u64> {
        let span = match conn.phase {
            Phase::Connecting => Some(self.config.connect_timeout),
            Phase::Closing => Some(self.config.close_timeout),
            Phase::Open => self.config.idle_timeout,
            Phase::Dead => None,
        }?;
        Some(conn.since_ns.saturating_add(span.as_nanos() as u64))
    }

    /// Puts a connection in the timer heap if its deadline is earlier than
    /// the entry it has (activity never touches the heap: an entry that
    /// comes due for an active connection is pushed back then).
    pub(super) fn arm_timer(&mut self, c: ConnId) {
        let Some(conn) = self.conns.get(c.index, c.generation) else {
            return;
        };
        let Some(deadline) = self.deadline(conn) else {
            return;
        };
        if deadline < conn.timer_ns {
            self.timers.push(Reverse((deadline, c.index, c.generation)));
            if let Some(conn) = self.conns.get_mut(c.index, c.generation) {
                conn.timer_ns = deadline;
            }
        }
    }

    // ---- UDP, on both engines ----------------------------------------------

    pub(super) fn udp_pass(&mut self) {
        for index in std::mem::take(&mut self.udp_to_read) {
            self.read_udp(index);
        }
        for index in std::mem::take(&mut self.udp_dirty) {
            if let Some(Some(s)) = self.udps.get_mut(index as usize) {
                s.queued_dirty = false;
            }
            self.flush_udp_socket(index);
        }
    }

    pub(super) fn udp_readable(&mut self, index: u32) {
        if let Some(Some(s)) = self.udps.get_mut(index as usize) {
            s.can_read = true;
            if !s.queued_read {
                s.queued_read = true;
                self.udp_to_read.push(index);
            }
        }
    }

    /// One `recvmmsg` into the socket's buffers, when they are all taken.
    fn read_udp(&mut self, index: u32) {
        let size = self.config.datagram_size;
        let Some(Some(s)) = self.udps.get_mut(index as usize) else {
            return;
        };
        s.queued_read = false;
        if !s.can_read || !s.rx.is_empty() {
            return;
        }
        let burst = s.rx_data.len() / size;
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(burst, None);
        self.stats.recv_calls += 1;
        let fd = s.fd.as_raw_fd();
        let outcome: std::result::Result<Vec<(Option<SocketAddr>, usize, bool)>, Errno> = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = s
                .rx_data
                .chunks_exact_mut(size)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            socket::recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map(|results| {
                results
                    .map(|r| {
                        let peer = r.address.as_ref().and_then(to_std);
                        (peer, r.bytes, r.flags.contains(MsgFlags::MSG_TRUNC))
                    })
                    .collect()
            })
        };
        match outcome {
            Ok(taken) => {
                let got = taken.len();
                // A datagram longer than a slot is counted and dropped; the
                // others move down so each sits at its slot's offset.
                for (slot, &(peer, len, truncated)) in taken.iter().enumerate() {
                    if truncated {
                        self.stats.datagrams_truncated += 1;
                        continue;
                    }
                    let dst = s.rx.len();
                    if dst != slot {
                        s.rx_data
                            .copy_within(slot * size..slot * size + len, dst * size);
                    }
                    let peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    s.rx.push((peer, len));
                }
                if got < burst {
                    s.can_read = false;
                }
                let delivered = s.rx.len();
                self.stats.datagrams_rx += delivered as u64;
                if delivered > 0 {
                    self.events.push_back(Event::Datagrams(UdpId(index)));
                } else if s.can_read && !s.queued_read {
                    s.queued_read = true;
                    self.udp_to_read.push(index);
                }
            }
            Err(Errno::EAGAIN) => s.can_read = false,
            Err(Errno::EINTR) => {}
            Err(e) => {
                // ICMP errors of earlier sends (ECONNREFUSED) surface here;
                // the socket stays usable.
                tracing::debug!(error = %e, "transport: recvmmsg");
            }
        }
    }

    /// One `sendmmsg` of what the socket has queued.
    pub(super) fn flush_udp_socket(&mut self, index: u32) {
        let size = self.config.datagram_size;
        let Some(Some(s)) = self.udps.get_mut(index as usize) else {
            return;
        };
        if s.tx.is_empty() {
            return;
        }
        let addrs: Vec<Option<SockaddrStorage>> =
            s.tx.iter()
                .map(|&(to, _)| Some(SockaddrStorage::from(to)))
                .collect();
        let slices: Vec<[IoSlice<'_>; 1]> =
            s.tx.iter()
                .enumerate()
                .map(|(i, &(_, len))| [IoSlice::new(&s.tx_data[i * size..i * size + len])])
                .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(s.tx.len(), None);
        self.stats.send_calls += 1;
        let (sent, refused) = match socket::sendmmsg(
            s.fd.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => (results.count(), 0),
            Err(Errno::EAGAIN | Errno::EINTR) => (0, 0),
            Err(e) => {
                // The first datagram is refused outright (EMSGSIZE, an
                // address of the other family, no route): drop it and go
                // on with the rest next time.
                tracing::debug!(error = %e, "transport: sendmmsg");
                (0, 1)
            }
        };
        drop(slices);
        self.stats.datagrams_tx += sent.min(s.tx.len()) as u64;
        self.stats.datagrams_tx_dropped += refused;
        let done = (sent + refused as usize).min(s.tx.len());
        if done == s.tx.len() {
            s.tx.clear();
        } else {
            s.tx_data.copy_within(done * size..s.tx.len() * size, 0);
            s.tx.drain(..done);
            if !s.queued_dirty {
                s.queued_dirty = true;
                self.udp_dirty.push(index);
            }
        }
    }
}
