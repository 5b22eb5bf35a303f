//! The `sync_runs` rows: one per run of a pair, opened when it starts and closed with what it
//! did.

use super::session::PairSession;
use super::{Store, StoreError, query_err};
use crate::domain::{Mark, PairKey, RunOutcome};

/// A run row's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub i64);

/// What a run did, written to its row when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub requests: u32,
    pub pages: u32,
    pub visits_inserted: u64,
    pub visits_updated: u64,
    pub activities_written: u64,
    pub rejects: u64,
}

impl RunTotals {
    pub fn add(&mut self, other: &RunTotals) {
        self.requests += other.requests;
        self.pages += other.pages;
        self.visits_inserted += other.visits_inserted;
        self.visits_updated += other.visits_updated;
        self.activities_written += other.activities_written;
        self.rejects += other.rejects;
    }
}

impl Store {
    /// Records a run that did not start because another process holds the pair.
    pub async fn record_skipped_run(&self, pair: &PairKey, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sync_runs (agent_id, user_id, activity_filter, finished_at, outcome, error)
             VALUES ($1, $2, $3, now(), $4, $5)",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(RunOutcome::Skipped.as_str())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a skipped run"))?;
        Ok(())
    }
}

impl PairSession {
    /// Opens the run's row. Rows a crashed process left `running` for this pair are closed as
    /// `interrupted` first: holding the lock proves nobody else is running it.
    pub async fn start_run(&mut self, mark_before: &Mark) -> Result<RunId, StoreError> {
        let pair = &self.pair;
        sqlx::query(
            "UPDATE sync_runs SET outcome = $4, finished_at = now(),
                    error = coalesce(error, 'the process ended before the run finished')
              WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3 AND outcome = $5",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(RunOutcome::Interrupted.as_str())
        .bind(RunOutcome::Running.as_str())
        .execute(&mut *self.conn)
        .await
        .map_err(query_err("closing stale runs"))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_runs (agent_id, user_id, activity_filter, mark_before, outcome)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(mark_before.settled)
        .bind(RunOutcome::Running.as_str())
        .fetch_one(&mut *self.conn)
        .await
        .map_err(query_err("opening the run row"))?;
        Ok(RunId(id))
    }

    /// Closes the run's row with what it did. If the session's own connection was lost (the
    /// database restarted mid-run), a fresh one records the real outcome instead of leaving the
    /// row for the next run to close as interrupted.
    pub async fn finish_run(
        &mut self,
        run: RunId,
        outcome: RunOutcome,
        totals: &RunTotals,
        mark_after: &Mark,
        recoveries: &[String],
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        // The run's row, and the pair's last run, success and error on its state row, in one
        // round trip.
        let close = |error: Option<&str>| {
            sqlx::query(
                "WITH r AS (
                    UPDATE sync_runs SET finished_at = now(), outcome = $2, requests = $3,
                           pages = $4, visits_inserted = $5, visits_updated = $6,
                           activities_written = $7, rejects = $8, mark_after = $9,
                           recoveries = $10, error = $11
                     WHERE id = $1
                 RETURNING agent_id, user_id, activity_filter, outcome, error, finished_at)
                 INSERT INTO sync_state AS s (agent_id, user_id, activity_filter, last_run_at,
                        last_outcome, last_success_at, last_error, last_error_at)
                 SELECT agent_id, user_id, activity_filter, finished_at, outcome,
                        CASE WHEN outcome = $12 THEN finished_at END,
                        error, CASE WHEN error IS NOT NULL THEN finished_at END
                   FROM r
                 ON CONFLICT (agent_id, user_id, activity_filter) DO UPDATE SET
                        last_run_at = EXCLUDED.last_run_at,
                        last_outcome = EXCLUDED.last_outcome,
                        last_success_at = coalesce(EXCLUDED.last_success_at, s.last_success_at),
                        last_error = coalesce(EXCLUDED.last_error, s.last_error),
                        last_error_at = coalesce(EXCLUDED.last_error_at, s.last_error_at)",
            )
            .bind(run.0)
            .bind(outcome.as_str())
            .bind(clamp_i32(u64::from(totals.requests)))
            .bind(clamp_i32(u64::from(totals.pages)))
            .bind(clamp_i32(totals.visits_inserted))
            .bind(clamp_i32(totals.visits_updated))
            .bind(clamp_i32(totals.activities_written))
            .bind(clamp_i32(totals.rejects))
            .bind(mark_after.settled)
            .bind(recoveries.to_vec())
            .bind(error.map(str::to_owned))
            .bind(RunOutcome::Ok.as_str())
        };
        let first = close(error)
            .execute(&mut *self.conn)
            .await
            .map_err(query_err("closing the run row"));
        match first {
            Err(e) if e.is_connection() => {
                tracing::debug!(error = %e, "run row closed on a fresh connection");
                close(error)
                    .execute(&self.pool)
                    .await
                    .map_err(query_err("closing the run row"))?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
