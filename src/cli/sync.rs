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
    for p in &report.pairs {
        let t = &p.totals;
        out!(
            "{:<40} {:<11} requests {:>4}  inserted {:>6}  updated {:>6}  settled {:>7}{}",
            p.pair.to_string(),
            p.outcome.to_string(),
            t.requests,
            t.visits_inserted,
            t.visits_updated,
            p.settled,
            p.error
                .as_deref()
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
                    let limit: f64 = api.pace().iter().map(|p| p.limit).sum();
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
    format!(
        "{} ({visits_rate:.0}/s)  {requests_rate:.1} req/s  limit {limit:.0}  ETA {}",
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
}
