//! Postgres: all SQL of the crate outside the migrations and the benchmark (`crate::bench`).
//!
//! - this file: the pool, connecting (with a reason when it fails), creating the database,
//!   migrations, and the store's error type;
//! - [`deadline`]: answers within a deadline, so a partition or a failover never hangs a pass;
//! - [`leases`]: claiming pairs, renewing and releasing their leases, recording finished runs;
//! - [`session`]: one walk of a leased pair, a pair's advisory lock, and `resync`'s forgetting;
//! - [`pages`]: one transaction per page: visits, activities, rejects and the mark;
//! - [`runs`]: a run's totals and how failing pairs back off;
//! - [`passes`]: the `sync_passes` rows, and pruning old history;
//! - [`status`]: what `szb-sync status` shows, for every pair in one query;
//! - [`rejects`]: what `szb-sync rejects` lists, filtered, in one query;
//! - [`reports`]: reads for the demo (the benchmark's own SQL is in `crate::bench`);
//! - [`board`]: reads for the status page and the metrics, one query per view.
//!
//! Each page is written with one statement per table (`INSERT … SELECT … FROM UNNEST(…)`), and
//! upserts only touch rows whose values differ, so an unchanged re-read writes nothing.
//!
//! Every statement is a file of its own in `src/store/sql/`, named for what it does
//! (`claim_due_pairs.sql`), loaded with `include_str!`; its first lines say what it does and
//! what its parameters are. Pairs are bound as three arrays by [`PairKeys`](pair_keys). The
//! advisory locks are SQL functions of the migrations (`szb_pair_lock_key`,
//! `szb_owner_lock_key`, `szb_advisory_lock_keys`), so every statement names the same lock;
//! text that must read the same in several files (whether a lease may be taken over) is
//! checked by [`statements`]' tests.

mod board;
mod deadline;
mod leases;
mod pages;
mod pair_keys;
mod passes;
mod rejects;
mod reports;
pub mod retry;
mod runs;
mod session;
mod statements;
mod status;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool, Postgres};

use crate::secret::{Secret, redact_url};

pub use board::{
    EXACT_TOTALS_UP_TO, LISTENER_CONNECTIONS, LISTENER_STATEMENT_TIMEOUT, PairCounts, PairPage,
    PairQuery, PairRow, PassRow, Totals,
};
pub use deadline::Deadline;
pub use leases::{
    ClaimPlan, Claimed, Coordinator, DueCandidate, DueLeft, FinishedRun, PairRate, new_owner_id,
};
pub use pages::{PageWrite, PageWritten};
pub use passes::PassTotals;
pub use rejects::{Reject, RejectFilter, Rejects};
pub use reports::{SAMPLE_QUERY, SampleRow};
pub use runs::{Backoff, RunTotals};
pub use session::{ForgetOutcome, PairLock, PairSession};
pub use status::PairStatus;

/// Migrations embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Its text is [`describe`]'s: the database's own message, without sqlx's wrapping or the
    /// server's source location, so `error` is not a `#[source]` (the chain would repeat it).
    #[error("cannot connect to Postgres at {url}: {}", describe(error))]
    Connect { url: String, error: sqlx::Error },
    #[error("cannot create database at {url}: {}", describe(error))]
    Create { url: String, error: sqlx::Error },
    #[error("database.url: {0}")]
    Config(String),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {context}: {}", describe(error))]
    Query {
        context: &'static str,
        error: sqlx::Error,
    },
    #[error(
        "{pair}: another szb-sync process took the pair over (this one's lease expired or its \
         connection was lost); the page was not written"
    )]
    LeaseLost { pair: String },
    #[error(
        "another session already holds the liveness lock of {owner}: the connection that held \
         it is still closing; the next statement tries again"
    )]
    OwnerTaken { owner: String },
    #[error("stored state of {pair} is inconsistent: {detail}")]
    Inconsistent { pair: String, detail: String },
    /// No answer in time: the network or the server is gone (a partition, a failover), or
    /// shutdown allowed no more time. The operation was dropped, and its connection with it.
    #[error("{}", timeout_text(context, *after, *stopping))]
    Timeout {
        context: &'static str,
        after: std::time::Duration,
        stopping: bool,
    },
}

