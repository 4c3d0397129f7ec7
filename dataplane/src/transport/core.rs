//! The `Transport` itself: the public methods, which keep the shared state
//! ([`Core`]) and hand the engine-specific steps to the engine in use.

use super::buf::ByteBuf;
use super::conn::{Listener, Phase, Slab, Udp};
use super::epoll::Epoll;
use super::stack::Stack;
use super::state::{Core, io_err, local_of, new_socket, not_open, peer_of, pinned_cpu};
use super::uring::Uring;
use super::{CloseReason, Config, ConnId, ConnStats, EngineKind, Event, ListenerId, Stats, UdpId};
use crate::backend::{self, Candidates, Probe, Skip};
use crate::net::Port;
use crate::{Error, Result};
use nix::sys::socket::{self, Backlog, SockType, SockaddrStorage, sockopt};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// The user-space stack over a port queue, as an engine.
pub(super) type StackEngine = Stack<Box<dyn Port>>;

/// The engine in use.
pub(super) enum Engine {
    Epoll(Epoll),
    Uring(Box<Uring>),
    /// Every public method answers for the stack before it reaches a
    /// kernel engine's step.
    Stack(Box<StackEngine>),
}

/// What a kernel engine's step gives if it were called on the stack
/// engine (it is not: the public methods answer for the stack first).
trait OnStack {
    fn on_stack() -> Self;
}

impl OnStack for () {
    fn on_stack() {}
}

impl<T> OnStack for Result<T> {
    fn on_stack() -> Self {
        Err(Error::Config(
            "transport: a kernel engine's step called on the stack engine".to_string(),
        ))
    }
}

/// Calls the same method on whichever kernel engine is in use.
macro_rules! engine {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &mut $self.engine {
            Engine::Epoll(e) => e.$method(&mut $self.core, $($arg),*),
            Engine::Uring(e) => e.$method(&mut $self.core, $($arg),*),
            Engine::Stack(_) => OnStack::on_stack(),
        }
    };
}

/// Connections, listeners and UDP sockets of one lcore (see the
/// [module docs](super)).
pub struct Transport {
    pub(super) core: Core,
    pub(super) engine: Engine,
    /// The sessions of TLS connections, made at the first
    /// [`Transport::listen_tls`] or [`Transport::connect_tls`].
    pub(super) tls: Option<Box<super::tls::TlsLayer>>,
}

/// Hands a call on a TLS connection to the TLS layer, which calls the
/// engine's side with the layer taken out.
macro_rules! tls_first {
    ($self:ident, $c:expr, $method:ident ( $($arg:expr),* )) => {
        if $self.tls_for($c).is_some()
            && let Some(r) = $self.with_tls(|l, t| l.$method(t, $c $(, $arg)*))
        {
            return r;
        }
    };
}

const STACK_NEEDS_A_PORT: &str =
    "the user-space stack runs over an L2 port queue: open it with Transport::over_port";

/// The engines a transport may open, for [`backend::select`].
struct Engines<'a> {
    config: &'a Config,
}

impl Candidates for Engines<'_> {
    type Kind = EngineKind;
    type Value = Engine;

    fn device(&self) -> &str {
        "sockets"
    }

    fn probe(&self, kind: EngineKind) -> Probe {
        match kind {
            EngineKind::IoUring => super::uring::probe(),
            EngineKind::Epoll => Probe::ok("epoll is in every Linux kernel"),
            EngineKind::Stack => Probe::unavailable(STACK_NEEDS_A_PORT),
        }
    }

    fn open(&self, kind: EngineKind) -> Result<Engine> {
        Ok(match kind {
            EngineKind::IoUring => Engine::Uring(Box::new(Uring::new(self.config)?)),
            EngineKind::Epoll => Engine::Epoll(Epoll::new()?),
            EngineKind::Stack => return Err(Error::Config(STACK_NEEDS_A_PORT.to_string())),
        })
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("engine", &self.engine())
            .field("connections", &self.core.conns.len)
            .field("listeners", &self.core.listeners.iter().flatten().count())
            .field("udp_sockets", &self.core.udps.iter().flatten().count())
            .field("events", &self.core.events.len())
            .field("stats", &self.core.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Engine::Uring(u) = &mut self.engine {
            u.drain(&mut self.core);
        }
    }
}

