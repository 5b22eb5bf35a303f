//! The knobs tests and the demo turn: agents and tokens, new, late, open and tied visits,
//! changed and deleted activities, purges, raw items, faults, hostility, limits and the clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::Value;

use crate::generate::{ACTIVITY_NAMES, Batch, STATUSES, TIE_RATE, pick_other};
use crate::world::{Agent, Entry, Fault, Hostile, RequestInfo, TokenBucket, TruthVisit, World};

impl World {
    /// Limits visits requests to `per_second` (bursts of up to `burst`), over all agents, like a
    /// platform's gateway: a request over the limit gets a 429 with a `Retry-After` in whole
    /// seconds. `None` lifts the limit.
    pub fn set_rate_limit(&mut self, limit: Option<(f64, f64)>) {
        self.rate_limit = limit.map(|(rate, burst)| TokenBucket::new(rate, burst.max(1.0)));
    }

    /// Every visits request waits this long before it is answered, as over a real network.
    pub fn set_latency(&mut self, latency: std::time::Duration) {
        self.latency = latency;
    }

    /// Shifts the simulator clock (the `Date` header and timestamps of new visits).
    pub fn set_clock_skew(&mut self, skew: Duration) {
        self.clock_skew = skew;
    }

    /// Adds an agent, or replaces the token of an existing one (keeping its data).
    pub fn add_agent(&mut self, agent_id: i64, token: &str) {
        self.agents
            .entry(agent_id)
            .and_modify(|a| a.token = token.to_owned())
            .or_insert_with(|| Agent {
                token: token.to_owned(),
                forbidden: false,
                activity_ids: Vec::new(),
                users: BTreeMap::new(),
            });
    }

    /// When on, every request for this agent gets a 403 (feature not enabled).
    pub fn set_agent_forbidden(&mut self, agent_id: i64, forbidden: bool) {
        self.agent_mut(agent_id).forbidden = forbidden;
    }

    /// Appends `n` closed visits after the user's last one, at least two days before now
    /// (unless the existing visits are more recent than that), over 5–20 of the agent's
    /// activities, lasting up to 180 minutes, with occasional ties. Creates the user.
    pub fn generate_visits(&mut self, agent_id: i64, user_id: i64, n: usize) {
        let batch = Batch {
            end: self.now().trunc_subsecs(0) - Duration::days(2) - Duration::hours(3),
            tie_rate: TIE_RATE,
            max_minutes: 180,
            activities: 5..=20,
        };
        self.add_batch(agent_id, user_id, n, batch);
    }

    /// Appends `n` closed visits after the user's last one, with `visitAt <= now - 3h` and
    /// `lastOnlineAt <= now - 2h` (unless the existing visits are more recent than that).
    pub fn append_visits(&mut self, agent_id: i64, user_id: i64, n: usize) {
        let batch = Batch {
            end: self.now().trunc_subsecs(0) - Duration::hours(3),
            tie_rate: 0.0,
            max_minutes: 60,
            activities: 2..=6,
        };
        self.add_batch(agent_id, user_id, n, batch);
    }

    /// Appends a visit that is still going on: `visitAt = lastOnlineAt = now` (whole seconds,
    /// strictly after the user's other visits). Returns its activity id and `visitAt`.
    pub fn open_visit(&mut self, agent_id: i64, user_id: i64) -> (String, DateTime<Utc>) {
        let now = self.now().trunc_subsecs(0);
        let visit_at = match self.last_sort_at(agent_id, user_id) {
            Some(last) if last >= now => last + Duration::seconds(1),
            _ => now,
        };
        // Someone watching right now is most likely watching a live activity.
        let live: Vec<String> = self
            .agent(agent_id)
            .activity_ids
            .iter()
            .filter(|id| self.activities[*id].ended_at.is_none())
            .cloned()
            .collect();
        let activity_id = match live.choose(&mut self.rng) {
            Some(id) => id.clone(),
            None => self.pick_free_activity(agent_id, user_id, visit_at),
        };
        let visit = TruthVisit::new(user_id, activity_id.clone(), visit_at, visit_at, true);
        self.insert_entry(agent_id, user_id, Entry::Visit(visit));
        (activity_id, visit_at)
    }

