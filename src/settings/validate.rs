//! The checks of every value, each naming its key, and the bounds they hold values to (a
//! duration added to a clock must not overflow it). The targets' checks are in `targets`.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use super::targets::BOTH_TOKENS;
use super::{Settings, SettingsError};
use crate::secret::{Secret, redact_url};

/// The least `sync.settle_after` accepted. A visit older than it is final for the mark, so it
/// must exceed the platform's longest gap between `lastOnlineAt` updates of a viewer who is still
/// online; minutes-long gaps are plausible, seconds are not a safe margin.
pub const MIN_SETTLE_AFTER: Duration = Duration::from_secs(5 * 60);

/// The most `sync.settle_after` accepted: subtracted from a date, a value near `u64::MAX` seconds
/// would overflow it.
pub const MAX_SETTLE_AFTER: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The most `api.timeout` accepted.
pub const MAX_API_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The most `api.retry_backoff` accepted (the backoff itself stops doubling at 60 s).
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// The most `api.max_retry_after` accepted: a pause of every pair of a token, added to a clock.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The most `sync.keep_runs` accepted, subtracted from today's date: 100 years of 365.25 days.
pub const MAX_KEEP_RUNS: Duration = Duration::from_secs(100 * 31_557_600);
/// The most `api.max_body_bytes` accepted.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// The values Postgres accepts for `synchronous_commit` (its documentation, "Write Ahead Log").
pub const SYNCHRONOUS_COMMIT: [&str; 5] = ["on", "off", "local", "remote_write", "remote_apply"];

impl Settings {
    /// Checks every value, naming the offending key. [`Settings::load`] calls it; call it again
    /// after changing settings by hand.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        let mut problem = |msg: String| problems.push(msg);

        let db = &self.database;
        match Url::parse(db.url.expose()) {
            Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {}
            _ => problem(format!(
                "database.url must be a postgres:// URL, got {}",
                redact_url(db.url.expose())
            )),
        }
        if let Some(n) = db.max_connections
            && n < self.min_pool_size()
        {
            problem(format!(
                "database.max_connections must be at least {} (sync.concurrency {} + 2: each pair \
                 synced at once holds a connection, plus two for the rest), got {n}; raise it, or \
                 remove it to take that minimum",
                self.min_pool_size(),
                self.sync.concurrency
            ));
        }
        if let Err(msg) = check_schema(&db.schema) {
            problem(msg);
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&db.statement_timeout) {
            problem(format!(
                "database.statement_timeout must be between 1s and 1h, got {}",
                humantime::format_duration(db.statement_timeout)
            ));
        }
        if let Some(value) = &db.synchronous_commit
            && !SYNCHRONOUS_COMMIT.contains(&value.as_str())
        {
            problem(format!(
                "database.synchronous_commit must be one of {} (remove the key to follow the \
                 server), got {value:?}",
                SYNCHRONOUS_COMMIT.join(", ")
            ));
        }

