//! Postgres: migrations, per-pair locks, one transaction per page, marks, runs and rejects.
//!
//! All SQL of the crate lives here. Each page is written with one statement per table
//! (`INSERT … SELECT … FROM UNNEST(…)`), and upserts only touch rows whose values differ, so an
//! unchanged re-read writes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Row};

use crate::domain::{Activity, Entry, PairKey, Reject, Visit};
use crate::mark::{Anchor, Mark};
use crate::secret::{Secret, redact_url};

/// Migrations embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to Postgres at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create database at {url}: {source}")]
    Create {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored mark of {pair} is inconsistent: {detail}")]
    BadMark { pair: String, detail: String },
}

impl StoreError {
    /// True when Postgres aborted the transaction to break a deadlock or a serialization
    /// conflict: nothing was written, and trying again is right.
    pub fn is_deadlock(&self) -> bool {
        match self {
            StoreError::Query {
                source: sqlx::Error::Database(db),
                ..
            } => matches!(db.code().as_deref(), Some("40P01" | "40001")),
            _ => false,
        }
    }

    /// True when the database itself is away (restart, network), as opposed to a bad query.
    pub fn is_connection(&self) -> bool {
        let source = match self {
            StoreError::Connect { .. } => return true,
            StoreError::Query { source, .. } => source,
            _ => return false,
        };
        matches!(
            source,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
        )
    }
}

