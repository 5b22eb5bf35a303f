//! `szb-sync migrate`: apply the migrations and exit; with `--create-database`, create the
//! configured database first when it does not exist.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::app::App;
use crate::secret::redact_url;
use crate::settings::Settings;
use crate::store::Store;

pub(super) async fn run(settings: &Settings, create_database: bool) -> Result<ExitCode> {
    let url = redact_url(settings.database.url.expose());
    if create_database && Store::create_database_if_missing(&settings.database.url).await? {
        out!("created the database {url}");
    }
    let app = App::build(settings)?;
    app.migrate().await.context("applying migrations")?;
    out!("migrations applied to {url}");
    Ok(ExitCode::SUCCESS)
}