fn timeout_text(context: &str, after: std::time::Duration, stopping: bool) -> String {
    if stopping {
        format!(
            "shutdown: the database had not answered while {context}, and the grace after the \
             signal is over; the operation was given up (Postgres rolls back its transaction)"
        )
    } else {
        format!(
            "the database did not answer within {} while {context} (a network partition or a \
             failover?); the operation was given up and its connection closed",
            humantime::format_duration(after)
        )
    }
}

impl StoreError {
    /// True when Postgres aborted the transaction to break a deadlock or a serialization
    /// conflict: nothing was written, and trying again is right.
    pub fn is_deadlock(&self) -> bool {
        match self {
            StoreError::Query {
                error: sqlx::Error::Database(db),
                ..
            } => matches!(db.code().as_deref(), Some("40P01" | "40001")),
            _ => false,
        }
    }

    /// True when a row that had to be new already existed (a unique key was violated).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Query {
                error: sqlx::Error::Database(db),
                ..
            } if db.code().as_deref() == Some("23505")
        )
    }

    /// True when the database itself is away (restart, network), as opposed to a bad query.
    pub fn is_connection(&self) -> bool {
        let source = match self {
            StoreError::Connect { .. } | StoreError::Timeout { .. } => return true,
            StoreError::Query { error, .. } => error,
            _ => return false,
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_) => true,
            // Connection exceptions (08…) and the server ending the session: an administrator
            // terminated it, or the server is shutting down or restarting (57P01-57P03).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        }
    }
}

fn query_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| StoreError::Query { context, error }
}

/// The `--config FILE` the user gave, as a shell word, for the hint of a missing database: run
/// as printed, `migrate --create-database` reads the same file. Set once by the command line.
static CONFIG_FOR_HINTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes the hint of a missing database repeat `--config path`.
pub fn hint_with_config(path: &std::path::Path) {
    let _ = CONFIG_FOR_HINTS.set(shell_word(&path.to_string_lossy()));
}

/// `word` as a POSIX shell reads it back: as is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:,@%+=".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `szb-sync [--config FILE] migrate --create-database`, with the `--config` the user gave.
fn create_database_command() -> String {
    match CONFIG_FOR_HINTS.get() {
        Some(config) => format!("szb-sync --config {config} migrate --create-database"),
        None => "szb-sync migrate --create-database".to_owned(),
    }
}

