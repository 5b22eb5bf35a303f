//! `szb-sync check`: the configuration, the database, and one request per agent's token.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;

use super::exit_code;
use crate::api::ApiClient;
use crate::app::{App, AppError};
use crate::domain::{Order, Window};
use crate::error::chain;
use crate::secret::redact_url;
use crate::settings::Settings;

pub(super) async fn run(settings: &Settings, offline: bool) -> Result<ExitCode> {
    // What `run` refuses, `check` (the unit's ExecStartPre) refuses first: a service with no
    // targets would otherwise start, fail and restart forever.
    settings.require_targets()?;
    let pairs = settings.pairs()?;
    out!(
        "configuration: ok ({} targets, {} pairs)",
        settings.targets.len(),
        pairs.len()
    );
    if offline {
        return Ok(ExitCode::SUCCESS);
    }
    let mut ok = true;
    // A database URL the driver refuses is a failed check, not the end of it: the tokens are
    // still worth checking.
    let api = match App::build(settings) {
        Ok(app) => {
            match app.store().reachable().await {
                Ok(()) => out!(
                    "database: reachable at {}",
                    redact_url(settings.database.url.expose())
                ),
                Err(e) => {
                    ok = false;
                    out!("database: FAILED: {}", chain(&e));
                }
            }
            app.store().close().await;
            app.api().clone()
        }
        Err(AppError::Store(e)) => {
            ok = false;
            out!("database: FAILED: {}", chain(&e));
            ApiClient::new(&settings.api)?
        }
        Err(e) => return Err(e.into()),
    };
    // One request per agent, with the first user of its first target.
    let mut agents = BTreeMap::new();
    for pair in &pairs {
        agents.entry(pair.key.agent_id).or_insert(pair);
    }
    // The configured page size, so a platform that caps it is caught here too.
    let probe = Window {
        page: 1,
        page_size: settings.api.page_size,
        order: Order::Desc,
    };
    for (agent, pair) in agents {
        match api.fetch(&pair.key, &pair.token, &probe).await {
            Ok(page) => out!(
                "agent {agent}: token accepted ({} visits for user {})",
                page.total,
                pair.key.user_id
            ),
            Err(e) => {
                ok = false;
                out!("agent {agent}: FAILED: {}", chain(&e));
            }
        }
    }
    Ok(exit_code(ok))
}
