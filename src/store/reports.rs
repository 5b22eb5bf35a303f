//! Reads for the demo: the sample query, row counts, and forgetting the demo's own agents.
//! (The benchmark's SQL is its own, in `crate::bench`.)

use sqlx::Row;

use super::{Store, StoreError, query_err};

/// The query `szb-sync demo` prints and runs: viewers and minutes watched per activity.
/// Grouped by the activity's id: different activities often share a name.
pub const SAMPLE_QUERY: &str =
    super::statements::without_header(include_str!("sql/sample_query.sql"));

/// One row of [`SAMPLE_QUERY`].
#[derive(Debug, Clone)]
pub struct SampleRow {
    pub activity_id: String,
    pub activity: Option<String>,
    pub viewers: i64,
    pub visits: i64,
    pub minutes_watched: i64,
}

impl Store {
    /// Deletes everything szb-sync stored for these agents (the demo's own simulated agents).
    pub async fn forget_agents(&self, agent_ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a transaction"))?;
        // A sync writing meanwhile must not insert a visit of an activity deleted here: visits
        // have no foreign key, so the writer's activity rows are the only guard.
        sqlx::query(include_str!("sql/forget_agents_lock.sql"))
            .execute(&mut *tx)
            .await
            .map_err(query_err("forgetting demo agents"))?;
        for sql in [
            include_str!("sql/forget_agents_visits.sql"),
            include_str!("sql/forget_agents_sync_state.sql"),
            include_str!("sql/forget_agents_sync_runs.sql"),
            include_str!("sql/forget_agents_sync_rejects.sql"),
            include_str!("sql/forget_agents_activities.sql"),
        ] {
            sqlx::query(sql)
                .bind(agent_ids)
                .execute(&mut *tx)
                .await
                .map_err(query_err("forgetting demo agents"))?;
        }
        tx.commit().await.map_err(query_err("committing"))?;
        Ok(())
    }

    /// Row counts of the visits and activities of these agents.
    pub async fn count_for_agents(&self, agent_ids: &[i64]) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(include_str!("sql/count_for_agents.sql"))
            .bind(agent_ids)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("counting rows"))?;
        Ok((row.get("visits"), row.get("activities")))
    }

    /// Runs [`SAMPLE_QUERY`].
    pub async fn sample_query(&self, agent_ids: &[i64]) -> Result<Vec<SampleRow>, StoreError> {
        let rows = sqlx::query(SAMPLE_QUERY)
            .bind(agent_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("running the sample query"))?;
        Ok(rows
            .iter()
            .map(|r| SampleRow {
                activity_id: r.get("activity_id"),
                activity: r.get("activity"),
                viewers: r.get("viewers"),
                visits: r.get("visits"),
                minutes_watched: r.get("minutes_watched"),
            })
            .collect())
    }
}
