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

use super::pair_keys::PairKeys;
use super::runs::{Backoff, RunTotals, clamp_i32};
use super::{Store, StoreError, query_err};
use crate::domain::{Anchor, DueReason, Mark, PairKey, RunOutcome};

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
    /// The pair's arrival rate as of `rate_at` (its latest check; `None` before the first).
    pub arrival_rate: f64,
    pub rate_at: Option<DateTime<Utc>>,
    /// When the pair's latest run finished; `None` if it never ran.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Why the pair was due.
    pub due_reason: Option<DueReason>,
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
    /// The platform refused the token's rights (HTTP 403): the pair backs off from this
    /// failure on.
    pub refused: bool,
    /// The platform did not know the token (HTTP 401: a typo, an old token): the next
    /// configuration may fix it, so the pair never backs off for it (it is due at the next
    /// tick), or a daemon started with the right token would honour the wrong one's backoff.
    pub unknown_token: bool,
    pub started_at: DateTime<Utc>,
    /// The pair's advisory lock is held and is released with the lease.
    pub locked: bool,
    /// When the pair is due again after a run that ended (later while it backs off); `None`:
    /// at any pass. An interrupted run keeps the due time it had.
    pub next_due: Option<DateTime<Utc>>,
    pub due_reason: DueReason,
    /// The pair's arrival rate after this run, as of `rate_at`.
    pub arrival_rate: f64,
    pub rate_at: DateTime<Utc>,
    /// New visits this run inserted.
    pub found_new: u64,
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

/// A due pair, from [`Coordinator::due_candidates`], in the order to take them.
#[derive(Debug, Clone, PartialEq)]
pub struct DueCandidate {
    pub pair: PairKey,
    pub next_due_at: Option<DateTime<Utc>>,
}

/// The schedule's inputs for one pair, from [`Store::pair_rates`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairRate {
    /// Visits per second, decayed to now.
    pub rate: f64,
    /// A visit of the pair is still going on.
    pub open: bool,
    /// Its latest check found new visits.
    pub found_new: bool,
    pub next_due_at: Option<DateTime<Utc>>,
    pub due_reason: Option<DueReason>,
    pub last_run_at: Option<DateTime<Utc>>,
}

