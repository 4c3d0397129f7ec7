//! Shared plumbing for the programs in `src/bin/`.
