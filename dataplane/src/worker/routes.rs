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
use crate::partition::{PartitionKey, Partitioner};
use crate::ring::{self, Multi};
use std::fmt;
use std::sync::Arc;

pub(crate) struct Link<M> {
    pub(crate) tx: ring::Producer<Envelope<M>, Multi>,
    pub(crate) control: ring::Producer<Control, Multi>,
    pub(crate) shared: Arc<WorkerShared<M>>,
}

/// Every worker's link and the partitioner: what a send needs.
pub(crate) struct Routes<M> {
    pub(crate) links: Box<[Link<M>]>,
    partitioner: Arc<dyn Partitioner>,
    pub(crate) stopped: bool,
}

impl<M> Routes<M> {
    pub(crate) fn new(links: Vec<Link<M>>, partitioner: Arc<dyn Partitioner>) -> Self {
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
