//! The SQL only the benchmark runs: dropping and creating its database, dropping an index,
//! timing any read, the `COPY` baseline, sums over the runs, passes and leases a workload
//! left, and how long arrivals took to land. The one place outside [`crate::store`] with SQL:
//! none of it is part of the daemon, so the store keeps only what the daemon, `demo` and
//! `status` run.

use anyhow::{Context, Result};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};

use crate::domain::{PairKey, RunOutcome};
use crate::secret::{Secret, redact_url};
use crate::store::Store;
use szb_simulator::Arrival;

/// The bench database: `szb_bench` on the configured server, in `database.schema`.
pub(super) struct BenchDb {
    pub(super) url: Secret,
    pub(super) schema: String,
}

impl BenchDb {
    /// Drops the database if it exists, and creates it empty.
    pub(super) async fn recreate(&self) -> Result<()> {
        let url = self.url.expose();
        let context = || format!("recreating the database at {}", redact_url(url));
        if Postgres::database_exists(url).await.with_context(context)? {
            Postgres::force_drop_database(url)
                .await
                .with_context(context)?;
        }
        Postgres::create_database(url).await.with_context(context)
    }

    /// The store, for what the daemon runs (migrations, the status page's reads), and the
    /// bench's own connection for the rest.
    pub(super) async fn connect(&self) -> Result<(Store, BenchSql)> {
        let store = Store::connect_in(&self.url, &self.schema, 2).await?;
        let options: PgConnectOptions = self
            .url
            .expose()
            .parse()
            .context("the bench database's URL")?;
        let options = options.options([("search_path", format!("\"{}\"", self.schema))]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", redact_url(self.url.expose())))?;
        Ok((store, BenchSql { pool }))
    }
}

/// The bench's connections to its database, for the statements below.
pub(super) struct BenchSql {
    pool: PgPool,
}

/// What the runs after a given run id did, summed: one benchmark step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RunSums {
    pub(super) runs: i64,
    pub(super) failed: i64,
    pub(super) requests: i64,
    pub(super) pages: i64,
    pub(super) visits_inserted: i64,
    pub(super) visits_updated: i64,
    pub(super) activities_written: i64,
}

/// What the passes of one schedule tick did, all replicas together.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TickTotals {
    pub(super) due_by: chrono::DateTime<chrono::Utc>,
    /// Passes for the tick (one per replica), and how many of them finished.
    pub(super) passes: i64,
    pub(super) finished: i64,
    pub(super) pairs: i64,
    pub(super) requests: i64,
    /// The longest of those passes, in seconds.
    pub(super) longest_secs: f64,
}

