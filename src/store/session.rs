//! A pair held under its advisory lock for the length of one run, its stored mark, and
//! forgetting marks (`resync`).

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Row};

use super::{Store, StoreError, query_err};
use crate::domain::{Anchor, Mark, PairKey};

impl Store {
    /// Takes the pair's advisory lock on a connection of its own, so two processes never walk
    /// one pair at once. `None` when another session holds it. The connection closes when the
    /// session is dropped, which releases the lock even on a panic or an error path.
    pub async fn lock_pair(&self, pair: &PairKey) -> Result<Option<PairSession>, StoreError> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return Err(self.explain("acquiring a connection", e).await),
        };
        let locked = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(lock_key(pair))
            .fetch_one(&mut *conn)
            .await;
        let locked: bool = match locked {
            Ok(locked) => locked,
            Err(e) => {
                // Whether the lock was taken is unknown: the connection must not be reused.
                conn.close_on_drop();
                return Err(query_err("taking the pair's advisory lock")(e));
            }
        };
        if !locked {
            return Ok(None);
        }
        Ok(Some(PairSession {
            conn,
            pool: self.pool.clone(),
            pair: pair.clone(),
            released: false,
            newest_stored: None,
        }))
    }

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
            // The row stays, with its last run, success and error: the mark goes, and so does
            // any backoff (an operator who resyncs wants the pair tried).
            let deleted = sqlx::query(
                "UPDATE sync_state SET settled_count = 0, anchor_visit_at = NULL,
                        anchor_activity_ids = '{}', upstream_total = NULL, mark_moved_at = now(),
                        failures_in_row = 0, next_due_at = NULL
                  WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3",
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

fn lock_key(pair: &PairKey) -> String {
    format!(
        "szb-sync:{}:{}:{}",
        pair.agent_id,
        pair.user_id,
        pair.filter_str()
    )
}

/// A pair held under its advisory lock for the length of one run.
#[derive(Debug)]
pub struct PairSession {
    pub(super) conn: PoolConnection<Postgres>,
    /// For closing the run's row when the locked connection itself was lost.
    pub(super) pool: PgPool,
    pub(super) pair: PairKey,
    /// The lock was given back: the connection may return to the pool.
    released: bool,
    /// The newest `visitAt` the pair has stored (`Some(None)`: none), once read: visits after
    /// it cannot conflict with a row, so they are copied in.
    pub(super) newest_stored: Option<Option<DateTime<Utc>>>,
}

impl Drop for PairSession {
    fn drop(&mut self) {
        // Still holding the lock (an error path, a panic, a shutdown): closing the connection is
        // what releases it. After `release`, the connection goes back to the pool instead.
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

impl PairSession {
    /// Releases the pair's lock now, and lets its connection serve the next pair. (Dropping the
    /// session also releases it, by closing the connection in the background.)
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(lock_key(&self.pair))
            .execute(&mut *self.conn)
            .await
            .map_err(query_err("releasing the pair's advisory lock"))?;
        self.released = true;
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
            (s, a) => Err(StoreError::Inconsistent {
                pair: self.pair.to_string(),
                detail: format!("settled_count {s} with anchor_visit_at {a:?}"),
            }),
        }
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
