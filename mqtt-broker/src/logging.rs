//! Where log lines go and how they look: readable lines (colour only on a
//! terminal, so a systemd journal or a file gets no escape codes) or one
//! JSON object per line for log shippers (`log_format = "json"`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: logs go to standard output (under
/// systemd, the journal); errors before logging starts go to standard
/// error. `RUST_LOG`
/// overrides the level; `verbose` adds one line per packet.
pub fn init(format: LogFormat, verbose: bool) {
    let default_filter = if verbose {
        "info,mqtt_broker::packets=debug"
    } else {
        "info"
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(false);
    let result = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = result;
}
