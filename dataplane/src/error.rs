//! The control-path error of the `dataplane` crate.
//!
//! The hot path never returns this: it returns counts, or hands the item back
//! (`PushError::Full(item)`, `SendError::Full(msg)`).

use std::io;

/// Everything that can go wrong while building or controlling a runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was refused; the message says which and why.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A system call or file read failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "reading /sys/devices/system/cpu/online".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A CPU named in a plan or configuration cannot be used.
    #[error("cpu {cpu} cannot be used: {reason}")]
    Cpu {
        /// The CPU number.
        cpu: u32,
        /// Why: not present, offline, or outside the affinity mask.
        reason: String,
    },

    /// More pinned workers or lcores were asked for than there are usable cores.
    #[error("{requested} pinned lcores requested but only {allowed} cores are usable")]
    TooManyLcores {
        /// What was asked for.
        requested: usize,
        /// What the affinity mask, cgroup and isolation allow.
        allowed: usize,
    },

    /// A capability named in `DATAPLANE_REQUIRE` (or a `require-*` option) is
    /// not available, so falling back was refused.
    #[error("{capability} is required but unavailable: {reason}")]
    Required {
        /// The capability, as spelled in `DATAPLANE_REQUIRE`.
        capability: &'static str,
        /// Why it is unavailable.
        reason: String,
    },

    /// Memory: a region, mempool or mbuf pool could not be set up.
    #[error(transparent)]
    Memory(#[from] hugepages::Error),

    /// An accelerator (Vulkan) call failed, or the device was lost.
    #[error(transparent)]
    Accel(#[from] crate::accel::DeviceError),

    /// A ring or channel capacity was refused.
    #[error(transparent)]
    Capacity(#[from] crate::ring::CapacityError),

    /// The target (worker, lcore, channel) has stopped or was never started.
    #[error("{0} is stopped")]
    Stopped(String),

    /// A worker failed: its handler returned an error or panicked, and the
    /// restart policy gave up on it.
    #[error("worker {worker} failed: {reason}")]
    WorkerFailed {
        /// The worker's index in its pool.
        worker: usize,
        /// The last failure.
        reason: String,
    },

    /// A queue or pool is full; the operation that found it so handed its
    /// item back.
    #[error("{0} is full")]
    Full(String),

    /// A receive from a channel found nothing: empty for now, or empty
    /// with every sender gone.
    #[error(transparent)]
    Recv(#[from] crate::channel::TryRecvError),

    /// A receive from a channel waited and found nothing.
    #[error(transparent)]
    RecvTimeout(#[from] crate::channel::RecvTimeoutError),

    /// A broadcast did not reach every worker; the message says how many
    /// it missed and why (`BroadcastError` hands the copies back).
    #[error("{0}")]
    Broadcast(String),

    /// A partitioner answered an index that is not a worker.
    #[error("key has no owner: partitioner answered {index} of {workers} workers")]
    NoOwner {
        /// What the partitioner answered.
        index: usize,
        /// Workers in the pool.
        workers: usize,
    },

    /// Messages were left undelivered when a pool stopped because their
    /// worker had failed; `WorkerPool::shutdown` hands them back.
    #[error("{count} messages undelivered at stop (worker {worker} had failed)")]
    Undelivered {
        /// How many.
        count: usize,
        /// The first failed worker that held some.
        worker: usize,
    },

    /// A connection, listener or socket of a `transport::Transport` that
    /// is closed or was never open; the message names it.
    #[error("{0} is not open")]
    NotOpen(String),

    /// A bounded wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// An error raised by application code (a `Worker` handler), carried as is.
    #[error(transparent)]
    Handler(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps an application error so that a `Worker` handler can return it.
    pub fn handler(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Handler(err.into())
    }

    /// An I/O error with the context it happened in.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