/// What a user is told of a driver error. A database's answer is its message alone: sqlx's
/// "error returned from database:" and the server's source location (`at line 948` of a
/// Postgres C file) are noise to a user. A database that does not exist says how to create it.
pub(crate) fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => format!(
            "{}; create it with `{}` or createdb",
            db.message(),
            create_database_command()
        ),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => crate::error::chain(other),
    }
}

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// For a direct connection that tells why the pool cannot connect (it only says it timed
    /// out). Holds the password: never printed.
    options: std::sync::Arc<PgConnectOptions>,
    /// The URL with its password masked, for messages.
    url: String,
    /// `database.schema`: every connection's `search_path`.
    schema: String,
    /// How long to wait for the database's answers.
    deadline: Deadline,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("schema", &self.schema)
            .field("deadline", &self.deadline.answer())
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects lazily to the tables in schema `public` (see [`Store::connect_lazy_in`]).
    pub fn connect_lazy(url: &Secret, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_lazy_in(url, "public", max_connections)
    }

    /// Connects lazily: the first query opens the first connection, so a database that is
    /// briefly away at start-up does not stop the daemon. Every connection has `schema` as its
    /// `search_path`, so every statement (migrations and `_sqlx_migrations` included) finds
    /// szb-sync's tables there; `schema` is a plain identifier (`settings::check_schema`).
    pub fn connect_lazy_in(
        url: &Secret,
        schema: &str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let defaults = crate::settings::DatabaseSettings::default();
        Self::connect_lazy_with(
            url,
            schema,
            max_connections,
            defaults.statement_timeout,
            None,
        )
    }

    /// Connects lazily as `[database]` says: `url`, `schema`, `statement_timeout` and
    /// `synchronous_commit`, with `max_connections` pooled.
    pub fn from_settings(
        database: &crate::settings::DatabaseSettings,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        Self::connect_lazy_with(
            &database.url,
            &database.schema,
            max_connections,
            database.statement_timeout,
            database.synchronous_commit.as_deref(),
        )
    }

    fn connect_lazy_with(
        url: &Secret,
        schema: &str,
        max_connections: u32,
        statement_timeout: std::time::Duration,
        synchronous_commit: Option<&str>,
    ) -> Result<Self, StoreError> {
        // sqlx does not know this libpq parameter, and would log its value in a warning.
        let has_key_password = url::Url::parse(url.expose())
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "sslpassword"));
        if has_key_password {
            return Err(StoreError::Config(
                "sslpassword is not supported: use a client key without a passphrase".to_owned(),
            ));
        }
        let options: PgConnectOptions =
            url.expose().parse().map_err(|error| StoreError::Connect {
                url: redact_url(url.expose()),
                error,
            })?;
        // `synchronous_commit` follows the server unless `database.synchronous_commit` says
        // otherwise: durability is the DBA's call (with `off`, a crash of Postgres loses the last
        // pages whole, rows and mark together, and the next sync reads them again).
        let options = options
            .options(deadline::session_options(
                statement_timeout,
                synchronous_commit,
            ))
            .options([("search_path", format!("\"{schema}\""))]);
        let deadline = Deadline::new(statement_timeout);
        let pool = deadline::pool_options(&deadline, max_connections.max(2))
            .connect_lazy_with(options.clone());
        Ok(Store {
            pool,
            options: std::sync::Arc::new(options),
            url: redact_url(url.expose()),
            schema: schema.to_owned(),
            deadline,
        })
    }

    /// Connects to the tables in schema `public`, and checks the database answers.
    pub async fn connect(url: &Secret, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_in(url, "public", max_connections).await
    }

    /// Connects to the tables in `schema`, and checks the database answers.
    pub async fn connect_in(
        url: &Secret,
        schema: &str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let store = Self::connect_lazy_in(url, schema, max_connections)?;
        store.reachable().await?;
        Ok(store)
    }

    /// The schema holding szb-sync's tables and views.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Opens one connection outside the pool: its error says why (refused, unknown host, bad
    /// password, no such database), where the pool would only say it timed out.
    pub async fn reachable(&self) -> Result<(), StoreError> {
        let conn = self.open("connecting").await?;
        let _ = tokio::time::timeout(self.deadline.ping(), conn.close()).await;
        Ok(())
    }

    /// A connection of its own, outside the pool, opened within the deadline.
    async fn open(&self, context: &'static str) -> Result<sqlx::PgConnection, StoreError> {
        self.deadline
            .within(context, async {
                sqlx::PgConnection::connect_with(&self.options)
                    .await
                    .map_err(|error| StoreError::Connect {
                        url: self.url.clone(),
                        error,
                    })
            })
            .await
    }

    /// How long this store waits for the database's answers.
    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }

    /// Shutdown was asked for: every operation, those in flight too, ends within `grace`.
    pub fn stop_within(&self, grace: std::time::Duration) {
        self.deadline.stop_within(grace);
    }

    /// The pool could not hand out a connection: ask the database directly why.
    async fn explain(&self, context: &'static str, source: sqlx::Error) -> StoreError {
        if matches!(source, sqlx::Error::PoolTimedOut)
            && let Err(e) = self.reachable().await
        {
            return e;
        }
        StoreError::Query {
            context,
            error: source,
        }
    }

    /// Creates the database named in `url` when it does not exist yet.
    pub async fn create_database_if_missing(url: &Secret) -> Result<bool, StoreError> {
        let err = |error| StoreError::Create {
            url: redact_url(url.expose()),
            error,
        };
        if Postgres::database_exists(url.expose()).await.map_err(err)? {
            return Ok(false);
        }
        match Postgres::create_database(url.expose()).await {
            Ok(()) => Ok(true),
            // Lost a race with another process creating it.
            Err(e)
                if Postgres::database_exists(url.expose())
                    .await
                    .unwrap_or(false) =>
            {
                tracing::debug!(error = %crate::error::logged(&e), "database appeared meanwhile");
                Ok(false)
            }
            Err(e) => Err(err(e)),
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Fails fast, with the reason, when the database is away.
        self.reachable().await?;
        self.create_schema_if_missing().await?;
        // On a connection of its own without `statement_timeout` (the later setting wins): a
        // migration may rewrite or check a large table for longer than any statement of a sync.
        let options = (*self.options)
            .clone()
            .options([("statement_timeout", "0")]);
        let migrating = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let migrated = MIGRATOR.run(&migrating).await;
        migrating.close().await;
        migrated?;
        Ok(())
    }

    /// Creates the schema before the migrations run in it. Asks first, so a role without
    /// `CREATE` on the database can still migrate into a schema that exists (`public`).
    async fn create_schema_if_missing(&self) -> Result<(), StoreError> {
        let exists: bool = sqlx::query_scalar(include_str!("sql/schema_exists.sql"))
            .bind(&self.schema)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("looking up database.schema"))?;
        if !exists {
            // A plain identifier, checked with the settings; quoted all the same.
            let create = include_str!("sql/create_schema.sql").replace("{schema}", &self.schema);
            let created = sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&self.pool)
                .await;
            match created {
                Ok(_) => {}
                // Another replica created it between the look-up and here: IF NOT EXISTS is
                // not safe against a concurrent CREATE, which fails on pg_namespace's unique
                // index (23505) or as a duplicate schema (42P06).
                Err(sqlx::Error::Database(db))
                    if matches!(db.code().as_deref(), Some("23505" | "42P06")) => {}
                Err(e) => return Err(query_err("creating the schema of database.schema")(e)),
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The pair a row's `agent_id`, `user_id` and `activity_filter` name.
fn key_of(row: &sqlx::postgres::PgRow) -> crate::domain::PairKey {
    use sqlx::Row as _;
    let filter: String = row.get("activity_filter");
    crate::domain::PairKey::new(
        row.get("agent_id"),
        row.get("user_id"),
        Some(filter).filter(|f| !f.is_empty()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database's answer shaped like Postgres's: its Display adds the server's source line.
    #[derive(Debug)]
    struct Answer {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for Answer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} at line 948", self.message)
        }
    }

    impl std::error::Error for Answer {}

    impl sqlx::error::DatabaseError for Answer {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn connect_error(code: &'static str, message: &'static str) -> StoreError {
        StoreError::Connect {
            url: "postgres://root@127.0.0.1:5432/newcomer_szb".into(),
            error: sqlx::Error::Database(Box::new(Answer { code, message })),
        }
    }

    #[test]
    fn a_database_error_shows_the_message_without_the_servers_source_line() {
        let err = connect_error("28P01", "password authentication failed for user \"bob\"");

        let text = crate::error::chain(&err);

        assert_eq!(
            text,
            "cannot connect to Postgres at postgres://root@127.0.0.1:5432/newcomer_szb: \
             password authentication failed for user \"bob\""
        );
    }

    #[test]
    fn a_missing_database_says_how_to_create_it() {
        let err = connect_error("3D000", "database \"newcomer_szb\" does not exist");

        let text = crate::error::chain(&err);

        assert_eq!(
            text,
            "cannot connect to Postgres at postgres://root@127.0.0.1:5432/newcomer_szb: \
             database \"newcomer_szb\" does not exist; create it with `szb-sync migrate \
             --create-database` or createdb"
        );
        assert!(err.is_connection());
    }

    #[test]
    fn a_config_path_is_one_shell_word_in_the_hint() {
        assert_eq!(shell_word("config/szb-sync.toml"), "config/szb-sync.toml");
        assert_eq!(shell_word("/tmp/my config.toml"), "'/tmp/my config.toml'");
        assert_eq!(shell_word("it's.toml"), r"'it'\''s.toml'");
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_database_password() {
        let url = Secret::new("postgres://bob:hunter2-secret@127.0.0.1:1/szb");
        let store = Store::connect_lazy(&url, 2).unwrap();
        assert!(!format!("{store:?}").contains("hunter2-secret"));
        let err = Store::connect(&url, 2).await.unwrap_err();
        assert!(
            !format!("{err} {err:?}").contains("hunter2-secret"),
            "{err}"
        );
        let with_key = Secret::new("postgres://bob@127.0.0.1:1/szb?sslpassword=hunter2-secret");
        let err = Store::connect_lazy(&with_key, 2).unwrap_err();
        assert!(
            err.to_string().contains("sslpassword is not supported"),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("hunter2-secret"));
    }
}
