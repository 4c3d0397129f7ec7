//! Channels: the rings with a sender/receiver face (disconnection, waiting
//! with a deadline), for links between workers and from ordinary threads.
//!
//! ```
//! use dataplane::channel::Channel;
//!
//! let (tx, mut rx) = Channel::mpsc::<u32>(1024);
//! let tx2 = tx.clone();
//! std::thread::spawn(move || tx2.send(7)).join().unwrap()?;
//! tx.send(8)?;
//! assert_eq!(rx.recv(), Ok(7));
//! assert_eq!(rx.try_recv(), Ok(8));
//! drop(tx);
//! assert!(rx.recv().is_err(), "every sender is gone");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each side has three ways to move a value, as crossbeam's and flume's
//! channels do: `send`/`recv` wait (for room, for a value) and fail only
//! when the other side is gone; `try_send`/`try_recv` never wait
//! ([`SendError::Full`] hands the value back); `send_timeout`/
//! `recv_timeout` wait up to a deadline. A waiting thread spins briefly,
//! then parks (no busy wait), and the side that moves an item wakes it;
//! that costs the moving side a compiler fence and one read of a line it
//! shares with nobody writing (see `wait.rs`). An lcore should use the
//! `try_` forms or bursts: a poll loop must not sleep.
//!
//! Capacities are rounded up to a power of two, as the rings need (a
//! channel asked for 100 holds 128), and [`Channel::mpsc_unbounded`] never
//! pushes back, at the price of a locked overflow queue while its ring is
//! full.

use crate::ring::{
    self, Batch, LaneError, LanesRx, LanesTx, Multi, PushError, Single, Sink, Source,
};
use hugepages::sync::Arc;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod wait;
pub(crate) use wait::Waiters;

/// A value that could not be sent, handed back: channels and worker pools
/// push back instead of dropping.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is full.
    Full(T),
    /// Every receiver is gone, or the pool has stopped: the value would
    /// never be read.
    Disconnected(T),
    /// The target worker failed and its restart policy gave up on it.
    Failed {
        /// The value.
        value: T,
        /// The worker's index.
        worker: usize,
    },
    /// The partitioner answered an index that is not a worker.
    NoOwner {
        /// The value.
        value: T,
        /// What the partitioner answered.
        index: usize,
        /// Workers in the pool.
        workers: usize,
    },
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(v) | SendError::Disconnected(v) => v,
            SendError::Failed { value, .. } | SendError::NoOwner { value, .. } => value,
        }
    }

    /// Whether waiting could help (the queue was only full).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("queue is full"),
            SendError::Disconnected(_) => f.write_str("no receiver: disconnected or stopped"),
            SendError::Failed { worker, .. } => write!(f, "worker {worker} has failed"),
            SendError::NoOwner { index, workers, .. } => {
                write!(
                    f,
                    "key has no owner: partitioner answered {index} of {workers} workers"
                )
            }
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> From<SendError<T>> for crate::Error {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::Full(_) => crate::Error::Full("queue".into()),
            SendError::Disconnected(_) => crate::Error::Stopped("receiver".into()),
            SendError::Failed { worker, .. } => crate::Error::WorkerFailed {
                worker,
                reason: "restart policy gave up".into(),
            },
            SendError::NoOwner { index, workers, .. } => crate::Error::NoOwner { index, workers },
        }
    }
}

/// Nothing to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Empty for now.
    #[error("channel is empty")]
    Empty,
    /// Empty, and every sender is gone: nothing will ever arrive.
    #[error("channel is empty and has no sender")]
    Disconnected,
}

/// A receive that waited and got nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// The deadline passed.
    #[error("timed out waiting on channel")]
    Timeout,
    /// Empty, and every sender is gone.
    #[error("channel is empty and has no sender")]
    Disconnected,
}

/// A blocking receive that cannot succeed: the channel is empty and every
/// sender is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel is empty and has no sender")]
pub struct RecvError;

/// The two sides' waiting threads, shared by every handle of a channel.
#[derive(Debug, Default)]
struct Link {
    /// Receivers waiting for a value.
    rx: Waiters,
    /// Senders waiting for room.
    tx: Waiters,
}

