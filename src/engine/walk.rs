//! One pair's walk over its pages: fetch ahead, let the mark decide, write in list order.
//!
//! The mark names one next window at a time, and only once it has seen the page before it. To
//! keep the wire full, the windows after it are guessed ([`Window::ahead`]) and fetched ahead,
//! up to `fetch_ahead` of them, each through the token's concurrency controller. A page fetched
//! ahead is used only when the walk accepts its window ([`Walk::accepts`]), and its overlap is
//! then verified like any other page's. Otherwise it and every guess after it are set aside and
//! the walk's own choice is fetched; what the set-aside requests return is still written, with
//! no place in the list and no mark (the upstream showed those visits, and a purge may take them
//! before they are read again). Writes stay in list order, one page at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{Engine, PairError};
use crate::api::{ApiError, FetchedPage};
use crate::domain::{Order, Pair, RunOutcome, Window};
use crate::mark::{PageView, Walk};
use crate::store::{PageWrite, PageWritten, PairSession, RunTotals};
use crate::telemetry::events::{Counts, Event};

/// How a walk ended, and what it did either way.
pub(super) struct WalkOutcome {
    pub(super) totals: RunTotals,
    /// [`RunOutcome::Ok`] at the end of the list, [`RunOutcome::Interrupted`] when shutdown
    /// stopped it between pages.
    pub(super) ended: Result<RunOutcome, PairError>,
    /// `visitAt` of the visits the walk inserted (new to the table), the recent ones only:
    /// the arrivals the pair's rate learns from.
    pub(super) arrivals: Vec<chrono::DateTime<chrono::Utc>>,
    /// The list's length as its last page told it.
    pub(super) list_total: Option<i64>,
}

/// A window being fetched in the background, or fetched; dropping it aborts the request.
struct PrefetchedWindow {
    window: Window,
    task: PageFetch,
}

enum PageFetch {
    Running(AbortOnDropHandle<Result<FetchedPage, ApiError>>),
    Done(Result<FetchedPage, ApiError>),
}

impl PageFetch {
    /// The page, or `None` when shutdown came first (the request in flight is dropped).
    async fn wait(self, shutdown: &CancellationToken) -> Option<Result<FetchedPage, ApiError>> {
        match self {
            PageFetch::Done(page) => Some(page),
            PageFetch::Running(task) => tokio::select! {
                page = task => Some(page.unwrap_or_else(|e| {
                    Err(ApiError::Transport(format!("the fetch task failed: {e}")))
                })),
                () = shutdown.cancelled() => None,
            },
        }
    }
}

impl PrefetchedWindow {
    fn done(window: Window, page: Result<FetchedPage, ApiError>) -> Self {
        PrefetchedWindow {
            window,
            task: PageFetch::Done(page),
        }
    }
}

