//! What `szb-sync status` shows: each pair's mark, last run, last success and row counts, for
//! every pair in one query (a status page refreshing every few seconds repeats it).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, query_err};
use crate::domain::{PairKey, RunOutcome};

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
    /// When `run` takes the pair next: the next tick after its last run, later while it backs
    /// off; `None` when due at any pass.
    pub next_due_at: Option<DateTime<Utc>>,
    /// The process syncing the pair right now, while its lease lasts.
    pub lease_owner: Option<String>,
    /// The process that last ran it.
    pub leased_by: Option<String>,
}

impl Store {
    /// Every pair the database knows of (every pair that ran has a `sync_state` row),
    /// configured or not, sorted.
    pub async fn known_pairs(&self) -> Result<Vec<PairKey>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT agent_id, user_id, activity_filter FROM sync_state ORDER BY 1, 2, 3",
        )
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
    pub async fn status(&self, pairs: &[PairKey]) -> Result<Vec<PairStatus>, StoreError> {
        let rows = sqlx::query(
            "WITH p AS (
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
                        WITH ORDINALITY AS p (agent_id, user_id, activity_filter, ord))
             SELECT p.ord, s.settled_count, s.upstream_total,
                    coalesce(s.failures_in_row, 0) AS failures_in_row,
                    CASE WHEN s.next_due_at > now() THEN s.next_due_at END AS next_due_at,
                    CASE WHEN s.lease_expires_at > now() THEN s.lease_owner END AS lease_owner,
                    s.leased_by,
                    -- A quiet run leaves no run row, and a skipped or running one has no
                    -- state yet: show whichever is newer.
                    CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
                         THEN r.outcome ELSE s.last_outcome END AS outcome,
                    CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
                         THEN r.finished_at ELSE s.last_run_at END AS finished_at,
                    CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
                         THEN CASE WHEN r.outcome = $5 THEN NULL ELSE r.error END
                         WHEN s.last_outcome = $6 THEN s.last_error END AS error,
                    coalesce(s.last_success_at, ok.last_ok_at) AS last_ok_at,
                    v.visits, j.rejects
               FROM p
               LEFT JOIN sync_state s USING (agent_id, user_id, activity_filter)
               LEFT JOIN LATERAL (
                    SELECT outcome, started_at, finished_at, error FROM sync_runs o
                     WHERE (o.agent_id, o.user_id, o.activity_filter)
                           = (p.agent_id, p.user_id, p.activity_filter)
                     ORDER BY o.started_at DESC, o.id DESC LIMIT 1) r ON true
               LEFT JOIN LATERAL (
                    SELECT max(finished_at) AS last_ok_at FROM sync_runs o
                     WHERE (o.agent_id, o.user_id, o.activity_filter)
                           = (p.agent_id, p.user_id, p.activity_filter)
                       AND o.outcome = $4) ok ON true
               LEFT JOIN LATERAL (
                    SELECT count(*) AS visits FROM visits v
                     WHERE v.agent_id = p.agent_id AND v.user_id = p.user_id
                       AND (p.activity_filter = '' OR v.activity_id = p.activity_filter)) v ON true
               LEFT JOIN LATERAL (
                    SELECT count(*) AS rejects FROM sync_rejects j
                     WHERE (j.agent_id, j.user_id, j.activity_filter)
                           = (p.agent_id, p.user_id, p.activity_filter)) j ON true
              ORDER BY p.ord",
        )
        .bind(pairs.iter().map(|p| p.agent_id).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.user_id).collect::<Vec<_>>())
        .bind(pairs.iter().map(PairKey::filter_str).collect::<Vec<_>>())
        .bind(RunOutcome::Ok.as_str())
        .bind(RunOutcome::Running.as_str())
        .bind(RunOutcome::Failed.as_str())
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
                    lease_owner: row.get("lease_owner"),
                    leased_by: row.get("leased_by"),
                })
            })
            .collect()
    }
}
