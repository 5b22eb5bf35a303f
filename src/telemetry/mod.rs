//! What the process says about itself: the feed of events ([`events`]) and its surfaces: log
//! lines ([`logs`]), Prometheus metrics ([`metrics`]), the passes as they go ([`live`]); and the
//! `tracing` subscriber (text, JSON lines or journald, filtered by `RUST_LOG`).

pub mod events;
pub mod live;
pub mod logs;
pub mod metrics;

use std::io::IsTerminal as _;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use events::Feed;

/// The feed and the surfaces every process has: log lines, metrics, the live passes.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub feed: Feed,
    pub metrics: Arc<metrics::Metrics>,
    pub live: Arc<live::Live>,
}

impl Telemetry {
    pub fn new() -> Self {
        let feed = Feed::new();
        let metrics = Arc::new(metrics::Metrics::new());
        let live = Arc::new(live::Live::new());
        feed.subscribe(Arc::new(logs::LogLines::default()));
        feed.subscribe(metrics.clone());
        feed.subscribe(live.clone());
        Telemetry {
            feed,
            metrics,
            live,
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// The filter used when `RUST_LOG` is unset or empty: our own events at info, the chattier
/// libraries (the scheduler logs every start at info) only from warn.
pub const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn,sqlx=warn,hyper=warn,reqwest=warn";

/// The filter of a command whose own output tells the story (`demo`): warnings and errors only,
/// unless `RUST_LOG` asks for more.
pub const QUIET_FILTER: &str = "warn";

/// `sync` on a terminal, when `RUST_LOG` is unset: its table says each pair's outcome and error
/// once, and the progress bar shows the pass, so the log lines of pairs and passes, which
/// said each pair a second time, are left out.
pub const TERMINAL_SYNC_FILTER: &str = "warn,szb_sync::telemetry::logs=off";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line on stderr, for log collectors.
    Json,
    /// Native journald entries, each field its own (`journalctl -o json`).
    Journald,
}

impl LogFormat {
    /// The format when none is given: journald when stderr is the journal (systemd says so in
    /// `JOURNAL_STREAM`), else text.
    pub fn detect() -> Self {
        if stderr_is_journal() {
            LogFormat::Journald
        } else {
            LogFormat::Text
        }
    }
}

/// `JOURNAL_STREAM` names the device and inode of the journal stream systemd connected; stderr
/// is the journal only when it is that same file (a child that redirected it is not).
fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = stream.split_once(':') else {
            return false;
        };
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
    }
    #[cfg(not(unix))]
    false
}

/// Installs the global subscriber. Text and JSON go to stderr, leaving stdout to command output.
/// Journald falls back to JSON on stderr when the journal's socket cannot be reached. Safe to
/// call more than once: later calls (and calls after a test harness installed its own
/// subscriber) change nothing. Returns whether this call installed it.
pub fn init(format: LogFormat) -> bool {
    init_with(format, DEFAULT_FILTER)
}

/// [`init`] with `default` as the filter when `RUST_LOG` is unset (see [`QUIET_FILTER`]).
pub fn init_with(format: LogFormat, default: &str) -> bool {
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                return tracing_subscriber::registry()
                    .with(filter(default))
                    .with(layer.with_syslog_identifier("szb-sync".to_owned()))
                    .try_init()
                    .is_ok();
            }
            Err(e) => eprintln!("szb-sync: journald is not reachable ({e}); logging JSON lines"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json | LogFormat::Journald => builder.json().with_current_span(true).try_init(),
    };
    installed.is_ok()
}

fn filter(default: &str) -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                // No subscriber yet to log through.
                eprintln!("szb-sync: ignoring RUST_LOG ({e}); using \"{default}\"");
                EnvFilter::new(default)
            }),
        _ => EnvFilter::new(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
        assert!(EnvFilter::try_new(TERMINAL_SYNC_FILTER).is_ok());
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