/// A sender's share of the link: dropped after the sender's ring handle
/// (fields drop in order), it wakes the receivers, who then see the
/// disconnection.
#[derive(Debug)]
struct SenderLink(Arc<Link>);

impl Drop for SenderLink {
    fn drop(&mut self) {
        self.0.rx.notify();
    }
}

/// A receiver's share of the link: wakes waiting senders when dropped.
#[derive(Debug)]
struct ReceiverLink(Arc<Link>);

impl Drop for ReceiverLink {
    fn drop(&mut self) {
        self.0.tx.notify();
    }
}

/// The ring size for a requested capacity: the next power of two, at
/// least 1.
///
/// # Panics
/// Past `usize::MAX / 2` slots, as `Vec::with_capacity` would.
fn ring_size(capacity: usize) -> usize {
    capacity
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or_else(|| panic!("channel capacity {capacity} overflows"))
}

/// The constructors.
#[derive(Debug)]
pub struct Channel;

/// A bounded channel's two ends.
pub type Pair<T, P, C> = (Sender<T, P>, Receiver<T, C>);

impl Channel {
    /// One sender, one receiver, holding `capacity` values rounded up to a
    /// power of two.
    ///
    /// A value of at most 8 bytes travels beside the stamp that publishes
    /// it, so a receiver waiting for it reads one line the sender wrote
    /// (docs/architecture.md, Rings): about twice the speed of a ring that
    /// publishes a tail when the receiver keeps up with the sender.
    ///
    /// # Panics
    /// For a capacity past `usize::MAX / 2`, as `Vec::with_capacity`.
    pub fn spsc<T>(capacity: usize) -> Pair<T, Single, Single> {
        let (p, c) =
            ring::spsc_stamped(ring_size(capacity)).unwrap_or_else(|e| unreachable!("{e}"));
        Self::pair(p, c, None)
    }

    /// Both ends around one link.
    fn pair<T, P: ring::Mode, C: ring::Mode>(
        p: ring::Producer<T, P>,
        c: ring::Consumer<T, C>,
        lanes: Option<(LanesTx<T>, LanesRx<T>)>,
    ) -> Pair<T, P, C> {
        let link = Arc::new(Link::default());
        let (lt, lr) = lanes.unzip();
        (
            Sender::new(p, lt, SenderLink(link.clone())),
            Receiver::new(c, lr, ReceiverLink(link)),
        )
    }

    /// Any number of senders, one receiver.
    ///
    /// One multi-producer ring: values arrive in the order their sends
    /// took effect, across threads too (a value sent after another thread's
    /// send returned, e.g. after joining it, arrives after that thread's).
    ///
    /// The capacity is rounded up to a power of two.
    ///
    /// # Panics
    /// As [`spsc`](Self::spsc).
    pub fn mpsc<T>(capacity: usize) -> Pair<T, Multi, Single> {
        let (p, c) = ring::mpsc(ring_size(capacity)).unwrap_or_else(|e| unreachable!("{e}"));
        Self::pair(p, c, None)
    }

    /// Any number of senders, one receiver, each sending thread on a lane
    /// of its own: a single-producer ring of `capacity` slots, made on the
    /// thread's first send. No send waits on another thread or pays for a
    /// reservation shared with them (a multi-producer ring's locked
    /// instruction per send), so this is the channel for many threads, or
    /// threads that share cores; the receiver takes from the lanes in turn.
    ///
    /// What it gives up against [`mpsc`](Self::mpsc):
    /// - **Order across threads.** Each thread's values arrive in the order
    ///   it sent them; values of different threads may arrive in any
    ///   order, even when one send happened before the other (a thread that
    ///   joins the senders and then sends a last value may see it received
    ///   before theirs).
    /// - **One bound for all.** `capacity` bounds what each thread has
    ///   queued: a thread whose lane is full is pushed back while others
    ///   have room.
    ///
    /// Threads beyond the process's lane ids (128 sending at once) share one
    /// multi-producer ring of `capacity` slots instead.
    ///
    /// ```
    /// use dataplane::channel::Channel;
    ///
    /// let (tx, mut rx) = Channel::mpsc_per_thread::<u64>(1024);
    /// std::thread::scope(|s| {
    ///     for t in 0..4 {
    ///         let tx = &tx;
    ///         s.spawn(move || (0..100).for_each(|i| tx.send(t * 1000 + i).unwrap()));
    ///     }
    /// });
    /// let mut got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    /// assert_eq!(got.len(), 400);
    /// got.sort();
    /// assert_eq!(got[..3], [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    /// As [`spsc`](Self::spsc).
    pub fn mpsc_per_thread<T>(capacity: usize) -> Pair<T, Multi, Single> {
        let size = ring_size(capacity);
        let (p, c) = ring::mpsc(size).unwrap_or_else(|e| unreachable!("{e}"));
        let lanes = ring::lanes(size).unwrap_or_else(|e| unreachable!("{e}"));
        Self::pair(p, c, Some(lanes))
    }

