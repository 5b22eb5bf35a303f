//! Arrivals: viewers starting to watch while a daemon syncs, for the freshness benchmark.
//!
//! Every step, an [`ArrivalPlan`] opens visits for a few users: most from a hot set with Zipf
//! weights (the `k`-th hottest is picked in proportion to `1/k^s`), now and then a cold one drawn
//! uniformly from all users. Each is an open visit at the simulator's now ([`World::open_visit`]).
//! The picks come from the plan's own seed, so two runs of one plan open visits for the same
//! users in the same order, whatever the daemon asks meanwhile. The process waits behind a gate
//! until it is told to start ([`Simulator::arrivals_gate`], opened by `POST /_sim/arrivals`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use crate::handle::Simulator;
use crate::world::World;

/// What arrives, how often and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalPlan {
    /// The agent whose users get the visits.
    pub agent_id: i64,
    /// Users `1..=users` of the agent: the cold ones are drawn among all of them.
    pub users: i64,
    /// Time between steps (the first step is at the start).
    pub every: Duration,
    /// Visits opened at each step.
    pub per_step: usize,
    /// Size of the hot set, drawn once from the users by the seed.
    pub hot_users: usize,
    /// The Zipf exponent `s` over the hot set's ranks (0: all hot users alike).
    pub zipf_exponent: f64,
    /// The share of picks that go to a uniformly random user instead of the hot set, 0..=1.
    pub cold_share: f64,
    /// Steps stop once this long has passed since the start.
    pub duration: Duration,
    /// The seed of the picks.
    pub seed: u64,
}

impl ArrivalPlan {
    /// The plan's values, checked: an error names the first that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.users < 1 {
            return Err(format!(
                "arrivals need at least one user, got {}",
                self.users
            ));
        }
        if self.every.is_zero() {
            return Err("the time between arrival steps must be more than 0".to_owned());
        }
        if self.per_step == 0 {
            return Err("arrivals per step must be at least 1".to_owned());
        }
        if self.hot_users == 0 || self.hot_users as u64 > self.users as u64 {
            return Err(format!(
                "the hot set must hold 1..={} users (all there are), got {}",
                self.users, self.hot_users
            ));
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            return Err(format!(
                "the Zipf exponent must be a number of at least 0, got {}",
                self.zipf_exponent
            ));
        }
        if !(0.0..=1.0).contains(&self.cold_share) {
            return Err(format!(
                "the cold share must be between 0 and 1, got {}",
                self.cold_share
            ));
        }
        Ok(())
    }
}

/// One visit opened by the arrival process: one JSON line of its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub agent: i64,
    pub user: i64,
    pub activity_id: String,
    /// RFC 3339, whole seconds: the visit's `visitAt`.
    pub visit_at: DateTime<Utc>,
    /// Picked from the hot set (else a cold user).
    pub hot: bool,
}

/// The seeded choice of users: Zipf weights over a hot set, or a uniformly random user.
#[derive(Debug)]
pub struct Picker {
    /// The hot users, hottest first.
    hot: Vec<i64>,
    /// `cumulative[k]`: the Zipf weights of ranks `0..=k`, summed.
    cumulative: Vec<f64>,
    users: i64,
    cold_share: f64,
    rng: StdRng,
}

impl Picker {
    /// The picker of a [validated](ArrivalPlan::validate) plan.
    pub fn new(plan: &ArrivalPlan) -> Self {
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let users = usize::try_from(plan.users).expect("a validated plan has users >= 1");
        let hot: Vec<i64> = rand::seq::index::sample(&mut rng, users, plan.hot_users)
            .into_iter()
            .map(|i| i as i64 + 1)
            .collect();
        let cumulative = (1..=hot.len())
            .scan(0.0, |sum, rank| {
                *sum += (rank as f64).powf(-plan.zipf_exponent);
                Some(*sum)
            })
            .collect();
        Picker {
            hot,
            cumulative,
            users: plan.users,
            cold_share: plan.cold_share,
            rng,
        }
    }

    /// The hot users, hottest first.
    pub fn hot_users(&self) -> &[i64] {
        &self.hot
    }

    /// The next user, and whether it came from the hot set.
    pub fn pick(&mut self) -> (i64, bool) {
        if self.rng.random_bool(self.cold_share) {
            return (self.rng.random_range(1..=self.users), false);
        }
        let total = *self.cumulative.last().expect("the hot set is never empty");
        let at = self.rng.random_range(0.0..total);
        let rank = self
            .cumulative
            .partition_point(|&sum| sum <= at)
            .min(self.hot.len() - 1);
        (self.hot[rank], true)
    }
}

// The gate the process waits behind.
impl World {
    /// A gate for an arrival process to wait behind, replacing any earlier one; opened by
    /// [`World::open_arrivals_gate`] (`POST /_sim/arrivals`).
    pub fn arrivals_gate(&mut self) -> oneshot::Receiver<()> {
        let (open, opened) = oneshot::channel();
        self.arrivals_gate = Some(open);
        opened
    }

    /// Opens the waiting gate; false when no process waits (none planned, or already started).
    pub fn open_arrivals_gate(&mut self) -> bool {
        self.arrivals_gate
            .take()
            .is_some_and(|open| open.send(()).is_ok())
    }

    /// Visits opened by arrival processes so far.
    pub fn arrivals_count(&self) -> u64 {
        self.arrivals
    }
}

impl Simulator {
    /// Runs `plan` (validated) from now: a step at once and then every `plan.every`, until
    /// `plan.duration` has passed. Each arrival goes to `record` as it is made, outside the
    /// world's lock. Returns how many visits it opened.
    pub async fn run_arrivals(&self, plan: &ArrivalPlan, mut record: impl FnMut(&Arrival)) -> u64 {
        let mut picker = Picker::new(plan);
        let until = Instant::now() + plan.duration;
        let mut steps = tokio::time::interval(plan.every);
        // A step late (a busy machine) is a step late, not a burst of catching up.
        steps.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut opened = 0;
        loop {
            steps.tick().await;
            if Instant::now() >= until {
                return opened;
            }
            let picks: Vec<(i64, bool)> = (0..plan.per_step).map(|_| picker.pick()).collect();
            let arrivals = self.with_world(|w| {
                w.arrivals += picks.len() as u64;
                picks
                    .iter()
                    .map(|&(user, hot)| {
                        let (activity_id, visit_at) = w.open_visit(plan.agent_id, user);
                        Arrival {
                            agent: plan.agent_id,
                            user,
                            activity_id,
                            visit_at,
                            hot,
                        }
                    })
                    .collect::<Vec<_>>()
            });
            for arrival in &arrivals {
                record(arrival);
            }
            opened += arrivals.len() as u64;
        }
    }
}
