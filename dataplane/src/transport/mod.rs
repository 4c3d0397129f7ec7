//! TCP and UDP connections owned by an lcore: listen, accept, connect,
//! read, write, half-close and close, driven by the lcore's poll loop with
//! no async runtime and nothing shared between lcores.
//!
//! A [`Transport`] belongs to one thread (it is `Send`, not `Sync`, and
//! nothing in it is shared). Each pass of the lcore calls
//! [`Transport::poll`], which sends what the last pass wrote, learns which
//! sockets are ready, receives, accepts and connects, and queues
//! [`Event`]s; the application takes them with [`Transport::next_event`]
//! and answers through the same `Transport`:
//!
//! ```no_run
//! use dataplane::transport::{Config, Event, Transport};
//!
//! let mut t = Transport::new(Config::default())?;
//! t.listen("127.0.0.1:7000".parse().unwrap())?;
//! loop {
//!     t.poll()?;
//!     while let Some(ev) = t.next_event() {
//!         if let Event::Readable(c) = ev {
//!             // Echo what arrived; what the send buffer cannot take stays
//!             // in the receive buffer until the next `Writable`.
//!             let n = t.write(c, t.peek(c)?.to_vec().as_slice())?;
//!             t.consume(c, n)?;
//!         } else if let Event::PeerClosed(c) = ev {
//!             t.close(c)?;
//!         }
//!     }
//! }
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! **Receiving.** Each connection has a receive buffer of
//! [`Config::rx_buffer`] bytes; [`Transport::peek`] shows every byte held
//! as one slice (a parser never stitches pieces) and
//! [`Transport::consume`] drops what was used. While the buffer is full
//! the transport stops reading that socket, the kernel's buffer fills and
//! TCP closes the peer's window: a slow reader pushes back to the sender,
//! nothing is queued without bound. What arrives for a connection that
//! holds nothing is read in place when it is consumed in the pass it
//! arrived (the request/response case): on the user-space stack in the
//! rx mbuf that carried it, on io_uring in the provided buffer the kernel
//! filled. Bytes left for a later pass are copied into the buffer, so no
//! mbuf or provided buffer is held longer.
//!
//! **Sending.** [`Transport::write`] copies into the connection's send
//! buffer ([`Config::tx_buffer`] bytes) and returns how much it took; the
//! bytes go out at the start of the next [`Transport::poll`] (or at
//! [`Transport::flush`]) with one `send` per connection per pass, so the
//! replies to a pass's requests leave together. A write that finds the
//! buffer full takes less than it was given (or nothing), and a
//! [`Event::Writable`] follows once half the buffer is free.
//!
//! **Closing.** [`Transport::shutdown`] sends FIN after the buffered bytes
//! (the peer sees end of stream; this side still reads);
//! [`Transport::close`] does the same and frees the connection once they
//! are sent; [`Transport::abort`] resets it at once. The peer's FIN is
//! [`Event::PeerClosed`]: the bytes before it are still in the receive
//! buffer. Every connection ends with exactly one [`Event::Closed`] with
//! its [`CloseReason`], after which its [`ConnId`] is refused
//! ([`Error::NotOpen`](crate::Error::NotOpen); a slot's reuse changes its generation, so a stale
//! id never reaches another connection).
//!
//! **Timeouts.** A connect that does not complete within
//! [`Config::connect_timeout`], a connection idle (no byte either way) for
//! [`Config::idle_timeout`], and a close whose bytes cannot be sent within
//! [`Config::close_timeout`] end with [`CloseReason::TimedOut`]. Deadlines
//! sit in a heap checked once per pass; activity does not touch the heap
//! (an expired entry whose connection was active since is pushed back).
//!
//! **Sharding across lcores.** Every listener is bound with
//! `SO_REUSEPORT`, so the lcores of a program each listen on the same
//! address with their own `Transport` and the kernel spreads connections
//! over them by the 4-tuple's hash; an accepted connection lives and dies
//! on the lcore that accepted it. On a thread pinned to one CPU the
//! listener also gets `SO_INCOMING_CPU`, and the reuseport group hands a
//! connection to the listener of the CPU whose softirq took its SYN
//! rather than by the hash (Linux 6.1 and later; earlier kernels used
//! the option only outside reuseport groups and hash). So with the NIC's
//! RSS or RPS spreading flows over CPUs, each connection is served on the
//! core that received it; a test pins clients to two CPUs and checks
//! that every connection lands on the lcore of its client's CPU.
//!
//! **UDP.** [`Transport::bind_udp`] opens a datagram socket (also
//! `SO_REUSEPORT`); datagrams arrive with `recvmmsg`, up to
//! [`Config::datagram_burst`] per system call, and [`Transport::send_to`]
//! queues them for one `sendmmsg` per socket per pass. A datagram longer
//! than [`Config::datagram_size`] is counted and dropped, never delivered
//! cut short.
//!
//! **The engine.** This engine runs over the kernel's sockets with
//! edge-triggered `epoll`, non-blocking sockets and `accept4`, which works
//! everywhere: in containers whose seccomp profile refuses io_uring and
//! where raw sockets are not allowed. A pass makes one `epoll_wait` (with a
//! zero timeout: the lcore polls), one `recv` per connection that became
//! readable (a short read means the socket is drained, as Linux signals
//! every later arrival with a new edge; once epoll has reported
//! `EPOLLRDHUP`, reading goes on to the end of stream, which has no edge
//! of its own, as nginx does), and one `send` per connection with bytes
//! to send. [`Stats`] counts the system calls.