    /// Any number of senders and receivers.
    ///
    /// The capacity is rounded up to a power of two.
    ///
    /// # Panics
    /// As [`spsc`](Self::spsc).
    pub fn mpmc<T>(capacity: usize) -> Pair<T, Multi, Multi> {
        let (p, c) = ring::mpmc(ring_size(capacity)).unwrap_or_else(|e| unreachable!("{e}"));
        Self::pair(p, c, None)
    }

    /// Any number of senders, one receiver, never full: a ring of
    /// [`UNBOUNDED_RING`] slots, and a locked overflow queue used only
    /// while the ring is full.
    pub fn mpsc_unbounded<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
        let (p, c) = ring::mpsc(UNBOUNDED_RING).unwrap_or_else(|_| unreachable!("a power of two"));
        let shared = std::sync::Arc::new(Overflow {
            overflowing: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        });
        let link = Arc::new(Link::default());
        (
            UnboundedSender {
                ring: p,
                shared: shared.clone(),
                link: SenderLink(link.clone()),
            },
            UnboundedReceiver {
                ring: c,
                shared,
                taken: VecDeque::new(),
                link: ReceiverLink(link),
            },
        )
    }
}

/// A per-thread channel's receiver looks at its shared ring (threads
/// without a lane) first once in this many takes, at its lanes first
/// otherwise.
const RING_TURN: u32 = 8;

/// The fast-path ring size of unbounded channels (64 under Miri, whose
/// interpreter would otherwise spend most of a test filling the ring
/// before the overflow path the tests are after is reached).
pub const UNBOUNDED_RING: usize = if cfg!(miri) { 64 } else { 4096 };

/// The sending end of a bounded channel. `Sender<T, Multi>` (plain
/// `Sender<T>`) is `Clone + Sync`; `Sender<T, Single>` is neither.
pub struct Sender<T, M: ring::Mode = Multi> {
    /// Also counts the senders, for disconnection, when lanes carry the
    /// values.
    ring: ring::Producer<T, M>,
    /// `Channel::mpsc_per_thread`: the sending threads' lanes.
    lanes: Option<LanesTx<T>>,
    /// Last: dropped after `ring`, so that woken receivers see the count.
    link: SenderLink,
}

/// The receiving end of a bounded channel (plain `Receiver<T>`: the one
/// receiver of an `mpsc` channel).
pub struct Receiver<T, M: ring::Mode = Single> {
    ring: ring::Consumer<T, M>,
    /// `Channel::mpsc_per_thread`: the sending threads' lanes.
    lanes: Option<LanesRx<T>>,
    /// Takes so far; every [`RING_TURN`]th looks at the shared ring
    /// before the lanes, so that neither starves the other.
    takes: u32,
    /// Last, as in `Sender`.
    link: ReceiverLink,
}

impl<T, M: ring::Mode> fmt::Debug for Sender<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("ring", &self.ring)
            .field("lanes", &self.lanes.is_some())
            .finish()
    }
}

impl<T, M: ring::Mode> fmt::Debug for Receiver<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("ring", &self.ring)
            .field("lanes", &self.lanes.is_some())
            .finish()
    }
}

impl<T, M: ring::Mode> Sender<T, M> {
    fn new(ring: ring::Producer<T, M>, lanes: Option<LanesTx<T>>, link: SenderLink) -> Self {
        Sender { ring, lanes, link }
    }
}

impl<T, M: ring::Mode> Receiver<T, M> {
    fn new(ring: ring::Consumer<T, M>, lanes: Option<LanesRx<T>>, link: ReceiverLink) -> Self {
        Receiver {
            ring,
            lanes,
            takes: 0,
            link,
        }
    }