impl Transport {
    /// A transport with no sockets yet, on the engine
    /// [`Config::engine`] names or, for `auto`, the first that runs here
    /// (io_uring, then epoll; a skip is logged with its reason, and refused
    /// where `DATAPLANE_REQUIRE` names `io_uring`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a refused [`Config`] or a named engine that
    /// cannot run; [`Error::Required`] for a refused fallback.
    pub fn new(config: Config) -> Result<Self> {
        Ok(Self::with_skips(config)?.0)
    }

    /// [`Self::new`], and the engines passed over with their reasons.
    ///
    /// # Errors
    ///
    /// As [`Self::new`].
    pub fn with_skips(config: Config) -> Result<(Self, Vec<Skip>)> {
        Self::open(config, crate::require::requirements())
    }

    /// [`Self::with_skips`] under the requirements given.
    pub(super) fn open(
        config: Config,
        required: &crate::require::Requirements,
    ) -> Result<(Self, Vec<Skip>)> {
        config.validate()?;
        let opened = backend::select(&Engines { config: &config }, config.engine, required)?;
        Ok((
            Self {
                core: Self::core(config),
                engine: opened.value,
                tls: None,
            },
            opened.skipped,
        ))
    }

    /// A transport whose connections run on the user-space TCP/IP stack
    /// ([`super::stack`]) over `port`, one queue of an L2 port (DPDK,
    /// AF_XDP, AF_PACKET or memory) that this lcore owns, with the
    /// address and neighbours of `stack`. `config`'s buffer sizes,
    /// `max_connections`, `backlog`, `connect_timeout`, `close_timeout`
    /// and `idle_timeout` replace the stack's (an idle connection is
    /// reset); its engine is not consulted. TCP connections and UDP sockets over IPv4 (a
    /// datagram received stays in its frame's mbuf until it is consumed;
    /// `datagram_size` and `datagram_burst` do not apply). The application code is the kernel engines': the same
    /// methods and events. To serve on several lcores, give each the
    /// queue of its own that the port's RSS (or AF_PACKET's fanout)
    /// steers a flow to.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a configuration either refuses, or a port
    /// that is not L2 or has no MAC address.
    pub fn over_port(
        port: Box<dyn Port>,
        stack: super::stack::StackConfig,
        config: Config,
    ) -> Result<Self> {
        config.validate()?;
        let mut stack = stack;
        stack.rx_buffer = config.rx_buffer;
        stack.tx_buffer = config.tx_buffer;
        stack.max_connections = config.max_connections;
        stack.backlog = usize::try_from(config.backlog).unwrap_or(1).max(1);
        stack.connect_timeout = config.connect_timeout;
        stack.close_timeout = config.close_timeout;
        stack.idle_timeout = config.idle_timeout;
        let s = Stack::new(port, stack)?;
        Ok(Self {
            core: Self::core(config),
            engine: Engine::Stack(Box::new(s)),
            tls: None,
        })
    }

    fn core(config: Config) -> Core {
        Core {
            config,
            conns: Slab::new(),
            listeners: Vec::new(),
            udps: Vec::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
            udp_to_read: Vec::new(),
            udp_dirty: Vec::new(),
            timers: BinaryHeap::new(),
            clock: crate::time::TscClock::new(),
            pass_ns: 0,
            incoming_cpu: pinned_cpu(),
            stats: Stats::default(),
            pass: 0,
            dead: 0,
        }
    }

    fn stack(&mut self) -> Option<&mut StackEngine> {
        match &mut self.engine {
            Engine::Stack(s) => Some(s),
            _ => None,
        }
    }

    fn stack_ref(&self) -> Option<&StackEngine> {
        match &self.engine {
            Engine::Stack(s) => Some(s),
            _ => None,
        }
    }

