//! Reads for the status page and the metrics: one query per view, never one per pair, so a page
//! over 100,000 pairs costs what a page over ten does. The configured pairs are passed as three
//! arrays and joined to `sync_state`, so pairs that never ran are counted too.
//!
//! The listener reads through a pool of its own ([`Store::for_listener`]): read only, two
//! connections, every statement cut at [`LISTENER_STATEMENT_TIMEOUT`]. No read here scans
//! `visits`: its totals are the planner's estimate and a sample once the table is large
//! ([`Store::totals`]), so a page load costs the same at 10,000 visits and at 100 million.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;

use super::pair_keys::PairKeys;
use super::{Store, StoreError, query_err};
use crate::domain::PairKey;

/// Connections of the listener's pool: page loads queue for these, never for the sync's.
pub const LISTENER_CONNECTIONS: u32 = 2;
/// The longest a statement of the listener runs before Postgres cancels it.
pub const LISTENER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a read of the listener waits for one of its connections: less than `/readyz`
/// waits, so it says why rather than that it timed out.
const LISTENER_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Up to this many visits, the totals are counted exactly (a scan of at most this many rows);
/// above it they are estimates.
pub const EXACT_TOTALS_UP_TO: i64 = 10_000;
/// Visits the estimate of the minutes averages over (a block sample of about this many rows).
const MINUTES_SAMPLE_ROWS: f64 = 5_000.0;

/// `szb_pairs` and `szb_oldest_pair_sync_age_seconds`: the configured pairs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairCounts {
    pub ok: i64,
    pub failing: i64,
    pub never_synced: i64,
    /// Seconds since the least recently synced pair last synced well.
    pub oldest_sync_age_seconds: Option<f64>,
}

/// Which pairs a page of pairs lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairQuery {
    /// Only pairs that need a look: failing, never synced, or not synced well for `lag_after`.
    pub attention: bool,
    /// Only pairs due between the ticks (never synced, hot, open or changed), soonest first.
    pub hot: bool,
    pub lag_after: std::time::Duration,
    pub agent_id: Option<i64>,
    pub user_id: Option<i64>,
    pub offset: i64,
    pub limit: i64,
}

/// One pair on the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    pub pair: PairKey,
    /// `failing`, `never_synced`, `lagging` or `ok`.
    pub state: &'static str,
    pub settled: Option<i64>,
    pub upstream_total: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub failures_in_row: i32,
    pub next_due_at: Option<DateTime<Utc>>,
    /// Why it is due then: new, sweep, hot, open, changed or backoff.
    pub due_reason: Option<String>,
    pub lease_owner: Option<String>,
}

/// A page of pairs, and how many match in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairPage {
    pub matching: i64,
    pub rows: Vec<PairRow>,
}

/// The totals of the tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub visits: i64,
    pub activities: i64,
    pub rejects: i64,
    /// Users with visits; when estimated, the users whose pairs have synced visits.
    pub viewers: i64,
    /// Minutes watched; when estimated, the visits times the mean of a sample.
    pub minutes: i64,
    /// False when `visits`, `viewers` and `minutes` are counted; true when the table holds more
    /// than [`EXACT_TOTALS_UP_TO`] visits and they are estimates.
    pub estimated: bool,
}

/// One row of `sync_passes`.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRow {
    pub id: i64,
    pub owner: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub pairs: i64,
    pub requests: i64,
    pub visits_written: i64,
    pub failures: i64,
}

impl StoreError {
    /// True when Postgres refused the session: its credentials or its rights (28…), or no
    /// such database (3D000).
    pub fn is_refused(&self) -> bool {
        let error = match self {
            StoreError::Connect { error, .. } | StoreError::Query { error, .. } => error,
            _ => return false,
        };
        matches!(error, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("28") || c == "3D000"))
    }

    /// True when Postgres cancelled the statement at its `statement_timeout`.
    pub fn is_statement_timeout(&self) -> bool {
        matches!(
            self,
            StoreError::Query {
                error: sqlx::Error::Database(db),
                ..
            } if db.code().as_deref() == Some("57014")
        )
    }
}

