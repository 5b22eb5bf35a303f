//! Leases: how replicas share the pairs with Postgres as the only coordinator.
//!
//! Each process has one [`Coordinator`]: a connection of its own, outside the pool, that claims
//! pairs in batches, renews their leases, records their runs in batches and releases them. On
//! that connection the process also holds
//! - a *liveness lock* (an advisory lock named after its owner id) for as long as it lives, so a
//!   replica that was killed is known to be gone the moment its connection closes, without
//!   waiting for its leases to expire;
//! - the per-pair advisory lock of every pair it has claimed, the last guard against two walks of
//!   one pair.
//!
//! A claim takes due pairs of a slice of the configuration with `FOR NO KEY UPDATE SKIP LOCKED`.
//! A lease can be taken over when it expired or its owner is gone; the run it stood for is then
//! recorded as interrupted. Every page a walk writes checks, in its transaction, that the lease
//! is still this process's (see `pages.rs`), so a replica that lost its lease cannot move a mark.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Row};

use super::runs::{Backoff, RunTotals, clamp_i32};
use super::{Store, StoreError, query_err};
use crate::domain::{Anchor, Mark, PairKey, RunOutcome};

/// Which pairs a pass may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPlan {
    /// Claim pairs due by this time (`next_due_at` at or before it); `None` claims every pair
    /// (`szb-sync sync`).
    pub due_by: Option<DateTime<Utc>>,
    /// When the pass started (the database's clock): a pair this process claimed since then is
    /// not claimed again in this pass.
    pub pass_started: DateTime<Utc>,
}

/// A pair this process claimed: its lease is held, with the mark to walk from.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub pair: PairKey,
    pub mark: Mark,
    /// `pager.total` seen with the mark.
    pub upstream_total: Option<i64>,
    /// When the lease was taken: the run's start.
    pub leased_at: DateTime<Utc>,
    /// This process holds the pair's advisory lock; `false` when another session holds it
    /// (then the pair is not walked).
    pub locked: bool,
    /// The owner whose lease this claim took over (it died or its lease expired).
    pub took_over_from: Option<String>,
}

/// One run to record, for [`Coordinator::finish`].
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub pair: PairKey,
    pub outcome: RunOutcome,
    pub totals: RunTotals,
    pub mark_before: i64,
    pub mark_after: i64,
    pub recoveries: Vec<String>,
    pub error: Option<String>,
    /// The platform refused the token: the pair backs off from this failure on.
    pub refused: bool,
    pub started_at: DateTime<Utc>,
    /// The pair's advisory lock is held and is released with the lease.
    pub locked: bool,
}

impl FinishedRun {
    /// A run that leaves a `sync_runs` row: it wrote something, met an error, a recovery or a
    /// reject, or did not end ok. A quiet run is counted on its pass and its state row only.
    pub fn notable(&self) -> bool {
        let t = &self.totals;
        self.outcome != RunOutcome::Ok
            || t.visits_inserted + t.visits_updated > 0
            || t.activities_written + t.rejects > 0
            || !self.recoveries.is_empty()
    }
}

/// How finished runs set the pair's next due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueAfter {
    /// When the pair is due again after a run that ended (the next tick of the schedule);
    /// `None`: at any pass.
    pub next_due: Option<DateTime<Utc>>,
    pub backoff: Backoff,
}

/// Due pairs a pass has not run yet, from [`Coordinator::survey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub claimable: u64,
    pub held_elsewhere: u64,
    /// Leased by a process that died or let its lease expire.
    pub abandoned: Vec<PairKey>,
}

