//! The `szb-sync` command line. `main.rs` parses it and calls [`execute`]; each subcommand has a
//! file of its own here, and builds what it needs through [`crate::app::App`].

// First, so that its `out!` is in scope in the files below.
#[macro_use]
mod output;

mod bench;
mod check;
mod demo;
mod generate;
mod migrate;
mod mock_api;
mod only;
mod rejects;
mod resync;
mod run;
mod status;
mod sync;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::telemetry::LogFormat;

/// Keeps a Postgres database in step with shangzhibo.tv visit records.
#[derive(Debug, Parser)]
#[command(name = "szb-sync", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default: config/szb-sync.toml in the working directory; it
    /// must exist unless SZB_TARGETS sets the targets (demo and bench need none).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: text or json on stderr, or journald. Default: journald when stderr is the
    /// journal (under systemd), else text. Filter with RUST_LOG (default: info).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over every configured pair, then exit (non-zero if any pair failed).
    Sync {
        /// Sync only these configured pairs (comma-separated, or the option repeated). An entry
        /// that is not a configured pair stops the command before anything syncs.
        #[arg(long, value_name = "AGENT:USER", value_delimiter = ',')]
        only: Vec<only::PairSelector>,
    },
    /// The daemon: apply migrations, sync at start and on schedule.cron, stop cleanly on SIGTERM.
    Run,
    /// Apply the database migrations and exit.
    Migrate {
        /// Create the configured database first when it does not exist (on the server of
        /// database.url, as its user, who needs the CREATEDB privilege).
        #[arg(long)]
        create_database: bool,
    },
    /// Check the configuration, the database and each agent's token (one request per agent).
    Check {
        /// Only the configuration: no database, no request (for `ExecStartPre=`).
        #[arg(long)]
        offline: bool,
    },
    /// Show each pair's mark, last run and last error; exits 1 when a configured pair is failing.
    Status {
        /// Print one JSON document (`failing`, `pairs`) instead of the table; the exit code is
        /// the same.
        #[arg(long)]
        json: bool,
    },
    /// List the items the platform sent that are not valid visits, newest first, with why.
    Rejects(rejects::RejectsArgs),
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
    MockApi(mock_api::MockApiArgs),
    /// Sync a simulated platform into a database of its own and show what landed: `szb_demo`
    /// on the configured server (created when missing), never the configured database itself.
    Demo(demo::DemoArgs),
    /// Measure the performance workloads end to end (simulator and syncs as child processes,
    /// a fresh database `szb_bench` on the configured server) and print a table.
    Bench(bench::BenchArgs),
    /// Print the shell completion script for SHELL (bash: source it; zsh: save it as `_szb-sync`
    /// in your $fpath; fish: save it in ~/.config/fish/completions/).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page, szb-sync(1), as roff (`szb-sync man | man -l -`).
    Man {
        /// Write szb-sync.1 and a page per subcommand (szb-sync-sync.1, …) into this directory
        /// instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Runs a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode> {
    let settings = || load(&cli.config);
    // These need no config file: without one they take the defaults and the environment.
    let optional =
        || Settings::load_optional(cli.config.as_deref()).context("loading the configuration");
    match cli.command {
        Command::Demo(args) => demo::run(&optional()?, args).await,
        Command::Bench(args) => bench::run(&optional()?, args).await,
        Command::MockApi(args) => mock_api::run(args).await,
        Command::Migrate { create_database } => migrate::run(&settings()?, create_database).await,
        Command::Sync { only } => sync::run(&settings()?, &only).await,
        Command::Run => run::run(&settings()?, &cli.config).await,
        Command::Check { offline } => check::run(&settings()?, offline).await,
        Command::Status { json } => status::run(&settings()?, json).await,
        Command::Rejects(args) => rejects::run(&settings()?, args).await,
        Command::Completions { shell } => Ok(generate::completions(shell)),
        Command::Man { out_dir } => generate::man(out_dir.as_deref()),
        Command::Resync { agent_id, user_id } => resync::run(&settings()?, agent_id, user_id).await,
    }
}

fn load(config: &Option<PathBuf>) -> Result<Settings> {
    Settings::load(config.as_deref()).context("loading the configuration")
}

/// Success when `ok`, else the failure code.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The signal that asked for shutdown (its number), 0 before one came.
static STOPPED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit code of a command cut short by a signal: 128 + its number, as shells report it.
fn interrupted_code() -> Option<ExitCode> {
    let signal = STOPPED_BY.load(std::sync::atomic::Ordering::Relaxed);
    (signal > 0).then(|| ExitCode::from(u8::try_from(128 + signal).unwrap_or(130)))
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        STOPPED_BY.store(signal, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(signal, "shutdown requested: finishing the page in flight");
        cancel.cancel();
        let signal = wait_for_signal().await;
        tracing::warn!(signal, "second signal: exiting now");
        std::process::exit(128 + signal);
    });
    token
}

/// Waits for SIGINT or SIGTERM; returns its number.
async fn wait_for_signal() -> i32 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => 2,
            _ = term.recv() => 15,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        2
    }
}
