//! The `sync_passes` rows, one per pass over every pair, and pruning old history.

use std::time::Duration;

use super::{Store, StoreError, query_err};
use crate::domain::RunOutcome;

/// Rows deleted per statement when pruning, so a large backlog never holds long locks.
const PRUNE_BATCH: i64 = 5_000;

/// What a pass did, for its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassTotals {
    pub pairs: u64,
    pub requests: u64,
    pub visits_written: u64,
    pub failures: u64,
    /// [`RunOutcome::Ok`], [`RunOutcome::Failed`] (some pair failed) or
    /// [`RunOutcome::Interrupted`].
    pub outcome: RunOutcome,
}

impl Store {
    /// Opens the row of a pass by `owner` for the pairs due by `due_by` (all: `None`); returns
    /// its id and when it started (the database's clock).
    pub async fn start_pass(
        &self,
        owner: &str,
        due_by: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(i64, chrono::DateTime<chrono::Utc>), StoreError> {
        let opened = sqlx::query_as(include_str!("sql/start_pass.sql"))
            .bind(RunOutcome::Running.as_str())
            .bind(owner)
            .bind(due_by)
            .fetch_one(&self.pool);
        let opened = async { opened.await.map_err(query_err("opening the pass row")) };
        self.deadline.within("opening the pass row", opened).await
    }

    /// Closes a pass's row with what it did.
    pub async fn finish_pass(&self, id: i64, totals: &PassTotals) -> Result<(), StoreError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let closed = sqlx::query(include_str!("sql/finish_pass.sql"))
            .bind(id)
            .bind(i32::try_from(totals.pairs).unwrap_or(i32::MAX))
            .bind(n(totals.requests))
            .bind(n(totals.visits_written))
            .bind(i32::try_from(totals.failures).unwrap_or(i32::MAX))
            .bind(totals.outcome.as_str())
            .execute(&self.pool);
        let closed = async { closed.await.map_err(query_err("closing the pass row")) };
        self.deadline.within("closing the pass row", closed).await?;
        Ok(())
    }

    /// Deletes finished `sync_runs` and `sync_passes` rows that started more than `keep` ago, and
    /// `sync_rejects` rows last read more than `keep` ago, in small batches; a run or pass still
    /// going is never pruned. Returns how many rows went.
    pub async fn prune_history(&self, keep: Duration) -> Result<u64, StoreError> {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = chrono::Utc::now().checked_sub_signed(keep) else {
            return Ok(0);
        };
        let mut pruned = 0;
        let prunes = [
            include_str!("sql/prune_sync_runs.sql"),
            include_str!("sql/prune_sync_passes.sql"),
            include_str!("sql/prune_sync_rejects.sql"),
        ];
        for prune in prunes {
            loop {
                let delete = sqlx::query(prune)
                    .bind(cutoff)
                    .bind(PRUNE_BATCH)
                    .execute(&self.pool);
                let delete = async { delete.await.map_err(query_err("pruning old history")) };
                let deleted = self
                    .deadline
                    .within("pruning old history", delete)
                    .await?
                    .rows_affected();
                pruned += deleted;
                if deleted < PRUNE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}
