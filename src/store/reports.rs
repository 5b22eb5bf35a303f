//! Reads for the demo and the benchmark: the sample query, row counts, forgetting the demo's
//! own agents, run sums and the `COPY` baseline.

use sqlx::migrate::MigrateDatabase;
use sqlx::{Postgres, Row};

use super::{Store, StoreError, query_err};
use crate::domain::RunOutcome;
use crate::secret::{Secret, redact_url};

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

/// What the runs after a given run id did, summed: one benchmark step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSums {
    pub runs: i64,
    pub failed: i64,
    pub requests: i64,
    pub pages: i64,
    pub visits_inserted: i64,
    pub visits_updated: i64,
    pub activities_written: i64,
}

impl Store {
    /// Drops the database named in `url` if it exists, and creates it empty.
    pub async fn recreate_database(url: &Secret) -> Result<(), StoreError> {
        let err = |error| StoreError::Create {
            url: redact_url(url.expose()),
            error,
        };
        if Postgres::database_exists(url.expose()).await.map_err(err)? {
            Postgres::force_drop_database(url.expose())
                .await
                .map_err(err)?;
        }
        Postgres::create_database(url.expose()).await.map_err(err)
    }

    /// The id of the newest run row, 0 without one.
    pub async fn last_run_id(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM sync_runs")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading the last run id"))
    }

    /// The runs after run `after`, summed.
    pub async fn runs_since(&self, after: i64) -> Result<RunSums, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS runs, count(*) FILTER (WHERE outcome = $2) AS failed,
                    coalesce(sum(requests), 0)::int8 AS requests,
                    coalesce(sum(pages), 0)::int8 AS pages,
                    coalesce(sum(visits_inserted), 0)::int8 AS visits_inserted,
                    coalesce(sum(visits_updated), 0)::int8 AS visits_updated,
                    coalesce(sum(activities_written), 0)::int8 AS activities_written
               FROM sync_runs WHERE id > $1",
        )
        .bind(after)
        .bind(RunOutcome::Failed.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("summing runs"))?;
        Ok(RunSums {
            runs: row.get("runs"),
            failed: row.get("failed"),
            requests: row.get("requests"),
            pages: row.get("pages"),
            visits_inserted: row.get("visits_inserted"),
            visits_updated: row.get("visits_updated"),
            activities_written: row.get("activities_written"),
        })
    }

    /// The benchmark's baseline: `COPY` of every stored visit into a fresh table shaped like
    /// `visits` (keys, indexes and constraints included, but for the copy of `without_index`,
    /// an index of `visits`). Returns the rows copied and how long the `COPY … FROM STDIN`
    /// took; reading the rows out first is not timed.
    pub async fn copy_visits_baseline(
        &self,
        without_index: Option<&str>,
    ) -> Result<(u64, std::time::Duration), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("acquiring a connection"))?;
        sqlx::raw_sql(
            "DROP TABLE IF EXISTS bench_visits_copy;
             CREATE TABLE bench_visits_copy (LIKE visits INCLUDING ALL);",
        )
        .execute(&mut *conn)
        .await
        .map_err(query_err("creating the COPY baseline table"))?;
        if let Some(index) = without_index {
            // The copy's index over the same columns as `index`.
            let copied: Option<String> = sqlx::query_scalar(
                "SELECT c.indexrelid::regclass::text FROM pg_index c, pg_index o
                  WHERE c.indrelid = 'bench_visits_copy'::regclass
                    AND o.indexrelid = to_regclass($1)
                    AND c.indkey::text = o.indkey::text AND c.indexprs IS NULL",
            )
            .bind(index)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query_err("finding the baseline's copy of an index"))?;
            if let Some(copied) = copied {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {copied}")))
                    .execute(&mut *conn)
                    .await
                    .map_err(query_err("dropping an index of the COPY baseline"))?;
            }
        }
        let mut csv = Vec::new();
        {
            let mut out = conn
                .copy_out_raw("COPY visits TO STDOUT (FORMAT csv)")
                .await
                .map_err(query_err("reading visits out"))?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
                csv.extend_from_slice(&chunk.map_err(query_err("reading visits out"))?);
            }
        }
        let started = std::time::Instant::now();
        let mut copy = conn
            .copy_in_raw("COPY bench_visits_copy FROM STDIN (FORMAT csv)")
            .await
            .map_err(query_err("starting the COPY baseline"))?;
        copy.send(csv)
            .await
            .map_err(query_err("sending the COPY baseline"))?;
        let rows = copy
            .finish()
            .await
            .map_err(query_err("finishing the COPY baseline"))?;
        let took = started.elapsed();
        sqlx::query("DROP TABLE bench_visits_copy")
            .execute(&mut *conn)
            .await
            .map_err(query_err("dropping the COPY baseline table"))?;
        Ok((rows, took))
    }

    /// Drops an index (the benchmark's "before" of an index a migration added).
    pub async fn drop_index(&self, index: &str) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
            .execute(&self.pool)
            .await
            .map_err(query_err("dropping an index"))?;
        Ok(())
    }

    /// Runs a read-only statement (a README example, a view) `runs` times and returns the
    /// median time and the rows it returned. With `without_index`, that index is dropped
    /// first inside a transaction that is rolled back: the same query, as it ran before the
    /// index existed.
    pub async fn time_read(
        &self,
        sql: &str,
        without_index: Option<&str>,
        runs: usize,
    ) -> Result<(std::time::Duration, usize), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting a transaction"))?;
        if let Some(index) = without_index {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
                .execute(&mut *tx)
                .await
                .map_err(query_err("dropping an index for a timing"))?;
        }
        let mut took = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let started = std::time::Instant::now();
            rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("timing a read"))?
                .len();
            took.push(started.elapsed());
        }
        tx.rollback().await.map_err(query_err("rolling back"))?;
        took.sort();
        Ok((took[took.len() / 2], rows))
    }

    /// Passes after pass `after` that finished (the bench's listener workload).
    pub async fn passes_finished_since(&self, after: i64) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM sync_passes WHERE id > $1 AND finished_at IS NOT NULL",
        )
        .bind(after)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("counting finished passes"))
    }

    /// What autovacuum does to `visits` after a large load, done now: the planner's statistics,
    /// and the BRIN index's summaries of the ranges filled since, so that reads are timed as an
    /// analyst meets them a few minutes after a first sync, not in the gap before.
    pub async fn vacuum_analyze_visits(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("VACUUM (ANALYZE) visits")
            .execute(&self.pool)
            .await
            .map_err(query_err("vacuuming visits"))?;
        Ok(())
    }

    /// The activity with the most visits, for timing per-activity queries on a busy one.
    pub async fn busiest_activity(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT activity_id FROM visits GROUP BY activity_id ORDER BY count(*) DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("finding the busiest activity"))
    }
}

