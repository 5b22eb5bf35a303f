//! Reads for the demo: the sample query, row counts, and forgetting the demo's own agents.
//! (The benchmark's SQL is its own, in `crate::bench`.)

use sqlx::Row;

use super::{Store, StoreError, query_err};

/// The query `szb-sync demo` prints and runs: viewers and minutes watched per activity.
/// Grouped by the activity's id: different activities often share a name.
pub const SAMPLE_QUERY: &str = "SELECT a.id AS activity_id, a.name AS activity,
       count(DISTINCT v.user_id) AS viewers, count(*) AS visits,
       sum(v.duration_minutes) AS minutes_watched
  FROM visits v JOIN activities a ON a.id = v.activity_id
 WHERE v.agent_id = ANY($1)
 GROUP BY a.id
 ORDER BY minutes_watched DESC, a.id
 LIMIT 5";

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
        sqlx::query("LOCK TABLE activities IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(query_err("forgetting demo agents"))?;
        for sql in [
            "DELETE FROM visits WHERE agent_id = ANY($1)",
            "DELETE FROM sync_state WHERE agent_id = ANY($1)",
            "DELETE FROM sync_runs WHERE agent_id = ANY($1)",
            "DELETE FROM sync_rejects WHERE agent_id = ANY($1)",
            "DELETE FROM activities a WHERE a.agent_id = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM visits v WHERE v.activity_id = a.id)",
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
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM visits WHERE agent_id = ANY($1)) AS visits,
                    (SELECT count(DISTINCT activity_id) FROM visits WHERE agent_id = ANY($1)) AS activities",
        )
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
