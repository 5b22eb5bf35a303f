//! `szb-sync completions SHELL` and `szb-sync man`: generated from the command line's own
//! definition, so they list exactly the options this build has. The package ships the copies
//! in `deploy/completions/` and `deploy/man/`; a test keeps them equal to these.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, output};
use crate::settings::{DEFAULT_CONFIG_PATH, SYSTEM_CONFIG_PATH};

/// The command line as the man pages show it: without the `help` subcommand, which has no page.
fn command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// The binary's name, which the scripts complete.
const BIN: &str = "szb-sync";

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: Shell) -> ExitCode {
    output::write(completion_script(shell).as_bytes());
    ExitCode::SUCCESS
}

/// The completion script for `shell`, with its values hinted (see [`hint_values`]) and, for
/// bash, the names of its subcommands' functions mended (see [`mend_bash`]).
pub fn completion_script(shell: Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut hint_values(Cli::command()), BIN, &mut script);
    let script = String::from_utf8(script).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => mend_bash(&script),
        _ => script,
    }
}

/// Every option value that is neither a path nor one of a list (`--only AGENT:USER`,
/// `--listen ADDR`, `--limit N` …) hinted as "other": without a hint, the scripts offer file
/// names for it.
fn hint_values(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd.mut_args(|arg| {
        let takes_value = arg.get_action().takes_values() && !arg.is_positional();
        if takes_value
            && arg.get_value_hint() == clap::ValueHint::Unknown
            && arg.get_possible_values().is_empty()
        {
            arg.value_hint(clap::ValueHint::Other)
        } else {
            arg
        }
    });
    for name in names {
        cmd = cmd.mut_subcommand(name, hint_values);
    }
    cmd
}

/// clap_complete's bash script names a subcommand's function two ways when the binary's name
/// has a dash: the loop over the words sets `szb__sync__subcmd__sync` (the dash as `__`), the
/// case that completes it waits for `szb__subcmd__sync__subcmd__sync` (the dash as a command
/// separator), so nothing below the top level completed. The case's spelling becomes the loop's.
fn mend_bash(script: &str) -> String {
    let loop_name = BIN.replace('-', "__");
    let case_name = BIN.replace('-', "__subcmd__");
    script.replace(&case_name, &loop_name)
}

/// Prints `szb-sync(1)`, or writes it and one page per subcommand (`szb-sync-sync(1)`, …) into
/// `out_dir`.
pub(super) fn man(out_dir: Option<&Path>) -> Result<ExitCode> {
    let page = main_page()?;
    match out_dir {
        None => output::write(page.as_bytes()),
        Some(dir) => {
            let context = || format!("writing the man pages into {}", dir.display());
            clap_mangen::generate_to(command(), dir).with_context(context)?;
            // The main page with the sections clap_mangen does not write.
            std::fs::write(dir.join(format!("{BIN}.1")), &page).with_context(context)?;
            out!("man pages written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `szb-sync(1)`: clap_mangen's page of the command line, then the configuration's keys (from
/// the settings' types, so none is missed), the environment, the files, the exit status and
/// where to report a bug.
fn main_page() -> Result<String> {
    use roff::{Roff, bold, italic, roman};
    let mut page = Vec::new();
    clap_mangen::Man::new(command()).render(&mut page)?;
    let mut page = String::from_utf8(page).context("clap_mangen writes UTF-8")?;

    let mut more = Roff::new();
    more.control("SH", ["CONFIGURATION"]).text([roman(format!(
        "A TOML file: --config FILE, else {DEFAULT_CONFIG_PATH} in the working directory, else \
         {SYSTEM_CONFIG_PATH}. Each key below may be set in the environment instead, as \
         SZB_SECTION__KEY (the section and the key in upper case, joined by two underscores); \
         the environment wins over the file. An unknown key, in the file or the environment, \
         is an error naming it. config/example.toml documents each key and its default."
    ))]);
    for (section, keys) in crate::settings::config_keys() {
        if section == "targets" {
            more.control("TP", [])
                .text([bold("[[targets]]")])
                .text([roman(format!(
                    "One entry per agent: {}. The whole list may be set as SZB_TARGETS, in \
                     TOML inline syntax: [{{agent_id=1, user_ids=[2, 3]}}].",
                    keys.join(", ")
                ))]);
            continue;
        }
        more.control("TP", [])
            .text([bold(format!("[{section}]"))])
            .text([roman(format!("{}.", keys.join(", ")))]);
        for key in keys {
            let var = format!("SZB_{section}__{key}").to_ascii_uppercase();
            more.control("TP", [])
                .text([bold(format!("{section}.{key}"))])
                .text([roman("environment: "), italic(var)]);
        }
    }
    more.control("SH", ["ENVIRONMENT"]);
    for (name, what) in [
        (
            "SZB_SECTION__KEY",
            "One configuration key, e.g. SZB_API__TOKEN or SZB_DATABASE__URL (see \
             CONFIGURATION). Other SZB_ variables are refused, naming the closest real one.",
        ),
        (
            "SZB_TARGETS",
            "The whole [[targets]] list, in TOML inline syntax.",
        ),
        (
            "SZB_API__TOKEN_FILE",
            "A file holding the API token (systemd's LoadCredential, a container secret).",
        ),
        (
            "DATABASE_URL",
            "database.url, over the file's; SZB_DATABASE__URL wins over both.",
        ),
        (
            "RUST_LOG",
            "The log filter (default: info; demo and sync on a terminal: warn).",
        ),
    ] {
        more.control("TP", [])
            .text([bold(name)])
            .text([roman(what)]);
    }
    more.control("SH", ["FILES"]);
    for (path, what) in [
        (
            DEFAULT_CONFIG_PATH,
            "The configuration, relative to the working directory.",
        ),
        (
            SYSTEM_CONFIG_PATH,
            "The configuration when the first is absent (the Debian package installs it).",
        ),
        (
            "/usr/lib/systemd/system/szb-sync.service",
            "The systemd unit of the package: szb-sync run, Type=notify, sandboxed.",
        ),
        (
            "/usr/share/doc/szb-sync/examples/szb-sync.toml",
            "Every key with its default and what it does.",
        ),
    ] {
        more.control("TP", [])
            .text([bold(path)])
            .text([roman(what)]);
    }
    more.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        (
            "0",
            "Success: every pair synced (sync), no pair failing (status).",
        ),
        (
            "1",
            "A failure: a pair failed (sync), a configured pair is failing (status), a check \
             failed (check), or an error stopped the command (its message on stderr).",
        ),
        (
            "2",
            "A usage error: an unknown option or a misplaced --config.",
        ),
        (
            "128+N",
            "Cut short by signal N (130 for SIGINT, 143 for SIGTERM); what was committed stays. \
             run stops cleanly on SIGTERM with 0.",
        ),
    ] {
        more.control("TP", [])
            .text([bold(code)])
            .text([roman(what)]);
    }
    more.control("SH", ["REPORTING BUGS"])
        .text([roman(crate::ISSUES_URL)]);

    // The preamble roff writes first is already at the top of clap_mangen's page.
    let preamble = Roff::new().render();
    let more = more.render();
    page.push_str(more.strip_prefix(preamble.as_str()).unwrap_or(&more));
    Ok(page)
}
