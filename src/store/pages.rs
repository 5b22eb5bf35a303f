//! One page, one transaction: activities, visits and rejects in one statement each, and the mark
//! with them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, Row};

use super::session::PairSession;
use super::{StoreError, query_err};
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
            .bind(v.iter().map(|x| x.activity_id()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.visit_at()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.last_online_at()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.duration_minutes()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| Value::Object(x.extra().clone())).collect::<Vec<_>>())
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
