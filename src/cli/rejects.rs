//! `szb-sync rejects`: the newest items the platform sent that are not valid visits, with why.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{output, table};
use crate::app::App;
use crate::plural::noun;
use crate::settings::Settings;
use crate::store::{Reject, RejectFilter};

/// A raw item longer than this is cut in the table (`--json` has it whole).
const RAW_WIDTH: usize = 160;

#[derive(Debug, clap::Args)]
pub struct RejectsArgs {
    /// Only rejects of this agent's pairs.
    #[arg(long, value_name = "AGENT")]
    agent_id: Option<i64>,
    /// Only rejects of this user.
    #[arg(long, value_name = "USER")]
    user_id: Option<i64>,
    /// Only items first seen since then: a duration back from now (`2h`, `7days`) or an
    /// RFC 3339 time (`2026-12-01T00:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Show at most this many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    limit: i64,
    /// Print one JSON document (`matching`, `rejects`) instead of the table; each reject's
    /// `raw` is the item as served.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) config: super::ConfigArg,
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        "neither a duration (`2h`, `7days`) nor an RFC 3339 time (`2026-12-01T00:00:00Z`)"
            .to_owned()
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{s:?} reaches back further than time does"))
}

/// One reject in `--json`.
#[derive(Serialize)]
struct RejectJson<'a> {
    id: i64,
    agent_id: i64,
    user_id: i64,
    activity_filter: Option<&'a str>,
    first_seen_at: DateTime<Utc>,
    list_position: Option<i64>,
    reason: &'a str,
    raw: &'a serde_json::Value,
}

impl<'a> From<&'a Reject> for RejectJson<'a> {
    fn from(r: &'a Reject) -> Self {
        RejectJson {
            id: r.id,
            agent_id: r.pair.agent_id,
            user_id: r.pair.user_id,
            activity_filter: r.pair.activity_filter.as_deref(),
            first_seen_at: r.first_seen_at,
            list_position: r.list_position,
            reason: &r.reason,
            raw: &r.raw,
        }
    }
}

#[derive(Serialize)]
struct RejectsJson<'a> {
    /// Rejects matching the filters, `--limit` aside.
    matching: i64,
    rejects: Vec<RejectJson<'a>>,
}

pub(super) async fn run(settings: &Settings, args: RejectsArgs) -> Result<ExitCode> {
    let app = App::build(settings)?;
    app.store().reachable().await?;
    let found = app
        .store()
        .rejects(&RejectFilter {
            agent_id: args.agent_id,
            user_id: args.user_id,
            since: args.since,
            offset: 0,
            limit: args.limit,
        })
        .await?;
    if args.json {
        output::json(&RejectsJson {
            matching: found.matching,
            rejects: found.rejects.iter().map(RejectJson::from).collect(),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if found.rejects.is_empty() {
        out!("no rejects match");
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<20} {:<40} {:>8}  reason",
        "first seen",
        "pair",
        "position"
    );
    for r in &found.rejects {
        out!(
            "{:<20} {:<40} {:>8}  {}",
            table::time(Some(r.first_seen_at)),
            r.pair.to_string(),
            table::count(r.list_position),
            r.reason
        );
        out!("    raw: {}", cut(&r.raw.to_string(), RAW_WIDTH));
    }
    let shown = found.rejects.len();
    let noun = noun(found.matching, "reject", "rejects");
    if i64::try_from(shown).is_ok_and(|n| n < found.matching) {
        out!(
            "\n{shown} of {} matching {noun}, newest first; --limit shows more",
            found.matching
        );
    } else {
        out!("\n{shown} matching {noun}, newest first");
    }
    out!(
        "A reject is usually a platform bug or a format change: report it there with its raw \
         item. If szb-sync is wrong to reject it, file an issue at {}",
        crate::ISSUES_URL
    );
    Ok(ExitCode::SUCCESS)
}

/// `text` cut to `width` characters, with `…` where it was cut.
fn cut(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
