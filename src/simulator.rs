//! A built-in simulator of the upstream endpoint
//! `GET /api/v3/agent/{id}/user/{userId}/stats/visits`, used by the demo and the tests.
//!
//! A [`Simulator`] is a cheap handle on a shared [`World`]: agents with tokens, their activities,
//! and each user's visits kept in ascending `visitAt` order. The world is deterministic from its
//! seed and can be changed at any time (also from a [`Simulator::set_before_request`] hook, i.e.
//! in the middle of a sync walk) to reproduce what the real platform does: new and late visits,
//! ties on `visitAt`, open visits that grow, retention purges, renamed or deleted activities,
//! hostile items, and transport faults ([`Fault`]). The "truth" accessors ([`Simulator::visits`],
//! [`Simulator::all_visits_ever`], [`Simulator::activity`]) let tests compare the database with
//! what the upstream held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const VISITS_ROUTE: &str = "/api/v3/agent/{id}/user/{user_id}/stats/visits";
const DEFAULT_PAGE_SIZE: u64 = 10;
const MAX_PAGE_SIZE: u64 = 1000;
/// Share of generated visits that land on the same `visitAt` as the previous one.
const TIE_RATE: f64 = 0.03;
const FIRST_ACTIVITY_ID: u64 = 10_096_288;
const DEMO_SEED: u64 = 20_200_624;
const PUSH_DOMAIN: &str = "push.shangzhibo.tv";
const PULL_DOMAIN: &str = "play.shangzhibo.tv";
const STATUSES: [&str; 3] = ["enabled", "disabled", "forbidden"];
const ACTIVITY_NAMES: &[&str] = &[
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

/// One visit as the upstream holds it: the ground truth tests compare the database with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthVisit {
    pub user_id: i64,
    pub activity_id: String,
    /// Whole seconds.
    pub visit_at: DateTime<Utc>,
    pub last_online_at: DateTime<Utc>,
    /// Whole minutes of `last_online_at - visit_at`, rounded down.
    pub duration_minutes: i32,
    /// Still growing: [`Simulator::extend_open_visits`] moves its `last_online_at`.
    pub open: bool,
}

impl TruthVisit {
    fn new(
        user_id: i64,
        activity_id: String,
        visit_at: DateTime<Utc>,
        last_online_at: DateTime<Utc>,
        open: bool,
    ) -> Self {
        let mut visit = Self {
            user_id,
            activity_id,
            visit_at,
            last_online_at,
            duration_minutes: 0,
            open,
        };
        visit.recompute_duration();
        visit
    }

    fn recompute_duration(&mut self) {
        let minutes = (self.last_online_at - self.visit_at)
            .num_seconds()
            .div_euclid(60);
        self.duration_minutes = minutes.clamp(0, i64::from(i32::MAX)) as i32;
    }
}

/// One activity as the upstream holds it (its current version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthActivity {
    pub id: String,
    pub agent_id: i64,
    pub name: String,
    pub status: String,
    pub is_pushing: bool,
    pub is_archived: bool,
    pub subagent_id: Option<i64>,
    pub category_id: i64,
    pub group_id: i64,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub push_domain: String,
    pub pull_domain: String,
    /// Deleted upstream: its visits are served with `"activity": null`.
    pub deleted: bool,
    /// The wire JSON names `updated_at` `updateAt` (the doc's spelling) instead of `updatedAt`.
    pub spells_update_at: bool,
}

/// A misbehaviour of the upstream, consumed by exactly one request to the visits endpoint.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and a JSON error body.
    Status(u16),
    /// 429 with this `Retry-After` value (seconds or an HTTP date).
    TooManyRequests { retry_after: String },
    /// Sleep this long, then answer normally.
    Slow(std::time::Duration),
    /// A normal 200 body cut in half (with a `Content-Length` that matches the cut body).
    Truncated,
    /// 200 with an HTML body (still labelled `application/json`, as a misconfigured proxy would).
    NotJson,
    /// 200 with `items` nested this many arrays deep.
    DeepNesting(usize),
    /// A normal 200 body padded with whitespace to at least this many bytes.
    Huge(usize),
    /// 200 whose `pager.total` contradicts the items.
    BadPager,
}

/// What a visits request asked for, handed to the [`Simulator::set_before_request`] hook.
///
/// Missing or invalid query values are replaced by their defaults here; the request itself
/// still gets its 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub agent_id: i64,
    pub user_id: i64,
    pub page: u64,
    pub page_size: u64,
    pub order_desc: bool,
    pub activity_id: Option<String>,
    /// 1-based count over all visits requests since the last [`Simulator::reset_request_counts`].
    pub request_no: u64,
}

type BeforeRequest = Box<dyn FnMut(&mut World, &RequestInfo) + Send>;

/// A position of a user's list: a real visit, or a hostile item served verbatim.
enum Entry {
    Visit(TruthVisit),
    Raw { sort_at: DateTime<Utc>, item: Value },
}

impl Entry {
    fn sort_at(&self) -> DateTime<Utc> {
        match self {
            Entry::Visit(v) => v.visit_at,
            Entry::Raw { sort_at, .. } => *sort_at,
        }
    }

    fn matches(&self, activity_filter: Option<&str>) -> bool {
        let Some(wanted) = activity_filter else {
            return true;
        };
        match self {
            Entry::Visit(v) => v.activity_id == wanted,
            Entry::Raw { item, .. } => match item.get("activityId") {
                Some(Value::String(s)) => s == wanted,
                Some(Value::Number(n)) => n.to_string() == wanted,
                _ => false,
            },
        }
    }
}

