//! Configuration: defaults, then a TOML file, then `SZB_…` environment variables; validated once.
//!
//! Users write these files, so the keys are a stable contract; `config/example.toml` lists every
//! one. Layers, lowest precedence first:
//!
//! 1. the defaults of [`Settings::default`];
//! 2. the TOML file: the path given to [`Settings::load`], else `config/szb-sync.toml` (relative
//!    to the working directory), else `/etc/szb-sync/szb-sync.toml` (the package's), one of
//!    which must exist unless `SZB_TARGETS` sets the targets
//!    ([`Settings::load_optional`], for the commands that need no config, makes it optional);
//! 3. `DATABASE_URL`, for `database.url` only;
//! 4. `SZB_SECTION__KEY` variables, `__` separating the levels: `SZB_DATABASE__URL`,
//!    `SZB_API__TOKEN`, `SZB_SYNC__SETTLE_AFTER=90m`. A bare `SZB_SECTION` sets a whole section
//!    (`SZB_TARGETS='[{agent_id=1,user_ids=[2]}]'`). Any other `SZB_` variable is refused
//!    like an unknown key, naming the closest real one (`SZB_API_TOKEN`: did you mean
//!    `SZB_API__TOKEN`?); only `SZB_TOKEN_FILE`, docker-compose.yml's, is not ours and ignored.
//!
//! So for the database URL: `SZB_DATABASE__URL` > `DATABASE_URL` > file > default.
//!
//! Unknown keys are errors, and every error names the key it is about. Tokens and the database URL
//! are [`Secret`]s: they never appear in `Debug` output or in error messages.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Deserializer};
use url::Url;

mod env;
mod report;

use crate::domain::{Pair, PairKey};
use crate::secret::{Secret, redact_url};
use env::with_env;
use report::describe_figment_error;

/// The start of the problem of a token configured twice, which [`name_token_sources`] rewrites.
const BOTH_TOKENS: &str = "api.token and api.token_file are both set";

/// Names where `api.token` and `api.token_file` came from when both are set: one may be a
/// leftover line in a copied file, the other a variable of the unit.
fn name_token_sources(error: SettingsError, figment: &Figment) -> SettingsError {
    let SettingsError::Invalid(problems) = error else {
        return error;
    };
    let from = |key| {
        report::source_of(figment, key).map_or_else(String::new, |place| format!(" (in {place})"))
    };
    let both = format!(
        "api.token{} and api.token_file{} are both set; keep one",
        from("api.token"),
        from("api.token_file")
    );
    let problems = problems
        .into_iter()
        .map(|p| {
            if p.starts_with(BOTH_TOKENS) {
                both.clone()
            } else {
                p
            }
        })
        .collect();
    SettingsError::Invalid(problems)
}

/// The configuration file used when none is given, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/szb-sync.toml";

/// Read when [`DEFAULT_CONFIG_PATH`] is absent: where the Debian package puts the configuration,
/// so day-two commands (`status`, `rejects`, `resync`) on a packaged host need no `--config`.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/szb-sync/szb-sync.toml";

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

/// Everything the daemon can be told. Build it with [`Settings::load`] (or [`Settings::load_from`]
/// in tests); [`Settings::default`] gives the documented defaults.
#[derive(Debug, Clone, Default, Deserialize)]
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
    file_token: Option<Secret>,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…`; may carry a password, hence a [`Secret`]. Log it with [`redact_url`].
    pub url: Secret,
    /// Size of the connection pool.
    pub max_connections: u32,
    /// The Postgres schema of szb-sync's tables and views (created if missing); every pooled
    /// connection has it as its `search_path`. A plain identifier, see [`check_schema`].
    pub schema: String,
    /// Postgres ends a statement of szb-sync's after this long (`statement_timeout`), and
    /// szb-sync gives up on an answer a little later (see `store::deadline`). 1s..=1h.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `synchronous_commit` for szb-sync's connections; `None` follows the server's setting.
    pub synchronous_commit: Option<String>,
}

/// `[api]`: the upstream, shangzhibo.tv.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Six fields with seconds (`sec min hour day-of-month month day-of-week`), optionally a
    /// seventh for the year. Evaluated in UTC.
    pub cron: String,
}

/// `[sync]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// A visit is settled (can no longer change) once
    /// `lastOnlineAt <= upstream now - settle_after`; the mark only moves past settled visits.
    /// At least [`MIN_SETTLE_AFTER`].
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
}

/// `[http]`: the operators' listener of `run` (metrics, health, the status page).
#[derive(Debug, Clone, Default, Deserialize)]
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

impl HttpSettings {
    /// `http.token`, or the content of `http.token_file` (trimmed); `None` when neither is set.
    pub fn token(&self) -> Result<Option<Secret>, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err("http.token and http.token_file are both set; keep one".to_owned());
            }
            (Some(token), None) => token.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Secret::new(t.trim()))
                .map_err(|e| format!("http.token_file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        if token.is_empty() {
            return Err(match &self.token_file {
                Some(path) => format!("http.token_file {} is empty", path.display()),
                None => "http.token must not be empty (remove the key for an open page)".to_owned(),
            });
        }
        Ok(Some(token))
    }
}

/// One `[[targets]]` entry: an agent and the users to sync under it.
#[derive(Debug, Clone, Deserialize)]
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

/// Where a user id of a target was configured, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// In `targets[i].user_ids`.
    List(usize),
    /// In `targets[i].user_ids_file`, at this line.
    File(usize, PathBuf, usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::List(i) => write!(f, "targets[{i}].user_ids"),
            Place::File(i, path, line) => {
                write!(
                    f,
                    "targets[{i}].user_ids_file {} line {line}",
                    path.display()
                )
            }
        }
    }
}

