//! The schedule on a model of the account, on a clock of its own: pairs whose viewers start
//! visits as Poisson processes, a budget of checks per second, the cron's ticks, and the same
//! arithmetic and order of claims the passes use (never synced, late by a tick, then by expected
//! new visits). No database and no wall clock: one step is one second.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{Allocation, ArrivalRate, Checked, next_check};

const TICK: u64 = 120;
const HALF_LIFE: Duration = Duration::from_secs(3600);
const MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    Adaptive,
    EveryTick,
}

struct ModelPair {
    /// Visits per second, from `from` on.
    true_rate: f64,
    from: u64,
    /// Start times of visits not yet found.
    pending: Vec<f64>,
    next_arrival: f64,
    est: ArrivalRate,
    last_check: Option<u64>,
    next_due: Option<u64>,
    checks: Vec<u64>,
    /// How late each check came after the pair fell due.
    lateness: Vec<u64>,
}

struct Outcome {
    pairs: Vec<ModelPair>,
    delays: Vec<f64>,
    /// Checks made in each second.
    per_second: Vec<u32>,
}

fn t(s: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s as i64, 0).unwrap()
}

fn exp(rng: &mut StdRng, rate: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() / rate
}

/// `rates[i]` from second `from[i]`; `budget` checks a second; runs `horizon` seconds.
fn run(policy: Policy, rates: &[(f64, u64)], budget: u32, horizon: u64, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs: Vec<ModelPair> = rates
        .iter()
        .map(|&(true_rate, from)| ModelPair {
            true_rate,
            from,
            pending: Vec::new(),
            next_arrival: if true_rate > 0.0 {
                from as f64 + exp(&mut rng, true_rate)
            } else {
                f64::INFINITY
            },
            est: ArrivalRate::prior(0.0, t(0)),
            last_check: None,
            next_due: None,
            checks: Vec::new(),
            lateness: Vec::new(),
        })
        .collect();
    let mut delays = Vec::new();
    let mut per_second = Vec::new();
    let mut allocation = Allocation::every_tick(Duration::from_secs(TICK));
    let mut prior = 0.0;
    for s in 0..horizon {
        for p in &mut pairs {
            while p.next_arrival <= s as f64 {
                p.pending.push(p.next_arrival);
                p.next_arrival += exp(&mut rng, p.true_rate);
            }
        }
        if s % TICK == 0 && policy == Policy::Adaptive {
            let rates: Vec<f64> = pairs.iter().map(|p| p.est.at(t(s), HALF_LIFE)).collect();
            prior = rates.iter().sum::<f64>() / rates.len() as f64;
            // The engine plans on a share of the budget it measured.
            allocation = Allocation::new(
                &rates,
                0.95 * f64::from(budget),
                Duration::from_secs(TICK),
                MIN_INTERVAL,
            );
        }
        let next_tick = (s / TICK + 1) * TICK;
        // Due pairs in the order the claims take them.
        let mut due: Vec<usize> = (0..pairs.len())
            .filter(|&i| pairs[i].next_due.is_none_or(|d| d <= s))
            .collect();
        let key = |i: usize| {
            let p = &pairs[i];
            let never = p.last_check.is_none();
            let late = p.next_due.is_some_and(|d| d + TICK <= s);
            let value = p.est.per_second * (s - p.last_check.unwrap_or(s)) as f64;
            (never, late, value, std::cmp::Reverse(p.next_due))
        };
        due.sort_by(|&a, &b| key(b).partial_cmp(&key(a)).unwrap());
        let mut made = 0;
        for &i in due.iter().take(budget as usize) {
            made += 1;
            let p = &mut pairs[i];
            let found: Vec<DateTime<Utc>> = p
                .pending
                .iter()
                .map(|&a| {
                    DateTime::from_timestamp_millis(1_800_000_000_000 + (a * 1000.0) as i64)
                        .unwrap()
                })
                .collect();
            delays.extend(p.pending.drain(..).map(|a| s as f64 - a));
            p.est = p.est.with_new(&found, t(s), HALF_LIFE);
            p.last_check = Some(s);
            p.checks.push(s);
            p.lateness.push(s - p.next_due.unwrap_or(s).min(s));
            p.next_due = match policy {
                Policy::EveryTick => Some(next_tick),
                Policy::Adaptive => {
                    let checked = Checked {
                        rate: p.est.per_second,
                        open: false,
                        found_new: !found.is_empty(),
                    };
                    let (due, _) =
                        next_check(&allocation, prior, checked, t(s), Some(t(next_tick)));
                    due.map(|d| (d - t(0)).num_seconds().max(0) as u64)
                }
            };
        }
        per_second.push(made);
    }
    Outcome {
        pairs,
        delays,
        per_second,
    }
}

