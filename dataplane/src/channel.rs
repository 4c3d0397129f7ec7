//! Channels: the rings with a sender/receiver face (disconnection, waiting
//! with a deadline), for links between workers and from ordinary threads.
//!
//! ```
//! use dataplane::channel::Channel;
//!
//! let (tx, mut rx) = Channel::mpsc::<u32>(1024)?;
//! let tx2 = tx.clone();
//! std::thread::spawn(move || tx2.send(7)).join().unwrap()?;
//! tx.send(8)?;
//! assert_eq!(rx.try_recv(), Ok(7));
//! assert_eq!(rx.try_recv(), Ok(8));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Bounded channels push back when full ([`SendError::Full`] hands the
//! value back); [`Channel::mpsc_unbounded`] never does, at the price of a
//! locked overflow queue while its ring is full.

use crate::ring::{
    self, Batch, CapacityError, LaneError, LanesRx, LanesTx, Multi, PushError, Single, Sink, Source,
};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// The constructors.
#[derive(Debug)]
pub struct Channel;

/// A bounded channel's two ends.
pub type Pair<T, P, C> = (Sender<T, P>, Receiver<T, C>);

impl Channel {
    /// One sender, one receiver.
    ///
    /// # Errors
    /// [`CapacityError`] when `capacity` is zero or not a power of two.
    pub fn spsc<T>(capacity: usize) -> Result<Pair<T, Single, Single>, CapacityError> {
        let (p, c) = ring::spsc(capacity)?;
        Ok((Sender::new(p, None), Receiver::new(c, None)))
    }