        let api = &self.api;
        if let Err(msg) = check_base_url(&api.base_url, api.allow_insecure_http) {
            problem(msg);
        }
        if api.token.is_some() && api.token_file.is_some() {
            problem(format!("{BOTH_TOKENS}; keep one"));
        }
        if api.token.as_ref().is_some_and(Secret::is_empty) {
            problem(
                "api.token must not be empty (remove the key if targets carry their own)".into(),
            );
        }
        if !(1..=1000).contains(&api.page_size) {
            problem(format!(
                "api.page_size must be between 1 and 1000, got {}",
                api.page_size
            ));
        }
        if api.timeout.is_zero() || api.timeout > MAX_API_TIMEOUT {
            problem(format!(
                "api.timeout must be more than 0s and at most {}, got {}",
                humantime::format_duration(MAX_API_TIMEOUT),
                humantime::format_duration(api.timeout)
            ));
        }
        if api.read_timeout.is_zero() || api.read_timeout > MAX_API_TIMEOUT {
            problem(format!(
                "api.read_timeout must be more than 0s and at most {}, got {}",
                humantime::format_duration(MAX_API_TIMEOUT),
                humantime::format_duration(api.read_timeout)
            ));
        }
        for (key, value, max) in [
            ("api.retry_backoff", api.retry_backoff, MAX_RETRY_BACKOFF),
            ("api.max_retry_after", api.max_retry_after, MAX_RETRY_AFTER),
        ] {
            if value > max {
                problem(at_most(key, value, max));
            }
        }
        if let Some(rps) = api.max_requests_per_second
            && !(rps.is_finite() && rps > 0.0)
        {
            problem(format!(
                "api.max_requests_per_second must be more than 0 (remove the key for no cap), got {rps}"
            ));
        }
        if !(1..=256).contains(&api.max_concurrency) {
            problem(format!(
                "api.max_concurrency must be between 1 and 256, got {}",
                api.max_concurrency
            ));
        }
        if !(1..=MAX_BODY_BYTES).contains(&api.max_body_bytes) {
            problem(format!(
                "api.max_body_bytes must be between 1 and {MAX_BODY_BYTES} (1 GiB), got {}",
                api.max_body_bytes
            ));
        }
        if api.max_body_bytes_in_flight < api.max_body_bytes {
            problem(format!(
                "api.max_body_bytes_in_flight ({}) must be at least api.max_body_bytes ({}): \
                 one whole body must fit",
                api.max_body_bytes_in_flight, api.max_body_bytes
            ));
        }

        if let Err(msg) = self.http.token() {
            problem(msg);
        }

        if let Err(msg) = check_cron(&self.schedule.cron) {
            problem(msg);
        }

        if self.sync.settle_after < MIN_SETTLE_AFTER {
            problem(format!(
                "sync.settle_after must be at least {}, got {}: a visit is settled (final) once \
                 its lastOnlineAt is older than this, and the mark never reads a settled visit \
                 again, so with less than the platform's gap between lastOnlineAt updates of a \
                 viewer still online, a visit would settle while it still grows (see Limits in \
                 docs/how-sync-works.md)",
                humantime::format_duration(MIN_SETTLE_AFTER),
                humantime::format_duration(self.sync.settle_after)
            ));
        }

