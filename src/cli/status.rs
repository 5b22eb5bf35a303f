//! `szb-sync status`: each configured pair's mark, last run, last success and last error.

use std::process::ExitCode;

use anyhow::Result;

use super::table;
use crate::app::App;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings) -> Result<ExitCode> {
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
    let rows = app.store().status(&keys).await?;
    out!(
        "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20}",
        "pair",
        "settled",
        "upstream",
        "visits",
        "rejects",
        "last run",
        "finished",
        "last ok"
    );
    print_rows(rows);
    if !dropped.is_empty() {
        out!(
            "\nnot configured ({} {}): kept in the tables with their marks; nothing syncs them",
            dropped.len(),
            if dropped.len() == 1 { "pair" } else { "pairs" }
        );
        print_rows(app.store().status(&dropped).await?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: Vec<crate::store::PairStatus>) {
    for r in rows {
        out!(
            "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20}",
            r.pair.to_string(),
            table::count(r.settled),
            table::count(r.upstream_total),
            r.visits,
            r.rejects,
            r.last_outcome.map_or("never", |o| o.as_str()),
            table::time(r.last_finished_at),
            table::time(r.last_ok_at),
        );
        if let Some(e) = r.last_error {
            out!("    last error: {e}");
        }
        if let Some(owner) = &r.lease_owner {
            out!("    syncing now on {owner}");
        }
        if let Some(due) = r.next_due_at.filter(|_| r.failures_in_row > 0) {
            out!(
                "    backing off after {} failed {} in a row: next try at {}",
                r.failures_in_row,
                if r.failures_in_row == 1 {
                    "run"
                } else {
                    "runs"
                },
                table::time(Some(due))
            );
        }
    }
}
