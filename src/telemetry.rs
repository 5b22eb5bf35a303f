//! Logging: a `tracing` subscriber on stderr, text or JSON lines, filtered by `RUST_LOG`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset or empty: our own events at info, the chattier
/// libraries (the scheduler logs every start at info) only from warn.
pub const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn,sqlx=warn,hyper=warn,reqwest=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Both formats go to stderr, leaving stdout to command output.
/// Safe to call more than once: later calls (and calls after a test harness installed its own
/// subscriber) change nothing. Returns whether this call installed it.
pub fn init(format: LogFormat) -> bool {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    installed.is_ok()
}

fn filter() -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                // No subscriber yet to log through.
                eprintln!("szb-sync: ignoring RUST_LOG ({e}); using {DEFAULT_FILTER:?}");
                EnvFilter::new(DEFAULT_FILTER)
            }),
        _ => EnvFilter::new(DEFAULT_FILTER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }

    #[test]
    fn the_first_init_installs_and_a_second_changes_nothing() {
        // The only test of this crate that installs a global subscriber.
        assert!(
            init(LogFormat::Json),
            "the first call installs the subscriber"
        );
        assert!(!init(LogFormat::Text), "a second call leaves it in place");
        tracing::info!("still fine");
    }
}
