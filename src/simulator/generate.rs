//! Making visits and activities up: spread over time, with ties, from a seeded generator.

use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::world::{
    ACTIVITY_NAMES, Agent, Entry, PULL_DOMAIN, PUSH_DOMAIN, TruthActivity, TruthVisit, UserVisits,
    World,
};
// Lookups and generation.
impl World {
    pub(super) fn agent(&self, agent_id: i64) -> &Agent {
        self.agents
            .get(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    pub(super) fn agent_mut(&mut self, agent_id: i64) -> &mut Agent {
        self.agents
            .get_mut(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    pub(super) fn user(&self, agent_id: i64, user_id: i64) -> Option<&UserVisits> {
        self.agents.get(&agent_id)?.users.get(&user_id)
    }

    pub(super) fn user_mut(&mut self, agent_id: i64, user_id: i64) -> &mut UserVisits {
        self.agent_mut(agent_id).users.entry(user_id).or_default()
    }

    pub(super) fn visits_mut(&mut self) -> impl Iterator<Item = &mut TruthVisit> {
        self.agents
            .values_mut()
            .flat_map(|a| a.users.values_mut())
            .flat_map(|u| u.entries.iter_mut())
            .filter_map(|e| match e {
                Entry::Visit(v) => Some(v),
                Entry::Raw { .. } | Entry::RawBytes { .. } => None,
            })
    }

    /// The newest `visitAt` the user ever had, purged visits included: the platform writes
    /// visits as they happen, so new ones never land before a visit it already purged.
    pub(super) fn last_sort_at(&self, agent_id: i64, user_id: i64) -> Option<DateTime<Utc>> {
        let user = self.user(agent_id, user_id)?;
        let current = user.entries.last().map(Entry::sort_at);
        let purged = user.purged.iter().map(|v| v.visit_at).max();
        current.max(purged)
    }

    /// Activities the user already has a visit of at exactly `visit_at`.
    pub(super) fn activities_at(
        &self,
        agent_id: i64,
        user_id: i64,
        visit_at: DateTime<Utc>,
    ) -> Vec<&str> {
        self.user(agent_id, user_id)
            .map(|u| {
                u.entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Visit(v) if v.visit_at == visit_at => Some(v.activity_id.as_str()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sorted insert after any entries with the same key, so ties keep insertion order.
    pub(super) fn insert_entry(&mut self, agent_id: i64, user_id: i64, entry: Entry) {
        let entries = &mut self.user_mut(agent_id, user_id).entries;
        let key = entry.sort_at();
        let pos = entries.partition_point(|e| e.sort_at() <= key);
        entries.insert(pos, entry);
    }

    /// Appends `n` closed visits after the user's last entry, shaped by `batch`.
    pub(super) fn add_batch(&mut self, agent_id: i64, user_id: i64, n: usize, batch: Batch) {
        self.user_mut(agent_id, user_id);
        if n == 0 {
            return;
        }
        let last = self.last_sort_at(agent_id, user_id);
        let times = self.spread_times(last, batch.end, n, batch.tie_rate);
        let pool = self.activity_subset(agent_id, times[0], batch.activities);
        // Activities already used at the current instant: a tie must be another activity,
        // or the two visits would share a primary key.
        let mut used_now: Vec<String> = Vec::new();
        for (i, &visit_at) in times.iter().enumerate() {
            if i > 0 && times[i - 1] != visit_at {
                used_now.clear();
            }
            let free: Vec<&String> = pool.iter().filter(|id| !used_now.contains(id)).collect();
            let activity_id = match free.choose(&mut self.rng) {
                Some(id) => (*id).clone(),
                None => self.create_activity(agent_id, visit_at, None),
            };
            used_now.push(activity_id.clone());
            let visit = self.closed_visit(user_id, activity_id, visit_at, batch.max_minutes);
            self.insert_entry(agent_id, user_id, Entry::Visit(visit));
        }
    }

    /// `n` ascending whole-second instants after `last` and (room permitting) up to `end`,
    /// about six hours apart on average, and never spread over more than two years (a long
    /// history is denser instead of reaching back before the platform existed).
    pub(super) fn spread_times(
        &mut self,
        last: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        n: usize,
        tie_rate: f64,
    ) -> Vec<DateTime<Utc>> {
        let n_i64 = i64::try_from(n).unwrap_or(i64::MAX / 2);
        let earliest = end - Duration::hours((6 * n_i64).min(2 * 365 * 24));
        let start = match last {
            Some(last) => (last.trunc_subsecs(0) + Duration::seconds(1)).max(earliest),
            None => earliest,
        };
        // Appending wins over the "how recent" bound when the list already reaches past it.
        let end = end.max(start + Duration::minutes(n_i64));
        let span = (end - start).num_seconds();
        let mut times: Vec<DateTime<Utc>> = (0..n)
            .map(|_| start + Duration::seconds(self.rng.random_range(0..=span)))
            .collect();
        times.sort();
        for i in 1..n {
            if self.rng.random_bool(tie_rate) {
                times[i] = times[i - 1];
            } else if times[i] <= times[i - 1] {
                times[i] = times[i - 1] + Duration::seconds(1);
            }
        }
        times
    }

    /// `k` (drawn from `size`) distinct activities of the agent, creating some if it has fewer.
    pub(super) fn activity_subset(
        &mut self,
        agent_id: i64,
        around: DateTime<Utc>,
        size: RangeInclusive<usize>,
    ) -> Vec<String> {
        let k = self.rng.random_range(size);
        while self.agent_mut(agent_id).activity_ids.len() < k {
            self.create_activity(agent_id, around, None);
        }
        let ids = &self.agents[&agent_id].activity_ids;
        rand::seq::index::sample(&mut self.rng, ids.len(), k)
            .into_iter()
            .map(|i| ids[i].clone())
            .collect()
    }

    /// An activity of the agent the user has no visit of at `visit_at` (created if needed).
    pub(super) fn pick_free_activity(
        &mut self,
        agent_id: i64,
        user_id: i64,
        visit_at: DateTime<Utc>,
    ) -> String {
        let used = self.activities_at(agent_id, user_id, visit_at);
        let free: Vec<String> = self
            .agent(agent_id)
            .activity_ids
            .iter()
            .filter(|id| !used.contains(&id.as_str()))
            .cloned()
            .collect();
        match free.choose(&mut self.rng) {
            Some(id) => id.clone(),
            None => self.create_activity(agent_id, visit_at, None),
        }
    }

    /// A settled visit lasting up to `max_minutes`, never ending after now.
    pub(super) fn closed_visit(
        &mut self,
        user_id: i64,
        activity_id: String,
        visit_at: DateTime<Utc>,
        max_minutes: i64,
    ) -> TruthVisit {
        // Many real visits are a glance of a few seconds (duration 0).
        let seconds = if self.rng.random_bool(0.2) {
            self.rng.random_range(0..60)
        } else {
            self.rng.random_range(60..=max_minutes * 60)
        };
        let last_online_at =
            (visit_at + Duration::seconds(seconds)).min(self.now().trunc_subsecs(0).max(visit_at));
        TruthVisit::new(user_id, activity_id, visit_at, last_online_at, false)
    }

    /// Creates an activity of the agent, dated a little before `around`. Returns its id.
    pub(super) fn create_activity(
        &mut self,
        agent_id: i64,
        around: DateTime<Utc>,
        id: Option<&str>,
    ) -> String {
        let id = match id {
            Some(id) => id.to_owned(),
            None => loop {
                self.next_activity_id += self.rng.random_range(1..=997);
                let candidate = self.next_activity_id.to_string();
                if !self.activities.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let now = self.now().trunc_subsecs(3);
        let rng = &mut self.rng;
        let created_at = around.min(now).trunc_subsecs(0)
            - Duration::days(rng.random_range(1..=30))
            - Duration::seconds(rng.random_range(0..86_400));
        let started_at = created_at + Duration::hours(rng.random_range(1..=20));
        let live = rng.random_bool(0.2);
        let ended_at = (!live).then(|| {
            let length = Duration::milliseconds(rng.random_range(3_600_000..=30 * 86_400_000));
            (started_at + length).min(now)
        });
        let updated_at = (ended_at.unwrap_or(started_at)
            + Duration::milliseconds(rng.random_range(1_000..120_000)))
        .min(now);
        let status = if live || rng.random_bool(0.5) {
            "enabled"
        } else if rng.random_bool(0.8) {
            "disabled"
        } else {
            "forbidden"
        };
        let activity = TruthActivity {
            id: id.clone(),
            agent_id,
            name: ACTIVITY_NAMES
                .choose(rng)
                .expect("names are not empty")
                .to_string(),
            status: status.to_owned(),
            is_pushing: live && rng.random_bool(0.7),
            is_archived: !live && rng.random_bool(0.1),
            subagent_id: rng
                .random_bool(0.15)
                .then(|| rng.random_range(100_000..1_000_000)),
            category_id: rng.random_range(1..=8),
            group_id: if rng.random_bool(0.7) {
                -1
            } else {
                rng.random_range(1..=300)
            },
            started_at,
            ended_at,
            created_at,
            updated_at,
            push_domain: PUSH_DOMAIN.to_owned(),
            pull_domain: PULL_DOMAIN.to_owned(),
            deleted: false,
            // The doc's sample table spells it `updateAt`; some real payloads do too.
            spells_update_at: self.activities_created % 3 == 2,
        };
        self.activities_created += 1;
        self.activities.insert(id.clone(), activity);
        self.agent_mut(agent_id).activity_ids.push(id.clone());
        id
    }
}

pub(super) struct Batch {
    /// Latest `visitAt` wanted (yields when the list already reaches past it).
    pub(super) end: DateTime<Utc>,
    /// Chance that a visit shares the previous one's `visitAt`.
    pub(super) tie_rate: f64,
    pub(super) max_minutes: i64,
    /// How many of the agent's activities the run spreads over.
    pub(super) activities: RangeInclusive<usize>,
}

/// Shuffles each run of entries sharing a `visitAt`, leaving the order between runs alone.
pub(super) fn pick_other<'a>(rng: &mut StdRng, choices: &[&'a str], current: &str) -> &'a str {
    let others: Vec<&'a str> = choices.iter().copied().filter(|c| *c != current).collect();
    others.choose(rng).copied().unwrap_or(choices[0])
}
