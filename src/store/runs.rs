//! What a run of a pair counts, how a failing pair backs off, and the runs that never started.
//! Finished runs are recorded in batches by the coordinator (`leases.rs`).

use super::pair_keys::PairKeys;
use super::{Store, StoreError, query_err};
use crate::domain::{PairKey, RunOutcome};

/// What a run did, written to its row when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub requests: u32,
    pub pages: u32,
    pub visits_inserted: u64,
    pub visits_updated: u64,
    pub activities_written: u64,
    pub rejects: u64,
    /// Strings (and numbers) repaired in the pages written so they could be stored.
    pub strings_cleaned: u64,
}

impl RunTotals {
    /// The same counts, as the telemetry feed carries them.
    pub fn counts(&self) -> crate::telemetry::events::Counts {
        crate::telemetry::events::Counts {
            requests: u64::from(self.requests),
            pages: u64::from(self.pages),
            visits_inserted: self.visits_inserted,
            visits_updated: self.visits_updated,
            activities_written: self.activities_written,
            rejects: self.rejects,
            strings_cleaned: self.strings_cleaned,
        }
    }

    pub fn add(&mut self, other: &RunTotals) {
        self.requests += other.requests;
        self.pages += other.pages;
        self.visits_inserted += other.visits_inserted;
        self.visits_updated += other.visits_updated;
        self.activities_written += other.activities_written;
        self.rejects += other.rejects;
        self.strings_cleaned += other.strings_cleaned;
    }
}

/// How a failing pair backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures other than a refused token back off once this many runs in a row failed (a
    /// refused token backs off at once).
    pub after_failures: u32,
    /// The first wait; it doubles with each further failure.
    pub first: std::time::Duration,
    pub max: std::time::Duration,
}

impl Store {
    /// Records runs that did not start because another process holds the pair, one row each,
    /// in one statement.
    pub async fn record_skipped_runs(
        &self,
        pairs: &[PairKey],
        reason: &str,
    ) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let insert = PairKeys::of(pairs)
            .bind(sqlx::query(include_str!("sql/record_skipped_runs.sql")))
            .bind(RunOutcome::Skipped.as_str())
            .bind(reason)
            .execute(&self.pool);
        let recorded = async { insert.await.map_err(query_err("recording skipped runs")) };
        self.deadline
            .within("recording skipped runs", recorded)
            .await?;
        Ok(())
    }
}

pub(super) fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
