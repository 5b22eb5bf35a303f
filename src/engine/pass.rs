//! One pass: claim pairs in batches, walk them `concurrency` at a time, record them in batches.
//!
//! The configured pairs are cut into spans of twice `concurrency`; each claim statement offers
//! one span and takes as many due pairs as the workers' queue has room for. A pass of `run`
//! starts at a random span, so replicas starting together take different pairs first.
//!
//! `concurrency` worker tasks take claimed pairs from a bounded queue and walk them; the driver
//! keeps that queue full, records finished runs (and gives their leases back) one statement per
//! batch, at least every second, and renews the leases still held every third of the lease
//! period. Claims and records never hold up a walk, and none of them costs a round trip per pair.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Engine, PairReport, PassPlan, PassSchedule, SyncReport};
use crate::domain::{Pair, PairKey, RunOutcome};
use crate::error::chain;
use crate::plural::plural;
use crate::store::{Backoff, ClaimPlan, Claimed, FinishedRun, StoreError, retry};
use backon::Retryable as _;

/// Abandoned pairs taken over per claim statement.
const ADOPT_BATCH: usize = 512;
/// Finished runs recorded per statement, at most.
const FLUSH_AT: usize = 256;
/// The longest a finished run waits to be recorded.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often an adaptive pass looks again for pairs that fell due.
const DUE_REFRESH: Duration = Duration::from_secs(1);
/// Due pairs an adaptive pass reads at a time, at least.
const DUE_BATCH: usize = 64;

/// What a worker hands back for each pair it took.
enum Outcome {
    Ran(PairReport, FinishedRun),
    /// Shutdown came before the walk started: the lease goes back untouched.
    Unwalked(Claimed),
}

/// What a pass holds while it runs.
struct Pass<'a> {
    engine: &'a Engine,
    pairs: &'a [Pair],
    plan: ClaimPlan,
    backoff: Backoff,
    schedule: PassSchedule,
    /// The adaptive schedule's end of the pass (see [`PassPlan::until`]), and its tick.
    until: Option<(chrono::DateTime<chrono::Utc>, Duration)>,
    /// Due pairs read, most valuable first, not claimed yet.
    due: VecDeque<PairKey>,
    due_read_at: Option<Instant>,
    /// The latest read filled its batch: more pairs may be due.
    due_more: bool,
    /// Due pairs of the table this process does not sync (not configured here).
    foreign: Vec<PairKey>,
    /// Requests completed by the API client when the current busy second began.
    busy_since: Option<(Instant, u64)>,
    /// Position of each configured pair.
    index: HashMap<&'a PairKey, usize>,
    /// Pairs this pass claimed, by position.
    claimed: Vec<bool>,
    claimed_count: usize,
    /// Claimed, not handed to a worker yet.
    local: VecDeque<Claimed>,
    /// Handed to workers, not back yet.
    in_flight: usize,
    /// Finished, not recorded yet.
    unflushed: Vec<FinishedRun>,
    /// Pairs whose lease this pass holds.
    held: HashSet<PairKey>,
    unwalked: Vec<Claimed>,
    reports: Vec<PairReport>,
    errors: Vec<String>,
}

