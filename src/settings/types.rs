//! The settings types, one per section of the file, and their documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

use crate::secret::Secret;

/// Everything the daemon can be told. Build it with [`Settings::load`] (or [`Settings::load_from`]
/// in tests); [`Settings::default`] gives the documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub schedule: ScheduleSettings,
    pub sync: SyncSettings,
    pub http: HttpSettings,
    /// The (agent, users) lists to keep in step. May be empty for `migrate` and `demo`; see
    /// [`Settings::require_targets`].
    pub targets: Vec<Target>,
    /// `api.token_file`'s content, read once by [`Settings::from_figment`].
    #[serde(skip)]
    pub(super) file_token: Option<Secret>,
    /// Where each target's token was configured, by target index, for the error of a refused
    /// token; set by [`Settings::from_figment`], empty for settings built by hand.
    #[serde(skip)]
    pub(super) token_places: Vec<String>,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…`; may carry a password, hence a [`Secret`]. Log it with
    /// [`redact_url`](crate::secret::redact_url).
    pub url: Secret,
    /// Size of the connection pool. Unset: `sync.concurrency + 2` (each pair synced at once
    /// holds a connection for its run, plus two for everything else); set, at least that.
    pub max_connections: Option<u32>,
    /// The Postgres schema of szb-sync's tables and views (created if missing); every pooled
    /// connection has it as its `search_path`. A plain identifier, see
    /// [`check_schema`](super::check_schema).
    pub schema: String,
    /// Postgres ends a statement of szb-sync's after this long (`statement_timeout`), and
    /// szb-sync gives up on an answer a little later (see `store::deadline`). 1s..=1h.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `synchronous_commit` for szb-sync's connections; `None` follows the server's setting.
    pub synchronous_commit: Option<String>,
}

/// `[api]`: the upstream, shangzhibo.tv.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(deserialize_with = "deserialize_url")]
    pub base_url: Url,
    /// Token for every target that has none of its own.
    pub token: Option<Secret>,
    /// A file holding the token (e.g. a systemd credential); its content is trimmed.
    /// Mutually exclusive with `token`.
    pub token_file: Option<PathBuf>,
    /// Records per page, 1..=1000.
    pub page_size: u32,
    /// The deadline of one HTTP attempt, from sending it to the last byte of its body
    /// (connecting included, a wait for `max_body_bytes_in_flight` not). A timed-out attempt
    /// is retried once, not `max_retries` times. At most 1h.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest silence while waiting for the answer or the next bytes of its body; more
    /// than `timeout` acts as `timeout`. At most 1h.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Retries per request on 5xx, broken bodies and 429 without a `Retry-After`.
    pub max_retries: u32,
    /// First wait between retries; it doubles on each further retry.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait for a 429's `Retry-After`; longer asks are capped to this, then retried.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// The ceiling of requests in flight per token. szb-sync finds the upstream's pace below
    /// it on its own (adaptive concurrency: more while answers stay fast, fewer on 429, 503,
    /// timeouts or rising latency). 1..=256.
    pub max_concurrency: usize,
    /// An optional hard cap on requests per second per token, for a platform whose limit is
    /// known. Off by default. When set, > 0.
    pub max_requests_per_second: Option<f64>,
    /// Responses larger than this are refused. At most 1 GiB.
    pub max_body_bytes: u64,
    /// The memory of all response bodies being read at once, over every pair and token; a body
    /// that would go over it waits (its deadline paused) until others are done. At least
    /// `max_body_bytes`.
    pub max_body_bytes_in_flight: u64,
    /// Allow a plain `http://` base_url on a non-loopback host.
    pub allow_insecure_http: bool,
}

