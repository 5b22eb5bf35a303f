//! A pair's walk under its lease ([`PairSession`]), a pair's advisory lock held alone
//! ([`PairLock`]), and forgetting marks (`resync`).

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Row};

use super::{Store, StoreError, query_err};
use crate::domain::PairKey;

impl Store {
    /// Takes the pair's advisory lock on a connection of its own, so two processes never walk
    /// one pair at once. `None` when another session holds it. The connection closes when the
    /// session is dropped, which releases the lock even on a panic or an error path.
    pub async fn lock_pair(&self, pair: &PairKey) -> Result<Option<PairLock>, StoreError> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return Err(self.explain("acquiring a connection", e).await),
        };
        let locked = sqlx::query_scalar(include_str!("sql/lock_pair.sql"))
            .bind(pair.agent_id)
            .bind(pair.user_id)
            .bind(pair.filter_str())
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
        Ok(Some(PairLock {
            conn,
            pair: pair.clone(),
            released: false,
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
            // any backoff (an operator who resyncs wants the pair tried). A pair leased by a
            // live process is left to it.
            let row = sqlx::query(include_str!("sql/forget_mark.sql"))
                .bind("")
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(pair.filter_str())
                .fetch_one(&mut *session.conn)
                .await
                .map_err(query_err("forgetting a mark"))?;
            let (forgotten, leased): (i64, i64) = (row.get("forgotten"), row.get("leased"));
            outcome.forgotten += u64::try_from(forgotten).unwrap_or(0);
            if leased > 0 {
                outcome.busy.push(pair.clone());
            }
            session.release().await?;
        }
        Ok(outcome)
    }
}

/// A pair's advisory lock held on a connection of its own (`resync`, and tests that play
/// another process); released by [`PairLock::release`] or by dropping it.
#[derive(Debug)]
pub struct PairLock {
    conn: PoolConnection<Postgres>,
    pair: PairKey,
    /// The lock was given back: the connection may return to the pool.
    released: bool,
}

impl Drop for PairLock {
    fn drop(&mut self) {
        // Still holding the lock (an error path, a panic): closing the connection is what
        // releases it. After `release`, the connection goes back to the pool instead.
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

impl PairLock {
    /// Releases the pair's lock now, and lets its connection serve others.
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query(include_str!("sql/unlock_pair.sql"))
            .bind(self.pair.agent_id)
            .bind(self.pair.user_id)
            .bind(self.pair.filter_str())
            .execute(&mut *self.conn)
            .await
            .map_err(query_err("releasing the pair's advisory lock"))?;
        self.released = true;
        Ok(())
    }
}

/// One walk of a pair whose lease this process holds: its pages are written through it, each
/// in a transaction that first checks the lease is still `owner`'s.
#[derive(Debug)]
pub struct PairSession {
    pub(super) pool: PgPool,
    pub(super) pair: PairKey,
    pub(super) owner: std::sync::Arc<str>,
    /// Taken from the pool at the first page, kept for the walk; a quiet walk writes no page
    /// and takes none.
    pub(super) conn: Option<PoolConnection<Postgres>>,
    /// The newest `visitAt` the pair has stored (`Some(None)`: none), once read: visits after
    /// it cannot conflict with a row, so they are copied in.
    pub(super) newest_stored: Option<Option<DateTime<Utc>>>,
    /// How long a page may wait for the database's answers.
    pub(super) deadline: super::Deadline,
}

impl Store {
    /// A walk of `pair` under the lease of `owner`.
    pub fn session(&self, pair: &PairKey, owner: &str) -> PairSession {
        PairSession {
            pool: self.pool.clone(),
            pair: pair.clone(),
            owner: owner.into(),
            conn: None,
            newest_stored: None,
            deadline: self.deadline.clone(),
        }
    }
}

impl PairSession {
    /// The walk's connection, taken from the pool when first needed.
    pub(super) async fn conn(&mut self) -> Result<&mut PoolConnection<Postgres>, StoreError> {
        if self.conn.is_none() {
            let conn = self
                .pool
                .acquire()
                .await
                .map_err(query_err("acquiring a connection for a page"))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("acquired above"))
    }

    /// Drops the walk's connection after an error, so a broken one is not reused.
    pub(super) fn drop_conn(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
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