        if self.sync.settle_after > MAX_SETTLE_AFTER {
            problem(at_most(
                "sync.settle_after",
                self.sync.settle_after,
                MAX_SETTLE_AFTER,
            ));
        }
        if self.sync.keep_runs > MAX_KEEP_RUNS {
            problem(at_most(
                "sync.keep_runs",
                self.sync.keep_runs,
                MAX_KEEP_RUNS,
            ));
        }
        if self.sync.keep_runs < Duration::from_secs(3600) {
            problem(format!(
                "sync.keep_runs must be at least 1h, got {}",
                humantime::format_duration(self.sync.keep_runs)
            ));
        }
        if self.sync.max_failure_backoff > Duration::from_secs(30 * 24 * 60 * 60) {
            problem(format!(
                "sync.max_failure_backoff must be at most 30d, got {}",
                humantime::format_duration(self.sync.max_failure_backoff)
            ));
        }
        if self.sync.failure_backoff > self.sync.max_failure_backoff {
            problem(format!(
                "sync.failure_backoff ({}) must not exceed sync.max_failure_backoff ({})",
                humantime::format_duration(self.sync.failure_backoff),
                humantime::format_duration(self.sync.max_failure_backoff)
            ));
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&self.sync.lease_period) {
            problem(format!(
                "sync.lease_period must be between 5s and 1h, got {}",
                humantime::format_duration(self.sync.lease_period)
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.sync.min_interval) {
            problem(format!(
                "sync.min_interval must be between 1s and 1h, got {}",
                humantime::format_duration(self.sync.min_interval)
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600))
            .contains(&self.sync.rate_half_life)
        {
            problem(format!(
                "sync.rate_half_life must be between 1m and 30d, got {}",
                humantime::format_duration(self.sync.rate_half_life)
            ));
        }
        if self.sync.fetch_ahead > 16 {
            problem(format!(
                "sync.fetch_ahead must be between 0 and 16, got {}",
                self.sync.fetch_ahead
            ));
        }
        if !(1..=64).contains(&self.sync.concurrency) {
            problem(format!(
                "sync.concurrency must be between 1 and 64, got {}",
                self.sync.concurrency
            ));
        }

        self.check_targets(&mut problem);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }
}

/// "KEY must be at most MAX, got VALUE", for a duration that is added to a clock.
fn at_most(key: &str, value: Duration, max: Duration) -> String {
    format!(
        "{key} must be at most {}, got {}",
        humantime::format_duration(max),
        humantime::format_duration(value)
    )
}

/// `database.schema` must be a plain lower-case identifier that Postgres keeps as written:
/// `[a-z_][a-z0-9_]*`, at most 63 bytes (longer names are truncated by Postgres).
pub fn check_schema(schema: &str) -> Result<(), String> {
    let plain = schema
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
    if schema.is_empty() || !plain {
        return Err(format!(
            "database.schema must be a plain identifier (lower-case letters, digits and _, not \
             starting with a digit), got {schema:?}"
        ));
    }
    if schema.len() > 63 {
        return Err(format!(
            "database.schema must be at most 63 bytes (Postgres's limit), got {} bytes",
            schema.len()
        ));
    }
    if schema.starts_with("pg_") {
        return Err(format!(
            "database.schema must not start with pg_ (reserved by Postgres), got {schema:?}"
        ));
    }
    Ok(())
}

fn check_base_url(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    check_scheme(url, allow_insecure_http)?;
    // Only what was written is named: the URL itself may carry a password.
    let extra = if !matches!(url.path(), "" | "/") {
        Some(format!("the path {}", url.path()))
    } else if url.query().is_some() {
        Some("a query".to_owned())
    } else if url.fragment().is_some() {
        Some("a fragment".to_owned())
    } else {
        None
    };
    match extra {
        Some(extra) => Err(format!(
            "api.base_url has {extra}; give only the scheme and host (and port), e.g. \
             https://shangzhibo.tv: szb-sync appends /api/v3/agent/… itself"
        )),
        None => Ok(()),
    }
}

fn check_scheme(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if loopback || allow_insecure_http {
                Ok(())
            } else {
                Err(
                    "api.base_url: plain http is only allowed for loopback hosts (set \
                     api.allow_insecure_http = true to override)"
                        .to_owned(),
                )
            }
        }
        other => Err(format!(
            "api.base_url must be an http(s) URL, got scheme {other:?}"
        )),
    }
}

/// `cron` parsed with the scheduler's parser and options (croner, seconds required), for the
/// times of its ticks.
pub fn cron_pattern(cron: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
}

/// The same parser and options as `tokio_cron_scheduler::Job::new_async` (croner, seconds
/// required), so that what passes here is what the scheduler accepts; croner is called directly
/// because the scheduler swallows its error text.
fn check_cron(cron: &str) -> Result<(), String> {
    const EXPECTS: &str = "szb-sync expects 6 (sec min hour day-of-month month day-of-week)";
    let fields = cron.split_whitespace().count();
    if !cron.trim_start().starts_with('@') {
        if fields == 5 {
            return Err(format!(
                "schedule.cron {cron:?} has 5 fields; {EXPECTS}, e.g. \"0 {}\"",
                cron.trim()
            ));
        }
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "schedule.cron {cron:?} has {fields} fields; {EXPECTS}, optionally a 7th for the \
                 year, e.g. \"0 */10 * * * *\""
            ));
        }
    }
    let pattern = cron_pattern(cron)
        .map_err(|e| format!("schedule.cron {cron:?} is not a valid cron expression: {e}"))?;
    if pattern
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(format!(
            "schedule.cron {cron:?} never fires: no time from now on matches it (a day that no \
             month has, such as February 31st, or a year gone by), so `run` would sync once at \
             start and never again"
        ));
    }
    tokio_cron_scheduler::JobBuilder::new()
        .with_schedule(cron)
        .map_err(|e| format!("schedule.cron {cron:?} is refused by the scheduler: {e}"))?;
    Ok(())
}
