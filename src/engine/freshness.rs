//! The arithmetic of a schedule per pair (`../shared/docs/freshness.md`): how often each pair's
//! viewer starts visits, and how to spend a request budget on the pairs most likely to hold new
//! ones. Pure: the pass and the store decide when it runs and where its numbers live.
//!
//! - [`ArrivalRate`]: a pair's visits per second, an exponentially decayed count of the
//!   `visitAt`s its checks returned, so a burst weighs more while it is recent.
//! - [`intervals`]: the square-root rule under a budget. A visit that arrives uniformly within a
//!   check interval `I` waits `I / 2`, so the delay weighted by arrivals is `Σ λᵢ·Iᵢ / 2`;
//!   minimising it subject to `Σ 1/Iᵢ = B` gives `Iᵢ ∝ 1/√λᵢ`. Every interval is also capped at
//!   the tick period, the contract that every pair is checked once per tick.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[cfg(test)]
mod model;

/// Visits per second of one pair, decayed with a half-life: `rate(t) = rate(t₀)·2^(−(t−t₀)/h)`
/// plus `ln 2 / h` for each visit seen (the weight that makes a steady stream of `λ` converge
/// to `λ`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalRate {
    pub per_second: f64,
    /// When `per_second` was last brought up to date.
    pub at: DateTime<Utc>,
}

impl ArrivalRate {
    /// A pair never checked: the account's rate as a prior.
    pub fn prior(per_second: f64, at: DateTime<Utc>) -> Self {
        ArrivalRate {
            per_second: per_second.max(0.0),
            at,
        }
    }

    /// The rate as it stands at `now`, with no visit seen since `at`.
    pub fn at(&self, now: DateTime<Utc>, half_life: Duration) -> f64 {
        self.per_second * decay(seconds_between(self.at, now), half_life)
    }

    /// The rate after a check at `now` that found visits starting at `arrivals` (each after
    /// `at`; earlier ones were counted by an earlier check and are skipped).
    pub fn observe(
        &self,
        arrivals: &[DateTime<Utc>],
        now: DateTime<Utc>,
        half_life: Duration,
    ) -> ArrivalRate {
        let unseen: Vec<DateTime<Utc>> = arrivals
            .iter()
            .copied()
            .filter(|t| *t > self.at && *t <= now)
            .collect();
        self.with_new(&unseen, now, half_life)
    }
}

impl ArrivalRate {
    /// The rate after a check at `now` that inserted visits starting at `arrivals`: each
    /// counted once, however long before the previous check it started (a visit the platform
    /// listed late is still an arrival this check found).
    pub fn with_new(
        &self,
        arrivals: &[DateTime<Utc>],
        now: DateTime<Utc>,
        half_life: Duration,
    ) -> ArrivalRate {
        let weight = std::f64::consts::LN_2 / half_life.as_secs_f64().max(1e-9);
        let seen: f64 = arrivals
            .iter()
            .map(|t| weight * decay(seconds_between(*t, now), half_life))
            .sum();
        ArrivalRate {
            per_second: self.at(now, half_life) + seen,
            at: now.max(self.at),
        }
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0) as f64) / 1000.0
}

fn decay(elapsed_s: f64, half_life: Duration) -> f64 {
    (-elapsed_s / half_life.as_secs_f64().max(1e-9)).exp2()
}

/// A pair whose rate promises fewer than this many visits per tick (per hour, for longer ticks)
/// is dormant: checked at the ticks only. Without it a budget larger than the account needs
/// would be spent on pairs whose rate has all but decayed away.
const DORMANT_PER_TICK: f64 = 1.0 / 32.0;
/// The longest horizon [`DORMANT_PER_TICK`] looks over.
const DORMANT_HORIZON: f64 = 3600.0;

/// Whether a pair with `rate` visits per second is worth checking between ticks of `tick` s.
fn lively(rate: f64, tick: f64) -> bool {
    rate * tick.min(DORMANT_HORIZON) >= DORMANT_PER_TICK
}

