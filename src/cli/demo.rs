//! `szb-sync demo`: the simulator in-process ([`demo_world::DEMO`]), syncs into the configured
//! database, and what landed. Works with no config file at all (the local Postgres, database
//! `szb`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::exit_code;
use crate::app::App;
use crate::secret::{Secret, redact_url};
use crate::settings::{Settings, Target};
use crate::simulator::demo_world;
use crate::store::{SAMPLE_QUERY, Store};

pub(super) async fn run(settings: &Settings) -> Result<ExitCode> {
    let world = demo_world::DEMO;
    let mut settings = settings.clone();
    let url = settings.database.url.clone();
    out!("szb-sync demo → {}", redact_url(url.expose()));
    if Store::create_database_if_missing(&url).await? {
        out!("  created the database");
    }

    let sim = world.build();
    let server = sim.spawn().await.context("starting the simulator")?;
    out!("  simulated platform at {}", server.base_url);
    settings.api.base_url = server.base_url.parse().context("simulator url")?;
    settings.api.token = None;
    settings.api.token_file = None;
    settings.targets = world
        .agents
        .iter()
        .map(|agent| Target {
            agent_id: agent.id,
            user_ids: agent.users.iter().map(|u| u.id).collect(),
            user_ids_file: None,
            token: Some(Secret::new(agent.token)),
            activity_id: None,
        })
        .collect();
    let app = App::build(&settings)?;
    app.migrate().await.context("applying migrations")?;
    let store = app.store();
    let agent_ids = world.agent_ids();
    // A rerun starts from scratch: the simulator's visits are generated relative to now.
    store.forget_agents(&agent_ids).await?;
    let never = CancellationToken::new();

    out!(
        "\n1. first sync: every visit of {} pairs",
        app.pairs().len()
    );
    let report = app.sync_once(&never).await;
    out!("   {report}");

    let (first_agent, first_user) = (world.agents[0].id, world.agents[0].users[0].id);
    sim.append_visits(first_agent, first_user, demo_world::DEMO_APPENDS);
    sim.extend_open_visits(chrono::Duration::minutes(12));
    out!(
        "\n2. upstream moved on: {} new visits, one viewer still online for 12 more minutes",
        demo_world::DEMO_APPENDS
    );
    let report = app.sync_once(&never).await;
    out!("   {report}");

    out!("\n3. a sync with nothing new upstream");
    let report = app.sync_once(&never).await;
    out!("   {report}");

    let (visits, activities) = store.count_for_agents(&agent_ids).await?;
    out!("\nIn Postgres now: {visits} visits of {activities} activities. A sample query:\n");
    out!(
        "{}\n",
        SAMPLE_QUERY.replace("$1", &format!("ARRAY{agent_ids:?}"))
    );
    out!(
        "{:<24} {:>8} {:>7} {:>16}",
        "activity",
        "viewers",
        "visits",
        "minutes_watched"
    );
    for row in store.sample_query(&agent_ids).await? {
        out!(
            "{:<24} {:>8} {:>7} {:>16}",
            row.activity.unwrap_or_else(|| "(deleted)".into()),
            row.viewers,
            row.visits,
            row.minutes_watched
        );
    }
    out!(
        "\nTry: psql '{}' -c 'SELECT * FROM sync_runs ORDER BY id DESC LIMIT 5'",
        redact_url(url.expose())
    );
    Ok(exit_code(report.failed().count() == 0))
}
