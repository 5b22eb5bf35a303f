//! The sync engine: for each pair, fetch a window, let the mark decide, write the page.
//!
//! Fetching ([`crate::api`]), deciding ([`crate::mark`]) and writing ([`crate::store`]) stay
//! separate; this module only sequences them, keeps the run's counters and isolates pairs from
//! each other's failures. [`walk`] holds one pair's walk over its pages.

pub mod freshness;
mod pass;
mod walk;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::domain::{Pair, PairKey, RunOutcome};
use crate::error::chain;
use crate::mark::{Walk, WalkError};
use crate::plural::plural;
use crate::store::{
    Backoff, Claimed, Coordinator, FinishedRun, PassTotals, RunTotals, Store, StoreError,
};
use crate::telemetry::events::{Event, Feed};

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
    /// Tells the feed this run ended.
    fn emit(&self, feed: &Feed) {
        feed.emit(Event::PairFinished {
            pair: &self.pair,
            outcome: self.outcome,
            counts: self.totals.counts(),
            settled: self.settled,
            recoveries: &self.recoveries,
            error: self.error.as_deref(),
        });
    }

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

/// What a pass did: the pairs it ran, and what stopped it from claiming more.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub pairs: Vec<PairReport>,
    /// Errors of the pass itself (claiming pairs, recording their runs), not of one pair.
    pub errors: Vec<String>,
}

impl SyncReport {
    pub fn failed(&self) -> impl Iterator<Item = &PairReport> {
        self.pairs
            .iter()
            .filter(|p| p.outcome == RunOutcome::Failed)
    }

