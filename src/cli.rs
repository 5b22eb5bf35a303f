//! The `szb-sync` command line. `main.rs` parses it and calls [`execute`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::engine::{Engine, EngineOptions, PairOutcome, chain};
use crate::mark::{Order, Window};
use crate::secret::redact_url;
use crate::settings::Settings;
use crate::simulator::Simulator;
use crate::store::Store;
use crate::telemetry::LogFormat;

/// Keeps a Postgres database in step with shangzhibo.tv visit records.
#[derive(Debug, Parser)]
#[command(name = "szb-sync", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default: config/szb-sync.toml when it exists.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr. Filter with RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over every configured pair, then exit (non-zero if any pair failed).
    Sync,
    /// The daemon: apply migrations, sync at start and on schedule.cron, stop cleanly on SIGTERM.
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Check the configuration, the database and each agent's token (one request per agent).
    Check,
    /// Show each pair's mark, last run and last error.
    Status,
    /// Forget the marks of configured pairs so the next sync re-reads them from the start
    /// (after rejects were fixed upstream, say). Stored visits stay.
    Resync {
        /// Only pairs of this agent.
        #[arg(long)]
        agent_id: Option<i64>,
        /// Only this user.
        #[arg(long)]
        user_id: Option<i64>,
    },
    /// Serve the built-in simulator of the upstream API.
    MockApi {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Sync a simulated platform into the configured database and show what landed.
    Demo,
}

