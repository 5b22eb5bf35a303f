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
//! are [`Secret`](crate::secret::Secret)s: they never appear in `Debug` output or in error
//! messages.
//!
//! The parts: the types and their defaults (`types`), loading the layers (`load`), the
//! environment layer (`env`) and the keys it knows, asked of the types (`keys`), the checks
//! and their bounds (`validate`), the targets, their user-id files and the token files
//! (`targets`), what a reload cannot apply (`reload`), and error messages (`report`); their
//! tests are in `tests/`, one file per part.

use std::path::PathBuf;

mod env;
mod keys;
mod load;
mod reload;
mod report;
mod targets;
mod types;
mod validate;

#[cfg(test)]
mod tests;

pub use keys::config_keys;
pub use load::{DEFAULT_CONFIG_PATH, SYSTEM_CONFIG_PATH};
pub use types::{
    ApiSettings, DatabaseSettings, HttpSettings, Refresh, ScheduleSettings, Settings, SyncSettings,
    Target,
};
pub use validate::{
    MAX_API_TIMEOUT, MAX_BODY_BYTES, MAX_KEEP_RUNS, MAX_RETRY_AFTER, MAX_RETRY_BACKOFF,
    MAX_SETTLE_AFTER, MIN_SETTLE_AFTER, SYNCHRONOUS_COMMIT, check_schema, cron_pattern,
};

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

impl Settings {
    /// The fewest connections the pool can work with: each pair synced at once holds one for
    /// its whole run (it carries the pair's advisory lock), plus two for everything else.
    pub fn min_pool_size(&self) -> u32 {
        u32::try_from(self.sync.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(2)
    }

    /// The pool's size: `database.max_connections` (validated to be at least
    /// [`Settings::min_pool_size`]), else that minimum.
    pub fn pool_size(&self) -> u32 {
        self.database
            .max_connections
            .unwrap_or_else(|| self.min_pool_size())
    }

    /// For the commands that sync (`sync`, `run`): at least one target must be configured.
    pub fn require_targets(&self) -> Result<(), SettingsError> {
        if self.targets.is_empty() {
            Err(SettingsError::NoTargets)
        } else {
            Ok(())
        }
    }
}
