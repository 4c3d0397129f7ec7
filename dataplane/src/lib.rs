//! A poll-mode, run-to-completion data-plane framework.
//!
//! One pinned thread per core (an *lcore*) owns its queues outright; bounded
//! lock-free [`ring`]s are the only links between lcores. On top sits the
//! shared-nothing worker API.
// Unsafe code is denied here and allowed, with a reason, on exactly the
// modules that meet memory, the kernel or a foreign ABI: the list in
// docs/architecture.md is this crate's `#[allow(unsafe_code)]` lines.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod accel;
pub mod backend;
#[allow(unsafe_code)]
mod barrier;
pub mod block;
pub mod channel;
pub mod dispatch;
mod error;
pub mod lcore;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod profile;
pub mod proto;
/// The original design's `pool` module: the worker pool and its
/// configuration (the same types as [`worker`]).
pub mod pool {
    pub use crate::worker::{
        PartitionedSender, PoolBuilder, PoolConfig, PoolReport, WorkerConfig, WorkerPool,
    };
}
pub mod require;
#[allow(unsafe_code)]
pub mod ring;
#[allow(unsafe_code)]
pub mod telemetry;
#[allow(unsafe_code)]
pub mod time;
pub mod topology;
pub mod transport;
mod uring;
pub mod wire;
pub mod worker;
#[allow(unsafe_code)]
mod xdp;

pub use channel::{Channel, Receiver, RecvError, SendError, Sender};
pub use error::{Error, Result};
pub use hugepages::NumaNode;
pub use partition::{
    ConsistentHashPartitioner, CustomPartitioner, HashPartitioner, Partitioner,
    RoundRobinPartitioner,
};
pub use worker::{
    Envelope, PoolBuilder, PoolConfig, Worker, WorkerConfig, WorkerHandle, WorkerId, WorkerPool,
};

/// Every backend of every subsystem (`net`, `block`, `accel`), in each
/// subsystem's selection order, with whether it can run here and why.
pub fn backend_probes() -> Vec<backend::BackendProbe> {
    let mut all = net::probes();
    all.extend(block::probes());
    all.extend(accel::probes());
    all
}

/// What an application needs, in one import: `use dataplane::prelude::*;`.
pub mod prelude {
    pub use crate::channel::{
        Channel, Receiver, RecvError, RecvTimeoutError, Sender, TryRecvError, UnboundedReceiver,
        UnboundedSender,
    };
    pub use crate::lcore::IdlePolicy;
    pub use crate::partition::{
        ConsistentHashPartitioner, CustomPartitioner, HashPartitioner, Hashed, PartitionKey,
        Partitioner, PartitionerExt, RangePartitioner, RoundRobinPartitioner,
    };
    pub use crate::profile::{Plan, Profile};
    pub use crate::ring::Batch;
    pub use crate::topology::Topology;
    pub use crate::worker::{
        Envelope, PartitionedSender, Pong, PoolBuilder, PoolConfig, RestartPolicy, Worker,
        WorkerConfig, WorkerHandle, WorkerId, WorkerPool, WorkerStats, WorkerStatus,
    };
    pub use crate::{Error, Result, SendError};
}

/// The README's code, run as a doctest of this crate so that a plain
/// `cargo test` checks that the first code a user copies compiles and runs.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