mod buf;
mod conn;
mod core;
#[allow(unsafe_code)]
mod epoll;
mod published;
pub mod stack;
mod state;
pub mod tls;
#[allow(unsafe_code)]
mod uring;

pub use self::core::Transport;
pub use self::published::{Published, PublishedStats};

use crate::backend::{Choice, Kind};
use dataplane_require::Capability;
use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// The transport's engines, in selection order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// io_uring over the kernel's sockets.
    IoUring,
    /// Edge-triggered epoll over non-blocking sockets: runs everywhere.
    Epoll,
    /// The user-space TCP/IP stack over an L2 port queue
    /// ([`Transport::over_port`]; never chosen by `auto`).
    Stack,
}

impl Kind for EngineKind {
    const SUBSYSTEM: &'static str = "transport";
    const ALL: &'static [Self] = &[EngineKind::IoUring, EngineKind::Epoll, EngineKind::Stack];

    fn name(self) -> &'static str {
        match self {
            EngineKind::IoUring => "io_uring",
            EngineKind::Epoll => "epoll",
            EngineKind::Stack => "stack",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            EngineKind::IoUring => &["io-uring", "uring"],
            EngineKind::Epoll => &["sockets"],
            EngineKind::Stack => &["user-space", "userspace"],
        }
    }

    fn capability(self) -> Option<Capability> {
        match self {
            EngineKind::IoUring => Some(Capability::IoUring),
            EngineKind::Epoll | EngineKind::Stack => None,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `SO_INCOMING_CPU` on a listener; best effort (older kernels lack it).
#[allow(unsafe_code)]
fn set_incoming_cpu(fd: &OwnedFd, cpu: i32) {
    let raw = fd.as_raw_fd();
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

/// What a [`Transport`] allows each connection and each pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The engine: `auto` (io_uring where it runs, else epoll) or one by
    /// name.
    pub engine: Choice<EngineKind>,
    /// Bytes a connection's receive buffer holds (64 KiB).
    pub rx_buffer: usize,
    /// Bytes a connection's send buffer holds (256 KiB).
    pub tx_buffer: usize,
    /// Connections open at once; a listener stops accepting at this many
    /// and the kernel's backlog holds the rest (65,536).
    pub max_connections: usize,
    /// The kernel's accept queue per listener (`listen(2)`'s backlog;
    /// 1,024, capped by `net.core.somaxconn`).
    pub backlog: i32,
    /// Connections accepted per listener per pass (64).
    pub accept_burst: usize,
    /// A connect that has not completed after this long fails (10 s).
    pub connect_timeout: Duration,
    /// A connection with no byte either way for this long is closed
    /// (none).
    pub idle_timeout: Option<Duration>,
    /// A closed connection whose buffered bytes cannot be sent within this
    /// long is reset (10 s).
    pub close_timeout: Duration,
    /// `TCP_NODELAY` on every connection (true: writes are already
    /// gathered into one send per pass).
    pub nodelay: bool,
    /// The largest datagram received or sent (2,048 bytes; at most 65,507).
    pub datagram_size: usize,
    /// Datagrams per `recvmmsg`/`sendmmsg`, and datagrams a UDP socket
    /// queues to send in one pass (32).
    pub datagram_burst: usize,
    /// io_uring: submission queue entries (1,024; the completion queue has
    /// eight times as many).
    pub ring_entries: u32,
    /// io_uring: provided receive buffers shared by the transport's
    /// connections (1,024; a power of two, at most 32,768).
    pub ring_buffers: u16,
    /// io_uring: bytes per provided receive buffer (16 KiB).
    pub ring_buffer_size: u32,
    /// io_uring: sends of at least this many bytes are zero-copy
    /// (`IORING_OP_SEND_ZC`; 64 KiB); `None` copies every send.
    pub zerocopy_min: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rx_buffer: 64 * 1024,
            tx_buffer: 256 * 1024,
            max_connections: 65_536,
            backlog: 1024,
            accept_burst: 64,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            close_timeout: Duration::from_secs(10),
            nodelay: true,
            datagram_size: 2048,
            datagram_burst: 32,
            engine: Choice::Auto,
            ring_entries: 1024,
            ring_buffers: 1024,
            ring_buffer_size: 16 * 1024,
            zerocopy_min: Some(64 * 1024),
        }
    }
}

