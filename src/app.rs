//! Where the app is assembled: settings in, a store, an API client and an engine out.
//!
//! The CLI, the demo, the benchmark and the tests all build through [`App::build`], so they run
//! the same parts wired the same way. [`App::run_until_stopped`] is the daemon: migrations
//! (retried while the database is away), then the schedule, until the shutdown token fires.

use backon::Retryable as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::daemon::scheduler::{self, Schedule, SchedulerError};
use crate::domain::Pair;
use crate::engine::{Engine, EngineOptions, PassPlan, SyncReport};
use crate::http::{ListenError, ListenerState};
use crate::secret::Secret;
use crate::settings::{Settings, SettingsError};
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;

/// Page sizes below this may not line up around tie groups (see docs/how-sync-works.md, Limits).
const SMALL_PAGE_SIZE: u32 = 50;

/// After shutdown is asked for, the database gets this long to answer what is in flight (the
/// page being written commits, finished runs are recorded); then szb-sync gives those up and
/// exits, even in a network partition. Well below systemd's `TimeoutStopSec=30s` and
/// Kubernetes's default grace of 30 s.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

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
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// The assembled app. Cheap parts: the store and the client are handles on shared pools.
#[derive(Debug)]
pub struct App {
    store: Store,
    api: ApiClient,
    engine: Engine,
    pairs: Vec<Pair>,
    settings: Settings,
    telemetry: Telemetry,
    /// A socket bound by the caller for the `[http]` listener, used instead of `http.listen`.
    http_listener: Option<tokio::net::TcpListener>,
    /// `http.token` (or its file's content), read once.
    http_token: Option<Secret>,
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
        let store = Store::from_settings(&settings.database, settings.pool_size())?;
        crate::error::redact_logs_with(crate::secret::Redactor::new(
            &settings.database.url,
            store.names(),
        ));
        let telemetry = Telemetry::new();
        let pairs = settings.pairs()?;
        let http_token = settings
            .http
            .token()
            .map_err(|msg| SettingsError::Invalid(vec![msg]))?;
        telemetry
            .metrics
            .know_agents(pairs.iter().map(|p| p.key.agent_id));
        let api = ApiClient::new(&settings.api)?
            .with_feed(telemetry.feed.clone())
            .with_token_origins(settings.token_origins());
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
                refresh: settings.sync.refresh,
                min_interval: settings.sync.min_interval,
                rate_half_life: settings.sync.rate_half_life,
                max_requests_per_second: settings.api.max_requests_per_second,
            },
            telemetry.feed.clone(),
        );
        Ok(App {
            store,
            api,
            engine,
            pairs,
            settings: settings.clone(),
            telemetry,
            http_listener: None,
            http_token,
        })
    }

    /// Serves the `[http]` listener on `listener` instead of binding `http.listen`: whoever
    /// bound it (a test, on port 0) knows its address without binding it twice.
    pub fn with_http_listener(mut self, listener: tokio::net::TcpListener) -> App {
        self.http_listener = Some(listener);
        self
    }

    /// The feed and its surfaces (metrics, the live passes); subscribe to hear the engine.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
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
        let _stopping = self.stop_store_on(shutdown);
        self.engine.sync_all(pairs, shutdown).await
    }

    /// Once `shutdown` fires, the store's operations get [`STOP_GRACE`] to end.
    fn stop_store_on(
        &self,
        shutdown: &CancellationToken,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let (store, shutdown) = (self.store.clone(), shutdown.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            shutdown.cancelled().await;
            store.stop_within(STOP_GRACE);
        }))
    }

    /// Gives up this app's locks and leases' liveness at once (they also go when the process
    /// exits), then closes the pool.
    pub async fn close(&self) {
        self.engine.close().await;
        // Connections coming back are pinged within the deadline; this bounds the rest.
        let _ = tokio::time::timeout(STOP_GRACE, self.store.close()).await;
    }

    /// One pass over the configured pairs that are due now, as the daemon makes it: pairs
    /// backing off after failures wait for their time, and those that run are due again at
    /// any later pass.
    pub async fn sync_due(&self, shutdown: &CancellationToken) -> SyncReport {
        let plan = PassPlan {
            due_by: Some(chrono::Utc::now()),
            next_due: None,
            wait_for_others: false,
            until: None,
            extra: false,
        };
        let _stopping = self.stop_store_on(shutdown);
        self.engine.sync_due(&self.pairs, plan, shutdown).await
    }

    /// The engine, for passes with a plan of their own.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The daemon: migrations, retried while the database is away, then a pass at once and on
    /// every cron tick, until `shutdown` fires. The pass in flight finishes its page first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        self.run(shutdown, None).await
    }

    /// [`App::run_until_stopped`], with the `[http]` listener when configured, taking new
    /// configurations from `reloads` (SIGHUP): their pairs replace the running ones at the next
    /// pass. A reload whose pairs cannot be read is refused, and the running ones kept.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        reloads: Option<mpsc::Receiver<Settings>>,
    ) -> Result<(), AppError> {
        let _stopping = self.stop_store_on(&shutdown);
        let (targets, pairs) = watch::channel(Arc::new(self.pairs.clone()));
        let listener = match (self.http_listener.take(), self.settings.http.listen) {
            (Some(listener), _) => Some(listener),
            (None, Some(addr)) => Some(crate::http::bind(addr).await?.0),
            (None, None) => None,
        };
        let http = match listener {
            Some(listener) => {
                if let Ok(local) = listener.local_addr() {
                    tracing::info!(listen = %local, "serving /metrics, /livez, /readyz and the status page");
                }
                let board = self.listener_state(pairs.clone());
                Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    crate::http::serve(listener, board, shutdown.clone()),
                )))
            }
            None => None,
        };
        let _reloading = reloads.map(|reloads| {
            let current = self.settings.clone();
            let metrics = self.telemetry.metrics.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(apply_reloads(
                current, reloads, targets, metrics,
            )))
        });
        let ran = if self.migrate_with_retry(&shutdown).await {
            self.telemetry.live.set_migrated();
            scheduler::run(
                &self.engine,
                Schedule {
                    cron: &self.settings.schedule.cron,
                    keep_runs: self.settings.sync.keep_runs,
                    pairs,
                    live: &self.telemetry.live,
                    refresh: self.settings.sync.refresh,
                },
                &shutdown,
            )
            .await
        } else {
            Ok(())
        };
        self.close().await;
        if let Some(http) = http {
            // Shutdown stops the listener; it finishes the answers in flight.
            let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        }
        Ok(ran?)
    }

    /// What the `[http]` listener reads, through a read-only pool of its own.
    pub fn listener_state(&self, pairs: watch::Receiver<Arc<Vec<Pair>>>) -> ListenerState {
        let store = self.store.for_listener();
        ListenerState {
            redact: crate::secret::Redactor::new(&self.settings.database.url, store.names()),
            store,
            api: self.api.clone(),
            telemetry: self.telemetry.clone(),
            pairs,
            lag_after: lag_after(&self.settings.schedule.cron),
            owner: self.engine.owner().to_owned(),
            token: self.http_token.clone(),
        }
    }

    /// Applies migrations, retrying while the database is away, until it works (`true`) or
    /// shutdown (`false`).
    async fn migrate_with_retry(&self, shutdown: &CancellationToken) -> bool {
        let migrate = (|| self.store.migrate())
            .retry(crate::store::retry::MIGRATIONS)
            .notify(|e, wait| {
                tracing::error!(error = %crate::error::logged(e), retry_in_s = wait.as_secs(), "cannot apply migrations; will retry");
            });
        tokio::select! {
            migrated = migrate => migrated.is_ok(),
            () = shutdown.cancelled() => false,
        }
    }
}

