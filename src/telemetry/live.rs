//! The process as it runs: the pass going on now and the last one, as the feed tells them (what
//! the status page's "passes" view and the progress bar of `szb-sync sync` show), and what the
//! health checks read: migrations applied, the schedule loop's last beat, the next pass.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::events::{Counts, Event, Observer};
use crate::domain::{PairKey, RunOutcome};

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

/// The adaptive schedule's latest plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleView {
    pub pairs: usize,
    /// Pairs due between the ticks.
    pub hot: usize,
    pub tick: Duration,
    /// Requests per second the schedule may spend, once measured.
    pub budget: Option<f64>,
    /// How long a check of every pair takes at that budget.
    pub sweep: Option<Duration>,
    /// The budget leaves checks to spend between the ticks.
    pub spare: bool,
    pub planned_at: DateTime<Utc>,
}

impl ScheduleView {
    /// A sweep of every pair takes longer than a tick.
    pub fn over_budget(&self) -> bool {
        self.sweep.is_some_and(|s| s > self.tick)
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<(PassView, Instant)>,
    /// Visits each pair of the current pass has left to read.
    left: HashMap<PairKey, u64>,
    last: Option<PassView>,
    /// The last pass that ran at least one pair (a pass whose pairs all back off runs none).
    last_busy: Option<PassView>,
    migrated: bool,
    beat: Option<Instant>,
    next_pass: Option<DateTime<Utc>>,
    schedule: Option<ScheduleView>,
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

    /// The last pass that ran at least one pair, if any: what a failure of every pair shows in.
    pub fn last_busy(&self) -> Option<PassView> {
        self.lock().last_busy.clone()
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

    /// The adaptive schedule's latest plan; `None` before one (or with `every-tick`).
    pub fn schedule(&self) -> Option<ScheduleView> {
        self.lock().schedule
    }
}

impl Observer for Live {
    fn on(&self, event: &Event<'_>) {
        let mut state = self.lock();
        match *event {
            Event::Schedule {
                pairs,
                hot,
                tick,
                budget,
                sweep,
                spare,
            } => {
                state.schedule = Some(ScheduleView {
                    pairs,
                    hot,
                    tick,
                    budget,
                    sweep,
                    spare,
                    planned_at: Utc::now(),
                });
            }
            Event::PassStarted { pairs, due_by } => {
                state.left.clear();
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
                ..
            } => {
                let (started_at, due_by) = state
                    .current
                    .take()
                    .map_or_else(|| (Utc::now(), None), |(v, _)| (v.started_at, v.due_by));
                state.left.clear();
                let view = PassView {
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
                };
                if pairs > 0 || !errors.is_empty() {
                    state.last_busy = Some(view.clone());
                }
                state.last = Some(view);
            }
            _ => {
                let State { current, left, .. } = &mut *state;
                let Some((view, _)) = current.as_mut() else {
                    return;
                };
                match *event {
                    Event::Request { .. } => view.counts.requests += 1,
                    Event::ListSize {
                        pair,
                        total,
                        settled,
                    } => {
                        let n = u64::try_from(total - settled).unwrap_or(0);
                        view.visits_left += n;
                        left.insert(pair.clone(), n);
                    }
                    Event::PageWritten {
                        pair, counts, read, ..
                    } => {
                        view.counts.pages += counts.pages;
                        view.counts.visits_inserted += counts.visits_inserted;
                        view.counts.visits_updated += counts.visits_updated;
                        view.counts.activities_written += counts.activities_written;
                        view.counts.rejects += counts.rejects;
                        view.counts.strings_cleaned += counts.strings_cleaned;
                        if let Some(n) = left.get_mut(pair) {
                            let done = read.min(*n);
                            *n -= done;
                            view.visits_left = view.visits_left.saturating_sub(done);
                        }
                    }
                    Event::PairFinished { pair, outcome, .. } => {
                        view.done += 1;
                        if outcome == RunOutcome::Failed {
                            view.failed += 1;
                        }
                        // Whatever it did not read, it will not read in this pass.
                        if let Some(n) = left.remove(pair) {
                            view.visits_left = view.visits_left.saturating_sub(n);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass_finished(live: &Live, pairs: usize, failed: usize) {
        live.on(&Event::PassFinished {
            extra: false,
            outcome: if failed > 0 {
                RunOutcome::Failed
            } else {
                RunOutcome::Ok
            },
            elapsed: Duration::from_secs(1),
            pairs,
            failed,
            counts: Counts::default(),
            errors: &[],
        });
    }

    #[test]
    fn visits_left_count_down_as_pages_are_read_and_drop_when_a_pair_ends() {
        let live = Live::new();
        let (a, b) = (PairKey::new(1, 2, None), PairKey::new(1, 3, None));
        live.on(&Event::PassStarted {
            pairs: 2,
            due_by: None,
        });
        for pair in [&a, &b] {
            live.on(&Event::ListSize {
                pair,
                total: 250,
                settled: 150,
            });
        }
        // A page that read 40 items, only 5 of them new: 40 fewer left, not 5.
        live.on(&Event::PageWritten {
            pair: &a,
            counts: Counts {
                pages: 1,
                visits_inserted: 5,
                ..Counts::default()
            },
            read: 40,
            set_aside: false,
        });
        assert_eq!(live.current().unwrap().visits_left, 160);
        live.on(&Event::PairFinished {
            pair: &a,
            outcome: RunOutcome::Ok,
            counts: Counts::default(),
            settled: 190,
            recoveries: &[],
            error: None,
        });

        let now = live.current().unwrap();
        assert_eq!(now.visits_left, 100, "only b's are left");
        assert_eq!((now.done, now.counts.visits_inserted), (1, 5));
    }

    #[test]
    fn a_pass_that_ran_no_pair_does_not_hide_the_last_one_that_did() {
        let live = Live::new();
        pass_finished(&live, 3, 3);
        pass_finished(&live, 0, 0);

        assert_eq!(live.last().unwrap().pairs, 0);
        let busy = live.last_busy().unwrap();
        assert_eq!((busy.pairs, busy.failed), (3, 3));
    }
}
