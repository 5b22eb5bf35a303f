//! Where the app is assembled: settings in, a store, an API client and an engine out.
//!
//! The CLI, the demo, the benchmark and the tests all build through [`App::build`], so they run
//! the same parts wired the same way. [`App::run_until_stopped`] is the daemon: migrations
//! (retried while the database is away), then the schedule, until the shutdown token fires.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::daemon::scheduler::{self, SchedulerError};
use crate::domain::Pair;
use crate::engine::{Engine, EngineOptions, PassPlan, SyncReport};
use crate::error::chain;
use crate::settings::{Settings, SettingsError};
use crate::store::{Store, StoreError};

/// Page sizes below this may not line up around tie groups (see the README's limits).
const SMALL_PAGE_SIZE: u32 = 50;

/// Why the app could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("building the HTTP client: {0}")]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

/// The assembled app. Cheap parts: the store and the client are handles on shared pools.
#[derive(Debug)]
pub struct App {
    store: Store,
    api: ApiClient,
    engine: Engine,
    pairs: Vec<Pair>,
    cron: String,
    keep_runs: Duration,
}

impl App {
    /// Builds every part the settings describe. Connects lazily: nothing touches the network
    /// until the first query or request.
    pub fn build(settings: &Settings) -> Result<App, AppError> {
        if settings.api.page_size < SMALL_PAGE_SIZE {
            tracing::warn!(
                page_size = settings.api.page_size,
                "api.page_size below {SMALL_PAGE_SIZE}: windows may not line up around tie \
                 groups, and the mark may wait while every sync re-reads from there (costs \
                 requests, not correctness)"
            );
        }
        let store = Store::connect_lazy(&settings.database.url, settings.pool_size())?;
        let api = ApiClient::new(&settings.api)?;
        let engine = Engine::new(
            store.clone(),
            api.clone(),
            EngineOptions {
                page_size: settings.api.page_size,
                settle_after: settings.sync.settle_after,
                concurrency: settings.sync.concurrency,
                fetch_ahead: settings.sync.fetch_ahead,
                failure_backoff: settings.sync.failure_backoff,
                max_failure_backoff: settings.sync.max_failure_backoff,
                lease_period: settings.sync.lease_period,
            },
        );
        Ok(App {
            store,
            api,
            engine,
            pairs: settings.pairs()?,
            cron: settings.schedule.cron.clone(),
            keep_runs: settings.sync.keep_runs,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The configured pairs, in configuration order.
    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// Applies the migrations once; fails fast, with the reason, when the database is away.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.store.migrate().await
    }

    /// One pass over every configured pair (`szb-sync sync`).
    pub async fn sync_once(&self, shutdown: &CancellationToken) -> SyncReport {
        self.sync_pairs(&self.pairs, shutdown).await
    }

    /// One pass over these pairs, some of the configured ones (`szb-sync sync --only`).
    pub async fn sync_pairs(&self, pairs: &[Pair], shutdown: &CancellationToken) -> SyncReport {
        self.engine.sync_all(pairs, shutdown).await
    }

    /// Gives up this app's locks and leases' liveness at once (they also go when the process
    /// exits), then closes the pool.
    pub async fn close(&self) {
        self.engine.close().await;
        self.store.close().await;
    }

    /// One pass over the configured pairs that are due now, as the daemon makes it: pairs
    /// backing off after failures wait for their time, and those that run are due again at
    /// any later pass.
    pub async fn sync_due(&self, shutdown: &CancellationToken) -> SyncReport {
        let plan = PassPlan {
            due_by: Some(chrono::Utc::now()),
            next_due: None,
            wait_for_others: false,
        };
        self.engine.sync_due(&self.pairs, plan, shutdown).await
    }

    /// The engine, for passes with a plan of their own.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The daemon: migrations, retried while the database is away, then a pass at once and on
    /// every cron tick, until `shutdown` fires. The pass in flight finishes its page first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let ran = if self.migrate_with_retry(&shutdown).await {
            scheduler::run(
                &self.engine,
                &self.pairs,
                &self.cron,
                self.keep_runs,
                &shutdown,
            )
            .await
        } else {
            Ok(())
        };
        self.close().await;
        Ok(ran?)
    }

    /// Applies migrations, retrying while the database is away, until it works (`true`) or
    /// shutdown (`false`).
    async fn migrate_with_retry(&self, shutdown: &CancellationToken) -> bool {
        let mut wait = Duration::from_secs(1);
        loop {
            let migrated = tokio::select! {
                migrated = self.store.migrate() => migrated,
                () = shutdown.cancelled() => return false,
            };
            match migrated {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(error = %chain(&e), retry_in_s = wait.as_secs(), "cannot apply migrations; will retry");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return false,
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}
