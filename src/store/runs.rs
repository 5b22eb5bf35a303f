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

/// After the run's row: the pair's last run, success, error and backoff on its state row.
const SAVE_LAST_RUN: &str = "
                 INSERT INTO sync_state AS s (agent_id, user_id, activity_filter, last_run_at,
                        last_outcome, last_success_at, last_error, last_error_at,
                        failures_in_row, next_due_at)
                 SELECT agent_id, user_id, activity_filter, finished_at, outcome,
                        CASE WHEN outcome = $12 THEN finished_at END,
                        error, CASE WHEN error IS NOT NULL THEN finished_at END,
                        CASE WHEN outcome = $13 THEN 1 ELSE 0 END,
                        CASE WHEN outcome = $13 AND ($14 OR 1 >= $17)
                             THEN finished_at + make_interval(secs => least($15, $16)) END
                   FROM r
                 ON CONFLICT (agent_id, user_id, activity_filter) DO UPDATE SET
                        last_run_at = EXCLUDED.last_run_at,
                        last_outcome = EXCLUDED.last_outcome,
                        last_success_at = coalesce(EXCLUDED.last_success_at, s.last_success_at),
                        last_error = coalesce(EXCLUDED.last_error, s.last_error),
                        last_error_at = coalesce(EXCLUDED.last_error_at, s.last_error_at),
                        failures_in_row = CASE
                            WHEN EXCLUDED.last_outcome = $13 THEN s.failures_in_row + 1
                            WHEN EXCLUDED.last_outcome = $12 THEN 0
                            ELSE s.failures_in_row END,
                        -- Backoff doubles from failure_backoff with each failure past the
                        -- first that counts (the first for a refused token), up to the cap.
                        next_due_at = CASE
                            WHEN EXCLUDED.last_outcome = $13
                                 AND ($14 OR s.failures_in_row + 1 >= $17)
                            THEN EXCLUDED.last_run_at + make_interval(secs => least(
                                 $15 * power(2, least(greatest(s.failures_in_row + 1
                                     - CASE WHEN $14 THEN 1 ELSE $17 END, 0), 30)),
                                 $16))
                            WHEN EXCLUDED.last_outcome = $12 THEN NULL
                            ELSE s.next_due_at END";

/// How a run ended, for [`PairSession::finish_run`].
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub outcome: RunOutcome,
    pub totals: &'a RunTotals,
    pub mark_after: &'a Mark,
    pub recoveries: &'a [String],
    pub error: Option<&'a str>,
    pub backoff: Backoff,
}

/// How a failing pair backs off, for [`PairSession::finish_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The run failed because the platform refused the token: back off from this failure on.
    pub refused: bool,
    /// Other failures back off once this many runs in a row failed.
    pub after_failures: u32,
    /// The first wait; it doubles with each further failure.
    pub first: std::time::Duration,
    pub max: std::time::Duration,
}

impl Store {
    /// The pairs backing off after failures, with when each is due again.
    pub async fn backing_off(
        &self,
    ) -> Result<Vec<(PairKey, chrono::DateTime<chrono::Utc>)>, StoreError> {
        let rows: Vec<(i64, i64, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT agent_id, user_id, activity_filter, next_due_at FROM sync_state
              WHERE next_due_at > now()",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading which pairs back off"))?;
        Ok(rows
            .into_iter()
            .map(|(a, u, f, due)| (PairKey::new(a, u, Some(f).filter(|f| !f.is_empty())), due))
            .collect())
    }

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
        // One round trip: rows a crashed process left running are closed as it opens its own
        // (the INSERT's row is not in the UPDATE's snapshot).
        let id: i64 = sqlx::query_scalar(
            "WITH stale AS (
                 UPDATE sync_runs SET outcome = $4, finished_at = now(),
                        error = coalesce(error, 'the process ended before the run finished')
                  WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3
                    AND outcome = $5)
             INSERT INTO sync_runs (agent_id, user_id, activity_filter, mark_before, outcome)
             VALUES ($1, $2, $3, $6, $5) RETURNING id",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(RunOutcome::Interrupted.as_str())
        .bind(RunOutcome::Running.as_str())
        .bind(mark_before.settled)
        .fetch_one(&mut *self.conn)
        .await
        .map_err(query_err("opening the run row"))?;
        Ok(RunId(id))
    }

    /// Closes the run's row with what it did. If the session's own connection was lost (the
    /// database restarted mid-run), a fresh one records the real outcome instead of leaving the
    /// row for the next run to close as interrupted.
    pub async fn finish_run(&mut self, run: RunId, end: &RunEnd<'_>) -> Result<(), StoreError> {
        let RunEnd {
            outcome,
            totals,
            mark_after,
            recoveries,
            error,
            backoff,
        } = *end;
        // The run's row, and the pair's last run, success and error on its state row, in one
        // round trip.
        // A run that wrote nothing, met no error, recovery or reject leaves no row: the pair's
        // state row says when it last ran, and sync_passes what each pass did.
        let notable = outcome != RunOutcome::Ok
            || totals.visits_inserted + totals.visits_updated > 0
            || totals.activities_written + totals.rejects > 0
            || !recoveries.is_empty();
        let run_row = if notable {
            "UPDATE sync_runs SET finished_at = now(), outcome = $2, requests = $3,
                    pages = $4, visits_inserted = $5, visits_updated = $6,
                    activities_written = $7, rejects = $8, mark_after = $9,
                    recoveries = $10, error = $11
              WHERE id = $1
          RETURNING agent_id, user_id, activity_filter, outcome, error, finished_at"
        } else {
            "DELETE FROM sync_runs WHERE id = $1
          RETURNING agent_id, user_id, activity_filter, $2::text AS outcome,
                    $11::text AS error, now() AS finished_at"
        };
        let sql = format!("WITH r AS ({run_row}) {SAVE_LAST_RUN}");
        let close = |error: Option<&str>| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
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
                .bind(RunOutcome::Failed.as_str())
                .bind(backoff.refused)
                .bind(backoff.first.as_secs_f64())
                .bind(backoff.max.as_secs_f64())
                .bind(i32::try_from(backoff.after_failures).unwrap_or(i32::MAX))
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