impl Config {
    /// Refuses values no transport can run with.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the value and why.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::Config(format!("transport: {what}")));
        if self.rx_buffer == 0 || self.tx_buffer == 0 {
            return bad("rx_buffer and tx_buffer must be at least 1 byte");
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize / 2 {
            return bad("max_connections must be between 1 and 2^31 - 1");
        }
        if self.backlog < 1 {
            return bad("backlog must be at least 1");
        }
        if self.accept_burst == 0 {
            return bad("accept_burst must be at least 1");
        }
        if self.datagram_size == 0 || self.datagram_size > 65_507 {
            return bad("datagram_size must be between 1 and 65,507 bytes");
        }
        if self.datagram_burst == 0 || self.datagram_burst > 1024 {
            return bad("datagram_burst must be between 1 and 1,024");
        }
        if !(8..=32_768).contains(&self.ring_entries) {
            return bad("ring_entries must be between 8 and 32,768");
        }
        if !self.ring_buffers.is_power_of_two() || self.ring_buffers > 32_768 {
            return bad("ring_buffers must be a power of two, at most 32,768");
        }
        if !(512..=1 << 20).contains(&self.ring_buffer_size) {
            return bad("ring_buffer_size must be between 512 bytes and 1 MiB");
        }
        Ok(())
    }
}

/// A TCP connection of one [`Transport`]: a slot and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {}.{}", self.index, self.generation)
    }
}

/// A TCP listener of one [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u32);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}", self.0)
    }
}

/// A UDP socket of one [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpId(pub(crate) u32);

impl fmt::Display for UdpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp socket {}", self.0)
    }
}

/// What happened, taken with [`Transport::next_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A listener accepted a connection.
    Accepted {
        /// The listener.
        listener: ListenerId,
        /// The new connection, open for reading and writing.
        conn: ConnId,
    },
    /// A connection from [`Transport::connect`] is established.
    Connected(ConnId),
    /// Bytes arrived in the receive buffer ([`Transport::peek`]).
    Readable(ConnId),
    /// The send buffer has room again after a write took less than it was
    /// given.
    Writable(ConnId),
    /// The peer sent FIN: no byte follows those already buffered. This
    /// side may still write; [`Transport::close`] when done.
    PeerClosed(ConnId),
    /// The connection is gone; its id is no longer valid.
    Closed(ConnId, CloseReason),
    /// Datagrams arrived on a UDP socket ([`Transport::recv_from`]).
    Datagrams(UdpId),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// [`Transport::close`] and its bytes were sent.
    Local,
    /// [`Transport::abort`].
    Aborted,
    /// The peer reset it (`ECONNRESET`, `EPIPE`).
    Reset,
    /// A connect was refused or failed; the `errno`.
    ConnectFailed(i32),
    /// A timeout of [`Config`] ran out.
    TimedOut,
    /// Another error from the kernel; the `errno`.
    Error(i32),
    /// TLS failed: the peer's certificate was not trusted, the handshake
    /// or a record was malformed, or the peer sent an alert ([`tls`]).
    Tls,
}

/// One [`Transport`]'s counters since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls of [`Transport::poll`].
    pub passes: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Outbound connections that failed to connect (timeouts included).
    pub connect_failed: u64,
    /// Connections ended, for any reason.
    pub closed: u64,
    /// Connections reset by the peer.
    pub reset: u64,
    /// Connections ended by a timeout.
    pub timed_out: u64,
    /// Passes in which a listener had connections waiting but the
    /// transport held `max_connections`.
    pub accept_paused: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes received on connections.
    pub rx_bytes: u64,
    /// Bytes sent on connections.
    pub tx_bytes: u64,
    /// `recv` calls (with or without data).
    pub recv_calls: u64,
    /// `send` calls (io_uring: sends submitted).
    pub send_calls: u64,
    /// `epoll_wait` or `io_uring_enter` calls.
    pub waits: u64,
    /// io_uring: receives that found every provided buffer in use (tried
    /// again the next pass).
    pub rx_no_buffer: u64,
    /// io_uring: receives the application read in place, in the provided
    /// buffer (no copy).
    pub rx_in_place: u64,
    /// io_uring: of those, receives copied after all (bytes left at the
    /// next pass, or more arriving behind them).
    pub rx_in_place_copied: u64,
    /// Writes that took less than they were given (send buffer full).
    pub tx_full: u64,
    /// Datagrams received.
    pub datagrams_rx: u64,
    /// Datagrams sent.
    pub datagrams_tx: u64,
    /// Datagrams received longer than [`Config::datagram_size`], dropped.
    pub datagrams_truncated: u64,
    /// Datagrams refused by [`Transport::send_to`] (queue full, or longer
    /// than [`Config::datagram_size`]) or by the kernel.
    pub datagrams_tx_dropped: u64,
    /// TLS handshakes completed ([`tls`]).
    pub tls_handshakes: u64,
    /// TLS connections ended by a TLS failure ([`CloseReason::Tls`]).
    pub tls_failed: u64,
}

/// One connection's counters and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConnStats {
    /// This side's address.
    pub local: SocketAddr,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes in the receive buffer.
    pub rx_buffered: usize,
    /// Bytes in the send buffer.
    pub tx_buffered: usize,
}

#[cfg(test)]
mod tests;
