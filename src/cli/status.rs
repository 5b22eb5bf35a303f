//! `szb-sync status`: each configured pair's mark, last run, last success and last error.
//! Exits 1 when a configured pair is failing, so a wrapper or a probe can trust the code.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{exit_code, output, table};
use crate::app::App;
use crate::domain::RunOutcome;
use crate::plural::{noun, plural};
use crate::settings::Settings;
use crate::store::PairStatus;

pub(super) async fn run(settings: &Settings, json: bool) -> Result<ExitCode> {
    settings.require_targets()?;
    let app = App::build(settings)?;
    app.store().reachable().await?;
    let keys: Vec<_> = app.pairs().iter().map(|p| p.key.clone()).collect();
    let configured: std::collections::HashSet<_> = keys.iter().cloned().collect();
    let dropped: Vec<_> = app
        .store()
        .known_pairs()
        .await?
        .into_iter()
        .filter(|k| !configured.contains(k))
        .collect();
    let half_life = settings.sync.rate_half_life;
    let rows = app.store().status(&keys, half_life).await?;
    let dropped = if dropped.is_empty() {
        Vec::new()
    } else {
        app.store().status(&dropped, half_life).await?
    };
    let failing = rows.iter().filter(|r| is_failing(r)).count();
    if json {
        let pairs = rows
            .iter()
            .map(|r| PairJson::new(r, true))
            .chain(dropped.iter().map(|r| PairJson::new(r, false)))
            .collect();
        output::json(&StatusJson { failing, pairs })?;
        return Ok(exit_code(failing == 0));
    }
    out!(
        "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20} {:<20} {:<8}",
        "pair",
        "settled",
        "upstream",
        "visits",
        "rejects",
        "last run",
        "finished",
        "last ok",
        "next due",
        "why"
    );
    print_rows(&rows);
    let hot = rows.iter().filter(|r| is_hot(r)).count();
    if hot > 0 {
        out!(
            "\n{} due between the ticks (never synced, a visit going on, new visits at the last \
             check, or a busy viewer): `why` says which",
            plural(hot, "pair is", "pairs are")
        );
    }
    if !dropped.is_empty() {
        out!(
            "\nnot configured ({}): kept in the tables with their marks; nothing syncs them",
            plural(dropped.len(), "pair", "pairs")
        );
        print_rows(&dropped);
    }
    if failing > 0 {
        out!(
            "\n{failing} of {} configured {} failing",
            rows.len(),
            noun(rows.len(), "pair", "pairs")
        );
    }
    Ok(exit_code(failing == 0))
}

/// A pair whose last run failed, or that backs off after failures (a run of it may be going on
/// right now).
fn is_failing(r: &PairStatus) -> bool {
    r.failures_in_row > 0 || r.last_outcome == Some(RunOutcome::Failed)
}

/// A pair the schedule checks between the ticks.
fn is_hot(r: &PairStatus) -> bool {
    r.due_reason.is_some_and(crate::domain::DueReason::is_hot)
}

/// `status --json`: one document, the configured pairs first.
#[derive(Serialize)]
struct StatusJson<'a> {
    /// Configured pairs failing; the exit code is 1 when there are any.
    failing: usize,
    pairs: Vec<PairJson<'a>>,
}

#[derive(Serialize)]
struct PairJson<'a> {
    agent_id: i64,
    user_id: i64,
    activity_filter: Option<&'a str>,
    /// False for a pair the database knows but the configuration no longer lists.
    configured: bool,
    failing: bool,
    settled: Option<i64>,
    upstream_total: Option<i64>,
    visits: i64,
    rejects: i64,
    last_outcome: Option<&'static str>,
    last_finished_at: Option<DateTime<Utc>>,
    last_ok_at: Option<DateTime<Utc>>,
    last_error: Option<&'a str>,
    lease_owner: Option<&'a str>,
    failures_in_row: i32,
    next_due_at: Option<DateTime<Utc>>,
    /// Why the pair is due then: new, sweep, hot, open, changed or backoff.
    due_reason: Option<&'static str>,
    /// New visits per second its viewer starts, as its checks learnt it.
    arrival_rate: f64,
}

impl<'a> PairJson<'a> {
    fn new(r: &'a PairStatus, configured: bool) -> Self {
        PairJson {
            agent_id: r.pair.agent_id,
            user_id: r.pair.user_id,
            activity_filter: r.pair.activity_filter.as_deref(),
            configured,
            failing: is_failing(r),
            settled: r.settled,
            upstream_total: r.upstream_total,
            visits: r.visits,
            rejects: r.rejects,
            last_outcome: r.last_outcome.map(RunOutcome::as_str),
            last_finished_at: r.last_finished_at,
            last_ok_at: r.last_ok_at,
            last_error: r.last_error.as_deref(),
            lease_owner: r.lease_owner.as_deref(),
            failures_in_row: r.failures_in_row,
            next_due_at: r.next_due_at,
            due_reason: r.due_reason.map(crate::domain::DueReason::as_str),
            arrival_rate: r.arrival_rate,
        }
    }
}

fn print_rows(rows: &[PairStatus]) {
    for r in rows {
        out!(
            "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20} {:<20} {:<8}",
            r.pair.to_string(),
            table::count(r.settled),
            table::count(r.upstream_total),
            r.visits,
            r.rejects,
            r.last_outcome.map_or("never", |o| o.as_str()),
            table::time(r.last_finished_at),
            table::time(r.last_ok_at),
            r.next_due_at
                .map_or_else(|| "now".to_owned(), |t| table::time(Some(t))),
            r.due_reason.map_or("new", crate::domain::DueReason::as_str),
        );
        if let Some(e) = &r.last_error {
            out!("    last error: {e}");
        }
        if let Some(owner) = &r.lease_owner {
            out!("    syncing now on {owner}");
        }
        if let Some(due) = r.next_due_at.filter(|_| r.failures_in_row > 0) {
            out!(
                "    backing off after {} in a row: next try at {}",
                plural(r.failures_in_row, "failed run", "failed runs"),
                table::time(Some(due))
            );
        }
    }
}
