//! The one feed of what happened: the API and the engine say it once, as a typed [`Event`], and
//! every surface (log lines, Prometheus counters, the progress bar, the status page) subscribes.
//!
//! Nothing counts the same thing in two places: a request is counted where the client answers
//! it, a page where the store wrote it, a run where the engine ended it. Observers are called
//! synchronously on the emitting task and must be quick (an atomic add, a log line).

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{PairKey, RunOutcome};

/// How one HTTP attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The upstream answered with this status code.
    Status(u16),
    /// No answer: a timeout, a refused connection, a body cut short.
    NoAnswer,
}

/// What a walk or a pass did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub pages: u64,
    pub visits_inserted: u64,
    pub visits_updated: u64,
    pub activities_written: u64,
    pub rejects: u64,
    /// Strings (and numbers) repaired in the pages written so they could be stored.
    pub strings_cleaned: u64,
}

impl Counts {
    pub fn visits_written(&self) -> u64 {
        self.visits_inserted + self.visits_updated
    }
}

/// Something that happened, said once.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// One attempt at one request ended (each retry is an attempt of its own).
    Request {
        agent_id: i64,
        answer: Answer,
        elapsed: Duration,
    },
    /// A failed attempt will be tried again after `wait`.
    Retry {
        pair: &'a PairKey,
        page: i64,
        attempt: u32,
        wait: Duration,
        rate_limited: bool,
        error: &'a dyn fmt::Display,
    },
    /// The first page of a pair's walk told how long its list is.
    ListSize {
        pair: &'a PairKey,
        total: i64,
        settled: i64,
    },
    /// One page's rows were committed.
    PageWritten {
        pair: &'a PairKey,
        counts: Counts,
        /// Items of the list this page read past the mark, written or unchanged.
        read: u64,
        /// A page fetched ahead that the walk could not place: written, with no mark.
        set_aside: bool,
    },
    /// A pair's run ended (any outcome but running).
    PairFinished {
        pair: &'a PairKey,
        outcome: RunOutcome,
        counts: Counts,
        settled: i64,
        recoveries: &'a [String],
        error: Option<&'a str>,
    },
    /// The platform's `Date` was more than [`crate::api::LARGE_SKEW`] from our clock (positive:
    /// ahead of it). Settling never trusts it beyond our clock.
    ClockSkew { agent_id: i64, skew_seconds: i64 },
    /// A pair was checked: its run ended after at least one request.
    Checked {
        /// Time since the pair's previous check; `None` for its first.
        since_last: Option<Duration>,
        /// The check found new visits.
        found_new: bool,
        /// A check between the ticks (the pair was due for its rate, an open visit or a
        /// change), on top of the one per tick.
        extra: bool,
        requests: u64,
    },
    /// An adaptive pass planned its checks.
    Schedule {
        pairs: usize,
        /// Pairs due between the ticks (hot, open, changed or never synced).
        hot: usize,
        /// The schedule's tick period.
        tick: Duration,
        /// Requests per second the schedule may spend; `None` before it is measured.
        budget: Option<f64>,
        /// How long a check of every pair takes at that budget.
        sweep: Option<Duration>,
        /// The budget leaves checks to spend between the ticks.
        spare: bool,
    },
    /// A pass started; `pairs` is how many it may take.
    PassStarted {
        pairs: usize,
        due_by: Option<DateTime<Utc>>,
    },
    /// A pass ended.
    PassFinished {
        /// A pass between the ticks (see `PassPlan::extra`).
        extra: bool,
        outcome: RunOutcome,
        elapsed: Duration,
        pairs: usize,
        failed: usize,
        counts: Counts,
        errors: &'a [String],
    },
}

/// A subscriber to the feed.
pub trait Observer: Send + Sync {
    fn on(&self, event: &Event<'_>);
}

/// The feed: cheap to clone, clones share the subscribers.
#[derive(Clone, Default)]
pub struct Feed {
    observers: Arc<RwLock<Vec<Arc<dyn Observer>>>>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.observers.read().map_or(0, |o| o.len());
        f.debug_struct("Feed").field("observers", &n).finish()
    }
}

impl Feed {
    /// A feed with no subscriber: events go nowhere.
    pub fn new() -> Self {
        Feed::default()
    }

    /// Adds a subscriber; it hears every event emitted from now on.
    pub fn subscribe(&self, observer: Arc<dyn Observer>) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    pub fn emit(&self, event: Event<'_>) {
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for o in observers.iter() {
            o.on(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Pages(AtomicU64);

    impl Observer for Pages {
        fn on(&self, event: &Event<'_>) {
            if let Event::PageWritten { counts, .. } = event {
                self.0.fetch_add(counts.visits_written(), Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn every_subscriber_hears_each_event_once_from_when_it_subscribed() {
        let feed = Feed::new();
        let (a, b) = (Arc::new(Pages::default()), Arc::new(Pages::default()));
        feed.subscribe(a.clone());
        let pair = PairKey::new(1, 2, None);
        let page = |n| Event::PageWritten {
            pair: &pair,
            counts: Counts {
                visits_inserted: n,
                visits_updated: 1,
                ..Counts::default()
            },
            read: n + 1,
            set_aside: false,
        };

        feed.clone().emit(page(2));
        feed.subscribe(b.clone());
        feed.emit(page(4));

        assert_eq!(
            a.0.load(Ordering::Relaxed),
            3 + 5,
            "clones share subscribers"
        );
        assert_eq!(
            b.0.load(Ordering::Relaxed),
            5,
            "only what came after it subscribed"
        );
    }
}