    /// Any number of senders, one receiver.
    ///
    /// One multi-producer ring: values arrive in the order their sends
    /// took effect, across threads too (a value sent after another thread's
    /// send returned, e.g. after joining it, arrives after that thread's).
    ///
    /// # Errors
    /// [`CapacityError`] when `capacity` is zero or not a power of two.
    pub fn mpsc<T>(capacity: usize) -> Result<Pair<T, Multi, Single>, CapacityError> {
        let (p, c) = ring::mpsc(capacity)?;
        Ok((Sender::new(p, None), Receiver::new(c, None)))
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
    /// let (tx, mut rx) = Channel::mpsc_per_thread::<u64>(1024)?;
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
    /// # Errors
    /// [`CapacityError`] when `capacity` is zero or not a power of two.
    pub fn mpsc_per_thread<T>(capacity: usize) -> Result<Pair<T, Multi, Single>, CapacityError> {
        let (p, c) = ring::mpsc(capacity)?;
        let (lt, lr) = ring::lanes(capacity)?;
        Ok((Sender::new(p, Some(lt)), Receiver::new(c, Some(lr))))
    }

    /// Any number of senders and receivers.
    ///
    /// # Errors
    /// [`CapacityError`] when `capacity` is zero or not a power of two.
    pub fn mpmc<T>(capacity: usize) -> Result<Pair<T, Multi, Multi>, CapacityError> {
        let (p, c) = ring::mpmc(capacity)?;
        Ok((Sender::new(p, None), Receiver::new(c, None)))
    }

    /// Any number of senders, one receiver, never full: a ring of
    /// [`UNBOUNDED_RING`] slots, and a locked overflow queue used only
    /// while the ring is full.
    pub fn mpsc_unbounded<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
        let (p, c) = ring::mpsc(UNBOUNDED_RING).unwrap_or_else(|_| unreachable!("a power of two"));
        let shared = Arc::new(Overflow {
            overflowing: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        });
        (
            UnboundedSender {
                ring: p,
                shared: shared.clone(),
            },
            UnboundedReceiver {
                ring: c,
                shared,
                taken: VecDeque::new(),
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

/// The sending end of a bounded channel. `Sender<T, Multi>` is
/// `Clone + Sync`; `Sender<T, Single>` is neither.
pub struct Sender<T, M: ring::Mode> {
    /// Also counts the senders, for disconnection, when lanes carry the
    /// values.
    ring: ring::Producer<T, M>,
    /// `Channel::mpsc_per_thread`: the sending threads' lanes.
    lanes: Option<LanesTx<T>>,
}

/// The receiving end of a bounded channel.
pub struct Receiver<T, M: ring::Mode> {
    ring: ring::Consumer<T, M>,
    /// `Channel::mpsc_per_thread`: the sending threads' lanes.
    lanes: Option<LanesRx<T>>,
    /// Takes so far; every [`RING_TURN`]th looks at the shared ring
    /// before the lanes, so that neither starves the other.
    takes: u32,
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
    fn new(ring: ring::Producer<T, M>, lanes: Option<LanesTx<T>>) -> Self {
        Sender { ring, lanes }
    }
}

impl<T, M: ring::Mode> Receiver<T, M> {
    fn new(ring: ring::Consumer<T, M>, lanes: Option<LanesRx<T>>) -> Self {
        Receiver {
            ring,
            lanes,
            takes: 0,
        }
    }

    fn queued(&self) -> usize {
        self.ring.len() + self.lanes.as_ref().map_or(0, LanesRx::len)
    }
}

impl<T> Clone for Sender<T, Multi> {
    fn clone(&self) -> Self {
        Sender::new(self.ring.clone(), self.lanes.clone())
    }
}

impl<T> Clone for Receiver<T, Multi> {
    fn clone(&self) -> Self {
        // A multi-consumer channel has no lanes.
        Receiver::new(self.ring.clone(), None)
    }
}

/// Waits with the back-off an lcore uses: spin, then yield, then short
/// sleeps, until `f` succeeds or `deadline` passes.
fn wait_until<R>(deadline: Option<Instant>, mut f: impl FnMut() -> Option<R>) -> Option<R> {
    let mut round = 0u32;
    loop {
        if let Some(r) = f() {
            return Some(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        round = round.saturating_add(1);
        match round {
            0..=64 => core::hint::spin_loop(),
            65..=128 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// Waits up to `timeout` for `try_recv` to yield a value.
fn recv_until<T>(
    timeout: Duration,
    mut try_recv: impl FnMut() -> Result<T, TryRecvError>,
) -> Result<T, RecvTimeoutError> {
    let deadline = Instant::now() + timeout;
    let mut gone = false;
    let got = wait_until(Some(deadline), || match try_recv() {
        Ok(v) => Some(v),
        Err(TryRecvError::Disconnected) => {
            gone = true;
            None
        }
        Err(TryRecvError::Empty) => None,
    });
    got.ok_or(if gone {
        RecvTimeoutError::Disconnected
    } else {
        RecvTimeoutError::Timeout
    })
}

macro_rules! sender_ops {
    ([$($recv:tt)+] $self:ident) => {
        /// Sends `value`, or hands it back when the channel is full or has
        /// no receiver.
        ///
        /// # Errors
        /// [`SendError::Full`] or [`SendError::Disconnected`] with the value.
        #[inline]
        pub fn send($($recv)+ $self, value: T) -> Result<(), SendError<T>> {
            if $self.ring.is_abandoned() {
                return Err(SendError::Disconnected(value));
            }
            let value = match &$self.lanes {
                Some(lanes) => match lanes.push(value) {
                    Ok(()) => return Ok(()),
                    Err(LaneError::Full(v)) => return Err(SendError::Full(v)),
                    Err(LaneError::NoLane(v)) => v,
                },
                None => value,
            };
            $self.ring.push(value).map_err(|PushError::Full(v)| SendError::Full(v))
        }

        /// Sends `value`, waiting up to `timeout` for room.
        ///
        /// # Errors
        /// As [`send`](Self::send), after the wait.
        pub fn send_timeout($($recv)+ $self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
            let deadline = Instant::now() + timeout;
            let mut slot = Some(value);
            let sent = wait_until(Some(deadline), || {
                let v = slot.take()?;
                match $self.send(v) {
                    Ok(()) => Some(Ok(())),
                    Err(SendError::Full(v)) => {
                        slot = Some(v);
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            });
            match (sent, slot) {
                (Some(r), _) => r,
                (None, Some(v)) => Err(SendError::Full(v)),
                // The closure only takes the value out to send it, and puts it
            // back unless the send ended the wait.
            (None, None) => Ok(()),
            }
        }

        /// Sends as many items of `src` as fit; returns how many. The rest
        /// stay in `src`.
        #[inline]
        pub fn send_burst<S: Source<T>>($($recv)+ $self, src: S) -> usize {
            let src = match &$self.lanes {
                Some(lanes) => match lanes.push_burst(src) {
                    Ok(n) => return n,
                    Err(src) => src,
                },
                None => src,
            };
            $self.ring.push_burst(src)
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
        /// Takes one value if there is one.
        ///
        /// # Errors
        /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] when
        /// empty with every sender gone.
        #[inline]
        pub fn try_recv($($recv)+ $self) -> Result<T, TryRecvError> {
            if let Some(v) = $self.take() {
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
            recv_until(timeout, || $self.try_recv())
        }

        /// Takes as many values as `dst` has room for; returns how many.
        /// (A `Channel::mpsc_per_thread` receiver takes them from one
        /// sending thread's lane, or from the shared ring, per call.)
        #[inline]
        pub fn recv_burst<D: Sink<T>>($($recv)+ $self, dst: D) -> usize {
            $self.take_burst(dst)
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
    shared: Arc<Overflow<T>>,
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender {
            ring: self.ring.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> UnboundedSender<T> {
    /// Sends `value`; fails only when the receiver is gone.
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
                Ok(()) => return Ok(()),
                Err(PushError::Full(v)) => v,
            }
        };
        let mut q = self.shared.lock();
        // Under the lock: the receiver clears the flag only under it too.
        self.shared.overflowing.store(true, Ordering::Release);
        q.push_back(value);
        Ok(())
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
    shared: Arc<Overflow<T>>,
    /// Values taken from the ring and the overflow queue together, in an
    /// order that keeps each sender's order.
    taken: VecDeque<T>,
}

impl<T> UnboundedReceiver<T> {
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
        recv_until(timeout, || self.try_recv())
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
        let (mut tx, mut rx) = Channel::spsc::<String>(2).unwrap();
        tx.send("a".into()).unwrap();
        tx.send("b".into()).unwrap();
        assert!(matches!(tx.send("c".into()), Err(SendError::Full(s)) if s == "c"));
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

        let (tx, rx) = Channel::mpmc::<u8>(4).unwrap();
        drop(rx);
        assert!(matches!(tx.send(1), Err(SendError::Disconnected(1))));
        assert!(Channel::mpsc::<u8>(3).is_err());
        assert!(Channel::spsc::<u8>(0).is_err());
    }

    #[test]
    fn timeouts_wait_and_give_up() {
        let (tx, mut rx) = Channel::mpsc::<u32>(1).unwrap();
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
        let (tx, mut rx) = Channel::mpsc_per_thread::<(u8, u64)>(64).unwrap();
        for s in 0..64 {
            tx.send((9, s)).unwrap();
        }
        assert!(
            tx.send((9, 64)).is_err_and(|e| e.is_full()),
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
                        match tx.send((id, s)) {
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
