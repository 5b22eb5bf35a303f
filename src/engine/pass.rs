//! One pass: claim pairs in batches, walk them `concurrency` at a time, record them in batches.
//!
//! The configured pairs are cut into spans of twice `concurrency`; each claim statement offers
//! one span and takes up to as many due pairs as the workers can start. A pass of `run` starts at a random span, so
//! replicas starting together take different pairs first. Finished runs are recorded, and their
//! leases released, one statement per batch; leases still held are renewed every third of the
//! lease period. None of this costs a round trip per pair.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Engine, PairReport, PassPlan, SyncReport};
use crate::domain::{Pair, PairKey, RunOutcome};
use crate::error::chain;
use crate::store::{ClaimPlan, Claimed, DueAfter, FinishedRun, StoreError};

/// Abandoned pairs taken over per claim statement.
const SPAN: usize = 512;
/// Finished runs recorded per statement.
const FLUSH_AT: usize = 256;
/// The longest a finished run waits to be recorded.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Attempts at a statement of the pass when the connection was lost (it reconnects).
const ATTEMPTS: u32 = 3;

/// What a pass holds while it runs.
struct Pass<'a> {
    engine: &'a Engine,
    plan: ClaimPlan,
    due: DueAfter,
    by_key: HashMap<&'a PairKey, &'a Pair>,
    /// Claimed, not walked yet.
    queue: VecDeque<Claimed>,
    running: JoinSet<(PairReport, FinishedRun)>,
    /// What each running task walks, for a task that panicked.
    tasks: HashMap<tokio::task::Id, FinishedRun>,
    /// Finished, not recorded yet.
    unflushed: Vec<FinishedRun>,
    /// Pairs whose lease this pass holds.
    held: HashSet<PairKey>,
    claimed: HashSet<PairKey>,
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
        // A database that is away fails the claims; the pass row is only a record.
        let (pass_id, pass_started) = match self.store.start_pass(self.owner(), plan.due_by).await {
            Ok((id, at)) => (Some(id), at),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not open the pass row");
                (None, chrono::Utc::now())
            }
        };
        let mut pass = Pass {
            engine: self,
            plan: ClaimPlan {
                due_by: plan.due_by,
                pass_started,
            },
            due: DueAfter {
                next_due: plan.next_due,
                backoff: self.backoff(),
            },
            by_key: pairs.iter().map(|p| (&p.key, p)).collect(),
            queue: VecDeque::new(),
            running: JoinSet::new(),
            tasks: HashMap::new(),
            unflushed: Vec::new(),
            held: HashSet::new(),
            claimed: HashSet::new(),
            reports: Vec::new(),
            errors: Vec::new(),
        };
        let keys: Vec<PairKey> = pairs.iter().map(|p| p.key.clone()).collect();
        // A span is what one claim can take: the walks about to start and as many queued.
        let span = (2 * self.options.concurrency).max(16);
        let spans: Vec<&[PairKey]> = keys.chunks(span).collect();
        let first = if plan.due_by.is_some() && spans.len() > 1 {
            rand::random_range(0..spans.len())
        } else {
            0
        };
        pass.drive(&spans, first, &keys, plan.wait_for_others, shutdown)
            .await;
        pass.flush().await;

        if plan.due_by.is_none() {
            // `sync` names every configured pair: those it could not claim are reported.
            let missed: Vec<PairKey> = keys
                .iter()
                .filter(|k| !pass.claimed.contains(*k))
                .cloned()
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
            pairs = report.pairs.len(),
            requests_per_second = f64::from(report.totals().requests) / secs.max(1e-9),
            "pass finished"
        );
        report
    }
}

