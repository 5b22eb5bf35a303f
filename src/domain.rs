//! The shared vocabulary: pairs, windows, visits, activities, list entries, marks and run
//! outcomes, and the rules of what a valid visit is.
//!
//! Every other module speaks in these types; this one depends on nothing of the crate but
//! [`crate::secret`]. A [`Visit`] can only be built through [`Visit::new`], which enforces the
//! rules, so no path (the API decoder, a test, a future loader) can hand the store a visit that
//! cannot exist. Postgres enforces the rules of existence a second time (`lastOnlineAt` not
//! before `visitAt`, no negative duration: CHECK constraints on `visits`); the plausibility
//! rules (not in the future, not before 2000, at most a year long) are szb-sync's alone.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::secret::Secret;

/// Longest plausible visit: a year, in minutes.
pub const MAX_DURATION_MINUTES: i64 = 366 * 24 * 60;

/// Longest `activityId` stored, in bytes. It is part of the key of `visits` and `activities`,
/// and a B-tree index entry cannot exceed about 2.7 kB: a longer id would fail its page forever.
pub const MAX_ACTIVITY_ID_BYTES: usize = 512;

/// Visits before this instant (2000-01-01T00:00:00Z) are not real platform data.
const EARLIEST_VISIT_SECS: i64 = 946_684_800;

/// How far past "now" a time may lie before it counts as in the future (clocks drift).
const FUTURE_SLACK: chrono::Duration = chrono::Duration::days(1);

/// One (agent, user) pair the daemon keeps in step, optionally narrowed to one activity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub agent_id: i64,
    pub user_id: i64,
    /// The `activityId` filter, when the target sets one. Each filter is its own list upstream,
    /// so it gets its own mark.
    pub activity_filter: Option<String>,
}

impl PairKey {
    pub fn new(agent_id: i64, user_id: i64, activity_filter: Option<String>) -> Self {
        Self {
            agent_id,
            user_id,
            activity_filter,
        }
    }

    /// The filter as stored: an empty string when there is none.
    pub fn filter_str(&self) -> &str {
        self.activity_filter.as_deref().unwrap_or("")
    }
}

impl std::fmt::Display for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent {} user {}", self.agent_id, self.user_id)?;
        if let Some(a) = &self.activity_filter {
            write!(f, " activity {a}")?;
        }
        Ok(())
    }
}

/// A pair to sync, with the token its requests carry: the engine's unit of work.
#[derive(Debug, Clone)]
pub struct Pair {
    pub key: PairKey,
    pub token: Secret,
}

/// Sort order of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// One request's window over a pair's list: entries `[(page-1)·page_size, page·page_size)`.
/// Which window to ask for is the mark's business ([`crate::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub page: i64,
    pub page_size: u32,
    pub order: Order,
}

impl Window {
    /// Position of the window's first entry.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * i64::from(self.page_size)
    }

    /// Position just past the window's last entry.
    pub fn end(&self) -> i64 {
        self.page * i64::from(self.page_size)
    }

    /// The first page of the ascending list.
    pub fn first(max_size: u32) -> Self {
        Window {
            page: 1,
            page_size: max_size,
            order: Order::Asc,
        }
    }
}

/// A live event on the platform, as embedded in a visit.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: String,
    pub agent_id: Option<i64>,
    pub subagent_id: Option<i64>,
    pub category_id: Option<i64>,
    pub group_id: Option<i64>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub is_pushing: Option<bool>,
    pub is_archived: Option<bool>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    /// The platform's own last-change time (`updatedAt`, or `updateAt` as the doc spells it).
    /// The newest version by this time wins in the store.
    pub updated_at: Option<DateTime<Utc>>,
    pub push_domain: Option<String>,
    pub pull_domain: Option<String>,
    /// Fields the platform sent that this version does not know, kept verbatim.
    pub extra: Map<String, Value>,
}

