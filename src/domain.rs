//! What a visit and an activity are once they have passed validation.
//!
//! The API module turns wire JSON into these types; the store writes them; the engine and the mark
//! reason about [`Entry`] values, one per position of the upstream's ascending list.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

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

/// One visit of one user to one activity. Its natural key is
/// `(agent_id, user_id, activity_id, visit_at)`: the upstream has no visit id.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub agent_id: i64,
    pub user_id: i64,
    pub activity_id: String,
    pub visit_at: DateTime<Utc>,
    pub last_online_at: DateTime<Utc>,
    pub duration_minutes: i32,
    /// Fields the platform sent that this version does not know, kept verbatim.
    pub extra: Map<String, Value>,
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
        /// `None` when the platform sent `activity: null` (a deleted activity).
        activity: Option<Activity>,
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
