//! Tells the crate whether DPDK was found (by dpdk-sys).

pub fn main() {}
