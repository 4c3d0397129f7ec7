//! The routes from senders to workers: each worker's rings, the
//! partitioner, and the checks every send makes. Shared by [`WorkerPool`]
//! and [`PartitionedSender`], which both send through it.
//!
//! [`WorkerPool`]: super::WorkerPool
//! [`PartitionedSender`]: super::PartitionedSender

use super::stats::WorkerStatus;
use super::supervisor::{Control, WorkerShared};
use super::{Envelope, WorkerId};
use crate::channel::SendError;
use crate::partition::{HashPartitioner, PartitionKey, Partitioner};
use crate::ring::{self, Batch, LaneError, LanesTx, Multi};
use std::fmt;
use std::sync::Arc;

/// The way into one worker. Messages go into the sending thread's lane
/// (a single-producer ring of its own, see `ring::lanes`), or, for a
/// thread without one, into the worker's multi-producer ring; a thread
/// keeps the same way for its whole life, so its messages stay in order
/// whichever of the pool's send functions it uses.
pub(crate) struct Link<M> {
    pub(crate) lanes: LanesTx<Envelope<M>>,
    pub(crate) tx: ring::Producer<Envelope<M>, Multi>,
    pub(crate) control: ring::Producer<Control, Multi>,
    pub(crate) shared: Arc<WorkerShared<M>>,
}

impl<M> Link<M> {
    /// Sends one envelope, or hands it back when the way is full.
    #[inline(always)]
    pub(crate) fn push(&self, env: Envelope<M>) -> Result<(), Envelope<M>> {
        match self.lanes.push(env) {
            Ok(()) => Ok(()),
            Err(LaneError::Full(env)) => Err(env),
            Err(LaneError::NoLane(env)) => self.tx.push(env).map_err(|e| e.into_inner()),
        }
    }

    /// Sends as many envelopes of `batch` as fit, front first; returns how
    /// many.
    #[inline(always)]
    pub(crate) fn push_burst<const N: usize>(&self, batch: &mut Batch<Envelope<M>, N>) -> usize {
        match self.lanes.push_burst(batch) {
            Ok(n) => n,
            Err(batch) => self.tx.push_burst(batch),
        }
    }

    /// Messages queued for the worker (lanes and ring), as seen now.
    pub(crate) fn queued(&self) -> usize {
        self.lanes.len() + self.tx.len()
    }
}

/// A pool's partitioner. The default one is held by value, so that a keyed
/// send inlines its mix and range reduction; any other is called through
/// `dyn` (a call the compiler cannot see into, on every send).
pub(crate) enum Route {
    Hash(HashPartitioner),
    Dyn(Arc<dyn Partitioner>),
}

impl Route {
    /// `p`, by value when it is a [`HashPartitioner`].
    pub(crate) fn of<P: Partitioner + 'static>(p: P) -> Self {
        match (&p as &dyn std::any::Any).downcast_ref::<HashPartitioner>() {
            Some(h) => Route::Hash(*h),
            None => Route::Dyn(Arc::new(p)),
        }
    }

    #[inline(always)]
    fn owner(&self, key: u64, workers: usize) -> usize {
        match self {
            Route::Hash(h) => h.owner(key, workers),
            Route::Dyn(p) => p.owner(key, workers),
        }
    }
}

/// Every worker's link and the partitioner: what a send needs.
pub(crate) struct Routes<M> {
    pub(crate) links: Box<[Link<M>]>,
    partitioner: Route,
    pub(crate) stopped: bool,
}

impl<M> Routes<M> {
    pub(crate) fn new(links: Vec<Link<M>>, partitioner: Route) -> Self {
        Routes {
            links: links.into_boxed_slice(),
            partitioner,
            stopped: false,
        }
    }

    /// Workers routed to.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    #[inline(always)]
    pub(crate) fn link(&self, i: usize) -> Option<&Link<M>> {
        self.links.get(i)
    }

    /// The owner of `key`, or the index the partitioner answered.
    #[inline(always)]
    pub(crate) fn owner<K: PartitionKey + ?Sized>(
        &self,
        key: &K,
    ) -> std::result::Result<usize, usize> {
        let i = self
            .partitioner
            .owner(key.partition_key(), self.links.len());
        if i < self.links.len() { Ok(i) } else { Err(i) }
    }

    /// Checks that worker `i` can take messages.
    #[inline(always)]
    pub(crate) fn check<T>(&self, i: usize, value: T) -> std::result::Result<T, SendError<T>> {
        let Some(l) = self.links.get(i) else {
            return Err(SendError::NoOwner {
                value,
                index: i,
                workers: self.links.len(),
            });
        };
        if self.stopped {
            return Err(SendError::Disconnected(value));
        }
        if l.shared.counters.status() == WorkerStatus::Failed {
            return Err(SendError::Failed { value, worker: i });
        }
        Ok(value)
    }
}

/// Maps the value inside a send error.
pub(crate) fn map_err<A, B>(e: SendError<A>, f: impl FnOnce(A) -> B) -> SendError<B> {
    match e {
        SendError::Full(v) => SendError::Full(f(v)),
        SendError::Disconnected(v) => SendError::Disconnected(f(v)),
        SendError::Failed { value, worker } => SendError::Failed {
            value: f(value),
            worker,
        },
        SendError::NoOwner {
            value,
            index,
            workers,
        } => SendError::NoOwner {
            value: f(value),
            index,
            workers,
        },
    }
}

/// Copies of a broadcast message that did not reach their worker.
pub struct BroadcastError<M> {
    /// Each worker that did not get it, with its copy handed back.
    pub failed: Vec<(WorkerId, SendError<M>)>,
}

impl<M> fmt::Debug for BroadcastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.failed.iter().map(|(w, e)| (w, e.to_string())))
            .finish()
    }
}

impl<M> fmt::Display for BroadcastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broadcast missed {} workers", self.failed.len())?;
        if let Some((w, e)) = self.failed.first() {
            write!(f, " ({w}: {e}, ...)")?;
        }
        Ok(())
    }
}

impl<M> std::error::Error for BroadcastError<M> {}

impl<M> From<BroadcastError<M>> for crate::Error {
    fn from(e: BroadcastError<M>) -> Self {
        crate::Error::Broadcast(e.to_string())
    }
}
