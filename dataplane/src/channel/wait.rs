//! Parking for blocking sends and receives, at almost no cost to the side
//! that does not wait.
//!
//! A thread that finds the channel empty (or full) spins briefly, yields a
//! few times, then parks: it announces itself in the side's waiter count,
//! passes the heavy half of an asymmetric barrier ([`crate::barrier`]),
//! tries once more, and sleeps. The other side, after every operation that
//! moves an item, passes the light half (a compiler fence) and reads the
//! count; only when someone waits does it take the lock and unpark them.
//! One of the two always sees the other: either the waiter's last try finds
//! the item, or the mover's read finds the waiter. Unpark before park is
//! not lost (a thread's park token), so the waiter cannot miss a wake that
//! comes between its last try and its sleep.
//!
//! Under loom the two halves are read-modify-writes of the count, which
//! loom models exactly (it does not model `SeqCst` fences as total).

use super::{RecvTimeoutError, SendError, TryRecvError};
#[cfg(not(loom))]
use crate::barrier;
use crossbeam_utils::CachePadded;
use hugepages::sync::{AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
use loom::thread::{self, Thread};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Back-off steps before parking: steps `0..SPIN_STEPS` spin
/// `min(2^step, MAX_SPIN)` pauses each, the steps up to `YIELD_STEPS`
/// yield the CPU. About as long in all as crossbeam's `Backoff` before it
/// parks (a few hundred pauses), but never more than `MAX_SPIN` pauses
/// between two tries: a sender behind a worker that is draining its queue
/// gets each freed slot at once instead of after a long pause that lets
/// the queue run dry. None under loom, where they only add states.
const SPIN_STEPS: u32 = if cfg!(loom) { 0 } else { 32 };
const YIELD_STEPS: u32 = if cfg!(loom) { 0 } else { 36 };
const MAX_SPIN: u32 = 8;

/// The longest sleep when the barrier could not be trusted (see
/// [`barrier::heavy`]): bounds a wake that might have been missed.
#[cfg(not(loom))]
const UNSURE_SLEEP: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Parked {
    next: u64,
    threads: Vec<(u64, Thread)>,
}

/// The threads waiting for one side of a channel to move.
#[derive(Debug)]
pub(crate) struct Waiters {
    /// Threads registered to park; read by the other side after every
    /// operation, written only by waiters (its own line, so that the
    /// reads stay local).
    count: CachePadded<AtomicUsize>,
    parked: Mutex<Parked>,
}

impl Default for Waiters {
    fn default() -> Self {
        // The movers' half of the barrier reads how the process is
        // registered: settle it before any mover can exist (until then
        // the light half is a full fence).
        #[cfg(not(loom))]
        barrier::init();
        Waiters {
            count: CachePadded::new(AtomicUsize::new(0)),
            parked: Mutex::new(Parked::default()),
        }
    }
}

impl Waiters {
    /// Wakes the waiters, if any. Call after every operation that moves an
    /// item (or disconnects), from the side that does not wait for it.
    #[inline(always)]
    pub(crate) fn notify(&self) {
        if self.anyone() {
            self.wake_all();
        }
    }

    #[inline(always)]
    fn anyone(&self) -> bool {
        #[cfg(not(loom))]
        {
            barrier::light();
            // Relaxed: ordered after the caller's operation by the barrier.
            self.count.load(Ordering::Relaxed) != 0
        }
        #[cfg(loom)]
        {
            self.count.fetch_add(0, Ordering::AcqRel) != 0
        }
    }

    /// Takes every waiter off the list and unparks it: until one
    /// registers again, the movers' reads of the count find zero and take
    /// no lock.
    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        let mut p = self.lock();
        self.count.store(0, Ordering::Relaxed);
        // Unparked under the lock: the list keeps its allocation for the
        // next waiter, and a woken thread only needs the lock again if it
        // parks again.
        for (_, t) in p.threads.drain(..) {
            t.unpark();
        }
    }

    /// Sends `value` with `try_send`, waiting while it answers
    /// [`SendError::Full`], until `deadline` (then `Full` hands the value
    /// back). Any other answer ends the wait.
    pub(crate) fn send<T>(
        &self,
        deadline: Option<Instant>,
        value: T,
        mut try_send: impl FnMut(T) -> Result<(), SendError<T>>,
    ) -> Result<(), SendError<T>> {
        let mut slot = Some(value);
        let sent = self.wait(deadline, || {
            let v = slot.take()?;
            match try_send(v) {
                Err(SendError::Full(v)) => {
                    slot = Some(v);
                    None
                }
                r => Some(r),
            }
        });
        match (sent, slot) {
            (Some(r), _) => r,
            (None, Some(v)) => Err(SendError::Full(v)),
            // The value is only taken out to be sent, and put back unless
            // that ended the wait.
            (None, None) => Ok(()),
        }
    }

    /// Receives with `try_recv`, waiting while it answers
    /// [`TryRecvError::Empty`], until `deadline`.
    pub(crate) fn recv<T>(
        &self,
        deadline: Option<Instant>,
        mut try_recv: impl FnMut() -> Result<T, TryRecvError>,
    ) -> Result<T, RecvTimeoutError> {
        self.wait(deadline, || match try_recv() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Empty) => None,
        })
        .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    fn lock(&self) -> MutexGuard<'_, Parked> {
        // Nothing panics while the list is held: a poisoned lock is intact.
        #[cfg(not(loom))]
        {
            self.parked.lock().unwrap_or_else(|p| p.into_inner())
        }
        #[cfg(loom)]
        {
            self.parked.lock().unwrap()
        }
    }

    /// Calls `attempt` until it returns `Some`, sleeping between tries
    /// once a short back-off has not helped, or until `deadline` passes
    /// (`None` then). `attempt` must include whatever ends the wait for
    /// good (a disconnection) in its `Some`.
    pub(crate) fn wait<R>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        loop {
            // Back off before (and after every wake, before) parking: the
            // other side is usually a moment away, and a thread woken for
            // one free slot that parked again at once would sleep and wake
            // once per item.
            for step in 0..YIELD_STEPS {
                if let Some(r) = attempt() {
                    return Some(r);
                }
                if step < SPIN_STEPS {
                    for _ in 0..(1u32 << step.min(31)).min(MAX_SPIN) {
                        hugepages::sync::spin_loop();
                    }
                } else {
                    hugepages::sync::yield_now();
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return attempt();
                }
            }
            let (token, sure) = self.register();
            if let Some(r) = attempt() {
                self.unregister(token);
                return Some(r);
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.unregister(token);
                        return attempt();
                    }
                    Some(left)
                }
            };
            park(left, sure);
            self.unregister(token);
        }
    }

    /// Announces the calling thread; returns its token and whether the
    /// barrier after it is exact.
    fn register(&self) -> (u64, bool) {
        let token = {
            let mut p = self.lock();
            let token = p.next;
            p.next += 1;
            p.threads.push((token, thread::current()));
            // Under the lock, so that it always equals the list's length.
            #[cfg(not(loom))]
            self.count.fetch_add(1, Ordering::SeqCst);
            #[cfg(loom)]
            self.count.fetch_add(1, Ordering::AcqRel);
            token
        };
        #[cfg(not(loom))]
        {
            (token, barrier::heavy())
        }
        #[cfg(loom)]
        {
            (token, true)
        }
    }

    /// Takes the calling thread off the list, unless a wake already did.
    fn unregister(&self, token: u64) {
        let mut p = self.lock();
        if let Some(i) = p.threads.iter().position(|(t, _)| *t == token) {
            p.threads.swap_remove(i);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps until unparked, or for `left`; never longer than a moment when
/// the barrier was not exact.
#[cfg(not(loom))]
fn park(left: Option<Duration>, sure: bool) {
    match (left, sure) {
        (None, true) => thread::park(),
        (Some(d), true) => thread::park_timeout(d),
        (left, false) => thread::park_timeout(left.map_or(UNSURE_SLEEP, |d| d.min(UNSURE_SLEEP))),
    }
}

#[cfg(loom)]
fn park(_left: Option<Duration>, _sure: bool) {
    thread::park();
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;

    /// A sleeper never misses the one notification it waits for.
    #[test]
    fn loom_no_lost_wakeup() {
        loom::model(|| {
            let w = Arc::new(Waiters::default());
            let flag = Arc::new(AtomicBool::new(false));
            let (w2, f2) = (w.clone(), flag.clone());
            let t = thread::spawn(move || {
                f2.store(true, Ordering::Release);
                w2.notify();
            });
            let got = w.wait(None, || flag.load(Ordering::Acquire).then_some(()));
            assert!(got.is_some());
            t.join().unwrap();
        });
    }
}