    /// The engine in use.
    pub fn engine(&self) -> EngineKind {
        match self.engine {
            Engine::Epoll(_) => EngineKind::Epoll,
            Engine::Uring(_) => EngineKind::IoUring,
            Engine::Stack(_) => EngineKind::Stack,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Its counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.engine_stats();
        if let Some(l) = &self.tls {
            s.tls_handshakes = l.stats.handshakes;
            s.tls_failed = l.stats.failed;
        }
        s
    }

    fn engine_stats(&self) -> Stats {
        if let Some(st) = self.stack_ref() {
            let x = st.stats();
            return Stats {
                passes: x.passes,
                accepted: x.accepted,
                connected: x.connected,
                closed: x.closed,
                reset: x.reset,
                timed_out: x.timed_out,
                open: x.connections,
                rx_bytes: x.rx_bytes,
                tx_bytes: x.tx_bytes,
                ..Stats::default()
            };
        }
        let mut s = self.core.stats;
        s.open = self.core.conns.len as u64 - self.core.stats_dead();
        s
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
        if let Some(s) = self.stack() {
            let ours = IpAddr::V4(s.address());
            if !(addr.ip().is_unspecified() || addr.ip() == ours) || addr.port() == 0 {
                return Err(Error::Config(format!(
                    "transport: the stack listens on its address {ours} and a port above 0, not {addr}"
                )));
            }
            return s.listen(addr.port());
        }
        let ctx = |what: &str| format!("transport: {what} for a listener on {addr}");
        let fd = new_socket(&addr, SockType::Stream).map_err(|e| io_err(ctx("socket"), e))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .map_err(|e| io_err(ctx("SO_REUSEADDR"), e))?;
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| io_err(ctx("SO_REUSEPORT"), e))?;
        if self.core.config.nodelay {
            // Accepted connections inherit it.
            socket::setsockopt(&fd, sockopt::TcpNoDelay, &true)
                .map_err(|e| io_err(ctx("TCP_NODELAY"), e))?;
        }
        if let Some(cpu) = self.core.incoming_cpu {
            super::set_incoming_cpu(&fd, cpu);
        }
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .map_err(|e| io_err(ctx("bind"), e))?;
        let backlog = Backlog::new(self.core.config.backlog).unwrap_or(Backlog::MAXCONN);
        socket::listen(&fd, backlog).map_err(|e| io_err(ctx("listen"), e))?;
        let local = local_of(&fd).unwrap_or(addr);
        let ls = &mut self.core.listeners;
        let index = ls.iter().position(Option::is_none).unwrap_or(ls.len());
        let l = Listener {
            fd,
            local,
            armed: false,
        };
        if index == ls.len() {
            ls.push(Some(l));
        } else {
            ls[index] = Some(l);
        }
        if let Err(e) = engine!(self.add_listener(index as u32)) {
            self.core.listeners[index] = None;
            return Err(e);
        }
        tracing::debug!(%local, listener = index, engine = %self.engine(), "transport: listening");
        Ok(ListenerId(index as u32))
    }

    /// The address a listener is bound to.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a listener that is not open.
    pub fn listener_addr(&self, l: ListenerId) -> Result<SocketAddr> {
        if let Some(s) = self.stack_ref() {
            return s.listener_addr(l).map(SocketAddr::V4);
        }
        self.core
            .listeners
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
        self.tls_unlisten(l);
        if let Some(s) = self.stack() {
            return s.unlisten(l);
        }
        self.listener_addr(l)?;
        engine!(self.remove_listener(l.0));
        self.core.listeners[l.0 as usize] = None;
        Ok(())
    }

    // ---- connections -------------------------------------------------------

