//! What both engines keep per connection, listener and UDP socket, and
//! the generation-checked slots they live in.

use super::buf::ByteBuf;
use nix::sys::socket::SockaddrStorage;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// Generations wrap at 24 bits: an io_uring `user_data` holds an op, a
/// slot and a generation in 64 bits.
pub(super) const GENERATION_MASK: u32 = 0x00ff_ffff;

/// A TCP connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The connect is in progress.
    Connecting,
    /// Established.
    Open,
    /// `close` was called: sending what is buffered, then ended.
    Closing,
    /// Ended (its `Closed` event queued); the slot waits for the kernel to
    /// finish the operations still in flight on it (io_uring only).
    Dead,
}

/// The io_uring engine's part of a connection.
#[derive(Default)]
pub(super) struct RingIo {
    /// A multishot receive is armed.
    pub(super) recv_armed: bool,
    /// Receiving is paused (cancelled) because the receive buffer is full.
    pub(super) recv_paused: bool,
    /// Provided buffers received but not yet copied into `rx`: buffer id,
    /// length, bytes of it already copied.
    pub(super) pending: VecDeque<(u16, u32, u32)>,
    /// A provided buffer whose bytes the application reads in place (the
    /// receive buffer and `pending` are empty then): buffer id, length,
    /// bytes of it consumed. Given back when consumed, or copied into
    /// `rx` at the start of the next pass.
    pub(super) lent: Option<(u16, u32, u32)>,
    /// The bytes of the send in flight (pinned until it completes, and for
    /// a zero-copy send until its notification).
    pub(super) flight: Option<ByteBuf>,
    /// A send (or its zero-copy notification) is in flight.
    pub(super) sending: bool,
    /// The zero-copy send completed and its notification has not come.
    pub(super) notif_pending: bool,
    /// Bytes of `flight` a zero-copy send sent, dropped from it only when
    /// the notification says the kernel no longer reads them.
    pub(super) zc_sent: usize,
    /// Operations in flight on this connection: the slot is freed when the
    /// last one completes after the connection ended.
    pub(super) ops: u32,
    /// The peer's FIN arrived behind bytes still in `pending`.
    pub(super) fin_pending: bool,
    /// The address of a connect in flight.
    pub(super) connect_to: Option<Box<SockaddrStorage>>,
}

pub(super) struct Conn {
    pub(super) fd: OwnedFd,
    pub(super) generation: u32,
    pub(super) phase: Phase,
    /// The peer, when known without a system call (connect's target).
    pub(super) peer: Option<SocketAddr>,
    pub(super) rx: ByteBuf,
    pub(super) tx: ByteBuf,
    /// In the `dirty` list.
    pub(super) queued_dirty: bool,
    /// The peer's FIN arrived.
    pub(super) peer_closed: bool,
    /// `shutdown` or `close` asked for: FIN once `tx` is empty.
    pub(super) shut_wanted: bool,
    pub(super) shut_done: bool,
    /// A write took less than it was given: `Writable` when room returns.
    pub(super) tx_was_full: bool,
    /// The pass in which the last `Readable` was queued.
    pub(super) readable_pass: u64,
    /// When it was last active or (connecting, closing) when it started
    /// to, in ns since the transport's start.
    pub(super) since_ns: u64,
    /// In the timer heap with this deadline (u64::MAX: not in it).
    pub(super) timer_ns: u64,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    // epoll's readiness.
    pub(super) can_read: bool,
    pub(super) can_write: bool,
    pub(super) queued_read: bool,
    /// epoll reported `EPOLLRDHUP`, `EPOLLHUP` or `EPOLLERR`.
    pub(super) hangup: bool,
    pub(super) ring: RingIo,
}

impl Conn {
    pub(super) fn new(
        fd: OwnedFd,
        generation: u32,
        phase: Phase,
        peer: Option<SocketAddr>,
        rx: usize,
        tx: usize,
        now: u64,
    ) -> Self {
        Self {
            fd,
            generation,
            phase,
            peer,
            rx: ByteBuf::new(rx),
            tx: ByteBuf::new(tx),
            queued_dirty: false,
            peer_closed: false,
            shut_wanted: false,
            shut_done: false,
            tx_was_full: false,
            readable_pass: u64::MAX,
            since_ns: now,
            timer_ns: u64::MAX,
            rx_bytes: 0,
            tx_bytes: 0,
            can_read: false,
            can_write: false,
            queued_read: false,
            hangup: false,
            ring: RingIo::default(),
        }
    }

    /// Open for the application: not closing, not ended.
    pub(super) fn usable(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Open)
    }
}

pub(super) struct Listener {
    pub(super) fd: OwnedFd,
    pub(super) local: SocketAddr,
    /// io_uring: a multishot accept is armed.
    pub(super) armed: bool,
}

pub(super) struct Udp {
    pub(super) fd: OwnedFd,
    pub(super) local: SocketAddr,
    pub(super) can_read: bool,
    pub(super) queued_read: bool,
    pub(super) queued_dirty: bool,
    /// io_uring: a multishot poll is armed.
    pub(super) armed: bool,
    /// Received datagrams, `datagram_size` bytes apart in `rx_data`;
    /// `rx` lists (peer, length) of those not yet taken, from `rx_next`.
    pub(super) rx_data: Vec<u8>,
    pub(super) rx: Vec<(SocketAddr, usize)>,
    pub(super) rx_next: usize,
    /// Datagrams to send, `datagram_size` bytes apart in `tx_data`.
    pub(super) tx_data: Vec<u8>,
    pub(super) tx: Vec<(SocketAddr, usize)>,
}

/// Slots with a generation each; a freed slot's generation moves on so a
/// stale id is refused.
pub(super) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    pub(super) len: usize,
}

impl<T> Slab<T> {
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The slot and generation the next [`Self::insert`] takes.
    pub(super) fn vacant(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&i) => (i, self.slots[i as usize].0),
            None => (self.slots.len() as u32, 0),
        }
    }

    pub(super) fn insert(&mut self, make: impl FnOnce(u32) -> T) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.1 = Some(make(slot.0));
        self.len += 1;
        (index, slot.0)
    }

    pub(super) fn get(&self, index: u32, generation: u32) -> Option<&T> {
        match self.slots.get(index as usize) {
            Some((g, Some(t))) if *g == generation => Some(t),
            _ => None,
        }
    }

    /// The slot's occupant, whatever its generation.
    pub(super) fn get_index_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots
            .get_mut(index as usize)
            .and_then(|s| s.1.as_mut())
    }

    /// The slot's occupant, whatever its generation.
    pub(super) fn get_index(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize).and_then(|s| s.1.as_ref())
    }

    pub(super) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        match self.slots.get_mut(index as usize) {
            Some((g, Some(t))) if *g == generation => Some(t),
            _ => None,
        }
    }

    pub(super) fn remove(&mut self, index: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        let t = slot.1.take()?;
        slot.0 = (slot.0 + 1) & GENERATION_MASK;
        self.free.push(index);
        self.len -= 1;
        Some(t)
    }

    /// Every slot ever made (the highest index + 1).
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }
}
