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
use crate::domain::{DueReason, Pair, PairKey, RunOutcome};
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
    /// How `run` schedules checks (see [`PassPlan::until`]).
    pub refresh: crate::settings::Refresh,
    /// The shortest time between two checks of one pair (adaptive).
    pub min_interval: Duration,
    /// The half-life of a pair's arrival rate.
    pub rate_half_life: Duration,
    /// `api.max_requests_per_second`: the budget's ceiling.
    pub max_requests_per_second: Option<f64>,
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
    /// The adaptive schedule (`sync.refresh = "adaptive"`): the pass goes on until this time
    /// (the next tick), taking pairs as they fall due, most valuable first, each made due again
    /// by its own arrival rate and never later than `next_due`. `None`: the pass takes the
    /// pairs due by `due_by` once each and ends.
    pub until: Option<DateTime<Utc>>,
    /// A pass between the ticks, for the pairs that fell due early: logged at debug level.
    pub extra: bool,
}

impl PassPlan {
    /// Every configured pair, now (`szb-sync sync`).
    pub fn every_pair() -> Self {
        PassPlan {
            due_by: None,
            next_due: None,
            wait_for_others: false,
            until: None,
            extra: false,
        }
    }
}

/// A time after every pass: a claim plan's start that lets a pass take a pair it already ran
/// once the pair falls due again.
const NEVER: DateTime<Utc> = DateTime::from_timestamp_nanos(i64::MAX);

/// The share of the measured request budget the adaptive schedule plans to spend, leaving room
/// for the checks that cost more than one request and for the budget's own swings.
const BUDGET_SHARE: f64 = 0.95;

/// How a pass makes each pair it ran due again.
#[derive(Debug, Clone, Copy)]
struct PassSchedule {
    /// The share of the budget, and the account's mean rate (lent to open and changed pairs);
    /// `None`: every pair due at `next_tick`.
    adaptive: Option<(freshness::Allocation, f64)>,
    next_tick: Option<DateTime<Utc>>,
}

/// A tick's schedule, by the time of the tick after it.
type Planned = (DateTime<Utc>, PassSchedule);

