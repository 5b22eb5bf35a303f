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
        let weight = std::f64::consts::LN_2 / half_life.as_secs_f64().max(1e-9);
        let seen: f64 = arrivals
            .iter()
            .filter(|t| **t > self.at && **t <= now)
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

/// Check intervals for pairs with these arrival rates, spending `budget` checks per second in
/// all, none longer than `tick` (every pair once per tick). When the budget cannot check every
/// pair once per tick, every interval is `tick` (the sweep then runs over, hot pairs first: the
/// caller's ordering). Otherwise the budget left after one check per tick goes by the
/// square-root rule: pairs below the cap get `c/√λ`, with `c` chosen so the budget is spent.
pub fn intervals(rates: &[f64], budget: f64, tick: Duration) -> Vec<Duration> {
    let t = tick.as_secs_f64();
    let n = rates.len() as f64;
    if rates.is_empty() || budget <= n / t {
        return vec![tick; rates.len()];
    }
    // Checks per second the rule gives for a given c: each pair at least once per tick.
    let spent = |c: f64| -> f64 { rates.iter().map(|&l| frequency(l, c).max(1.0 / t)).sum() };
    // `spent` falls as c grows; at `hi` even the busiest pair is down to once per tick.
    let (mut lo, mut hi) = (
        0.0_f64,
        t * rates.iter().cloned().fold(0.0, f64::max).sqrt(),
    );
    if hi == 0.0 {
        // No pair has seen a visit: the spare budget has nowhere better to go.
        return vec![tick; rates.len()];
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if spent(mid) > budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    rates
        .iter()
        .map(|&l| {
            let f = frequency(l, hi).max(1.0 / t);
            Duration::from_secs_f64((1.0 / f).min(t))
        })
        .collect()
}

/// `√λ / c`: checks per second of a pair with rate `l` under the rule's constant `c`.
fn frequency(l: f64, c: f64) -> f64 {
    if l <= 0.0 { 0.0 } else { l.sqrt() / c }
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
}
