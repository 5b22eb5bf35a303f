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
    /// The errors of failed pairs told in this pass, by agent: a token refused for every pair of
    /// an agent is one error line, not one per pair.
    failures_told: Mutex<std::collections::HashSet<(i64, String)>>,
}

impl LogLines {
    /// Whether `error` of a pair of `agent_id` is new in this pass (told at error level) rather
    /// than the same as another pair's of that agent (told at debug level).
    fn first_of_its_kind(&self, agent_id: i64, error: &str) -> bool {
        self.failures_told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((agent_id, error.to_owned()))
    }
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
                    RunOutcome::Failed
                        if !self.first_of_its_kind(pair.agent_id, error.unwrap_or("")) =>
                    {
                        tracing::debug!(
                            agent_id = pair.agent_id,
                            user_id = pair.user_id,
                            activity_filter = filter,
                            "pair failed with the same error as another pair of its agent in this pass"
                        )
                    }
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
            | Event::Schedule { .. } => {}
            Event::PassStarted { .. } => self
                .failures_told
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_told_once_per_agent_and_pass() {
        let logs = LogLines::default();
        let refused = "the platform refused agent 7's token (401)";
        assert!(logs.first_of_its_kind(7, refused));
        assert!(
            !logs.first_of_its_kind(7, refused),
            "a second pair of agent 7"
        );
        assert!(logs.first_of_its_kind(8, refused), "another agent is told");
        assert!(
            logs.first_of_its_kind(7, "a timeout"),
            "another error is told"
        );
        logs.on(&Event::PassStarted {
            pairs: 2,
            due_by: None,
        });
        assert!(
            logs.first_of_its_kind(7, refused),
            "told again in the next pass"
        );
    }
}
