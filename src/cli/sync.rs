//! `szb-sync sync`: one pass over every configured pair, then exit.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::only::{self, PairSelector};
use super::{exit_code, shutdown_on_signals};
use crate::app::App;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings, only: &[PairSelector]) -> Result<ExitCode> {
    settings.require_targets()?;
    let app = App::build(settings)?;
    let pairs = only::select(app.pairs(), only)?;
    app.migrate().await.context("applying migrations")?;
    let report = app.sync_pairs(&pairs, &shutdown_on_signals()).await;
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
    Ok(exit_code(report.all_ok()))
}
