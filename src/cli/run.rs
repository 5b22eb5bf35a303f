//! `szb-sync run`: the daemon, until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Result;

use super::shutdown_on_signals;
use crate::app::App;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings) -> Result<ExitCode> {
    settings.require_targets()?;
    // The store connects lazily: a database that is away at start-up is retried, not fatal.
    let app = App::build(settings)?;
    app.run_until_stopped(shutdown_on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}