impl Store {
    /// The configured pairs by state, in one query.
    pub async fn pair_counts(&self, pairs: &[PairKey]) -> Result<PairCounts, StoreError> {
        let row = PairKeys::of(pairs)
            .bind(sqlx::query(include_str!("sql/pair_counts.sql")))
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("counting pairs by state"))?;
        Ok(PairCounts {
            ok: row.get("ok"),
            failing: row.get("failing"),
            never_synced: row.get("never_synced"),
            oldest_sync_age_seconds: row.get("oldest"),
        })
    }

    /// One page of the configured pairs, those that need a look first (failing, then never
    /// synced, then by the oldest success), in one query.
    pub async fn pair_page(
        &self,
        pairs: &[PairKey],
        query: &PairQuery,
    ) -> Result<PairPage, StoreError> {
        let lag = i64::try_from(query.lag_after.as_secs()).unwrap_or(i64::MAX);
        let rows = PairKeys::of(pairs)
            .bind(sqlx::query(include_str!("sql/pair_page.sql")))
            .bind(lag as f64)
            .bind(query.agent_id)
            .bind(query.user_id)
            .bind(query.attention)
            .bind(query.offset.max(0))
            .bind(query.limit.clamp(1, 500))
            .bind(query.hot)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading a page of pairs"))?;
        let matching = rows.first().map_or(0, |r| r.get("matching"));
        let rows = rows
            .into_iter()
            .filter(|row| row.get::<Option<i64>, _>("agent_id").is_some())
            .map(|row| PairRow {
                pair: super::key_of(&row),
                state: match row.get::<i32, _>("rank") {
                    0 => "failing",
                    1 => "never_synced",
                    2 => "lagging",
                    _ => "ok",
                },
                settled: row.get("settled_count"),
                upstream_total: row.get("upstream_total"),
                last_outcome: row.get("last_outcome"),
                last_run_at: row.get("last_run_at"),
                last_success_at: row.get("last_success_at"),
                last_error: row.get("last_error"),
                failures_in_row: row.get("failures_in_row"),
                next_due_at: row.get("next_due_at"),
                due_reason: row.get("due_reason"),
                lease_owner: row.get("lease_owner"),
            })
            .collect();
        Ok(PairPage { matching, rows })
    }

    /// The listener's store: the same database and schema through a pool of its own, of
    /// [`LISTENER_CONNECTIONS`] read-only connections whose statements end at
    /// [`LISTENER_STATEMENT_TIMEOUT`], so a page load neither waits on the sync's connections
    /// nor holds one, and a slow read is cut rather than piling up. Connects lazily.
    pub fn for_listener(&self) -> Store {
        let options = (*self.options)
            .clone()
            .application_name("szb-sync listener")
            .options([
                ("default_transaction_read_only", "on".to_owned()),
                (
                    "statement_timeout",
                    format!("{}ms", LISTENER_STATEMENT_TIMEOUT.as_millis()),
                ),
                ("lock_timeout", "1s".to_owned()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(LISTENER_CONNECTIONS)
            .acquire_timeout(LISTENER_ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        Store {
            pool,
            options: std::sync::Arc::new(options),
            url: self.url.clone(),
            schema: self.schema.clone(),
            deadline: super::Deadline::new(LISTENER_STATEMENT_TIMEOUT),
        }
    }

    /// The user, host and database name this store connects with, defaults included (a URL
    /// without a user connects as `PGUSER` or the OS user): what the listener keeps out of the
    /// text it shows.
    pub fn names(&self) -> Vec<String> {
        let o = &self.options;
        let mut names = vec![o.get_username().to_owned(), o.get_host().to_owned()];
        names.extend(o.get_database().map(str::to_owned));
        names
    }

    /// The database answers a statement through the pool (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(include_str!("sql/ping.sql"))
            .execute(&self.pool)
            .await
            .map_err(query_err("asking the database whether it answers"))?;
        Ok(())
    }

    /// The tables' totals, at a cost that does not grow with `visits`. The planner's estimate
    /// of the rows of `visits` decides: up to [`EXACT_TOTALS_UP_TO`], a scan of at most that
    /// many rows counts them exactly; above it, the visits are the planner's estimate (kept by
    /// autovacuum's ANALYZE, scaled to the table's size now), the minutes that times the mean
    /// of a block sample, and the viewers the users whose pairs have synced visits
    /// (`sync_state`, a row per pair).
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let plan: serde_json::Value = sqlx::query_scalar(include_str!("sql/plan_visits.sql"))
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("estimating the visits"))?;
        let planned = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0);
        let small = sqlx::query(include_str!("sql/count_totals.sql"))
            .bind(planned <= EXACT_TOTALS_UP_TO as f64)
            .bind(EXACT_TOTALS_UP_TO + 1)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading the totals"))?;
        let counted: i64 = small.get("visits");
        let (activities, rejects) = (small.get("activities"), small.get("rejects"));
        if planned <= EXACT_TOTALS_UP_TO as f64 && counted <= EXACT_TOTALS_UP_TO {
            return Ok(Totals {
                visits: counted,
                viewers: small.get("viewers"),
                minutes: small.get("minutes"),
                activities,
                rejects,
                estimated: false,
            });
        }
        let visits = planned.max(counted as f64);
        let percent = (100.0 * MINUTES_SAMPLE_ROWS / visits).clamp(0.001, 100.0);
        let row = sqlx::query(include_str!("sql/estimate_totals.sql"))
            .bind(percent as f32)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("estimating the totals"))?;
        let mean: Option<f64> = row.get("mean_minutes");
        Ok(Totals {
            visits: visits.round() as i64,
            viewers: row.get("viewers"),
            minutes: (visits * mean.unwrap_or(0.0)).round() as i64,
            activities,
            rejects,
            estimated: true,
        })
    }

    /// The newest `limit` passes, of every process.
    pub async fn recent_passes(&self, limit: i64) -> Result<Vec<PassRow>, StoreError> {
        let rows = sqlx::query(include_str!("sql/recent_passes.sql"))
            .bind(limit.clamp(1, 100))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading the recent passes"))?;
        Ok(rows
            .into_iter()
            .map(|row| PassRow {
                id: row.get("id"),
                owner: row.get("owner"),
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                outcome: row.get("outcome"),
                pairs: row.get("pairs"),
                requests: row.get("requests"),
                visits_written: row.get("visits_written"),
                failures: row.get("failures"),
            })
            .collect())
    }
}
