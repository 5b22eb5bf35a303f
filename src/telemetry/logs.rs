//! The log lines of the feed: one per pass, one per pair only when something happened (rows
//! written, rejects, a recovery, a failure), and one per retry. Every id and count is a field of
//! its own, so `jq`, Loki or `journalctl -o json` can filter by `agent_id` and sum `inserted`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::events::{Event, Observer};
use crate::domain::RunOutcome;

/// A skewed platform clock is told at most this often; every page counts it in the metric.
const SKEW_LOG_EVERY: Duration = Duration::from_secs(60 * 60);

/// Writes the feed's events as `tracing` events.
#[derive(Debug, Default)]
pub struct LogLines {
    /// When a clock skew was last logged.
    skew_logged: Mutex<Option<Instant>>,
}

impl Observer for LogLines {
    fn on(&self, event: &Event<'_>) {
        match *event {
            Event::Retry {
                pair,
                page,
                attempt,
                wait,
                rate_limited,
                error,
            } => {
                let wait_ms = wait.as_millis() as u64;
                let filter = pair.activity_filter.as_deref();
                if rate_limited {
                    // Finding the platform's pace meets a 429 now and then: the controller
                    // backs off, and the run counts the request. Not worth a warning.
                    tracing::debug!(agent_id = pair.agent_id, user_id = pair.user_id, activity_filter = filter, page, attempt, wait_ms, error = %crate::error::for_log(&error.to_string()), "retrying");
                } else {
                    tracing::warn!(agent_id = pair.agent_id, user_id = pair.user_id, activity_filter = filter, page, attempt, wait_ms, error = %crate::error::for_log(&error.to_string()), "retrying");
                }
            }
            Event::PairFinished {
                pair,
                outcome,
                counts,
                settled,
                recoveries,
                error,
            } => {
                let filter = pair.activity_filter.as_deref();
                match outcome {
                    RunOutcome::Failed => tracing::error!(
                        agent_id = pair.agent_id,
                        user_id = pair.user_id,
                        activity_filter = filter,
                        outcome = outcome.as_str(),
                        requests = counts.requests,
                        inserted = counts.visits_inserted,
                        updated = counts.visits_updated,
                        rejects = counts.rejects,
                        error = crate::error::for_log(error.unwrap_or("")),
                        "pair failed"
                    ),
                    RunOutcome::Skipped => tracing::warn!(
                        agent_id = pair.agent_id,
                        user_id = pair.user_id,
                        activity_filter = filter,
                        outcome = outcome.as_str(),
                        reason = crate::error::for_log(error.unwrap_or("")),
                        "pair skipped"
                    ),
                    _ if counts.visits_written() > 0
                        || counts.rejects > 0
                        || !recoveries.is_empty()
                        || outcome != RunOutcome::Ok =>
                    {
                        tracing::info!(
                            agent_id = pair.agent_id,
                            user_id = pair.user_id,
                            activity_filter = filter,
                            outcome = outcome.as_str(),
                            requests = counts.requests,
                            pages = counts.pages,
                            inserted = counts.visits_inserted,
                            updated = counts.visits_updated,
                            activities = counts.activities_written,
                            rejects = counts.rejects,
                            strings_cleaned = counts.strings_cleaned,
                            settled,
                            recoveries = recoveries.len(),
                            recovery = recoveries.first().map(String::as_str),
                            "pair synced"
                        )
                    }
                    // A quiet pair: one request, nothing new. Counted, not logged.
                    _ => tracing::debug!(
                        agent_id = pair.agent_id,
                        user_id = pair.user_id,
                        requests = counts.requests,
                        settled,
                        "pair quiet"
                    ),
                }
            }
            Event::PassFinished {
                extra,
                outcome,
                elapsed,
                pairs,
                failed,
                counts,
                errors,
            } => {
                let error = (!errors.is_empty()).then(|| crate::error::for_log(&errors.join("; ")));
                macro_rules! pass_line {
                    ($lvl:ident) => {
                        tracing::$lvl!(
                            outcome = outcome.as_str(),
                            elapsed_ms = elapsed.as_millis() as u64,
                            pairs,
                            failed,
                            requests = counts.requests,
                            pages = counts.pages,
                            inserted = counts.visits_inserted,
                            updated = counts.visits_updated,
                            activities = counts.activities_written,
                            rejects = counts.rejects,
                            strings_cleaned = counts.strings_cleaned,
                            error,
                            "pass finished"
                        )
                    };
                }
                if outcome == RunOutcome::Failed {
                    pass_line!(warn);
                } else if extra {
                    pass_line!(debug);
                } else {
                    pass_line!(info);
                }
            }
            Event::ClockSkew {
                agent_id,
                skew_seconds,
            } => {
                let mut logged = self.skew_logged.lock().unwrap_or_else(|e| e.into_inner());
                if logged.is_none_or(|at| at.elapsed() >= SKEW_LOG_EVERY) {
                    *logged = Some(Instant::now());
                    tracing::warn!(
                        agent_id,
                        skew_seconds,
                        "the platform's clock (its Date header) is far from ours; visits settle \
                         by the earlier of the two (szb_clock_skew_total counts each answer; \
                         this line repeats at most hourly)"
                    );
                }
            }
            Event::Request { .. }
            | Event::ListSize { .. }
            | Event::PageWritten { .. }
            | Event::Checked { .. }
            | Event::Schedule { .. }
            | Event::PassStarted { .. } => {}
        }
    }
}
