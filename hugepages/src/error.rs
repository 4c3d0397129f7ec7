//! The control-path error of the `hugepages` crate.

/// Everything that can go wrong setting up memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was refused; the message says which and why.
    #[error("invalid memory configuration: {0}")]
    Config(String),

    /// A system call failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
