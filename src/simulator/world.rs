//! The simulated upstream's state: agents, activities and each user's visits in list order,
//! with the knobs tests and the demo turn.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::generate::{Batch, pick_other};

/// Share of generated visits that land on the same `visitAt` as the previous one.
pub(super) const TIE_RATE: f64 = 0.03;
pub(super) const FIRST_ACTIVITY_ID: u64 = 10_096_288;
pub(super) const PUSH_DOMAIN: &str = "push.shangzhibo.tv";
pub(super) const PULL_DOMAIN: &str = "play.shangzhibo.tv";
pub(super) const STATUSES: [&str; 3] = ["enabled", "disabled", "forbidden"];
pub(super) const ACTIVITY_NAMES: &[&str] = &[
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
    pub(super) fn new(
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

    pub(super) fn recompute_duration(&mut self) {
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

/// A pair whose every visits request the platform answers with hostility, as long as it is set
/// ([`World::set_hostile`]); other pairs are answered as usual meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// 200 with a body of `bytes` bytes (the page, then whitespace inside the JSON), streamed
    /// without a `Content-Length` and never held whole in the simulator's memory.
    Huge { bytes: u64 },
    /// 200, then the body one byte at a time, `every` apart, never ending.
    Trickle { every: std::time::Duration },
    /// Accept the request and never answer.
    Hang,
    /// This status with a body that echoes the request's `Authorization` header back, as a
    /// debugging proxy might.
    EchoAuthorization(u16),
}

/// Pieces of a JSON string's text as a hostile platform might send them, for the property tests
/// of the decoder and the writer: escapes Postgres refuses (`\u0000`), lone and paired
/// surrogates, escaped quotes and backslashes, raw control bytes, invalid and cut UTF-8.
pub const HOSTILE_STRING_PIECES: &[&[u8]] = &[
    br"\u0000",
    br"\ud800",
    br"\udfff",
    br"\ud83d\ude00",
    br#"\""#,
    br"\\",
    b"\x00",
    b"\x07",
    b"\x1f",
    b"\xff",
    b"\xe4\xb8",
    "直播".as_bytes(),
];

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

pub(super) type BeforeRequest = Box<dyn FnMut(&mut World, &RequestInfo) + Send>;

/// A position of a user's list: a real visit, or a hostile item served verbatim.
pub(super) enum Entry {
    Visit(TruthVisit),
    Raw {
        sort_at: DateTime<Utc>,
        item: Value,
    },
    /// Bytes spliced into the body as they are, for what a `Value` cannot hold (lone surrogate
    /// escapes, raw control characters, invalid UTF-8).
    RawBytes {
        sort_at: DateTime<Utc>,
        bytes: Vec<u8>,
    },
}

impl Entry {
    pub(super) fn sort_at(&self) -> DateTime<Utc> {
        match self {
            Entry::Visit(v) => v.visit_at,
            Entry::Raw { sort_at, .. } | Entry::RawBytes { sort_at, .. } => *sort_at,
        }
    }

    pub(super) fn matches(&self, activity_filter: Option<&str>) -> bool {
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
            Entry::RawBytes { .. } => false,
        }
    }
}

pub(super) struct Agent {
    pub(super) token: String,
    pub(super) forbidden: bool,
    /// Activities new visits may pick from (deleted ones are removed).
    pub(super) activity_ids: Vec<String>,
    pub(super) users: BTreeMap<i64, UserVisits>,
}

#[derive(Default)]
pub(super) struct UserVisits {
    /// Ascending by `visitAt`; ties keep insertion order.
    pub(super) entries: Vec<Entry>,
    pub(super) purged: Vec<TruthVisit>,
}

/// The simulated upstream state. Reach it through [`Simulator`], or directly inside a
/// [`Simulator::set_before_request`] hook; the knobs are the same.
pub struct World {
    pub(super) rng: StdRng,
    pub(super) clock_skew: Duration,
    pub(super) agents: BTreeMap<i64, Agent>,
    pub(super) activities: BTreeMap<String, TruthActivity>,
    pub(super) activities_created: u64,
    pub(super) next_activity_id: u64,
    pub(super) shuffle_ties: bool,
    pub(super) faults: VecDeque<Fault>,
    pub(super) before_request: Option<BeforeRequest>,
    pub(super) request_count: u64,
    pub(super) requests_by_pair: HashMap<(i64, i64), u64>,
    /// The platform's own rate limit, when one is set: requests over it get a 429.
    pub(super) rate_limit: Option<TokenBucket>,
    pub(super) rate_limited: u64,
    /// Added to every visits request before it is answered.
    pub(super) latency: std::time::Duration,
    pub(super) hostile: HashMap<(i64, i64), Hostile>,
}

/// A server-side rate limit: `rate` requests a second, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: std::time::Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            refilled: std::time::Instant::now(),
        }
    }

    /// Takes a token, or says how long until the next one (whole seconds, at least 1, as a
    /// `Retry-After` would).
    pub(super) fn take(&mut self) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate).ceil() as u64).max(1))
        }
    }
}

impl World {
    pub(super) fn new(seed: u64) -> Self {
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
            rate_limit: None,
            rate_limited: 0,
            latency: std::time::Duration::ZERO,
            hostile: HashMap::new(),
        }
    }

    /// Limits visits requests to `per_second` (bursts of up to `burst`), over all agents, like a
    /// platform's gateway: a request over the limit gets a 429 with a `Retry-After` in whole
    /// seconds. `None` lifts the limit.
    pub fn set_rate_limit(&mut self, limit: Option<(f64, f64)>) {
        self.rate_limit = limit.map(|(rate, burst)| TokenBucket::new(rate, burst.max(1.0)));
    }

    /// Requests answered with a 429 by [`World::set_rate_limit`] so far.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited
    }

    /// Every visits request waits this long before it is answered, as over a real network.
    pub fn set_latency(&mut self, latency: std::time::Duration) {
        self.latency = latency;
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
        self.rate_limited = 0;
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
                        Entry::Raw { .. } | Entry::RawBytes { .. } => None,
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
