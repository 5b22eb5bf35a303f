//! Adaptive request concurrency: find the upstream's pace instead of guessing it.
//!
//! The model is Vector's adaptive request concurrency (AIMD on the number of requests in flight).
//! One [`Controller`] per token, shared by every pair that uses it:
//!
//! - **Ramp up.** It starts at [`INITIAL_LIMIT`] requests in flight and adds one each time a
//!   full limit's worth of requests succeeded while the limit was in use, as long as their
//!   latency stays near its baseline.
//! - **Back off.** A 429, a 503 or a timeout cuts the limit by half; a clear rise in latency
//!   cuts it by a quarter. At most one cut per round trip, so one burst of errors is one cut.
//! - **Retry-After** pauses the whole token: no request of any of its pairs starts before then.
//! - **A rate cap.** A 429 also caps the requests started per second ([`super::rate_cap`]), since
//!   on a fast link even one request in flight outruns a platform's limit.
//!
//! It never exceeds `api.max_concurrency`, and never goes below one.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::rate_cap::RateCap;

/// Requests in flight a new token starts with.
pub const INITIAL_LIMIT: f64 = 2.0;
/// The cut on a 429, 503 or timeout.
const BACKPRESSURE_CUT: f64 = 0.5;
/// The cut on a rise in latency.
const LATENCY_CUT: f64 = 0.75;
/// Latency counts as risen when the recent average exceeds the baseline by this factor…
const LATENCY_RISE: f64 = 2.0;
/// …and by at least this much, so jitter on a fast upstream is not a rise.
const LATENCY_RISE_FLOOR: Duration = Duration::from_millis(50);
/// Weights of a new sample in the slow baseline (while latency is steady, and while it is
/// high) and in the recent average.
const BASELINE_WEIGHT: f64 = 0.05;
const RISEN_BASELINE_WEIGHT: f64 = 0.01;
const RECENT_WEIGHT: f64 = 0.3;
/// The longest pause a `Retry-After` can cause when its wait would overflow the clock.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

/// How one request went, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that says nothing about load (a success, a 4xx, a broken body), and how long
    /// it took.
    Answered(Duration),
    /// The upstream pushed back with a 503, or no answer within the timeout.
    Backpressure,
    /// A 429: backpressure, and a sign of where the platform's rate ends.
    RateLimited,
}

/// What the controller of one token is doing, for logs, metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The current limit of requests in flight.
    pub limit: f64,
    pub in_flight: usize,
    /// Requests finished since the controller was made.
    pub completed: u64,
    /// Of those, how many the upstream pushed back on.
    pub backpressure: u64,
    /// The latency baseline, once there is one.
    pub baseline_rtt: Option<Duration>,
    /// Until when the token is paused by a `Retry-After`.
    pub paused_for: Option<Duration>,
    /// Requests a second the token keeps under, learned from its 429s; none before the first.
    pub rate_cap: Option<f64>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    paused_until: Option<Instant>,
    /// Slow and fast moving averages of latency, in seconds.
    baseline: Option<f64>,
    recent: Option<f64>,
    last_cut: Option<Instant>,
    /// Successes since the limit last grew, counted only while the limit was in use.
    earned: f64,
    /// A request had to wait for a free slot since the limit last grew: demand exceeds it.
    saturated: bool,
    completed: u64,
    backpressure: u64,
    rate: RateCap,
}

/// The requests-in-flight limit of one token.
#[derive(Debug)]
pub struct Controller {
    max: f64,
    state: Mutex<State>,
    changed: Notify,
}

/// A slot for one request. Report how it went with [`Permit::finish`]; dropping it unreported
/// (the request was cancelled) frees the slot without judging the upstream.
#[derive(Debug)]
pub struct Permit {
    controller: Arc<Controller>,
    started: Instant,
    /// The rate cap made this request wait: the cap is in use.
    held: bool,
    done: bool,
}