impl Pass<'_> {
    /// Claims and walks until every span was offered (and, when `wait`, no due pair is left
    /// with another live process), or shutdown.
    async fn drive(
        &mut self,
        spans: &[&[PairKey]],
        first: usize,
        keys: &[PairKey],
        wait: bool,
        shutdown: &CancellationToken,
    ) {
        let concurrency = self.engine.options.concurrency.max(1);
        let lease = self.engine.options.lease_period;
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        // Runs are recorded at least this often, so status and other replicas see them soon.
        let mut record = tokio::time::interval(FLUSH_EVERY.min(lease / 3));
        record.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        record.tick().await;
        let mut offered = 0;
        let mut claiming = true;
        // Claims before the latest sweep: a sweep that claimed nothing waits before the next.
        let mut claimed_before_sweep = usize::MAX;
        loop {
            // Start walks, claiming more when the queue runs dry.
            while self.running.len() < concurrency && !shutdown.is_cancelled() {
                if let Some(claimed) = self.queue.pop_front() {
                    self.start(claimed, shutdown);
                    continue;
                }
                if !claiming || offered >= spans.len() {
                    break;
                }
                if self.unflushed.len() >= FLUSH_AT / 4 {
                    self.flush().await;
                }
                let want = 2 * concurrency - self.running.len();
                let span = spans[(first + offered) % spans.len()];
                match self.claim(span, want).await {
                    Ok(got) => {
                        // Move on once the span gave all it had; stay while it may hold more.
                        if got < want || got == span.len() {
                            offered += 1;
                        }
                    }
                    Err(e) => {
                        let e = format!("claiming pairs: {}", chain(&e));
                        tracing::error!(error = %e, "the pass stops claiming");
                        self.errors.push(e);
                        claiming = false;
                    }
                }
            }
            if self.running.is_empty() && (self.queue.is_empty() || shutdown.is_cancelled()) {
                if shutdown.is_cancelled() || !claiming || !wait {
                    break;
                }
                // Every span was offered: sweep again while due pairs are left that no live
                // process holds (their owner died), and wait while other processes hold some.
                self.flush().await;
                match self.engine.coordinator.survey(keys, &self.plan).await {
                    Ok(left) if left.claimable + left.held_elsewhere == 0 => break,
                    Ok(left) => {
                        tracing::debug!(
                            claimable = left.claimable,
                            held_elsewhere = left.held_elsewhere,
                            "due pairs are left; sweeping again"
                        );
                        if left.claimable == 0 || self.claimed.len() == claimed_before_sweep {
                            let poll = (lease / 4).min(Duration::from_secs(1));
                            tokio::select! {
                                () = tokio::time::sleep(poll) => {}
                                () = shutdown.cancelled() => {}
                            }
                        }
                        claimed_before_sweep = self.claimed.len();
                        offered = 0;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "could not count the due pairs left");
                        break;
                    }
                }
            }
            tokio::select! {
                joined = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    let (report, run) = match joined.expect("a task is running") {
                        Ok((id, done)) => {
                            self.tasks.remove(&id);
                            done
                        }
                        Err(e) => {
                            let mut run = self.tasks.remove(&e.id()).expect("every task is known");
                            run.outcome = RunOutcome::Failed;
                            run.error = Some(format!("the pair's walk panicked: {e}"));
                            tracing::error!(pair = %run.pair, error = %e, "the pair's walk panicked");
                            let report = PairReport::unwalked(&run.pair, RunOutcome::Failed, run.error.clone());
                            (report, run)
                        }
                    };
                    self.reports.push(report);
                    self.unflushed.push(run);
                    if self.unflushed.len() >= FLUSH_AT {
                        self.flush().await;
                    }
                }
                _ = record.tick() => self.flush().await,
                _ = renew.tick() => {
                    self.renew().await;
                    self.adopt(keys, concurrency).await;
                }
            }
        }
        // Claimed but never walked (shutdown): given back untouched.
        let unwalked: Vec<Claimed> = self.queue.drain(..).collect();
        if !unwalked.is_empty() {
            if let Err(e) = self.engine.coordinator.release_unwalked(&unwalked).await {
                tracing::warn!(error = %chain(&e), "could not give back pairs not walked; their leases expire");
            }
            for c in unwalked {
                self.held.remove(&c.pair);
                self.reports
                    .push(PairReport::unwalked(&c.pair, RunOutcome::Interrupted, None));
            }
        }
    }

    /// Claims up to `want` pairs of `span`; returns how many it got.
    async fn claim(&mut self, span: &[PairKey], want: usize) -> Result<usize, StoreError> {
        let claimed = retry(|| self.engine.coordinator.claim(span, want, &self.plan)).await?;
        let got = claimed.len();
        for c in claimed {
            if !self.by_key.contains_key(&c.pair) {
                // Cannot happen: a claim only offers configured pairs.
                continue;
            }
            if let Some(prev) = &c.took_over_from {
                tracing::warn!(pair = %c.pair, previous_owner = %prev, "took over a pair whose process ended or lost its lease; its run is recorded as interrupted");
            }
            self.held.insert(c.pair.clone());
            self.claimed.insert(c.pair.clone());
            self.queue.push_back(c);
        }
        Ok(got)
    }

    /// Takes over, ahead of the queue, the pairs of processes that died or let their leases
    /// expire, so they need not wait for this pass's next sweep.
    async fn adopt(&mut self, keys: &[PairKey], concurrency: usize) {
        let abandoned = match self.engine.coordinator.survey(keys, &self.plan).await {
            Ok(survey) if !survey.abandoned.is_empty() => survey.abandoned,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not look for pairs of processes that are gone");
                return;
            }
        };
        let queued = std::mem::take(&mut self.queue);
        for chunk in abandoned.chunks(SPAN) {
            if let Err(e) = self.claim(chunk, chunk.len().max(concurrency)).await {
                tracing::warn!(error = %chain(&e), "could not take over pairs of processes that are gone");
                break;
            }
        }
        self.queue.extend(queued);
    }

    fn start(&mut self, claimed: Claimed, shutdown: &CancellationToken) {
        let pair = (*self.by_key[&claimed.pair]).clone();
        let placeholder = FinishedRun {
            pair: claimed.pair.clone(),
            outcome: RunOutcome::Failed,
            totals: Default::default(),
            mark_before: claimed.mark.settled,
            mark_after: claimed.mark.settled,
            recoveries: Vec::new(),
            error: None,
            refused: false,
            started_at: claimed.leased_at,
            locked: claimed.locked,
        };
        let (engine, shutdown) = (self.engine.clone(), shutdown.clone());
        let handle = self
            .running
            .spawn(async move { engine.run_claimed(pair, claimed, shutdown).await });
        self.tasks.insert(handle.id(), placeholder);
    }

    /// Records the finished runs and gives their leases back.
    async fn flush(&mut self) {
        if self.unflushed.is_empty() {
            return;
        }
        let runs = std::mem::take(&mut self.unflushed);
        match retry(|| self.engine.coordinator.finish(&runs, &self.due)).await {
            Ok(kept) => {
                if kept < runs.len() as u64 {
                    tracing::warn!(
                        lost = runs.len() as u64 - kept,
                        "runs finished after another process took their pairs over; that process's record stands"
                    );
                }
            }
            Err(e) => {
                let e = format!("recording {} finished runs: {}", runs.len(), chain(&e));
                tracing::error!(error = %e, "their leases expire; their pages are committed");
                self.errors.push(e);
            }
        }
        for run in &runs {
            self.held.remove(&run.pair);
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
                tracing::warn!(error = %chain(&e), "renewing leases failed; retrying at the next renewal")
            }
        }
    }

    /// `sync`'s pairs it did not claim: interrupted by shutdown, failed with the pass's error,
    /// or skipped because another live process holds them.
    async fn report_missed(&mut self, missed: Vec<PairKey>, shutdown: &CancellationToken) {
        if missed.is_empty() {
            return;
        }
        if shutdown.is_cancelled() {
            for k in &missed {
                self.reports
                    .push(PairReport::unwalked(k, RunOutcome::Interrupted, None));
            }
        } else if let Some(e) = self.errors.first().cloned() {
            for k in &missed {
                self.reports
                    .push(PairReport::unwalked(k, RunOutcome::Failed, Some(e.clone())));
            }
        } else {
            const REASON: &str = "another szb-sync process holds the pair's lease";
            for k in &missed {
                tracing::warn!(pair = %k, "{REASON}; skipped");
                self.reports.push(PairReport::unwalked(
                    k,
                    RunOutcome::Skipped,
                    Some(REASON.to_owned()),
                ));
            }
            if let Err(e) = self.engine.store.record_skipped_runs(&missed, REASON).await {
                tracing::warn!(error = %chain(&e), "could not record the skipped runs");
            }
        }
    }
}

/// Runs `f` again when it lost the connection (the coordinator reconnects), a few times.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if attempt < ATTEMPTS && (e.is_connection() || e.is_deadlock()) => {
                tracing::debug!(error = %chain(&e), attempt, "retrying a statement of the pass");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}
