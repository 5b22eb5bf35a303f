//! `szb-sync run`: the daemon, until SIGTERM or SIGINT; SIGHUP reloads the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::shutdown_on_signals;
use crate::app::App;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings, config: &Option<PathBuf>) -> Result<ExitCode> {
    settings.require_targets()?;
    // The store connects lazily: a database that is away at start-up is retried, not fatal.
    let app = App::build(settings)?;
    let (reloads, reloaded) = mpsc::channel(1);
    // Listening before anything else runs: SIGHUP's default action would end the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    #[cfg(unix)]
    let _hup = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(reload_on_sighup(
        hup,
        config.clone(),
        reloads,
    )));
    app.run(shutdown_on_signals(), Some(reloaded)).await?;
    Ok(ExitCode::SUCCESS)
}

/// On each SIGHUP, reads the configuration again (file and environment, as at start) and hands
/// it to the daemon; a configuration that does not load is refused, named, and the running one
/// kept.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    config: Option<PathBuf>,
    reloads: mpsc::Sender<Settings>,
) {
    {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let loaded = super::load(&config).and_then(|s| {
                s.require_targets()?;
                Ok(s)
            });
            match loaded {
                Ok(settings) => {
                    if reloads.send(settings).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    error = %crate::error::logged(e.as_ref()),
                    "configuration reload refused; the running configuration stays"
                ),
            }
        }
    }
}