/// How a request budget is shared between the pairs: the square-root rule's constant, or none
/// when the budget is no more than one check per pair per tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocation {
    /// `c` of `Iᵢ = c/√λᵢ`; `None`: every pair once per tick.
    c: Option<f64>,
    tick: Duration,
    min_interval: Duration,
}

impl Allocation {
    /// Every pair once per tick, nothing between.
    pub fn every_tick(tick: Duration) -> Self {
        Allocation {
            c: None,
            tick,
            min_interval: tick,
        }
    }

    /// Shares `budget` checks per second between pairs with these rates: every pair once per
    /// `tick`, and what is left by the square-root rule, no pair more often than once per
    /// `min_interval`. When the budget cannot check every pair once per tick, every interval is
    /// the tick (the sweep then runs over, hot pairs first: the caller's ordering).
    pub fn new(rates: &[f64], budget: f64, tick: Duration, min_interval: Duration) -> Self {
        let t = tick.as_secs_f64().max(1e-9);
        let min = min_interval.min(tick).as_secs_f64().max(1e-9);
        let n = rates.len() as f64;
        let hot: Vec<f64> = rates.iter().copied().filter(|&l| lively(l, t)).collect();
        let flat = Allocation::every_tick(tick);
        if hot.is_empty() || budget.is_nan() || budget <= n / t {
            return flat;
        }
        // Checks per second the rule spends for a given c, each pair between once per tick and
        // once per min_interval; it falls as c grows.
        let spent = |c: f64| -> f64 {
            (n - hot.len() as f64) / t
                + hot
                    .iter()
                    .map(|&l| (l.sqrt() / c).clamp(1.0 / t, 1.0 / min))
                    .sum::<f64>()
        };
        // At `hi` even the busiest pair is down to once per tick: the flat spend, below budget.
        let mut hi = t * hot.iter().cloned().fold(0.0, f64::max).sqrt();
        let mut lo = 0.0_f64;
        if spent(lo.max(1e-300)) <= budget {
            // Every hot pair at min_interval fits: the budget is more than they need.
            hi = min * hot.iter().cloned().fold(f64::INFINITY, f64::min).sqrt();
        } else {
            for _ in 0..100 {
                let mid = (lo + hi) / 2.0;
                if spent(mid) > budget {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        Allocation {
            c: Some(hi),
            tick,
            min_interval: min_interval.min(tick),
        }
    }

    /// How long after a check a pair with rate `rate` is due again.
    pub fn interval(&self, rate: f64) -> Duration {
        let t = self.tick.as_secs_f64();
        match self.c {
            Some(c) if lively(rate, t) => {
                let i = (c / rate.sqrt()).clamp(self.min_interval.as_secs_f64(), t);
                Duration::from_secs_f64(i)
            }
            _ => self.tick,
        }
    }

    /// Whether the rule found budget to spend between the ticks.
    pub fn has_spare(&self) -> bool {
        self.c.is_some()
    }
}

/// Check intervals for pairs with these arrival rates, spending `budget` checks per second in
/// all, none longer than `tick` (see [`Allocation::new`], with no shortest interval).
pub fn intervals(rates: &[f64], budget: f64, tick: Duration) -> Vec<Duration> {
    let a = Allocation::new(rates, budget, tick, Duration::from_millis(1));
    rates.iter().map(|&l| a.interval(l)).collect()
}

/// What a check of a pair found, for [`next_check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    /// The pair's arrival rate after the check.
    pub rate: f64,
    /// A visit of the pair is still going on (not settled).
    pub open: bool,
    /// The check found new visits.
    pub found_new: bool,
}

/// The rate a pair is scheduled by: its own, or more when what it showed lately promises more.
/// A check that found new visits lends it at least one visit per tick (a viewer back after a
/// pause is likelier than the average to come back again soon: bursts are the norm around live
/// events); an open visit, the account's mean rate `prior`.
pub fn lent_rate(rate: f64, open: bool, found_new: bool, prior: f64, tick: Duration) -> f64 {
    if found_new {
        rate.max(1.0 / tick.as_secs_f64().max(1e-9))
    } else if open {
        rate.max(prior)
    } else {
        rate
    }
}

/// When a pair checked at `now` is due again, and why: by its [`lent_rate`] under the
/// allocation, never later than `next_tick` (the contract that every pair is checked once per
/// tick).
pub fn next_check(
    allocation: &Allocation,
    prior: f64,
    checked: Checked,
    now: DateTime<Utc>,
    next_tick: Option<DateTime<Utc>>,
) -> (Option<DateTime<Utc>>, crate::domain::DueReason) {
    use crate::domain::DueReason;
    let lent = lent_rate(
        checked.rate,
        checked.open,
        checked.found_new,
        prior,
        allocation.tick,
    );
    let interval = allocation.interval(lent);
    let own = now + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    match next_tick {
        Some(tick) if tick <= own => (Some(tick), DueReason::Sweep),
        _ if interval >= allocation.tick => (Some(own), DueReason::Sweep),
        _ => {
            let reason = if checked.found_new {
                DueReason::Changed
            } else if checked.open {
                DueReason::Open
            } else {
                DueReason::Hot
            };
            (Some(own), reason)
        }
    }
}

/// The request budget as measured: requests per second while the pass had more due pairs than
/// it could take at once (its pace, then, is all the platform and the controller allow). An
/// exponentially weighted mean of one-second samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PaceMeter {
    per_second: Option<f64>,
    /// Requests a check costs, a weighted mean over the checks.
    per_check: Option<f64>,
}

impl PaceMeter {
    /// Weight of a new sample.
    const WEIGHT: f64 = 0.2;

