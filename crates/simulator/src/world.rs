//! The simulated upstream's state: agents, activities and each user's visits in list order;
//! the truth types tests compare the database with, and reading them. What changes the world is
//! in `knobs` and `generate`, which import this module (never the other way).

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

/// The first id of a generated activity; later ones step up from it.
pub(crate) const FIRST_ACTIVITY_ID: u64 = 10_096_288;

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
    /// Still growing: [`World::extend_open_visits`] moves its `last_online_at`.
    pub open: bool,
}

impl TruthVisit {
    pub(crate) fn new(
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

    pub(crate) fn recompute_duration(&mut self) {
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

/// What a visits request asked for, handed to the [`World::set_before_request`] hook.
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
    /// 1-based count over all visits requests since the last [`World::reset_request_counts`].
    pub request_no: u64,
}

pub(crate) type BeforeRequest = Box<dyn FnMut(&mut World, &RequestInfo) + Send>;

/// A position of a user's list: a real visit, or a hostile item served verbatim.
pub(crate) enum Entry {
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
    pub(crate) fn sort_at(&self) -> DateTime<Utc> {
        match self {
            Entry::Visit(v) => v.visit_at,
            Entry::Raw { sort_at, .. } | Entry::RawBytes { sort_at, .. } => *sort_at,
        }
    }

    pub(crate) fn matches(&self, activity_filter: Option<&str>) -> bool {
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

pub(crate) struct Agent {
    pub(crate) token: String,
    pub(crate) forbidden: bool,
    /// Activities new visits may pick from (deleted ones are removed).
    pub(crate) activity_ids: Vec<String>,
    pub(crate) users: BTreeMap<i64, UserVisits>,
}

#[derive(Default)]
pub(crate) struct UserVisits {
    /// Ascending by `visitAt`; ties keep insertion order.
    pub(crate) entries: Vec<Entry>,
    pub(crate) purged: Vec<TruthVisit>,
}

/// The simulated upstream state. Reach it through [`Simulator`](crate::Simulator), or directly
/// inside a [`World::set_before_request`] hook; the knobs are the same.
pub struct World {
    pub(crate) rng: StdRng,
    pub(crate) clock_skew: Duration,
    pub(crate) agents: BTreeMap<i64, Agent>,
    pub(crate) activities: BTreeMap<String, TruthActivity>,
    pub(crate) activities_created: u64,
    pub(crate) next_activity_id: u64,
    pub(crate) shuffle_ties: bool,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) before_request: Option<BeforeRequest>,
    pub(crate) request_count: u64,
    pub(crate) requests_by_pair: HashMap<(i64, i64), u64>,
    /// The platform's own rate limit, when one is set: requests over it get a 429.
    pub(crate) rate_limit: Option<TokenBucket>,
    pub(crate) rate_limited: u64,
    /// When the first and the latest visits request since the last reset arrived.
    pub(crate) requests_span: Option<(std::time::Instant, std::time::Instant)>,
    /// Added to every visits request before it is answered.
    pub(crate) latency: std::time::Duration,
    pub(crate) hostile: HashMap<(i64, i64), Hostile>,
    /// Where a waiting arrival process is told to start (`arrivals`).
    pub(crate) arrivals_gate: Option<tokio::sync::oneshot::Sender<()>>,
    /// Visits opened by arrival processes.
    pub(crate) arrivals: u64,
}

/// A server-side rate limit: `rate` requests a second, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: std::time::Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            refilled: std::time::Instant::now(),
        }
    }

    /// Takes a token, or says how long until the next one (whole seconds, at least 1, as a
    /// `Retry-After` would).
    pub(crate) fn take(&mut self) -> Result<(), u64> {
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
    pub(crate) fn new(seed: u64) -> Self {
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
            requests_span: None,
            latency: std::time::Duration::ZERO,
            hostile: HashMap::new(),
            arrivals_gate: None,
            arrivals: 0,
        }
    }

    /// The simulator clock: real UTC now plus the configured skew.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_skew
    }

    pub(crate) fn agent(&self, agent_id: i64) -> &Agent {
        self.agents
            .get(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    pub(crate) fn agent_mut(&mut self, agent_id: i64) -> &mut Agent {
        self.agents
            .get_mut(&agent_id)
            .unwrap_or_else(|| panic!("unknown agent {agent_id}: call add_agent first"))
    }

    pub(crate) fn user(&self, agent_id: i64, user_id: i64) -> Option<&UserVisits> {
        self.agents.get(&agent_id)?.users.get(&user_id)
    }

    pub(crate) fn user_mut(&mut self, agent_id: i64, user_id: i64) -> &mut UserVisits {
        self.agent_mut(agent_id).users.entry(user_id).or_default()
    }

    pub(crate) fn visits_mut(&mut self) -> impl Iterator<Item = &mut TruthVisit> {
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
    pub(crate) fn last_sort_at(&self, agent_id: i64, user_id: i64) -> Option<DateTime<Utc>> {
        let user = self.user(agent_id, user_id)?;
        let current = user.entries.last().map(Entry::sort_at);
        let purged = user.purged.iter().map(|v| v.visit_at).max();
        current.max(purged)
    }

    /// Activities the user already has a visit of at exactly `visit_at`.
    pub(crate) fn activities_at(
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
    pub(crate) fn insert_entry(&mut self, agent_id: i64, user_id: i64, entry: Entry) {
        let entries = &mut self.user_mut(agent_id, user_id).entries;
        let key = entry.sort_at();
        let pos = entries.partition_point(|e| e.sort_at() <= key);
        entries.insert(pos, entry);
    }

    /// Requests answered with a 429 by [`World::set_rate_limit`] so far.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited
    }

    /// From the first visits request since the last reset to the latest: with the counts, the
    /// pace a client kept.
    pub fn requests_span(&self) -> std::time::Duration {
        self.requests_span
            .map_or(std::time::Duration::ZERO, |(first, last)| last - first)
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