impl Target {
    /// The target's users, each with where it was written: `user_ids` first, then the file's
    /// lines. A file that cannot be read, or a line that is not a number, is an error naming
    /// the file and the line.
    fn users(&self, i: usize) -> Result<Vec<(i64, Place)>, String> {
        let mut users: Vec<(i64, Place)> =
            self.user_ids.iter().map(|u| (*u, Place::List(i))).collect();
        if let Some(path) = &self.user_ids_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("targets[{i}].user_ids_file {}: {e}", path.display()))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (n, line) in text.lines().enumerate() {
                let id = line.split('#').next().unwrap_or("").trim();
                if id.is_empty() {
                    continue;
                }
                let place = Place::File(i, path.clone(), n + 1);
                let id = id
                    .parse::<i64>()
                    .map_err(|_| format!("{place}: {id:?} is not a user id"))?;
                users.push((id, place));
            }
        }
        Ok(users)
    }
}

/// Why the settings could not be loaded or used. Messages name the key; none prints a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// No `--config`, nothing at [`DEFAULT_CONFIG_PATH`], and no targets from the environment.
    #[error(
        "no config file: expected {} (the default path, relative to the working directory {}) \
         or {} (the package's). Pass --config FILE, copy config/example.toml there, or set \
         SZB_TARGETS",
        expected.display(),
        cwd.display(),
        system.display()
    )]
    NoConfigFile {
        expected: PathBuf,
        cwd: PathBuf,
        system: PathBuf,
    },
    /// The file or environment could not be read into [`Settings`] (syntax, type, unknown key).
    #[error("{0}")]
    Parse(String),
    /// Values that parsed but make no sense; one message per problem, each naming its key.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("api.token_file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no targets configured: add a [[targets]] section with agent_id and user_ids to the \
         config file (or set SZB_TARGETS)"
    )]
    NoTargets,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://root@127.0.0.1:5432/szb"),
            max_connections: 8,
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
        }
    }
}

