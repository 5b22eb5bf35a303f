//! A requests-per-second cap learned from where the platform's 429s begin: AIMD on the rate,
//! beside the concurrency limit of [`super::concurrency`].
//!
//! Concurrency alone cannot hold a rate. At a few milliseconds of latency one request in flight
//! already sends hundreds a second, so behind a token bucket every refill ended in a round of
//! 429s. So a 429 also sets a cap on how many requests a second start:
//!
//! - **Learn.** The first 429 of a round sets the cap to [`CUT`] of the rate the platform
//!   accepted since the previous round (or since the token got busy), and to no more than
//!   [`CUT`] of the cap before it. Behind a token bucket, the rate accepted between two rounds
//!   of 429s is at most the bucket's refill rate. The first round only bounds the burst a full
//!   bucket allowed, so the second replaces its cap; after that a cut never more than halves it.
//! - **Probe.** Each accepted answer to a request the cap held back raises the cap by
//!   [`GROWTH`]: a cap in use grows by about [`GROWTH`] of itself each second, so a platform
//!   that raised its limit is found again, and the next 429 comes only after a long while.
//! - **Spread.** Requests start evenly spaced at the cap, never in a burst.
//!
//! Until a 429 there is no cap, and nothing waits here.

use std::time::Duration;

use tokio::time::Instant;

/// The cap after a round of 429s, as a share of the rate the platform accepted.
pub const CUT: f64 = 0.9;
/// A cut keeps at least this share of the cap before it: one odd 429 (a neighbour spending
/// the same limit, a platform hiccup) does not throw away what was learned.
const MIN_KEPT: f64 = 0.5;
/// Requests a second added to the cap for each accepted answer it held back.
pub const GROWTH: f64 = 0.02;
/// The lowest cap, in requests a second.
const MIN_RATE: f64 = 0.1;
/// Nothing in flight for this long: the next request starts a new measurement, so time the
/// token sat idle does not read as a low accepted rate.
const IDLE_GAP: Duration = Duration::from_secs(1);
/// The shortest span a rate is measured over, so the first round of 429s cannot divide by zero.
const MIN_SPAN: f64 = 0.001;

/// The learned cap of one token, and what it measures to learn it. Pure: every method takes
/// the time, so tests drive it on any clock.
#[derive(Debug, Default)]
pub(super) struct RateCap {
    /// Requests a second, once a 429 set it.
    cap: Option<f64>,
    /// The cap came from the first round, measured over a full bucket's burst.
    provisional: bool,
    /// The earliest start of the next request under the cap.
    next: Option<Instant>,
    /// Answers the platform accepted since `since`.
    accepted: u64,
    /// Where the current measurement began: the last cut, or the first request after idling.
    since: Option<Instant>,
    /// When the last round of 429s began: later 429s to requests sent before it belong to it.
    last_cut: Option<Instant>,
    /// The last request's start or answer, or the end of a `Retry-After` pause.
    last_active: Option<Instant>,
}

impl RateCap {
    /// The cap in requests a second, once there is one.
    pub(super) fn cap(&self) -> Option<f64> {
        self.cap
    }

    /// When the next request may start, if that is later than `now`.
    pub(super) fn wait_until(&self, now: Instant) -> Option<Instant> {
        self.cap?;
        self.next.filter(|next| *next > now)
    }

    /// A request starts at `now`; `idle` when no other request is in flight.
    pub(super) fn start(&mut self, now: Instant, idle: bool) {
        let rested = self
            .last_active
            .is_none_or(|at| now.saturating_duration_since(at) >= IDLE_GAP);
        if idle && rested {
            self.since = Some(now);
            self.accepted = 0;
        }
        self.last_active = Some(now);
        if let Some(cap) = self.cap {
            let at = self.next.map_or(now, |next| next.max(now));
            self.next = Some(at + Duration::from_secs_f64(1.0 / cap));
        }
    }

    /// The platform answered a request (anything but a 429); `held` when the cap made it wait.
    pub(super) fn accepted(&mut self, now: Instant, held: bool) {
        self.accepted += 1;
        self.touch(now);
        if held && let Some(cap) = &mut self.cap {
            *cap += GROWTH;
        }
    }

    /// A request ended without an answer that says anything about the rate (a 503, a timeout).
    pub(super) fn touch(&mut self, now: Instant) {
        self.last_active = Some(self.last_active.map_or(now, |at| at.max(now)));
    }

    /// A 429 at `now` to a request that started at `started`. The first of a round cuts the
    /// cap; returns whether it did.
    pub(super) fn rate_limited(&mut self, now: Instant, started: Instant) -> bool {
        self.touch(now);
        if self.last_cut.is_some_and(|cut| started < cut) {
            return false;
        }
        let since = self.since.unwrap_or(started);
        let span = now.saturating_duration_since(since).as_secs_f64();
        let accepted = self.accepted as f64 / span.max(MIN_SPAN);
        let cap = match self.cap {
            Some(cap) if !self.provisional => (CUT * accepted.min(cap)).max(MIN_KEPT * cap),
            Some(cap) => CUT * accepted.min(cap),
            None => CUT * accepted,
        };
        self.provisional = self.cap.is_none();
        self.cap = Some(cap.max(MIN_RATE));
        self.last_cut = Some(now);
        self.since = Some(now);
        self.accepted = 0;
        true
    }