/// Runs a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo => crate::demo::run(cli.config.as_deref()).await,
        Command::MockApi { listen } => mock_api(listen).await,
        Command::Migrate => {
            let settings = load(&cli)?;
            let store = connect(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            println!(
                "migrations applied to {}",
                redact_url(settings.database.url.expose())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync => sync(&load(&cli)?).await,
        Command::Run => run(&load(&cli)?).await,
        Command::Check => check(&load(&cli)?).await,
        Command::Status => status(&load(&cli)?).await,
        Command::Resync { agent_id, user_id } => resync(&load(&cli)?, agent_id, user_id).await,
    }
}

fn load(cli: &Cli) -> Result<Settings> {
    Settings::load(cli.config.as_deref()).context("loading the configuration")
}

async fn connect(settings: &Settings) -> Result<Store> {
    Ok(Store::connect(&settings.database.url, settings.pool_size()).await?)
}

/// The engine the settings describe.
pub fn engine(settings: &Settings, store: Store) -> Result<Engine> {
    if settings.api.page_size < 50 {
        tracing::warn!(
            page_size = settings.api.page_size,
            "api.page_size below 50: windows may not line up around tie groups, and the mark may \
             wait while every sync re-reads from there (costs requests, not correctness)"
        );
    }
    let api = ApiClient::new(&settings.api).context("building the HTTP client")?;
    Ok(Engine::new(
        store,
        api,
        EngineOptions {
            page_size: settings.api.page_size,
            settle_after: settings.sync.settle_after,
            concurrency: settings.sync.concurrency,
        },
    ))
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the page in flight");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn sync(settings: &Settings) -> Result<ExitCode> {
    settings.require_targets()?;
    let pairs = settings.pairs()?;
    let store = connect(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let engine = engine(settings, store)?;
    let report = engine.sync_all(&pairs, &shutdown_on_signals()).await;
    for p in &report.pairs {
        let t = &p.totals;
        println!(
            "{:<40} {:<11} requests {:>4}  inserted {:>6}  updated {:>6}  settled {:>7}{}",
            p.pair.to_string(),
            p.outcome.to_string(),
            t.requests,
            t.visits_inserted,
            t.visits_updated,
            p.settled,
            p.error
                .as_deref()
                .map(|e| format!("\n    error: {e}"))
                .unwrap_or_default()
        );
    }
    println!("{report}");
    let ok = report
        .pairs
        .iter()
        .all(|p| matches!(p.outcome, PairOutcome::Ok | PairOutcome::Interrupted));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(settings: &Settings) -> Result<ExitCode> {
    settings.require_targets()?;
    let pairs = settings.pairs()?;
    // Lazy: a database that is away at start-up is retried, not fatal.
    let store = Store::connect_lazy(&settings.database.url, settings.pool_size())?;
    let engine = engine(settings, store.clone())?;
    let shutdown = shutdown_on_signals();
    crate::scheduler::run(engine, pairs, &settings.schedule.cron, shutdown).await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn check(settings: &Settings) -> Result<ExitCode> {
    println!("configuration: ok ({} targets)", settings.targets.len());
    let mut ok = true;
    match connect(settings).await {
        Ok(store) => {
            println!(
                "database: reachable at {}",
                redact_url(settings.database.url.expose())
            );
            store.close().await;
        }
        Err(e) => {
            ok = false;
            println!("database: FAILED: {e:#}");
        }
    }
    let api = ApiClient::new(&settings.api)?;
    // One request per agent, with the first user of its first target.
    let mut agents = BTreeMap::new();
    for pair in settings.pairs()? {
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
            Ok(page) => println!(
                "agent {agent}: token accepted ({} visits for user {})",
                page.total, pair.key.user_id
            ),
            Err(e) => {
                ok = false;
                println!("agent {agent}: FAILED: {}", chain(&e));
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn status(settings: &Settings) -> Result<ExitCode> {
    settings.require_targets()?;
    let store = connect(settings).await?;
    let keys: Vec<_> = settings.pairs()?.into_iter().map(|p| p.key).collect();
    let rows = store.status(&keys).await?;
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20}",
        "pair", "settled", "upstream", "visits", "rejects", "last run", "finished", "last ok"
    );
    let fmt_time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    for r in rows {
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>7}  {:<11} {:<20} {:<20}",
            r.pair.to_string(),
            r.settled.map_or("-".to_owned(), |s| s.to_string()),
            r.upstream_total.map_or("-".to_owned(), |s| s.to_string()),
            r.visits,
            r.rejects,
            r.last_outcome.as_deref().unwrap_or("never"),
            fmt_time(r.last_finished_at),
            fmt_time(r.last_ok_at),
        );
        if let Some(e) = r.last_error {
            println!("    last error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn resync(
    settings: &Settings,
    agent_id: Option<i64>,
    user_id: Option<i64>,
) -> Result<ExitCode> {
    let keys: Vec<_> = settings
        .pairs()?
        .into_iter()
        .map(|p| p.key)
        .filter(|k| {
            agent_id.is_none_or(|a| a == k.agent_id) && user_id.is_none_or(|u| u == k.user_id)
        })
        .collect();
    if keys.is_empty() {
        anyhow::bail!("no configured pair matches --agent-id {agent_id:?} --user-id {user_id:?}");
    }
    let store = connect(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let outcome = store.forget_marks(&keys).await?;
    println!(
        "forgot {} marks of {} matching pairs: their next sync re-reads them from the start",
        outcome.forgotten,
        keys.len()
    );
    for pair in &outcome.busy {
        println!("{pair}: busy syncing in another process; run resync again when it is done");
    }
    Ok(if outcome.busy.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn mock_api(listen: SocketAddr) -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let sim = Simulator::demo();
    println!("simulated shangzhibo.tv API on http://{listen}");
    println!("  agent 105131 token demo-token-105131: users 15460259, 15460260");
    println!("  agent 200001 token demo-token-200001: user 30000001");
    println!(
        "  try: curl -H 'Authorization: Bearer demo-token-105131' 'http://{listen}/api/v3/agent/105131/user/15460260/stats/visits?pageSize=2'"
    );
    let shutdown = shutdown_on_signals();
    sim.serve(listener, async move { shutdown.cancelled().await })
        .await
        .context("serving the simulator")?;
    Ok(ExitCode::SUCCESS)
}
