//! One pair's walk over its pages: fetch, let the mark decide, write in list order.

use tokio_util::sync::CancellationToken;

use super::{Engine, PairError};
use crate::api::{ApiError, FetchedPage};
use crate::domain::{Pair, RunOutcome, Window};
use crate::mark::{PageView, Walk};
use crate::store::{PageWrite, PairSession, RunTotals, StoreError};

/// How a walk ended, and what it did either way.
pub(super) struct Walked {
    pub(super) totals: RunTotals,
    /// [`RunOutcome::Ok`] at the end of the list, [`RunOutcome::Interrupted`] when shutdown
    /// stopped it between pages.
    pub(super) ended: Result<RunOutcome, PairError>,
}

impl Engine {
    /// Walks until the end of the list.
    ///
    /// Two stages overlap: while a page is written, the next window (already decided by the
    /// mark) is fetched. Writes stay in list order, one at a time.
    pub(super) async fn walk(
        &self,
        pair: &Pair,
        session: &mut PairSession,
        walk: &mut Walk,
        shutdown: &CancellationToken,
    ) -> Walked {
        let mut totals = RunTotals::default();
        let ended = async {
            let mut window = walk.first_window();
            let mut prefetched = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(RunOutcome::Interrupted);
                }
                let page = match prefetched.take() {
                    Some(page) => page,
                    None => match self.fetch(pair, &window, shutdown).await {
                        Some(page) => page,
                        None => return Ok(RunOutcome::Interrupted),
                    },
                };
                totals.requests += requests_of(&page);
                let page = page?;
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
                    None => return Ok(RunOutcome::Ok),
                }
            }
        }
        .await;
        Walked { totals, ended }
    }

    /// One window, or `None` when shutdown came first: nothing is half-written while a
    /// request is in flight, so it is dropped.
    async fn fetch(
        &self,
        pair: &Pair,
        window: &Window,
        shutdown: &CancellationToken,
    ) -> Option<Result<FetchedPage, ApiError>> {
        let started = std::time::Instant::now();
        let page = tokio::select! {
            page = self.api.fetch(&pair.key, &pair.token, window) => page,
            () = shutdown.cancelled() => return None,
        };
        tracing::debug!(pair = %pair.key, ?window, fetch_ms = started.elapsed().as_millis() as u64, "page fetched");
        Some(page)
    }
}

/// The requests a fetch cost, retries included.
fn requests_of(page: &Result<FetchedPage, ApiError>) -> u32 {
    match page {
        Ok(page) => page.attempts,
        Err(ApiError::Exhausted { attempts, .. }) => *attempts,
        Err(_) => 1,
    }
}