/// The process environment, as far as it is text.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Settings {
    /// Loads defaults, the TOML file and the process environment (see the module doc), then
    /// validates. An explicit `path` must exist; without one, [`DEFAULT_CONFIG_PATH`] or else
    /// [`SYSTEM_CONFIG_PATH`] must, unless the environment sets the targets (`SZB_TARGETS`): a
    /// unit or a container configured by variables alone.
    pub fn load(path: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(path, process_env())
    }

    /// Like [`Settings::load`], but without `path` and with neither default file, it takes the
    /// defaults and the environment: for the commands that need no configuration (`demo`,
    /// `bench`).
    pub fn load_optional(path: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_default(
            path,
            Path::new(DEFAULT_CONFIG_PATH),
            Path::new(SYSTEM_CONFIG_PATH),
            false,
            process_env(),
        )
    }

    /// Like [`Settings::load`], but from a TOML string and the given variables instead of a file
    /// and the process environment. For tests.
    pub fn load_from(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(toml) = toml {
            figment = figment.merge(Toml::string(toml));
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Self::from_figment(with_env(figment, env.collect())?)
    }

    fn load_with_env(
        path: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        Self::load_with_default(
            path,
            Path::new(DEFAULT_CONFIG_PATH),
            Path::new(SYSTEM_CONFIG_PATH),
            true,
            env,
        )
    }

    /// The file to read: `path`, else `default`, else `system`. With none of them, `required`
    /// (and no targets from the environment) is the error that names the files expected;
    /// otherwise the defaults and the environment alone.
    fn load_with_default(
        path: Option<&Path>,
        default: &Path,
        system: &Path,
        required: bool,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(SettingsError::FileNotFound(path.into())),
            Some(path) => Some(path.to_path_buf()),
            None if default.is_file() => Some(default.to_path_buf()),
            None if system.is_file() => Some(system.to_path_buf()),
            None if !required || env::sets_targets(&env) => None,
            None => {
                let cwd = std::env::current_dir().unwrap_or_default();
                return Err(SettingsError::NoConfigFile {
                    expected: cwd.join(default),
                    cwd,
                    system: system.to_path_buf(),
                });
            }
        };
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::from_figment(with_env(figment, env)?)
    }

    /// Extracts settings from a fully layered figment (defaults fill whatever it lacks), reads
    /// `api.token_file`, and validates.
    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let mut settings: Settings = figment.extract().map_err(describe_figment_error)?;
        // With both set, validation refuses the pair; the file is not even read.
        if let (Some(path), None) = (&settings.api.token_file, &settings.api.token) {
            settings.file_token = Some(read_token_file(path)?);
        }
        settings
            .validate()
            .map_err(|e| name_token_sources(e, &figment))?;
        Ok(settings)
    }

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
        if db.max_connections == 0 {
            problem("database.max_connections must be at least 1, got 0".to_owned());
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
                 the README)",
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

        let has_default_token = api.token.is_some() || api.token_file.is_some();
        let mut seen: BTreeMap<(i64, i64, Option<String>), Place> = BTreeMap::new();
        for (i, target) in self.targets.iter().enumerate() {
            if target.agent_id <= 0 {
                problem(format!(
                    "targets[{i}].agent_id must be a positive id, got {}",
                    target.agent_id
                ));
            }
            let users = match target.users(i) {
                Ok(users) => users,
                Err(msg) => {
                    problem(msg);
                    Vec::new()
                }
            };
            match &target.user_ids_file {
                None if users.is_empty() => {
                    problem(format!("targets[{i}].user_ids must not be empty"));
                }
                Some(path) if users.is_empty() && path.is_file() => problem(format!(
                    "targets[{i}]: user_ids_file {} holds no user ids, and user_ids is empty",
                    path.display()
                )),
                _ => {}
            }
            if target.token.as_ref().is_some_and(Secret::is_empty) {
                problem(format!("targets[{i}].token must not be empty"));
            } else if target.token.is_none() && !has_default_token {
                problem(format!(
                    "targets[{i}]: no token: set targets[{i}].token, api.token or api.token_file"
                ));
            }
            if target
                .activity_id
                .as_deref()
                .is_some_and(|a| a.trim().is_empty())
            {
                problem(format!(
                    "targets[{i}].activity_id must not be empty (remove the key to sync every \
                     activity)"
                ));
            }
            for (user_id, place) in users {
                if user_id <= 0 {
                    match place {
                        Place::List(_) => problem(format!(
                            "targets[{i}].user_ids must hold positive ids, got {user_id}"
                        )),
                        place => {
                            problem(format!("{place}: user ids must be positive, got {user_id}"))
                        }
                    }
                    continue;
                }
                let key = (target.agent_id, user_id, target.activity_id.clone());
                if let Some(first) = seen.get(&key) {
                    let activity = target
                        .activity_id
                        .as_ref()
                        .map(|a| format!(" activity {a:?}"))
                        .unwrap_or_default();
                    let again = match (first, &place) {
                        (Place::List(f), Place::List(_)) if *f == i => {
                            "twice in the same target".to_owned()
                        }
                        (Place::List(f), Place::List(_)) => format!("already in targets[{f}]"),
                        (first, place) => format!("listed at {place} and already at {first}"),
                    };
                    problem(format!(
                        "targets[{i}]: agent {} user {user_id}{activity} is {again}",
                        target.agent_id
                    ));
                } else {
                    seen.insert(key, place);
                }
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Connections the pool needs: each pair synced at once holds one for its whole run (it
    /// carries the pair's advisory lock), plus a few for everything else.
    pub fn pool_size(&self) -> u32 {
        let concurrency = u32::try_from(self.sync.concurrency).unwrap_or(u32::MAX);
        self.database
            .max_connections
            .max(concurrency.saturating_add(2))
    }

    /// For the commands that sync (`sync`, `run`): at least one target must be configured.
    pub fn require_targets(&self) -> Result<(), SettingsError> {
        if self.targets.is_empty() {
            Err(SettingsError::NoTargets)
        } else {
            Ok(())
        }
    }

    /// The keys whose change a reload (SIGHUP) cannot apply to a running daemon: everything but
    /// the targets and the tokens, which the next pass takes.
    pub fn restart_needed_for(&self, next: &Settings) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key: &'static str, a: String, b: String| {
            if a != b {
                keys.push(key);
            }
        };
        check(
            "database.url",
            self.database.url.expose().to_owned(),
            next.database.url.expose().to_owned(),
        );
        check(
            "database.schema",
            self.database.schema.clone(),
            next.database.schema.clone(),
        );
        check(
            "database.max_connections",
            self.database.max_connections.to_string(),
            next.database.max_connections.to_string(),
        );
        check(
            "database.statement_timeout",
            format!("{:?}", self.database.statement_timeout),
            format!("{:?}", next.database.statement_timeout),
        );
        check(
            "database.synchronous_commit",
            format!("{:?}", self.database.synchronous_commit),
            format!("{:?}", next.database.synchronous_commit),
        );
        let api = |a: &ApiSettings| {
            format!(
                "{} {} {:?} {:?} {} {:?} {:?} {} {:?} {} {} {}",
                a.base_url,
                a.page_size,
                a.timeout,
                a.read_timeout,
                a.max_retries,
                a.retry_backoff,
                a.max_retry_after,
                a.max_concurrency,
                a.max_requests_per_second,
                a.max_body_bytes,
                a.max_body_bytes_in_flight,
                a.allow_insecure_http
            )
        };
        check("[api] (other than tokens)", api(&self.api), api(&next.api));
        check(
            "schedule.cron",
            self.schedule.cron.clone(),
            next.schedule.cron.clone(),
        );
        check(
            "[sync]",
            format!("{:?}", self.sync),
            format!("{:?}", next.sync),
        );
        check(
            "http.listen",
            format!("{:?}", self.http.listen),
            format!("{:?}", next.http.listen),
        );
        check(
            "http.token",
            format!(
                "{:?}",
                self.http.token().map(|t| t.map(|t| t.expose().to_owned()))
            ),
            format!(
                "{:?}",
                next.http.token().map(|t| t.map(|t| t.expose().to_owned()))
            ),
        );
        keys
    }

    /// One entry per (target, user id), in configuration order, with its token resolved:
    /// the target's own token, else `api.token`, else the content of `api.token_file`.
    pub fn pairs(&self) -> Result<Vec<Pair>, SettingsError> {
        let file_token = match (&self.file_token, &self.api.token_file) {
            (Some(token), _) => Some(token.clone()),
            // Settings built by hand rather than loaded: read the file now.
            (None, Some(path)) if self.api.token.is_none() => Some(read_token_file(path)?),
            _ => None,
        };
        let mut pairs = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            let token = target
                .token
                .as_ref()
                .or(self.api.token.as_ref())
                .or(file_token.as_ref())
                .ok_or_else(|| {
                    SettingsError::Invalid(vec![format!(
                        "targets[{i}]: no token: set targets[{i}].token, api.token or \
                         api.token_file"
                    )])
                })?;
            let users = target
                .users(i)
                .map_err(|msg| SettingsError::Invalid(vec![msg]))?;
            for (user_id, _) in users {
                pairs.push(Pair {
                    key: PairKey::new(target.agent_id, user_id, target.activity_id.clone()),
                    token: token.clone(),
                });
            }
        }
        Ok(pairs)
    }
}

fn read_token_file(path: &Path) -> Result<Secret, SettingsError> {
    let content = std::fs::read_to_string(path).map_err(|source| SettingsError::TokenFile {
        path: path.into(),
        source,
    })?;
    let token = content.trim();
    if token.is_empty() {
        return Err(SettingsError::Invalid(vec![format!(
            "api.token_file {} is empty",
            path.display()
        )]));
    }
    Ok(Secret::new(token))
}

