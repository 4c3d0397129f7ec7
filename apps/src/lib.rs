//! Shared plumbing for the programs in `src/bin/`.
#![deny(unsafe_code)]

pub mod net;
pub mod storage;

pub mod info;

/// Logs to standard error at `warn` (or as `RUST_LOG` says), keeping
/// standard output for the program's rates, summaries and JSON: every
/// binary's first call.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}
