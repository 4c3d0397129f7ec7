//! The kernel-socket engine: non-blocking sockets, edge-triggered `epoll`,
//! `accept4`, `recvmmsg`/`sendmmsg` (see the module above for the model).
//!
//! Readiness is kept per socket as two flags, `can_read` and `can_write`,
//! set by epoll's edges and cleared when a call finds the socket drained
//! (`EAGAIN` or a short read) or full (a short send). Work is driven by
//! two lists rebuilt each pass, so a pass touches only the sockets that
//! have something to do: `dirty` (bytes to send, or a FIN or close waiting
//! for them) and `to_read` (readable, or readable again because the
//! application freed room in a full receive buffer).

use super::buf::ByteBuf;
use super::{CloseReason, Config, ConnId, ConnStats, Event, ListenerId, Stats, UdpId};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, AddressFamily, Backlog, MsgFlags, MultiHeaders, Shutdown, SockFlag, SockType,
    SockaddrStorage, sockopt,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// What an epoll token names: the top two bits.
const KIND_CONN: u64 = 0;
const KIND_LISTENER: u64 = 1;
const KIND_UDP: u64 = 2;

fn token(kind: u64, index: u32, generation: u32) -> u64 {
    kind << 62 | (u64::from(generation) & 0x3fff_ffff) << 32 | u64::from(index)
}

fn untoken(t: u64) -> (u64, u32, u32) {
    (t >> 62, t as u32, ((t >> 32) & 0x3fff_ffff) as u32)
}

/// A TCP connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `connect` returned `EINPROGRESS`.
    Connecting,
    /// Established.
    Open,
    /// `close` was called: sending what is buffered, then freed.
    Closing,
}

struct Conn {
    fd: OwnedFd,
    generation: u32,
    phase: Phase,
    local: SocketAddr,
    peer: SocketAddr,
    rx: ByteBuf,
    tx: ByteBuf,
    can_read: bool,
    can_write: bool,
    /// In this pass's `to_read` list.
    queued_read: bool,
    /// In the `dirty` list.
    queued_dirty: bool,
    /// Read returned 0: the peer's FIN.
    peer_closed: bool,
    /// epoll reported `EPOLLRDHUP`, `EPOLLHUP` or `EPOLLERR`: the FIN or
    /// an error is queued behind the data, so a short read does not mean
    /// drained (no further edge will come for it).
    hangup: bool,
    /// `shutdown` asked for: FIN once `tx` is empty.
    shut_wanted: bool,
    shut_done: bool,
    /// A write took less than it was given: `Writable` when room returns.
    tx_was_full: bool,
    /// When it was last active or (while connecting or closing) when it
    /// started to, in ns since the transport's start.
    since_ns: u64,
    /// In the timer heap with this deadline (u64::MAX: not in it).
    timer_ns: u64,
    rx_bytes: u64,
    tx_bytes: u64,
}

struct Listener {
    fd: OwnedFd,
    local: SocketAddr,
}

struct Udp {
    fd: OwnedFd,
    local: SocketAddr,
    can_read: bool,
    queued_read: bool,
    can_write: bool,
    /// Received datagrams: `datagram_size` bytes each in `rx_data`; `rx`
    /// lists (peer, length) of those not yet taken, from `rx_next`.
    rx_data: Vec<u8>,
    rx: Vec<(SocketAddr, usize)>,
    rx_next: usize,
    /// Datagrams to send: payloads in `tx_data`, `datagram_size` apart.
    tx_data: Vec<u8>,
    tx: Vec<(SocketAddr, usize)>,
    queued_dirty: bool,
}

/// Slots with a generation each; a freed slot's generation moves on so a
/// stale id is refused.
struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The slot and generation the next [`Self::insert`] takes.
    fn vacant(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&i) => (i, self.slots[i as usize].0),
            None => (self.slots.len() as u32, 0),
        }
    }

    fn insert(&mut self, make: impl FnOnce(u32, u32) -> T) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.1 = Some(make(index, slot.0));
        self.len += 1;
        (index, slot.0)
    }

    fn get(&self, index: u32, generation: u32) -> Option<&T> {
        match self.slots.get(index as usize) {
            Some((g, Some(t))) if *g == generation => Some(t),
            _ => None,
        }
    }

    fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        match self.slots.get_mut(index as usize) {
            Some((g, Some(t))) if *g == generation => Some(t),
            _ => None,
        }
    }

    fn remove(&mut self, index: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        let t = slot.1.take()?;
        slot.0 = (slot.0 + 1) & 0x3fff_ffff;
        self.free.push(index);
        self.len -= 1;
        Some(t)
    }
}