fn deserialize_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let raw = String::deserialize(deserializer)?;
    Url::parse(&raw).map_err(|e| serde::de::Error::custom(format!("invalid URL {raw:?}: {e}")))
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn load(toml: &str) -> Result<Settings, SettingsError> {
        Settings::load_from(Some(toml), &[])
    }

    fn error(toml: &str) -> String {
        load(toml)
            .expect_err("settings should be refused")
            .to_string()
    }

    const TOKEN: &str = "tok-SECRET-4711";

    #[test]
    fn defaults_are_the_documented_values() {
        let s = Settings::load_from(None, &[]).unwrap();

        assert_eq!(
            s.database.url.expose(),
            "postgres://root@127.0.0.1:5432/szb"
        );
        assert_eq!(s.database.max_connections, 8);
        assert_eq!(s.api.base_url.as_str(), "https://shangzhibo.tv/");
        assert!(s.api.token.is_none() && s.api.token_file.is_none());
        assert_eq!(s.api.page_size, 1000);
        assert_eq!(s.api.timeout, Duration::from_secs(30));
        assert_eq!(s.api.max_retries, 5);
        assert_eq!(s.api.retry_backoff, Duration::from_millis(500));
        assert_eq!(s.api.max_retry_after, Duration::from_secs(300));
        assert_eq!(s.api.max_concurrency, 16);
        assert_eq!(s.api.max_requests_per_second, None);
        assert_eq!(s.api.read_timeout, Duration::from_secs(10));
        assert_eq!(s.api.max_body_bytes, 4_194_304);
        assert_eq!(s.api.max_body_bytes_in_flight, 33_554_432);
        assert!(!s.api.allow_insecure_http);
        assert_eq!(s.schedule.cron, "0 */10 * * * *");
        assert_eq!(s.sync.settle_after, Duration::from_secs(7200));
        assert_eq!(s.sync.concurrency, 16);
        assert_eq!(s.sync.fetch_ahead, 4);
        assert_eq!(s.sync.keep_runs, Duration::from_secs(30 * 86_400));
        assert!(s.targets.is_empty());
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn statement_timeout_and_synchronous_commit_default_to_60s_and_the_servers_and_are_checked() {
        let s = load("").unwrap();
        assert_eq!(s.database.statement_timeout, Duration::from_secs(60));
        assert_eq!(s.database.synchronous_commit, None);
        let set = Settings::load_from(
            Some("[database]\nstatement_timeout = \"5m\"\n"),
            &[("SZB_DATABASE__SYNCHRONOUS_COMMIT", "off")],
        )
        .unwrap();
        assert_eq!(set.database.statement_timeout, Duration::from_secs(300));
        assert_eq!(set.database.synchronous_commit.as_deref(), Some("off"));
        for bad in ["0s", "500ms", "2h"] {
            let msg = error(&format!("[database]\nstatement_timeout = {bad:?}\n"));
            assert!(
                msg.contains("database.statement_timeout must be between 1s and 1h"),
                "{bad}: {msg}"
            );
        }
        let msg = error("[database]\nsynchronous_commit = \"sometimes\"\n");
        assert!(
            msg.contains("database.synchronous_commit must be one of on, off, local"),
            "{msg}"
        );
    }

    #[test]
    fn database_schema_defaults_to_public_comes_from_the_env_and_must_be_a_plain_identifier() {
        assert_eq!(load("").unwrap().database.schema, "public");
        let from_env = Settings::load_from(
            Some("[database]\nschema = \"from_file\"\n"),
            &[("SZB_DATABASE__SCHEMA", "szb_2")],
        )
        .unwrap();
        assert_eq!(from_env.database.schema, "szb_2");
        for bad in [
            "", "Szb", "2szb", "szb-sync", "a b", "x;drop", "\"q\"", "pg_szb",
        ] {
            let msg = error(&format!("[database]\nschema = {bad:?}\n"));
            assert!(msg.contains("database.schema must"), "{bad}: {msg}");
        }
        let long = "s".repeat(64);
        let msg = error(&format!("[database]\nschema = \"{long}\"\n"));
        assert!(
            msg.contains("at most 63 bytes (Postgres's limit), got 64 bytes"),
            "{msg}"
        );
        assert!(load(&format!("[database]\nschema = \"{}\"\n", "s".repeat(63))).is_ok());
    }

    #[test]
    fn toml_overrides_the_defaults() {
        let s = load(
            r#"
            [database]
            url = "postgres://app@db/szb"
            [api]
            token = "t"
            page_size = 200
            timeout = "1m 30s"
            max_requests_per_second = 2
            [schedule]
            cron = "30 0 * * * *"
            [sync]
            settle_after = "45m"
            concurrency = 8
            [[targets]]
            agent_id = 105131
            user_ids = [15460259, 15460260]
            [[targets]]
            agent_id = 7
            user_ids = [8]
            token = "own"
            activity_id = "act-1"
            "#,
        )
        .unwrap();

        assert_eq!(s.database.url.expose(), "postgres://app@db/szb");
        assert_eq!(s.database.max_connections, 8);
        assert_eq!(s.api.page_size, 200);
        assert_eq!(s.api.timeout, Duration::from_secs(90));
        assert_eq!(s.api.max_requests_per_second, Some(2.0));
        assert_eq!(s.schedule.cron, "30 0 * * * *");
        assert_eq!(s.sync.settle_after, Duration::from_secs(45 * 60));
        assert_eq!(s.sync.concurrency, 8);
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.targets[1].activity_id.as_deref(), Some("act-1"));
    }

    #[test]
    fn environment_overrides_the_file_with_double_underscore_nesting() {
        let toml = "[api]\npage_size = 10\ntoken = \"from-file\"\n[sync]\nconcurrency = 2\n";
        let env = [
            ("SZB_API__PAGE_SIZE", "20"),
            ("SZB_API__TOKEN", "12345"),
            ("SZB_SYNC__SETTLE_AFTER", "90m"),
            ("SZB_SCHEDULE__CRON", "0 0 * * * *"),
            ("SZB_API__ALLOW_INSECURE_HTTP", "true"),
            ("SZB_TOKEN_FILE", "not ours: docker-compose.yml's"),
            ("UNRELATED", "x"),
        ];

        let s = Settings::load_from(Some(toml), &env).unwrap();

        assert_eq!(s.api.page_size, 20);
        assert_eq!(s.api.token.as_ref().unwrap().expose(), "12345");
        assert_eq!(s.sync.settle_after, Duration::from_secs(90 * 60));
        assert_eq!(s.sync.concurrency, 2);
        assert_eq!(s.schedule.cron, "0 0 * * * *");
        assert!(s.api.allow_insecure_http);
    }

    #[test]
    fn szb_database_url_beats_database_url_beats_the_file() {
        let toml = "[database]\nurl = \"postgres://file/szb\"\n";
        let plain = ("DATABASE_URL", "postgres://plain/szb");
        let szb = ("SZB_DATABASE__URL", "postgres://szb/szb");

        let file_only = Settings::load_from(Some(toml), &[]).unwrap();
        let with_plain = Settings::load_from(Some(toml), &[plain]).unwrap();
        let with_both = Settings::load_from(Some(toml), &[szb, plain]).unwrap();

        assert_eq!(file_only.database.url.expose(), "postgres://file/szb");
        assert_eq!(with_plain.database.url.expose(), "postgres://plain/szb");
        assert_eq!(with_both.database.url.expose(), "postgres://szb/szb");
    }

    #[test]
    fn targets_can_come_from_the_environment() {
        let env = [
            ("SZB_API__TOKEN", "t"),
            ("SZB_TARGETS", "[{agent_id=1, user_ids=[2, 3]}]"),
        ];

        let s = Settings::load_from(None, &env).unwrap();

        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets[0].user_ids, vec![2, 3]);
    }

    #[test]
    fn page_size_out_of_range_names_the_key() {
        let msg = error("[api]\npage_size = 5000\n");
        assert!(
            msg.contains("api.page_size must be between 1 and 1000, got 5000"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_naming_key_and_section() {
        let msg = error("[api]\npagesize = 10\n");
        assert!(msg.contains("unknown key `api.pagesize` in [api]"), "{msg}");
        assert!(msg.contains("page_size"), "{msg}");

        let msg = error("[[targets]]\nagent_id = 1\nuser_ids = [2]\nuser = 3\n");
        assert!(
            msg.contains("unknown key `targets[0].user` in [targets[0]]"),
            "{msg}"
        );

        let msg = error("[databse]\nurl = \"postgres://x/y\"\n");
        assert!(
            msg.contains("unknown key `databse` at the top level"),
            "{msg}"
        );

        let msg = Settings::load_from(None, &[("SZB_API__PAGESIZE", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`api.pagesize`") && msg.contains("SZB_API__PAGESIZE"),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_variable() {
        let msg = Settings::load_from(None, &[("SZB_API__PAGE_SIZE", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("config error at api.page_size: invalid type"),
            "{msg}"
        );
        assert!(msg.contains("SZB_API__PAGE_SIZE"), "{msg}");
    }

    #[test]
    fn a_wrong_type_in_a_file_names_the_key_and_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[api]\npage_size = \"x\"").unwrap();

        let msg = Settings::load_with_env(Some(file.path()), vec![])
            .unwrap_err()
            .to_string();

        assert!(
            msg.contains(r#"config error at api.page_size: invalid type: found string "x""#),
            "{msg}"
        );
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    }

    #[test]
    fn an_explicit_config_path_must_exist() {
        let msg = Settings::load(Some(Path::new("/nonexistent/szb.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "config file /nonexistent/szb.toml not found");
    }

    #[test]
    fn a_five_field_cron_is_explained() {
        let msg = error("[schedule]\ncron = \"*/5 * * * *\"\n");
        assert!(
            msg.contains(
                r#"schedule.cron "*/5 * * * *" has 5 fields; szb-sync expects 6 (sec min hour day-of-month month day-of-week), e.g. "0 */5 * * * *""#
            ),
            "{msg}"
        );
    }

    #[test]
    fn an_unparsable_cron_shows_the_parser_error() {
        let msg = error("[schedule]\ncron = \"0 61 * * * *\"\n");
        assert!(
            msg.starts_with(r#"schedule.cron "0 61 * * * *" is not a valid cron"#),
            "{msg}"
        );
        assert!(
            msg.len() > r#"schedule.cron "0 61 * * * *" is not a valid cron expression: "#.len()
        );

        // A year field: next year's, so the test never meets a year in the past.
        let next_year = chrono::Datelike::year(&chrono::Utc::now()) + 1;
        assert!(
            load(&format!(
                "[schedule]\ncron = \"0 0 12 * * Mon-Fri {next_year}\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_settle_after_below_the_floor_is_refused_naming_key_floor_and_why() {
        for short in ["0s", "1m 30s", "4m 59s"] {
            let msg = error(&format!("[sync]\nsettle_after = \"{short}\"\n"));
            assert!(
                msg.contains(&format!(
                    "sync.settle_after must be at least 5m, got {short}"
                )),
                "{msg}"
            );
            assert!(msg.contains("lastOnlineAt"), "says why: {msg}");
        }
        let msg = Settings::load_from(None, &[("SZB_SYNC__SETTLE_AFTER", "1s")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("sync.settle_after must be at least 5m, got 1s"),
            "{msg}"
        );

        let floor = load("[sync]\nsettle_after = \"5m\"\n").unwrap();
        assert_eq!(floor.sync.settle_after, MIN_SETTLE_AFTER);
    }

    #[test]
    fn durations_added_to_a_clock_are_refused_above_their_maximum_naming_key_and_maximum() {
        // Each of these once reached `Instant + wait` or `DateTime - d` and panicked there.
        for (toml, expect) in [
            (
                "[sync]\nsettle_after = \"100000000y\"\n",
                "sync.settle_after must be at most 30days, got 100000000years",
            ),
            (
                "[sync]\nkeep_runs = \"200y\"\n",
                "sync.keep_runs must be at most 100years, got 200years",
            ),
            (
                "[api]\nmax_retry_after = \"100000000y\"\n",
                "api.max_retry_after must be at most 1day, got 100000000years",
            ),
            (
                "[api]\nretry_backoff = \"2h\"\n",
                "api.retry_backoff must be at most 1h, got 2h",
            ),
            (
                "[api]\ntimeout = \"100000000y\"\n",
                "api.timeout must be more than 0s and at most 1h, got 100000000years",
            ),
            (
                "[api]\nread_timeout = \"0s\"\n",
                "api.read_timeout must be more than 0s and at most 1h, got 0s",
            ),
        ] {
            let msg = error(toml);
            assert!(msg.contains(expect), "{toml}: {msg}");
        }
        let ceiling = load(
            "[sync]\nsettle_after = \"30d\"\nkeep_runs = \"100y\"\n\
             [api]\nmax_retry_after = \"1d\"\ntimeout = \"1h\"\nread_timeout = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(ceiling.sync.settle_after, MAX_SETTLE_AFTER);
        assert_eq!(ceiling.api.max_retry_after, MAX_RETRY_AFTER);
    }

    #[test]
    fn body_limits_are_refused_when_one_body_could_not_fit_in_flight() {
        let msg = error("[api]\nmax_body_bytes = 67108864\n");
        assert!(
            msg.contains(
                "api.max_body_bytes_in_flight (33554432) must be at least api.max_body_bytes \
                 (67108864)"
            ),
            "{msg}"
        );
        let msg = error("[api]\nmax_body_bytes = 0\n");
        assert!(
            msg.contains("api.max_body_bytes must be between 1 and"),
            "{msg}"
        );
        let msg =
            error("[api]\nmax_body_bytes = 2147483648\nmax_body_bytes_in_flight = 4294967296\n");
        assert!(msg.contains("(1 GiB), got 2147483648"), "{msg}");
        let equal = load("[api]\nmax_body_bytes = 1024\nmax_body_bytes_in_flight = 1024\n");
        assert!(equal.is_ok(), "{equal:?}");
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        for never in ["0 0 0 31 2 *", "0 0 0 30 2 * *", "0 0 12 * * * 2020"] {
            let msg = error(&format!("[schedule]\ncron = \"{never}\"\n"));
            assert!(
                msg.contains(&format!("schedule.cron \"{never}\" never fires")),
                "{never}: {msg}"
            );
        }
        // Rare is not never: every fourth year, and once, decades from now.
        let far = chrono::Datelike::year(&chrono::Utc::now()) + 70;
        assert!(load("[schedule]\ncron = \"0 0 0 29 2 *\"\n").is_ok());
        assert!(load(&format!("[schedule]\ncron = \"0 0 0 1 1 * {far}\"\n")).is_ok());
    }

    #[test]
    fn a_base_url_with_a_path_query_or_fragment_is_refused() {
        for (url, what) in [
            ("https://shangzhibo.tv/api/v3", "the path /api/v3"),
            ("https://shangzhibo.tv/api/v3/", "the path /api/v3/"),
            ("http://127.0.0.1:8080/x", "the path /x"),
            ("https://shangzhibo.tv/?a=1", "a query"),
            ("https://shangzhibo.tv#top", "a fragment"),
        ] {
            let msg = error(&format!("[api]\nbase_url = \"{url}\"\n"));
            assert!(
                msg.contains(&format!(
                    "api.base_url has {what}; give only the scheme and host (and port), e.g. \
                     https://shangzhibo.tv: szb-sync appends /api/v3/agent/… itself"
                )),
                "{url}: {msg}"
            );
        }
        let msg = error(&format!(
            "[api]\nbase_url = \"https://u:{TOKEN}@shangzhibo.tv/v3\"\n"
        ));
        assert!(!msg.contains(TOKEN), "{msg}");

        for ok in [
            "https://shangzhibo.tv",
            "https://shangzhibo.tv/",
            "http://127.0.0.1:8080/",
        ] {
            assert!(
                load(&format!("[api]\nbase_url = \"{ok}\"\n")).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        let msg = error("[api]\nbase_url = \"http://example.com\"\n");
        assert!(
            msg.contains(
                "api.base_url: plain http is only allowed for loopback hosts (set \
                 api.allow_insecure_http = true to override)"
            ),
            "{msg}"
        );

        for remote in ["http://api.example.com", "http://10.1.2.3:8080"] {
            let msg = error(&format!("[api]\nbase_url = \"{remote}\"\n"));
            assert!(msg.contains("allow_insecure_http"), "{remote}: {msg}");
            let allowed = load(&format!(
                "[api]\nbase_url = \"{remote}\"\nallow_insecure_http = true\n"
            ))
            .unwrap();
            assert_eq!(allowed.api.base_url.as_str().trim_end_matches('/'), remote);
        }

        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(
                load(&format!("[api]\nbase_url = \"{ok}\"\n")).is_ok(),
                "{ok}"
            );
        }
        assert!(
            load("[api]\nbase_url = \"http://example.com\"\nallow_insecure_http = true\n").is_ok()
        );
        let msg = error("[api]\nbase_url = \"not a url\"\n");
        assert!(
            msg.contains("config error at api.base_url: invalid URL"),
            "{msg}"
        );
    }

    #[test]
    fn targets_are_checked() {
        let msg = error("[[targets]]\nagent_id = 1\nuser_ids = []\ntoken = \"t\"\n");
        assert!(
            msg.contains("targets[0].user_ids must not be empty"),
            "{msg}"
        );

        let msg = error(
            "[[targets]]\nagent_id = 1\nuser_ids = [2]\ntoken = \"t\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [3]\n",
        );
        assert!(
            msg.contains("targets[1]: no token: set targets[1].token, api.token or api.token_file"),
            "{msg}"
        );

        let msg = error("[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 0\nuser_ids = [-2]\n");
        assert!(
            msg.contains("targets[0].agent_id must be a positive id, got 0"),
            "{msg}"
        );
        assert!(
            msg.contains("targets[0].user_ids must hold positive ids, got -2"),
            "{msg}"
        );

        let msg = error("[[targets]]\nuser_ids = [2]\n");
        assert!(msg.contains("missing field `agent_id`"), "{msg}");
    }

    #[test]
    fn a_pair_listed_twice_is_refused() {
        let msg = error(
            "[api]\ntoken = \"t\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [2, 3]\n\
             [[targets]]\nagent_id = 1\nuser_ids = [3]\n",
        );
        assert!(
            msg.contains("targets[1]: agent 1 user 3 is already in targets[0]"),
            "{msg}"
        );

        // Another activity filter is another list upstream: allowed.
        assert!(
            load(
                "[api]\ntoken = \"t\"\n\
                 [[targets]]\nagent_id = 1\nuser_ids = [3]\n\
                 [[targets]]\nagent_id = 1\nuser_ids = [3]\nactivity_id = \"a\"\n",
            )
            .is_ok()
        );
    }

    #[test]
    fn tokens_never_show_in_debug_output_or_errors() {
        let s = load(&format!(
            "[database]\nurl = \"postgres://u:{TOKEN}@db/szb\"\n\
             [api]\ntoken = \"{TOKEN}\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [2]\ntoken = \"{TOKEN}\"\n"
        ))
        .unwrap();
        let pairs = s.pairs().unwrap();

        assert!(!format!("{s:?} {pairs:?}").contains(TOKEN));

        let msg = error(&format!("[api]\ntoken = {{ x = \"{TOKEN}\" }}\n"));
        assert!(!msg.contains(TOKEN), "{msg}");
        let msg = error(&format!("[api]\ntoken = \"{TOKEN}\n"));
        assert!(!msg.contains(TOKEN), "{msg}");
        let msg = error(&format!("[database]\nurl = \"mysql://u:{TOKEN}@db/x\"\n"));
        assert!(
            msg.contains("database.url must be a postgres:// URL"),
            "{msg}"
        );
        assert!(!msg.contains(TOKEN), "{msg}");
    }

    #[test]
    fn token_file_is_read_trimmed_and_used() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "  {TOKEN}  ").unwrap();
        let toml = format!(
            "[api]\ntoken_file = {:?}\n\
             [[targets]]\nagent_id = 1\nuser_ids = [2]\n\
             [[targets]]\nagent_id = 3\nuser_ids = [4]\ntoken = \"own\"\n",
            file.path()
        );

        let s = load(&toml).unwrap();
        std::fs::remove_file(file.path()).unwrap();
        let pairs = s.pairs().unwrap();

        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].key, PairKey::new(1, 2, None));
        assert_eq!(pairs[0].token.expose(), TOKEN);
        assert_eq!(pairs[1].token.expose(), "own");
        assert!(!format!("{s:?}").contains(TOKEN));
    }

    #[test]
    fn token_file_problems_name_the_path_not_the_content() {
        let msg = error("[api]\ntoken_file = \"/nonexistent/token\"\n");
        assert!(
            msg.starts_with("api.token_file /nonexistent/token: "),
            "{msg}"
        );

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{TOKEN}").unwrap();
        let msg = error(&format!(
            "[api]\ntoken = \"t\"\ntoken_file = {:?}\n",
            file.path()
        ));
        assert!(
            msg.contains("api.token and api.token_file are both set"),
            "{msg}"
        );
        assert!(!msg.contains(TOKEN), "{msg}");

        let empty = tempfile::NamedTempFile::new().unwrap();
        let msg = error(&format!("[api]\ntoken_file = {:?}\n", empty.path()));
        assert!(msg.contains("is empty"), "{msg}");
    }

    #[test]
    fn pairs_expand_each_user_and_prefer_the_target_token() {
        let s = load(
            "[api]\ntoken = \"shared\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [2, 3]\n\
             [[targets]]\nagent_id = 4\nuser_ids = [5]\ntoken = \"own\"\nactivity_id = \"a\"\n",
        )
        .unwrap();

        let pairs = s.pairs().unwrap();

        let got: Vec<_> = pairs
            .iter()
            .map(|p| (p.key.clone(), p.token.expose()))
            .collect();
        assert_eq!(
            got,
            vec![
                (PairKey::new(1, 2, None), "shared"),
                (PairKey::new(1, 3, None), "shared"),
                (PairKey::new(4, 5, Some("a".into())), "own"),
            ]
        );
    }

    fn ids_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{text}").unwrap();
        file
    }

    #[test]
    fn user_ids_can_come_from_a_file_beside_the_list() {
        // A byte-order mark, Windows line ends, comments and blank lines are all fine.
        let file = ids_file("\u{feff}# viewers of 105131\r\n3\r\n\n  4  # the boss\n5\n");
        let toml = format!(
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids = [2]\nuser_ids_file = {:?}\n\
             [[targets]]\nagent_id = 9\nuser_ids_file = {:?}\n",
            file.path(),
            file.path()
        );

        let pairs = load(&toml).unwrap().pairs().unwrap();

        let keys: Vec<(i64, i64)> = pairs
            .iter()
            .map(|p| (p.key.agent_id, p.key.user_id))
            .collect();
        assert_eq!(
            keys,
            [(1, 2), (1, 3), (1, 4), (1, 5), (9, 3), (9, 4), (9, 5)]
        );
    }

    #[test]
    fn a_bad_line_in_a_user_ids_file_names_the_file_and_the_line() {
        let file = ids_file("3\n4x\n");
        let path = file.path().display().to_string();
        let toml =
            format!("[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n");
        let msg = error(&toml);
        assert!(
            msg.contains(&format!(
                "targets[0].user_ids_file {path} line 2: \"4x\" is not a user id"
            )),
            "{msg}"
        );

        let negative = ids_file("3\n-4\n");
        let path = negative.path().display().to_string();
        let msg = error(&format!(
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n"
        ));
        assert!(
            msg.contains(&format!("{path} line 2: user ids must be positive, got -4")),
            "{msg}"
        );

        let msg = error(
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = \"/nonexistent/ids\"\n",
        );
        assert!(
            msg.contains("targets[0].user_ids_file /nonexistent/ids: "),
            "{msg}"
        );

        let empty = ids_file("# nobody yet\n");
        let msg = error(&format!(
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {:?}\n",
            empty.path()
        ));
        assert!(msg.contains("holds no user ids"), "{msg}");
    }

    #[test]
    fn a_pair_in_a_file_and_elsewhere_names_both_places() {
        let file = ids_file("7\n8\n3\n");
        let path = file.path().display().to_string();
        let msg = error(&format!(
            "[api]\ntoken = \"t\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [3]\n\
             [[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n"
        ));
        assert!(
            msg.contains(&format!(
                "targets[1]: agent 1 user 3 is listed at targets[1].user_ids_file {path} line 3 \
                 and already at targets[0].user_ids"
            )),
            "{msg}"
        );
    }

    #[test]
    fn backoff_settings_are_checked() {
        let msg = error("[sync]\nmax_failure_backoff = \"400d\"\n");
        assert!(
            msg.contains("sync.max_failure_backoff must be at most 30d"),
            "{msg}"
        );
        let msg = error("[sync]\nfailure_backoff = \"2h\"\nmax_failure_backoff = \"1h\"\n");
        assert!(
            msg.contains("must not exceed sync.max_failure_backoff"),
            "{msg}"
        );
        let msg = error("[sync]\nkeep_runs = \"10m\"\n");
        assert!(msg.contains("sync.keep_runs must be at least 1h"), "{msg}");
    }

    #[test]
    fn no_targets_loads_but_sync_commands_refuse() {
        let s = Settings::load_from(None, &[]).unwrap();
        assert!(s.pairs().unwrap().is_empty());
        assert!(matches!(s.require_targets(), Err(SettingsError::NoTargets)));
    }

    #[test]
    fn the_shipped_config_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        // The example leaves the token to the user: from the environment here.
        let token = vec![("SZB_API__TOKEN".to_owned(), "t0ken".to_owned())];
        let example = Settings::load_with_env(Some(&dir.join("example.toml")), token).unwrap();
        assert_eq!(example.targets.len(), 2);
        let demo = Settings::load_with_env(Some(&dir.join("demo.toml")), vec![]).unwrap();
        assert_eq!(demo.pairs().unwrap().len(), 3);
        assert!(
            demo.database.url.expose().ends_with("/szb_demo"),
            "{}",
            redact_url(demo.database.url.expose())
        );
    }

    #[test]
    fn the_example_leaves_the_token_to_the_user() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), "t0ken\n").unwrap();
        let env = vec![(
            "SZB_API__TOKEN_FILE".to_owned(),
            token_file.path().display().to_string(),
        )];

        let example = Settings::load_with_env(Some(&dir.join("example.toml")), env);

        assert!(example.is_ok(), "{}", example.unwrap_err());
    }

    #[test]
    fn a_token_set_twice_names_where_each_came_from() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[api]\ntoken = \"t0ken-secret\"").unwrap();
        let env = vec![(
            "SZB_API__TOKEN_FILE".to_owned(),
            "/run/credentials/szb-sync/token".to_owned(),
        )];

        let msg = Settings::load_with_env(Some(file.path()), env)
            .unwrap_err()
            .to_string();

        assert_eq!(
            msg,
            format!(
                "api.token (in the file {}) and api.token_file (in the environment variable \
                 SZB_API__TOKEN_FILE) are both set; keep one",
                file.path().display()
            )
        );
        assert!(!msg.contains("t0ken-secret"));
    }

    #[test]
    fn a_missing_default_config_file_is_an_error_unless_the_environment_sets_the_targets() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config/szb-sync.toml");
        let system = dir.path().join("etc/szb-sync/szb-sync.toml");
        let cwd = std::env::current_dir().unwrap();

        let msg = Settings::load_with_default(None, &default, &system, true, vec![])
            .unwrap_err()
            .to_string();
        let optional = Settings::load_with_default(None, &default, &system, false, vec![]);
        let from_env = Settings::load_with_default(
            None,
            &default,
            &system,
            true,
            vec![
                ("SZB_API__TOKEN".into(), "t".into()),
                ("SZB_TARGETS".into(), "[{agent_id=1,user_ids=[2]}]".into()),
            ],
        );

        assert_eq!(
            msg,
            format!(
                "no config file: expected {} (the default path, relative to the working \
                 directory {}) or {} (the package's). Pass --config FILE, copy \
                 config/example.toml there, or set SZB_TARGETS",
                default.display(),
                cwd.display(),
                system.display()
            )
        );
        assert_eq!(from_env.unwrap().targets.len(), 1);
        assert!(
            optional.unwrap().targets.is_empty(),
            "demo and bench need no file"
        );

        // With no file in the working directory, the package's file is read.
        std::fs::create_dir_all(system.parent().unwrap()).unwrap();
        std::fs::write(
            &system,
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 7\nuser_ids = [8]\n",
        )
        .unwrap();
        let packaged = Settings::load_with_default(None, &default, &system, true, vec![]).unwrap();
        assert_eq!(packaged.targets[0].agent_id, 7);
        // And the working directory's file comes first.
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::write(
            &default,
            "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 9\nuser_ids = [8]\n",
        )
        .unwrap();
        let local = Settings::load_with_default(None, &default, &system, true, vec![]).unwrap();
        assert_eq!(local.targets[0].agent_id, 9);
    }
}