    /// Every pair ended ok, or was stopped by shutdown after its last committed page, and the
    /// pass itself met no error.
    pub fn all_ok(&self) -> bool {
        self.errors.is_empty()
            && self
                .pairs
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
        let failures = self.failed().count() as u64 + self.errors.len() as u64;
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
        let of = |outcome| self.pairs.iter().filter(|p| p.outcome == outcome).count();
        write!(
            f,
            "{} ({failed} failed",
            plural(self.pairs.len(), "pair", "pairs")
        )?;
        for (n, what) in [
            (of(RunOutcome::Interrupted), "interrupted"),
            (of(RunOutcome::Skipped), "skipped"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        write!(
            f,
            "), {}, {}, {} inserted, {} updated, {} written, {}",
            plural(t.requests, "request", "requests"),
            plural(t.pages, "page", "pages"),
            plural(t.visits_inserted, "visit", "visits"),
            t.visits_updated,
            plural(t.activities_written, "activity", "activities"),
            plural(t.rejects, "reject", "rejects")
        )?;
        for e in &self.errors {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// Knobs of the walk and of the pass.
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
    /// How long a claimed pair stays this process's without a renewal.
    pub lease_period: Duration,
}

/// Runs of a pair that may fail in a row before it backs off (a refused token backs off at
/// once).
const FAILURES_BEFORE_BACKOFF: u32 = 3;

/// Which pairs a pass takes, and when they are due again after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassPlan {
    /// Take the pairs due by this time; `None` takes every configured pair (`szb-sync sync`).
    pub due_by: Option<DateTime<Utc>>,
    /// When a pair this pass ran is due again (the schedule's next tick); `None`: at any pass.
    pub next_due: Option<DateTime<Utc>>,
    /// Before ending, wait while due pairs are leased by other live processes, and take those
    /// whose owner dies: the pass ends when every due pair ran somewhere.
    pub wait_for_others: bool,
}

impl PassPlan {
    /// Every configured pair, now (`szb-sync sync`).
    pub fn every_pair() -> Self {
        PassPlan {
            due_by: None,
            next_due: None,
            wait_for_others: false,
        }
    }
}

/// Syncs pairs: the only place that calls the API, the mark and the store together.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    api: ApiClient,
    options: EngineOptions,
    coordinator: Arc<Coordinator>,
    feed: Feed,
}

impl Engine {
    /// An engine telling `feed` what it does (give the API client the same feed).
    pub fn new(store: Store, api: ApiClient, options: EngineOptions, feed: Feed) -> Self {
        let owner = crate::store::new_owner_id();
        let coordinator = Arc::new(store.coordinator(&owner, options.lease_period));
        Engine {
            store,
            api,
            options,
            coordinator,
            feed,
        }
    }

    /// The feed this engine tells of its pages, runs and passes.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// This process's id on leases and pass rows (`host:pid:nonce`).
    pub fn owner(&self) -> &str {
        self.coordinator.owner()
    }

    /// Gives up the coordinator's connection, and with it every lock this engine holds.
    pub async fn close(&self) {
        self.coordinator.close().await;
    }

    /// Prunes the run history older than `keep` (see [`Store::prune_history`]).
    pub async fn prune_history(&self, keep: Duration) -> Result<u64, StoreError> {
        self.store.prune_history(keep).await
    }

    /// One pass over every configured pair that no other live process holds (`szb-sync sync`;
    /// backoff does not apply).
    pub async fn sync_all(&self, pairs: &[Pair], shutdown: &CancellationToken) -> SyncReport {
        self.run_pass(pairs, PassPlan::every_pair(), shutdown).await
    }

    /// One pass over the pairs due by `plan`, shared with the other replicas (the daemon's
    /// pass).
    pub async fn sync_due(
        &self,
        pairs: &[Pair],
        plan: PassPlan,
        shutdown: &CancellationToken,
    ) -> SyncReport {
        self.run_pass(pairs, plan, shutdown).await
    }

    /// The run of one claimed pair: walk it from the claimed mark, then say what to record.
    async fn run_claimed(
        &self,
        pair: Pair,
        claimed: Claimed,
        shutdown: CancellationToken,
    ) -> (PairReport, FinishedRun) {
        let key = &pair.key;
        let mark_before = claimed.mark.settled;
        let finished = |report: &PairReport, refused: bool| FinishedRun {
            pair: key.clone(),
            outcome: report.outcome,
            totals: report.totals.clone(),
            mark_before,
            mark_after: report.settled,
            recoveries: report.recoveries.clone(),
            error: report.error.clone(),
            refused,
            started_at: claimed.leased_at,
            locked: claimed.locked,
        };
        if !claimed.locked {
            const REASON: &str = "another szb-sync process held the pair's lock";
            let report = PairReport::unwalked(key, RunOutcome::Skipped, Some(REASON.to_owned()));
            let run = finished(&report, false);
            return (report, run);
        }
        let settle_after =
            chrono::Duration::from_std(self.options.settle_after).unwrap_or(chrono::Duration::MAX);
        let mut walk = Walk::new(
            claimed.mark.clone(),
            claimed.upstream_total,
            settle_after,
            self.options.page_size,
        );
        let mut session = self.store.session(key, self.owner());
        let walked = self.walk(&pair, &mut session, &mut walk, &shutdown).await;
        drop(session);
        let refused = matches!(
            walked.ended,
            Err(PairError::Api(ApiError::Unauthorized { .. }))
        );
        let (outcome, error) = match walked.ended {
            Ok(outcome) => (outcome, None),
            // The error may quote the upstream's answer; should it echo the token, the stored
            // error, the logs and the status page still never show it.
            Err(e) => (RunOutcome::Failed, Some(pair.token.redact_in(&chain(&e)))),
        };
        let report = PairReport {
            pair: key.clone(),
            outcome,
            totals: walked.totals,
            settled: walk.mark().settled,
            recoveries: walk.recoveries().iter().map(ToString::to_string).collect(),
            error,
        };
        let run = finished(&report, refused);
        (report, run)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            after_failures: FAILURES_BEFORE_BACKOFF,
            first: self.options.failure_backoff,
            max: self.options.max_failure_backoff,
        }
    }
}