fn query_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// For a direct connection that tells why the pool cannot connect (it only says it timed
    /// out). Holds the password: never printed.
    options: std::sync::Arc<PgConnectOptions>,
    /// The URL with its password masked, for messages.
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects lazily: the first query opens the first connection, so a database that is
    /// briefly away at start-up does not stop the daemon.
    pub fn connect_lazy(url: &Secret, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions =
            url.expose().parse().map_err(|source| StoreError::Connect {
                url: redact_url(url.expose()),
                source,
            })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        Ok(Store {
            pool,
            options: std::sync::Arc::new(options),
            url: redact_url(url.expose()),
        })
    }

    /// Connects and checks the database answers.
    pub async fn connect(url: &Secret, max_connections: u32) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url, max_connections)?;
        store.reachable().await?;
        Ok(store)
    }

    /// Opens one connection outside the pool: its error says why (refused, unknown host, bad
    /// password, no such database), where the pool would only say it timed out.
    pub async fn reachable(&self) -> Result<(), StoreError> {
        let conn = sqlx::PgConnection::connect_with(&self.options)
            .await
            .map_err(|source| StoreError::Connect {
                url: self.url.clone(),
                source,
            })?;
        let _ = conn.close().await;
        Ok(())
    }

    /// The pool could not hand out a connection: ask the database directly why.
    async fn explain(&self, context: &'static str, source: sqlx::Error) -> StoreError {
        if matches!(source, sqlx::Error::PoolTimedOut)
            && let Err(e) = self.reachable().await
        {
            return e;
        }
        StoreError::Query { context, source }
    }

    /// Creates the database named in `url` when it does not exist yet.
    pub async fn create_database_if_missing(url: &Secret) -> Result<bool, StoreError> {
        let err = |source| StoreError::Create {
            url: redact_url(url.expose()),
            source,
        };
        if Postgres::database_exists(url.expose()).await.map_err(err)? {
            return Ok(false);
        }
        match Postgres::create_database(url.expose()).await {
            Ok(()) => Ok(true),
            // Lost a race with another process creating it.
            Err(e)
                if Postgres::database_exists(url.expose())
                    .await
                    .unwrap_or(false) =>
            {
                tracing::debug!(error = %e, "database appeared meanwhile");
                Ok(false)
            }
            Err(e) => Err(err(e)),
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Fails fast, with the reason, when the database is away.
        self.reachable().await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Takes the pair's advisory lock on a connection of its own, so two processes never walk
    /// one pair at once. `None` when another session holds it. The connection closes when the
    /// session is dropped, which releases the lock even on a panic or an error path.
    pub async fn lock_pair(&self, pair: &PairKey) -> Result<Option<PairSession>, StoreError> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return Err(self.explain("acquiring a connection", e).await),
        };
        conn.close_on_drop();
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(lock_key(pair))
                .fetch_one(&mut *conn)
                .await
                .map_err(query_err("taking the pair's advisory lock"))?;
        if !locked {
            return Ok(None);
        }
        Ok(Some(PairSession {
            conn,
            pool: self.pool.clone(),
            pair: pair.clone(),
        }))
    }

    /// Records a run that did not start because another process holds the pair.
    pub async fn record_skipped_run(&self, pair: &PairKey, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sync_runs (agent_id, user_id, activity_filter, finished_at, outcome, error)
             VALUES ($1, $2, $3, now(), 'skipped', $4)",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a skipped run"))?;
        Ok(())
    }

    /// What `szb-sync status` shows for each pair.
    pub async fn status(&self, pairs: &[PairKey]) -> Result<Vec<PairStatus>, StoreError> {
        let mut out = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let row = sqlx::query(
                "SELECT s.settled_count, s.upstream_total, s.mark_moved_at,
                        r.outcome, r.started_at, r.finished_at, r.error,
                        (SELECT max(finished_at) FROM sync_runs o
                          WHERE o.agent_id = $1 AND o.user_id = $2 AND o.activity_filter = $3
                            AND o.outcome = 'ok') AS last_ok_at,
                        (SELECT count(*) FROM visits v WHERE v.agent_id = $1 AND v.user_id = $2
                            AND ($3 = '' OR v.activity_id = $3)) AS visits,
                        (SELECT count(*) FROM sync_rejects j
                          WHERE j.agent_id = $1 AND j.user_id = $2 AND j.activity_filter = $3) AS rejects
                   FROM (SELECT 1) one
                   LEFT JOIN sync_state s
                          ON s.agent_id = $1 AND s.user_id = $2 AND s.activity_filter = $3
                   LEFT JOIN LATERAL (
                        SELECT outcome, started_at, finished_at, error FROM sync_runs
                         WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3
                         ORDER BY started_at DESC, id DESC LIMIT 1) r ON true",
            )
            .bind(pair.agent_id)
            .bind(pair.user_id)
            .bind(pair.filter_str())
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading pair status"))?;
            out.push(PairStatus {
                pair: pair.clone(),
                settled: row.get("settled_count"),
                upstream_total: row.get("upstream_total"),
                mark_moved_at: row.get("mark_moved_at"),
                last_outcome: row.get("outcome"),
                last_started_at: row.get("started_at"),
                last_finished_at: row.get("finished_at"),
                last_error: row.get("error"),
                last_ok_at: row.get("last_ok_at"),
                visits: row.get("visits"),
                rejects: row.get("rejects"),
            });
        }
        Ok(out)
    }
}

fn lock_key(pair: &PairKey) -> String {
    format!(
        "szb-sync:{}:{}:{}",
        pair.agent_id,
        pair.user_id,
        pair.filter_str()
    )
}

/// One row of `szb-sync status`.
#[derive(Debug, Clone)]
pub struct PairStatus {
    pub pair: PairKey,
    pub settled: Option<i64>,
    pub upstream_total: Option<i64>,
    pub mark_moved_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_ok_at: Option<DateTime<Utc>>,
    pub visits: i64,
    pub rejects: i64,
}

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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Interrupted,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One page's worth of writes, committed atomically with the mark.
#[derive(Debug)]
pub struct PageWrite<'a> {
    /// Entries in list order; `first_position` is the list position of the first, when known.
    pub entries: &'a [Entry],
    pub first_position: Option<i64>,
    /// The pair's mark after this page (written only if it differs from the stored one).
    pub mark: &'a Mark,
    pub upstream_total: i64,
}

/// Rows a page write changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageWritten {
    pub visits_inserted: u64,
    pub visits_updated: u64,
    pub activities_written: u64,
    pub rejects: u64,
}

