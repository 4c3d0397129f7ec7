//! A poll-mode, run-to-completion data-plane framework.
//!
//! One pinned thread per core (an *lcore*) owns its queues outright; bounded
//! lock-free [`ring`]s are the only links between lcores. On top sits the
//! shared-nothing worker API.
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
pub mod lcore;
pub mod profile;
pub mod require;
pub mod ring;
pub mod time;
pub mod topology;

pub use error::{Error, Result};
pub use hugepages::NumaNode;
