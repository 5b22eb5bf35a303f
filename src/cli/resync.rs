//! `szb-sync resync`: forget the marks of the matching pairs, so their next sync re-reads them.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::exit_code;
use crate::app::App;
use crate::settings::Settings;

pub(super) async fn run(
    settings: &Settings,
    agent_id: Option<i64>,
    user_id: Option<i64>,
) -> Result<ExitCode> {
    let app = App::build(settings)?;
    let keys: Vec<_> = app
        .pairs()
        .iter()
        .map(|p| p.key.clone())
        .filter(|k| {
            agent_id.is_none_or(|a| a == k.agent_id) && user_id.is_none_or(|u| u == k.user_id)
        })
        .collect();
    if keys.is_empty() {
        anyhow::bail!("no configured pair matches --agent-id {agent_id:?} --user-id {user_id:?}");
    }
    app.migrate().await.context("applying migrations")?;
    let outcome = app.store().forget_marks(&keys).await?;
    out!(
        "forgot {} marks of {} matching pairs: their next sync re-reads them from the start",
        outcome.forgotten,
        keys.len()
    );
    for pair in &outcome.busy {
        out!("{pair}: busy syncing in another process; run resync again when it is done");
    }
    Ok(exit_code(outcome.busy.is_empty()))
}
