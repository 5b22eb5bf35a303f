//! The sync engine: for each pair, fetch a window, let the mark decide, write the page.
//!
//! Fetching ([`crate::api`]), deciding ([`crate::mark`]) and writing ([`crate::store`]) stay
//! separate; this module only sequences them, keeps the run's counters and isolates pairs from
//! each other's failures. [`walk`] holds one pair's walk over its pages.

mod walk;

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::domain::{Pair, PairKey, RunOutcome};
use crate::error::chain;
use crate::mark::{Walk, WalkError};
use crate::store::{Backoff, PairSession, PassTotals, RunEnd, RunTotals, Store, StoreError};

/// Why one pair's run failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Walk(#[from] WalkError),
}

/// What one pair's run did.
#[derive(Debug, Clone)]
pub struct PairReport {
    pub pair: PairKey,
    /// Never [`RunOutcome::Running`]: the run is over.
    pub outcome: RunOutcome,
    pub totals: RunTotals,
    /// The mark's settled count after the run.
    pub settled: i64,
    pub recoveries: Vec<String>,
    /// The error with its whole cause chain, when the run failed or was skipped.
    pub error: Option<String>,
}

impl PairReport {
    /// A run that ended before it walked: nothing counted, nothing moved.
    fn unwalked(pair: &PairKey, outcome: RunOutcome, error: Option<String>) -> Self {
        PairReport {
            pair: pair.clone(),
            outcome,
            totals: RunTotals::default(),
            settled: 0,
            recoveries: Vec::new(),
            error,
        }
    }
}

/// What a pass over all pairs did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub pairs: Vec<PairReport>,
}

impl SyncReport {
    pub fn failed(&self) -> impl Iterator<Item = &PairReport> {
        self.pairs
            .iter()
            .filter(|p| p.outcome == RunOutcome::Failed)
    }

    /// Every pair ended ok, or was stopped by shutdown after its last committed page.
    pub fn all_ok(&self) -> bool {
        self.pairs
            .iter()
            .all(|p| matches!(p.outcome, RunOutcome::Ok | RunOutcome::Interrupted))
    }

    /// The pass's row in `sync_passes`.
    pub fn pass_totals(&self) -> PassTotals {
        let t = self.totals();
        let interrupted = self
            .pairs
            .iter()
            .any(|p| p.outcome == RunOutcome::Interrupted);
        let failures = self.failed().count() as u64;
        PassTotals {
            pairs: self.pairs.len() as u64,
            requests: u64::from(t.requests),
            visits_written: t.visits_inserted + t.visits_updated,
            failures,
            outcome: if interrupted {
                RunOutcome::Interrupted
            } else if failures > 0 {
                RunOutcome::Failed
            } else {
                RunOutcome::Ok
            },
        }
    }

    pub fn totals(&self) -> RunTotals {
        let mut t = RunTotals::default();
        for p in &self.pairs {
            t.add(&p.totals);
        }
        t
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.totals();
        let failed = self.failed().count();
        write!(
            f,
            "{} pairs ({} failed), {} requests, {} pages, {} visits inserted, {} updated, {} activities written, {} rejects",
            self.pairs.len(),
            failed,
            t.requests,
            t.pages,
            t.visits_inserted,
            t.visits_updated,
            t.activities_written,
            t.rejects
        )
    }
}

/// Knobs of the walk.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub page_size: u32,
    pub settle_after: Duration,
    /// Pairs synced at once.
    pub concurrency: usize,
    /// Windows of one pair fetched ahead of the one the walk asked for.
    pub fetch_ahead: usize,
    /// The first wait of a failing pair before `run` tries it again; it doubles with each
    /// further failure, up to `max_failure_backoff`.
    pub failure_backoff: Duration,
    pub max_failure_backoff: Duration,
}

/// Runs of a pair that may fail in a row before it backs off (a refused token backs off at
/// once).
const FAILURES_BEFORE_BACKOFF: u32 = 3;

/// Syncs pairs: the only place that calls the API, the mark and the store together.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    api: ApiClient,
    options: EngineOptions,
}

impl Engine {
    pub fn new(store: Store, api: ApiClient, options: EngineOptions) -> Self {
        Engine {
            store,
            api,
            options,
        }
    }

    /// Prunes the run history older than `keep` (see [`Store::prune_history`]).
    pub async fn prune_history(&self, keep: Duration) -> Result<u64, StoreError> {
        self.store.prune_history(keep).await
    }