/// The parts of a visit before the rules have been checked; [`Visit::new`] turns them into one.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitParts {
    pub agent_id: i64,
    pub user_id: i64,
    pub activity_id: String,
    pub visit_at: DateTime<Utc>,
    pub last_online_at: DateTime<Utc>,
    pub duration_minutes: i64,
    pub extra: Map<String, Value>,
}

/// Why a visit cannot exist. Each message names the upstream's fields it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVisit {
    #[error("agentId {0} is not a positive id")]
    AgentId(i64),
    #[error("userId {0} is not a positive id")]
    UserId(i64),
    #[error("activityId is empty")]
    EmptyActivityId,
    #[error("activityId is {0} bytes long, over the {MAX_ACTIVITY_ID_BYTES} szb-sync stores")]
    LongActivityId(usize),
    #[error("duration {0} minutes is out of range 0..={MAX_DURATION_MINUTES}")]
    Duration(i64),
    #[error("lastOnlineAt {last_online_at} is before visitAt {visit_at}")]
    LastOnlineBeforeVisit {
        visit_at: DateTime<Utc>,
        last_online_at: DateTime<Utc>,
    },
    #[error("visitAt {visit_at} or lastOnlineAt {last_online_at} lies in the future")]
    Future {
        visit_at: DateTime<Utc>,
        last_online_at: DateTime<Utc>,
    },
    #[error("visitAt {0} is before 2000")]
    TooOld(DateTime<Utc>),
}

/// One visit of one user to one activity, known to be possible. Its natural key is
/// `(agent_id, user_id, activity_id, visit_at)`: the upstream has no visit id.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    agent_id: i64,
    user_id: i64,
    activity_id: String,
    visit_at: DateTime<Utc>,
    last_online_at: DateTime<Utc>,
    duration_minutes: i32,
    extra: Map<String, Value>,
}

impl Visit {
    /// Checks the rules of a visit: ids present, times in order and not in the future (`now`
    /// is the upstream's clock), duration in range.
    pub fn new(parts: VisitParts, now: DateTime<Utc>) -> Result<Self, InvalidVisit> {
        let VisitParts {
            agent_id,
            user_id,
            activity_id,
            visit_at,
            last_online_at,
            duration_minutes,
            extra,
        } = parts;
        if agent_id <= 0 {
            return Err(InvalidVisit::AgentId(agent_id));
        }
        if user_id <= 0 {
            return Err(InvalidVisit::UserId(user_id));
        }
        if activity_id.trim().is_empty() {
            return Err(InvalidVisit::EmptyActivityId);
        }
        if activity_id.len() > MAX_ACTIVITY_ID_BYTES {
            return Err(InvalidVisit::LongActivityId(activity_id.len()));
        }
        if !(0..=MAX_DURATION_MINUTES).contains(&duration_minutes) {
            return Err(InvalidVisit::Duration(duration_minutes));
        }
        let horizon = now + FUTURE_SLACK;
        if visit_at > horizon || last_online_at > horizon {
            return Err(InvalidVisit::Future {
                visit_at,
                last_online_at,
            });
        }
        if visit_at.timestamp() < EARLIEST_VISIT_SECS {
            return Err(InvalidVisit::TooOld(visit_at));
        }
        if last_online_at < visit_at {
            return Err(InvalidVisit::LastOnlineBeforeVisit {
                visit_at,
                last_online_at,
            });
        }
        Ok(Visit {
            agent_id,
            user_id,
            activity_id,
            visit_at,
            last_online_at,
            // In range by the check above.
            duration_minutes: duration_minutes as i32,
            extra,
        })
    }

    pub fn agent_id(&self) -> i64 {
        self.agent_id
    }

    pub fn user_id(&self) -> i64 {
        self.user_id
    }

    pub fn activity_id(&self) -> &str {
        &self.activity_id
    }

    /// When the viewer entered: the list's sort key.
    pub fn visit_at(&self) -> DateTime<Utc> {
        self.visit_at
    }

