//! `szb-sync demo`: the simulator in-process, two syncs into the configured database, and what
//! landed. Works with no config file at all (the local Postgres, database `szb`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::secret::{Secret, redact_url};
use crate::settings::{Settings, Target};
use crate::simulator::Simulator;
use crate::store::{SAMPLE_QUERY, Store};

/// The demo's simulated agents: ids no real account uses, so the demo never touches real rows.
struct DemoAgent {
    id: i64,
    token: &'static str,
    /// (user, visits generated for it)
    users: &'static [(i64, usize)],
}

const AGENTS: [DemoAgent; 2] = [
    DemoAgent {
        id: 990_001,
        token: "demo-token-990001",
        users: &[(1_000_001, 1_500), (1_000_002, 40)],
    },
    DemoAgent {
        id: 990_002,
        token: "demo-token-990002",
        users: &[(2_000_001, 7)],
    },
];

pub async fn run(config: Option<&Path>) -> Result<ExitCode> {
    let mut settings = Settings::load(config).context("loading the configuration")?;
    let url = settings.database.url.clone();
    println!("szb-sync demo → {}", redact_url(url.expose()));
    if Store::create_database_if_missing(&url).await? {
        println!("  created the database");
    }
    let store = Store::connect(&url, settings.pool_size()).await?;
    store.migrate().await.context("applying migrations")?;
    let agent_ids: Vec<i64> = AGENTS.iter().map(|a| a.id).collect();
    // A rerun starts from scratch: the simulator's visits are generated relative to now.
    store.forget_agents(&agent_ids).await?;

    let sim = Simulator::new(2024);
    for agent in &AGENTS {
        sim.add_agent(agent.id, agent.token);
        for (user, visits) in agent.users {
            sim.generate_visits(agent.id, *user, *visits);
        }
    }
    sim.open_visit(990_001, 1_000_002);
    let server = sim.spawn().await.context("starting the simulator")?;
    println!("  simulated platform at {}", server.base_url);

    settings.api.base_url = server.base_url.parse().context("simulator url")?;
    settings.api.token = None;
    settings.api.token_file = None;
    settings.targets = AGENTS
        .iter()
        .map(|agent| Target {
            agent_id: agent.id,
            user_ids: agent.users.iter().map(|(u, _)| *u).collect(),
            token: Some(Secret::new(agent.token)),
            activity_id: None,
        })
        .collect();
    let pairs = settings.pairs()?;
    let engine = crate::cli::engine(&settings, store.clone())?;
    let never = CancellationToken::new();

    println!("\n1. first sync: every visit of {} pairs", pairs.len());
    let report = engine.sync_all(&pairs, &never).await;
    println!("   {report}");

    sim.append_visits(990_001, 1_000_001, 25);
    sim.extend_open_visits(chrono::Duration::minutes(12));
    println!("\n2. upstream moved on: 25 new visits, one viewer still online for 12 more minutes");
    let report = engine.sync_all(&pairs, &never).await;
    println!("   {report}");

    println!("\n3. a sync with nothing new upstream");
    let report = engine.sync_all(&pairs, &never).await;
    println!("   {report}");

    let (visits, activities) = store.count_for_agents(&agent_ids).await?;
    println!("\nIn Postgres now: {visits} visits of {activities} activities. A sample query:\n");
    println!(
        "{}\n",
        SAMPLE_QUERY.replace("$1", &format!("ARRAY{agent_ids:?}"))
    );
    println!(
        "{:<24} {:>8} {:>7} {:>16}",
        "activity", "viewers", "visits", "minutes_watched"
    );
    for row in store.sample_query(&agent_ids).await? {
        println!(
            "{:<24} {:>8} {:>7} {:>16}",
            row.activity.unwrap_or_else(|| "(deleted)".into()),
            row.viewers,
            row.visits,
            row.minutes_watched
        );
    }
    println!(
        "\nTry: psql '{}' -c 'SELECT * FROM sync_runs ORDER BY id DESC LIMIT 5'",
        redact_url(url.expose())
    );
    let failed = report.failed().count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