impl BenchSql {
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// The database's clock.
    pub(super) async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        sqlx::query_scalar(include_str!("sql/now.sql"))
            .fetch_one(&self.pool)
            .await
            .context("reading the database's clock")
    }

    /// The id of the newest run row, 0 without one.
    pub(super) async fn last_run_id(&self) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/last_run_id.sql"))
            .fetch_one(&self.pool)
            .await
            .context("reading the last run id")
    }

    /// The id of the newest pass row, 0 without one.
    pub(super) async fn last_pass_id(&self) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/last_pass_id.sql"))
            .fetch_one(&self.pool)
            .await
            .context("reading the last pass id")
    }

    /// Visits the passes after pass `after` wrote, summed (quiet runs leave no run row, but
    /// every pass has one).
    pub(super) async fn visits_written_since_pass(&self, after: i64) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/visits_written_since_pass.sql"))
            .bind(after)
            .fetch_one(&self.pool)
            .await
            .context("summing passes")
    }

    /// The runs after run `after`, summed.
    pub(super) async fn runs_since(&self, after: i64) -> Result<RunSums> {
        let row = sqlx::query(include_str!("sql/runs_since.sql"))
            .bind(after)
            .bind(RunOutcome::Failed.as_str())
            .fetch_one(&self.pool)
            .await
            .context("summing runs")?;
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
    pub(super) async fn copy_visits_baseline(
        &self,
        without_index: Option<&str>,
    ) -> Result<(u64, std::time::Duration)> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        sqlx::raw_sql(include_str!("sql/create_copy_table.sql"))
            .execute(&mut *conn)
            .await
            .context("creating the COPY baseline table")?;
        if let Some(index) = without_index {
            // The copy's index over the same columns as `index`.
            let copied: Option<String> =
                sqlx::query_scalar(include_str!("sql/find_copied_index.sql"))
                    .bind(index)
                    .fetch_optional(&mut *conn)
                    .await
                    .context("finding the baseline's copy of an index")?;
            if let Some(copied) = copied {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {copied}")))
                    .execute(&mut *conn)
                    .await
                    .context("dropping an index of the COPY baseline")?;
            }
        }
        let mut csv = Vec::new();
        {
            let mut out = conn
                .copy_out_raw("COPY visits TO STDOUT (FORMAT csv)")
                .await
                .context("reading visits out")?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
                csv.extend_from_slice(&chunk.context("reading visits out")?);
            }
        }
        let started = std::time::Instant::now();
        let mut copy = conn
            .copy_in_raw("COPY bench_visits_copy FROM STDIN (FORMAT csv)")
            .await
            .context("starting the COPY baseline")?;
        copy.send(csv).await.context("sending the COPY baseline")?;
        let rows = copy.finish().await.context("finishing the COPY baseline")?;
        let took = started.elapsed();
        sqlx::query(include_str!("sql/drop_copy_table.sql"))
            .execute(&mut *conn)
            .await
            .context("dropping the COPY baseline table")?;
        Ok((rows, took))
    }

    /// Drops an index (the benchmark's "before" of an index a migration added).
    pub(super) async fn drop_index(&self, index: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
            .execute(&self.pool)
            .await
            .context("dropping an index")?;
        Ok(())
    }

    /// Runs a read-only statement (an example of docs/tables.md, a view) `runs` times and returns the
    /// median time and the rows it returned. With `without_index`, that index is dropped
    /// first inside a transaction that is rolled back: the same query, as it ran before the
    /// index existed.
    pub(super) async fn time_read(
        &self,
        sql: &str,
        without_index: Option<&str>,
        runs: usize,
    ) -> Result<(std::time::Duration, usize)> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        if let Some(index) = without_index {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
                .execute(&mut *tx)
                .await
                .context("dropping an index for a timing")?;
        }
        let mut took = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let started = std::time::Instant::now();
            rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut *tx)
                .await
                .context("timing a read")?
                .len();
            took.push(started.elapsed());
        }
        tx.rollback().await.context("rolling back")?;
        took.sort();
        Ok((took[took.len() / 2], rows))
    }

    /// Passes after pass `after` that finished (the bench's listener workload).
    pub(super) async fn passes_finished_since(&self, after: i64) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/passes_finished_since.sql"))
            .bind(after)
            .fetch_one(&self.pool)
            .await
            .context("counting finished passes")
    }

    /// What autovacuum does to `visits` after a large load, done now: the planner's statistics,
    /// and the BRIN index's summaries of the ranges filled since, so that reads are timed as an
    /// analyst meets them a few minutes after a first sync, not in the gap before.
    pub(super) async fn vacuum_analyze_visits(&self) -> Result<()> {
        sqlx::raw_sql(include_str!("sql/vacuum_analyze_visits.sql"))
            .execute(&self.pool)
            .await
            .context("vacuuming visits")?;
        Ok(())
    }

    /// The activity with the most visits, for timing per-activity queries on a busy one.
    pub(super) async fn busiest_activity(&self) -> Result<Option<String>> {
        sqlx::query_scalar(include_str!("sql/busiest_activity.sql"))
            .fetch_optional(&self.pool)
            .await
            .context("finding the busiest activity")
    }

    /// Per tick after `since`, what its passes did.
    pub(super) async fn ticks_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<TickTotals>> {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, i64, i64, i64, i64, f64)> =
            sqlx::query_as(include_str!("sql/ticks_since.sql"))
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .context("summing passes by tick")?;
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
    pub(super) async fn pairs_by_owner(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(include_str!("sql/pairs_by_owner.sql"))
            .fetch_all(&self.pool)
            .await
            .context("summing passes by owner")
    }

    /// For each arrival, in order: seconds from its `visitAt` until its row was first written,
    /// `None` while it has not landed.
    pub(super) async fn arrival_delays(&self, arrivals: &[Arrival]) -> Result<Vec<Option<f64>>> {
        sqlx::query_scalar(include_str!("sql/arrival_delays.sql"))
            .bind(arrivals.iter().map(|a| a.agent).collect::<Vec<_>>())
            .bind(arrivals.iter().map(|a| a.user).collect::<Vec<_>>())
            .bind(
                arrivals
                    .iter()
                    .map(|a| a.activity_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(arrivals.iter().map(|a| a.visit_at).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await
            .context("joining the arrivals with visits")
    }

    /// Pairs whose latest run ended ok after `since`.
    pub(super) async fn pairs_ok_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/pairs_ok_since.sql"))
            .bind(RunOutcome::Ok.as_str())
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .context("counting pairs synced")
    }

    /// The owner holding the most leases right now, with how many it holds.
    pub(super) async fn busiest_lease_owner(&self) -> Result<Option<(String, i64)>> {
        sqlx::query_as(include_str!("sql/busiest_lease_owner.sql"))
            .fetch_optional(&self.pool)
            .await
            .context("reading lease owners")
    }

    /// Pairs leased by `owner` right now.
    pub(super) async fn leased_by(&self, owner: &str) -> Result<Vec<PairKey>> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(include_str!("sql/leased_by.sql"))
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .context("reading leases")?;
        Ok(rows
            .into_iter()
            .map(|(a, u, f)| PairKey::new(a, u, Some(f).filter(|f| !f.is_empty())))
            .collect())
    }

    /// How many of `pairs` ended a run ok after `since` and are leased by nobody.
    pub(super) async fn count_synced_since(
        &self,
        pairs: &[PairKey],
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64> {
        sqlx::query_scalar(include_str!("sql/count_synced_since.sql"))
            .bind(pairs.iter().map(|p| p.agent_id).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.user_id).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.filter_str()).collect::<Vec<_>>())
            .bind(RunOutcome::Ok.as_str())
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .context("counting pairs synced")
    }
}
