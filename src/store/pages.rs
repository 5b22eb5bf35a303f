//! One page, one transaction: activities, visits and rejects in one statement each, and the mark
//! with them.
//!
//! Visits newer than every visit the pair has stored cannot conflict with a row: they go in by
//! binary `COPY`, the fastest way into Postgres (a first sync is nearly all such rows). The rest
//! (the unsettled tail, re-reads) are upserts that touch only rows whose values differ. If a
//! `COPY` meets a row after all (another pair with an activity filter wrote the same visit
//! meanwhile), the page is written again with upserts only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, Row};

use backon::RetryableWithContext as _;

use super::session::PairSession;
use super::{StoreError, query_err, retry};
use crate::domain::{Activity, Entry, Mark, PairKey, Reject, Visit};

/// One page's worth of writes, committed atomically with the mark.
#[derive(Debug)]
pub struct PageWrite<'a> {
    /// Entries in list order; `first_position` is the list position of the first, when known.
    pub entries: &'a [Entry],
    pub first_position: Option<i64>,
    /// The pair's mark after this page (written only if it differs from the stored one).
    pub mark: &'a Mark,
    pub upstream_total: i64,
    /// A page the walk did not use (fetched ahead, then not needed), possibly older than
    /// pages already written: its visits never replace a later `lastOnlineAt`, and neither the
    /// mark nor the stored total is touched.
    pub set_aside: bool,
}

/// Rows a page write changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageWritten {
    pub visits_inserted: u64,
    pub visits_updated: u64,
    pub activities_written: u64,
    pub rejects: u64,
}

impl PairSession {
    /// Writes one page and the mark in one transaction. Pairs of one agent share activity
    /// rows, so two pairs' transactions can deadlock; Postgres then aborts one, which is
    /// tried again ([`retry::PAGE_DEADLOCK`]: it changed nothing).
    pub async fn write_page(&mut self, page: &PageWrite<'_>) -> Result<PageWritten, StoreError> {
        let batch = Batch::new(&self.pair, page);
        let pair = self.pair.clone();
        let batch = &batch;
        let attempt = one_lifetime(move |session| async move {
            let written = session.write_attempt(page, batch).await;
            (session, written)
        });
        let (_, written) = attempt
            .retry(retry::PAGE_DEADLOCK)
            .context(self)
            .when(StoreError::is_deadlock)
            .notify(|_, _| tracing::debug!(pair = %pair, "page transaction deadlocked; retrying"))
            .await;
        written
    }

    /// One attempt at the page: by `COPY` where the visits are newer than every stored one,
    /// and if a copied visit existed after all, at once again with upserts only.
    async fn write_attempt(
        &mut self,
        page: &PageWrite<'_>,
        batch: &Batch<'_>,
    ) -> Result<PageWritten, StoreError> {
        let newest = match self.newest_stored {
            Some(newest) => newest,
            None => {
                let deadline = self.deadline.clone();
                let newest = deadline
                    .within(
                        "reading the newest stored visit",
                        self.newest_stored_visit(),
                    )
                    .await;
                match newest {
                    Ok(newest) => newest,
                    Err(e) => return Err(self.failed(e)),
                }
            }
        };
        let deadline = self.deadline.clone();
        let mut written = deadline
            .within(
                "writing a page",
                self.write_batch(page, batch, Some(newest)),
            )
            .await;
        let mut copied = true;
        if written.as_ref().is_err_and(StoreError::is_unique_violation) {
            tracing::debug!(pair = %self.pair, "a copied visit existed already; writing the page with upserts");
            self.newest_stored = None;
            copied = false;
            written = deadline
                .within("writing a page", self.write_batch(page, batch, None))
                .await;
        }
        let written = written.map_err(|e| self.failed(e))?;
        // After a fallback the newest stored visit is not known: it is read again before the
        // next page.
        if copied && let Some(page_newest) = batch.visits.iter().map(|v| v.visit_at()).max() {
            let known = self.newest_stored.flatten();
            self.newest_stored = Some(known.max(Some(page_newest)));
        }
        Ok(written)
    }