    /// When the viewer was last seen; grows while they are online.
    pub fn last_online_at(&self) -> DateTime<Utc> {
        self.last_online_at
    }

    /// Online time in whole minutes, as the platform reports it.
    pub fn duration_minutes(&self) -> i32 {
        self.duration_minutes
    }

    /// Fields the platform sent that this version does not know, kept verbatim.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }
}

/// `s` as Postgres can store it in `text`: each NUL (which it refuses) becomes U+FFFD, the
/// replacement character, as in everything szb-sync stores from the platform.
pub fn storable_text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// An item of the upstream list that failed validation. It is kept raw with the reason, so
/// nothing the upstream sent is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub raw: Value,
    pub reason: String,
}

/// What sits at one position of a pair's ascending list.
// Nearly every entry is a visit: boxing it would cost an allocation per entry for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Visit {
        visit: Visit,
        /// `None` when the platform sent `activity: null` (a deleted activity). Shared: the
        /// items of a page mostly embed the same few activities.
        activity: Option<std::sync::Arc<Activity>>,
    },
    Rejected {
        reject: Reject,
        /// What could still be read of the item, so the mark can place it.
        visit_at: Option<DateTime<Utc>>,
        activity_id: Option<String>,
        last_online_at: Option<DateTime<Utc>>,
    },
}

impl Entry {
    /// The `visitAt` the list is sorted by, when it could be read.
    pub fn visit_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Entry::Visit { visit, .. } => Some(visit.visit_at),
            Entry::Rejected { visit_at, .. } => *visit_at,
        }
    }

    /// The activity id, which together with `visit_at` tells visits of one user apart.
    pub fn activity_id(&self) -> Option<&str> {
        match self {
            Entry::Visit { visit, .. } => Some(&visit.activity_id),
            Entry::Rejected { activity_id, .. } => activity_id.as_deref(),
        }
    }

    /// When the viewer was last seen online, when it could be read.
    pub fn last_online_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Entry::Visit { visit, .. } => Some(visit.last_online_at),
            Entry::Rejected { last_online_at, .. } => *last_online_at,
        }
    }
}

/// The committed state of one pair's walk: what [`crate::mark`] computes and
/// [`crate::store`] keeps in `sync_state`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mark {
    /// `S`: how many visits at the head of the ascending list are settled and stored.
    pub settled: i64,
    /// The group at position `S`; `None` exactly when `settled` is 0.
    pub anchor: Option<Anchor>,
}

/// A group of visits sharing one `visitAt`, recorded so it can be found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub visit_at: DateTime<Utc>,
    /// Activity ids of the group's members seen so far. The group may gain members later.
    pub activity_ids: Vec<String>,
}

/// Why a pair is due when it is (`sync_state.due_reason`). The migration's CHECK constraint on
/// that column is the only other spelling of these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DueReason {
    /// Never synced: due at once, first of all.
    New,
    /// Due at the next tick of the schedule, as every pair is.
    Sweep,
    /// Due before the next tick for its arrival rate.
    Hot,
    /// Due before the next tick: a visit of the pair is still going on.
    Open,
    /// Due before the next tick: its latest check found new visits.
    Changed,
    /// Failing: due after its backoff.
    Backoff,
}

impl DueReason {
    pub const ALL: [DueReason; 6] = [
        DueReason::New,
        DueReason::Sweep,
        DueReason::Hot,
        DueReason::Open,
        DueReason::Changed,
        DueReason::Backoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DueReason::New => "new",
            DueReason::Sweep => "sweep",
            DueReason::Hot => "hot",
            DueReason::Open => "open",
            DueReason::Changed => "changed",
            DueReason::Backoff => "backoff",
        }
    }

    /// Due between the ticks, not only at them.
    pub fn is_hot(self) -> bool {
        matches!(
            self,
            DueReason::New | DueReason::Hot | DueReason::Open | DueReason::Changed
        )
    }
}