/// 1,000 pairs: twenty busy viewers with Zipf weights, the rest dormant, and one that wakes
/// up at 40 minutes; a budget a sweep nearly fills (1,000 pairs a tick need 8.3 checks a
/// second of 10).
fn account() -> Vec<(f64, u64)> {
    let mut rates: Vec<(f64, u64)> = (1..=20).map(|k| (0.4 / 3.6 / k as f64, 0)).collect();
    rates.extend(vec![(0.0, 0); 979]);
    rates.push((0.05, 2400));
    rates
}

const BUDGET: u32 = 10;
const HORIZON: u64 = 4 * 3600;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn busy_pairs_are_checked_more_every_pair_once_a_tick_and_the_budget_holds() {
    let rates = account();
    let adaptive = run(Policy::Adaptive, &rates, BUDGET, HORIZON, 7);
    let flat = run(Policy::EveryTick, &rates, BUDGET, HORIZON, 7);

    // No visit is left unfound for longer than a tick and a sweep.
    let sweep = (rates.len() as u64).div_ceil(u64::from(BUDGET));
    for o in [&adaptive, &flat] {
        let worst = o.delays.iter().cloned().fold(0.0, f64::max);
        assert!(
            worst <= (TICK + sweep + 1) as f64,
            "a visit waited {worst} s"
        );
        assert!(o.per_second.iter().all(|&n| n <= BUDGET));
    }
    // Every pair, dormant or not, is checked at least once per tick (plus a sweep's lateness).
    for (i, p) in adaptive.pairs.iter().enumerate() {
        let gaps = p.checks.windows(2).map(|w| w[1] - w[0]);
        let longest = gaps.max().unwrap_or(0);
        assert!(
            longest <= TICK + sweep,
            "pair {i}: {longest} s between checks"
        );
        assert!(p.checks.len() as u64 >= HORIZON / TICK - 1, "pair {i}");
    }
    // The spare budget went to the busy pairs: the busiest is checked far more often than a
    // dormant one, and the plan leaves the budget some room.
    let busiest = adaptive.pairs[0].checks.len();
    let dormant = adaptive.pairs[500].checks.len();
    assert!(busiest >= 4 * dormant, "{busiest} checks against {dormant}");
    let spent: u64 = adaptive.per_second.iter().map(|&n| u64::from(n)).sum();
    assert!(
        spent <= u64::from(BUDGET) * HORIZON,
        "{spent} checks in {HORIZON} s"
    );

    // The pair that woke up at 40 minutes is picked up: from two ticks after, it is checked
    // more than once a tick.
    let woke = adaptive.pairs.last().unwrap();
    assert!(woke.true_rate > 0.0 && woke.from == 2400);
    let after = woke
        .checks
        .iter()
        .filter(|&&c| (2400 + 2 * TICK..2400 + 6 * TICK).contains(&c))
        .count();
    assert!(after > 8, "{after} checks in four ticks after it woke");

    // And the visits land sooner: the floors, on the model.
    let (a, f) = (mean(&adaptive.delays), mean(&flat.delays));
    assert!(
        a <= f / 4.0,
        "mean delay {a:.1} s against every-tick's {f:.1} s"
    );
}

#[test]
fn without_spare_budget_the_sweep_goes_hot_first_and_starves_no_pair() {
    // 1,000 pairs, 6 checks a second: a sweep takes 167 s, longer than the 120 s tick.
    let rates = account();
    let o = run(Policy::Adaptive, &rates, 6, 2 * 3600, 11);
    let sweep = (rates.len() as u64).div_ceil(6);
    for (i, p) in o.pairs.iter().enumerate() {
        let longest = p.checks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            longest <= TICK + sweep,
            "pair {i}: {longest} s between checks"
        );
    }
    // Hot first, after the pairs late by more than a tick (the guard against starving them):
    // the busiest pair is checked sooner after it falls due than a dormant one.
    let late = |p: &ModelPair| p.lateness.iter().sum::<u64>() as f64 / p.lateness.len() as f64;
    let (busiest, dormant) = (late(&o.pairs[0]), late(&o.pairs[500]));
    assert!(
        busiest * 2.0 < dormant,
        "the busiest pair {busiest:.1} s late on average, a dormant one {dormant:.1} s"
    );
}
