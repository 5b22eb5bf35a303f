//! `szb-sync mock-api`: the built-in simulator, serving [`demo_world::MOCK_API`] or a generated
//! world of many users, optionally behind a rate limit and a network latency.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::shutdown_on_signals;
use crate::plural::plural;
use szb_simulator::Simulator;
use szb_simulator::demo_world::{self, GENERATED_AGENT, GENERATED_TOKEN};

#[derive(Debug, clap::Args)]
pub struct MockApiArgs {
    /// Address to listen on (port 0: any free port; the first line printed names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Instead of the demo world: this many users (ids 1..=N) of agent 105131, token
    /// `mock-token`, each with --visits-per-user visits.
    #[arg(long, value_name = "N")]
    users: Option<i64>,
    /// Visits generated for each of --users.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "users")]
    visits_per_user: usize,
    /// Answer every request this much later, as over a real network ("100ms").
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    latency: Option<Duration>,
    /// A server-side rate limit in requests per second (a token bucket with a burst of the same
    /// size); requests over it get a 429 with a Retry-After.
    #[arg(long, value_name = "PER_SECOND")]
    rate_limit: Option<f64>,
}

pub(super) async fn run(args: MockApiArgs) -> Result<ExitCode> {
    if let Some(rate) = args.rate_limit
        && !(rate.is_finite() && rate > 0.0)
    {
        anyhow::bail!("--rate-limit must be more than 0, got {rate}");
    }
    let (sim, description) = match args.users {
        Some(users) if users < 1 => anyhow::bail!("--users must be at least 1, got {users}"),
        Some(users) => {
            let sim = Simulator::new(1);
            sim.add_agent(GENERATED_AGENT, GENERATED_TOKEN);
            for user in 1..=users {
                sim.generate_visits(GENERATED_AGENT, user, args.visits_per_user);
            }
            let line = format!(
                "agent {GENERATED_AGENT} token {GENERATED_TOKEN}: users 1..={users} ({} each)",
                plural(args.visits_per_user, "visit", "visits")
            );
            (sim, vec![line])
        }
        None => (
            demo_world::MOCK_API.build(),
            demo_world::MOCK_API.describe(),
        ),
    };
    if let Some(latency) = args.latency {
        sim.set_latency(latency);
    }
    if let Some(rate) = args.rate_limit {
        sim.set_rate_limit(Some((rate, rate)));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listen = listener.local_addr().context("reading the bound address")?;
    out!("simulated shangzhibo.tv API on http://{listen}");
    for line in description {
        out!("  {line}");
    }
    if args.users.is_none() {
        // The user still online: the answer changes from one request to the next.
        let agent = &demo_world::MOCK_API.agents[0];
        let user = agent
            .users
            .iter()
            .find(|u| u.open)
            .unwrap_or(&agent.users[0]);
        out!(
            "  try: curl -H 'Authorization: Bearer {}' 'http://{listen}/api/v3/agent/{}/user/{}/stats/visits?pageSize=2'",
            agent.token,
            agent.id,
            user.id
        );
    }
    let shutdown = shutdown_on_signals();
    sim.serve(listener, async move { shutdown.cancelled().await })
        .await
        .context("serving the simulator")?;
    Ok(ExitCode::SUCCESS)
}