/// `[schedule]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Six fields with seconds (`sec min hour day-of-month month day-of-week`), optionally a
    /// seventh for the year. Evaluated in UTC.
    pub cron: String,
}

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// A visit is settled (can no longer change) once
    /// `lastOnlineAt <= upstream now - settle_after`; the mark only moves past settled visits.
    /// At least [`MIN_SETTLE_AFTER`](super::MIN_SETTLE_AFTER).
    #[serde(with = "humantime_serde")]
    pub settle_after: Duration,
    /// Pairs synced at once, 1..=64.
    pub concurrency: usize,
    /// Windows of one pair fetched ahead of the one being read, 0..=16. They share the
    /// token's limit of requests in flight (`api.max_concurrency`).
    pub fetch_ahead: usize,
    /// `sync_runs` and `sync_passes` rows older than this, and `sync_rejects` rows last read
    /// longer ago, are pruned by the daemon, after each pass, in small batches. At least an hour.
    #[serde(with = "humantime_serde")]
    pub keep_runs: Duration,
    /// How long `run` waits before trying a failing pair again: a pair whose token is refused
    /// at once, others after 3 failed runs in a row. The wait doubles with each further
    /// failure, up to `max_failure_backoff`. `sync` always tries every pair.
    #[serde(with = "humantime_serde")]
    pub failure_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_failure_backoff: Duration,
    /// How long a pair claimed by a replica stays its own without a renewal (renewed every
    /// third of it while the pair is walked). A replica that dies is known to be gone when its
    /// database connection closes; this is the bound when that cannot be seen. 5s..=1h.
    #[serde(with = "humantime_serde")]
    pub lease_period: Duration,
    /// How `run` spends its requests: `adaptive` (each pair its own due time, the busiest
    /// checked more often between ticks, every pair at least once per tick) or `every-tick`
    /// (every pair once per tick, round robin, nothing between ticks).
    pub refresh: Refresh,
    /// With `adaptive`, the shortest time between two checks of one pair. 1s..=1h.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// With `adaptive`, the half-life of a pair's arrival rate: a visit seen this long ago
    /// counts half as much as one seen now. 1m..=30d.
    #[serde(with = "humantime_serde")]
    pub rate_half_life: Duration,
}

/// `sync.refresh`: the schedule of checks between and at the cron ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// A due time per pair: the spare request budget goes to the pairs most likely to hold
    /// new visits (the square-root rule), every pair still checked once per tick.
    #[default]
    Adaptive,
    /// Every pair once per cron tick, nothing between ticks.
    EveryTick,
}

impl Refresh {
    pub const ALL: [Refresh; 2] = [Refresh::Adaptive, Refresh::EveryTick];

    pub fn as_str(self) -> &'static str {
        match self {
            Refresh::Adaptive => "adaptive",
            Refresh::EveryTick => "every-tick",
        }
    }
}

impl<'de> Deserialize<'de> for Refresh {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Refresh::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "sync.refresh must be \"adaptive\" or \"every-tick\", got {raw:?}"
                ))
            })
    }
}

/// `[http]`: the operators' listener of `run` (metrics, health, the status page).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Where to serve `/metrics`, `/livez`, `/readyz` and the status page, e.g.
    /// `"127.0.0.1:9187"`. None by default: no listener. The page shows pair ids and errors, not
    /// tokens: bind it to localhost or a private network.
    pub listen: Option<std::net::SocketAddr>,
    /// A token the status page and `/api/*` then need (`Authorization: Bearer`, or a browser's
    /// sign-in with the token as the password); `/metrics` and the probes stay open. Or
    /// `token_file`, a file holding it; not both.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
}

/// One `[[targets]]` entry: an agent and the users to sync under it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub agent_id: i64,
    #[serde(default)]
    pub user_ids: Vec<i64>,
    /// A file of user ids, one per line (`#` starts a comment; blank lines are ignored), beside
    /// or instead of `user_ids`. A relative path is relative to the working directory.
    #[serde(default)]
    pub user_ids_file: Option<PathBuf>,
    /// This agent's token; overrides `api.token` and `api.token_file`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Sync only this activity for these users.
    #[serde(default)]
    pub activity_id: Option<String>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://root@127.0.0.1:5432/szb"),
            max_connections: None,
            schema: "public".to_owned(),
            statement_timeout: Duration::from_secs(60),
            synchronous_commit: None,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://shangzhibo.tv").expect("valid default URL"),
            token: None,
            token_file: None,
            page_size: 1000,
            timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(10),
            max_retries: 5,
            retry_backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(5 * 60),
            max_concurrency: 16,
            max_requests_per_second: None,
            // A page of 1,000 simulated visits is 518,455 bytes: 8 times that, for longer names.
            max_body_bytes: 4 * 1024 * 1024,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            allow_insecure_http: false,
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            cron: "0 */10 * * * *".to_owned(),
        }
    }
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            settle_after: Duration::from_secs(2 * 60 * 60),
            concurrency: 16,
            fetch_ahead: 4,
            keep_runs: Duration::from_secs(30 * 24 * 60 * 60),
            failure_backoff: Duration::from_secs(10 * 60),
            max_failure_backoff: Duration::from_secs(6 * 60 * 60),
            lease_period: Duration::from_secs(60),
            refresh: Refresh::Adaptive,
            min_interval: Duration::from_secs(10),
            rate_half_life: Duration::from_secs(60 * 60),
        }
    }
}

fn deserialize_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let raw = String::deserialize(deserializer)?;
    Url::parse(&raw).map_err(|e| serde::de::Error::custom(format!("invalid URL {raw:?}: {e}")))
}