/// A pair held under its advisory lock for the length of one run.
#[derive(Debug)]
pub struct PairSession {
    conn: PoolConnection<Postgres>,
    /// For closing the run's row when the locked connection itself was lost.
    pool: PgPool,
    pair: PairKey,
}

impl PairSession {
    /// Releases the pair's lock now. (Dropping the session also releases it, but only once the
    /// connection has closed in the background.)
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(lock_key(&self.pair))
            .execute(&mut *self.conn)
            .await
            .map_err(query_err("releasing the pair's advisory lock"))?;
        Ok(())
    }

    /// The stored mark and the `pager.total` seen with it; the empty mark for a new pair.
    pub async fn load_mark(&mut self) -> Result<(Mark, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT settled_count, anchor_visit_at, anchor_activity_ids, upstream_total FROM sync_state
              WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3",
        )
        .bind(self.pair.agent_id)
        .bind(self.pair.user_id)
        .bind(self.pair.filter_str())
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(query_err("reading the mark"))?;
        let Some(row) = row else {
            return Ok((Mark::default(), None));
        };
        let total: Option<i64> = row.get("upstream_total");
        let settled: i64 = row.get("settled_count");
        let anchor_at: Option<DateTime<Utc>> = row.get("anchor_visit_at");
        let ids: Vec<String> = row.get("anchor_activity_ids");
        match (settled, anchor_at) {
            (0, None) => Ok((Mark::default(), total)),
            (s, Some(visit_at)) if s > 0 => Ok((
                Mark {
                    settled: s,
                    anchor: Some(Anchor {
                        visit_at,
                        activity_ids: ids,
                    }),
                },
                total,
            )),
            (s, a) => Err(StoreError::BadMark {
                pair: self.pair.to_string(),
                detail: format!("settled_count {s} with anchor_visit_at {a:?}"),
            }),
        }
    }

    /// Opens the run's row. Rows a crashed process left `running` for this pair are closed as
    /// `interrupted` first: holding the lock proves nobody else is running it.
    pub async fn start_run(&mut self, mark_before: &Mark) -> Result<RunId, StoreError> {
        let pair = &self.pair;
        sqlx::query(
            "UPDATE sync_runs SET outcome = 'interrupted', finished_at = now(),
                    error = coalesce(error, 'the process ended before the run finished')
              WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3 AND outcome = 'running'",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .execute(&mut *self.conn)
        .await
        .map_err(query_err("closing stale runs"))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_runs (agent_id, user_id, activity_filter, mark_before)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(pair.agent_id)
        .bind(pair.user_id)
        .bind(pair.filter_str())
        .bind(mark_before.settled)
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
        outcome: Outcome,
        totals: &RunTotals,
        mark_after: &Mark,
        recoveries: &[String],
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let close = |error: Option<&str>| {
            sqlx::query(
                "UPDATE sync_runs SET finished_at = now(), outcome = $2, requests = $3, pages = $4,
                        visits_inserted = $5, visits_updated = $6, activities_written = $7,
                        rejects = $8, mark_after = $9, recoveries = $10, error = $11
                  WHERE id = $1",
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

    /// Writes one page and the mark in one transaction. Pairs of one agent share activity
    /// rows, so two pairs' transactions can deadlock; Postgres then aborts one, which is
    /// retried here (it changed nothing).
    pub async fn write_page(&mut self, page: &PageWrite<'_>) -> Result<PageWritten, StoreError> {
        let batch = Batch::new(&self.pair, page);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write_batch(page, &batch).await {
                Err(e) if attempt < 4 && e.is_deadlock() => {
                    tracing::debug!(pair = %self.pair, attempt, "page transaction deadlocked; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn write_batch(
        &mut self,
        page: &PageWrite<'_>,
        batch: &Batch<'_>,
    ) -> Result<PageWritten, StoreError> {
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(query_err("starting a page transaction"))?;
        let mut written = PageWritten::default();

        if !batch.placeholder_ids.is_empty() {
            sqlx::query(
                "INSERT INTO activities (id) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(&batch.placeholder_ids)
            .execute(&mut *tx)
            .await
            .map_err(query_err("writing activity ids"))?;
        }

        if !batch.activities.is_empty() {
            let a = &batch.activities;
            let result = sqlx::query(
                "INSERT INTO activities AS a (id, agent_id, subagent_id, category_id, group_id, name,
                        status, is_pushing, is_archived, started_at, ended_at, created_at, updated_at,
                        push_domain, pull_domain, extra)
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                        $6::text[], $7::text[], $8::bool[], $9::bool[], $10::timestamptz[],
                        $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::text[],
                        $15::text[], $16::jsonb[])
                 ON CONFLICT (id) DO UPDATE SET
                        agent_id = EXCLUDED.agent_id, subagent_id = EXCLUDED.subagent_id,
                        category_id = EXCLUDED.category_id, group_id = EXCLUDED.group_id,
                        name = EXCLUDED.name, status = EXCLUDED.status,
                        is_pushing = EXCLUDED.is_pushing, is_archived = EXCLUDED.is_archived,
                        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
                        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
                        push_domain = EXCLUDED.push_domain, pull_domain = EXCLUDED.pull_domain,
                        extra = EXCLUDED.extra, last_changed_at = now()
                  -- an older copy (seen on an older visit) never overwrites a newer one
                  WHERE (a.updated_at IS NULL OR EXCLUDED.updated_at >= a.updated_at)
                    AND (a.agent_id, a.subagent_id, a.category_id, a.group_id, a.name, a.status,
                         a.is_pushing, a.is_archived, a.started_at, a.ended_at, a.created_at,
                         a.updated_at, a.push_domain, a.pull_domain, a.extra)
                        IS DISTINCT FROM
                        (EXCLUDED.agent_id, EXCLUDED.subagent_id, EXCLUDED.category_id,
                         EXCLUDED.group_id, EXCLUDED.name, EXCLUDED.status, EXCLUDED.is_pushing,
                         EXCLUDED.is_archived, EXCLUDED.started_at, EXCLUDED.ended_at,
                         EXCLUDED.created_at, EXCLUDED.updated_at, EXCLUDED.push_domain,
                         EXCLUDED.pull_domain, EXCLUDED.extra)",
            )
            .bind(a.iter().map(|x| x.id.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.agent_id).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.subagent_id).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.category_id).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.group_id).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.name.as_deref()).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.status.as_deref()).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.is_pushing).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.is_archived).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.started_at).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.ended_at).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.created_at).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.updated_at).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.push_domain.as_deref()).collect::<Vec<_>>())
            .bind(a.iter().map(|x| x.pull_domain.as_deref()).collect::<Vec<_>>())
            .bind(a.iter().map(|x| Value::Object(x.extra.clone())).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(query_err("upserting activities"))?;
            written.activities_written = result.rows_affected();
        }

        if !batch.visits.is_empty() {
            let v = &batch.visits;
            let row = sqlx::query(
                "WITH w AS (
                   INSERT INTO visits AS v (agent_id, user_id, activity_id, visit_at, last_online_at,
                          duration_minutes, extra)
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::timestamptz[], $5::timestamptz[],
                          $6::int4[], $7::jsonb[]) AS u
                   ON CONFLICT (agent_id, user_id, activity_id, visit_at) DO UPDATE SET
                          last_online_at = EXCLUDED.last_online_at,
                          duration_minutes = EXCLUDED.duration_minutes,
                          extra = EXCLUDED.extra, last_changed_at = now()
                    WHERE (v.last_online_at, v.duration_minutes, v.extra)
                          IS DISTINCT FROM
                          (EXCLUDED.last_online_at, EXCLUDED.duration_minutes, EXCLUDED.extra)
                   RETURNING (xmax = 0) AS inserted)
                 SELECT count(*) FILTER (WHERE inserted) AS inserted,
                        count(*) FILTER (WHERE NOT inserted) AS updated
                   FROM w",
            )
            .bind(self.pair.agent_id)
            .bind(self.pair.user_id)
            .bind(v.iter().map(|x| x.activity_id.as_str()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.visit_at).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.last_online_at).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.duration_minutes).collect::<Vec<_>>())
            .bind(v.iter().map(|x| Value::Object(x.extra.clone())).collect::<Vec<_>>())
            .fetch_one(&mut *tx)
            .await
            .map_err(query_err("upserting visits"))?;
            written.visits_inserted = row.get::<i64, _>("inserted") as u64;
            written.visits_updated = row.get::<i64, _>("updated") as u64;
        }

        if !batch.rejects.is_empty() {
            let r = &batch.rejects;
            let result = sqlx::query(
                "INSERT INTO sync_rejects (agent_id, user_id, activity_filter, raw, reason, list_position)
                 SELECT $1, $2, $3, u.* FROM UNNEST($4::jsonb[], $5::text[], $6::int8[]) AS u
                 ON CONFLICT (agent_id, user_id, activity_filter, md5(raw::text)) DO NOTHING",
            )
            .bind(self.pair.agent_id)
            .bind(self.pair.user_id)
            .bind(self.pair.filter_str())
            .bind(r.iter().map(|(x, _)| x.raw.clone()).collect::<Vec<_>>())
            .bind(r.iter().map(|(x, _)| x.reason.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|(_, pos)| *pos).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording rejected items"))?;
            // Counts items recorded for the first time; a reject read again is already there.
            written.rejects = result.rows_affected();
        }

        let anchor = page.mark.anchor.as_ref();
        sqlx::query(
            "INSERT INTO sync_state AS s (agent_id, user_id, activity_filter, settled_count,
                    anchor_visit_at, anchor_activity_ids, upstream_total)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (agent_id, user_id, activity_filter) DO UPDATE SET
                    settled_count = EXCLUDED.settled_count,
                    anchor_visit_at = EXCLUDED.anchor_visit_at,
                    anchor_activity_ids = EXCLUDED.anchor_activity_ids,
                    upstream_total = EXCLUDED.upstream_total,
                    mark_moved_at = CASE
                        WHEN (s.settled_count, s.anchor_visit_at)
                             IS DISTINCT FROM (EXCLUDED.settled_count, EXCLUDED.anchor_visit_at)
                        THEN now() ELSE s.mark_moved_at END
              WHERE (s.settled_count, s.anchor_visit_at, s.anchor_activity_ids, s.upstream_total)
                    IS DISTINCT FROM
                    (EXCLUDED.settled_count, EXCLUDED.anchor_visit_at,
                     EXCLUDED.anchor_activity_ids, EXCLUDED.upstream_total)",
        )
        .bind(self.pair.agent_id)
        .bind(self.pair.user_id)
        .bind(self.pair.filter_str())
        .bind(page.mark.settled)
        .bind(anchor.map(|a| a.visit_at))
        .bind(anchor.map(|a| a.activity_ids.clone()).unwrap_or_default())
        .bind(page.upstream_total)
        .execute(&mut *tx)
        .await
        .map_err(query_err("moving the mark"))?;

        tx.commit().await.map_err(query_err("committing a page"))?;
        Ok(written)
    }
}

fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A page reshaped for the statements: duplicates folded, so no statement touches a row twice.
struct Batch<'a> {
    visits: Vec<&'a Visit>,
    activities: Vec<&'a Activity>,
    /// Activity ids referenced by visits whose activity was not sent whole.
    placeholder_ids: Vec<&'a str>,
    rejects: Vec<(&'a Reject, Option<i64>)>,
}

impl<'a> Batch<'a> {
    fn new(pair: &PairKey, page: &PageWrite<'a>) -> Self {
        let mut visits: HashMap<(&str, DateTime<Utc>), &Visit> = HashMap::new();
        let mut activities: HashMap<&str, &Activity> = HashMap::new();
        let mut referenced: Vec<&str> = Vec::new();
        let mut rejects: HashMap<String, (&Reject, Option<i64>)> = HashMap::new();
        for (i, entry) in page.entries.iter().enumerate() {
            match entry {
                Entry::Visit { visit, activity } => {
                    debug_assert_eq!(
                        (visit.agent_id, visit.user_id),
                        (pair.agent_id, pair.user_id)
                    );
                    // A later copy of the same visit in one page is the fresher one.
                    visits.insert((visit.activity_id.as_str(), visit.visit_at), visit);
                    referenced.push(&visit.activity_id);
                    if let Some(a) = activity {
                        activities
                            .entry(a.id.as_str())
                            .and_modify(|kept| {
                                if a.updated_at >= kept.updated_at {
                                    *kept = a;
                                }
                            })
                            .or_insert(a);
                    }
                }
                Entry::Rejected { reject, .. } => {
                    rejects
                        .entry(reject.raw.to_string())
                        .or_insert((reject, page.first_position.map(|p| p + i as i64)));
                }
            }
        }
        referenced.sort_unstable();
        referenced.dedup();
        referenced.retain(|id| !activities.contains_key(id));
        let mut visits: Vec<_> = visits.into_values().collect();
        visits.sort_by(|a, b| (a.visit_at, &a.activity_id).cmp(&(b.visit_at, &b.activity_id)));
        let mut activities: Vec<_> = activities.into_values().collect();
        activities.sort_by(|a, b| a.id.cmp(&b.id));
        let mut rejects: Vec<_> = rejects.into_values().collect();
        rejects.sort_by_key(|(_, pos)| *pos);
        Batch {
            visits,
            activities,
            placeholder_ids: referenced,
            rejects,
        }
    }
}