/// The process's connection for claiming, renewing, recording and releasing pairs.
#[derive(Debug)]
pub struct Coordinator {
    store: Store,
    owner: Arc<str>,
    lease: Duration,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

/// An owner id: the host, the process id and a nonce, so two processes (or two engines in one
/// process, as in the tests) never share one.
pub fn new_owner_id() -> String {
    // /proc may be hidden by the service's sandbox (`ProcSubset=pid`); /etc/hostname is not.
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let h = std::fs::read_to_string(p).ok()?;
            let h = h.trim();
            (!h.is_empty()).then(|| h.to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Store {
    /// This process's coordinator, owning leases as `owner` for `lease` at a time. Connects on
    /// first use.
    pub fn coordinator(&self, owner: &str, lease: Duration) -> Coordinator {
        Coordinator {
            store: self.clone(),
            owner: owner.into(),
            lease,
            conn: tokio::sync::Mutex::new(None),
        }
    }
}

impl Coordinator {
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs `f` on the coordinator's connection, opening it (and taking the liveness lock) first
    /// when needed. A connection that failed is dropped, so the next call opens a new one.
    async fn with_conn<T>(
        &self,
        context: &'static str,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().await;
        let deadline = &self.store.deadline;
        if guard.is_none() {
            let mut conn = self
                .store
                .open("opening the coordinator's connection")
                .await?;
            let alive: bool = deadline
                .within("taking the process's liveness lock", async {
                    let alive = sqlx::query_scalar(
                        "SELECT pg_try_advisory_lock(hashtextextended('szb-sync-owner:' || $1, 0))",
                    )
                    .bind(&*self.owner)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(query_err("taking the process's liveness lock"))?;
                    // Every statement here looks pairs up by key. Planned once with the
                    // statistics of a small, young table, a cached plan would scan all of
                    // sync_state per claim as it grows (measured: a first sync of 100,000 pairs
                    // took twice as long).
                    sqlx::raw_sql(
                        "SET plan_cache_mode = force_custom_plan; SET enable_seqscan = off",
                    )
                    .execute(&mut conn)
                    .await
                    .map_err(query_err("setting up the coordinator's connection"))?;
                    Ok(alive)
                })
                .await?;
            if !alive {
                return Err(StoreError::OwnerTaken {
                    owner: self.owner.to_string(),
                });
            }
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("opened above");
        let result = deadline.within(context, f(conn)).await;
        if let Err(e) = &result
            && e.is_connection()
        {
            tracing::warn!(error = %crate::error::logged(e), "the coordinator's connection was lost; the next claim opens a new one (pair locks held on it are gone, leases still fence every write)");
            *guard = None;
        }
        result
    }

    /// Claims up to `want` pairs of `span` for this process: makes their state rows exist,
    /// takes their leases and their advisory locks, and records as interrupted the runs of any
    /// lease it took over.
    pub async fn claim(
        &self,
        span: &[&PairKey],
        want: usize,
        plan: &ClaimPlan,
    ) -> Result<Vec<Claimed>, StoreError> {
        let agents: Vec<i64> = span.iter().map(|p| p.agent_id).collect();
        let users: Vec<i64> = span.iter().map(|p| p.user_id).collect();
        let filters: Vec<&str> = span.iter().map(|p| p.filter_str()).collect();
        let owner = &*self.owner;
        let lease = self.lease.as_secs_f64();
        let rows = self
            .with_conn("claiming pairs", async |conn| {
                sqlx::query(
                    "INSERT INTO sync_state (agent_id, user_id, activity_filter)
                     SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
                     ON CONFLICT DO NOTHING",
                )
                .bind(&agents)
                .bind(&users)
                .bind(&filters)
                .execute(&mut *conn)
                .await
                .map_err(query_err("adding state rows for new pairs"))?;
                sqlx::query(concat!(
                    "WITH ",
                    live_owners!(),
                    ",
                     cand AS (
                         SELECT s.agent_id, s.user_id, s.activity_filter,
                                s.lease_owner AS prev_owner, s.leased_at AS prev_leased_at
                           FROM UNNEST($6::int8[], $7::int8[], $8::text[])
                                AS p (agent_id, user_id, activity_filter)
                           JOIN sync_state s USING (agent_id, user_id, activity_filter)
                          WHERE NOT (s.leased_by IS NOT DISTINCT FROM $1 AND s.leased_at >= $4)
                            AND ($3::timestamptz IS NULL OR s.next_due_at IS NULL
                                 OR s.next_due_at <= $3)
                            AND ",
                    lease_free!(),
                    "
                          LIMIT $5
                            FOR NO KEY UPDATE OF s SKIP LOCKED),
                     claimed AS (
                         UPDATE sync_state s SET lease_owner = $1, leased_by = $1,
                                lease_expires_at = now() + make_interval(secs => $2),
                                leased_at = now()
                           FROM cand c
                          WHERE (s.agent_id, s.user_id, s.activity_filter)
                                = (c.agent_id, c.user_id, c.activity_filter)
                      RETURNING s.agent_id, s.user_id, s.activity_filter, s.settled_count,
                                s.anchor_visit_at, s.anchor_activity_ids, s.upstream_total,
                                s.leased_at, c.prev_owner, c.prev_leased_at),
                     lost AS (
                         INSERT INTO sync_runs (agent_id, user_id, activity_filter, started_at,
                                finished_at, outcome, error)
                         SELECT agent_id, user_id, activity_filter,
                                coalesce(prev_leased_at, now()), now(), $9,
                                'the process ' || prev_owner
                                || ' ended, or lost its lease, before the run finished'
                           FROM claimed WHERE prev_owner IS NOT NULL)
                     SELECT c.*, pg_try_advisory_lock(",
                    pair_lock!("c"),
                    ") AS locked FROM claimed c"
                ))
                .bind(owner)
                .bind(lease)
                .bind(plan.due_by)
                .bind(plan.pass_started)
                .bind(i64::try_from(want).unwrap_or(i64::MAX))
                .bind(&agents)
                .bind(&users)
                .bind(&filters)
                .bind(RunOutcome::Interrupted.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(query_err("claiming pairs"))
            })
            .await?;
        rows.into_iter()
            .map(|row| {
                let filter: String = row.get("activity_filter");
                let pair = PairKey::new(
                    row.get("agent_id"),
                    row.get("user_id"),
                    Some(filter).filter(|f| !f.is_empty()),
                );
                let mark = mark_of(
                    &pair,
                    row.get("settled_count"),
                    row.get("anchor_visit_at"),
                    row.get("anchor_activity_ids"),
                )?;
                let prev: Option<String> = row.get("prev_owner");
                Ok(Claimed {
                    mark,
                    upstream_total: row.get("upstream_total"),
                    leased_at: row.get("leased_at"),
                    locked: row.get("locked"),
                    took_over_from: prev.filter(|p| p != owner),
                    pair,
                })
            })
            .collect()
    }

    /// Of `pairs`, those due by the plan that this pass has not run: how many it could claim
    /// now, how many another live process holds, and which were left by a process that died
    /// or let its lease expire (a pass takes those over at once). A pass of `run` ends when none
    /// is left.
    pub async fn survey(&self, pairs: &[&PairKey], plan: &ClaimPlan) -> Result<Survey, StoreError> {
        let owner = &*self.owner;
        let row = self
            .with_conn("counting the due pairs left", async |conn| {
                sqlx::query(concat!(
                    "WITH ",
                    live_owners!(),
                    ",
                     left_over AS (
                         SELECT s.agent_id, s.user_id, s.activity_filter,
                                ",
                    lease_free!(),
                    " AS free,
                                s.lease_owner IS NOT NULL AND s.lease_owner <> $1 AS leased
                           FROM UNNEST($3::int8[], $4::int8[], $5::text[])
                                AS p (agent_id, user_id, activity_filter)
                           JOIN sync_state s USING (agent_id, user_id, activity_filter)
                          WHERE NOT (s.leased_by IS NOT DISTINCT FROM $1 AND s.leased_at >= $6)
                            AND ($2::timestamptz IS NULL OR s.next_due_at IS NULL
                                 OR s.next_due_at <= $2))
                     SELECT count(*) FILTER (WHERE free) AS claimable,
                            count(*) FILTER (WHERE NOT free) AS held,
                            coalesce(array_agg(agent_id) FILTER (WHERE free AND leased), '{}') AS agents,
                            coalesce(array_agg(user_id) FILTER (WHERE free AND leased), '{}') AS users,
                            coalesce(array_agg(activity_filter) FILTER (WHERE free AND leased), '{}')
                                AS filters
                       FROM left_over"
                ))
                .bind(owner)
                .bind(plan.due_by)
                .bind(pairs.iter().map(|p| p.agent_id).collect::<Vec<_>>())
                .bind(pairs.iter().map(|p| p.user_id).collect::<Vec<_>>())
                .bind(pairs.iter().map(|p| p.filter_str()).collect::<Vec<_>>())
                .bind(plan.pass_started)
                .fetch_one(&mut *conn)
                .await
                .map_err(query_err("counting the due pairs left"))
            })
            .await?;
        let n = |c: &str| u64::try_from(row.get::<i64, _>(c)).unwrap_or(0);
        let agents: Vec<i64> = row.get("agents");
        let users: Vec<i64> = row.get("users");
        let filters: Vec<String> = row.get("filters");
        Ok(Survey {
            claimable: n("claimable"),
            held_elsewhere: n("held"),
            abandoned: agents
                .into_iter()
                .zip(users)
                .zip(filters)
                .map(|((a, u), f)| PairKey::new(a, u, Some(f).filter(|f| !f.is_empty())))
                .collect(),
        })
    }

    /// Extends the leases of these pairs that are still this process's; returns how many.
    pub async fn renew(&self, pairs: &[PairKey]) -> Result<u64, StoreError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let owner = &*self.owner;
        let lease = self.lease.as_secs_f64();
        self.with_conn("renewing leases", async |conn| {
            sqlx::query(
                "UPDATE sync_state s SET lease_expires_at = now() + make_interval(secs => $2)
                   FROM UNNEST($3::int8[], $4::int8[], $5::text[]) AS p (agent_id, user_id, activity_filter)
                  WHERE (s.agent_id, s.user_id, s.activity_filter)
                        = (p.agent_id, p.user_id, p.activity_filter)
                    AND s.lease_owner = $1",
            )
            .bind(owner)
            .bind(lease)
            .bind(pairs.iter().map(|p| p.agent_id).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.user_id).collect::<Vec<_>>())
            .bind(pairs.iter().map(PairKey::filter_str).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(query_err("renewing leases"))
        })
        .await
    }

    /// Gives back pairs claimed but never walked (shutdown came first): the lease and the lock
    /// go, nothing else changes, so the pair is due again at once.
    pub async fn release_unwalked(&self, claimed: &[Claimed]) -> Result<(), StoreError> {
        if claimed.is_empty() {
            return Ok(());
        }
        let owner = &*self.owner;
        self.with_conn("releasing unwalked pairs", async |conn| {
            sqlx::query(concat!(
                "WITH p AS (SELECT * FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::bool[])
                             AS p (agent_id, user_id, activity_filter, locked)),
                      released AS (
                          UPDATE sync_state s SET lease_owner = NULL, lease_expires_at = NULL,
                                 leased_at = NULL
                            FROM p WHERE (s.agent_id, s.user_id, s.activity_filter)
                                         = (p.agent_id, p.user_id, p.activity_filter)
                             AND s.lease_owner = $1)
                 SELECT count(*) FILTER (WHERE pg_advisory_unlock(",
                pair_lock!("p"),
                ")) FROM p WHERE p.locked"
            ))
            .bind(owner)
            .bind(claimed.iter().map(|c| c.pair.agent_id).collect::<Vec<_>>())
            .bind(claimed.iter().map(|c| c.pair.user_id).collect::<Vec<_>>())
            .bind(
                claimed
                    .iter()
                    .map(|c| c.pair.filter_str())
                    .collect::<Vec<_>>(),
            )
            .bind(claimed.iter().map(|c| c.locked).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(query_err("releasing unwalked pairs"))?;
            Ok(())
        })
        .await
    }

    /// Records finished runs in one statement: a `sync_runs` row for each notable one, each
    /// pair's last run, success, error, backoff and next due time on its state row, and the
    /// lease and the lock given back. Returns how many leases were still this process's (a
    /// lease taken over meanwhile keeps its new owner's state).
    pub async fn finish(&self, runs: &[FinishedRun], due: &DueAfter) -> Result<u64, StoreError> {
        if runs.is_empty() {
            return Ok(0);
        }
        let owner = &*self.owner;
        let recoveries: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| serde_json::Value::from(r.recoveries.clone()))
            .collect();
        let col_i32 = |f: fn(&FinishedRun) -> u64| -> Vec<i32> {
            runs.iter().map(|r| clamp_i32(f(r))).collect()
        };
        let n: i64 = self
            .with_conn("recording finished runs", async |conn| {
                sqlx::query(concat!(
                    "WITH f AS (
                         SELECT * FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::text[],
                                $6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::int4[],
                                $11::int4[], $12::int8[], $13::int8[], $14::jsonb[], $15::text[],
                                $16::bool[], $17::bool[], $18::timestamptz[], $19::bool[],
                                $27::int4[])
                             AS f (agent_id, user_id, activity_filter, outcome, requests, pages,
                                   visits_inserted, visits_updated, activities_written, rejects,
                                   mark_before, mark_after, recoveries, error, refused, notable,
                                   started_at, locked, strings_cleaned)),
                     runs AS (
                         INSERT INTO sync_runs (agent_id, user_id, activity_filter, started_at,
                                finished_at, outcome, requests, pages, visits_inserted,
                                visits_updated, activities_written, rejects, mark_before,
                                mark_after, recoveries, error, strings_cleaned)
                         SELECT agent_id, user_id, activity_filter, started_at, now(), outcome,
                                requests, pages, visits_inserted, visits_updated,
                                activities_written, rejects, mark_before, mark_after,
                                ARRAY(SELECT jsonb_array_elements_text(recoveries)), error,
                                strings_cleaned
                           FROM f WHERE notable),
                     state AS (
                         UPDATE sync_state s SET lease_owner = NULL, lease_expires_at = NULL,
                                last_run_at = now(), last_outcome = f.outcome,
                                last_success_at = CASE WHEN f.outcome = $20 THEN now()
                                                       ELSE s.last_success_at END,
                                last_error = coalesce(f.error, s.last_error),
                                last_error_at = CASE WHEN f.error IS NOT NULL THEN now()
                                                     ELSE s.last_error_at END,
                                failures_in_row = CASE
                                    WHEN f.outcome = $21 THEN s.failures_in_row + 1
                                    WHEN f.outcome = $20 THEN 0
                                    ELSE s.failures_in_row END,
                                -- Backoff doubles from failure_backoff with each failure past
                                -- the first that counts (the first for a refused token), up to
                                -- the cap; every other ended run waits for the next tick.
                                next_due_at = CASE
                                    WHEN f.outcome = $21
                                         AND (f.refused OR s.failures_in_row + 1 >= $24)
                                    THEN greatest($25, now() + make_interval(secs => least(
                                         $22 * power(2, least(greatest(s.failures_in_row + 1
                                             - CASE WHEN f.refused THEN 1 ELSE $24 END, 0), 30)),
                                         $23)))
                                    WHEN f.outcome = $26 THEN s.next_due_at
                                    ELSE $25 END
                           FROM f
                          WHERE (s.agent_id, s.user_id, s.activity_filter)
                                = (f.agent_id, f.user_id, f.activity_filter)
                            AND s.lease_owner = $1
                      RETURNING 1)
                     SELECT (SELECT count(*) FROM state) AS kept,
                            (SELECT count(*) FILTER (WHERE pg_advisory_unlock(",
                    pair_lock!("f"),
                    ")) FROM f WHERE f.locked) AS unlocked"
                ))
                .bind(owner)
                .bind(runs.iter().map(|r| r.pair.agent_id).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.pair.user_id).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.pair.filter_str()).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
                .bind(col_i32(|r| u64::from(r.totals.requests)))
                .bind(col_i32(|r| u64::from(r.totals.pages)))
                .bind(col_i32(|r| r.totals.visits_inserted))
                .bind(col_i32(|r| r.totals.visits_updated))
                .bind(col_i32(|r| r.totals.activities_written))
                .bind(col_i32(|r| r.totals.rejects))
                .bind(runs.iter().map(|r| r.mark_before).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.mark_after).collect::<Vec<_>>())
                .bind(&recoveries)
                // An error may quote the platform's body: Postgres cannot store a NUL in text.
                .bind(
                    runs.iter()
                        .map(|r| r.error.as_deref().map(crate::domain::storable_text))
                        .collect::<Vec<_>>(),
                )
                .bind(runs.iter().map(|r| r.refused).collect::<Vec<_>>())
                .bind(runs.iter().map(FinishedRun::notable).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.started_at).collect::<Vec<_>>())
                .bind(runs.iter().map(|r| r.locked).collect::<Vec<_>>())
                .bind(RunOutcome::Ok.as_str())
                .bind(RunOutcome::Failed.as_str())
                .bind(due.backoff.first.as_secs_f64())
                .bind(due.backoff.max.as_secs_f64())
                .bind(i32::try_from(due.backoff.after_failures).unwrap_or(i32::MAX))
                .bind(due.next_due)
                .bind(RunOutcome::Interrupted.as_str())
                .bind(col_i32(|r| r.totals.strings_cleaned))
                .fetch_one(&mut *conn)
                .await
                .map(|row| row.get::<i64, _>("kept"))
                .map_err(query_err("recording finished runs"))
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Closes the connection: the liveness lock and any pair locks go with it.
    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(self.store.deadline.ping(), conn.close()).await;
        }
    }
}

/// A mark as stored: `settled_count` and the anchor must agree (the table's CHECK says so too).
pub(super) fn mark_of(
    pair: &PairKey,
    settled: i64,
    anchor_at: Option<DateTime<Utc>>,
    ids: Vec<String>,
) -> Result<Mark, StoreError> {
    match (settled, anchor_at) {
        (0, None) => Ok(Mark::default()),
        (s, Some(visit_at)) if s > 0 => Ok(Mark {
            settled: s,
            anchor: Some(Anchor {
                visit_at,
                activity_ids: ids,
            }),
        }),
        (s, a) => Err(StoreError::Inconsistent {
            pair: pair.to_string(),
            detail: match a {
                Some(a) => format!("settled_count {s} with anchor_visit_at {}", a.to_rfc3339()),
                None => format!("settled_count {s} with no anchor_visit_at"),
            },
        }),
    }
}