    /// Moves `lastOnlineAt` of every open visit forward by `by`.
    pub fn extend_open_visits(&mut self, by: Duration) {
        for visit in self.visits_mut().filter(|v| v.open) {
            visit.last_online_at += by;
            visit.recompute_duration();
        }
    }

    /// Closes every open visit; their values stop changing.
    pub fn close_open_visits(&mut self) {
        for visit in self.visits_mut() {
            visit.open = false;
        }
    }

    /// Adds a closed visit at exactly `visit_at`, of an activity no other visit of this user has
    /// at that instant. Returns that activity's id.
    pub fn add_tie(&mut self, agent_id: i64, user_id: i64, visit_at: DateTime<Utc>) -> String {
        self.insert_visit_at(agent_id, user_id, visit_at, None)
    }

    /// Late data: a closed visit at any time (truncated to whole seconds), sorted into place.
    /// Without `activity_id` it picks an activity free at that instant; an unknown id becomes a
    /// new activity of this agent.
    ///
    /// # Panics
    /// If the user already has a visit of that activity at that instant.
    pub fn insert_visit_at(
        &mut self,
        agent_id: i64,
        user_id: i64,
        visit_at: DateTime<Utc>,
        activity_id: Option<&str>,
    ) -> String {
        let visit_at = visit_at.trunc_subsecs(0);
        let activity_id = match activity_id {
            None => self.pick_free_activity(agent_id, user_id, visit_at),
            Some(id) => {
                if !self.activities.contains_key(id) {
                    self.create_activity(agent_id, visit_at, Some(id));
                }
                assert!(
                    !self
                        .activities_at(agent_id, user_id, visit_at)
                        .contains(&id),
                    "user {user_id} already has a visit of activity {id} at {visit_at}"
                );
                id.to_owned()
            }
        };
        let visit = self.closed_visit(user_id, activity_id.clone(), visit_at, 60);
        self.insert_entry(agent_id, user_id, Entry::Visit(visit));
        activity_id
    }

    /// When on, visits sharing a `visitAt` come in a fresh random order on each request.
    pub fn set_shuffle_ties(&mut self, on: bool) {
        self.shuffle_ties = on;
    }

    /// Gives the activity a new name, status, `isPushing` and `endedAt` (an ended activity goes
    /// live again and vice versa), and bumps its `updatedAt` to now.
    ///
    /// # Panics
    /// If the activity never existed.
    pub fn change_activity(&mut self, activity_id: &str) {
        let now = self.now().trunc_subsecs(3);
        let old = self
            .activity(activity_id)
            .unwrap_or_else(|| panic!("unknown activity {activity_id}"));
        let name = pick_other(&mut self.rng, ACTIVITY_NAMES, &old.name);
        let status = pick_other(&mut self.rng, &STATUSES, &old.status);
        let ended_at = match old.ended_at {
            Some(_) => None,
            None => Some(now - Duration::milliseconds(self.rng.random_range(1_000..600_000))),
        };
        let activity = self.activities.get_mut(activity_id).expect("checked above");
        activity.name = name.to_owned();
        activity.status = status.to_owned();
        activity.is_pushing = ended_at.is_none() && status == "enabled";
        activity.ended_at = ended_at;
        activity.updated_at = now;
    }

    /// Deletes the activity upstream: its visits keep their `activityId` but carry
    /// `"activity": null`, and new visits no longer pick it.
    pub fn delete_activity(&mut self, activity_id: &str) {
        if let Some(activity) = self.activities.get_mut(activity_id) {
            activity.deleted = true;
            if let Some(agent) = self.agents.get_mut(&activity.agent_id) {
                agent.activity_ids.retain(|id| id != activity_id);
            }
        }
    }

