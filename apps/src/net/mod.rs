//! What the network programs (`l2fwd`, `l3fwd`, `pktgen`, `demo`) share:
//! frames and probes, the data path of each as an lcore [`Poller`]
//! (`dataplane::lcore::Poller`), the command-line options, per-lcore
//! counters, and the run loop with its summary.
//!
//! The data paths live here rather than in the binaries so that the
//! end-to-end tests drive exactly the code the programs run.
//!
//! [`Poller`]: dataplane::lcore::Poller

pub mod cli;
pub mod counters;
pub mod demo;
pub mod frame;
pub mod l2fwd;
pub mod l3fwd;
pub mod pktgen;
pub mod ports;
pub mod run;
pub mod synth;
