//! The process as it runs: the pass going on now and the last one, as the feed tells them (what
//! the status page's "passes" view and the progress bar of `szb-sync sync` show), and what the
//! health checks read: migrations applied, the schedule loop's last beat, the next pass.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::events::{Counts, Event, Observer};
use crate::domain::RunOutcome;

/// One pass, as far as it got.
#[derive(Debug, Clone, PartialEq)]
pub struct PassView {
    pub started_at: DateTime<Utc>,
    /// The tick's time for the daemon's passes; `None` for `szb-sync sync`.
    pub due_by: Option<DateTime<Utc>>,
    /// Pairs the pass may take.
    pub pairs: usize,
    /// Pairs whose run ended, and those that failed.
    pub done: usize,
    pub failed: usize,
    /// Requests include those of runs still going; pages and visits are those committed.
    pub counts: Counts,
    /// Visits the pairs that started have left to read, from their `pager.total` and mark,
    /// less those read since.
    pub visits_left: u64,
    pub elapsed: Duration,
    /// Set once the pass ended.
    pub outcome: Option<RunOutcome>,
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<(PassView, Instant)>,
    last: Option<PassView>,
    migrated: bool,
    beat: Option<Instant>,
    next_pass: Option<DateTime<Utc>>,
}

/// Keeps the current and the last pass.
#[derive(Debug, Default)]
pub struct Live {
    state: Mutex<State>,
}

impl Live {
    pub fn new() -> Self {
        Live::default()
    }

    /// The pass going on now, if any.
    pub fn current(&self) -> Option<PassView> {
        let state = self.lock();
        state.current.as_ref().map(|(view, started)| PassView {
            elapsed: started.elapsed(),
            ..view.clone()
        })
    }

    /// The last pass that ended, if any.
    pub fn last(&self) -> Option<PassView> {
        self.lock().last.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The migrations ran: the tables are there.
    pub fn set_migrated(&self) {
        self.lock().migrated = true;
    }

    pub fn migrated(&self) -> bool {
        self.lock().migrated
    }

    /// The schedule loop is alive now.
    pub fn beat(&self) {
        self.lock().beat = Some(Instant::now());
    }

    /// How long ago the schedule loop last beat; `None` before it started.
    pub fn since_beat(&self) -> Option<Duration> {
        self.lock().beat.map(|b| b.elapsed())
    }

    /// When the schedule's next pass is due.
    pub fn set_next_pass(&self, at: Option<DateTime<Utc>>) {
        self.lock().next_pass = at;
    }

    pub fn next_pass(&self) -> Option<DateTime<Utc>> {
        self.lock().next_pass
    }
}

impl Observer for Live {
    fn on(&self, event: &Event<'_>) {
        let mut state = self.lock();
        match *event {
            Event::PassStarted { pairs, due_by } => {
                state.current = Some((
                    PassView {
                        started_at: Utc::now(),
                        due_by,
                        pairs,
                        done: 0,
                        failed: 0,
                        counts: Counts::default(),
                        visits_left: 0,
                        elapsed: Duration::ZERO,
                        outcome: None,
                        errors: Vec::new(),
                    },
                    Instant::now(),
                ));
            }
            Event::PassFinished {
                outcome,
                elapsed,
                pairs,
                failed,
                counts,
                errors,
            } => {
                let (started_at, due_by) = state
                    .current
                    .take()
                    .map_or_else(|| (Utc::now(), None), |(v, _)| (v.started_at, v.due_by));
                state.last = Some(PassView {
                    started_at,
                    due_by,
                    pairs,
                    done: pairs,
                    failed,
                    counts,
                    visits_left: 0,
                    elapsed,
                    outcome: Some(outcome),
                    errors: errors.to_vec(),
                });
            }
            _ => {
                let Some((view, _)) = state.current.as_mut() else {
                    return;
                };
                match *event {
                    Event::Request { .. } => view.counts.requests += 1,
                    Event::ListSize { total, settled, .. } => {
                        view.visits_left += u64::try_from(total - settled).unwrap_or(0);
                    }
                    Event::PageWritten { counts, .. } => {
                        view.counts.pages += counts.pages;
                        view.counts.visits_inserted += counts.visits_inserted;
                        view.counts.visits_updated += counts.visits_updated;
                        view.counts.activities_written += counts.activities_written;
                        view.counts.rejects += counts.rejects;
                        let read = counts.visits_written() + counts.rejects;
                        view.visits_left = view.visits_left.saturating_sub(read);
                    }
                    Event::PairFinished { outcome, .. } => {
                        view.done += 1;
                        if outcome == RunOutcome::Failed {
                            view.failed += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