/// Connections, listeners and UDP sockets of one lcore over the kernel's
/// sockets (see the [module docs](super)).
pub struct Transport {
    config: Config,
    epoll: Epoll,
    ready: Vec<EpollEvent>,
    conns: Slab<Conn>,
    listeners: Vec<Option<Listener>>,
    udps: Vec<Option<Udp>>,
    events: VecDeque<Event>,
    to_read: Vec<(u32, u32)>,
    dirty: Vec<(u32, u32)>,
    udp_to_read: Vec<u32>,
    udp_dirty: Vec<u32>,
    /// Listeners that stopped accepting with connections waiting.
    accept_backlog: Vec<u32>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    start: Instant,
    /// `SO_INCOMING_CPU` for listeners: the one CPU this thread may run on.
    incoming_cpu: Option<i32>,
    stats: Stats,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("connections", &self.conns.len)
            .field("listeners", &self.listeners.iter().flatten().count())
            .field("udp_sockets", &self.udps.iter().flatten().count())
            .field("events", &self.events.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn io_err(context: impl Into<String>, e: Errno) -> Error {
    Error::io(context, std::io::Error::from(e))
}

fn not_open(what: impl std::fmt::Display) -> Error {
    Error::NotOpen(what.to_string())
}

fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    addr.as_sockaddr_in6()
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

fn local_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| to_std(&a))
}

fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| to_std(&a))
}