    /// `requests` sent over `busy`, all of it with due pairs waiting.
    pub fn sample(&mut self, requests: u64, busy: Duration) {
        let secs = busy.as_secs_f64();
        if secs < 0.5 {
            return;
        }
        let sample = requests as f64 / secs;
        self.per_second = Some(match self.per_second {
            Some(p) => p + Self::WEIGHT * (sample - p),
            None => sample,
        });
    }

    /// Requests per second, once measured.
    pub fn per_second(&self) -> Option<f64> {
        self.per_second
    }

    /// A check that cost `requests`.
    pub fn check(&mut self, requests: u32) {
        let r = f64::from(requests);
        self.per_check = Some(match self.per_check {
            Some(p) => p + 0.01 * (r - p),
            None => r,
        });
    }

    /// Requests a check costs (1 until a check is seen: a quiet check is one request).
    pub fn per_check(&self) -> f64 {
        self.per_check.unwrap_or(1.0).max(1.0)
    }
}

/// The mean delay from a visit's arrival to its check, weighted by arrivals: `Σ λᵢ·Iᵢ/2 / Σ λᵢ`.
pub fn mean_delay(rates: &[f64], intervals: &[Duration]) -> Duration {
    let total: f64 = rates.iter().sum();
    if total <= 0.0 {
        return Duration::ZERO;
    }
    let weighted: f64 = rates
        .iter()
        .zip(intervals)
        .map(|(l, i)| l * i.as_secs_f64() / 2.0)
        .sum();
    Duration::from_secs_f64(weighted / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_steady_stream_converges_to_its_rate() {
        // One visit a minute for ten half-lives, checked every five minutes.
        let mut rate = ArrivalRate::prior(0.0, t0());
        for check in 1..=120 {
            let now = t0() + chrono::Duration::minutes(5 * check);
            let arrivals: Vec<_> = (0..5)
                .map(|m| now - chrono::Duration::minutes(m) - chrono::Duration::seconds(1))
                .collect();
            rate = rate.observe(&arrivals, now, HOUR);
        }
        let per_minute = rate.per_second * 60.0;
        assert!((per_minute - 1.0).abs() < 0.05, "{per_minute} a minute");
    }

    #[test]
    fn without_visits_the_rate_halves_each_half_life_and_a_visit_is_counted_once() {
        let rate = ArrivalRate::prior(0.01, t0());
        let later = t0() + chrono::Duration::hours(2);
        assert!((rate.at(later, HOUR) - 0.0025).abs() < 1e-12);

        let visit = t0() + chrono::Duration::minutes(30);
        let once = rate.observe(&[visit], later, HOUR);
        let twice = once.observe(&[visit], later, HOUR);
        assert_eq!(
            once, twice,
            "a visit before the last check is not counted again"
        );
        assert!(once.per_second > rate.at(later, HOUR));
    }

    #[test]
    fn a_budget_of_one_check_per_tick_or_less_checks_every_pair_once_per_tick() {
        let tick = Duration::from_secs(600);
        let rates = [0.0, 0.001, 0.1];
        for budget in [0.001, 3.0 / 600.0] {
            assert_eq!(intervals(&rates, budget, tick), vec![tick; 3]);
        }
    }

    #[test]
    fn spare_budget_goes_by_the_square_root_rule_and_is_spent_whole() {
        let tick = Duration::from_secs(600);
        // Two busy pairs (one four times the other), eight dormant ones.
        let mut rates = vec![0.04, 0.01];
        rates.extend([0.0; 8]);
        let budget = 0.5;
        let got = intervals(&rates, budget, tick);

        let spent: f64 = got.iter().map(|i| 1.0 / i.as_secs_f64()).sum();
        assert!((spent - budget).abs() < 1e-6, "spent {spent} of {budget}");
        for dormant in &got[2..] {
            assert_eq!(*dormant, tick, "dormant pairs keep the tick");
        }
        // Four times the rate: twice as often, not four times.
        let ratio = got[1].as_secs_f64() / got[0].as_secs_f64();
        assert!((ratio - 2.0).abs() < 1e-6, "{ratio}");
    }

    #[test]
    fn the_rule_beats_even_spending_on_skewed_arrivals() {
        let tick = Duration::from_secs(600);
        // Zipf-like: a few busy viewers and a long dormant tail.
        let rates: Vec<f64> = (1..=200)
            .map(|k| if k <= 50 { 0.01 / k as f64 } else { 0.0 })
            .collect();
        let budget = 2.0 * rates.len() as f64 / 600.0;
        let rule = intervals(&rates, budget, tick);
        let even = vec![Duration::from_secs_f64(rates.len() as f64 / budget); rates.len()];
        let (rule, even) = (mean_delay(&rates, &rule), mean_delay(&rates, &even));
        assert!(rule < even / 2, "{rule:?} against {even:?}");
    }
    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_busy_viewer_is_checked_between_ticks_and_never_more_often_than_the_floor() {
        let tick = Duration::from_secs(120);
        let min = Duration::from_secs(10);
        // 2,000 pairs: one very busy, a hundred busy, the rest dormant; a fifth spare.
        let mut rates = vec![0.3];
        rates.extend([0.01; 100]);
        rates.extend(vec![0.0; 1899]);
        let budget = 1.2 * rates.len() as f64 / 120.0;
        let a = Allocation::new(&rates, budget, tick, min);
        assert!(a.has_spare());
        assert_eq!(
            a.interval(0.3),
            min,
            "the busiest pair is held at the floor"
        );
        let busy = a.interval(0.01);
        assert!(busy > min && busy < tick, "{busy:?}");
        assert_eq!(a.interval(0.0), tick, "dormant pairs wait for the tick");
        assert_eq!(
            a.interval(1e-5),
            tick,
            "a rate that promises under a visit in 32 ticks is dormant"
        );
        // The budget is spent, not exceeded.
        let spent: f64 = rates
            .iter()
            .map(|&l| 1.0 / a.interval(l).as_secs_f64())
            .sum();
        assert!(spent <= budget * (1.0 + 1e-6), "spent {spent} of {budget}");
        assert!(spent >= budget * 0.99, "spent {spent} of {budget}");
    }

    #[test]
    fn a_budget_larger_than_the_hot_pairs_need_holds_them_at_the_floor_only() {
        let tick = Duration::from_secs(600);
        let min = Duration::from_secs(30);
        let rates = [0.5, 0.05, 0.0, 0.0];
        let a = Allocation::new(&rates, 1000.0, tick, min);
        assert_eq!(a.interval(0.5), min);
        assert_eq!(a.interval(0.05), min);
        assert_eq!(a.interval(0.0), tick);
    }

    #[test]
    fn without_spare_budget_every_pair_is_due_at_the_next_tick() {
        let tick = Duration::from_secs(120);
        let rates = [0.3, 0.01, 0.0];
        // Exactly one check per pair per tick: nothing spare.
        let a = Allocation::new(&rates, 3.0 / 120.0, tick, Duration::from_secs(10));
        assert!(!a.has_spare());
        let now = at("2026-12-03T12:00:30Z");
        let next_tick = Some(at("2026-12-03T12:02:00Z"));
        let checked = Checked {
            rate: 0.3,
            open: true,
            found_new: true,
        };
        assert_eq!(
            next_check(&a, 0.01, checked, now, next_tick),
            (next_tick, crate::domain::DueReason::Sweep)
        );
    }

    #[test]
    fn a_check_is_due_again_by_its_rate_and_never_after_the_next_tick() {
        use crate::domain::DueReason;
        let tick = Duration::from_secs(120);
        let mut rates = vec![0.05];
        rates.extend(vec![0.0; 99]);
        let a = Allocation::new(&rates, 2.0 * 100.0 / 120.0, tick, Duration::from_secs(5));
        let now = at("2026-12-03T12:00:00Z");
        let tick_at = at("2026-12-03T12:01:00Z");
        let next_tick = Some(tick_at);
        let quiet = Checked {
            rate: 0.05,
            open: false,
            found_new: false,
        };
        let (due, why) = next_check(&a, 0.0, quiet, now, next_tick);
        assert_eq!(why, DueReason::Hot);
        let due = due.expect("a due time");
        assert!(due < tick_at && due > now);
        // What the check found names the reason.
        let found = Checked {
            found_new: true,
            ..quiet
        };
        assert_eq!(
            next_check(&a, 0.0, found, now, next_tick).1,
            DueReason::Changed
        );
        let open = Checked {
            open: true,
            ..quiet
        };
        assert_eq!(next_check(&a, 0.0, open, now, next_tick).1, DueReason::Open);
        // A dormant pair waits for the tick; one with an open visit borrows the prior.
        let dormant = Checked {
            rate: 0.0,
            open: false,
            found_new: false,
        };
        assert_eq!(
            next_check(&a, 0.05, dormant, now, next_tick),
            (next_tick, DueReason::Sweep)
        );
        let watching = Checked {
            open: true,
            ..dormant
        };
        assert_eq!(
            next_check(&a, 0.05, watching, now, next_tick).1,
            DueReason::Open
        );
        // The tick caps every interval, even one past it.
        let soon = Some(now + chrono::Duration::seconds(1));
        assert_eq!(
            next_check(&a, 0.0, quiet, now, soon),
            (soon, DueReason::Sweep)
        );
    }

    #[test]
    fn new_visits_count_once_each_whenever_they_started() {
        let before = ArrivalRate::prior(0.0, t0());
        let now = t0() + chrono::Duration::hours(1);
        // One that started before the previous check (listed late), one just now.
        let late = t0() - chrono::Duration::minutes(5);
        let rate = before.with_new(&[late, now], now, HOUR);
        let w = std::f64::consts::LN_2 / 3600.0;
        let expected = w * (0.5_f64.powf(65.0 / 60.0) + 1.0);
        assert!((rate.per_second - expected).abs() < 1e-12, "{rate:?}");
        assert_eq!(rate.at, now);
    }

    #[test]
    fn the_pace_meter_follows_busy_seconds_only() {
        let mut m = PaceMeter::default();
        assert_eq!(m.per_second(), None);
        m.sample(10, Duration::from_millis(100));
        assert_eq!(m.per_second(), None, "too short a sample is ignored");
        m.sample(20, Duration::from_secs(1));
        assert_eq!(m.per_second(), Some(20.0));
        m.sample(10, Duration::from_secs(1));
        assert!((m.per_second().unwrap() - 18.0).abs() < 1e-9);
        assert_eq!(m.per_check(), 1.0);
        m.check(3);
        assert_eq!(m.per_check(), 3.0);
    }
}