struct Agent {
    token: String,
    forbidden: bool,
    /// Activities new visits may pick from (deleted ones are removed).
    activity_ids: Vec<String>,
    users: BTreeMap<i64, UserVisits>,
}

#[derive(Default)]
struct UserVisits {
    /// Ascending by `visitAt`; ties keep insertion order.
    entries: Vec<Entry>,
    purged: Vec<TruthVisit>,
}

/// The simulated upstream state. Reach it through [`Simulator`], or directly inside a
/// [`Simulator::set_before_request`] hook; the knobs are the same.
pub struct World {
    rng: StdRng,
    clock_skew: Duration,
    agents: BTreeMap<i64, Agent>,
    activities: BTreeMap<String, TruthActivity>,
    activities_created: u64,
    next_activity_id: u64,
    shuffle_ties: bool,
    faults: VecDeque<Fault>,
    before_request: Option<BeforeRequest>,
    request_count: u64,
    requests_by_pair: HashMap<(i64, i64), u64>,
}

impl World {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            clock_skew: Duration::zero(),
            agents: BTreeMap::new(),
            activities: BTreeMap::new(),
            activities_created: 0,
            next_activity_id: FIRST_ACTIVITY_ID,
            shuffle_ties: false,
            faults: VecDeque::new(),
            before_request: None,
            request_count: 0,
            requests_by_pair: HashMap::new(),
        }
    }

    /// The simulator clock: real UTC now plus the configured skew.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_skew
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
                Entry::Raw { .. } => None,
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

    /// Visits requests seen so far, over all pairs, faulted and refused ones included.
    pub fn request_count(&self) -> u64 {
        self.request_count
    }

    /// Visits requests seen so far for one pair.
    pub fn requests_for(&self, agent_id: i64, user_id: i64) -> u64 {
        self.requests_by_pair
            .get(&(agent_id, user_id))
            .copied()
            .unwrap_or(0)
    }

    /// Zeroes the request counters (so `request_no` starts again at 1).
    pub fn reset_request_counts(&mut self) {
        self.request_count = 0;
        self.requests_by_pair.clear();
    }

    /// The user's current visits, ascending (ties in list order); raw items are left out.
    pub fn visits(&self, agent_id: i64, user_id: i64) -> Vec<TruthVisit> {
        self.user(agent_id, user_id)
            .map(|u| {
                u.entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Visit(v) => Some(v.clone()),
                        Entry::Raw { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Current and purged visits of the user, ascending, each with its last values.
    pub fn all_visits_ever(&self, agent_id: i64, user_id: i64) -> Vec<TruthVisit> {
        let mut all = self
            .user(agent_id, user_id)
            .map(|u| u.purged.clone())
            .unwrap_or_default();
        all.extend(self.visits(agent_id, user_id));
        all.sort_by_key(|v| v.visit_at);
        all
    }

    /// The current version of an activity, deleted or not; `None` if it never existed.
    pub fn activity(&self, activity_id: &str) -> Option<TruthActivity> {
        self.activities.get(activity_id).cloned()
    }

    /// Every activity ever created, by numeric id.
    pub fn activities(&self) -> Vec<TruthActivity> {
        let mut all: Vec<TruthActivity> = self.activities.values().cloned().collect();
        all.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
        all
    }
}

// Lookups and generation.
impl World {
    fn agent(&self, agent_id: i64) -> &Agent {
        self.agents
            .get(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    fn agent_mut(&mut self, agent_id: i64) -> &mut Agent {
        self.agents
            .get_mut(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    fn user(&self, agent_id: i64, user_id: i64) -> Option<&UserVisits> {
        self.agents.get(&agent_id)?.users.get(&user_id)
    }

    fn user_mut(&mut self, agent_id: i64, user_id: i64) -> &mut UserVisits {
        self.agent_mut(agent_id).users.entry(user_id).or_default()
    }

    fn visits_mut(&mut self) -> impl Iterator<Item = &mut TruthVisit> {
        self.agents
            .values_mut()
            .flat_map(|a| a.users.values_mut())
            .flat_map(|u| u.entries.iter_mut())
            .filter_map(|e| match e {
                Entry::Visit(v) => Some(v),
                Entry::Raw { .. } => None,
            })
    }

    /// The newest `visitAt` the user ever had, purged visits included: the platform writes
    /// visits as they happen, so new ones never land before a visit it already purged.
    fn last_sort_at(&self, agent_id: i64, user_id: i64) -> Option<DateTime<Utc>> {
        let user = self.user(agent_id, user_id)?;
        let current = user.entries.last().map(Entry::sort_at);
        let purged = user.purged.iter().map(|v| v.visit_at).max();
        current.max(purged)
    }

    /// Activities the user already has a visit of at exactly `visit_at`.
    fn activities_at(&self, agent_id: i64, user_id: i64, visit_at: DateTime<Utc>) -> Vec<&str> {
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
    fn insert_entry(&mut self, agent_id: i64, user_id: i64, entry: Entry) {
        let entries = &mut self.user_mut(agent_id, user_id).entries;
        let key = entry.sort_at();
        let pos = entries.partition_point(|e| e.sort_at() <= key);
        entries.insert(pos, entry);
    }

    /// Appends `n` closed visits after the user's last entry, shaped by `batch`.
    fn add_batch(&mut self, agent_id: i64, user_id: i64, n: usize, batch: Batch) {
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
    fn spread_times(
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
    fn activity_subset(
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
    fn pick_free_activity(
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
    fn closed_visit(
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
    fn create_activity(
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

// Serving a request.
impl World {
    /// Counts a request and takes its fault, if any.
    fn begin_request(&mut self, ids: Option<(i64, i64)>) -> (u64, Option<Fault>) {
        self.request_count += 1;
        if let Some(pair) = ids {
            *self.requests_by_pair.entry(pair).or_default() += 1;
        }
        (self.request_count, self.faults.pop_front())
    }

    fn run_before_request(&mut self, info: &RequestInfo) {
        if let Some(mut hook) = self.before_request.take() {
            hook(self, info);
            // Keep the hook unless it installed a replacement.
            if self.before_request.is_none() {
                self.before_request = Some(hook);
            }
        }
    }

    /// Answers a visits request (after any `Slow` delay), applying its fault.
    fn finish_request(
        &mut self,
        request_no: u64,
        ids: Option<(i64, i64)>,
        params: &RawParams,
        token: Option<&str>,
        fault: Option<Fault>,
    ) -> Response {
        let lenient = params.lenient();
        if let Some((agent_id, user_id)) = ids {
            let info = RequestInfo {
                agent_id,
                user_id,
                page: lenient.page,
                page_size: lenient.page_size,
                order_desc: lenient.order_desc,
                activity_id: lenient.activity_id.clone(),
                request_no,
            };
            self.run_before_request(&info);
        }
        let now = self.now();
        match fault {
            Some(Fault::Status(code)) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return respond(now, status, error_body("simulated upstream failure"));
            }
            Some(Fault::TooManyRequests { retry_after }) => {
                let mut response = respond(
                    now,
                    StatusCode::TOO_MANY_REQUESTS,
                    error_body("too many requests"),
                );
                if let Ok(value) = HeaderValue::from_str(&retry_after) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
            Some(Fault::NotJson) => {
                let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                            <body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>";
                return respond(now, StatusCode::OK, html.as_bytes().to_vec());
            }
            Some(Fault::DeepNesting(depth)) => {
                let body = format!(
                    r#"{{"pager":{{"page":{},"pageSize":{},"total":1}},"items":{}{}}}"#,
                    lenient.page,
                    lenient.page_size,
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                return respond(now, StatusCode::OK, body.into_bytes());
            }
            _ => {}
        }
        let Some((agent_id, user_id)) = ids else {
            return respond(
                now,
                StatusCode::BAD_REQUEST,
                error_body("agent id and user id must be integers"),
            );
        };
        match self.page(agent_id, user_id, params, token) {
            Ok(page) => respond(now, StatusCode::OK, page.render(fault.as_ref())),
            Err((status, message)) => respond(now, status, error_body(&message)),
        }
    }

    /// The normal answer: auth, validation, then one page of the (filtered, ordered) list.
    fn page(
        &mut self,
        agent_id: i64,
        user_id: i64,
        params: &RawParams,
        token: Option<&str>,
    ) -> Result<PageOut, (StatusCode, String)> {
        let agent = self
            .agents
            .get(&agent_id)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("agent {agent_id} not found")))?;
        if token != Some(agent.token.as_str()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("invalid or missing access token for agent {agent_id}"),
            ));
        }
        if agent.forbidden {
            return Err((
                StatusCode::FORBIDDEN,
                format!("用户明细 is not enabled for agent {agent_id}"),
            ));
        }
        let query = params
            .validate()
            .map_err(|m| (StatusCode::BAD_REQUEST, m))?;

        let mut listed: Vec<&Entry> = agent
            .users
            .get(&user_id)
            .map(|u| {
                u.entries
                    .iter()
                    .filter(|e| e.matches(query.activity_id.as_deref()))
                    .collect()
            })
            .unwrap_or_default();
        if query.order_desc {
            // Stable, so ties keep insertion order in both directions.
            listed.sort_by_key(|e| std::cmp::Reverse(e.sort_at()));
        }
        if self.shuffle_ties {
            shuffle_ties(&mut listed, &mut self.rng);
        }
        let total = listed.len() as u64;
        let offset = (query.page - 1).saturating_mul(query.page_size);
        let items: Vec<WireItem<'_>> = listed
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(query.page_size as usize)
            .map(|e| WireItem::new(e, &self.activities))
            .collect();
        Ok(PageOut {
            pager: WirePager {
                page: query.page,
                page_size: query.page_size,
                total,
            },
            item_count: items.len(),
            items_json: serde_json::to_string(&items).expect("wire items serialize"),
        })
    }
}

/// How [`World::add_batch`] places and shapes a run of new visits.
struct Batch {
    /// Latest `visitAt` wanted (yields when the list already reaches past it).
    end: DateTime<Utc>,
    /// Chance that a visit shares the previous one's `visitAt`.
    tie_rate: f64,
    max_minutes: i64,
    /// How many of the agent's activities the run spreads over.
    activities: RangeInclusive<usize>,
}

/// Shuffles each run of entries sharing a `visitAt`, leaving the order between runs alone.
fn shuffle_ties(listed: &mut [&Entry], rng: &mut StdRng) {
    let mut start = 0;
    while start < listed.len() {
        let key = listed[start].sort_at();
        let run = listed[start..]
            .iter()
            .take_while(|e| e.sort_at() == key)
            .count();
        listed[start..start + run].shuffle(rng);
        start += run;
    }
}

fn pick_other<'a>(rng: &mut StdRng, choices: &[&'a str], current: &str) -> &'a str {
    let others: Vec<&'a str> = choices.iter().copied().filter(|c| *c != current).collect();
    others.choose(rng).copied().unwrap_or(choices[0])
}

/// The query string as sent (after form decoding, so `+` and `%20` are both a space).
#[derive(Default)]
struct RawParams {
    page: Option<String>,
    page_size: Option<String>,
    order: Option<String>,
    activity_id: Option<String>,
}

/// A validated query.
struct VisitsQuery {
    page: u64,
    page_size: u64,
    order_desc: bool,
    activity_id: Option<String>,
}

impl RawParams {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "page" => &mut params.page,
                "pageSize" => &mut params.page_size,
                "order" => &mut params.order,
                "activityId" => &mut params.activity_id,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }

    fn validate(&self) -> Result<VisitsQuery, String> {
        Ok(VisitsQuery {
            page: parse_page(self.page.as_deref())?,
            page_size: parse_page_size(self.page_size.as_deref())?,
            order_desc: parse_order(self.order.as_deref())?,
            activity_id: self.activity_filter(),
        })
    }

    /// The query with defaults in place of anything invalid, for [`RequestInfo`].
    fn lenient(&self) -> VisitsQuery {
        VisitsQuery {
            page: parse_page(self.page.as_deref()).unwrap_or(1),
            page_size: parse_page_size(self.page_size.as_deref()).unwrap_or(DEFAULT_PAGE_SIZE),
            order_desc: parse_order(self.order.as_deref()).unwrap_or(true),
            activity_id: self.activity_filter(),
        }
    }

    fn activity_filter(&self) -> Option<String> {
        self.activity_id.clone().filter(|a| !a.is_empty())
    }
}

fn parse_page(value: Option<&str>) -> Result<u64, String> {
    let Some(s) = value else { return Ok(1) };
    s.parse::<u64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("page must be an integer >= 1, got {s:?}"))
}

fn parse_page_size(value: Option<&str>) -> Result<u64, String> {
    let Some(s) = value else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
        .ok_or_else(|| format!("pageSize must be an integer in 1..={MAX_PAGE_SIZE}, got {s:?}"))
}

fn parse_order(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("visitAt desc") => Ok(true),
        Some("visitAt asc") => Ok(false),
        Some(other) => Err(format!(
            "order must be \"visitAt asc\" or \"visitAt desc\", got {other:?}"
        )),
    }
}

/// One page, ready to render (possibly spoiled by a fault).
struct PageOut {
    pager: WirePager,
    item_count: usize,
    items_json: String,
}

impl PageOut {
    fn render(mut self, fault: Option<&Fault>) -> Vec<u8> {
        if let Some(Fault::BadPager) = fault {
            self.pager.total = if self.item_count > 0 {
                0
            } else {
                // Claims there is something on this page, yet sends nothing.
                self.pager
                    .page
                    .saturating_mul(self.pager.page_size)
                    .saturating_add(1)
            };
        }
        let pager = serde_json::to_string(&self.pager).expect("pager serializes");
        let mut body = format!(r#"{{"pager":{pager},"items":{}}}"#, self.items_json).into_bytes();
        match fault {
            Some(Fault::Truncated) => body.truncate(body.len() / 2),
            Some(Fault::Huge(min_len)) if body.len() < *min_len => {
                // Whitespace after the opening brace keeps the JSON valid and its content equal.
                let padding = min_len - body.len();
                let mut padded = Vec::with_capacity(*min_len);
                padded.push(b'{');
                padded.resize(1 + padding, b' ');
                padded.extend_from_slice(&body[1..]);
                body = padded;
            }
            _ => {}
        }
        body
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WirePager {
    page: u64,
    page_size: u64,
    total: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireItem<'a> {
    Visit(Box<WireVisit<'a>>),
    Raw(&'a Value),
}

impl<'a> WireItem<'a> {
    fn new(entry: &'a Entry, activities: &'a BTreeMap<String, TruthActivity>) -> Self {
        match entry {
            Entry::Raw { item, .. } => WireItem::Raw(item),
            Entry::Visit(v) => WireItem::Visit(Box::new(WireVisit {
                activity: activities
                    .get(&v.activity_id)
                    .filter(|a| !a.deleted)
                    .map(WireActivity::from),
                visit_at: iso(v.visit_at),
                last_online_at: iso(v.last_online_at),
                duration: v.duration_minutes,
                user_id: v.user_id,
                activity_id: &v.activity_id,
            })),
        }
    }
}

/// A visit as the doc's sample shows it (field order included).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireVisit<'a> {
    activity: Option<WireActivity<'a>>,
    visit_at: String,
    last_online_at: String,
    duration: i32,
    user_id: i64,
    activity_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireActivity<'a> {
    is_archived: bool,
    is_pushing: bool,
    id: &'a str,
    agent_id: i64,
    subagent_id: Option<i64>,
    category_id: i64,
    name: &'a str,
    status: &'a str,
    started_at: String,
    ended_at: Option<String>,
    push_domain: &'a str,
    pull_domain: &'a str,
    group_id: i64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_at: Option<String>,
}

impl<'a> From<&'a TruthActivity> for WireActivity<'a> {
    fn from(a: &'a TruthActivity) -> Self {
        let updated_at = iso(a.updated_at);
        let (updated_at, update_at) = if a.spells_update_at {
            (None, Some(updated_at))
        } else {
            (Some(updated_at), None)
        };
        Self {
            is_archived: a.is_archived,
            is_pushing: a.is_pushing,
            id: &a.id,
            agent_id: a.agent_id,
            subagent_id: a.subagent_id,
            category_id: a.category_id,
            name: &a.name,
            status: &a.status,
            started_at: iso(a.started_at),
            ended_at: a.ended_at.map(iso),
            push_domain: &a.push_domain,
            pull_domain: &a.pull_domain,
            group_id: a.group_id,
            created_at: iso(a.created_at),
            updated_at,
            update_at,
        }
    }
}

/// `2020-06-24T04:28:02.000Z`
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message })).expect("error body serializes")
}

/// Every response goes through here, so each carries `Date` (simulator clock) and a JSON type.
fn respond(now: DateTime<Utc>, status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let date = httpdate::fmt_http_date(SystemTime::from(now));
    headers.insert(
        header::DATE,
        HeaderValue::from_str(&date).expect("an HTTP date is a valid header value"),
    );
    response
}

/// The token of `Authorization: Bearer <token>`, scheme matched case-insensitively.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn visits_endpoint(
    State(sim): State<Simulator>,
    Path((agent_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ids = agent_id
        .parse::<i64>()
        .ok()
        .zip(user_id.parse::<i64>().ok());
    let params = RawParams::parse(query.as_deref());
    let (request_no, fault) = sim.with_world(|w| w.begin_request(ids));
    if let Some(Fault::Slow(delay)) = &fault {
        // The lock is not held here, so other requests and knobs go on meanwhile.
        tokio::time::sleep(*delay).await;
    }
    let token = bearer_token(&headers);
    sim.with_world(|w| w.finish_request(request_no, ids, &params, token, fault))
}

async fn not_found(State(sim): State<Simulator>) -> Response {
    respond(sim.now(), StatusCode::NOT_FOUND, error_body("not found"))
}

async fn method_not_allowed(State(sim): State<Simulator>) -> Response {
    respond(
        sim.now(),
        StatusCode::METHOD_NOT_ALLOWED,
        error_body("method not allowed"),
    )
}

/// Gives [`Simulator`] each listed [`World`] knob, run under the lock.
macro_rules! delegate_to_world {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        $(
            #[doc = concat!("See [`World::", stringify!($name), "`].")]
            pub fn $name(&self, $($arg: $ty),*) $(-> $ret)? {
                self.lock().$name($($arg),*)
            }
        )*
    };
}

/// A handle on the simulated upstream; clones share one [`World`].
#[derive(Clone)]
pub struct Simulator {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    /// An empty world whose randomness all comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            world: Arc::new(Mutex::new(World::new(seed))),
        }
    }

    /// A ready world: agent 105131 (token `demo-token-105131`) with users 15460259 (1200 visits)
    /// and 15460260 (37 visits, the last one still open), and agent 200001 (token
    /// `demo-token-200001`) with user 30000001 (5 visits).
    pub fn demo() -> Self {
        let sim = Self::new(DEMO_SEED);
        sim.add_agent(105_131, "demo-token-105131");
        sim.generate_visits(105_131, 15_460_259, 1200);
        sim.generate_visits(105_131, 15_460_260, 36);
        sim.open_visit(105_131, 15_460_260);
        sim.add_agent(200_001, "demo-token-200001");
        sim.generate_visits(200_001, 30_000_001, 5);
        sim
    }

    /// Runs `f` on the world under its lock, for anything the knobs below do not cover.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test hook must not take every later request down with it.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    delegate_to_world! {
        fn add_agent(agent_id: i64, token: &str);
        fn set_agent_forbidden(agent_id: i64, forbidden: bool);
        fn generate_visits(agent_id: i64, user_id: i64, n: usize);
        fn append_visits(agent_id: i64, user_id: i64, n: usize);
        fn open_visit(agent_id: i64, user_id: i64) -> (String, DateTime<Utc>);
        fn extend_open_visits(by: Duration);
        fn close_open_visits();
        fn add_tie(agent_id: i64, user_id: i64, visit_at: DateTime<Utc>) -> String;
        fn insert_visit_at(
            agent_id: i64,
            user_id: i64,
            visit_at: DateTime<Utc>,
            activity_id: Option<&str>,
        ) -> String;
        fn set_shuffle_ties(on: bool);
        fn change_activity(activity_id: &str);
        fn delete_activity(activity_id: &str);
        fn purge_oldest(agent_id: i64, user_id: i64, k: usize);
        fn insert_raw_item(agent_id: i64, user_id: i64, sort_at: DateTime<Utc>, item: Value);
        fn set_clock_skew(skew: Duration);
        fn now() -> DateTime<Utc>;
        fn push_fault(fault: Fault);
        fn clear_before_request();
        fn request_count() -> u64;
        fn requests_for(agent_id: i64, user_id: i64) -> u64;
        fn reset_request_counts();
        fn visits(agent_id: i64, user_id: i64) -> Vec<TruthVisit>;
        fn all_visits_ever(agent_id: i64, user_id: i64) -> Vec<TruthVisit>;
        fn activity(activity_id: &str) -> Option<TruthActivity>;
        fn activities() -> Vec<TruthActivity>;
    }

    /// Runs `hook` under the world lock before each visits request is answered (faulted ones
    /// included, after a `Slow` delay), so a test can change the world in the middle of a walk.
    pub fn set_before_request(&self, hook: impl FnMut(&mut World, &RequestInfo) + Send + 'static) {
        self.lock().set_before_request(hook);
    }

    /// The upstream's routes: the visits endpoint, and JSON 404/405 for everything else.
    pub fn router(&self) -> Router {
        Router::new()
            .route(VISITS_ROUTE, get(visits_endpoint))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }

    /// Serves the router on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves on `127.0.0.1` at a free port in a background task, until the returned handle is
    /// dropped or shut down.
    pub async fn spawn(&self) -> std::io::Result<SpawnedSimulator> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.clone().serve(listener, async {
            // A dropped sender ends the wait as well.
            let _ = stopped.await;
        }));
        Ok(SpawnedSimulator {
            base_url: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A simulator serving in the background; dropping it stops the server.
#[derive(Debug)]
pub struct SpawnedSimulator {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SpawnedSimulator {
    /// Stops the server and waits until it has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SpawnedSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const AGENT: i64 = 105_131;
    const USER: i64 = 15_460_259;
    const TOKEN: &str = "token-105131";

    fn sim_with_visits(n: usize) -> Simulator {
        let sim = Simulator::new(7);
        sim.add_agent(AGENT, TOKEN);
        sim.generate_visits(AGENT, USER, n);
        sim
    }

    fn visits_url(query: &str) -> String {
        format!("/api/v3/agent/{AGENT}/user/{USER}/stats/visits?{query}")
    }

    struct Reply {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).expect("a JSON body")
        }

        fn header(&self, name: &str) -> &str {
            self.headers[name].to_str().unwrap()
        }
    }

    async fn get_as(server: &SpawnedSimulator, path: &str, authorization: Option<&str>) -> Reply {
        // reqwest is built without a TLS provider and wants one even for plain http.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = reqwest::Client::new().get(format!("{}{path}", server.base_url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("the simulator answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("a body"),
        }
    }

    async fn get(server: &SpawnedSimulator, path: &str) -> Reply {
        get_as(server, path, Some(&format!("bearer {TOKEN}"))).await
    }

    /// `(visitAt, activityId)` of each item of a page.
    fn keys(page: &Value) -> Vec<(String, String)> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                let visit_at = i["visitAt"].as_str().unwrap().to_owned();
                (visit_at, i["activityId"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn truth_keys(visits: &[TruthVisit]) -> Vec<(String, String)> {
        visits
            .iter()
            .map(|v| (iso(v.visit_at), v.activity_id.clone()))
            .collect()
    }

    #[tokio::test]
    async fn ascending_pages_partition_the_list_by_offset() {
        let sim = sim_with_visits(25);
        let server = sim.spawn().await.unwrap();

        let mut walked = Vec::new();
        for (page, expected_len) in [(1, 10), (2, 10), (3, 5), (4, 0)] {
            let reply = get(
                &server,
                &visits_url(&format!("page={page}&order=visitAt%20asc")),
            )
            .await;
            assert_eq!(reply.status, 200);
            let body = reply.json();
            assert_eq!(
                body["pager"],
                serde_json::json!({"page": page, "pageSize": 10, "total": 25})
            );
            assert_eq!(body["items"].as_array().unwrap().len(), expected_len);
            walked.extend(keys(&body));
        }

        assert_eq!(walked, truth_keys(&sim.visits(AGENT, USER)));
        assert_eq!(sim.requests_for(AGENT, USER), 4);
    }

    #[tokio::test]
    async fn descending_is_the_default_order_and_reverses_the_list() {
        let sim = sim_with_visits(30);
        sim.add_tie(AGENT, USER, sim.visits(AGENT, USER)[29].visit_at);
        let server = sim.spawn().await.unwrap();

        let default = get(&server, &visits_url("pageSize=1000")).await.json();
        let with_plus = get(&server, &visits_url("pageSize=1000&order=visitAt+desc")).await;
        let with_space = get(&server, &visits_url("pageSize=1000&order=visitAt%20desc")).await;

        let mut expected = sim.visits(AGENT, USER);
        expected.sort_by_key(|v| std::cmp::Reverse(v.visit_at));
        assert_eq!(keys(&default), truth_keys(&expected));
        assert_eq!(keys(&with_plus.json()), keys(&default));
        assert_eq!(keys(&with_space.json()), keys(&default));
    }

    #[tokio::test]
    async fn invalid_query_values_are_rejected_with_a_json_400() {
        let sim = sim_with_visits(3);
        let server = sim.spawn().await.unwrap();

        for query in [
            "pageSize=1001",
            "pageSize=0",
            "pageSize=ten",
            "page=0",
            "page=-1",
            "order=visitAt",
            "order=visitAt%20ASC",
        ] {
            let reply = get(&server, &visits_url(query)).await;
            assert_eq!(reply.status, 400, "{query}");
            assert!(reply.json()["message"].is_string(), "{query}");
            assert_eq!(reply.header("content-type"), "application/json");
            assert!(httpdate::parse_http_date(reply.header("date")).is_ok());
        }
        let largest = get(&server, &visits_url("pageSize=1000")).await;
        assert_eq!(largest.status, 200);
    }

    #[tokio::test]
    async fn the_token_is_checked_per_agent() {
        let sim = sim_with_visits(3);
        sim.add_agent(200_001, "token-200001");
        let server = sim.spawn().await.unwrap();
        let url = visits_url("");

        assert_eq!(get_as(&server, &url, None).await.status, 401);
        assert_eq!(get_as(&server, &url, Some("bearer nope")).await.status, 401);
        let other_agents = get_as(&server, &url, Some("Bearer token-200001")).await;
        assert_eq!(other_agents.status, 401);
        assert!(other_agents.json()["message"].is_string());
        let upper = get_as(&server, &url, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(upper.status, 200);

        let unknown_agent = "/api/v3/agent/1/user/2/stats/visits";
        assert_eq!(get(&server, unknown_agent).await.status, 404);
        sim.set_agent_forbidden(AGENT, true);
        assert_eq!(get(&server, &url).await.status, 403);
    }

    #[tokio::test]
    async fn the_activity_filter_keeps_only_that_activity() {
        let sim = sim_with_visits(60);
        let wanted = sim.visits(AGENT, USER)[0].activity_id.clone();
        let server = sim.spawn().await.unwrap();

        let reply = get(
            &server,
            &visits_url(&format!("activityId={wanted}&pageSize=1000")),
        )
        .await;

        let body = reply.json();
        let expected = sim
            .visits(AGENT, USER)
            .into_iter()
            .filter(|v| v.activity_id == wanted)
            .count();
        assert_eq!(body["pager"]["total"], expected as u64);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), expected);
        assert!(items.iter().all(|i| i["activityId"] == wanted.as_str()));
    }

    #[tokio::test]
    async fn items_have_the_sample_shape_and_some_activities_say_update_at() {
        let sim = sim_with_visits(200);
        let server = sim.spawn().await.unwrap();

        let body = get(&server, &visits_url("pageSize=1000")).await.json();

        let mut spellings = HashSet::new();
        for item in body["items"].as_array().unwrap() {
            let item_keys: HashSet<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            let expected_keys = [
                "activity",
                "visitAt",
                "lastOnlineAt",
                "duration",
                "userId",
                "activityId",
            ];
            assert_eq!(item_keys, expected_keys.into_iter().collect());
            assert!(item["visitAt"].as_str().unwrap().ends_with(".000Z"));

            let activity = item["activity"].as_object().unwrap();
            let truth = sim.activity(activity["id"].as_str().unwrap()).unwrap();
            let spelling = if truth.spells_update_at {
                "updateAt"
            } else {
                "updatedAt"
            };
            let other = if truth.spells_update_at {
                "updatedAt"
            } else {
                "updateAt"
            };
            assert!(activity.contains_key(spelling) && !activity.contains_key(other));
            assert_eq!(activity.len(), 15);
            spellings.insert(spelling);
        }
        assert_eq!(spellings.len(), 2, "both spellings occur");
    }

    #[tokio::test]
    async fn a_fault_is_consumed_by_exactly_one_request() {
        let sim = sim_with_visits(25);
        sim.push_fault(Fault::Status(503));
        sim.push_fault(Fault::Truncated);
        let server = sim.spawn().await.unwrap();
        let url = visits_url("pageSize=10");

        let failed = get(&server, &url).await;
        let truncated = get(&server, &url).await;
        let normal = get(&server, &url).await;

        assert_eq!(failed.status, 503);
        assert!(failed.json()["message"].is_string());
        assert_eq!(truncated.status, 200);
        assert!(serde_json::from_str::<Value>(&truncated.body).is_err());
        assert_eq!(
            truncated.header("content-length"),
            truncated.body.len().to_string()
        );
        assert_eq!(normal.status, 200);
        assert_eq!(normal.json()["items"].as_array().unwrap().len(), 10);
        assert_eq!(sim.request_count(), 3);
    }

    #[tokio::test]
    async fn body_faults_spoil_the_answer_as_described() {
        let sim = sim_with_visits(25);
        for fault in [
            Fault::TooManyRequests {
                retry_after: "7".into(),
            },
            Fault::NotJson,
            Fault::DeepNesting(300),
            Fault::Huge(1 << 20),
            Fault::BadPager,
            Fault::Slow(std::time::Duration::from_millis(50)),
        ] {
            sim.push_fault(fault);
        }
        let server = sim.spawn().await.unwrap();
        let url = visits_url("");

        let limited = get(&server, &url).await;
        assert_eq!((limited.status, limited.header("retry-after")), (429, "7"));
        let html = get(&server, &url).await;
        assert!(html.body.starts_with("<!DOCTYPE html>"));
        let deep = get(&server, &url).await;
        assert!(deep.body.contains(&"[".repeat(300)));
        let huge = get(&server, &url).await;
        assert!(huge.body.len() >= 1 << 20);
        assert_eq!(huge.json()["items"].as_array().unwrap().len(), 10);
        let bad_pager = get(&server, &url).await.json();
        assert_eq!(bad_pager["pager"]["total"], 0);
        assert_eq!(bad_pager["items"].as_array().unwrap().len(), 10);
        let started = std::time::Instant::now();
        assert_eq!(get(&server, &url).await.status, 200);
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    }

    #[test]
    fn generated_visits_are_settled_unique_and_sometimes_tied() {
        let sim = sim_with_visits(2000);
        let visits = sim.visits(AGENT, USER);
        let settled_before = sim.now() - Duration::days(2);

        assert_eq!(visits.len(), 2000);
        let pks: HashSet<_> = visits
            .iter()
            .map(|v| (&v.activity_id, v.visit_at))
            .collect();
        assert_eq!(pks.len(), visits.len(), "no primary key repeats");
        let ties = visits
            .windows(2)
            .filter(|w| w[0].visit_at == w[1].visit_at)
            .count();
        assert!(ties > 10, "ties happen now and then ({ties})");
        assert!(visits.windows(2).all(|w| w[0].visit_at <= w[1].visit_at));
        for v in &visits {
            assert!(!v.open && v.last_online_at <= settled_before);
            assert_eq!(v.visit_at.timestamp_subsec_nanos(), 0);
            let minutes = (v.last_online_at - v.visit_at).num_seconds() / 60;
            assert_eq!(i64::from(v.duration_minutes), minutes);
            assert!((0..=180).contains(&v.duration_minutes));
            assert!(v.activity_id.parse::<u64>().is_ok());
        }
        let used: HashSet<_> = visits.iter().map(|v| &v.activity_id).collect();
        assert!((5..=20).contains(&used.len()), "{} activities", used.len());
    }

    #[test]
    fn appended_and_open_visits_come_after_the_existing_ones() {
        let sim = sim_with_visits(10);
        let last_before = sim.visits(AGENT, USER)[9].visit_at;

        sim.append_visits(AGENT, USER, 3);
        let (activity_id, open_at) = sim.open_visit(AGENT, USER);
        sim.extend_open_visits(Duration::minutes(10));

        let visits = sim.visits(AGENT, USER);
        let now = sim.now();
        for v in &visits[10..13] {
            assert!(v.visit_at > last_before && v.visit_at <= now - Duration::hours(3));
            assert!(v.last_online_at <= now - Duration::hours(2) && !v.open);
        }
        let open = &visits[13];
        assert_eq!((&open.activity_id, open.visit_at), (&activity_id, open_at));
        assert!(open.open && open.visit_at > visits[12].visit_at);
        assert_eq!(open.duration_minutes, 10);

        sim.close_open_visits();
        sim.extend_open_visits(Duration::minutes(10));
        assert_eq!(sim.visits(AGENT, USER)[13].duration_minutes, 10);
        assert!(!sim.visits(AGENT, USER)[13].open);
    }

    #[tokio::test]
    async fn ties_keep_insertion_order_unless_shuffled() {
        let sim = sim_with_visits(5);
        let at = sim.visits(AGENT, USER)[2].visit_at;
        let tied: Vec<String> = (0..4).map(|_| sim.add_tie(AGENT, USER, at)).collect();
        let server = sim.spawn().await.unwrap();
        let tie_order = |page: &Value| -> Vec<String> {
            keys(page)
                .into_iter()
                .filter(|(visit_at, _)| *visit_at == iso(at))
                .map(|(_, activity)| activity)
                .collect()
        };

        let asc = get(&server, &visits_url("order=visitAt%20asc"))
            .await
            .json();
        let desc = get(&server, &visits_url("order=visitAt%20desc"))
            .await
            .json();
        assert_eq!(tie_order(&asc)[1..], tied[..]);
        assert_eq!(tie_order(&asc), tie_order(&desc));

        sim.set_shuffle_ties(true);
        let mut orders = HashSet::new();
        for _ in 0..20 {
            orders.insert(tie_order(&get(&server, &visits_url("")).await.json()));
        }
        assert!(orders.len() > 1);
    }

    #[tokio::test]
    async fn deleted_activities_are_null_and_purged_visits_stay_in_the_truth() {
        let sim = sim_with_visits(20);
        let deleted = sim.visits(AGENT, USER)[19].activity_id.clone();
        sim.delete_activity(&deleted);
        sim.purge_oldest(AGENT, USER, 5);
        let server = sim.spawn().await.unwrap();

        let body = get(&server, &visits_url("pageSize=100")).await.json();

        assert_eq!(body["pager"]["total"], 15);
        for item in body["items"].as_array().unwrap() {
            assert_eq!(
                item["activity"].is_null(),
                item["activityId"] == deleted.as_str()
            );
        }
        assert!(sim.activity(&deleted).unwrap().deleted);
        assert_eq!(sim.all_visits_ever(AGENT, USER).len(), 20);
    }

    #[tokio::test]
    async fn the_hook_sees_each_request_and_can_change_the_world_mid_walk() {
        let sim = sim_with_visits(25);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        sim.set_before_request(move |world, info| {
            log.lock().unwrap().push(info.clone());
            if info.request_no == 2 {
                world.purge_oldest(info.agent_id, info.user_id, 5);
            }
        });
        let server = sim.spawn().await.unwrap();

        let first = get(&server, &visits_url("order=visitAt%20asc"))
            .await
            .json();
        let second = get(
            &server,
            &visits_url("order=visitAt%20asc&page=2&pageSize=7"),
        )
        .await
        .json();

        assert_eq!(first["pager"]["total"], 25);
        assert_eq!(second["pager"]["total"], 20);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[1].page, seen[1].page_size, seen[1].order_desc),
            (2, 7, false)
        );
        assert_eq!((seen[1].agent_id, seen[1].user_id), (AGENT, USER));
    }

    #[tokio::test]
    async fn raw_items_are_served_verbatim_in_place() {
        let sim = sim_with_visits(3);
        let at = sim.visits(AGENT, USER)[0].visit_at - Duration::hours(1);
        let bogus = serde_json::json!({"visitAt": "yesterday", "activityId": 42, "duration": -3});
        sim.insert_raw_item(AGENT, USER, at, bogus.clone());
        let server = sim.spawn().await.unwrap();

        let body = get(&server, &visits_url("order=visitAt%20asc"))
            .await
            .json();

        assert_eq!(body["pager"]["total"], 4);
        assert_eq!(body["items"][0], bogus);
        assert_eq!(sim.visits(AGENT, USER).len(), 3);
    }

    #[tokio::test]
    async fn the_date_header_follows_the_skewed_clock() {
        let sim = sim_with_visits(1);
        sim.set_clock_skew(Duration::hours(-5));
        let server = sim.spawn().await.unwrap();

        let reply = get_as(&server, "/nowhere", None).await;

        assert_eq!(reply.status, 404);
        let date: DateTime<Utc> = httpdate::parse_http_date(reply.header("date"))
            .unwrap()
            .into();
        let expected = Utc::now() - Duration::hours(5);
        assert!((date - expected).num_seconds().abs() <= 2);
    }

    #[test]
    fn the_same_seed_builds_the_same_world() {
        let shape = |sim: &Simulator| -> Vec<(String, i64, i32)> {
            let visits = sim.visits(AGENT, USER);
            let first = visits[0].visit_at;
            visits
                .iter()
                .map(|v| {
                    (
                        v.activity_id.clone(),
                        (v.visit_at - first).num_seconds(),
                        v.duration_minutes,
                    )
                })
                .collect()
        };
        assert_eq!(shape(&sim_with_visits(300)), shape(&sim_with_visits(300)));
    }

    #[test]
    fn the_demo_world_has_the_documented_pairs() {
        let sim = Simulator::demo();

        assert_eq!(sim.visits(105_131, 15_460_259).len(), 1200);
        let second = sim.visits(105_131, 15_460_260);
        assert_eq!(second.len(), 37);
        assert!(second.last().unwrap().open);
        assert_eq!(sim.visits(200_001, 30_000_001).len(), 5);
        assert!(sim.activities().iter().all(|a| !a.deleted));
    }
}
