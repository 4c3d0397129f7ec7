//! What the network programs (`l2fwd`, `l3fwd`, `pktgen`, `demo`) share:
//! frames and probes, the route table and forwarding engine of l3fwd, the
//! command-line options, per-lcore counters and the summary every program
//! prints.

pub mod frame;
