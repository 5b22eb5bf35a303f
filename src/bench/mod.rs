//! `szb-sync bench`: the workloads of the performance issue, end to end, in one run.
//!
//! Each workload starts the simulator as its own process (`szb-sync mock-api`), syncs into a
//! fresh database (`szb_bench` on the configured server) with `szb-sync sync` as a child process,
//! and reads what happened from the tables (`sync_runs`) and from the simulator (`/_sim/stats`).
//! The `COPY` baseline copies the same rows in the same run. Peak RSS is the sync process's own
//! (`VmHWM`). Nothing here is asserted: it measures and reports.
//!
//! - `workloads`: what each workload syncs and measures;
//! - `run`: one workload's run, from a fresh database to what it left in the tables;
//! - `freshness`: the freshness workload's run, both refresh policies on the same arrivals;
//! - `process`: the child processes (the simulator, `sync`, `run`) and what they print;
//! - `reads`: timing the status page's reads and the example queries of docs/tables.md;
//! - `report`: what a run measured, and the tables printed of it;
//! - `sql`: the SQL only the benchmark runs (its database, dropping indexes, timing any read,
//!   the `COPY` baseline, sums over runs and passes): the one exception to "all SQL in the
//!   store". The CLI glue, `szb-sync bench`'s arguments, stays in [`crate::cli`].
//!
//! A module rather than a crate of its own: it runs the `szb-sync` binary and uses the library's
//! store and settings, and the binary calls it, so a crate would be a dependency cycle.

mod freshness;
mod process;
mod reads;
mod report;
mod run;
mod sql;
mod workloads;

use anyhow::{Context, Result};

use crate::secret::{Secret, redact_url};
use crate::settings::Settings;
use freshness::run_freshness;
use report::Measured;
use run::{run_listener, run_replicas, run_workload};
use sql::BenchDb;
use workloads::{FRESHNESS, FRESHNESS_SMOKE, Kind, WORKLOADS};

pub use reads::sql_blocks;
pub use report::Report;

/// Which workloads to run, how large, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Every workload's users are divided by this (at least 1).
    pub scale: u64,
    /// Runs of each workload; the report shows the median run (by wall time).
    pub runs: u64,
    /// Only the workloads whose name contains this text. Without it, all but freshness (it
    /// takes about 25 minutes: `--only freshness`).
    pub only: Option<String>,
    /// Only the freshness workload, in its quick version (200 pairs, a minute of arrivals, cron
    /// every 20 s), to check its plumbing.
    pub smoke: bool,
}

/// The benchmark, on the database `szb_bench` of the configured server.
pub struct Bench {
    db: BenchDb,
}

impl Bench {
    /// The bench database: `database.url` with its database name replaced by `szb_bench`, in
    /// `database.schema`.
    pub fn new(settings: &Settings) -> Result<Self> {
        let mut url = url::Url::parse(settings.database.url.expose()).context("database.url")?;
        url.set_path("szb_bench");
        Ok(Bench {
            db: BenchDb {
                url: Secret::new(url.to_string()),
                schema: settings.database.schema.clone(),
            },
        })
    }

    /// Where the bench writes, for people: the URL without its password, and the schema.
    pub fn target(&self) -> String {
        format!(
            "{} schema {}",
            redact_url(self.db.url.expose()),
            self.db.schema
        )
    }

    /// Runs the chosen workloads, each `options.runs` times; progress goes to stderr.
    pub async fn run(&self, options: &Options) -> Result<Report> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exe = std::env::current_exe().context("finding the szb-sync binary")?;
        let mut rows = Vec::new();
        for w in WORKLOADS {
            let chosen = match options.only.as_deref() {
                _ if options.smoke => w.kind == Kind::Freshness,
                Some(only) => w.name.contains(only),
                None => w.kind != Kind::Freshness,
            };
            if !chosen {
                continue;
            }
            let (w, plan) = match w.kind {
                Kind::Freshness if options.smoke => (&FRESHNESS_SMOKE.0, FRESHNESS_SMOKE.1),
                _ => (w, FRESHNESS),
            };
            let users = (w.users / options.scale.max(1)).max(1);
            let mut runs = Vec::new();
            for i in 0..options.runs {
                eprintln!("{} (run {} of {}) …", w.name, i + 1, options.runs);
                runs.push(match w.kind {
                    Kind::Replicas => run_replicas(&exe, &self.db, w, users).await?,
                    Kind::Listener => run_listener(&exe, &self.db, w, users).await?,
                    Kind::Freshness => {
                        let started = std::time::Instant::now();
                        let fresh = run_freshness(&exe, &self.db, w, users, &plan).await?;
                        Measured::of_freshness(started.elapsed(), fresh)
                    }
                    _ => run_workload(&exe, &self.db, w, users).await?,
                });
            }
            runs.sort_by_key(|m| m.wall);
            rows.push((w, users, runs.swap_remove(runs.len() / 2)));
        }
        Ok(Report { rows })
    }
}
