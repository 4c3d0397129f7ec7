//! Shared helpers for the benches in `benches/`: core pinning and
//! the interleaving harness that runs ours and a peer's code A B A B.