/// Syncs pairs: the only place that calls the API, the mark and the store together.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    api: ApiClient,
    options: EngineOptions,
    coordinator: Arc<Coordinator>,
    feed: Feed,
    /// The request budget as measured over the passes.
    pace: Arc<std::sync::Mutex<freshness::PaceMeter>>,
    /// The latest tick's schedule, by that tick's next one: the passes between the ticks use it.
    planned: Arc<std::sync::Mutex<Option<Planned>>>,
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
            pace: Arc::default(),
            planned: Arc::default(),
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
        schedule: PassSchedule,
        shutdown: CancellationToken,
    ) -> (PairReport, FinishedRun) {
        let key = &pair.key;
        let mark_before = claimed.mark.settled;
        let half_life = self.options.rate_half_life;
        let before = freshness::ArrivalRate {
            per_second: claimed.arrival_rate,
            at: claimed.rate_at.unwrap_or(claimed.leased_at),
        };
        // When the pair is due again, and its rate, after a run that found `arrivals`.
        let due_after = |arrivals: &[DateTime<Utc>], open: bool, found_new: u64| {
            let now = Utc::now();
            let rate = before.with_new(arrivals, now, half_life);
            let (next_due, reason) = match schedule.adaptive {
                Some((allocation, prior)) => freshness::next_check(
                    &allocation,
                    prior,
                    freshness::Checked {
                        rate: rate.per_second,
                        open,
                        found_new: found_new > 0,
                    },
                    now,
                    schedule.next_tick,
                ),
                None => (schedule.next_tick, DueReason::Sweep),
            };
            (next_due, reason, rate)
        };
        let finished = |report: &PairReport,
                        (refused, unknown_token): (bool, bool),
                        (next_due, due_reason, rate): (
            Option<DateTime<Utc>>,
            DueReason,
            freshness::ArrivalRate,
        )| FinishedRun {
            pair: key.clone(),
            outcome: report.outcome,
            totals: report.totals.clone(),
            mark_before,
            mark_after: report.settled,
            recoveries: report.recoveries.clone(),
            error: report.error.clone(),
            refused,
            unknown_token,
            started_at: claimed.leased_at,
            locked: claimed.locked,
            next_due,
            due_reason,
            arrival_rate: rate.per_second,
            rate_at: rate.at,
            found_new: report.totals.visits_inserted,
        };
        if !claimed.locked {
            const REASON: &str = "another szb-sync process held the pair's lock";
            let report = PairReport::unwalked(key, RunOutcome::Skipped, Some(REASON.to_owned()));
            let run = finished(&report, (false, false), due_after(&[], false, 0));
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
        // (403: the rights, backs off at once; 401: an unknown token, never backs off.)
        let refused = match &walked.ended {
            Err(PairError::Api(ApiError::Unauthorized { status, .. })) => {
                (*status != 401, *status == 401)
            }
            _ => (false, false),
        };
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
        let open = walked
            .list_total
            .is_some_and(|total| total > walk.mark().settled);
        let due = due_after(&walked.arrivals, open, report.totals.visits_inserted);
        if report.totals.requests > 0 {
            self.feed.emit(Event::Checked {
                since_last: claimed
                    .last_run_at
                    .and_then(|at| (Utc::now() - at).to_std().ok()),
                found_new: report.totals.visits_inserted > 0,
                extra: schedule.adaptive.is_some()
                    && claimed
                        .due_reason
                        .is_some_and(|r| r.is_hot() && r != DueReason::New),
                requests: u64::from(report.totals.requests),
            });
        }
        let run = finished(&report, refused, due);
        (report, run)
    }

    /// The request budget: the pace measured while due pairs waited, else the one the
    /// concurrency controller's limits and latency promise, never above
    /// `api.max_requests_per_second`; `None` before any of them is known.
    pub fn budget(&self) -> Option<f64> {
        let measured = self.pace.lock().ok().and_then(|m| m.per_second());
        let promised: f64 = self
            .api
            .pace()
            .iter()
            .filter_map(|p| {
                p.baseline_rtt
                    .map(|rtt| p.limit / rtt.as_secs_f64().max(1e-3))
            })
            .sum();
        let found = measured.or((promised > 0.0).then_some(promised));
        match (found, self.options.max_requests_per_second) {
            (Some(b), Some(cap)) => Some(b.min(cap)),
            (b, cap) => b.or(cap),
        }
    }

    /// How the pass of `plan` makes pairs due again: at the next tick, or (adaptive) by the
    /// square-root rule over the configured pairs' rates and the measured budget. Tells the
    /// feed the schedule, and says when a sweep of every pair takes longer than a tick.
    async fn plan_schedule(&self, pairs: &[Pair], plan: &PassPlan) -> PassSchedule {
        let flat = PassSchedule {
            adaptive: None,
            next_tick: plan.next_due,
        };
        let (Some(_), Some(next), Some(by)) = (plan.until, plan.next_due, plan.due_by) else {
            return flat;
        };
        if plan.extra
            && let Ok(planned) = self.planned.lock()
            && let Some((tick_next, schedule)) = *planned
            && tick_next == next
        {
            return schedule;
        }
        let tick = (next - by).to_std().unwrap_or(Duration::from_secs(600));
        let keys: Vec<&PairKey> = pairs.iter().map(|p| &p.key).collect();
        // New pairs need a state row before a look for due pairs can find them.
        if let Err(e) = self.store.add_state_rows(&keys).await {
            tracing::warn!(error = %crate::error::logged(&e), "could not add state rows for new pairs; this pass checks every pair once per tick");
            return flat;
        }
        let known = match self
            .store
            .pair_rates(&keys, self.options.rate_half_life)
            .await
        {
            Ok(rates) => rates,
            Err(e) => {
                tracing::warn!(error = %crate::error::logged(&e), "could not read the pairs' arrival rates; this pass checks every pair once per tick");
                return flat;
            }
        };
        let mut own: Vec<f64> = known.iter().map(|(_, r)| r.rate).collect();
        own.resize(pairs.len(), 0.0);
        let prior = own.iter().sum::<f64>() / (own.len().max(1) as f64);
        let mut rates: Vec<f64> = known
            .iter()
            .map(|(_, r)| freshness::lent_rate(r.rate, r.open, r.found_new, prior, tick))
            .collect();
        rates.resize(pairs.len(), 0.0);
        let budget = self.budget();
        let allocation = match budget {
            Some(b) => freshness::Allocation::new(
                &rates,
                BUDGET_SHARE * b,
                tick,
                self.options.min_interval,
            ),
            None => freshness::Allocation::every_tick(tick),
        };
        let per_check = self.pace.lock().map(|m| m.per_check()).unwrap_or(1.0);
        let sweep =
            budget.map(|b| Duration::from_secs_f64(pairs.len() as f64 * per_check / b.max(1e-9)));
        let hot = known
            .iter()
            .filter(|(_, r)| r.due_reason.is_some_and(DueReason::is_hot) || r.last_run_at.is_none())
            .count()
            + pairs.len().saturating_sub(known.len());
        if let Some(sweep) = sweep
            && sweep > tick
        {
            tracing::warn!(
                pairs = pairs.len(),
                sweep_s = sweep.as_secs(),
                tick_s = tick.as_secs(),
                budget_per_s = budget.unwrap_or_default(),
                "a sweep of every pair takes about {}s at the measured {:.1} requests/s, longer than the schedule's tick of {}s: every pair is still checked, the most likely to hold new visits first, and a dormant pair's check may be late by up to one sweep",
                sweep.as_secs(),
                budget.unwrap_or_default(),
                tick.as_secs()
            );
        }
        self.feed.emit(Event::Schedule {
            pairs: pairs.len(),
            hot,
            tick,
            budget,
            sweep,
            spare: allocation.has_spare(),
        });
        let schedule = PassSchedule {
            adaptive: Some((allocation, prior)),
            next_tick: plan.next_due,
        };
        if let Ok(mut planned) = self.planned.lock() {
            *planned = Some((next, schedule));
        }
        schedule
    }

    /// When the adaptive schedule's next pass between the ticks is due: the earliest pair that
    /// falls due before `next_tick`; `None` when none does (or the database cannot say).
    pub async fn next_extra_pass(&self, next_tick: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.store.earliest_due(next_tick).await {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!(error = %crate::error::logged(&e), "could not read when the next pair falls due; waiting for the tick");
                None
            }
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            after_failures: FAILURES_BEFORE_BACKOFF,
            first: self.options.failure_backoff,
            max: self.options.max_failure_backoff,
        }
    }
}