impl std::str::FromStr for DueReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DueReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown due reason {s:?}"))
    }
}

impl std::fmt::Display for DueReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one run of one pair ended, as the engine reports it and `sync_runs.outcome` stores it.
/// The migrations' CHECK constraint on that column is the only other spelling of these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    /// The run row of a run still going (or of a process that died: the next run of the pair
    /// closes it as [`RunOutcome::Interrupted`]). Never the result of a finished run.
    Running,
    Ok,
    Failed,
    /// Stopped by shutdown (or a crash) after its last committed page.
    Interrupted,
    /// Another process held the pair's lock.
    Skipped,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 5] = [
        RunOutcome::Running,
        RunOutcome::Ok,
        RunOutcome::Failed,
        RunOutcome::Interrupted,
        RunOutcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown run outcome {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_600_000_000 + secs, 0).unwrap()
    }

    fn parts() -> VisitParts {
        VisitParts {
            agent_id: 1,
            user_id: 2,
            activity_id: "a".into(),
            visit_at: t(0),
            last_online_at: t(300),
            duration_minutes: 5,
            extra: Map::new(),
        }
    }

    fn refused(change: impl FnOnce(&mut VisitParts)) -> InvalidVisit {
        let mut p = parts();
        change(&mut p);
        Visit::new(p, t(1000)).expect_err("the visit should be refused")
    }

    #[test]
    fn a_possible_visit_is_accepted_as_given() {
        let v = Visit::new(parts(), t(1000)).unwrap();
        assert_eq!(
            (
                v.agent_id(),
                v.user_id(),
                v.activity_id(),
                v.duration_minutes()
            ),
            (1, 2, "a", 5)
        );
        assert_eq!((v.visit_at(), v.last_online_at()), (t(0), t(300)));
        // An instant visit: lastOnlineAt equal to visitAt.
        let mut p = parts();
        p.last_online_at = p.visit_at;
        p.duration_minutes = 0;
        assert!(Visit::new(p, t(1000)).is_ok());
    }

    #[test]
    fn last_online_before_visit_is_refused_naming_both_fields() {
        let err = refused(|p| p.last_online_at = t(-365 * 86_400));
        assert!(matches!(err, InvalidVisit::LastOnlineBeforeVisit { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("lastOnlineAt") && msg.contains("visitAt"),
            "{msg}"
        );
    }

    #[test]
    fn each_broken_rule_is_named() {
        let cases: [(InvalidVisit, &str); 8] = [
            (refused(|p| p.agent_id = 0), "agentId 0"),
            (refused(|p| p.user_id = -3), "userId -3"),
            (
                refused(|p| p.activity_id = "  ".into()),
                "activityId is empty",
            ),
            (
                refused(|p| p.activity_id = "7".repeat(MAX_ACTIVITY_ID_BYTES + 1)),
                "activityId is 513 bytes long",
            ),
            (refused(|p| p.duration_minutes = -1), "duration -1 minutes"),
            (
                refused(|p| p.duration_minutes = MAX_DURATION_MINUTES + 1),
                "out of range",
            ),
            (
                refused(|p| p.last_online_at = t(1000 + 2 * 86_400)),
                "lies in the future",
            ),
            (
                refused(|p| {
                    p.visit_at = Utc.timestamp_opt(0, 0).unwrap();
                    p.last_online_at = p.visit_at;
                }),
                "before 2000",
            ),
        ];
        for (err, expect) in cases {
            assert!(err.to_string().contains(expect), "{err} lacks {expect:?}");
        }
    }

    #[test]
    fn run_outcomes_round_trip_through_their_names() {
        for o in RunOutcome::ALL {
            assert_eq!(o.as_str().parse::<RunOutcome>(), Ok(o));
        }
        assert!("done".parse::<RunOutcome>().is_err());
    }
}