impl Store {
    /// Forgets the marks of these pairs, so their next sync walks the whole list again.
    /// Stored visits stay; re-reading them writes nothing unless they changed. Each pair is
    /// taken under its lock, so a sync running meanwhile cannot write its old mark back; pairs
    /// busy syncing are returned untouched.
    pub async fn forget_marks(&self, pairs: &[PairKey]) -> Result<ForgetOutcome, StoreError> {
        let mut outcome = ForgetOutcome::default();
        for pair in pairs {
            let Some(mut session) = self.lock_pair(pair).await? else {
                outcome.busy.push(pair.clone());
                continue;
            };
            let deleted = sqlx::query(
                "DELETE FROM sync_state WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3",
            )
            .bind(pair.agent_id)
            .bind(pair.user_id)
            .bind(pair.filter_str())
            .execute(&mut *session.conn)
            .await
            .map_err(query_err("forgetting a mark"))?;
            outcome.forgotten += deleted.rows_affected();
            session.release().await?;
        }
        Ok(outcome)
    }
}

/// What [`Store::forget_marks`] did.
#[derive(Debug, Default)]
pub struct ForgetOutcome {
    /// Marks deleted (a pair never synced has none).
    pub forgotten: u64,
    /// Pairs another process was syncing: try again later.
    pub busy: Vec<PairKey>,
}

/// The query `szb-sync demo` prints and runs: viewers and minutes watched per activity.
pub const SAMPLE_QUERY: &str = "SELECT a.name AS activity, count(DISTINCT v.user_id) AS viewers,
       count(*) AS visits, sum(v.duration_minutes) AS minutes_watched
  FROM visits v JOIN activities a ON a.id = v.activity_id
 WHERE v.agent_id = ANY($1)
 GROUP BY a.name
 ORDER BY minutes_watched DESC
 LIMIT 5";

/// One row of [`SAMPLE_QUERY`].
#[derive(Debug, Clone)]
pub struct SampleRow {
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
                activity: r.get("activity"),
                viewers: r.get("viewers"),
                visits: r.get("visits"),
                minutes_watched: r.get("minutes_watched"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_output_never_shows_the_database_password() {
        let url = Secret::new("postgres://bob:hunter2-secret@127.0.0.1:1/szb");
        let store = Store::connect_lazy(&url, 2).unwrap();
        assert!(!format!("{store:?}").contains("hunter2-secret"));
        let err = Store::connect(&url, 2).await.unwrap_err();
        assert!(
            !format!("{err} {err:?}").contains("hunter2-secret"),
            "{err}"
        );
    }
}
