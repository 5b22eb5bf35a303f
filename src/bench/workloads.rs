//! The workloads of `szb-sync bench`: what each syncs, and what it measures.

use std::time::Duration;

/// What a workload measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A first sync of every visit, set beside `COPY` of the same rows.
    InitialVsCopy,
    /// A first sync, set beside the ideal `pages × latency / max_concurrency`.
    InitialVsIdeal,
    /// A first sync behind a server rate limit, set beside `requests / limit`.
    InitialVsLimit,
    /// A pass with nothing new upstream, after a first sync.
    Quiet,
    /// A first sync, measured on its own.
    Initial,
    /// Three `szb-sync run` processes sharing the pairs: the first sync, quiet ticks, and a
    /// replica SIGKILLed mid-pass.
    Replicas,
    /// After a first sync, `szb-sync run` with its listener, passes every 5 s, while
    /// [`LOAD_CLIENTS`] clients load the status page's views in a tight loop.
    Listener,
    /// A first sync behind a server rate limit: the share of 429s, and the pace kept against
    /// the limit (issue 18, "a pace that fits low limits too").
    Pace,
    /// `szb-sync run` under each refresh policy in turn, while viewers arrive
    /// ([`FRESHNESS`]): how long a new visit takes to land.
    Freshness,
}

#[derive(Debug)]
pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) users: u64,
    pub(super) visits_per_user: u64,
    pub(super) latency_ms: u64,
    pub(super) rate_limit: f64,
    /// Config lines added to `[api]`.
    pub(super) api: &'static str,
    /// Config lines added to `[database]`.
    pub(super) database: &'static str,
    pub(super) kind: Kind,
    /// An index of `visits` dropped after the migrations, before the sync: the write path as
    /// it was before a migration added it.
    pub(super) drop_index: Option<&'static str>,
    /// Time the example queries of docs/tables.md and the views after the sync.
    pub(super) time_reads: bool,
}

/// The index the analysts' migration added for "who is online right now".
pub(super) const ONLINE_NOW_INDEX: &str = "visits_last_online_at_idx";

/// The first workload: a first sync of 1M visits, set beside `COPY`.
const ONE_MILLION: Workload = Workload {
    name: "1M visits, 200 users",
    users: 200,
    visits_per_user: 5_000,
    latency_ms: 0,
    rate_limit: 0.0,
    api: "",
    database: "",
    kind: Kind::InitialVsCopy,
    drop_index: None,
    time_reads: true,
};

/// The listener under load, on a table of 1M visits.
const LISTENER_1M: Workload = Workload {
    name: "status page under load, 1M visits",
    users: 200,
    visits_per_user: 5_000,
    latency_ms: 0,
    rate_limit: 0.0,
    api: "",
    database: "",
    kind: Kind::Listener,
    drop_index: None,
    time_reads: false,
};

/// Seconds of requests at its limit each pace workload's first sync takes.
const PACE_SECONDS: u64 = 30;

/// A first sync of `limit × PACE_SECONDS` pairs of one visit each (one request a pair) behind a
/// server limit of `limit` requests a second, answered after `latency_ms`.
const fn pace(name: &'static str, limit: u64, latency_ms: u64) -> Workload {
    Workload {
        name,
        users: limit * PACE_SECONDS,
        visits_per_user: 1,
        latency_ms,
        rate_limit: limit as f64,
        api: "",
        database: "",
        kind: Kind::Pace,
        drop_index: None,
        time_reads: false,
    }
}

/// Clients loading the status page at once, each in a tight loop.
pub(super) const LOAD_CLIENTS: usize = 24;
/// How long they load it.
pub(super) const LOAD_FOR: Duration = Duration::from_secs(30);

