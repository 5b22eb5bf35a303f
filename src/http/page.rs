//! The status page: one HTML file, its script and its style (no build step, nothing from another
//! origin; no inline code, so its Content-Security-Policy allows scripts of its own origin only),
//! and the JSON views it reads. Each view is a page of rows from one query, so the page stays
//! fast with 100,000 pairs; the totals are estimates once `visits` is large.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ListenerState, database_trouble, line};
use crate::http::Redactor;
use crate::store::{PairQuery, PassRow, RejectFilter};
use crate::telemetry::live::PassView;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
/// Rows per page of a view, unless asked otherwise.
const PER_PAGE: i64 = 50;

pub(super) fn routes() -> Router<ListenerState> {
    // The views the page reads, shared between clients for a second.
    let api = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/pairs", get(pairs))
        .route("/api/rejects", get(rejects))
        .route_layer(axum::middleware::from_fn_with_state(
            super::cache::Cache::default(),
            super::cache::shared,
        ));
    Router::new()
        .route("/", get(index))
        .route("/page.js", get(script))
        .route("/page.css", get(style))
        .merge(api)
}

async fn index() -> Response {
    Html(PAGE.replace("{{version}}", env!("CARGO_PKG_VERSION"))).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

fn pass_view(p: &PassView, redact: &Redactor) -> Value {
    json!({
        "started_at": p.started_at.to_rfc3339(),
        "due_by": time(p.due_by),
        "pairs": p.pairs,
        "done": p.done,
        "failed": p.failed,
        "requests": p.counts.requests,
        "pages": p.counts.pages,
        "inserted": p.counts.visits_inserted,
        "updated": p.counts.visits_updated,
        "rejects": p.counts.rejects,
        "visits_left": p.visits_left,
        "elapsed_seconds": p.elapsed.as_secs_f64(),
        "outcome": p.outcome.map(|o| o.as_str()),
        "errors": p.errors.iter().map(|e| redact.apply(e)).collect::<Vec<_>>(),
    })
}

fn pass_row(p: &PassRow) -> Value {
    json!({
        "id": p.id,
        "owner": p.owner,
        "started_at": p.started_at.to_rfc3339(),
        "finished_at": time(p.finished_at),
        "outcome": p.outcome,
        "pairs": p.pairs,
        "requests": p.requests,
        "visits_written": p.visits_written,
        "failures": p.failures,
    })
}

/// The passes (this process's current and last, and the newest rows of every process), pairs
/// by state, and the tables' totals.
async fn overview(State(board): State<ListenerState>) -> Response {
    let keys = board.keys();
    let (counts, totals, passes) = tokio::join!(
        board.store.pair_counts(&keys),
        board.store.totals(),
        board.store.recent_passes(10),
    );
    let counts = match counts {
        Ok(c) => c,
        Err(e) => return database_trouble("counting pairs", &e),
    };
    let totals = match totals {
        Ok(t) => t,
        Err(e) => return database_trouble("reading the totals", &e),
    };
    let passes = match passes {
        Ok(p) => p,
        Err(e) => return database_trouble("reading the passes", &e),
    };
    let live = &board.telemetry.live;
    Json(json!({
        "now": Utc::now().to_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
        "owner": board.owner,
        "current": live.current().as_ref().map(|p| pass_view(p, &board.redact)),
        "last": live.last().as_ref().map(|p| pass_view(p, &board.redact)),
        "next_pass": time(live.next_pass()),
        "passes": passes.iter().map(pass_row).collect::<Vec<_>>(),
        "pairs": {
            "configured": keys.len(),
            "ok": counts.ok,
            "failing": counts.failing,
            "never_synced": counts.never_synced,
            "oldest_sync_age_seconds": counts.oldest_sync_age_seconds,
        },
        "totals": {
            "visits": totals.visits,
            "viewers": totals.viewers,
            "minutes": totals.minutes,
            "activities": totals.activities,
            "rejects": totals.rejects,
            // Visits, viewers and minutes are estimates once `visits` is large.
            "estimated": totals.estimated,
        },
        "concurrency_limit": board.api.pace().iter().map(|p| p.limit).sum::<f64>(),
        "schedule": live.schedule().map(|s| json!({
            "pairs": s.pairs,
            "hot": s.hot,
            "tick_seconds": s.tick.as_secs_f64(),
            "budget_per_second": s.budget,
            "sweep_seconds": s.sweep.map(|d| d.as_secs_f64()),
            "over_budget": s.over_budget(),
            "spare": s.spare,
            "planned_at": s.planned_at.to_rfc3339(),
        })),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct PairsParams {
    /// `attention` (default: failing, never synced or lagging) or `all`.
    view: Option<String>,
    /// `AGENT:USER`, `AGENT:` or a user id.
    q: Option<String>,
    page: Option<i64>,
    per: Option<i64>,
}

/// Parses the search box: `AGENT:USER`, `AGENT:`, `:USER`, or a bare user id.
fn search(q: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let q = q.trim();
    let id = |s: &str, what: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| format!("{what} {s:?} is not a number"))
    };
    match q.split_once(':') {
        Some((agent, user)) => Ok((id(agent, "agent id")?, id(user, "user id")?)),
        None => Ok((None, id(q, "user id")?)),
    }
}

/// A page of pairs: those that need a look first, or every pair; or the pairs a search finds.
async fn pairs(State(board): State<ListenerState>, Query(params): Query<PairsParams>) -> Response {
    let (agent_id, user_id) = match search(params.q.as_deref().unwrap_or("")) {
        Ok(ids) => ids,
        Err(e) => {
            return line(
                StatusCode::BAD_REQUEST,
                format!("search: {e}; try AGENT:USER, AGENT: or a user id"),
            );
        }
    };
    let (attention, hot) = match params.view.as_deref() {
        None | Some("attention") => (agent_id.is_none() && user_id.is_none(), false),
        Some("all") => (false, false),
        Some("hot") => (false, true),
        Some(other) => {
            return line(
                StatusCode::BAD_REQUEST,
                format!("view {other:?} is not one of: attention, hot, all"),
            );
        }
    };
    let per = params.per.unwrap_or(PER_PAGE).clamp(1, 500);
    let page = params.page.unwrap_or(0).max(0);
    let query = PairQuery {
        attention,
        hot,
        lag_after: board.lag_after,
        agent_id,
        user_id,
        offset: page.saturating_mul(per),
        limit: per,
    };
    match board.store.pair_page(&board.keys(), &query).await {
        Ok(found) => Json(json!({
            "view": if attention { "attention" } else if hot { "hot" } else { "all" },
            "matching": found.matching,
            "page": page,
            "per": per,
            "rows": found.rows.iter().map(|r| json!({
                "agent_id": r.pair.agent_id,
                "user_id": r.pair.user_id,
                "activity_filter": r.pair.activity_filter,
                "state": r.state,
                "settled": r.settled,
                "upstream_total": r.upstream_total,
                "last_outcome": r.last_outcome,
                "last_run_at": time(r.last_run_at),
                "last_success_at": time(r.last_success_at),
                "last_error": r.last_error.as_deref().map(|e| board.redact.apply(e)),
                "failures_in_row": r.failures_in_row,
                "next_due_at": time(r.next_due_at),
                "due_reason": r.due_reason,
                "lease_owner": r.lease_owner,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => database_trouble("reading pairs", &e),
    }
}

#[derive(Debug, Deserialize)]
struct PageParams {
    page: Option<i64>,
    per: Option<i64>,
}

/// A page of the newest rejects.
async fn rejects(State(board): State<ListenerState>, Query(params): Query<PageParams>) -> Response {
    let per = params.per.unwrap_or(PER_PAGE).clamp(1, 500);
    let page = params.page.unwrap_or(0).max(0);
    let filter = RejectFilter {
        offset: page.saturating_mul(per),
        limit: per,
        ..RejectFilter::default()
    };
    match board.store.rejects(&filter).await {
        Ok(found) => Json(json!({
            "matching": found.matching,
            "page": page,
            "per": per,
            "rows": found.rejects.iter().map(|r| json!({
                "agent_id": r.pair.agent_id,
                "user_id": r.pair.user_id,
                "activity_filter": r.pair.activity_filter,
                "reason": r.reason,
                "raw": r.raw.to_string(),
                "list_position": r.list_position,
                "first_seen_at": r.first_seen_at.to_rfc3339(),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => database_trouble("reading rejects", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::search;

    #[test]
    fn the_search_box_takes_a_pair_an_agent_or_a_user() {
        assert_eq!(
            search("105131:15460259"),
            Ok((Some(105131), Some(15460259)))
        );
        assert_eq!(search(" 105131: "), Ok((Some(105131), None)));
        assert_eq!(search("15460259"), Ok((None, Some(15460259))));
        assert_eq!(search(""), Ok((None, None)));
        let err = search("105131:abc").unwrap_err();
        assert!(err.contains("user id \"abc\""), "{err}");
    }
}
