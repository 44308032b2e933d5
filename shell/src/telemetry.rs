//! Tracing, set up once per process.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset: `info`, with lapin's and amq-protocol's own
/// chatter (connection-level detail replog already reports in its own words) at `warn`.
pub const DEFAULT_FILTER: &str = "info,lapin=warn,amq_protocol=warn";

/// Logs to stderr, filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: logs written to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
