//! `szb-sync sync`: one pass over every configured pair, then exit. On a terminal, a progress bar
//! (on stderr) follows the pass.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::only::{self, PairSelector};
use super::{exit_code, interrupted_code, shutdown_on_signals};
use crate::app::App;
use crate::plural::plural;
use crate::settings::Settings;
use crate::telemetry::live::PassView;

pub(super) async fn run(settings: &Settings, only: &[PairSelector]) -> Result<ExitCode> {
    settings.require_targets()?;
    let app = App::build(settings)?;
    let pairs = only::select(app.pairs(), only)?;
    app.migrate().await.context("applying migrations")?;
    let progress = Progress::start(&app, pairs.len());
    let report = app.sync_pairs(&pairs, &shutdown_on_signals()).await;
    progress.finish();
    let errors = error_lines(&report.pairs);
    for (p, error) in report.pairs.iter().zip(errors) {
        let t = &p.totals;
        out!(
            "{:<40} {:<11} requests {:>4}  inserted {:>6}  updated {:>6}  settled {:>7}{}",
            p.pair.to_string(),
            p.outcome.to_string(),
            t.requests,
            t.visits_inserted,
            t.visits_updated,
            p.settled,
            error
                .map(|e| format!("\n    error: {e}"))
                .unwrap_or_default()
        );
    }
    out!("{report}");
    // Cut short by a signal: what was committed stays, but the pass is not whole.
    let cut_short = report
        .pairs
        .iter()
        .any(|p| p.outcome == crate::domain::RunOutcome::Interrupted);
    if let Some(code) = interrupted_code().filter(|_| cut_short) {
        eprintln!("szb-sync: sync interrupted; the pairs not finished resume at the next sync");
        return Ok(code);
    }
    Ok(exit_code(report.all_ok()))
}

/// The error line of each pair: an error said for an earlier pair (a refused token fails every
/// pair of its agent alike) is not said again, only pointed at.
fn error_lines(pairs: &[crate::engine::PairReport]) -> Vec<Option<String>> {
    let mut said: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    pairs
        .iter()
        .map(|p| {
            let error = p.error.as_deref()?;
            Some(match said.get(error) {
                Some(first) => format!("the same as {first} above"),
                None => {
                    said.insert(error, p.pair.to_string());
                    error.to_owned()
                }
            })
        })
        .collect()
}

/// The progress bar: pairs done of total, visits written and their rate, requests per second,
/// the concurrency limit in effect, and an ETA from the visits left (`pager.total` less the
/// marks) and the pairs left. Hidden when stderr is not a terminal.
struct Progress {
    bar: ProgressBar,
    _ticker: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl Progress {
    fn start(app: &App, pairs: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                _ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(
            Some(pairs as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} pairs  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let (live, api, b) = (app.telemetry().live.clone(), app.api().clone(), bar.clone());
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                if let Some(view) = live.current() {
                    // (A sum of no f64 is -0.0: `limit -0` before the first request.)
                    let limit = api.pace().iter().fold(0.0, |sum, p| sum + p.limit);
                    b.set_length(view.pairs as u64);
                    b.set_position(view.done as u64);
                    b.set_message(line(&view, limit));
                }
            }
        });
        Progress {
            bar,
            _ticker: Some(tokio_util::task::AbortOnDropHandle::new(ticker)),
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The bar's message for a pass as far as it got.
fn line(view: &PassView, limit: f64) -> String {
    let secs = view.elapsed.as_secs_f64().max(1e-3);
    let written = view.counts.visits_written();
    let visits_rate = written as f64 / secs;
    let requests_rate = view.counts.requests as f64 / secs;
    // No pace yet (no request made): no limit to show.
    let limit = if limit > 0.0 {
        format!("{limit:.0}")
    } else {
        "…".to_owned()
    };
    format!(
        "{} ({visits_rate:.0}/s)  {requests_rate:.1} req/s  limit {limit}  ETA {}",
        plural(written, "visit", "visits"),
        eta(view, visits_rate)
    )
}

/// The longer of two estimates: the visits the started pairs have left at the visit rate so
/// far, and the pairs left at the pair rate so far.
fn eta(view: &PassView, visits_rate: f64) -> String {
    let secs = view.elapsed.as_secs_f64();
    if view.done == 0 || secs < 1.0 {
        return "…".to_owned();
    }
    let by_visits = if visits_rate > 0.0 {
        view.visits_left as f64 / visits_rate
    } else {
        0.0
    };
    let by_pairs = (view.pairs.saturating_sub(view.done)) as f64 * secs / view.done as f64;
    let left = by_visits.max(by_pairs);
    humantime::format_duration(Duration::from_secs(left.round() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::events::Counts;

    fn view(done: usize, elapsed: u64, visits_left: u64, written: u64) -> PassView {
        PassView {
            started_at: chrono::Utc::now(),
            due_by: None,
            pairs: 100,
            done,
            failed: 0,
            counts: Counts {
                requests: 40,
                visits_inserted: written,
                ..Counts::default()
            },
            visits_left,
            elapsed: Duration::from_secs(elapsed),
            outcome: None,
            errors: Vec::new(),
        }
    }

    #[test]
    fn the_eta_takes_the_slower_of_visits_left_and_pairs_left() {
        // 10 of 100 pairs in 10 s: 90 s by pairs; 1,000 visits/s with 5,000 left: 5 s.
        assert_eq!(eta(&view(10, 10, 5_000, 10_000), 1_000.0), "1m 30s");
        // 80,000 visits left at 1,000/s: 80 s, while the 50 pairs left at 1/s take 50 s.
        assert_eq!(eta(&view(50, 50, 80_000, 50_000), 1_000.0), "1m 20s");
        assert_eq!(eta(&view(0, 10, 0, 0), 0.0), "…");
        let msg = line(&view(10, 10, 5_000, 10_000), 8.0);
        assert!(
            msg.contains("10000 visits (1000/s)")
                && msg.contains("4.0 req/s")
                && msg.contains("limit 8"),
            "{msg}"
        );
    }

    #[test]
    fn before_any_request_the_limit_is_not_shown_as_minus_zero() {
        let none: f64 = [].iter().sum();
        assert!(none.is_sign_negative(), "the sum of no f64 is -0.0");

        let msg = line(&view(0, 0, 0, 0), none);

        assert!(msg.contains("limit …") && !msg.contains("-0"), "{msg}");
    }

    #[test]
    fn an_error_is_said_once_and_pointed_at_for_the_next_pairs() {
        use crate::domain::{PairKey, RunOutcome};
        let report = |user: i64, error: Option<&str>| crate::engine::PairReport {
            pair: PairKey::new(7, user, None),
            outcome: RunOutcome::Failed,
            totals: Default::default(),
            settled: 0,
            recoveries: Vec::new(),
            error: error.map(str::to_owned),
        };
        let refused = "agent 7: the platform refused the token (HTTP 401): …";
        let pairs = [
            report(1, Some(refused)),
            report(2, None),
            report(3, Some(refused)),
            report(4, Some("other")),
        ];

        let lines = error_lines(&pairs);

        let first = pairs[0].pair.to_string();
        assert_eq!(
            lines,
            [
                Some(refused.to_owned()),
                None,
                Some(format!("the same as {first} above")),
                Some("other".to_owned())
            ]
        );
    }
}