    fn queued(&self) -> usize {
        self.ring.len() + self.lanes.as_ref().map_or(0, LanesRx::len)
    }
}

impl<T> Clone for Sender<T, Multi> {
    fn clone(&self) -> Self {
        Sender::new(
            self.ring.clone(),
            self.lanes.clone(),
            SenderLink(self.link.0.clone()),
        )
    }
}

impl<T> Clone for Receiver<T, Multi> {
    fn clone(&self) -> Self {
        // A multi-consumer channel has no lanes.
        Receiver::new(self.ring.clone(), None, ReceiverLink(self.link.0.clone()))
    }
}

/// A deadline `timeout` from now (none for one too far to represent).
fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

macro_rules! sender_ops {
    ([$($recv:tt)+] $self:ident) => {
        /// Sends `value`, waiting for room while the channel is full (the
        /// thread parks after a short spin).
        ///
        /// # Errors
        /// [`SendError::Disconnected`] with the value when every receiver
        /// is gone.
        #[inline]
        pub fn send($($recv)+ $self, value: T) -> Result<(), SendError<T>> {
            match $self.try_send(value) {
                Err(SendError::Full(v)) => $self.send_waiting(v, None),
                r => r,
            }
        }

        /// Sends `value` if there is room now; never waits.
        ///
        /// # Errors
        /// [`SendError::Full`] or [`SendError::Disconnected`] with the value.
        #[inline]
        pub fn try_send($($recv)+ $self, value: T) -> Result<(), SendError<T>> {
            if $self.ring.is_abandoned() {
                return Err(SendError::Disconnected(value));
            }
            let value = match &$self.lanes {
                Some(lanes) => match lanes.push(value) {
                    Ok(()) => {
                        $self.link.0.rx.notify();
                        return Ok(());
                    }
                    Err(LaneError::Full(v)) => return Err(SendError::Full(v)),
                    Err(LaneError::NoLane(v)) => v,
                },
                None => value,
            };
            match $self.ring.push(value) {
                Ok(()) => {
                    $self.link.0.rx.notify();
                    Ok(())
                }
                Err(PushError::Full(v)) => Err(SendError::Full(v)),
            }
        }

        /// Sends `value`, waiting up to `timeout` for room.
        ///
        /// # Errors
        /// [`SendError::Full`] after the wait, or
        /// [`SendError::Disconnected`], with the value.
        pub fn send_timeout($($recv)+ $self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
            match $self.try_send(value) {
                Err(SendError::Full(v)) => $self.send_waiting(v, deadline(timeout)),
                r => r,
            }
        }

        #[cold]
        #[inline(never)]
        fn send_waiting($($recv)+ $self, value: T, deadline: Option<Instant>) -> Result<(), SendError<T>> {
            let link = $self.link.0.clone();
            link.tx.send(deadline, value, |v| $self.try_send(v))
        }

        /// Sends as many items of `src` as fit now; returns how many. The
        /// rest stay in `src`.
        #[inline]
        pub fn send_burst<S: Source<T>>($($recv)+ $self, src: S) -> usize {
            let src = match &$self.lanes {
                Some(lanes) => match lanes.push_burst(src) {
                    Ok(n) => {
                        if n > 0 {
                            $self.link.0.rx.notify();
                        }
                        return n;
                    }
                    Err(src) => src,
                },
                None => src,
            };
            let n = $self.ring.push_burst(src);
            if n > 0 {
                $self.link.0.rx.notify();
            }
            n
        }

        /// Whether every receiver is gone.
        pub fn is_disconnected(&self) -> bool {
            self.ring.is_abandoned()
        }

        /// Items waiting now (every sender's, for `Channel::mpsc_per_thread`).
        pub fn len(&self) -> usize {
            self.ring.len() + self.lanes.as_ref().map_or(0, LanesTx::len)
        }

        /// Whether nothing is waiting now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// How many values the channel holds (the requested capacity
        /// rounded up to a power of two; per sending thread for
        /// `Channel::mpsc_per_thread`).
        pub fn capacity(&self) -> usize {
            self.ring.capacity()
        }
    };
}