/// Due pairs a pass has not run yet, from [`Coordinator::due_left`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueLeft {
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
    /// Makes a state row exist for each of `pairs` (new pairs get one, due at once; existing
    /// rows are left alone), so the adaptive schedule's look for due pairs sees them.
    pub async fn add_state_rows(&self, pairs: &[&PairKey]) -> Result<(), StoreError> {
        let keys: PairKeys = pairs.iter().copied().collect();
        self.deadline
            .within("adding state rows for new pairs", async {
                keys.bind(sqlx::query(include_str!("sql/add_state_rows.sql")))
                    .execute(&self.pool)
                    .await
                    .map_err(query_err("adding state rows for new pairs"))?;
                Ok(())
            })
            .await
    }

    /// The schedule's inputs for `pairs` (those with a state row), the rates decayed to now
    /// with `half_life`.
    pub async fn pair_rates(
        &self,
        pairs: &[&PairKey],
        half_life: Duration,
    ) -> Result<Vec<(PairKey, PairRate)>, StoreError> {
        let keys: PairKeys = pairs.iter().copied().collect();
        let rows = self
            .deadline
            .within("reading the pairs' arrival rates", async {
                let q = sqlx::query(include_str!("sql/pair_rates.sql"));
                keys.bind(q)
                    .bind(half_life.as_secs_f64().max(1.0))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("reading the pairs' arrival rates"))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let filter: String = row.get("activity_filter");
                let reason: Option<String> = row.get("due_reason");
                (
                    PairKey::new(
                        row.get("agent_id"),
                        row.get("user_id"),
                        Some(filter).filter(|f| !f.is_empty()),
                    ),
                    PairRate {
                        rate: row.get("rate"),
                        open: row.get("open"),
                        found_new: row.get("found_new"),
                        next_due_at: row.get("next_due_at"),
                        due_reason: reason.and_then(|r| r.parse().ok()),
                        last_run_at: row.get("last_run_at"),
                    },
                )
            })
            .collect())
    }

    /// When the earliest pair falls due after now and before `before` (the next tick): when
    /// the adaptive schedule runs a pass between the ticks. Any pair of the table counts: a
    /// wake-up too early only costs a look for due pairs.
    pub async fn earliest_due(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.deadline
            .within("reading the earliest due time", async {
                sqlx::query_scalar(include_str!("sql/earliest_due.sql"))
                    .bind(before)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("reading the earliest due time"))
            })
            .await
    }

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
                    let alive = sqlx::query_scalar(include_str!("sql/take_liveness_lock.sql"))
                        .bind(&*self.owner)
                        .fetch_one(&mut conn)
                        .await
                        .map_err(query_err("taking the process's liveness lock"))?;
                    sqlx::raw_sql(include_str!("sql/coordinator_session.sql"))
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
        let keys: PairKeys = span.iter().copied().collect();
        let owner = &*self.owner;
        let lease = self.lease.as_secs_f64();
        let rows = self
            .with_conn("claiming pairs", async |conn| {
                keys.bind(sqlx::query(include_str!("sql/add_state_rows.sql")))
                    .execute(&mut *conn)
                    .await
                    .map_err(query_err("adding state rows for new pairs"))?;
                let claim = sqlx::query(include_str!("sql/claim_due_pairs.sql"))
                    .bind(owner)
                    .bind(lease)
                    .bind(plan.due_by)
                    .bind(plan.pass_started)
                    .bind(i64::try_from(want).unwrap_or(i64::MAX));
                keys.bind(claim)
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
                    arrival_rate: row.get("arrival_rate"),
                    rate_at: row.get("rate_at"),
                    last_run_at: row.get("last_run_at"),
                    due_reason: row
                        .get::<Option<String>, _>("due_reason")
                        .and_then(|r| r.parse().ok()),
                    pair,
                })
            })
            .collect()
    }

    /// Of `pairs`, those due by the plan that this pass has not run: how many it could claim
    /// now, how many another live process holds, and which were left by a process that died
    /// or let its lease expire (a pass takes those over at once). A pass of `run` ends when none
    /// is left.
    pub async fn due_left(
        &self,
        pairs: &[&PairKey],
        plan: &ClaimPlan,
    ) -> Result<DueLeft, StoreError> {
        let owner = &*self.owner;
        let keys: PairKeys = pairs.iter().copied().collect();
        let row = self
            .with_conn("counting the due pairs left", async |conn| {
                let survey = sqlx::query(include_str!("sql/survey_due_pairs.sql"))
                    .bind(owner)
                    .bind(plan.due_by);
                keys.bind(survey)
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
        Ok(DueLeft {
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

    /// Up to `limit` pairs due by `now` whose lease is free, other than `except`, most
    /// valuable first (see `due_candidates.sql`); `tick` is the schedule's period. Not only
    /// configured pairs: the caller keeps its own, and names the others in `except` next time.
    pub async fn due_candidates(
        &self,
        now: DateTime<Utc>,
        tick: Duration,
        limit: usize,
        except: &[PairKey],
    ) -> Result<Vec<DueCandidate>, StoreError> {
        let except = PairKeys::of(except);
        let rows = self
            .with_conn("looking for due pairs", async |conn| {
                let q = sqlx::query(include_str!("sql/due_candidates.sql"))
                    .bind(now)
                    .bind(tick.as_secs_f64())
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
                except
                    .bind(q)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(query_err("looking for due pairs"))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let filter: String = row.get("activity_filter");
                DueCandidate {
                    pair: PairKey::new(
                        row.get("agent_id"),
                        row.get("user_id"),
                        Some(filter).filter(|f| !f.is_empty()),
                    ),
                    next_due_at: row.get("next_due_at"),
                }
            })
            .collect())
    }

    /// Extends the leases of these pairs that are still this process's; returns how many.
    pub async fn renew(&self, pairs: &[PairKey]) -> Result<u64, StoreError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let owner = &*self.owner;
        let lease = self.lease.as_secs_f64();
        let keys = PairKeys::of(pairs);
        self.with_conn("renewing leases", async |conn| {
            let renew = sqlx::query(include_str!("sql/renew_leases.sql"))
                .bind(owner)
                .bind(lease);
            keys.bind(renew)
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
        let keys: PairKeys = claimed.iter().map(|c| &c.pair).collect();
        self.with_conn("releasing unwalked pairs", async |conn| {
            let release = sqlx::query(include_str!("sql/release_unwalked.sql")).bind(owner);
            keys.bind(release)
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
    pub async fn finish(&self, runs: &[FinishedRun], backoff: &Backoff) -> Result<u64, StoreError> {
        if runs.is_empty() {
            return Ok(0);
        }
        let owner = &*self.owner;
        let recoveries: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| serde_json::Value::from(r.recoveries.clone()))
            .collect();
        let keys: PairKeys = runs.iter().map(|r| &r.pair).collect();
        let col_i32 = |f: fn(&FinishedRun) -> u64| -> Vec<i32> {
            runs.iter().map(|r| clamp_i32(f(r))).collect()
        };
        let n: i64 = self
            .with_conn("recording finished runs", async |conn| {
                let finish = sqlx::query(include_str!("sql/record_finished_runs.sql")).bind(owner);
                keys.bind(finish)
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
                    // NULL: an unknown token, which never backs off.
                    .bind(
                        runs.iter()
                            .map(|r| (!r.unknown_token).then_some(r.refused))
                            .collect::<Vec<_>>(),
                    )
                    .bind(runs.iter().map(FinishedRun::notable).collect::<Vec<_>>())
                    .bind(runs.iter().map(|r| r.started_at).collect::<Vec<_>>())
                    .bind(runs.iter().map(|r| r.locked).collect::<Vec<_>>())
                    .bind(RunOutcome::Ok.as_str())
                    .bind(RunOutcome::Failed.as_str())
                    .bind(backoff.first.as_secs_f64())
                    .bind(backoff.max.as_secs_f64())
                    .bind(i32::try_from(backoff.after_failures).unwrap_or(i32::MAX))
                    .bind(runs.iter().map(|r| r.next_due).collect::<Vec<_>>())
                    .bind(RunOutcome::Interrupted.as_str())
                    .bind(col_i32(|r| r.totals.strings_cleaned))
                    .bind(
                        runs.iter()
                            .map(|r| r.due_reason.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(runs.iter().map(|r| r.arrival_rate).collect::<Vec<_>>())
                    .bind(runs.iter().map(|r| r.rate_at).collect::<Vec<_>>())
                    .bind(col_i32(|r| r.found_new))
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
