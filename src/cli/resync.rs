//! `szb-sync resync`: forget the marks of the matching pairs, so their next sync re-reads them.
//! Forgetting every mark takes `--all`, or a yes on a terminal.

use std::io::{BufRead, IsTerminal as _, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{exit_code, usage_error};
use crate::app::App;
use crate::plural::plural;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct ResyncArgs {
    /// Only the pairs of this agent.
    #[arg(long, value_name = "AGENT")]
    agent_id: Option<i64>,
    /// Only the pairs of this user (with --agent-id: only that pair).
    #[arg(long, value_name = "USER")]
    user_id: Option<i64>,
    /// Every configured pair: each list is read again from its start at the next sync. Without
    /// --agent-id or --user-id, resync needs this (on a terminal it asks instead).
    #[arg(long, conflicts_with_all = ["agent_id", "user_id"])]
    all: bool,
    #[command(flatten)]
    pub(super) config: super::ConfigArg,
}

impl ResyncArgs {
    /// The filters as they were given, for messages: `--agent-id 999 --user-id 5`.
    fn filters(&self) -> String {
        let mut given = Vec::new();
        if let Some(a) = self.agent_id {
            given.push(format!("--agent-id {a}"));
        }
        if let Some(u) = self.user_id {
            given.push(format!("--user-id {u}"));
        }
        given.join(" ")
    }
}

pub(super) async fn run(settings: &Settings, args: ResyncArgs) -> Result<ExitCode> {
    let app = App::build(settings)?;
    let keys: Vec<_> = app
        .pairs()
        .iter()
        .map(|p| p.key.clone())
        .filter(|k| {
            args.agent_id.is_none_or(|a| a == k.agent_id)
                && args.user_id.is_none_or(|u| u == k.user_id)
        })
        .collect();
    if keys.is_empty() {
        match args.filters() {
            f if f.is_empty() => anyhow::bail!("no pairs are configured: nothing to resync"),
            f => anyhow::bail!("no configured pair matches {f}"),
        }
    }
    let everything = args.agent_id.is_none() && args.user_id.is_none();
    if everything && !args.all {
        let pairs = plural(keys.len(), "pair", "pairs");
        // The question goes to stderr and the answer comes from stdin: both must be a
        // terminal, or a redirected stderr would leave the command waiting on a question no
        // one sees.
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Ok(usage_error(
                "resync",
                &format!(
                    "resync without --agent-id or --user-id forgets the mark of every configured \
                 pair ({pairs}); add --all to mean that, or name the pairs with --agent-id and \
                 --user-id"
                ),
            ));
        }
        let question = format!(
            "Forget the mark of every configured pair ({pairs})? Their next sync reads every list again from the \
             start (stored visits stay). [y/N] "
        );
        let yes = confirm(
            &question,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )
        .context("reading the answer")?;
        if !yes {
            out!("nothing forgotten");
            return Ok(ExitCode::FAILURE);
        }
    }
    app.migrate().await.context("applying migrations")?;
    let outcome = app.store().forget_marks(&keys).await?;
    out!(
        "forgot {} of {}: their next sync re-reads them from the start",
        plural(outcome.forgotten, "mark", "marks"),
        plural(keys.len(), "matching pair", "matching pairs")
    );
    for pair in &outcome.busy {
        out!("{pair}: busy syncing in another process; run resync again when it is done");
    }
    Ok(exit_code(outcome.busy.is_empty()))
}

/// Asks `question` on `output` and reads one line of `input`: yes only for `y` or `yes`, in any
/// case; anything else, an empty line or the end of input is no.
fn confirm(question: &str, input: &mut impl BufRead, output: &mut impl Write) -> Result<bool> {
    output.write_all(question.as_bytes())?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(typed: &str) -> (bool, String) {
        let mut shown = Vec::new();
        let yes = confirm("Forget? [y/N] ", &mut typed.as_bytes(), &mut shown).unwrap();
        (yes, String::from_utf8(shown).unwrap())
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \r\n"] {
            assert_eq!(answer(yes), (true, "Forget? [y/N] ".to_owned()), "{yes:?}");
        }
        for no in ["\n", "", "n\n", "no\n", "yess\n", "sure\n"] {
            assert!(!answer(no).0, "{no:?}");
        }
    }

    #[test]
    fn the_filters_are_named_as_typed() {
        let args = |agent_id, user_id| ResyncArgs {
            agent_id,
            user_id,
            all: false,
            config: super::super::ConfigArg::default(),
        };
        assert_eq!(args(Some(999), None).filters(), "--agent-id 999");
        assert_eq!(args(None, Some(5)).filters(), "--user-id 5");
        assert_eq!(args(Some(1), Some(2)).filters(), "--agent-id 1 --user-id 2");
    }
}