impl Controller {
    pub fn new(max_concurrency: usize) -> Arc<Self> {
        let max = max_concurrency.max(1) as f64;
        Arc::new(Controller {
            max,
            state: Mutex::new(State {
                limit: INITIAL_LIMIT.min(max),
                in_flight: 0,
                paused_until: None,
                baseline: None,
                recent: None,
                last_cut: None,
                earned: 0.0,
                saturated: false,
                completed: 0,
                backpressure: 0,
                rate: RateCap::default(),
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the token is not paused, the rate cap allows a start, and a slot under the
    /// limit is free.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let mut held = false;
        loop {
            // Registered before the state is read, so a release in between is not missed.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => match s.rate.wait_until(now) {
                        Some(at) => {
                            held = true;
                            Some(at)
                        }
                        None if (s.in_flight as f64) < s.limit.floor().max(1.0) => {
                            let idle = s.in_flight == 0;
                            s.rate.start(now, idle);
                            s.in_flight += 1;
                            return Permit {
                                controller: Arc::clone(self),
                                started: now,
                                held,
                                done: false,
                            };
                        }
                        None => {
                            s.saturated = true;
                            None
                        }
                    },
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// No request of this token starts within `wait` (a `Retry-After`); also a backpressure cut.
    pub fn pause(&self, wait: Duration) {
        let mut s = self.lock();
        // api.max_retry_after bounds the wait; saturate anyway rather than panic on overflow.
        let now = Instant::now();
        let until = now.checked_add(wait).unwrap_or(now + MAX_PAUSE);
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        s.rate.paused_until(until);
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn pace(&self) -> Pace {
        let s = self.lock();
        let now = Instant::now();
        Pace {
            limit: s.limit,
            in_flight: s.in_flight,
            completed: s.completed,
            backpressure: s.backpressure,
            baseline_rtt: s.baseline.map(Duration::from_secs_f64),
            paused_for: s
                .paused_until
                .filter(|u| *u > now)
                .map(|u| u.duration_since(now)),
            rate_cap: s.rate.cap(),
        }
    }

    fn release(&self, signal: Option<Signal>, started: Instant, held: bool) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let (before, cap_before) = (s.limit, s.rate.cap());
        if let Some(signal) = signal {
            s.completed += 1;
            let now = Instant::now();
            match signal {
                Signal::Answered(_) => s.rate.accepted(now, held),
                Signal::Backpressure => s.rate.touch(now),
                Signal::RateLimited => {
                    s.rate.rate_limited(now, started);
                }
            }
            self.judge(&mut s, signal);
        }
        let (after, cap_after) = (s.limit, s.rate.cap());
        drop(s);
        if after != before {
            tracing::debug!(
                limit = after,
                was = before,
                "request concurrency limit changed"
            );
        }
        // Growth moves the cap on every answer; only a cut is worth a line.
        if let Some(cap) = cap_after.filter(|cap| cap_before.is_none_or(|was| *cap < was)) {
            tracing::debug!(
                rate_cap = cap,
                was = cap_before,
                "request rate cap cut after a 429"
            );
        }
        self.changed.notify_waiters();
    }

    fn judge(&self, s: &mut State, signal: Signal) {
        let now = Instant::now();
        // One cut per round trip: the answers to requests sent before a cut say nothing new.
        let rtt = s.baseline.map_or(Duration::ZERO, Duration::from_secs_f64);
        let may_cut = s.last_cut.is_none_or(|at| now.duration_since(at) >= rtt);
        let rtt = match signal {
            Signal::Backpressure | Signal::RateLimited => {
                s.backpressure += 1;
                if may_cut {
                    self.cut(s, BACKPRESSURE_CUT, now);
                }
                return;
            }
            Signal::Answered(rtt) => rtt.as_secs_f64(),
        };
        let average =
            |old: Option<f64>, weight: f64| Some(old.map_or(rtt, |o| o + weight * (rtt - o)));
        s.recent = average(s.recent, RECENT_WEIGHT);
        let baseline = *s.baseline.get_or_insert(rtt);
        let recent = s.recent.unwrap_or(rtt);
        let risen = recent > baseline * LATENCY_RISE
            && recent - baseline > LATENCY_RISE_FLOOR.as_secs_f64();
        if risen {
            // The baseline follows a rise only slowly, so a climb under load reads as a rise;
            // but it does follow, so a lasting change (larger pages, a slower platform) becomes
            // the new normal instead of holding the limit at 1 for good.
            s.baseline = average(s.baseline, RISEN_BASELINE_WEIGHT);
            if may_cut {
                self.cut(s, LATENCY_CUT, now);
            }
            return;
        }
        s.baseline = average(s.baseline, BASELINE_WEIGHT);
        if s.saturated || s.in_flight as f64 + 1.0 >= s.limit.floor() {
            s.earned += 1.0;
        }
        if s.earned >= s.limit.floor() && s.limit < self.max {
            s.limit = (s.limit.floor() + 1.0).min(self.max);
            s.earned = 0.0;
            s.saturated = false;
        }
    }

    fn cut(&self, s: &mut State, factor: f64, now: Instant) {
        s.limit = (s.limit * factor).max(1.0);
        s.last_cut = Some(now);
        s.earned = 0.0;
        s.saturated = false;
    }
}

impl Permit {
    /// Starts the request's clock now: time spent waiting after the slot was granted (for the
    /// optional rate cap) is not the upstream's latency.
    pub fn start_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Frees the slot and tells the controller how the request went.
    pub fn finish(mut self, signal: impl FnOnce(Duration) -> Signal) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.controller
            .release(Some(signal(elapsed)), self.started, self.held);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.controller.release(None, self.started, self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(100);

    /// Keeps `n` requests of `rtt` each going through the controller, one after another in
    /// each of `workers` tasks, with `signal` deciding how each went.
    async fn drive(
        c: &Arc<Controller>,
        workers: usize,
        n: usize,
        rtt: Duration,
        signal: impl Fn(usize) -> Option<Signal> + Send + Sync + 'static,
    ) {
        let signal = Arc::new(signal);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (c, signal, next) = (Arc::clone(c), Arc::clone(&signal), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return;
                        }
                        let permit = c.acquire().await;
                        tokio::time::sleep(rtt).await;
                        let s = signal(i);
                        permit.finish(|took| s.unwrap_or(Signal::Answered(took)));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_ramps_up_to_the_ceiling_while_answers_stay_fast() {
        let c = Controller::new(16);
        assert_eq!(c.pace().limit, INITIAL_LIMIT);

        drive(&c, 32, 400, RTT, |_| None).await;

        assert_eq!(c.pace().limit, 16.0);
        assert_eq!(c.pace().completed, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_never_exceed_the_limit() {
        let c = Controller::new(4);
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watch = {
            let (c, peak) = (Arc::clone(&c), Arc::clone(&peak));
            tokio::spawn(async move {
                for _ in 0..1000 {
                    let p = c.pace();
                    assert!(p.in_flight as f64 <= p.limit.floor(), "{p:?}");
                    peak.fetch_max(p.in_flight, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(7)).await;
                }
            })
        };

        drive(&c, 20, 300, RTT, |_| None).await;
        watch.abort();

        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn backpressure_halves_the_limit_once_per_burst() {
        let c = Controller::new(16);
        drive(&c, 32, 400, RTT, |_| None).await;
        assert_eq!(c.pace().limit, 16.0);

        // Sixteen 429s answered at once: one cut, not sixteen.
        drive(&c, 16, 16, RTT, |_| Some(Signal::Backpressure)).await;

        assert_eq!(c.pace().limit, 8.0);
        assert_eq!(c.pace().backpressure, 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clear_rise_in_latency_cuts_the_limit() {
        let c = Controller::new(16);
        drive(&c, 32, 400, RTT, |_| None).await;

        drive(&c, 16, 64, RTT * 5, |_| None).await;

        assert!(c.pace().limit < 16.0, "{:?}", c.pace());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_rise_in_latency_becomes_the_new_normal() {
        let c = Controller::new(16);
        // A first quick answer, then every page takes six times as long, for good.
        drive(&c, 1, 1, Duration::from_millis(20), |_| None).await;
        drive(&c, 32, 3000, Duration::from_millis(120), |_| None).await;

        assert_eq!(c.pace().limit, 16.0, "{:?}", c.pace());
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_on_a_fast_upstream_is_not_a_rise() {
        let c = Controller::new(8);

        drive(&c, 16, 400, Duration::from_millis(1), |_| None).await;
        drive(&c, 16, 100, Duration::from_millis(20), |_| None).await;

        assert_eq!(c.pace().limit, 8.0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_request_of_the_token() {
        let c = Controller::new(16);
        let started = Instant::now();

        c.pause(Duration::from_secs(3));
        let a = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.acquire().await.started }
        });
        let b = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.acquire().await.started }
        });

        for at in [a.await.unwrap(), b.await.unwrap()] {
            assert_eq!(at.duration_since(started), Duration::from_secs(3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_request_frees_its_slot_without_judging() {
        let c = Controller::new(1);
        let permit = c.acquire().await;
        drop(permit);

        let again = tokio::time::timeout(Duration::from_secs(1), c.acquire()).await;

        assert!(again.is_ok(), "the slot was freed");
        assert_eq!(c.pace().completed, 0);
    }
}