pub(super) const WORKLOADS: &[Workload] = &[
    ONE_MILLION,
    Workload {
        name: "1M visits, 200 users, synchronous_commit off",
        database: "synchronous_commit = \"off\"\n",
        time_reads: false,
        ..ONE_MILLION
    },
    Workload {
        name: "1M visits, 200 users, without visits_last_online_at_idx",
        drop_index: Some(ONLINE_NOW_INDEX),
        time_reads: false,
        ..ONE_MILLION
    },
    Workload {
        name: "1M visits, 100 ms latency, max_concurrency 8",
        users: 200,
        visits_per_user: 5_000,
        latency_ms: 100,
        rate_limit: 0.0,
        api: "max_concurrency = 8\n",
        database: "",
        kind: Kind::InitialVsIdeal,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "1,500 users behind 50 req/s, 100 ms latency",
        users: 1_500,
        visits_per_user: 20,
        latency_ms: 100,
        rate_limit: 50.0,
        api: "",
        database: "",
        kind: Kind::InitialVsLimit,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "quiet resync, 200 users",
        users: 200,
        visits_per_user: 5_000,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "100,000 pairs × 2 visits, first sync",
        users: 100_000,
        visits_per_user: 2,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Initial,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "quiet resync, 100,000 pairs × 2 visits",
        users: 100_000,
        visits_per_user: 2,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "3 replicas, 2,000 pairs, 20 ms latency",
        users: 2_000,
        visits_per_user: 5,
        latency_ms: 20,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Replicas,
        drop_index: None,
        time_reads: false,
    },
    LISTENER_1M,
    Workload {
        name: "status page under load, 100,000 visits",
        visits_per_user: 500,
        ..LISTENER_1M
    },
    Workload {
        name: "quiet resync, 10,000 pairs",
        users: 10_000,
        visits_per_user: 5,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
    pace("pace under server limits, 5 req/s, 0 ms", 5, 0),
    pace("pace under server limits, 10 req/s, 0 ms", 10, 0),
    pace("pace under server limits, 20 req/s, 0 ms", 20, 0),
    pace("pace under server limits, 50 req/s, 0 ms", 50, 0),
    pace("pace under server limits, 100 req/s, 0 ms", 100, 0),
    pace("pace under server limits, 5 req/s, 50 ms", 5, 50),
    pace("pace under server limits, 10 req/s, 50 ms", 10, 50),
    pace("pace under server limits, 20 req/s, 50 ms", 20, 50),
    pace("pace under server limits, 50 req/s, 50 ms", 50, 50),
    pace("pace under server limits, 100 req/s, 50 ms", 100, 50),
    FRESHNESS_WORKLOAD,
];

/// The freshness workload of issue 18, as "Measured today" there: 2,000 pairs behind a 20
/// requests/s limit with 50 ms of latency, so that a sweep nearly fills the 2-minute tick.
const FRESHNESS_WORKLOAD: Workload = Workload {
    name: "freshness, 2,000 pairs",
    users: 2_000,
    visits_per_user: 5,
    latency_ms: 50,
    rate_limit: 20.0,
    api: "",
    database: "",
    kind: Kind::Freshness,
    drop_index: None,
    time_reads: false,
};

/// The arrivals and the schedule of a freshness run.
#[derive(Debug, Clone, Copy)]
pub(super) struct FreshnessPlan {
    /// `schedule.cron`, and the period it ticks at.
    pub(super) cron: &'static str,
    pub(super) tick: Duration,
    /// A step of arrivals this often, each opening `per_step` visits.
    pub(super) arrivals_every: Duration,
    pub(super) per_step: u64,
    /// The hot set, its Zipf exponent, and the share of picks that go to a random cold user.
    pub(super) hot_users: u64,
    pub(super) zipf: f64,
    pub(super) cold_share: f64,
    /// How long visits arrive; the run then drains for at most one tick plus one sweep.
    pub(super) arrivals_for: Duration,
    /// Both policies see the same picks.
    pub(super) seed: u64,
}

/// The full run: arrivals every 5 s for 6 minutes, 8 at a time, from a hot set of 100 with
/// Zipf weights (s = 1) and one pick in ten a random cold user; cron every 2 minutes.
pub(super) const FRESHNESS: FreshnessPlan = FreshnessPlan {
    cron: "0 */2 * * * *",
    tick: Duration::from_secs(120),
    arrivals_every: Duration::from_secs(5),
    per_step: 8,
    hot_users: 100,
    zipf: 1.0,
    cold_share: 0.1,
    arrivals_for: Duration::from_secs(360),
    seed: 18,
};

/// `bench --smoke`: the freshness workload in about three minutes, to check the plumbing (its
/// numbers say little): 200 pairs behind 12 requests/s (a sweep of about 17 s), cron every
/// 20 s, arrivals for a minute from a hot set of 20.
pub(super) const FRESHNESS_SMOKE: (Workload, FreshnessPlan) = (
    Workload {
        name: "freshness, 200 pairs (smoke)",
        users: 200,
        rate_limit: 12.0,
        ..FRESHNESS_WORKLOAD
    },
    FreshnessPlan {
        cron: "*/20 * * * * *",
        tick: Duration::from_secs(20),
        per_step: 4,
        hot_users: 20,
        arrivals_for: Duration::from_secs(60),
        ..FRESHNESS
    },
);

/// The refresh policies a freshness run compares, each with its `[sync]` line: the old one
/// first, the ratios are the new one's over it.
pub(super) const POLICIES: [(&str, &str); 2] = [
    ("every-tick", "refresh = \"every-tick\""),
    ("adaptive", "refresh = \"adaptive\""),
];

/// Quiet workloads with at least this many pairs time the status page's reads after the sync.
pub(super) const BOARD_FROM_PAIRS: u64 = 10_000;
