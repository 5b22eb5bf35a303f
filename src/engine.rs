//! The sync engine: for each pair, fetch a window, let the mark decide, write the page.
//!
//! Fetching ([`crate::api`]), deciding ([`crate::mark`]) and writing ([`crate::store`]) stay
//! separate; this module only sequences them, keeps the run's counters and isolates pairs from
//! each other's failures.

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::domain::PairKey;
use crate::mark::{PageView, Walk, WalkError};
use crate::settings::PairConfig;
use crate::store::{Outcome, PageWrite, RunTotals, Store, StoreError};

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

/// How one pair's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    Ok,
    Failed,
    /// Stopped by shutdown after its last committed page.
    Interrupted,
    /// Another process holds the pair's lock.
    Skipped,
}

impl fmt::Display for PairOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PairOutcome::Ok => "ok",
            PairOutcome::Failed => "failed",
            PairOutcome::Interrupted => "interrupted",
            PairOutcome::Skipped => "skipped",
        })
    }
}

/// What one pair's run did.
#[derive(Debug, Clone)]
pub struct PairReport {
    pub pair: PairKey,
    pub outcome: PairOutcome,
    pub totals: RunTotals,
    /// The mark's settled count after the run.
    pub settled: i64,
    pub recoveries: Vec<String>,
    /// The error with its whole cause chain, when the run failed.
    pub error: Option<String>,
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
            .filter(|p| p.outcome == PairOutcome::Failed)
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
    pub concurrency: usize,
}

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

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One pass over every pair, `concurrency` at a time. A failing pair does not stop the others.
    pub async fn sync_all(&self, pairs: &[PairConfig], shutdown: &CancellationToken) -> SyncReport {
        let mut reports: Vec<PairReport> = futures_util::stream::iter(pairs)
            .map(|pair| self.sync_pair(pair, shutdown))
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        reports.sort_by(|a, b| a.pair.cmp(&b.pair));
        SyncReport { pairs: reports }
    }

    /// One run of one pair, recorded in `sync_runs`.
    pub async fn sync_pair(&self, pair: &PairConfig, shutdown: &CancellationToken) -> PairReport {
        let key = &pair.key;
        let mut report = PairReport {
            pair: key.clone(),
            outcome: PairOutcome::Failed,
            totals: RunTotals::default(),
            settled: 0,
            recoveries: Vec::new(),
            error: None,
        };
        if shutdown.is_cancelled() {
            // Shutting down: pairs not started yet are left for the next run, untouched.
            report.outcome = PairOutcome::Interrupted;
            return report;
        }
        let session = match self.store.lock_pair(key).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                tracing::warn!(pair = %key, "another szb-sync process is syncing this pair; skipped");
                report.outcome = PairOutcome::Skipped;
                report.error = Some("another process held the pair's lock".to_owned());
                if let Err(e) = self
                    .store
                    .record_skipped_run(key, "another process held the pair's lock")
                    .await
                {
                    tracing::warn!(pair = %key, error = %chain(&e), "could not record the skipped run");
                }
                return report;
            }
            Err(e) => {
                report.error = Some(chain(&e));
                tracing::error!(pair = %key, error = %chain(&e), "sync failed");
                return report;
            }
        };
        self.run_locked(pair, session, shutdown, &mut report).await;
        match report.outcome {
            PairOutcome::Failed => {
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

    async fn run_locked(
        &self,
        pair: &PairConfig,
        mut session: crate::store::PairSession,
        shutdown: &CancellationToken,
        report: &mut PairReport,
    ) {
        let (mark, known_total, run) = match async {
            let (mark, known_total) = session.load_mark().await?;
            let run = session.start_run(&mark).await?;
            Ok::<_, StoreError>((mark, known_total, run))
        }
        .await
        {
            Ok(x) => x,
            Err(e) => {
                report.error = Some(chain(&e));
                return;
            }
        };
        let settle_after =
            chrono::Duration::from_std(self.options.settle_after).unwrap_or(chrono::Duration::MAX);
        let mut walk = Walk::new(mark, known_total, settle_after, self.options.page_size);
        let result = self
            .walk(pair, &mut session, &mut walk, shutdown, &mut report.totals)
            .await;
        report.settled = walk.mark().settled;
        report.recoveries = walk.recoveries().iter().map(ToString::to_string).collect();
        let outcome = match result {
            Ok(true) => Outcome::Ok,
            Ok(false) => Outcome::Interrupted,
            Err(e) => {
                report.error = Some(chain(&e));
                Outcome::Failed
            }
        };
        report.outcome = match outcome {
            Outcome::Ok => PairOutcome::Ok,
            Outcome::Interrupted => PairOutcome::Interrupted,
            Outcome::Failed => PairOutcome::Failed,
        };
        let finished = session
            .finish_run(
                run,
                outcome,
                &report.totals,
                walk.mark(),
                &report.recoveries,
                report.error.as_deref(),
            )
            .await;
        if let Err(e) = finished {
            // The database is away: committed pages stand; the next run closes this row.
            tracing::warn!(pair = %pair.key, error = %chain(&e), "could not close the run row");
            if report.outcome != PairOutcome::Failed {
                report.outcome = PairOutcome::Failed;
                report.error = Some(chain(&e));
            }
        } else if let Err(e) = session.release().await {
            // Dropping the session closes its connection, which releases the lock anyway.
            tracing::debug!(pair = %pair.key, error = %chain(&e), "releasing the pair lock failed");
        }
    }

    /// Walks until the end of the list. `Ok(false)` when shutdown stopped it between pages.
    ///
    /// Two stages overlap: while a page is written, the next window (already decided by the
    /// mark) is fetched. Writes stay in list order, one at a time.
    async fn walk(
        &self,
        pair: &PairConfig,
        session: &mut crate::store::PairSession,
        walk: &mut Walk,
        shutdown: &CancellationToken,
        totals: &mut RunTotals,
    ) -> Result<bool, PairError> {
        let mut window = walk.first_window();
        let mut prefetched = None;
        loop {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            let page = match prefetched.take() {
                Some(page) => page,
                None => match self.fetch(pair, &window, shutdown).await {
                    Some(page) => page,
                    None => return Ok(false),
                },
            };
            let page = count_requests(page, totals)?;
            totals.pages += 1;
            let decision = walk.on_page(
                &window,
                PageView {
                    total: page.total,
                    entries: &page.entries,
                    server_date: page.server_date,
                    local_now: page.local_now,
                },
            )?;
            tracing::debug!(
                pair = %pair.key,
                ?window,
                total = page.total,
                items = page.entries.len(),
                first_position = ?decision.first_position,
                write_from = decision.write_from,
                mark = ?decision.mark.as_ref().map(|m| m.settled),
                next = ?decision.next,
                "page"
            );
            let entries = &page.entries[decision.write_from.min(page.entries.len())..];
            let write = async {
                if entries.is_empty() && decision.mark.is_none() {
                    return Ok(None);
                }
                let started = std::time::Instant::now();
                let written = session
                    .write_page(&PageWrite {
                        entries,
                        first_position: decision.first_position,
                        mark: walk.mark(),
                        upstream_total: page.total,
                    })
                    .await?;
                tracing::debug!(pair = %pair.key, write_ms = started.elapsed().as_millis() as u64, "page written");
                Ok::<_, StoreError>(Some(written))
            };
            let prefetch = async {
                match decision.next {
                    Some(next) if decision.give_up.is_none() => {
                        self.fetch(pair, &next, shutdown).await
                    }
                    _ => None,
                }
            };
            // A failed write stops the run at once: the prefetch in flight is dropped.
            let (written, next_page) =
                tokio::try_join!(write, async { Ok::<_, StoreError>(prefetch.await) })?;
            if let Some(written) = written {
                totals.visits_inserted += written.visits_inserted;
                totals.visits_updated += written.visits_updated;
                totals.activities_written += written.activities_written;
                totals.rejects += written.rejects;
            }
            if let Some(err) = decision.give_up {
                return Err(err.into());
            }
            match decision.next {
                Some(next) => {
                    window = next;
                    prefetched = next_page;
                }
                None => return Ok(true),
            }
        }
    }

    /// One window, or `None` when shutdown came first: nothing is half-written while a
    /// request is in flight, so it is dropped.
    async fn fetch(
        &self,
        pair: &PairConfig,
        window: &crate::mark::Window,
        shutdown: &CancellationToken,
    ) -> Option<Result<crate::api::FetchedPage, ApiError>> {
        let started = std::time::Instant::now();
        let page = tokio::select! {
            page = self.api.fetch(&pair.key, &pair.token, window) => page,
            () = shutdown.cancelled() => return None,
        };
        tracing::debug!(pair = %pair.key, ?window, fetch_ms = started.elapsed().as_millis() as u64, "page fetched");
        Some(page)
    }
}

/// Adds a fetch's requests (retries included) to the run's count.
fn count_requests(
    page: Result<crate::api::FetchedPage, ApiError>,
    totals: &mut RunTotals,
) -> Result<crate::api::FetchedPage, ApiError> {
    match page {
        Ok(page) => {
            totals.requests += page.attempts;
            Ok(page)
        }
        Err(ApiError::Exhausted { attempts, last }) => {
            totals.requests += attempts;
            Err(ApiError::Exhausted { attempts, last })
        }
        Err(e) => {
            totals.requests += 1;
            Err(e)
        }
    }
}

/// An error with its whole cause chain, for logs and run rows.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