/// The one CPU this thread is allowed on, if it is pinned to one.
fn pinned_cpu() -> Option<i32> {
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

impl Transport {
    /// A transport with no sockets yet.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a refused [`Config`]; [`Error::Io`] when
    /// `epoll_create1` fails.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| io_err("transport: epoll_create1", e))?;
        Ok(Self {
            config,
            epoll,
            ready: vec![EpollEvent::empty(); 256],
            conns: Slab::new(),
            listeners: Vec::new(),
            udps: Vec::new(),
            events: VecDeque::new(),
            to_read: Vec::new(),
            dirty: Vec::new(),
            udp_to_read: Vec::new(),
            udp_dirty: Vec::new(),
            accept_backlog: Vec::new(),
            timers: BinaryHeap::new(),
            start: Instant::now(),
            incoming_cpu: pinned_cpu(),
            stats: Stats::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.open = self.conns.len as u64;
        s
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    // ---- listeners ---------------------------------------------------------

    /// Listens on `addr` (`SO_REUSEADDR` and `SO_REUSEPORT`, so other
    /// lcores may listen on the same address; port 0 picks one, see
    /// [`Self::listener_addr`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from `socket`, `bind` or `listen`, naming the address.
    pub fn listen(&mut self, addr: SocketAddr) -> Result<ListenerId> {
        let ctx = |what: &str| format!("transport: {what} for a listener on {addr}");
        let fd = socket::socket(
            family(&addr),
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_err(ctx("socket"), e))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .map_err(|e| io_err(ctx("SO_REUSEADDR"), e))?;
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| io_err(ctx("SO_REUSEPORT"), e))?;
        if let Some(cpu) = self.incoming_cpu {
            set_incoming_cpu(&fd, cpu);
        }
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .map_err(|e| io_err(ctx("bind"), e))?;
        let backlog = Backlog::new(self.config.backlog).unwrap_or(Backlog::MAXCONN);
        socket::listen(&fd, backlog).map_err(|e| io_err(ctx("listen"), e))?;
        let local = local_of(&fd).unwrap_or(addr);
        let index = self
            .listeners
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.listeners.len());
        // Level-triggered: a listener that stops at `max_connections` or
        // `accept_burst` is reported again next pass.
        self.epoll
            .add(
                &fd,
                EpollEvent::new(EpollFlags::EPOLLIN, token(KIND_LISTENER, index as u32, 0)),
            )
            .map_err(|e| io_err(ctx("epoll_ctl"), e))?;
        let l = Listener { fd, local };
        if index == self.listeners.len() {
            self.listeners.push(Some(l));
        } else {
            self.listeners[index] = Some(l);
        }
        tracing::debug!(%local, listener = index, "transport: listening");
        Ok(ListenerId(index as u32))
    }

    /// The address a listener is bound to.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a listener that is not open.
    pub fn listener_addr(&self, l: ListenerId) -> Result<SocketAddr> {
        self.listeners
            .get(l.0 as usize)
            .and_then(Option::as_ref)
            .map(|l| l.local)
            .ok_or_else(|| not_open(l))
    }

    /// Stops listening; connections it accepted stay open.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a listener that is not open.
    pub fn close_listener(&mut self, l: ListenerId) -> Result<()> {
        let slot = self
            .listeners
            .get_mut(l.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| not_open(l))?;
        // Dropping the descriptor removes it from the epoll set.
        drop(slot);
        self.accept_backlog.retain(|&i| i != l.0);
        Ok(())
    }

    fn accept_from(&mut self, index: u32) {
        let Some(Some(l)) = self.listeners.get(index as usize) else {
            return;
        };
        let lfd = l.fd.as_raw_fd();
        for _ in 0..self.config.accept_burst {
            if self.conns.len >= self.config.max_connections {
                self.stats.accept_paused += 1;
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
            let now = self.now_ns();
            match self.add_conn(fd, Phase::Open, None, now) {
                Ok(conn) => {
                    self.stats.accepted += 1;
                    self.events.push_back(Event::Accepted {
                        listener: ListenerId(index),
                        conn,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "transport: an accepted connection was dropped")
                }
            }
        }
        // A full burst: more may wait; level-triggered epoll says so next pass.
    }

    fn add_conn(
        &mut self,
        fd: OwnedFd,
        phase: Phase,
        peer: Option<SocketAddr>,
        now: u64,
    ) -> Result<ConnId> {
        if self.config.nodelay {
            // Best effort: it only fails on sockets that are not TCP.
            let _ = socket::setsockopt(&fd, sockopt::TcpNoDelay, &true);
        }
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let local = local_of(&fd).unwrap_or(unspecified);
        let peer = peer.or_else(|| peer_of(&fd)).unwrap_or(unspecified);
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        let (index, generation) = self.conns.vacant();
        self.epoll
            .add(
                &fd,
                EpollEvent::new(flags, token(KIND_CONN, index, generation)),
            )
            .map_err(|e| io_err("transport: epoll_ctl for a connection", e))?;
        let (rx, tx) = (self.config.rx_buffer, self.config.tx_buffer);
        let taken = self.conns.insert(|_, generation| Conn {
            fd,
            generation,
            phase,
            local,
            peer,
            rx: ByteBuf::new(rx),
            tx: ByteBuf::new(tx),
            can_read: false,
            can_write: false,
            queued_read: false,
            queued_dirty: false,
            peer_closed: false,
            hangup: false,
            shut_wanted: false,
            shut_done: false,
            tx_was_full: false,
            since_ns: now,
            timer_ns: u64::MAX,
            rx_bytes: 0,
            tx_bytes: 0,
        });
        debug_assert_eq!(taken, (index, generation));
        let id = ConnId { index, generation };
        self.arm_timer(id, now);
        Ok(id)
    }

    // ---- connections -------------------------------------------------------

    /// Connects to `addr` without waiting: [`Event::Connected`] when the
    /// connection is established (it may already be when this returns, on
    /// loopback), or [`Event::Closed`] with
    /// [`CloseReason::ConnectFailed`]. Writes before then are buffered.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be made or the connect fails
    /// at once (no route, no ephemeral port); [`Error::Full`] at
    /// `max_connections`.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId> {
        if self.conns.len >= self.config.max_connections {
            return Err(Error::Full(format!(
                "transport: {} connections open (max_connections)",
                self.conns.len
            )));
        }
        let ctx = |what: &str| format!("transport: {what} connecting to {addr}");
        let fd = socket::socket(
            family(&addr),
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_err(ctx("socket"), e))?;
        let phase = match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
            Ok(()) => Phase::Open,
            Err(Errno::EINPROGRESS) => Phase::Connecting,
            Err(e) => return Err(io_err(ctx("connect"), e)),
        };
        let now = self.now_ns();
        let id = self.add_conn(fd, phase, Some(addr), now)?;
        if phase == Phase::Open {
            self.stats.connected += 1;
            self.events.push_back(Event::Connected(id));
        }
        Ok(id)
    }

    fn conn(&self, c: ConnId) -> Result<&Conn> {
        match self.conns.get(c.index, c.generation) {
            Some(conn) if conn.phase != Phase::Closing => Ok(conn),
            _ => Err(not_open(c)),
        }
    }

    fn conn_mut(&mut self, c: ConnId) -> Result<&mut Conn> {
        match self.conns.get_mut(c.index, c.generation) {
            Some(conn) if conn.phase != Phase::Closing => Ok(conn),
            _ => Err(not_open(c)),
        }
    }

    /// Every byte received and not yet consumed, as one slice.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn peek(&self, c: ConnId) -> Result<&[u8]> {
        Ok(self.conn(c)?.rx.bytes())
    }

    /// Drops the first `n` received bytes (all, if fewer are held). When
    /// this frees a full buffer the transport reads the socket again in the
    /// next pass.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn consume(&mut self, c: ConnId, n: usize) -> Result<()> {
        let conn = self.conn_mut(c)?;
        conn.rx.consume(n);
        if conn.can_read && !conn.queued_read && conn.rx.room() > 0 {
            conn.queued_read = true;
            self.to_read.push((c.index, c.generation));
        }
        Ok(())
    }

    /// Copies received bytes into `buf` and consumes them; returns how
    /// many (0 when none are held).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn read(&mut self, c: ConnId, buf: &mut [u8]) -> Result<usize> {
        let src = self.peek(c)?;
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        self.consume(c, n)?;
        Ok(n)
    }

    /// Room in the send buffer: a [`Self::write`] of at most this many
    /// bytes takes them all.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn send_room(&self, c: ConnId) -> Result<usize> {
        let conn = self.conn(c)?;
        Ok(if conn.shut_wanted { 0 } else { conn.tx.room() })
    }

    /// Queues `data` to send at the next pass; returns how many bytes the
    /// send buffer took (fewer than given when it is full, and then an
    /// [`Event::Writable`] follows when half of it is free again).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing;
    /// [`Error::Config`] after [`Self::shutdown`].
    pub fn write(&mut self, c: ConnId, data: &[u8]) -> Result<usize> {
        let conn = self.conn_mut(c)?;
        if conn.shut_wanted {
            return Err(Error::Config(format!("{c}: write after shutdown")));
        }
        let n = conn.tx.push(data);
        let full = n < data.len();
        if full {
            conn.tx_was_full = true;
        }
        if n > 0 && !conn.queued_dirty {
            conn.queued_dirty = true;
            self.dirty.push((c.index, c.generation));
        }
        if full {
            self.stats.tx_full += 1;
        }
        Ok(n)
    }

    /// Sends what the connection's buffer holds now rather than at the
    /// next pass.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn flush(&mut self, c: ConnId) -> Result<()> {
        self.conn(c)?;
        self.flush_conn(c.index, c.generation);
        Ok(())
    }

    /// Sends FIN after the buffered bytes; the connection still receives.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn shutdown(&mut self, c: ConnId) -> Result<()> {
        let conn = self.conn_mut(c)?;
        if !conn.shut_wanted {
            conn.shut_wanted = true;
            if !conn.queued_dirty {
                conn.queued_dirty = true;
                self.dirty.push((c.index, c.generation));
            }
        }
        Ok(())
    }

    /// Closes the connection once its buffered bytes are sent (within
    /// [`Config::close_timeout`], else it is reset); [`Event::Closed`]
    /// with [`CloseReason::Local`] follows, and received bytes not
    /// consumed are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn close(&mut self, c: ConnId) -> Result<()> {
        let now = self.now_ns();
        let conn = self.conn_mut(c)?;
        conn.phase = Phase::Closing;
        conn.shut_wanted = true;
        conn.since_ns = now;
        conn.rx.consume(usize::MAX);
        if !conn.queued_dirty {
            conn.queued_dirty = true;
            self.dirty.push((c.index, c.generation));
        }
        self.arm_timer(c, now);
        Ok(())
    }

    /// Resets the connection now (`SO_LINGER` 0: RST, buffered bytes
    /// dropped); [`Event::Closed`] with [`CloseReason::Aborted`] follows.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is already gone.
    pub fn abort(&mut self, c: ConnId) -> Result<()> {
        if self.conns.get(c.index, c.generation).is_none() {
            return Err(not_open(c));
        }
        self.end(c.index, CloseReason::Aborted);
        Ok(())
    }

    /// A connection's addresses and counters.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn conn_stats(&self, c: ConnId) -> Result<ConnStats> {
        let conn = self.conn(c)?;
        Ok(ConnStats {
            local: conn.local,
            peer: conn.peer,
            rx_bytes: conn.rx_bytes,
            tx_bytes: conn.tx_bytes,
            rx_buffered: conn.rx.len(),
            tx_buffered: conn.tx.len(),
        })
    }

    /// Whether the peer has sent FIN (and so no byte follows those
    /// buffered).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn peer_closed(&self, c: ConnId) -> Result<bool> {
        Ok(self.conn(c)?.peer_closed)
    }

    /// Frees a connection and queues its [`Event::Closed`].
    fn end(&mut self, index: u32, reason: CloseReason) {
        let Some(conn) = self.conns.remove(index) else {
            return;
        };
        let id = ConnId {
            index,
            generation: conn.generation,
        };
        if reason == CloseReason::Aborted || reason == CloseReason::TimedOut {
            // RST rather than FIN, and the kernel drops what is unsent.
            let _ = socket::setsockopt(
                &conn.fd,
                sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
        match reason {
            CloseReason::Reset => self.stats.reset += 1,
            CloseReason::TimedOut => self.stats.timed_out += 1,
            CloseReason::ConnectFailed(_) => self.stats.connect_failed += 1,
            _ => {}
        }
        if conn.phase == Phase::Connecting && reason == CloseReason::TimedOut {
            self.stats.connect_failed += 1;
        }
        self.stats.closed += 1;
        // Dropping the descriptor removes it from the epoll set.
        drop(conn);
        self.events.push_back(Event::Closed(id, reason));
    }

    fn reason_of(e: Errno) -> CloseReason {
        match e {
            Errno::ECONNRESET | Errno::EPIPE => CloseReason::Reset,
            Errno::ETIMEDOUT => CloseReason::TimedOut,
            e => CloseReason::Error(e as i32),
        }
    }

    // ---- timers ------------------------------------------------------------

    /// The deadline a connection's state gives it, if any.
    fn deadline(&self, conn: &Conn) -> Option<u64> {
        let span = match conn.phase {
            Phase::Connecting => Some(self.config.connect_timeout),
            Phase::Closing => Some(self.config.close_timeout),
            Phase::Open => self.config.idle_timeout,
        }?;
        Some(conn.since_ns.saturating_add(span.as_nanos() as u64))
    }

    fn arm_timer(&mut self, c: ConnId, _now: u64) {
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

    fn expire(&mut self, now: u64) {
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get(index, generation) else {
                continue;
            };
            if conn.timer_ns != at {
                continue;
            }
            match self.deadline(conn) {
                Some(d) if d <= now => self.end(index, CloseReason::TimedOut),
                Some(d) => {
                    self.timers.push(Reverse((d, index, generation)));
                    if let Some(conn) = self.conns.get_mut(index, generation) {
                        conn.timer_ns = d;
                    }
                }
                None => {
                    if let Some(conn) = self.conns.get_mut(index, generation) {
                        conn.timer_ns = u64::MAX;
                    }
                }
            }
        }
    }

    // ---- the pass ----------------------------------------------------------

    /// One pass: sends what was written since the last pass, learns which
    /// sockets are ready (one `epoll_wait` that does not wait), accepts,
    /// completes connects, receives, sends what became sendable, and
    /// expires timeouts. Returns how many events it queued.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `epoll_wait` fails; a socket's own error ends
    /// that connection instead ([`Event::Closed`]).
    pub fn poll(&mut self) -> Result<usize> {
        let before = self.events.len();
        self.stats.passes += 1;
        self.flush_dirty();
        self.wait_ready()?;
        self.read_ready();
        self.flush_dirty();
        self.flush_udp();
        if !self.timers.is_empty() {
            let now = self.now_ns();
            self.expire(now);
        }
        Ok(self.events.len() - before)
    }

    /// The next event, oldest first. Events queued for a connection that
    /// the application has since closed or aborted are skipped (its
    /// [`Event::Closed`] is not).
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let ev = self.events.pop_front()?;
            let conn = match ev {
                Event::Accepted { conn, .. } => conn,
                Event::Connected(c)
                | Event::Readable(c)
                | Event::Writable(c)
                | Event::PeerClosed(c) => c,
                Event::Closed(..) | Event::Datagrams(_) => return Some(ev),
            };
            if self.conn(conn).is_ok() {
                return Some(ev);
            }
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        self.stats.epoll_waits += 1;
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
                KIND_LISTENER => self.accept_from(index),
                KIND_CONN => self.conn_ready(index, generation, flags),
                KIND_UDP => self.udp_ready(index, flags),
                _ => {}
            }
        }
        if n == self.ready.len() && self.ready.len() < 4096 {
            // A full batch: take more next time.
            self.ready.resize(self.ready.len() * 2, EpollEvent::empty());
        }
        Ok(())
    }

    fn conn_ready(&mut self, index: u32, generation: u32, flags: EpollFlags) {
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        let readable = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLHUP
            | EpollFlags::EPOLLERR;
        if conn.phase == Phase::Connecting {
            if !flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                return;
            }
            let err = socket::getsockopt(&conn.fd, sockopt::SocketError).unwrap_or(libc::EIO);
            if err != 0 {
                self.end(index, CloseReason::ConnectFailed(err));
                return;
            }
            conn.phase = Phase::Open;
            if let Some(peer) = peer_of(&conn.fd) {
                conn.peer = peer;
            }
            if let Some(local) = local_of(&conn.fd) {
                conn.local = local;
            }
            conn.since_ns = self.start.elapsed().as_nanos() as u64;
            conn.timer_ns = u64::MAX;
            self.stats.connected += 1;
            self.events
                .push_back(Event::Connected(ConnId { index, generation }));
            let id = ConnId { index, generation };
            let now = self.now_ns();
            self.arm_timer(id, now);
        }
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if flags.intersects(readable) {
            conn.can_read = true;
            if flags
                .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                conn.hangup = true;
            }
            if !conn.queued_read {
                conn.queued_read = true;
                self.to_read.push((index, generation));
            }
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            conn.can_write = true;
            if (!conn.tx.is_empty() || conn.shut_wanted) && !conn.queued_dirty {
                conn.queued_dirty = true;
                self.dirty.push((index, generation));
            }
        }
    }

    fn read_ready(&mut self) {
        let list = std::mem::take(&mut self.to_read);
        for &(index, generation) in &list {
            self.read_conn(index, generation);
        }
        let mut list = list;
        list.clear();
        // Entries queued while reading (none today) are kept.
        list.append(&mut self.to_read);
        self.to_read = list;
    }

    fn read_conn(&mut self, index: u32, generation: u32) {
        let now = self.now_ns();
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.queued_read = false;
        if conn.phase == Phase::Closing {
            // Nothing is delivered after close; what arrives is dropped
            // (the kernel answers data after close with RST once the fd
            // is gone).
            let mut sink = [0u8; 4096];
            loop {
                match socket::recv(conn.fd.as_raw_fd(), &mut sink, MsgFlags::empty()) {
                    Ok(n) if n == sink.len() => continue,
                    _ => break,
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
            let tail = conn.rx.tail(conn.rx.room());
            let want = tail.len();
            self.stats.recv_calls += 1;
            match socket::recv(fd, tail, MsgFlags::empty()) {
                Ok(0) => {
                    fin = true;
                    conn.can_read = false;
                    break;
                }
                Ok(n) => {
                    conn.rx.commit(n);
                    got += n;
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
                    ended = Some(Self::reason_of(e));
                    break;
                }
            }
        }
        let id = ConnId { index, generation };
        if got > 0 {
            conn.rx_bytes += got as u64;
            conn.since_ns = now;
            self.stats.rx_bytes += got as u64;
            self.events.push_back(Event::Readable(id));
        }
        if fin {
            conn.peer_closed = true;
            self.events.push_back(Event::PeerClosed(id));
        }
        if let Some(reason) = ended {
            self.end(index, reason);
        }
    }

    fn flush_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.dirty);
        for &(index, generation) in &list {
            if let Some(conn) = self.conns.get_mut(index, generation) {
                conn.queued_dirty = false;
            }
            self.flush_conn(index, generation);
        }
        let mut list = list;
        list.clear();
        list.append(&mut self.dirty);
        self.dirty = list;
    }

    /// Sends what the connection holds as far as the socket takes it; then
    /// the FIN or the close that was waiting for it.
    fn flush_conn(&mut self, index: u32, generation: u32) {
        let now = self.now_ns();
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            // Sent once connected (EPOLLOUT requeues it).
            return;
        }
        let mut sent = 0usize;
        let mut ended = None;
        while !conn.tx.is_empty() && conn.can_write {
            let data = conn.tx.bytes();
            self.stats.send_calls += 1;
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
                    ended = Some(Self::reason_of(e));
                    break;
                }
            }
        }
        // A socket never marked writable yet (accepted this pass, before
        // its first EPOLLOUT edge) is tried once: accepted sockets are
        // almost always writable, and waiting for the edge costs a pass.
        if !conn.can_write && sent == 0 && ended.is_none() && !conn.tx.is_empty() {
            self.stats.send_calls += 1;
            match socket::send(
                conn.fd.as_raw_fd(),
                conn.tx.bytes(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    conn.tx.consume(n);
                    sent += n;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => ended = Some(Self::reason_of(e)),
            }
        }
        let id = ConnId { index, generation };
        if sent > 0 {
            conn.tx_bytes += sent as u64;
            if conn.phase == Phase::Open {
                conn.since_ns = now;
            }
            self.stats.tx_bytes += sent as u64;
        }
        if let Some(reason) = ended {
            self.end(index, reason);
            return;
        }
        if conn.tx.is_empty() && conn.shut_wanted && !conn.shut_done {
            conn.shut_done = true;
            let _ = socket::shutdown(conn.fd.as_raw_fd(), Shutdown::Write);
        }
        if conn.phase == Phase::Closing && conn.tx.is_empty() {
            self.end(index, CloseReason::Local);
            return;
        }
        if conn.tx_was_full && conn.tx.room() * 2 >= self.config.tx_buffer {
            conn.tx_was_full = false;
            self.events.push_back(Event::Writable(id));
        }
        if !conn.tx.is_empty() && conn.can_write && !conn.queued_dirty {
            conn.queued_dirty = true;
            self.dirty.push((index, generation));
        }
    }

    // ---- UDP ---------------------------------------------------------------

    /// Opens a UDP socket bound to `addr` (`SO_REUSEPORT`; port 0 picks
    /// one, see [`Self::udp_addr`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from `socket` or `bind`, naming the address.
    pub fn bind_udp(&mut self, addr: SocketAddr) -> Result<UdpId> {
        let ctx = |what: &str| format!("transport: {what} for a UDP socket on {addr}");
        let fd = socket::socket(
            family(&addr),
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_err(ctx("socket"), e))?;
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| io_err(ctx("SO_REUSEPORT"), e))?;
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .map_err(|e| io_err(ctx("bind"), e))?;
        let local = local_of(&fd).unwrap_or(addr);
        let index = self
            .udps
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.udps.len());
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        self.epoll
            .add(
                &fd,
                EpollEvent::new(flags, token(KIND_UDP, index as u32, 0)),
            )
            .map_err(|e| io_err(ctx("epoll_ctl"), e))?;
        let (size, burst) = (self.config.datagram_size, self.config.datagram_burst);
        let u = Udp {
            fd,
            local,
            can_read: false,
            queued_read: false,
            can_write: true,
            rx_data: vec![0; size * burst],
            rx: Vec::with_capacity(burst),
            rx_next: 0,
            tx_data: vec![0; size * burst],
            tx: Vec::with_capacity(burst),
            queued_dirty: false,
        };
        if index == self.udps.len() {
            self.udps.push(Some(u));
        } else {
            self.udps[index] = Some(u);
        }
        Ok(UdpId(index as u32))
    }

    /// The address a UDP socket is bound to.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn udp_addr(&self, u: UdpId) -> Result<SocketAddr> {
        Ok(self.udp(u)?.local)
    }

    /// Closes a UDP socket; datagrams queued and not sent are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn close_udp(&mut self, u: UdpId) -> Result<()> {
        self.udps
            .get_mut(u.0 as usize)
            .and_then(Option::take)
            .map(drop)
            .ok_or_else(|| not_open(u))?;
        self.udp_to_read.retain(|&i| i != u.0);
        self.udp_dirty.retain(|&i| i != u.0);
        Ok(())
    }

    fn udp(&self, u: UdpId) -> Result<&Udp> {
        self.udps
            .get(u.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| not_open(u))
    }

    fn udp_mut(&mut self, u: UdpId) -> Result<&mut Udp> {
        self.udps
            .get_mut(u.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| not_open(u))
    }

    /// The oldest datagram received and not taken, without taking it.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn peek_datagram(&self, u: UdpId) -> Result<Option<(SocketAddr, &[u8])>> {
        let s = self.udp(u)?;
        let size = self.config.datagram_size;
        Ok(s.rx.get(s.rx_next).map(|&(peer, len)| {
            let at = s.rx_next * size;
            (peer, &s.rx_data[at..at + len])
        }))
    }

    /// Takes the oldest datagram (after [`Self::peek_datagram`]). When it
    /// was the last one held, the socket is read again in the next pass.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn consume_datagram(&mut self, u: UdpId) -> Result<()> {
        let s = self.udp_mut(u)?;
        if s.rx_next < s.rx.len() {
            s.rx_next += 1;
        }
        if s.rx_next == s.rx.len() {
            s.rx.clear();
            s.rx_next = 0;
            if s.can_read && !s.queued_read {
                s.queued_read = true;
                self.udp_to_read.push(u.0);
            }
        }
        Ok(())
    }

    /// Copies the oldest datagram into `buf` and takes it: its length and
    /// sender, or `None` when none is held. A datagram longer than `buf`
    /// is cut to it (the length returned is what was copied).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn recv_from(&mut self, u: UdpId, buf: &mut [u8]) -> Result<Option<(usize, SocketAddr)>> {
        let Some((peer, data)) = self.peek_datagram(u)? else {
            return Ok(None);
        };
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.consume_datagram(u)?;
        Ok(Some((n, peer)))
    }

    /// Queues a datagram to `to`, sent with the pass's `sendmmsg` (or at
    /// once when the queue is full). Returns false, counted, when it is
    /// refused: longer than [`Config::datagram_size`], or the queue still
    /// full after sending.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn send_to(&mut self, u: UdpId, to: SocketAddr, data: &[u8]) -> Result<bool> {
        let size = self.config.datagram_size;
        let burst = self.config.datagram_burst;
        if data.len() > size {
            self.udp(u)?;
            self.stats.datagrams_tx_dropped += 1;
            return Ok(false);
        }
        if self.udp(u)?.tx.len() == burst {
            self.flush_udp_socket(u.0);
        }
        let s = self.udp_mut(u)?;
        if s.tx.len() == burst {
            self.stats.datagrams_tx_dropped += 1;
            return Ok(false);
        }
        let at = s.tx.len() * size;
        s.tx_data[at..at + data.len()].copy_from_slice(data);
        s.tx.push((to, data.len()));
        if !s.queued_dirty {
            s.queued_dirty = true;
            self.udp_dirty.push(u.0);
        }
        Ok(true)
    }

    fn udp_ready(&mut self, index: u32, flags: EpollFlags) {
        let Some(Some(s)) = self.udps.get_mut(index as usize) else {
            return;
        };
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) {
            s.can_read = true;
            if !s.queued_read {
                s.queued_read = true;
                self.udp_to_read.push(index);
            }
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            s.can_write = true;
            if !s.tx.is_empty() && !s.queued_dirty {
                s.queued_dirty = true;
                self.udp_dirty.push(index);
            }
        }
    }

    fn flush_udp(&mut self) {
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
    fn flush_udp_socket(&mut self, index: u32) {
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
                // address of the other family, no route): drop it and
                // go on with the rest next time.
                tracing::debug!(error = %e, "transport: sendmmsg");
                (0, 1)
            }
        };
        drop(slices);
        self.stats.datagrams_tx += sent.min(s.tx.len()) as u64;
        self.stats.datagrams_tx_dropped += refused;
        let sent = (sent + refused as usize).min(s.tx.len());
        if sent == s.tx.len() {
            s.tx.clear();
        } else {
            let rest = s.tx.len() - sent;
            s.tx_data.copy_within(sent * size..s.tx.len() * size, 0);
            s.tx.drain(..sent);
            debug_assert_eq!(s.tx.len(), rest);
            if refused == 0 {
                s.can_write = false;
            } else if !s.queued_dirty {
                s.queued_dirty = true;
                self.udp_dirty.push(index);
            }
        }
    }
}

/// `SO_INCOMING_CPU` on a listener; best effort (older kernels lack it).
fn set_incoming_cpu(fd: &OwnedFd, cpu: i32) {
    let raw: RawFd = fd.as_fd().as_raw_fd();
    // SAFETY: `raw` is an open socket for the duration of the call, and
    // the option value is a live `c_int` whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&raw const cpu).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(cpu, "transport: SO_INCOMING_CPU refused");
    }
}
