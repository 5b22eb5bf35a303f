//! Making visits and activities up: spread over time, with ties, from a seeded generator.

use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::world::{Entry, TruthActivity, TruthVisit, World};

/// Share of generated visits that land on the same `visitAt` as the previous one.
pub(crate) const TIE_RATE: f64 = 0.03;
pub(crate) const PUSH_DOMAIN: &str = "push.shangzhibo.tv";
pub(crate) const PULL_DOMAIN: &str = "play.shangzhibo.tv";
pub(crate) const STATUSES: [&str; 3] = ["enabled", "disabled", "forbidden"];
pub(crate) const ACTIVITY_NAMES: &[&str] = &[
    "这是一场直播",
    "产品发布会",
    "年度盛典",
    "新品首发直播",
    "技术分享沙龙",
    "周末读书会",
    "春季招聘宣讲会",
    "健康讲座",
    "线上音乐会",
    "财经早班车",
    "客户答谢会",
    "行业峰会",
    "教师培训直播",
    "公开课：数据分析入门",
];

impl World {
    /// Appends `n` closed visits after the user's last entry, shaped by `batch`.
    pub(crate) fn add_batch(&mut self, agent_id: i64, user_id: i64, n: usize, batch: Batch) {
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
    pub(crate) fn spread_times(
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
    pub(crate) fn activity_subset(
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
    pub(crate) fn pick_free_activity(
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
    pub(crate) fn closed_visit(
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
    pub(crate) fn create_activity(
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

/// How [`World::add_batch`] places and shapes a run of new visits.
pub(crate) struct Batch {
    /// Latest `visitAt` wanted (yields when the list already reaches past it).
    pub(crate) end: DateTime<Utc>,
    /// Chance that a visit shares the previous one's `visitAt`.
    pub(crate) tie_rate: f64,
    pub(crate) max_minutes: i64,
    /// How many of the agent's activities the run spreads over.
    pub(crate) activities: RangeInclusive<usize>,
}

/// One of `choices` other than `current` (the first choice when there is no other).
pub(crate) fn pick_other<'a>(rng: &mut StdRng, choices: &[&'a str], current: &str) -> &'a str {
    let others: Vec<&'a str> = choices.iter().copied().filter(|c| *c != current).collect();
    others.choose(rng).copied().unwrap_or(choices[0])
}
