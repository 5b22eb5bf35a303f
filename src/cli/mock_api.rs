//! `szb-sync mock-api`: the built-in simulator, serving [`demo_world::MOCK_API`].

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::shutdown_on_signals;
use crate::simulator::demo_world;

pub(super) async fn run(listen: SocketAddr) -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let world = demo_world::MOCK_API;
    let sim = world.build();
    println!("simulated shangzhibo.tv API on http://{listen}");
    for line in world.describe() {
        println!("  {line}");
    }
    let (agent, user) = (&world.agents[0], &world.agents[0].users[0]);
    println!(
        "  try: curl -H 'Authorization: Bearer {}' 'http://{listen}/api/v3/agent/{}/user/{}/stats/visits?pageSize=2'",
        agent.token, agent.id, user.id
    );
    let shutdown = shutdown_on_signals();
    sim.serve(listener, async move { shutdown.cancelled().await })
        .await
        .context("serving the simulator")?;
    Ok(ExitCode::SUCCESS)
}
