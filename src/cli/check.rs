//! `szb-sync check`: the configuration, the database, and one request per agent's token.
//!
//! It is a probe: one attempt per agent, no retry, and a short timeout, so an unreachable
//! platform is reported in seconds, one line per agent, naming what failed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::exit_code;
use crate::api::{ApiClient, ApiError};
use crate::app::{App, AppError};
use crate::domain::{Order, Window};
use crate::error::chain;
use crate::plural::plural;
use crate::secret::redact_url;
use crate::settings::Settings;

/// The longest a probe request waits (less when api.timeout is shorter).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(settings: &Settings, offline: bool) -> Result<ExitCode> {
    // What `run` refuses, `check` (the unit's ExecStartPre) refuses first: a service with no
    // targets would otherwise start, fail and restart forever.
    settings.require_targets()?;
    let pairs = settings.pairs()?;
    out!(
        "configuration: ok ({}, {})",
        plural(settings.targets.len(), "target", "targets"),
        plural(pairs.len(), "pair", "pairs")
    );
    if offline {
        return Ok(ExitCode::SUCCESS);
    }
    let mut ok = true;
    // A database URL the driver refuses is a failed check, not the end of it: the tokens are
    // still worth checking.
    match App::build(settings) {
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
        }
        Err(AppError::Store(e)) => {
            ok = false;
            out!("database: FAILED: {}", chain(&e));
        }
        Err(e) => return Err(e.into()),
    }
    let mut probe_settings = settings.api.clone();
    probe_settings.timeout = probe_settings.timeout.min(PROBE_TIMEOUT);
    let api = ApiClient::new(&probe_settings)?.with_token_origins(settings.token_origins());
    // One request per agent, with the first user of its first target.
    let mut agents = BTreeMap::new();
    for pair in &pairs {
        agents.entry(pair.key.agent_id).or_insert(pair);
    }
    // The configured page size, so a platform that caps it is caught here too.
    let window = Window {
        page: 1,
        page_size: settings.api.page_size,
        order: Order::Desc,
    };
    for (agent, pair) in agents {
        match api.probe(&pair.key, &pair.token, &window).await {
            Ok(page) => out!(
                "agent {agent}: token accepted ({} for user {})",
                plural(page.total, "visit", "visits"),
                pair.key.user_id
            ),
            Err(e) => {
                ok = false;
                out!("agent {agent}: FAILED: {}", failure(agent, &e));
            }
        }
    }
    Ok(exit_code(ok))
}

/// What a probe's failure was, in a few words first (connection refused, timeout, or the
/// HTTP status the error names), each cause once. The line already names the agent, so the
/// error's own "agent N" prefix is dropped; the timeout is the probe's, which may be shorter
/// than api.timeout.
fn failure(agent: i64, err: &ApiError) -> String {
    match err {
        ApiError::Timeout(after) => format!(
            "timeout: no answer within {} (check waits at most {})",
            humantime::format_duration(*after),
            humantime::format_duration(PROBE_TIMEOUT)
        ),
        // The operating system's words for a closed port.
        ApiError::Transport(text) if text.contains("Connection refused") => {
            format!("connection refused: {text}")
        }
        _ => {
            let text = chain(err);
            let own = [format!("agent {agent}: "), format!("agent {agent} ")];
            own.iter()
                .find_map(|prefix| text.strip_prefix(prefix.as_str()))
                .map_or_else(|| text.clone(), str::to_owned)
        }
    }
}