impl Engine {
    /// Walks until the end of the list.
    pub(super) async fn walk(
        &self,
        pair: &Pair,
        session: &mut PairSession,
        walk: &mut Walk,
        shutdown: &CancellationToken,
    ) -> WalkOutcome {
        let sent = Arc::new(AtomicU32::new(0));
        let mut totals = RunTotals::default();
        let mut arrivals = Vec::new();
        let mut list_total = None;
        // Visits older than this weigh less than 2⁻²⁰ in the rate: not worth keeping.
        let recent = chrono::Utc::now()
            - chrono::Duration::from_std(self.options.rate_half_life * 20)
                .unwrap_or(chrono::Duration::MAX);
        let ended = async {
            let mut window = walk.first_window();
            let mut ahead: VecDeque<PrefetchedWindow> = VecDeque::new();
            let mut stale: Vec<PrefetchedWindow> = Vec::new();
            loop {
                if shutdown.is_cancelled() {
                    return Ok(RunOutcome::Interrupted);
                }
                let next = match ahead.pop_front() {
                    Some(a) if a.window == window || walk.accepts(&a.window) => a,
                    other => {
                        // A guess the walk cannot use: it and every guess after it are stale.
                        stale.extend(other);
                        stale.extend(ahead.drain(..));
                        self.spawn_fetch(pair, window, &sent)
                    }
                };
                let guessed = next.window != window;
                let fetched = next.window;
                let Some(page) = next.task.wait(shutdown).await else {
                    return Ok(RunOutcome::Interrupted);
                };
                if guessed && !page.as_ref().is_ok_and(|p| walk.verifies(&fetched, &p.entries)) {
                    // Not where the walk expects its place (the list moved between the two
                    // requests), or failed: set it aside, and fetch the walk's own window.
                    stale.push(PrefetchedWindow::done(fetched, page));
                    stale.extend(ahead.drain(..));
                    ahead.push_back(self.spawn_fetch(pair, window, &sent));
                    continue;
                }
                let page = page?;
                window = fetched;
                totals.pages += 1;
                list_total = Some(page.total);
                if totals.pages == 1 {
                    self.feed.emit(Event::ListSize {
                        pair: &pair.key,
                        total: page.total,
                        settled: walk.mark().settled,
                    });
                }
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
                    ahead = ahead.len(),
                    "page"
                );
                match decision.next {
                    // Guesses follow an ascending page whose place is known only.
                    Some(next)
                        if decision.give_up.is_none()
                            && decision.first_position.is_some()
                            && next.order == Order::Asc =>
                    {
                        self.keep_ahead(pair, walk, next, page.total, &mut ahead, &mut stale, &sent);
                    }
                    _ => stale.extend(ahead.drain(..)),
                }
                let entries = &page.entries[decision.write_from.min(page.entries.len())..];
                if !entries.is_empty() || decision.mark.is_some() {
                    let started = std::time::Instant::now();
                    let written = session
                        .write_page(&PageWrite {
                            entries,
                            first_position: decision.first_position,
                            mark: walk.mark(),
                            upstream_total: page.total,
                            set_aside: false,
                        })
                        .await?;
                    tracing::debug!(pair = %pair.key, write_ms = started.elapsed().as_millis() as u64, "page written");
                    let cleaned = page.strings_cleaned;
                    self.written(pair, &mut totals, &written, cleaned, entries.len(), false);
                    new_arrivals(entries, written.visits_inserted, recent, &mut arrivals);
                }
                for set_aside in stale.drain(..) {
                    let Some(page) = set_aside.task.wait(shutdown).await else {
                        return Ok(RunOutcome::Interrupted);
                    };
                    let Ok(page) = page else {
                        // Nobody needs that page: its failure is not the run's.
                        continue;
                    };
                    totals.pages += 1;
                    let written = session
                        .write_page(&PageWrite {
                            entries: &page.entries,
                            first_position: None,
                            mark: walk.mark(),
                            upstream_total: page.total,
                            set_aside: true,
                        })
                        .await?;
                    let cleaned = page.strings_cleaned;
                    self.written(pair, &mut totals, &written, cleaned, 0, true);
                    new_arrivals(&page.entries, written.visits_inserted, recent, &mut arrivals);
                }
                if let Some(err) = decision.give_up {
                    return Err(err.into());
                }
                match decision.next {
                    Some(next) => window = next,
                    None => return Ok::<_, PairError>(RunOutcome::Ok),
                }
            }
        }
        .await;
        // Fetches still in flight were aborted with `ahead`; what they sent is counted.
        totals.requests = sent.load(Ordering::Relaxed);
        WalkOutcome {
            totals,
            ended,
            arrivals,
            list_total,
        }
    }

    /// Counts a committed page in the run's totals (with the strings its decoding cleaned),
    /// and tells the feed.
    fn written(
        &self,
        pair: &Pair,
        totals: &mut RunTotals,
        written: &PageWritten,
        strings_cleaned: u64,
        read: usize,
        set_aside: bool,
    ) {
        totals.visits_inserted += written.visits_inserted;
        totals.visits_updated += written.visits_updated;
        totals.activities_written += written.activities_written;
        totals.rejects += written.rejects;
        totals.strings_cleaned += strings_cleaned;
        self.feed.emit(Event::PageWritten {
            pair: &pair.key,
            counts: Counts {
                requests: 0,
                pages: 1,
                visits_inserted: written.visits_inserted,
                visits_updated: written.visits_updated,
                activities_written: written.activities_written,
                rejects: written.rejects,
                strings_cleaned,
            },
            read: read as u64,
            set_aside,
        });
    }

    /// Makes sure `next` (the walk's choice) is being fetched, followed by up to `fetch_ahead`
    /// guesses, none starting past the end of the list as `total` knows it. Guesses the walk
    /// cannot use go to `stale`.
    #[allow(clippy::too_many_arguments)]
    fn keep_ahead(
        &self,
        pair: &Pair,
        walk: &Walk,
        next: Window,
        total: i64,
        ahead: &mut VecDeque<PrefetchedWindow>,
        stale: &mut Vec<PrefetchedWindow>,
        sent: &Arc<AtomicU32>,
    ) {
        let usable = ahead
            .front()
            .is_some_and(|a| a.window == next || walk.accepts(&a.window));
        if !usable {
            stale.extend(ahead.drain(..));
            ahead.push_back(self.spawn_fetch(pair, next, sent));
        }
        while ahead.len() <= self.options.fetch_ahead {
            let last = ahead.back().expect("holds at least the next window").window;
            // The last window already reaches the end of the list: the walk stops there.
            if last.end() >= total {
                break;
            }
            let Some(guess) = last.ahead(self.options.page_size) else {
                break;
            };
            ahead.push_back(self.spawn_fetch(pair, guess, sent));
        }
    }

    /// Starts fetching one window in the background. Each attempt it makes counts in `sent`.
    fn spawn_fetch(&self, pair: &Pair, window: Window, sent: &Arc<AtomicU32>) -> PrefetchedWindow {
        let (api, pair, sent) = (self.api.clone(), pair.clone(), Arc::clone(sent));
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let page = api
                .fetch_counted(&pair.key, &pair.token, &window, &sent)
                .await;
            tracing::debug!(pair = %pair.key, ?window, fetch_ms = started.elapsed().as_millis() as u64, "page fetched");
            page
        });
        PrefetchedWindow {
            window,
            task: PageFetch::Running(AbortOnDropHandle::new(task)),
        }
    }
}

/// The `visitAt` of the `inserted` visits of a written page, taken as its newest ones (new
/// visits join the list at its end; late data inserted within it is rare enough to be counted
/// as if it were new), those at or after `recent` only.
fn new_arrivals(
    entries: &[crate::domain::Entry],
    inserted: u64,
    recent: chrono::DateTime<chrono::Utc>,
    into: &mut Vec<chrono::DateTime<chrono::Utc>>,
) {
    let mut at: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            crate::domain::Entry::Visit { visit, .. } => Some(visit.visit_at()),
            crate::domain::Entry::Rejected { .. } => None,
        })
        .collect();
    at.sort_unstable();
    let k = usize::try_from(inserted)
        .unwrap_or(usize::MAX)
        .min(at.len());
    into.extend(at[at.len() - k..].iter().filter(|t| **t >= recent));
}