/// A pair is lagging when its last good sync is older than three ticks of the schedule (at least
/// a minute).
fn lag_after(cron: &str) -> Duration {
    let period = scheduler::parse_cron(cron).ok().and_then(|c| {
        let now = chrono::Utc::now();
        let a = c.find_next_occurrence(&now, false).ok()?;
        let b = c.find_next_occurrence(&a, false).ok()?;
        (b - a).to_std().ok()
    });
    (period.unwrap_or(Duration::from_secs(600)) * 3).max(Duration::from_secs(60))
}

/// Takes each reloaded configuration's pairs, or refuses it and keeps the running ones. Keys
/// that only a restart applies are named, against the settings the process started with (the
/// ones it still runs on).
async fn apply_reloads(
    running: Settings,
    mut reloads: mpsc::Receiver<Settings>,
    targets: watch::Sender<Arc<Vec<Pair>>>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
) {
    while let Some(next) = reloads.recv().await {
        let pairs = match next.pairs() {
            Ok(pairs) => pairs,
            Err(e) => {
                tracing::error!(error = %crate::error::logged(&e), "configuration reload refused; the running configuration stays");
                continue;
            }
        };
        let restart = running.restart_needed_for(&next);
        if !restart.is_empty() {
            tracing::warn!(
                keys = restart.join(", "),
                "configuration reloaded: these keys changed and apply only after a restart"
            );
        }
        let before: std::collections::HashSet<_> =
            targets.borrow().iter().map(|p| p.key.clone()).collect();
        let after: std::collections::HashSet<_> = pairs.iter().map(|p| p.key.clone()).collect();
        tracing::info!(
            pairs = pairs.len(),
            added = after.difference(&before).count(),
            removed = before.difference(&after).count(),
            "configuration reloaded; the next pass takes its pairs"
        );
        metrics.know_agents(pairs.iter().map(|p| p.key.agent_id));
        targets.send_replace(Arc::new(pairs));
    }
}
