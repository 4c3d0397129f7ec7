//! Shared plumbing for the programs in `src/bin/`.
#![deny(unsafe_code)]

pub mod capture;
pub mod net;
pub mod storage;
pub mod top;

pub mod http;
pub mod info;
pub mod kv;
pub mod serve;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, span),
    /// for log collectors.
    Json,
}

/// The logging options every program takes.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines on standard error as `text` or `json` (one object a
    /// line); the level comes from `RUST_LOG` (default `warn`).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Logs to standard error at `warn` (or as `RUST_LOG` says), in `format`,
/// keeping standard output for the program's rates, summaries and JSON:
/// every binary's first call.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a terminal that wants them: a log file or pipe gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().with_current_span(true).init(),
    }
}