    /// Connects to `addr` without waiting: [`Event::Connected`] when the
    /// connection is established, or [`Event::Closed`] with
    /// [`CloseReason::ConnectFailed`]. Writes before then are buffered.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be made or the connect fails
    /// at once (no route, no ephemeral port); [`Error::Full`] at
    /// `max_connections`.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId> {
        if let Some(s) = self.stack() {
            let SocketAddr::V4(v4) = addr else {
                return Err(Error::Config(format!(
                    "transport: the stack speaks IPv4; cannot connect to {addr}"
                )));
            };
            return s.connect(v4);
        }
        if self.core.conns.len >= self.core.config.max_connections {
            return Err(Error::Full(format!(
                "transport: {} connections open (max_connections)",
                self.core.conns.len
            )));
        }
        let fd = new_socket(&addr, SockType::Stream)
            .map_err(|e| io_err(format!("transport: socket connecting to {addr}"), e))?;
        if self.core.config.nodelay {
            let _ = socket::setsockopt(&fd, sockopt::TcpNoDelay, &true);
        }
        engine!(self.connect(fd, addr))
    }

    /// Every byte received and not yet consumed, as one slice.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn peek(&self, c: ConnId) -> Result<&[u8]> {
        if let Some(l) = self.tls_for(c) {
            return l.peek(c);
        }
        self.engine_peek(c)
    }

    /// [`Self::peek`] of the engine's buffer (ciphertext, under TLS).
    pub(super) fn engine_peek(&self, c: ConnId) -> Result<&[u8]> {
        if let Some(s) = self.stack_ref() {
            return s.peek(c);
        }
        let conn = self.core.conn(c)?;
        if let Engine::Uring(u) = &self.engine
            && let Some(b) = u.lent_bytes(&self.core, c)
        {
            return Ok(b);
        }
        Ok(conn.rx.bytes())
    }

    /// Drops the first `n` received bytes (all, if fewer are held). When
    /// this frees a full buffer the transport receives on it again.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn consume(&mut self, c: ConnId, n: usize) -> Result<()> {
        tls_first!(self, c, consume(n));
        if let Some(s) = self.stack() {
            return s.consume(c, n);
        }
        // One lookup of the connection for the whole call: this runs for
        // every request a server handles.
        let conn = self.core.conn_mut(c)?;
        match &mut self.engine {
            Engine::Uring(u) => {
                let lent = u.consume_lent(conn, n);
                conn.rx.consume(n - lent);
                u.rx_freed(conn, c);
            }
            Engine::Epoll(e) => {
                conn.rx.consume(n);
                e.rx_freed(conn, c);
            }
            Engine::Stack(_) => {}
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
        if let Some(l) = self.tls_for(c) {
            return l.send_room(self, c);
        }
        self.engine_send_room(c)
    }

    /// [`Self::send_room`] of the engine's buffer (ciphertext, under TLS).
    pub(super) fn engine_send_room(&self, c: ConnId) -> Result<usize> {
        if let Some(s) = self.stack_ref() {
            return s.send_room(c);
        }
        let conn = self.core.conn(c)?;
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
        tls_first!(self, c, write(data));
        if let Some(s) = self.stack() {
            return s.write(c, data);
        }
        let conn = self.core.conn_mut(c)?;
        if conn.shut_wanted {
            return Err(Error::Config(format!("{c}: write after shutdown")));
        }
        let n = conn.tx.push(data);
        let full = n < data.len();
        if full {
            conn.tx_was_full = true;
            self.core.stats.tx_full += 1;
        }
        if n > 0 {
            self.core.mark_dirty(c.index, c.generation);
        }
        Ok(n)
    }

    /// [`Self::write`] of an output the application builds in a `Vec` of
    /// its own: the bytes taken are removed from the front of `data`, and
    /// their count returned. On the kernel engines, when the send buffer
    /// is empty and has room for all of `data`, the `Vec` itself becomes
    /// the send buffer (no copy) and `data` gets an empty allocation back
    /// to fill next; otherwise the bytes are copied as [`Self::write`]
    /// copies them. A server that writes a pass's replies at once (16
    /// pipelined values of 1 KiB) saves that copy on every pass.
    ///
    /// # Errors
    ///
    /// As [`Self::write`]; `data` is untouched then.
    pub fn write_from(&mut self, c: ConnId, data: &mut Vec<u8>) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.tls_for(c).is_none() && self.stack_ref().is_none() {
            let conn = self.core.conn_mut(c)?;
            if conn.shut_wanted {
                return Err(Error::Config(format!("{c}: write after shutdown")));
            }
            let n = data.len();
            if conn.tx.adopt(data) {
                self.core.mark_dirty(c.index, c.generation);
                return Ok(n);
            }
        }
        let n = self.write(c, data)?;
        data.drain(..n);
        Ok(n)
    }

    /// Sends what the connection's buffer holds now rather than at the
    /// next pass (on io_uring: queues the send, which the next pass
    /// submits with everything else).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn flush(&mut self, c: ConnId) -> Result<()> {
        tls_first!(self, c, flush());
        if let Some(s) = self.stack() {
            s.peek(c)?;
            s.flush();
            return Ok(());
        }
        self.core.conn(c)?;
        engine!(self.flush(c.index, c.generation));
        Ok(())
    }

    /// Sends FIN after the buffered bytes; the connection still receives.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn shutdown(&mut self, c: ConnId) -> Result<()> {
        tls_first!(self, c, shutdown());
        if let Some(s) = self.stack() {
            return s.shutdown(c);
        }
        let conn = self.core.conn_mut(c)?;
        if !conn.shut_wanted {
            conn.shut_wanted = true;
            self.core.mark_dirty(c.index, c.generation);
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
        tls_first!(self, c, close());
        if let Some(s) = self.stack() {
            // Bytes not consumed are dropped, as on the kernel engines
            // (the stack alone would reset, as Linux does).
            s.consume(c, usize::MAX)?;
            return s.close(c);
        }
        let now = self.core.now_ns();
        let conn = self.core.conn_mut(c)?;
        conn.phase = Phase::Closing;
        conn.shut_wanted = true;
        conn.since_ns = now;
        conn.rx.consume(usize::MAX);
        if let Engine::Uring(u) = &mut self.engine {
            u.consume_lent(conn, usize::MAX);
        }
        self.core.mark_dirty(c.index, c.generation);
        self.core.arm_timer(c);
        Ok(())
    }

    /// Resets the connection now (`SO_LINGER` 0: RST, buffered bytes
    /// dropped); [`Event::Closed`] with [`CloseReason::Aborted`] follows.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is already gone.
    pub fn abort(&mut self, c: ConnId) -> Result<()> {
        tls_first!(self, c, abort());
        if let Some(s) = self.stack() {
            return s.abort(c);
        }
        match self.core.conns.get(c.index, c.generation) {
            Some(conn) if conn.phase != Phase::Dead => {}
            _ => return Err(not_open(c)),
        }
        engine!(self.end(c.index, CloseReason::Aborted));
        Ok(())
    }

    /// A connection's addresses and counters.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn conn_stats(&self, c: ConnId) -> Result<ConnStats> {
        let mut s = self.engine_conn_stats(c)?;
        if let Some(l) = self.tls_for(c) {
            s.rx_buffered = l.peek(c)?.len();
        }
        Ok(s)
    }

    fn engine_conn_stats(&self, c: ConnId) -> Result<ConnStats> {
        if let Some(s) = self.stack_ref() {
            let x = s.conn_stats(c)?;
            return Ok(ConnStats {
                local: SocketAddr::V4(x.local),
                peer: SocketAddr::V4(x.peer),
                rx_bytes: x.counters.rx_bytes,
                tx_bytes: x.counters.tx_bytes,
                rx_buffered: x.rx_buffered,
                tx_buffered: x.tx_buffered,
            });
        }
        let conn = self.core.conn(c)?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(ConnStats {
            local: local_of(&conn.fd).unwrap_or(unspecified),
            peer: conn
                .peer
                .or_else(|| peer_of(&conn.fd))
                .unwrap_or(unspecified),
            rx_bytes: conn.rx_bytes,
            tx_bytes: conn.tx_bytes,
            rx_buffered: conn.rx.len()
                + conn
                    .ring
                    .lent
                    .map_or(0, |(_, len, from)| (len - from) as usize),
            tx_buffered: conn.tx.len() + conn.ring.flight.as_ref().map_or(0, ByteBuf::len),
        })
    }

    /// Whether the peer has sent FIN (and so no byte follows those
    /// buffered).
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a connection that is closed or closing.
    pub fn peer_closed(&self, c: ConnId) -> Result<bool> {
        if let Some(l) = self.tls_for(c) {
            // Its close_notify, or its FIN once every byte before it has
            // been through TLS.
            return Ok(l.peer_notified(c)?
                || (self.engine_peer_closed(c)? && self.engine_peek(c)?.is_empty()));
        }
        self.engine_peer_closed(c)
    }

    pub(super) fn engine_peer_closed(&self, c: ConnId) -> Result<bool> {
        if let Some(s) = self.stack_ref() {
            return s.peer_closed(c);
        }
        Ok(self.core.conn(c)?.peer_closed)
    }

    // ---- the pass ----------------------------------------------------------

    /// One pass: sends what was written since the last pass, learns what
    /// the kernel has done (one `epoll_wait`, or one `io_uring_enter`, that
    /// does not wait), accepts, completes connects, receives, and expires
    /// timeouts. Returns how many events it queued.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the engine's wait fails; a socket's own error
    /// ends that connection instead ([`Event::Closed`]).
    pub fn poll(&mut self) -> Result<usize> {
        if let Some(r) = self.with_tls(|l, t| Ok(t.poll()? + l.after_poll(t))) {
            return r;
        }
        if let Some(s) = self.stack() {
            return Ok(s.poll());
        }
        let before = self.core.events.len();
        self.core.stats.passes += 1;
        self.core.pass += 1;
        self.core.start_pass_clock();
        engine!(self.pass())?;
        self.core.udp_pass();
        if !self.core.timers.is_empty() {
            self.expire();
        }
        Ok(self.core.events.len().saturating_sub(before))
    }

    /// The next event, oldest first. Events queued for a connection that
    /// the application has since closed or aborted are skipped (its
    /// [`Event::Closed`] is not).
    pub fn next_event(&mut self) -> Option<Event> {
        if let Some(ev) = self.with_tls(|l, t| l.next_event(t)) {
            return ev;
        }
        if let Some(s) = self.stack() {
            return s.next_event();
        }
        loop {
            let ev = self.core.events.pop_front()?;
            let conn = match ev {
                Event::Accepted { conn, .. } => conn,
                Event::Connected(c)
                | Event::Readable(c)
                | Event::Writable(c)
                | Event::PeerClosed(c) => c,
                Event::Closed(..) | Event::Datagrams(_) => return Some(ev),
            };
            if self.core.conn(conn).is_ok() {
                return Some(ev);
            }
        }
    }

    fn expire(&mut self) {
        let now = self.core.pass_ns;
        while let Some(&Reverse((at, index, generation))) = self.core.timers.peek() {
            if at > now {
                return;
            }
            self.core.timers.pop();
            let Some(conn) = self.core.conns.get(index, generation) else {
                continue;
            };
            if conn.timer_ns != at || conn.phase == Phase::Dead {
                continue;
            }
            match self.core.deadline(conn) {
                Some(d) if d <= now => engine!(self.end(index, CloseReason::TimedOut)),
                Some(d) => {
                    self.core.timers.push(Reverse((d, index, generation)));
                    if let Some(conn) = self.core.conns.get_mut(index, generation) {
                        conn.timer_ns = d;
                    }
                }
                None => {
                    if let Some(conn) = self.core.conns.get_mut(index, generation) {
                        conn.timer_ns = u64::MAX;
                    }
                }
            }
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
        if let Some(s) = self.stack() {
            let ours = IpAddr::V4(s.address());
            if !(addr.ip().is_unspecified() || addr.ip() == ours) || addr.port() == 0 {
                return Err(Error::Config(format!(
                    "transport: the stack binds UDP on its address {ours} and a port above 0, not {addr}"
                )));
            }
            return s.bind_udp(addr.port());
        }
        let ctx = |what: &str| format!("transport: {what} for a UDP socket on {addr}");
        let fd = new_socket(&addr, SockType::Datagram).map_err(|e| io_err(ctx("socket"), e))?;
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| io_err(ctx("SO_REUSEPORT"), e))?;
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .map_err(|e| io_err(ctx("bind"), e))?;
        let local = local_of(&fd).unwrap_or(addr);
        let (size, burst) = (
            self.core.config.datagram_size,
            self.core.config.datagram_burst,
        );
        let u = Udp {
            fd,
            local,
            can_read: false,
            queued_read: false,
            queued_dirty: false,
            armed: false,
            rx_data: vec![0; size * burst],
            rx: Vec::with_capacity(burst),
            rx_next: 0,
            tx_data: vec![0; size * burst],
            tx: Vec::with_capacity(burst),
        };
        let us = &mut self.core.udps;
        let index = us.iter().position(Option::is_none).unwrap_or(us.len());
        if index == us.len() {
            us.push(Some(u));
        } else {
            us[index] = Some(u);
        }
        if let Err(e) = engine!(self.add_udp(index as u32)) {
            self.core.udps[index] = None;
            return Err(e);
        }
        Ok(UdpId(index as u32))
    }

    /// The address a UDP socket is bound to.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn udp_addr(&self, u: UdpId) -> Result<SocketAddr> {
        if let Some(s) = self.stack_ref() {
            return s.udp_addr(u).map(SocketAddr::V4);
        }
        Ok(self.core.udp(u)?.local)
    }

    /// Closes a UDP socket; datagrams queued and not sent are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn close_udp(&mut self, u: UdpId) -> Result<()> {
        if let Some(s) = self.stack() {
            return s.close_udp(u);
        }
        self.core.udp(u)?;
        engine!(self.remove_udp(u.0));
        self.core.udps[u.0 as usize] = None;
        self.core.udp_to_read.retain(|&i| i != u.0);
        self.core.udp_dirty.retain(|&i| i != u.0);
        Ok(())
    }

    /// The oldest datagram received and not taken, without taking it.
    ///
    /// # Errors
    ///
    /// [`Error::NotOpen`] for a socket that is not open.
    pub fn peek_datagram(&self, u: UdpId) -> Result<Option<(SocketAddr, &[u8])>> {
        if let Some(s) = self.stack_ref() {
            return Ok(s.peek_datagram(u)?.map(|(a, d)| (SocketAddr::V4(a), d)));
        }
        let s = self.core.udp(u)?;
        let size = self.core.config.datagram_size;
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
        if let Some(s) = self.stack() {
            return s.consume_datagram(u);
        }
        let s = self.core.udp_mut(u)?;
        if s.rx_next < s.rx.len() {
            s.rx_next += 1;
        }
        if s.rx_next == s.rx.len() {
            s.rx.clear();
            s.rx_next = 0;
            if s.can_read && !s.queued_read {
                s.queued_read = true;
                self.core.udp_to_read.push(u.0);
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
        if let Some(s) = self.stack() {
            let SocketAddr::V4(to) = to else {
                return Err(Error::Config(format!(
                    "transport: the stack speaks IPv4; cannot send to {to}"
                )));
            };
            return s.send_to(u, to, data);
        }
        let size = self.core.config.datagram_size;
        let burst = self.core.config.datagram_burst;
        if data.len() > size {
            self.core.udp(u)?;
            self.core.stats.datagrams_tx_dropped += 1;
            return Ok(false);
        }
        if self.core.udp(u)?.tx.len() == burst {
            self.core.flush_udp_socket(u.0);
        }
        let s = self.core.udp_mut(u)?;
        if s.tx.len() == burst {
            self.core.stats.datagrams_tx_dropped += 1;
            return Ok(false);
        }
        let at = s.tx.len() * size;
        s.tx_data[at..at + data.len()].copy_from_slice(data);
        s.tx.push((to, data.len()));
        if !s.queued_dirty {
            s.queued_dirty = true;
            self.core.udp_dirty.push(u.0);
        }
        Ok(true)
    }
}
