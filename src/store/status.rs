//! What `szb-sync status` shows: each pair's mark, last run, last success and row counts, for
//! every pair in one query (a status page refreshing every few seconds repeats it).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::pair_keys::PairKeys;
use super::{Store, StoreError, query_err};
use crate::domain::{DueReason, PairKey, RunOutcome};

/// One row of `szb-sync status`.
#[derive(Debug, Clone)]
pub struct PairStatus {
    pub pair: PairKey,
    /// The mark's settled count; `None` before the pair's first committed page.
    pub settled: Option<i64>,
    /// `pager.total` when the mark was last written.
    pub upstream_total: Option<i64>,
    /// The latest run's outcome (`running` while one goes on); `None` when it never ran.
    pub last_outcome: Option<RunOutcome>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Stored visits of the pair (of its activity only, for a filtered pair).
    pub visits: i64,
    pub rejects: i64,
    /// Runs that failed in a row, and when `run` tries the pair again while it backs off.
    pub failures_in_row: i32,
    /// When `run` takes the pair next: its own due time (the next tick after its last run at
    /// the latest), later while it backs off; `None` when due now.
    pub next_due_at: Option<DateTime<Utc>>,
    /// Why it is due then; `None` before the pair's state row exists.
    pub due_reason: Option<DueReason>,
    /// New visits per second the pair's viewer starts, as its checks learnt it.
    pub arrival_rate: f64,
    /// The process syncing the pair right now, while its lease lasts.
    pub lease_owner: Option<String>,
    /// The process that last ran it.
    pub leased_by: Option<String>,
}

impl Store {
    /// Every pair the database knows of (every pair that ran has a `sync_state` row),
    /// configured or not, sorted.
    pub async fn known_pairs(&self) -> Result<Vec<PairKey>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(include_str!("sql/known_pairs.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing the pairs the database knows"))?;
        Ok(rows
            .into_iter()
            .map(|(agent, user, filter)| {
                PairKey::new(agent, user, Some(filter).filter(|f| !f.is_empty()))
            })
            .collect())
    }

    /// The status of these pairs, in the order given.
    /// `half_life` decays each pair's arrival rate to now.
    pub async fn status(
        &self,
        pairs: &[PairKey],
        half_life: std::time::Duration,
    ) -> Result<Vec<PairStatus>, StoreError> {
        let rows = PairKeys::of(pairs)
            .bind(sqlx::query(include_str!("sql/pair_status.sql")))
            .bind(RunOutcome::Ok.as_str())
            .bind(RunOutcome::Running.as_str())
            .bind(RunOutcome::Failed.as_str())
            .bind(half_life.as_secs_f64().max(1.0))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading pair status"))?;
        pairs
            .iter()
            .zip(rows)
            .map(|(pair, row)| {
                let outcome: Option<String> = row.get("outcome");
                let last_outcome = outcome
                    .map(|o| o.parse::<RunOutcome>())
                    .transpose()
                    .map_err(|detail| StoreError::Inconsistent {
                        pair: pair.to_string(),
                        detail,
                    })?;
                Ok(PairStatus {
                    pair: pair.clone(),
                    settled: row.get("settled_count"),
                    upstream_total: row.get("upstream_total"),
                    last_outcome,
                    last_finished_at: row.get("finished_at"),
                    last_error: row.get("error"),
                    last_ok_at: row.get("last_ok_at"),
                    visits: row.get("visits"),
                    rejects: row.get("rejects"),
                    failures_in_row: row.get("failures_in_row"),
                    next_due_at: row.get("next_due_at"),
                    due_reason: row
                        .get::<Option<String>, _>("due_reason")
                        .and_then(|r| r.parse().ok()),
                    arrival_rate: row.get("arrival_rate"),
                    lease_owner: row.get("lease_owner"),
                    leased_by: row.get("leased_by"),
                })
            })
            .collect()
    }
}