    /// `e`, after closing the connection it may have left in doubt.
    fn failed(&mut self, e: StoreError) -> StoreError {
        if e.is_connection() {
            self.drop_conn();
        }
        e
    }

    /// The newest `visitAt` stored for this pair (of its activity, for a filtered pair).
    async fn newest_stored_visit(&mut self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let pair = self.pair.clone();
        let conn = self.conn().await?;
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar(include_str!("sql/newest_stored_visit.sql"))
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(pair.filter_str())
                .fetch_one(&mut **conn)
                .await
                .map_err(query_err("reading the newest stored visit"))?;
        self.newest_stored = Some(newest);
        Ok(newest)
    }

    /// One attempt at the page's transaction. With `copy_after = Some(t)`, visits after `t`
    /// (all of them for `Some(None)`: the pair has none stored) are copied, not upserted.
    async fn write_batch(
        &mut self,
        page: &PageWrite<'_>,
        batch: &Batch<'_>,
        copy_after: Option<Option<DateTime<Utc>>>,
    ) -> Result<PageWritten, StoreError> {
        let (pair, owner) = (self.pair.clone(), self.owner.clone());
        let mut tx = self
            .conn()
            .await?
            .begin()
            .await
            .map_err(query_err("starting a page transaction"))?;
        let mut written = PageWritten::default();

        if !batch.placeholder_ids.is_empty() {
            sqlx::query(include_str!("sql/add_activity_ids.sql"))
                .bind(&batch.placeholder_ids)
                .execute(&mut *tx)
                .await
                .map_err(query_err("writing activity ids"))?;
        }

        if !batch.activities.is_empty() {
            let a = &batch.activities;
            // Rows this transaction can see are updated only when they changed, and new ones
            // inserted: neither locks an unchanged row, so pages of one agent that share
            // activities do not wait for each other (ON CONFLICT DO UPDATE would lock every
            // row it meets, changed or not). A row another transaction inserted meanwhile
            // meets the conflict clause.
            let count: i64 = sqlx::query_scalar(include_str!("sql/upsert_activities.sql"))
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
                .bind(
                    a.iter()
                        .map(|x| x.push_domain.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    a.iter()
                        .map(|x| x.pull_domain.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    a.iter()
                        .map(|x| Value::Object(x.extra.clone()))
                        .collect::<Vec<_>>(),
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("upserting activities"))?;
            written.activities_written = u64::try_from(count).unwrap_or(0);
        }

        let (fresh, v): (Vec<&Visit>, Vec<&Visit>) = match copy_after {
            Some(after) => batch
                .visits
                .iter()
                .partition(|x| after.is_none_or(|t| x.visit_at() > t)),
            None => (Vec::new(), batch.visits.clone()),
        };
        if !fresh.is_empty() {
            let mut copy = tx
                .copy_in_raw(include_str!("sql/copy_visits.sql"))
                .await
                .map_err(query_err("copying new visits"))?;
            copy.send(copy_rows(pair.agent_id, pair.user_id, &fresh))
                .await
                .map_err(query_err("copying new visits"))?;
            written.visits_inserted += copy
                .finish()
                .await
                .map_err(query_err("copying new visits"))?;
        }

        if !v.is_empty() {
            let row = sqlx::query(include_str!("sql/upsert_visits.sql"))
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(v.iter().map(|x| x.activity_id()).collect::<Vec<_>>())
                .bind(v.iter().map(|x| x.visit_at()).collect::<Vec<_>>())
                .bind(v.iter().map(|x| x.last_online_at()).collect::<Vec<_>>())
                .bind(v.iter().map(|x| x.duration_minutes()).collect::<Vec<_>>())
                .bind(
                    v.iter()
                        .map(|x| Value::Object(x.extra().clone()))
                        .collect::<Vec<_>>(),
                )
                .bind(page.set_aside)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("upserting visits"))?;
            written.visits_inserted += row.get::<i64, _>("inserted") as u64;
            written.visits_updated += row.get::<i64, _>("updated") as u64;
        }

        if !batch.rejects.is_empty() {
            let r = &batch.rejects;
            // One row per item of the list (`item_key`): a version read again replaces the
            // stored one, and only an item seen for the first time counts.
            let inserted: i64 = sqlx::query_scalar(include_str!("sql/record_rejects.sql"))
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(pair.filter_str())
                .bind(r.iter().map(|(x, _)| x.raw.clone()).collect::<Vec<_>>())
                .bind(r.iter().map(|(x, _)| x.reason.as_str()).collect::<Vec<_>>())
                .bind(r.iter().map(|(_, pos)| *pos).collect::<Vec<_>>())
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("recording rejected items"))?;
            written.rejects = inserted as u64;
        }

        // Last, in the same transaction: the lease must still be this process's, or nothing of
        // the page lands (a replica that took the pair over walks it from the stored mark).
        let fenced = if page.set_aside {
            sqlx::query(include_str!("sql/check_lease.sql"))
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(pair.filter_str())
                .bind(&*owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("checking the pair's lease"))?
                .is_some()
        } else {
            let anchor = page.mark.anchor.as_ref();
            sqlx::query(include_str!("sql/move_mark.sql"))
                .bind(pair.agent_id)
                .bind(pair.user_id)
                .bind(pair.filter_str())
                .bind(page.mark.settled)
                .bind(anchor.map(|a| a.visit_at))
                .bind(anchor.map(|a| a.activity_ids.clone()).unwrap_or_default())
                .bind(page.upstream_total)
                .bind(&*owner)
                .execute(&mut *tx)
                .await
                .map_err(query_err("moving the mark"))?
                .rows_affected()
                == 1
        };
        if !fenced {
            return Err(StoreError::LeaseLost {
                pair: pair.to_string(),
            });
        }

        tx.commit().await.map_err(query_err("committing a page"))?;
        Ok(written)
    }
}
/// `f` as a closure over one borrow of the session, which backon hands back after each try (a
/// closure written with `|session: &mut PairSession|` would be over any borrow, and its future
/// could not keep it).
fn one_lifetime<'s, F, Fut>(f: F) -> F
where
    F: FnMut(&'s mut PairSession) -> Fut,
    Fut: std::future::Future<Output = (&'s mut PairSession, Result<PageWritten, StoreError>)>,
{
    f
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
                        (visit.agent_id(), visit.user_id()),
                        (pair.agent_id, pair.user_id)
                    );
                    // A later copy of the same visit in one page is the fresher one.
                    visits.insert((visit.activity_id(), visit.visit_at()), visit);
                    referenced.push(visit.activity_id());
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
        visits
            .sort_by(|a, b| (a.visit_at(), a.activity_id()).cmp(&(b.visit_at(), b.activity_id())));
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

/// Microseconds from the Unix epoch to Postgres's, 2000-01-01T00:00:00Z.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Visits in `COPY … (FORMAT binary)`: the signature and header, then per row its field count
/// and each field as a length and big-endian bytes, then the trailer.
fn copy_rows(agent_id: i64, user_id: i64, visits: &[&Visit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + 2 + visits.len() * 110);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let micros = |t: DateTime<Utc>| (t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes();
    for v in visits {
        out.extend_from_slice(&7i16.to_be_bytes());
        field(&mut out, &agent_id.to_be_bytes());
        field(&mut out, &user_id.to_be_bytes());
        field(&mut out, v.activity_id().as_bytes());
        field(&mut out, &micros(v.visit_at()));
        field(&mut out, &micros(v.last_online_at()));
        field(&mut out, &v.duration_minutes().to_be_bytes());
        // jsonb: a version byte, then the JSON text.
        let mut json = vec![1u8];
        serde_json::to_writer(&mut json, v.extra()).expect("a JSON map serializes");
        field(&mut out, &json);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}
