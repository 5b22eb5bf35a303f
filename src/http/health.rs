//! `/livez` and `/readyz`: 200 or 503, with a one-line reason for the human reading it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{ListenerState, line};
use crate::domain::RunOutcome;
use crate::plural::{noun, plural};
use crate::telemetry::live::PassView;

/// The schedule loop beats every second; this long without a beat, it is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for the database (through the listener's pool).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The process and its schedule loop are alive (restart it when this fails).
pub(super) async fn livez(State(board): State<ListenerState>) -> Response {
    match board.telemetry.live.since_beat() {
        None => line(
            StatusCode::OK,
            "ok: starting (the schedule starts once the migrations ran)",
        ),
        Some(age) if age > STUCK_AFTER => line(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not live: the schedule loop has not run for {} s",
                age.as_secs()
            ),
        ),
        Some(age) => line(
            StatusCode::OK,
            format!("ok: the schedule loop ran {} ms ago", age.as_millis()),
        ),
    }
}

/// Migrated, the database reachable, and the last pass did not fail wholesale (send it work,
/// or count it in, only when this passes).
pub(super) async fn readyz(State(board): State<ListenerState>) -> Response {
    let live = &board.telemetry.live;
    if !live.migrated() {
        return line(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the migrations have not run yet (is the database reachable?)",
        );
    }
    match tokio::time::timeout(DATABASE_TIMEOUT, board.store.ping()).await {
        Err(_) => {
            return line(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: the database did not answer within {} s",
                    DATABASE_TIMEOUT.as_secs()
                ),
            );
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error::logged(&e), "/readyz: the database did not answer");
            return line(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: {} (szb-sync's log says more)",
                    super::in_general(&e)
                ),
            );
        }
        Ok(Ok(())) => {}
    }
    // A pass whose pairs all back off runs none: it says nothing of their health.
    match live.last_busy() {
        Some(last) if failed_wholesale(&last) => line(
            StatusCode::SERVICE_UNAVAILABLE,
            match last.errors.first() {
                Some(e) => format!("not ready: the last pass failed: {}", board.redact.apply(e)),
                None => format!(
                    "not ready: the last pass failed for all {} of its {} (see the status page)",
                    last.pairs,
                    noun(last.pairs, "pair", "pairs")
                ),
            },
        ),
        Some(last) => line(
            StatusCode::OK,
            format!(
                "ok: the last pass ran {}, {} failed",
                plural(last.pairs, "pair", "pairs"),
                last.failed
            ),
        ),
        None => line(StatusCode::OK, "ok: migrated; no pass has finished yet"),
    }
}

/// A pass failed wholesale when the pass itself met an error (its claims or records failed),
/// or every pair it ran failed.
fn failed_wholesale(pass: &PassView) -> bool {
    pass.outcome == Some(RunOutcome::Failed)
        && (!pass.errors.is_empty() || (pass.pairs > 0 && pass.failed == pass.pairs))
}