impl Engine {
    pub(super) async fn run_pass(
        &self,
        pairs: &[Pair],
        plan: PassPlan,
        shutdown: &CancellationToken,
    ) -> SyncReport {
        let started = Instant::now();
        self.feed
            .emit(crate::telemetry::events::Event::PassStarted {
                pairs: pairs.len(),
                due_by: plan.due_by,
            });
        // A database that is away fails the claims; the pass row is only a record.
        let (pass_id, pass_started) = match self.store.start_pass(self.owner(), plan.due_by).await {
            Ok((id, at)) => (Some(id), at),
            Err(e) => {
                tracing::warn!(error = %crate::error::logged(&e), "could not open the pass row");
                (None, chrono::Utc::now())
            }
        };
        let schedule = self.plan_schedule(pairs, &plan).await;
        let tick = plan
            .next_due
            .zip(plan.due_by)
            .and_then(|(next, by)| (next - by).to_std().ok())
            .unwrap_or(Duration::from_secs(600));
        let mut pass = Pass {
            engine: self,
            pairs,
            plan: ClaimPlan {
                due_by: plan.due_by,
                // An adaptive pass may check a pair again once it falls due again.
                pass_started: if plan.until.is_some() {
                    super::NEVER
                } else {
                    pass_started
                },
            },
            backoff: self.backoff(),
            schedule,
            until: plan.until.map(|u| (u, tick)),
            due: VecDeque::new(),
            due_read_at: None,
            due_more: false,
            foreign: Vec::new(),
            busy_since: None,
            index: pairs.iter().enumerate().map(|(i, p)| (&p.key, i)).collect(),
            claimed: vec![false; pairs.len()],
            claimed_count: 0,
            local: VecDeque::new(),
            in_flight: 0,
            unflushed: Vec::new(),
            held: HashSet::new(),
            unwalked: Vec::new(),
            reports: Vec::new(),
            errors: Vec::new(),
        };
        pass.drive(plan.wait_for_others, plan.due_by.is_some(), shutdown)
            .await;

        if plan.due_by.is_none() {
            // `sync` names every configured pair: those it could not claim are reported.
            let missed: Vec<PairKey> = pairs
                .iter()
                .zip(&pass.claimed)
                .filter(|(_, claimed)| !**claimed)
                .map(|(p, _)| p.key.clone())
                .collect();
            pass.report_missed(missed, shutdown).await;
        }

        let mut report = SyncReport {
            pairs: pass.reports,
            errors: pass.errors,
        };
        report.pairs.sort_by(|a, b| a.pair.cmp(&b.pair));
        if let Some(id) = pass_id
            && let Err(e) = self.store.finish_pass(id, &report.pass_totals()).await
        {
            tracing::warn!(error = %crate::error::logged(&e), "could not close the pass row");
        }
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64();
        let totals = report.pass_totals();
        self.feed
            .emit(crate::telemetry::events::Event::PassFinished {
                extra: plan.extra,
                outcome: totals.outcome,
                elapsed,
                pairs: report.pairs.len(),
                failed: report.failed().count(),
                counts: report.totals().counts(),
                errors: &report.errors,
            });
        for pace in self.api.pace() {
            tracing::debug!(
                limit = pace.limit,
                in_flight = pace.in_flight,
                backpressure = pace.backpressure,
                baseline_rtt_ms = pace.baseline_rtt.map(|d| d.as_millis() as u64),
                rate_cap = pace.rate_cap,
                "request pace of a token"
            );
        }
        tracing::debug!(
            pairs = report.pairs.len(),
            requests_per_second = f64::from(report.totals().requests) / secs.max(1e-9),
            "pass finished"
        );
        report
    }

    /// A worker: walks the pairs it takes from `queue` until the queue closes.
    async fn work(
        self,
        queue: Arc<Mutex<mpsc::Receiver<(Pair, Claimed)>>>,
        done: mpsc::UnboundedSender<Outcome>,
        schedule: PassSchedule,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = queue.lock().await.recv().await;
            let Some((pair, claimed)) = next else { return };
            if shutdown.is_cancelled() {
                let _ = done.send(Outcome::Unwalked(claimed));
                continue;
            }
            let placeholder = FinishedRun {
                pair: claimed.pair.clone(),
                outcome: RunOutcome::Failed,
                totals: Default::default(),
                mark_before: claimed.mark.settled,
                mark_after: claimed.mark.settled,
                recoveries: Vec::new(),
                error: None,
                refused: false,
                unknown_token: false,
                started_at: claimed.leased_at,
                locked: claimed.locked,
                next_due: schedule.next_tick,
                due_reason: crate::domain::DueReason::Sweep,
                arrival_rate: claimed.arrival_rate,
                rate_at: claimed.rate_at.unwrap_or(claimed.leased_at),
                found_new: 0,
            };
            // Its own task, so a panic in one walk fails that pair only.
            let (engine, stop) = (self.clone(), shutdown.clone());
            let walked =
                tokio::spawn(
                    async move { engine.run_claimed(pair, claimed, schedule, stop).await },
                )
                .await;
            let outcome = match walked {
                Ok((report, run)) => Outcome::Ran(report, run),
                Err(e) => {
                    let mut run = placeholder;
                    run.error = Some(format!("the pair's walk panicked: {e}"));
                    tracing::error!(agent_id = run.pair.agent_id, user_id = run.pair.user_id, error = %crate::error::for_log(&e.to_string()), "the pair's walk panicked");
                    let report =
                        PairReport::unwalked(&run.pair, RunOutcome::Failed, run.error.clone());
                    Outcome::Ran(report, run)
                }
            };
            if done.send(outcome).is_err() {
                return;
            }
        }
    }
}

