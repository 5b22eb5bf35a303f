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
    /// Configuration file (TOML), for the commands that read one (all but mock-api,
    /// completions and man); before the command or after it. Default: config/szb-sync.toml in
    /// the working directory, else /etc/szb-sync/szb-sync.toml; one must exist unless
    /// SZB_TARGETS sets the targets (demo and bench need none).
    #[arg(long, short, value_name = "FILE")]
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
    ///
    /// Applies the migrations first. Prints a line per pair and a summary; on a terminal a
    /// progress bar follows the pass on stderr. Exit codes: 0 when every pair synced, 1 when
    /// one failed, 128 + the signal when SIGINT or SIGTERM cut it short (committed pages stay).
    Sync {
        /// Sync only these configured pairs (comma-separated, or the option repeated). An entry
        /// that is not a configured pair stops the command before anything syncs.
        #[arg(long, value_name = "AGENT:USER", value_delimiter = ',')]
        only: Vec<only::PairSelector>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The daemon: apply migrations, sync at start and on schedule.cron, stop cleanly on SIGTERM.
    ///
    /// Migrations are retried while the database is away. A first pass runs at once, then one
    /// per tick of schedule.cron (UTC); the start-up log line names the next tick. SIGHUP reloads
    /// the configuration; SIGTERM or SIGINT stops after the page in flight, exit code 0.
    Run(ConfigArg),
    /// Apply the database migrations and exit.
    Migrate {
        /// Create the configured database first when it does not exist (on the server of
        /// database.url, as its user, who needs the CREATEDB privilege).
        #[arg(long)]
        create_database: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check the configuration, the database and each agent's token (one request per agent).
    Check {
        /// Only the configuration: no database, no request (for `ExecStartPre=`).
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show each pair's mark, last run and last error; exits 1 when a configured pair is failing.
    Status {
        /// Print one JSON document (`failing`, `pairs`) instead of the table; the exit code is
        /// the same.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the items the platform sent that are not valid visits, newest first, with why.
    Rejects(rejects::RejectsArgs),
    /// Forget the marks of configured pairs so the next sync re-reads them from the start
    /// (after rejects were fixed upstream, say). Stored visits stay.
    ///
    /// Name the pairs with --agent-id and/or --user-id, or give --all for every configured
    /// pair. Without either, resync asks on a terminal and refuses otherwise.
    Resync(resync::ResyncArgs),
    /// Serve the built-in simulator of the upstream API (reads no configuration file).
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

/// `--config FILE` after a command that reads the configuration (`szb-sync sync --config F`);
/// [`Cli::config`] takes it before the command. Commands that read none do not have it, so
/// their help, man page and completions do not offer it.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (TOML). Default: config/szb-sync.toml in the working directory, else
    /// /etc/szb-sync/szb-sync.toml; one must exist unless SZB_TARGETS sets the targets (demo and
    /// bench need none).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The log filter when `RUST_LOG` is unset: `demo` prints its own story, so its log shows
    /// only warnings; every other command logs at info.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => crate::telemetry::QUIET_FILTER,
            Command::Sync { .. } if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
                crate::telemetry::TERMINAL_SYNC_FILTER
            }
            _ => crate::telemetry::DEFAULT_FILTER,
        }
    }
}

impl Command {
    /// The command's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Sync { .. } => "sync",
            Command::Run(_) => "run",
            Command::Migrate { .. } => "migrate",
            Command::Check { .. } => "check",
            Command::Status { .. } => "status",
            Command::Rejects(_) => "rejects",
            Command::Resync(_) => "resync",
            Command::MockApi(_) => "mock-api",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }

    /// The `--config` given after the command; `None` for a command that reads no
    /// configuration.
    fn config_arg(&self) -> Option<&ConfigArg> {
        match self {
            Command::Sync { config, .. }
            | Command::Check { config, .. }
            | Command::Status { config, .. }
            | Command::Run(config)
            | Command::Migrate { config, .. } => Some(config),
            Command::Demo(args) => Some(&args.config),
            Command::Rejects(args) => Some(&args.config),
            Command::Resync(args) => Some(&args.config),
            Command::Bench(args) => Some(&args.config),
            Command::MockApi(_) | Command::Completions { .. } | Command::Man { .. } => None,
        }
    }
}

/// Runs a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode> {
    let name = cli.command.name();
    let config = match (cli.config, cli.command.config_arg()) {
        (Some(_), None) => {
            return Ok(usage_error(name, &no_config_message(name)));
        }
        (Some(_), Some(ConfigArg { config: Some(_) })) => {
            return Ok(usage_error(
                name,
                "--config is given twice, before and after the command; give it once",
            ));
        }
        (before, after) => before.or_else(|| after.and_then(|a| a.config.clone())),
    };
    if let Some(path) = &config {
        crate::store::hint_with_config(path);
    }
    let settings = || load(&config);
    // These need no config file: without one they take the defaults and the environment.
    let optional =
        || Settings::load_optional(config.as_deref()).context("loading the configuration");
    match cli.command {
        Command::Demo(args) => demo::run(&optional()?, args).await,
        Command::Bench(args) => bench::run(&optional()?, args).await,
        Command::MockApi(args) => mock_api::run(args).await,
        Command::Migrate {
            create_database, ..
        } => migrate::run(&settings()?, create_database).await,
        Command::Sync { only, .. } => sync::run(&settings()?, &only).await,
        Command::Run(_) => run::run(&settings()?, &config).await,
        Command::Check { offline, .. } => check::run(&settings()?, offline).await,
        Command::Status { json, .. } => status::run(&settings()?, json).await,
        Command::Rejects(args) => rejects::run(&settings()?, args).await,
        Command::Completions { shell } => Ok(generate::completions(shell)),
        Command::Man { out_dir } => generate::man(out_dir.as_deref()),
        Command::Resync(args) => resync::run(&settings()?, args).await,
    }
}

fn load(config: &Option<PathBuf>) -> Result<Settings> {
    Settings::load(config.as_deref()).context("loading the configuration")
}

/// Why `--config` is refused around `command`, which reads no configuration.
fn no_config_message(command: &str) -> String {
    format!("{command} reads no configuration file, so --config would be ignored; drop it")
}

/// The commands that read no configuration file, so take no `--config`.
const NO_CONFIG: [&str; 3] = ["mock-api", "completions", "man"];

/// clap's error for `args` (the process's arguments), with one made clearer: `--config` after a
/// command that reads none (`mock-api --config x`) is refused in the same words as before it,
/// not with clap's bare "unexpected argument".
pub fn parse_error(error: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let is_config = arg == "--config" || arg.starts_with("--config=") || arg.starts_with("-c");
    let command = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| NO_CONFIG.contains(a));
    match command {
        Some(command) if is_config => {
            use clap::CommandFactory as _;
            let mut cli = Cli::command();
            cli.build();
            let mut sub = cli.find_subcommand(command).cloned().unwrap_or(cli);
            sub.error(ErrorKind::ArgumentConflict, no_config_message(command))
        }
        _ => error,
    }
}

/// A usage error of `command` found after parsing: said as clap says its own (`error: …`, the
/// command's usage, how to get help), with clap's exit code, 2.
fn usage_error(command: &str, message: &str) -> ExitCode {
    use clap::CommandFactory as _;
    let mut cli = Cli::command();
    cli.build();
    let mut command = cli.find_subcommand(command).cloned().unwrap_or(cli);
    let _ = command
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .print();
    ExitCode::from(2)
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
