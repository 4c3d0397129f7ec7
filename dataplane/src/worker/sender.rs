//! Sending in bursts: the per-worker buffers of a [`PartitionedSender`]
//! (DPDK's `rte_eth_tx_buffer` pattern) and the source adapter that wraps
//! messages into envelopes as they are copied into a worker's ring.

use super::routes::Routes;
use super::stats::WorkerStatus;
use super::supervisor::WORKER_BURST;
use super::{Envelope, Worker, WorkerId};
use crate::channel::SendError;
use crate::partition::PartitionKey;
use crate::ring::Batch;
use std::fmt;
use std::time::{Duration, Instant};

/// Buffers messages per worker and moves each buffer in one burst when it
/// fills (or on [`flush`](Self::flush)): one ring reservation per
/// `WORKER_BURST` (32) messages instead of one per message.
///
/// Messages sit in the buffer until it is flushed. Dropping the sender
/// flushes it, waiting for room as long as the target workers are alive;
/// call `flush` and check its result to handle a full queue yourself.
pub struct PartitionedSender<'p, W: Worker> {
    routes: &'p Routes<W::Message>,
    bufs: Box<[Batch<Envelope<W::Message>, WORKER_BURST>]>,
}

impl<W: Worker> fmt::Debug for PartitionedSender<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedSender")
            .field("pending", &self.pending())
            .finish()
    }
}

impl<'p, W: Worker> PartitionedSender<'p, W> {
    pub(crate) fn new(routes: &'p Routes<W::Message>) -> Self {
        PartitionedSender {
            routes,
            bufs: (0..routes.len()).map(|_| Batch::new()).collect(),
        }
    }

    /// Buffers `msg` for the worker that owns `key`.
    ///
    /// # Errors
    /// The message is handed back: [`SendError::Full`] when that worker's
    /// buffer and queue are both full, [`SendError::NoOwner`],
    /// [`SendError::Failed`], [`SendError::Disconnected`].
    #[inline]
    pub fn send_partitioned<K: PartitionKey + ?Sized>(
        &mut self,
        key: &K,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        match self.routes.owner(key) {
            Ok(i) => self.send_to_worker(i, msg),
            Err(index) => Err(SendError::NoOwner {
                value: msg,
                index,
                workers: self.bufs.len(),
            }),
        }
    }

    /// Buffers `msg` for one worker.
    ///
    /// # Errors
    /// As [`send_partitioned`](Self::send_partitioned).
    #[inline]
    pub fn send_to_worker(
        &mut self,
        worker: impl Into<WorkerId>,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        let i = worker.into().0 as usize;
        let msg = self.routes.check(i, msg)?;
        if self.bufs[i].is_full() && self.flush_one(i) == WORKER_BURST {
            return Err(SendError::Full(msg));
        }
        let buf = &mut self.bufs[i];
        if let Err(env) = buf.push(Envelope::new(msg)) {
            // Not reached: there was room after the flush.
            return Err(SendError::Full(env.payload));
        }
        if buf.is_full() {
            self.flush_one(i);
        }
        Ok(())
    }

    /// Moves worker `i`'s buffer into its ring; returns what is left.
    #[inline]
    fn flush_one(&mut self, i: usize) -> usize {
        let buf = &mut self.bufs[i];
        if let Some(link) = self.routes.link(i) {
            link.push_burst(&mut *buf);
        }
        buf.len()
    }

    /// Moves every buffer into its worker's ring; returns how many messages
    /// are still buffered because a queue was full.
    pub fn flush(&mut self) -> usize {
        (0..self.bufs.len()).map(|i| self.flush_one(i)).sum()
    }

    /// Messages buffered now.
    pub fn pending(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }
}

impl<W: Worker> Drop for PartitionedSender<'_, W> {
    fn drop(&mut self) {
        let mut warned = Instant::now();
        loop {
            if self.flush() == 0 {
                return;
            }
            // Only messages for workers that can still take them are worth
            // waiting for; a failed worker never will.
            let alive = self.bufs.iter().enumerate().any(|(i, b)| {
                !b.is_empty()
                    && self.routes.link(i).is_some_and(|l| {
                        !matches!(
                            l.shared.counters.status(),
                            WorkerStatus::Failed | WorkerStatus::Stopped
                        )
                    })
            });
            if !alive || self.routes.stopped {
                tracing::error!(
                    count = self.pending(),
                    "sender dropped with messages for failed workers"
                );
                return;
            }
            if warned.elapsed() > Duration::from_secs(1) {
                tracing::warn!(
                    pending = self.pending(),
                    "sender drop waiting for room (paused worker?)"
                );
                warned = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
