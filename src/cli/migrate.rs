//! `szb-sync migrate`: apply the migrations and exit.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::app::App;
use crate::secret::redact_url;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings) -> Result<ExitCode> {
    let app = App::build(settings)?;
    app.migrate().await.context("applying migrations")?;
    out!(
        "migrations applied to {}",
        redact_url(settings.database.url.expose())
    );
    Ok(ExitCode::SUCCESS)
}