    /// One pass over the pairs that are due: those backing off after failures wait for their
    /// time (see `sync_state.next_due_at`). The daemon's pass; `sync` tries every pair.
    pub async fn sync_due(&self, pairs: &[Pair], shutdown: &CancellationToken) -> SyncReport {
        let waiting: std::collections::HashMap<PairKey, chrono::DateTime<chrono::Utc>> = match self
            .store
            .backing_off()
            .await
        {
            Ok(waiting) => waiting.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not read which pairs back off; trying all");
                Default::default()
            }
        };
        let due: Vec<Pair> = pairs
            .iter()
            .filter(|p| !waiting.contains_key(&p.key))
            .cloned()
            .collect();
        if due.len() < pairs.len() {
            tracing::info!(
                backing_off = pairs.len() - due.len(),
                "pairs that keep failing wait for their next try (see szb-sync status)"
            );
        }
        self.sync_all(&due, shutdown).await
    }

    /// One pass over every pair, `concurrency` at a time. A failing pair does not stop the others.
    pub async fn sync_all(&self, pairs: &[Pair], shutdown: &CancellationToken) -> SyncReport {
        let started = std::time::Instant::now();
        // A database that is away fails the pairs one by one; the pass row is only a record.
        let pass = match self.store.start_pass().await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not open the pass row");
                None
            }
        };
        let mut reports: Vec<PairReport> = futures_util::stream::iter(pairs)
            .map(|pair| self.sync_pair(pair, shutdown))
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        reports.sort_by(|a, b| a.pair.cmp(&b.pair));
        let report = SyncReport { pairs: reports };
        if let Some(id) = pass
            && let Err(e) = self.store.finish_pass(id, &report.pass_totals()).await
        {
            tracing::warn!(error = %chain(&e), "could not close the pass row");
        }
        let secs = started.elapsed().as_secs_f64();
        for pace in self.api.pace() {
            tracing::debug!(
                limit = pace.limit,
                in_flight = pace.in_flight,
                backpressure = pace.backpressure,
                baseline_rtt_ms = pace.baseline_rtt.map(|d| d.as_millis() as u64),
                "request pace of a token"
            );
        }
        tracing::debug!(
            requests_per_second = f64::from(report.totals().requests) / secs.max(1e-9),
            "pass finished"
        );
        report
    }

    /// One run of one pair, recorded in `sync_runs`.
    pub async fn sync_pair(&self, pair: &Pair, shutdown: &CancellationToken) -> PairReport {
        let key = &pair.key;
        if shutdown.is_cancelled() {
            // Shutting down: pairs not started yet are left for the next run, untouched.
            return PairReport::unwalked(key, RunOutcome::Interrupted, None);
        }
        let report = match self.store.lock_pair(key).await {
            Ok(Some(session)) => self.run_locked(pair, session, shutdown).await,
            Ok(None) => return self.skip(key).await,
            Err(e) => PairReport::unwalked(key, RunOutcome::Failed, Some(chain(&e))),
        };
        match report.outcome {
            RunOutcome::Failed => {
                tracing::error!(pair = %key, error = report.error.as_deref().unwrap_or(""), "sync failed")
            }
            outcome => tracing::info!(
                pair = %key,
                %outcome,
                requests = report.totals.requests,
                inserted = report.totals.visits_inserted,
                updated = report.totals.visits_updated,
                settled = report.settled,
                "pair synced"
            ),
        }
        report
    }

    /// Another process holds the pair: record that, and leave the pair to it.
    async fn skip(&self, key: &PairKey) -> PairReport {
        const REASON: &str = "another process held the pair's lock";
        tracing::warn!(pair = %key, "another szb-sync process is syncing this pair; skipped");
        if let Err(e) = self.store.record_skipped_run(key, REASON).await {
            tracing::warn!(pair = %key, error = %chain(&e), "could not record the skipped run");
        }
        PairReport::unwalked(key, RunOutcome::Skipped, Some(REASON.to_owned()))
    }

    /// The run of a pair whose lock this process holds: open its row, walk, close the row.
    async fn run_locked(
        &self,
        pair: &Pair,
        mut session: PairSession,
        shutdown: &CancellationToken,
    ) -> PairReport {
        let (mark, known_total, run) = match async {
            let (mark, known_total) = session.load_mark().await?;
            let run = session.start_run(&mark).await?;
            Ok::<_, StoreError>((mark, known_total, run))
        }
        .await
        {
            Ok(x) => x,
            Err(e) => return PairReport::unwalked(&pair.key, RunOutcome::Failed, Some(chain(&e))),
        };
        let settle_after =
            chrono::Duration::from_std(self.options.settle_after).unwrap_or(chrono::Duration::MAX);
        let mut walk = Walk::new(mark, known_total, settle_after, self.options.page_size);
        let walked = self.walk(pair, &mut session, &mut walk, shutdown).await;
        let refused = matches!(
            walked.ended,
            Err(PairError::Api(ApiError::Unauthorized { .. }))
        );
        let (outcome, error) = match walked.ended {
            Ok(outcome) => (outcome, None),
            Err(e) => (RunOutcome::Failed, Some(chain(&e))),
        };
        let mut report = PairReport {
            pair: pair.key.clone(),
            outcome,
            totals: walked.totals,
            settled: walk.mark().settled,
            recoveries: walk.recoveries().iter().map(ToString::to_string).collect(),
            error,
        };
        let finished = session
            .finish_run(
                run,
                &RunEnd {
                    outcome: report.outcome,
                    totals: &report.totals,
                    mark_after: walk.mark(),
                    recoveries: &report.recoveries,
                    error: report.error.as_deref(),
                    backoff: Backoff {
                        refused,
                        after_failures: FAILURES_BEFORE_BACKOFF,
                        first: self.options.failure_backoff,
                        max: self.options.max_failure_backoff,
                    },
                },
            )
            .await;
        if let Err(e) = finished {
            // The database is away: committed pages stand; the next run closes this row.
            tracing::warn!(pair = %pair.key, error = %chain(&e), "could not close the run row");
            if report.outcome != RunOutcome::Failed {
                report.outcome = RunOutcome::Failed;
                report.error = Some(chain(&e));
            }
        } else if let Err(e) = session.release().await {
            // Dropping the session closes its connection, which releases the lock anyway.
            tracing::debug!(pair = %pair.key, error = %chain(&e), "releasing the pair lock failed");
        }
        report
    }
}
