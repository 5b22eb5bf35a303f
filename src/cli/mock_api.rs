//! `szb-sync mock-api`: the built-in simulator, serving [`demo_world::MOCK_API`] or a generated
//! world of many users, optionally behind a rate limit and a network latency, and with viewers
//! arriving in the background (the freshness benchmark's workload).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::shutdown_on_signals;
use crate::plural::plural;
use szb_simulator::demo_world::{self, GENERATED_AGENT, GENERATED_TOKEN};
use szb_simulator::{ArrivalPlan, Simulator};

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
    #[command(flatten)]
    arrivals: ArrivalArgs,
}

/// Viewers arriving while a daemon syncs: every step, open visits (`visitAt` = now) for users
/// picked with Zipf weights from a hot set, or now and then for a random cold user.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Arrivals (with --users)")]
struct ArrivalArgs {
    /// Turns arrivals on: a step this often ("5s"). They wait for `POST /_sim/arrivals`
    /// unless --arrivals-after says when to start.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, requires = "users")]
    arrivals_every: Option<Duration>,
    /// Visits opened at each step.
    #[arg(long, value_name = "N", default_value_t = 8, requires = "arrivals_every", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    arrivals_per_step: u64,
    /// Users in the hot set (drawn once from 1..=--users by --arrivals-seed).
    #[arg(long, value_name = "N", default_value_t = 100, requires = "arrivals_every", value_parser = clap::value_parser!(u64).range(1..))]
    hot_users: u64,
    /// The Zipf exponent s over the hot set: the k-th hottest user is picked in proportion to
    /// 1/k^s (0: all alike).
    #[arg(long, value_name = "S", default_value_t = 1.0, requires = "arrivals_every", value_parser = zipf_exponent)]
    zipf: f64,
    /// The share of picks that go to a uniformly random user of all --users instead (0..=1).
    #[arg(long, value_name = "SHARE", default_value_t = 0.1, requires = "arrivals_every", value_parser = share)]
    cold_share: f64,
    /// Steps stop this long after the first.
    #[arg(long, value_name = "DURATION", default_value = "6m", requires = "arrivals_every", value_parser = humantime::parse_duration)]
    arrivals_for: Duration,
    /// Start by itself this long after listening, rather than on `POST /_sim/arrivals`.
    #[arg(long, value_name = "DURATION", requires = "arrivals_every", value_parser = humantime::parse_duration)]
    arrivals_after: Option<Duration>,
    /// The seed of the picks: the same seed opens visits for the same users in the same order.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 18,
        requires = "arrivals_every"
    )]
    arrivals_seed: u64,
    /// Appends one JSON line per visit opened, written as it is opened: {"agent", "user",
    /// "activity_id", "visit_at" (RFC 3339), "hot"}. The file is created or emptied at start.
    #[arg(long, value_name = "FILE", requires = "arrivals_every")]
    arrivals_log: Option<PathBuf>,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(d)
}

fn zipf_exponent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("must be a number of at least 0, got {text:?}")),
    }
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=1.0).contains(&s) => Ok(s),
        _ => Err(format!("must be a number from 0 to 1, got {text:?}")),
    }
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
    let arrivals = match (args.users, args.arrivals.arrivals_every) {
        (Some(users), Some(every)) => Some(Arrivals::plan(&args.arrivals, users, every)?),
        _ => None,
    };
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
    let arrivals = arrivals.map(|a| a.spawn(&sim, listen));
    let shutdown = shutdown_on_signals();
    sim.clone()
        .serve(listener, async move { shutdown.cancelled().await })
        .await
        .context("serving the simulator")?;
    if let Some(task) = arrivals {
        task.abort();
    }
    let (requests, limited, opened) = sim.with_world(|w| {
        (
            w.request_count(),
            w.rate_limited_count(),
            w.arrivals_count(),
        )
    });
    out!(
        "stopped after {}, {limited} of them answered 429 (rate limited); {} opened by arrivals",
        plural(requests, "visits request", "visits requests"),
        plural(opened, "visit", "visits")
    );
    Ok(ExitCode::SUCCESS)
}

/// The arrivals of `mock-api`, planned and with their log open, not started yet.
struct Arrivals {
    plan: ArrivalPlan,
    log: Option<(std::fs::File, PathBuf)>,
    after: Option<Duration>,
}

impl Arrivals {
    /// Plans the arrivals of `args` over users `1..=users` and opens their log, before
    /// anything is served: a bad value or an unwritable log ends `mock-api` at once.
    fn plan(args: &ArrivalArgs, users: i64, every: Duration) -> Result<Self> {
        if args.hot_users > users.unsigned_abs() {
            anyhow::bail!(
                "--hot-users {} is more than --users {users}: the hot set is drawn from those users",
                args.hot_users
            );
        }
        let plan = ArrivalPlan {
            agent_id: GENERATED_AGENT,
            users,
            every,
            per_step: usize::try_from(args.arrivals_per_step)?,
            hot_users: usize::try_from(args.hot_users)?,
            zipf_exponent: args.zipf,
            cold_share: args.cold_share,
            duration: args.arrivals_for,
            seed: args.arrivals_seed,
        };
        plan.validate().map_err(anyhow::Error::msg)?;
        let log = match &args.arrivals_log {
            Some(path) => Some((
                std::fs::File::create(path)
                    .with_context(|| format!("creating the arrivals log {}", path.display()))?,
                path.clone(),
            )),
            None => None,
        };
        Ok(Arrivals {
            plan,
            log,
            after: args.arrivals_after,
        })
    }

    /// Says what they will do, and starts the task that waits for their start (the delay, or
    /// `POST /_sim/arrivals`) and then runs them, writing each to the log.
    fn spawn(self, sim: &Simulator, listen: SocketAddr) -> tokio::task::JoinHandle<()> {
        let Arrivals {
            plan,
            mut log,
            after,
        } = self;
        let start = match after {
            Some(after) => format!("starting in {}", humantime::format_duration(after)),
            None => format!("starting on POST http://{listen}/_sim/arrivals"),
        };
        out!(
            "  arrivals: every {}, {} from a hot set of {} (Zipf s = {}, cold share {}), for {}, seed {}; {start}",
            humantime::format_duration(plan.every),
            plural(plan.per_step, "visit", "visits"),
            plan.hot_users,
            plan.zipf_exponent,
            plan.cold_share,
            humantime::format_duration(plan.duration),
            plan.seed
        );
        let gate = sim.arrivals_gate();
        let sim = sim.clone();
        tokio::spawn(async move {
            match after {
                Some(after) => tokio::select! {
                    _ = gate => {}
                    () = tokio::time::sleep(after) => {}
                },
                None => {
                    if gate.await.is_err() {
                        return;
                    }
                }
            }
            let mut failed = false;
            let opened = sim
                .run_arrivals(&plan, |arrival| {
                    let Some((file, path)) = &mut log else { return };
                    if failed {
                        return;
                    }
                    let mut line = serde_json::to_vec(arrival).expect("an arrival serializes");
                    line.push(b'\n');
                    // One write per line, unbuffered: a reader sees whole lines as they happen.
                    if let Err(e) = file.write_all(&line) {
                        eprintln!(
                            "error: writing the arrivals log {}: {e}; no more lines go to it",
                            path.display()
                        );
                        failed = true;
                    }
                })
                .await;
            out!(
                "arrivals: done, {} opened",
                plural(opened, "visit", "visits")
            );
        })
    }
}