    /// Retention purge: drops the user's `k` oldest entries. Purged visits stay available
    /// through [`World::all_visits_ever`]; purged raw items are simply gone.
    pub fn purge_oldest(&mut self, agent_id: i64, user_id: i64, k: usize) {
        let user = self.user_mut(agent_id, user_id);
        let k = k.min(user.entries.len());
        let purged: Vec<Entry> = user.entries.drain(..k).collect();
        user.purged
            .extend(purged.into_iter().filter_map(|e| match e {
                Entry::Visit(v) => Some(v),
                Entry::Raw { .. } | Entry::RawBytes { .. } => None,
            }));
    }

    /// A hostile or bogus item, served verbatim and sorted as if its `visitAt` were `sort_at`.
    /// It is not part of the truth returned by [`World::visits`].
    pub fn insert_raw_item(
        &mut self,
        agent_id: i64,
        user_id: i64,
        sort_at: DateTime<Utc>,
        item: Value,
    ) {
        self.insert_entry(agent_id, user_id, Entry::Raw { sort_at, item });
    }

    /// Replaces the raw item placed at `sort_at` by [`World::insert_raw_item`] (a rejected open
    /// item whose `lastOnlineAt` moves, say). Panics when there is none there.
    pub fn replace_raw_item(
        &mut self,
        agent_id: i64,
        user_id: i64,
        sort_at: DateTime<Utc>,
        item: Value,
    ) {
        let user = self.user_mut(agent_id, user_id);
        let raw = user.entries.iter_mut().find_map(|e| match e {
            Entry::Raw { sort_at: at, item } if *at == sort_at => Some(item),
            _ => None,
        });
        *raw.unwrap_or_else(|| panic!("no raw item of {agent_id}/{user_id} at {sort_at}")) = item;
    }

    /// Answers every visits request of one pair with `hostile` from now on (`None`: as usual
    /// again). Counted like any request.
    pub fn set_hostile(&mut self, agent_id: i64, user_id: i64, hostile: Option<Hostile>) {
        match hostile {
            Some(h) => self.hostile.insert((agent_id, user_id), h),
            None => self.hostile.remove(&(agent_id, user_id)),
        };
    }

    /// Like [`World::insert_raw_item`], for an item a `Value` cannot hold: `bytes` are spliced
    /// into the body's `items` as they are (an activity filter never lists it).
    pub fn insert_raw_bytes(
        &mut self,
        agent_id: i64,
        user_id: i64,
        sort_at: DateTime<Utc>,
        bytes: Vec<u8>,
    ) {
        self.insert_entry(agent_id, user_id, Entry::RawBytes { sort_at, bytes });
    }

    /// Renames an activity in place (its `updatedAt` moves): any string, NUL included.
    pub fn rename_activity(&mut self, activity_id: &str, name: &str) {
        let now = self.now().trunc_subsecs(3);
        let activity = self
            .activities
            .get_mut(activity_id)
            .unwrap_or_else(|| panic!("unknown activity {activity_id}"));
        activity.name = name.to_owned();
        activity.updated_at = now;
    }

    /// Queues a fault for the next visits request that has none yet (FIFO, one per request).
    pub fn push_fault(&mut self, fault: Fault) {
        self.faults.push_back(fault);
    }

    /// Runs `hook` (under the world lock) before each visits request is answered.
    pub fn set_before_request(
        &mut self,
        hook: impl FnMut(&mut World, &RequestInfo) + Send + 'static,
    ) {
        self.before_request = Some(Box::new(hook));
    }

    /// Removes the before-request hook.
    pub fn clear_before_request(&mut self) {
        self.before_request = None;
    }

    /// Zeroes the request counters (so `request_no` starts again at 1).
    pub fn reset_request_counts(&mut self) {
        self.request_count = 0;
        self.rate_limited = 0;
        self.requests_span = None;
        self.requests_by_pair.clear();
    }
}