impl<T> Sender<T, Single> {
    sender_ops!([&mut] self);
}

impl<T> Sender<T, Multi> {
    sender_ops!([&] self);
}

macro_rules! receiver_ops {
    ([$($recv:tt)+] $self:ident) => {
        /// Takes one value, waiting while the channel is empty (the thread
        /// parks after a short spin).
        ///
        /// # Errors
        /// [`RecvError`] when the channel is empty and every sender gone.
        #[inline]
        pub fn recv($($recv)+ $self) -> Result<T, RecvError> {
            match $self.try_recv() {
                Ok(v) => Ok(v),
                Err(TryRecvError::Disconnected) => Err(RecvError),
                Err(TryRecvError::Empty) => match $self.recv_waiting(None) {
                    Ok(v) => Ok(v),
                    Err(_) => Err(RecvError),
                },
            }
        }

        /// Takes one value if there is one; never waits.
        ///
        /// # Errors
        /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] when
        /// empty with every sender gone.
        #[inline]
        pub fn try_recv($($recv)+ $self) -> Result<T, TryRecvError> {
            if let Some(v) = $self.take() {
                $self.link.0.tx.notify();
                return Ok(v);
            }
            // Senders gone: one more look, since their last pushes
            // happen-before the count reaching zero.
            if $self.ring.is_abandoned() {
                return $self.take().ok_or(TryRecvError::Disconnected);
            }
            Err(TryRecvError::Empty)
        }

        /// Waits up to `timeout` for a value.
        ///
        /// # Errors
        /// [`RecvTimeoutError::Timeout`], or
        /// [`RecvTimeoutError::Disconnected`] when every sender is gone.
        pub fn recv_timeout($($recv)+ $self, timeout: Duration) -> Result<T, RecvTimeoutError> {
            match $self.try_recv() {
                Ok(v) => Ok(v),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => $self.recv_waiting(deadline(timeout)),
            }
        }

        #[cold]
        #[inline(never)]
        fn recv_waiting($($recv)+ $self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
            let link = $self.link.0.clone();
            link.rx.recv(deadline, || $self.try_recv())
        }

        /// Takes as many values as `dst` has room for now; returns how
        /// many. (A `Channel::mpsc_per_thread` receiver takes them from one
        /// sending thread's lane, or from the shared ring, per call.)
        #[inline]
        pub fn recv_burst<D: Sink<T>>($($recv)+ $self, dst: D) -> usize {
            let n = $self.take_burst(dst);
            if n > 0 {
                $self.link.0.tx.notify();
            }
            n
        }

        /// Whether every sender is gone (values may still be waiting).
        pub fn is_disconnected(&self) -> bool {
            self.ring.is_abandoned()
        }

        /// Items waiting now.
        pub fn len(&self) -> usize {
            self.queued()
        }

        /// Whether nothing is waiting now.
        pub fn is_empty(&self) -> bool {
            self.queued() == 0
        }
    };
}

impl<T> Receiver<T, Single> {
    receiver_ops!([&mut] self);

    /// One value from the lanes or the ring, each first in turn.
    #[inline]
    fn take(&mut self) -> Option<T> {
        let Some(lanes) = self.lanes.as_mut() else {
            return self.ring.pop();
        };
        self.takes = self.takes.wrapping_add(1);
        if !self.takes.is_multiple_of(RING_TURN) {
            lanes.pop().or_else(|| self.ring.pop())
        } else {
            self.ring.pop().or_else(|| lanes.pop())
        }
    }

    #[inline]
    fn take_burst<D: Sink<T>>(&mut self, dst: D) -> usize {
        let Some(lanes) = self.lanes.as_mut() else {
            return self.ring.pop_burst(dst);
        };
        self.takes = self.takes.wrapping_add(1);
        // A sink that may be overwritten from its start (a slice) takes one
        // burst: from the first of the two that has something.
        if !self.takes.is_multiple_of(RING_TURN) || !self.ring.has_items() {
            match lanes.pop_burst_one(dst) {
                Ok(n) => n,
                Err(dst) => self.ring.pop_burst(dst),
            }
        } else {
            self.ring.pop_burst(dst)
        }
    }
}

impl<T> Receiver<T, Multi> {
    receiver_ops!([&] self);

