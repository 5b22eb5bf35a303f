//! What `szb-sync rejects` lists: the newest rejected items, filtered, in one query.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, query_err};
use crate::domain::PairKey;

/// Which rejects to list; `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct RejectFilter {
    pub agent_id: Option<i64>,
    pub user_id: Option<i64>,
    /// Only items first seen at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Skip this many of the newest first (a page of the status page's view).
    pub offset: i64,
    /// At most this many, newest first.
    pub limit: i64,
}

/// One row of `sync_rejects`.
#[derive(Debug, Clone)]
pub struct Reject {
    pub id: i64,
    pub pair: PairKey,
    pub reason: String,
    /// The item as the platform served it.
    pub raw: serde_json::Value,
    /// Its place in the pair's list when it was read (`None` for rows moved by a migration).
    pub list_position: Option<i64>,
    pub first_seen_at: DateTime<Utc>,
}

/// The newest rejects that match, and how many match in all.
#[derive(Debug, Clone)]
pub struct Rejects {
    pub matching: i64,
    pub rejects: Vec<Reject>,
}

impl Store {
    /// The newest rejects that match `filter`, newest first.
    pub async fn rejects(&self, filter: &RejectFilter) -> Result<Rejects, StoreError> {
        let rows = sqlx::query(include_str!("sql/list_rejects.sql"))
            .bind(filter.agent_id)
            .bind(filter.user_id)
            .bind(filter.since)
            .bind(filter.offset.max(0))
            .bind(filter.limit.max(0))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing rejects"))?;
        Ok(Rejects {
            matching: rows.first().map_or(0, |r| r.get("matching")),
            rejects: rows
                .iter()
                .filter(|r| r.get::<Option<i64>, _>("id").is_some())
                .map(|r| Reject {
                    id: r.get("id"),
                    pair: super::key_of(r),
                    reason: r.get("reason"),
                    raw: r.get("raw"),
                    list_position: r.get("list_position"),
                    first_seen_at: r.get("first_seen_at"),
                })
                .collect(),
        })
    }
}
