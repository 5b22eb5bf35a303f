//! `szb-sync completions SHELL` and `szb-sync man`: generated from the command line's own
//! definition, so they list exactly the options this build has. The package ships the copies
//! in `deploy/completions/` and `deploy/man/`; a test keeps them equal to these.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, output};

/// The command line as the man pages show it: without the `help` subcommand, which has no page.
fn command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "szb-sync", &mut script);
    output::write(&script);
    ExitCode::SUCCESS
}

/// Prints `szb-sync(1)`, or writes it and one page per subcommand (`szb-sync-sync(1)`, …) into
/// `out_dir`.
pub(super) fn man(out_dir: Option<&Path>) -> Result<ExitCode> {
    match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command()).render(&mut page)?;
            output::write(&page);
        }
        Some(dir) => {
            clap_mangen::generate_to(command(), dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
            out!("man pages written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