    #[inline]
    fn take(&self) -> Option<T> {
        self.ring.pop()
    }

    #[inline]
    fn take_burst<D: Sink<T>>(&self, dst: D) -> usize {
        self.ring.pop_burst(dst)
    }
}

// ---- unbounded --------------------------------------------------------------

#[derive(Debug)]
struct Overflow<T> {
    /// Set while messages wait in `queue`; senders then skip the ring so
    /// that a sender's later message never overtakes its earlier one.
    overflowing: AtomicBool,
    queue: Mutex<VecDeque<T>>,
}

impl<T> Overflow<T> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the lock cannot leave the deque torn
        // (push_back/drain are not interrupted by user code), so a poisoned
        // lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending end of an unbounded channel: `Clone + Sync`.
#[derive(Debug)]
pub struct UnboundedSender<T> {
    ring: ring::Producer<T, Multi>,
    shared: std::sync::Arc<Overflow<T>>,
    /// Last: dropped after `ring` (see `Sender`).
    link: SenderLink,
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender {
            ring: self.ring.clone(),
            shared: self.shared.clone(),
            link: SenderLink(self.link.0.clone()),
        }
    }
}

impl<T> UnboundedSender<T> {
    /// Sends `value`; never waits, and fails only when the receiver is
    /// gone.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] with the value.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.ring.is_abandoned() {
            return Err(SendError::Disconnected(value));
        }
        // Acquire: pairs with the receiver's Release clear; once clear, the
        // receiver has taken everything that was queued.
        let value = if self.shared.overflowing.load(Ordering::Acquire) {
            value
        } else {
            match self.ring.push(value) {
                Ok(()) => {
                    self.link.0.rx.notify();
                    return Ok(());
                }
                Err(PushError::Full(v)) => v,
            }
        };
        let mut q = self.shared.lock();
        // Under the lock: the receiver clears the flag only under it too.
        self.shared.overflowing.store(true, Ordering::Release);
        q.push_back(value);
        drop(q);
        self.link.0.rx.notify();
        Ok(())
    }

    /// The same as [`send`](Self::send): an unbounded channel is never
    /// full.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] with the value.
    pub fn try_send(&self, value: T) -> Result<(), SendError<T>> {
        self.send(value)
    }

    /// Whether the receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        self.ring.is_abandoned()
    }
}

/// The receiving end of an unbounded channel.
#[derive(Debug)]
pub struct UnboundedReceiver<T> {
    ring: ring::Consumer<T, Single>,
    shared: std::sync::Arc<Overflow<T>>,
    /// Values taken from the ring and the overflow queue together, in an
    /// order that keeps each sender's order.
    taken: VecDeque<T>,
    /// Last: dropped after `ring` (see `Sender`).
    link: ReceiverLink,
}

