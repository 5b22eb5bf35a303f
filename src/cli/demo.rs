//! `szb-sync demo`: the simulator in-process ([`demo_world::DEMO`]), syncs into a database of
//! its own, and what landed. That database is `szb_demo` on the configured server (created when
//! missing), or the one `--database-url` names: never the configured database, which may hold
//! real visits. Works with no config file at all (the local Postgres).

use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::exit_code;
use super::table::pad;
use crate::app::App;
use crate::plural::plural;
use crate::secret::{Secret, redact_url};
use crate::settings::{Settings, Target};
use crate::store::{SAMPLE_QUERY, Store};
use szb_simulator::demo_world;

/// The demo's database on the configured server.
pub const DEMO_DATABASE: &str = "szb_demo";

/// How long the demo's open visit goes on between its first and second sync.
const STILL_ONLINE_MINUTES: i64 = 12;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Write into this database instead of `szb_demo` on the configured server (created when
    /// missing). Rows of the demo's simulated agents there are replaced.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The demo's database on the configured server, instead of `szb_demo`. Hidden: the tests
    /// use it so that they never touch a `szb_demo` they did not create.
    #[arg(long, value_name = "NAME", hide = true, default_value = DEMO_DATABASE, conflicts_with = "database_url")]
    database_name: String,
    #[command(flatten)]
    pub(super) config: super::ConfigArg,
}

pub(super) async fn run(settings: &Settings, args: DemoArgs) -> Result<ExitCode> {
    let world = demo_world::DEMO;
    let mut settings = settings.clone();
    let url = match args.database_url {
        Some(url) => Secret::new(url),
        None => demo_database_url(&settings.database.url, &args.database_name)?,
    };
    settings.database.url = url.clone();
    out!(
        "szb-sync demo → {} (the demo's own database)",
        redact_url(url.expose())
    );
    if Store::create_database_if_missing(&url).await? {
        out!("  created the database");
    }

    // The simulator's clock starts behind ours and catches up before the second sync, so the
    // viewer who stays online is never stamped after the real now.
    let online = chrono::Duration::minutes(STILL_ONLINE_MINUTES);
    let sim = world.build_behind(online);
    let server = sim.spawn().await.context("starting the simulator")?;
    out!("  simulated platform at {}", server.base_url);
    settings.api.base_url = server.base_url.parse().context("simulator url")?;
    settings.api.token = None;
    settings.api.token_file = None;
    settings.targets = world
        .agents
        .iter()
        .map(|agent| Target {
            agent_id: agent.id,
            user_ids: agent.users.iter().map(|u| u.id).collect(),
            user_ids_file: None,
            token: Some(Secret::new(agent.token)),
            activity_id: None,
        })
        .collect();
    let app = App::build(&settings)?;
    app.migrate().await.context("applying migrations")?;
    let store = app.store();
    let agent_ids = world.agent_ids();
    // A rerun starts from scratch: the simulator's visits are generated relative to now.
    store.forget_agents(&agent_ids).await?;
    let never = CancellationToken::new();

    out!(
        "\n1. first sync: every visit of {}",
        plural(app.pairs().len(), "pair", "pairs")
    );
    let report = app.sync_once(&never).await;
    out!("   {report}");

    let (first_agent, first_user) = (world.agents[0].id, world.agents[0].users[0].id);
    sim.append_visits(first_agent, first_user, demo_world::DEMO_APPENDS);
    sim.set_clock_skew(chrono::Duration::zero());
    sim.extend_open_visits(online);
    out!(
        "\n2. upstream moved on: {}, one viewer still online {STILL_ONLINE_MINUTES} minutes later",
        plural(demo_world::DEMO_APPENDS, "new visit", "new visits")
    );
    let report = app.sync_once(&never).await;
    out!("   {report}");

    out!("\n3. a sync with nothing new upstream");
    let report = app.sync_once(&never).await;
    out!("   {report}");

    let (visits, activities) = store.count_for_agents(&agent_ids).await?;
    out!(
        "\nIn Postgres now: {} of {}. A sample query:\n",
        plural(visits, "visit", "visits"),
        plural(activities, "activity", "activities")
    );
    let query = SAMPLE_QUERY.replace("$1", &format!("ARRAY{agent_ids:?}"));
    out!("{query}\n");
    out!(
        "{} {} {:>8} {:>7} {:>16}",
        pad("activity_id", 12),
        pad("activity", 24),
        "viewers",
        "visits",
        "minutes_watched"
    );
    for row in store.sample_query(&agent_ids).await? {
        let name = row.activity.unwrap_or_else(|| "(no name)".into());
        out!(
            "{} {} {:>8} {:>7} {:>16}",
            pad(&row.activity_id, 12),
            pad(&name, 24),
            row.viewers,
            row.visits,
            row.minutes_watched
        );
    }
    let (psql_url, had_password) = psql_url(url.expose());
    out!(
        "\nTry: {}psql '{psql_url}' -c 'SELECT * FROM sync_runs ORDER BY id DESC LIMIT 5'{}",
        // psql's own search_path finds szb-sync's tables only in `public`.
        match settings.database.schema.as_str() {
            "public" => String::new(),
            schema => format!("PGOPTIONS='-c search_path={schema}' "),
        },
        if had_password {
            "\n     (the password is left out: give it in PGPASSWORD or ~/.pgpass)"
        } else {
            ""
        }
    );
    Ok(exit_code(report.failed().count() == 0))
}

/// `url` with its database replaced by `name` ([`DEMO_DATABASE`] unless a test names another):
/// same server, user and options.
fn demo_database_url(url: &Secret, name: &str) -> Result<Secret> {
    let mut parsed = url::Url::parse(url.expose())
        .with_context(|| format!("database.url is not a URL: {}", redact_url(url.expose())))?;
    parsed.set_path(&format!("/{name}"));
    Ok(Secret::new(parsed.to_string()))
}

/// A URL psql accepts as is, without the password (psql asks for it, or reads `PGPASSWORD` or
/// `~/.pgpass`), and whether there was one.
fn psql_url(url: &str) -> (String, bool) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (redact_url(url), false);
    };
    let mut had_password = parsed.password().is_some();
    let _ = parsed.set_password(None);
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| {
                let secret = k == "password";
                had_password |= secret;
                !secret
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    (parsed.to_string(), had_password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_database_is_szb_demo_on_the_configured_server() {
        let url = Secret::new("postgres://bob:pw@db.internal:6543/szb?sslmode=require");

        let demo = demo_database_url(&url, DEMO_DATABASE).unwrap();

        assert_eq!(
            demo.expose(),
            "postgres://bob:pw@db.internal:6543/szb_demo?sslmode=require"
        );
    }

    #[test]
    fn the_psql_command_leaves_the_password_out() {
        assert_eq!(
            psql_url("postgres://bob:hunter2@db:5432/szb_demo"),
            ("postgres://bob@db:5432/szb_demo".to_owned(), true)
        );
        assert_eq!(
            psql_url("postgres://bob@db/szb_demo?password=hunter2&sslmode=require"),
            (
                "postgres://bob@db/szb_demo?sslmode=require".to_owned(),
                true
            )
        );
        assert_eq!(
            psql_url("postgres://root@127.0.0.1:5432/szb_demo"),
            ("postgres://root@127.0.0.1:5432/szb_demo".to_owned(), false)
        );
    }
}