    /// No request starts before `until` (a `Retry-After`): that wait is not idling.
    pub(super) fn paused_until(&mut self, until: Instant) {
        self.touch(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn without_a_429_there_is_no_cap_and_nothing_waits() {
        let t0 = Instant::now();
        let mut r = RateCap::default();

        for i in 0..1000 {
            let now = t0 + ms(i / 10);
            assert_eq!(r.wait_until(now), None);
            r.start(now, false);
            r.accepted(now, false);
        }

        assert_eq!(r.cap(), None);
    }

    #[test]
    fn the_first_429_of_a_round_caps_the_rate_below_what_was_accepted_and_the_rest_do_not() {
        let t0 = Instant::now();
        let mut r = RateCap::default();
        // 40 answers in two seconds, one every 50 ms: 20 a second accepted.
        for i in 0..40 {
            r.start(t0 + ms(50 * i), i == 0);
            r.accepted(t0 + ms(50 * i + 10), false);
        }
        let first = t0 + ms(2000);
        r.start(first, false);
        r.start(first + ms(1), false);

        assert!(r.rate_limited(first + ms(10), first));
        assert!(
            !r.rate_limited(first + ms(11), first + ms(1)),
            "sent before the round began: the same round"
        );

        let cap = r.cap().unwrap();
        assert!((cap - CUT * 40.0 / 2.01).abs() < 1e-9, "{cap}");
    }

    #[test]
    fn under_a_cap_requests_start_evenly_spaced() {
        let t0 = Instant::now();
        let mut r = RateCap {
            cap: Some(4.0),
            ..RateCap::default()
        };

        let mut starts = Vec::new();
        let mut now = t0;
        for _ in 0..5 {
            if let Some(at) = r.wait_until(now) {
                now = at;
            }
            r.start(now, false);
            starts.push(now.duration_since(t0));
        }

        assert_eq!(starts, [ms(0), ms(250), ms(500), ms(750), ms(1000)]);
    }

    #[test]
    fn a_cap_in_use_grows_by_its_growth_per_answer_and_one_not_in_use_stays() {
        let t0 = Instant::now();
        let mut r = RateCap {
            cap: Some(10.0),
            ..RateCap::default()
        };

        for _ in 0..50 {
            r.accepted(t0, true);
        }
        assert!((r.cap().unwrap() - (10.0 + 50.0 * GROWTH)).abs() < 1e-9);
        for _ in 0..50 {
            r.accepted(t0, false);
        }
        assert!((r.cap().unwrap() - (10.0 + 50.0 * GROWTH)).abs() < 1e-9);
    }

    #[test]
    fn a_cut_is_measured_since_the_last_round_and_never_more_than_halves_the_cap() {
        let t0 = Instant::now();
        let mut r = RateCap {
            cap: Some(20.0),
            ..RateCap::default()
        };
        // Ten seconds at 12 a second accepted, then a round of 429s: 0.9 × 12.
        for i in 0..120 {
            let at = t0 + ms(1000 * i / 12);
            r.start(at, i == 0);
            r.accepted(at, false);
        }
        let first = t0 + ms(10_000);
        r.start(first, false);
        assert!(r.rate_limited(first, first));
        assert!(
            (r.cap().unwrap() - CUT * 12.0).abs() < 1e-9,
            "{:?}",
            r.cap()
        );

        // A 429 straight away, nothing accepted in between: half, not nothing.
        let second = first + ms(5);
        r.start(second, false);
        assert!(r.rate_limited(second + ms(1), second));
        assert!((r.cap().unwrap() - CUT * 12.0 * MIN_KEPT).abs() < 1e-9);
    }

    #[test]
    fn time_spent_idle_does_not_read_as_a_low_rate_but_a_retry_after_pause_does_count() {
        let t0 = Instant::now();
        let mut r = RateCap::default();
        r.start(t0, true);
        r.accepted(t0 + ms(10), false);
        // Idle for a minute, then 20 answers in one second.
        let busy = t0 + Duration::from_secs(60);
        for i in 0..20 {
            r.start(busy + ms(50 * i), i == 0);
            r.accepted(busy + ms(50 * i), false);
        }
        assert!(r.rate_limited(busy + ms(1000), busy + ms(1000)));
        let cap = r.cap().unwrap();
        assert!((cap - CUT * 20.0).abs() < 1e-9, "{cap}");

        // A pause of a second, then 16 answers in the next second: the pause is counted, and
        // the first round's cap is replaced, not halved.
        let after = busy + ms(2000);
        r.paused_until(after);
        for i in 0..16 {
            r.start(after + ms(60 * i), i == 0);
            r.accepted(after + ms(60 * i), false);
        }
        let end = after + ms(1000);
        assert!(r.rate_limited(end, end));
        assert!((r.cap().unwrap() - CUT * 8.0).abs() < 1e-9, "{:?}", r.cap());
    }
}