/// The SQL statements of a Markdown text's ```sql blocks, each with the comment lines before it
/// (the README's examples: the benchmark times them, a test runs them). A statement ends at a
/// line ending in `;`.
pub fn sql_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sql" {
            continue;
        }
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            current.push_str(line);
            current.push('\n');
            if line.trim_end().ends_with(';') {
                statements.push(std::mem::take(&mut current));
            }
        }
        if !current.trim().is_empty() {
            statements.push(current);
        }
        blocks.push(statements);
    }
    blocks
}

/// What the passes of one schedule tick did, all replicas together.
#[derive(Debug, Clone, PartialEq)]
pub struct TickTotals {
    pub due_by: chrono::DateTime<chrono::Utc>,
    /// Passes for the tick (one per replica), and how many of them finished.
    pub passes: i64,
    pub finished: i64,
    pub pairs: i64,
    pub requests: i64,
    /// The longest of those passes, in seconds.
    pub longest_secs: f64,
}

impl Store {
    /// Per tick after `since`, what its passes did.
    pub async fn ticks_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<TickTotals>, StoreError> {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, i64, i64, i64, i64, f64)> = sqlx::query_as(
            "SELECT due_by, count(*), count(finished_at), sum(pairs)::int8, sum(requests)::int8,
                    coalesce(max(extract(epoch FROM finished_at - started_at)), 0)::float8
               FROM sync_passes WHERE due_by > $1 GROUP BY due_by ORDER BY due_by",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("summing passes by tick"))?;
        Ok(rows
            .into_iter()
            .map(
                |(due_by, passes, finished, pairs, requests, longest_secs)| TickTotals {
                    due_by,
                    passes,
                    finished,
                    pairs,
                    requests,
                    longest_secs,
                },
            )
            .collect())
    }

    /// Pair runs per owner over every pass, for how evenly replicas share the work.
    pub async fn pairs_by_owner(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT coalesce(owner, ''), sum(pairs)::int8 FROM sync_passes
              GROUP BY owner ORDER BY owner",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("summing passes by owner"))
    }

    /// Pairs whose latest run ended ok after `since`.
    pub async fn pairs_ok_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM sync_state
              WHERE last_outcome = $1 AND last_run_at > $2 AND lease_owner IS NULL",
        )
        .bind(RunOutcome::Ok.as_str())
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("counting pairs synced"))
    }

    /// The owner holding the most leases right now, with how many it holds.
    pub async fn busiest_lease_owner(&self) -> Result<Option<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT lease_owner, count(*) FROM sync_state WHERE lease_owner IS NOT NULL
              GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading lease owners"))
    }

    /// Pairs leased by `owner` right now.
    pub async fn leased_by(&self, owner: &str) -> Result<Vec<crate::domain::PairKey>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT agent_id, user_id, activity_filter FROM sync_state WHERE lease_owner = $1",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading leases"))?;
        Ok(rows
            .into_iter()
            .map(|(a, u, f)| crate::domain::PairKey::new(a, u, Some(f).filter(|f| !f.is_empty())))
            .collect())
    }

    /// How many of `pairs` ended a run ok after `since` and are leased by nobody.
    pub async fn count_synced_since(
        &self,
        pairs: &[crate::domain::PairKey],
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM UNNEST($1::int8[], $2::int8[], $3::text[])
                    AS p (agent_id, user_id, activity_filter)
               JOIN sync_state s USING (agent_id, user_id, activity_filter)
              WHERE s.last_outcome = $4 AND s.last_run_at > $5 AND s.lease_owner IS NULL",
        )
        .bind(pairs.iter().map(|p| p.agent_id).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.user_id).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.filter_str()).collect::<Vec<_>>())
        .bind(RunOutcome::Ok.as_str())
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("counting pairs synced"))
    }
}