impl<'a> Pass<'a> {
    /// Claims and walks until every span was offered (and, when `wait`, no due pair is left
    /// with another live process), or shutdown.
    async fn drive(&mut self, wait: bool, spread: bool, shutdown: &CancellationToken) {
        let engine = self.engine;
        let concurrency = engine.options.concurrency.max(1);
        let lease = engine.options.lease_period;
        let span_len = (2 * concurrency).max(16);
        let spans: Vec<&'a [Pair]> = self.pairs.chunks(span_len).collect();
        let first = if spread && spans.len() > 1 {
            rand::random_range(0..spans.len())
        } else {
            0
        };
        let every: Vec<&'a PairKey> = self.pairs.iter().map(|p| &p.key).collect();

        // One walk's worth queued per worker: enough that a claim or a record never leaves a
        // worker idle, little enough that pairs taken over from a dead process start soon.
        let (work_tx, work_rx) = mpsc::channel::<(Pair, Claimed)>(concurrency);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            workers.spawn(engine.clone().work(
                Arc::clone(&work_rx),
                done_tx.clone(),
                self.schedule,
                shutdown.clone(),
            ));
        }
        drop(done_tx);

        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut record = tokio::time::interval(FLUSH_EVERY.min(lease / 3));
        record.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        record.tick().await;
        let mut offered = 0;
        let mut claiming = true;
        // Claims before the latest sweep: a sweep that claimed nothing waits before the next.
        let mut claimed_before_sweep = usize::MAX;
        // When this pass ran out of pairs of its own and began waiting for other processes'.
        let mut waiting_since: Option<Instant> = None;
        loop {
            // Keep the workers' queue full, claiming when nothing claimed is left to hand out.
            while !shutdown.is_cancelled() {
                if let Some(c) = self.local.pop_front() {
                    let pair = self.pairs[self.index[&c.pair]].clone();
                    match work_tx.try_send((pair, c)) {
                        Ok(()) => self.in_flight += 1,
                        Err(
                            mpsc::error::TrySendError::Full((_, c))
                            | mpsc::error::TrySendError::Closed((_, c)),
                        ) => {
                            self.local.push_front(c);
                            break;
                        }
                    }
                    continue;
                }
                let room = work_tx.capacity();
                if !claiming || room < concurrency.div_ceil(2) {
                    break;
                }
                if let Some((until, _)) = self.until {
                    if chrono::Utc::now() >= until {
                        break;
                    }
                    let keys = match self.due_keys(room).await {
                        Ok(keys) => keys,
                        Err(e) => {
                            let e = format!("looking for due pairs: {}", chain(&e));
                            tracing::error!(error = %crate::error::for_log(&e), "the pass stops claiming");
                            self.errors.push(e);
                            claiming = false;
                            break;
                        }
                    };
                    if keys.is_empty() {
                        break;
                    }
                    let keys: Vec<&PairKey> = keys.iter().collect();
                    if let Err(e) = self.claim(&keys, room).await {
                        let e = format!("claiming pairs: {}", chain(&e));
                        tracing::error!(error = %crate::error::for_log(&e), "the pass stops claiming");
                        self.errors.push(e);
                        claiming = false;
                    }
                    continue;
                }
                if offered >= spans.len() {
                    break;
                }
                let span: Vec<&PairKey> = spans[(first + offered) % spans.len()]
                    .iter()
                    .map(|p| &p.key)
                    .collect();
                match self.claim(&span, room).await {
                    // Move on once the span gave all it had; stay while it may hold more.
                    Ok(got) if got < room || got == span.len() => offered += 1,
                    Ok(_) => {}
                    Err(e) => {
                        let e = format!("claiming pairs: {}", chain(&e));
                        tracing::error!(error = %crate::error::for_log(&e), "the pass stops claiming");
                        self.errors.push(e);
                        claiming = false;
                    }
                }
            }
            if self.in_flight == 0 && (self.local.is_empty() || shutdown.is_cancelled()) {
                if shutdown.is_cancelled() || !claiming {
                    break;
                }
                if self.until.is_some() {
                    // Nothing due now: the pass ends. The schedule starts the next one when a
                    // pair falls due, or at the tick.
                    break;
                }
                if !wait {
                    break;
                }
                // Every span was offered: sweep again while due pairs are left that no live
                // process holds (their owner died), and wait while other processes hold some.
                self.flush().await;
                match engine.coordinator.due_left(&every, &self.plan).await {
                    Ok(left) if left.claimable + left.held_elsewhere == 0 => break,
                    // A live process still walking its pairs after a whole lease period is
                    // not dead: its pairs are its own, and this pass stops waiting for them.
                    Ok(left)
                        if left.claimable == 0
                            && waiting_since.is_some_and(|t| t.elapsed() >= lease) =>
                    {
                        tracing::debug!(
                            held_elsewhere = left.held_elsewhere,
                            "other processes are still walking due pairs; the pass ends"
                        );
                        break;
                    }
                    Ok(left) => {
                        waiting_since.get_or_insert_with(Instant::now);
                        tracing::debug!(
                            claimable = left.claimable,
                            held_elsewhere = left.held_elsewhere,
                            "due pairs are left; sweeping again"
                        );
                        if left.claimable == 0 || self.claimed_count == claimed_before_sweep {
                            let poll = (lease / 4).min(Duration::from_secs(1));
                            tokio::select! {
                                () = tokio::time::sleep(poll) => {}
                                () = shutdown.cancelled() => {}
                            }
                        }
                        claimed_before_sweep = self.claimed_count;
                        offered = 0;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error::logged(&e), "could not count the due pairs left");
                        break;
                    }
                }
            }
            tokio::select! {
                outcome = done_rx.recv(), if self.in_flight > 0 => {
                    let Some(outcome) = outcome else { break };
                    self.in_flight -= 1;
                    match outcome {
                        Outcome::Ran(report, run) => {
                            self.report(report);
                            self.unflushed.push(run);
                            if self.unflushed.len() >= FLUSH_AT {
                                self.flush().await;
                            }
                        }
                        Outcome::Unwalked(c) => self.unwalked.push(c),
                    }
                }
                _ = record.tick() => {
                    self.measure_pace(concurrency);
                    self.flush().await;
                }
                _ = renew.tick() => {
                    self.renew().await;
                    self.adopt(&every, concurrency).await;
                }
            }
        }
        // Workers see the queue close, finish their walks, and exit.
        drop(work_tx);
        while let Some(outcome) = done_rx.recv().await {
            match outcome {
                Outcome::Ran(report, run) => {
                    self.report(report);
                    self.unflushed.push(run);
                }
                Outcome::Unwalked(c) => self.unwalked.push(c),
            }
        }
        while workers.join_next().await.is_some() {}
        self.flush().await;
        // Claimed but never walked (shutdown): given back untouched.
        let unwalked: Vec<Claimed> = self
            .unwalked
            .drain(..)
            .chain(self.local.drain(..))
            .collect();
        if !unwalked.is_empty() {
            if let Err(e) = engine.coordinator.release_unwalked(&unwalked).await {
                tracing::warn!(error = %crate::error::logged(&e), "could not give back pairs not walked; their leases expire");
            }
            for c in unwalked {
                self.held.remove(&c.pair);
                self.report(PairReport::unwalked(&c.pair, RunOutcome::Interrupted, None));
            }
        }
    }

    /// Claims up to `want` pairs of `span`; returns how many it got.
    async fn claim(&mut self, span: &[&PairKey], want: usize) -> Result<usize, StoreError> {
        // An adaptive pass takes what is due by now: a pair falls due again while it runs.
        let plan = match self.until {
            Some(_) => ClaimPlan {
                due_by: Some(chrono::Utc::now()),
                ..self.plan
            },
            None => self.plan,
        };
        let claimed = again(|| self.engine.coordinator.claim(span, want, &plan)).await?;
        let got = claimed.len();
        for c in claimed {
            let Some(&i) = self.index.get(&c.pair) else {
                // Cannot happen: a claim only offers configured pairs.
                continue;
            };
            if let Some(prev) = &c.took_over_from {
                tracing::warn!(agent_id = c.pair.agent_id, user_id = c.pair.user_id, previous_owner = %prev, "took over a pair whose process ended or lost its lease; its run is recorded as interrupted");
            }
            if !self.claimed[i] {
                self.claimed[i] = true;
                self.claimed_count += 1;
            }
            self.held.insert(c.pair.clone());
            self.local.push_back(c);
        }
        Ok(got)
    }

    /// Takes over, ahead of the queue, the pairs of processes that died or let their leases
    /// expire, so they need not wait for this pass's next sweep.
    async fn adopt(&mut self, every: &[&PairKey], concurrency: usize) {
        let abandoned = match self.engine.coordinator.due_left(every, &self.plan).await {
            Ok(left) if !left.abandoned.is_empty() => left.abandoned,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %crate::error::logged(&e), "could not look for pairs of processes that are gone");
                return;
            }
        };
        let queued = std::mem::take(&mut self.local);
        for chunk in abandoned.chunks(ADOPT_BATCH) {
            let chunk: Vec<&PairKey> = chunk.iter().collect();
            if let Err(e) = self.claim(&chunk, chunk.len().max(concurrency)).await {
                tracing::warn!(error = %crate::error::logged(&e), "could not take over pairs of processes that are gone");
                break;
            }
        }
        self.local.extend(queued);
    }

    /// Records the finished runs and gives their leases back.
    async fn flush(&mut self) {
        if self.unflushed.is_empty() {
            return;
        }
        let runs = std::mem::take(&mut self.unflushed);
        for batch in runs.chunks(FLUSH_AT) {
            match again(|| self.engine.coordinator.finish(batch, &self.backoff)).await {
                Ok(kept) if kept < batch.len() as u64 => tracing::warn!(
                    lost = batch.len() as u64 - kept,
                    "runs finished after another process took their pairs over; that process's record stands"
                ),
                Ok(_) => {}
                Err(e) => {
                    let e = format!(
                        "recording {}: {}",
                        plural(batch.len(), "finished run", "finished runs"),
                        chain(&e)
                    );
                    tracing::error!(error = %crate::error::for_log(&e), "their leases expire; their pages are committed");
                    self.errors.push(e);
                }
            }
        }
        for run in &runs {
            self.held.remove(&run.pair);
        }
    }

    /// Up to `room` due pairs of this pass's configuration that it does not hold, most valuable
    /// first; reads them again when the last read is a second old, or used up while it filled
    /// its batch.
    async fn due_keys(&mut self, room: usize) -> Result<Vec<PairKey>, StoreError> {
        let Some((_, tick)) = self.until else {
            return Ok(Vec::new());
        };
        let stale = self.due_read_at.is_none_or(|t| t.elapsed() >= DUE_REFRESH);
        if stale || (self.due.is_empty() && self.due_more) {
            let limit = (4 * self.engine.options.concurrency).max(DUE_BATCH);
            let now = chrono::Utc::now();
            let foreign = self.foreign.clone();
            let read = again(|| {
                self.engine
                    .coordinator
                    .due_candidates(now, tick, limit, &foreign)
            })
            .await?;
            self.due_read_at = Some(Instant::now());
            self.due_more = read.len() >= limit;
            self.due.clear();
            for c in read {
                if self.index.contains_key(&c.pair) {
                    self.due.push_back(c.pair);
                } else {
                    self.foreign.push(c.pair);
                }
            }
        }
        let mut keys = Vec::with_capacity(room);
        while keys.len() < room {
            let Some(k) = self.due.pop_front() else { break };
            if !self.held.contains(&k) {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    /// Samples the request budget: the requests of a second in which every worker was busy and
    /// due pairs were waiting.
    fn measure_pace(&mut self, concurrency: usize) {
        // Answered requests, less those the platform pushed back on: the budget that syncs.
        let completed: u64 = self
            .engine
            .api
            .pace()
            .iter()
            .map(|p| p.completed.saturating_sub(p.backpressure))
            .sum();
        let backlogged = self.in_flight >= concurrency
            && (!self.local.is_empty() || !self.due.is_empty() || self.due_more);
        match (self.busy_since, backlogged) {
            (Some((at, before)), true) => {
                if let Ok(mut meter) = self.engine.pace.lock() {
                    meter.sample(completed.saturating_sub(before), at.elapsed());
                }
                self.busy_since = Some((Instant::now(), completed));
            }
            (None, true) => self.busy_since = Some((Instant::now(), completed)),
            (_, false) => self.busy_since = None,
        }
    }

    async fn renew(&mut self) {
        let held: Vec<PairKey> = self.held.iter().cloned().collect();
        match self.engine.coordinator.renew(&held).await {
            Ok(n) if n < held.len() as u64 => tracing::warn!(
                held = held.len(),
                renewed = n,
                "some leases were taken over by other processes; their walks will stop at their next page"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error::logged(&e), "renewing leases failed; retrying at the next renewal")
            }
        }
    }

    /// A pair's run is over: the feed hears of it, the pass's report keeps it.
    fn report(&mut self, report: PairReport) {
        if report.totals.requests > 0
            && let Ok(mut meter) = self.engine.pace.lock()
        {
            meter.check(report.totals.requests);
        }
        report.emit(&self.engine.feed);
        self.reports.push(report);
    }

    /// `sync`'s pairs it did not claim: interrupted by shutdown, failed with the pass's error,
    /// or skipped because another live process holds them.
    async fn report_missed(&mut self, missed: Vec<PairKey>, shutdown: &CancellationToken) {
        if missed.is_empty() {
            return;
        }
        if shutdown.is_cancelled() {
            for k in &missed {
                self.report(PairReport::unwalked(k, RunOutcome::Interrupted, None));
            }
        } else if let Some(e) = self.errors.first().cloned() {
            for k in &missed {
                self.report(PairReport::unwalked(k, RunOutcome::Failed, Some(e.clone())));
            }
        } else {
            const REASON: &str = "another szb-sync process holds the pair's lease";
            for k in &missed {
                self.report(PairReport::unwalked(
                    k,
                    RunOutcome::Skipped,
                    Some(REASON.to_owned()),
                ));
            }
            if let Err(e) = self.engine.store.record_skipped_runs(&missed, REASON).await {
                tracing::warn!(error = %crate::error::logged(&e), "could not record the skipped runs");
            }
        }
    }
}

/// Runs `f` again when it lost the connection (the coordinator reconnects) or deadlocked
/// ([`retry::PASS_STATEMENT`]).
async fn again<T, F, Fut>(f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    f.retry(retry::PASS_STATEMENT)
        .when(StoreError::is_transient)
        .notify(|e, _| {
            tracing::debug!(error = %crate::error::logged(e), "retrying a statement of the pass");
        })
        .await
}