impl<T> UnboundedReceiver<T> {
    /// Takes one value, waiting while the channel is empty (the thread
    /// parks after a short spin).
    ///
    /// # Errors
    /// [`RecvError`] when the channel is empty and every sender gone.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Takes one value if there is one.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] when
    /// empty with every sender gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if let Some(v) = self.take() {
            return Ok(v);
        }
        if self.ring.is_abandoned() {
            // Every sender is gone, and their last pushes (ring or
            // overflow) happen-before the count reaching zero: one more
            // look finds them.
            return self.take().ok_or(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    fn take(&mut self) -> Option<T> {
        if let Some(v) = self.taken.pop_front() {
            return Some(v);
        }
        if let Some(v) = self.ring.pop() {
            return Some(v);
        }
        if self.shared.overflowing.load(Ordering::Acquire) {
            let mut q = self.shared.lock();
            // Every ring push a sender made before its first overflow push
            // has completed (same thread), though it may still be hidden
            // behind another sender's push in flight: take everything
            // reserved so far first, then the queue. Senders are held off
            // the ring until the flag clears below, so nothing newer slips
            // in between.
            let taken = &mut self.taken;
            self.ring.drain_reserved(|v| taken.push_back(v));
            self.taken.extend(q.drain(..));
            self.shared.overflowing.store(false, Ordering::Release);
            drop(q);
            return self.taken.pop_front();
        }
        None
    }

    /// Waits up to `timeout` for a value.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or [`RecvTimeoutError::Disconnected`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline(timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let link = self.link.0.clone();
        link.rx.recv(deadline, || self.try_recv())
    }

    /// Takes up to `N - len` values into `dst`; returns how many.
    pub fn recv_burst<const N: usize>(&mut self, dst: &mut Batch<T, N>) -> usize {
        let mut n = 0;
        while !dst.is_full() {
            match self.try_recv() {
                Ok(v) => {
                    let _ = dst.push(v);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_pushes_back_and_reports_disconnection() {
        let (mut tx, mut rx) = Channel::spsc::<String>(2);
        tx.send("a".into()).unwrap();
        tx.try_send("b".into()).unwrap();
        assert!(matches!(tx.try_send("c".into()), Err(SendError::Full(s)) if s == "c"));
        assert_eq!(rx.try_recv().unwrap(), "a");
        drop(tx);
        assert_eq!(
            rx.try_recv().unwrap(),
            "b",
            "values sent before the drop still arrive"
        );
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        );

        let (tx, rx) = Channel::mpmc::<u8>(4);
        drop(rx);
        assert!(matches!(tx.send(1), Err(SendError::Disconnected(1))));
        assert!(matches!(tx.try_send(1), Err(SendError::Disconnected(1))));
        // Capacities round up to a power of two.
        assert_eq!(Channel::mpsc::<u8>(3).0.capacity(), 4);
        assert_eq!(Channel::mpsc::<u8>(100).0.capacity(), 128);
        assert_eq!(Channel::spsc::<u8>(0).0.capacity(), 1);
    }

    #[test]
    fn timeouts_wait_and_give_up() {
        let (tx, mut rx) = Channel::mpsc::<u32>(1);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(2)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(1).unwrap();
        assert!(matches!(
            tx.send_timeout(2, Duration::from_millis(2)),
            Err(SendError::Full(2))
        ));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            // Keeps `rx` alive until the second value arrives: dropping it
            // would (rightly) disconnect the waiting sender.
            (rx.try_recv(), rx.recv_timeout(Duration::from_secs(5)))
        });
        tx.send_timeout(3, Duration::from_secs(5)).unwrap();
        assert_eq!(t.join().unwrap(), (Ok(1), Ok(3)));
    }

    #[test]
    fn unbounded_keeps_each_senders_order_through_the_overflow() {
        // Under Miri the ring holds 64: 3 x 200 sends still overflow it.
        const PER: u64 = if cfg!(miri) { 200 } else { 50_000 };
        let (tx, mut rx) = Channel::mpsc_unbounded::<(u8, u64)>();
        let senders: Vec<_> = (0..3u8)
            .map(|id| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for s in 0..PER {
                        tx.send((id, s)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u64; 3];
        let mut got = 0;
        loop {
            match rx.try_recv() {
                Ok((id, s)) => {
                    assert_eq!(s, next[id as usize], "sender {id} out of order");
                    next[id as usize] += 1;
                    got += 1;
                }
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(got, 3 * PER, "nothing lost");
    }

    /// Per-thread lanes: each sender's order kept, nothing lost, a full
    /// lane pushes back, disconnection seen only after every value sent
    /// before the last sender went was received, bursts into a batch and
    /// into a slice.
    #[test]
    fn per_thread_lanes_keep_each_senders_order_and_see_disconnection() {
        const PER: u64 = if cfg!(miri) { 500 } else { 40_000 };
        let (tx, mut rx) = Channel::mpsc_per_thread::<(u8, u64)>(64);
        for s in 0..64 {
            tx.send((9, s)).unwrap();
        }
        assert!(
            tx.try_send((9, 64)).is_err_and(|e| e.is_full()),
            "a full lane pushes back"
        );
        assert_eq!(rx.len(), 64);
        let senders: Vec<_> = (0..3u8)
            .map(|id| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut s = 0;
                    while s < PER {
                        if s % 5 == 0 {
                            let burst = [(id, s), (id, s + 1)];
                            s += tx.send_burst(&burst[..]) as u64;
                            continue;
                        }
                        match tx.try_send((id, s)) {
                            Ok(()) => s += 1,
                            Err(e) if e.is_full() => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u64; 10];
        let mut got = 0;
        let mut batch = Batch::<(u8, u64), 16>::new();
        let mut slice = [(0u8, 0u64); 8];
        let mut check = |(id, s): (u8, u64)| {
            assert_eq!(s, next[id as usize], "sender {id} out of order");
            next[id as usize] += 1;
            got += 1;
        };
        for round in 0u64.. {
            let n = match round % 3 {
                0 => match rx.try_recv() {
                    Ok(v) => {
                        check(v);
                        1
                    }
                    Err(TryRecvError::Empty) => 0,
                    Err(TryRecvError::Disconnected) => break,
                },
                1 => {
                    let n = rx.recv_burst(&mut batch);
                    batch.drain().for_each(&mut check);
                    n
                }
                _ => {
                    let n = rx.recv_burst(&mut slice[..]);
                    slice[..n].iter().copied().for_each(&mut check);
                    n
                }
            };
            if n == 0 {
                std::thread::yield_now();
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(got, 3 * PER + 64, "nothing lost");
    }

    #[test]
    fn unbounded_never_refuses_while_the_receiver_lives() {
        let (tx, mut rx) = Channel::mpsc_unbounded::<u32>();
        for i in 0..(UNBOUNDED_RING as u32 * 3) {
            tx.send(i).unwrap();
        }
        let mut b = Batch::<u32, 64>::new();
        let mut expect = 0;
        while rx.recv_burst(&mut b) > 0 {
            for v in b.drain() {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        assert_eq!(expect, UNBOUNDED_RING as u32 * 3);
        drop(rx);
        assert!(matches!(tx.send(1), Err(SendError::Disconnected(1))));
    }

    /// Blocking sends and receives across threads, every mode: nothing
    /// lost, each sender's order kept, and a receiver parked on an empty
    /// channel (or a sender on a full one) woken by the other side,
    /// including by its disconnection.
    #[test]
    fn blocking_send_and_recv_wake_each_other() {
        const N: u64 = if cfg!(miri) { 300 } else { 200_000 };
        // A ring of 4 keeps both sides parking and waking all the time.
        let (mut tx, mut rx) = Channel::spsc::<u64>(4);
        let t = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(i).unwrap();
            }
        });
        for i in 0..N {
            assert_eq!(rx.recv(), Ok(i));
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError), "the sender is gone");

        let (tx, rx) = Channel::mpmc::<(u8, u64)>(4);
        let senders: Vec<_> = (0..3u8)
            .map(|id| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for s in 0..N / 4 {
                        tx.send((id, s)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while rx.recv().is_ok() {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut got = 0;
        while rx.recv().is_ok() {
            got += 1;
        }
        for s in senders {
            s.join().unwrap();
        }
        got += receivers
            .into_iter()
            .map(|r| r.join().unwrap())
            .sum::<u64>();
        assert_eq!(got, 3 * (N / 4), "nothing lost, every receiver let go");

        let (tx, mut rx) = Channel::mpsc_unbounded::<u64>();
        let t = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(i).unwrap();
            }
        });
        for i in 0..N {
            assert_eq!(rx.recv(), Ok(i));
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError));
    }

    /// A thread parked in `recv` wakes when the last sender drops; one
    /// parked in `send` wakes when the receiver drops.
    #[test]
    fn disconnection_wakes_parked_threads() {
        let (tx, mut rx) = Channel::mpsc::<u8>(2);
        let t = std::thread::spawn(move || rx.recv());
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        assert_eq!(t.join().unwrap(), Err(RecvError));

        let (mut tx, rx) = Channel::spsc::<u8>(1);
        tx.send(1).unwrap();
        let t = std::thread::spawn(move || tx.send(2));
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert!(matches!(t.join().unwrap(), Err(SendError::Disconnected(2))));
    }

    #[test]
    fn errors_say_what_happened() {
        let e: crate::Error = TryRecvError::Empty.into();
        assert_eq!(e.to_string(), "channel is empty");
        let e: crate::Error = RecvTimeoutError::Timeout.into();
        assert_eq!(e.to_string(), "timed out waiting on channel");
        let e: crate::Error = SendError::Disconnected(1u8).into();
        assert_eq!(e.to_string(), "receiver is stopped");
    }
}
