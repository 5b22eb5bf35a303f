//! The freshness workload (issue 18): for each refresh policy in turn, on a fresh database and a
//! fresh simulator with the same seed, `szb-sync run` syncs every pair once; then viewers arrive
//! (`mock-api`'s arrivals, started by `POST /_sim/arrivals`) while it keeps syncing, and each
//! new visit's delay is its row's `first_synced_at` minus its `visitAt`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use szb_simulator::Arrival;
use tokio::process::Child;

use super::process::{SimStats, sim_config, sim_stats, spawn_run, start_sim_with, terminate};
use super::report::{DelayStats, FreshnessStats, PolicyRun};
use super::run::{prepare, tear_down};
use super::sql::BenchDb;
use super::workloads::{FreshnessPlan, POLICIES, Workload};
use crate::settings::Settings;

/// The longest the first sync of every pair may take before the run gives up.
const FIRST_SYNC_LIMIT: Duration = Duration::from_secs(1800);
/// How often the run looks at the tables while it waits.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Both policies, one after the other, on the same arrivals. A policy this build's settings
/// refuse (no `sync.refresh` yet) is left out, named in the report; the old one then runs
/// without the key, as the only policy there is.
pub(super) async fn run_freshness(
    exe: &Path,
    db: &BenchDb,
    w: &Workload,
    users: u64,
    plan: &FreshnessPlan,
) -> Result<FreshnessStats> {
    let mut stats = FreshnessStats {
        plan: *plan,
        runs: Vec::new(),
        missing: Vec::new(),
    };
    for (i, (policy, line)) in POLICIES.into_iter().enumerate() {
        let sync = match refresh_key_refused(line) {
            None => line,
            // Before the per-pair schedule, every pair every tick is what `run` does.
            Some(_) if i == 0 => "",
            Some(why) => {
                eprintln!("  {policy}: left out, this build refuses it ({why})");
                stats.missing.push(policy);
                continue;
            }
        };
        eprintln!("  {policy} …");
        stats
            .runs
            .push(run_policy(exe, db, w, users, plan, policy, sync).await?);
    }
    Ok(stats)
}

/// Why this build's settings refuse the `[sync]` line `line` (a `sync.refresh`), if they do.
fn refresh_key_refused(line: &str) -> Option<String> {
    let refused = Settings::load_from(Some(&format!("[sync]\n{line}\n")), &[])
        .err()?
        .to_string();
    refused.contains("refresh").then_some(refused)
}

/// One policy: the first sync, the arrivals, the drain, and the delays.
async fn run_policy(
    exe: &Path,
    db: &BenchDb,
    w: &Workload,
    users: u64,
    plan: &FreshnessPlan,
    policy: &'static str,
    sync_line: &str,
) -> Result<PolicyRun> {
    let log = std::env::temp_dir().join(format!("szb-bench-{}.arrivals", std::process::id()));
    let (sim, base_url) =
        start_sim_with(exe, w, users, &arrival_options(plan, users, &log)).await?;
    let http = reqwest::Client::new();
    sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;
    let extra = format!(
        "[schedule]\ncron = {:?}\n\n[sync]\n{sync_line}\n",
        plan.cron
    );
    let (config, ids_file) = prepare(db, &base_url, w, users, &extra).await?;
    let (store, bench) = db.connect().await?;
    store.migrate().await?;

    let started_db = bench.now().await?;
    let started = Instant::now();
    let mut daemon = spawn_run(exe, &config)?;
    let want = i64::try_from(users)?;
    wait_until(
        &mut daemon,
        FIRST_SYNC_LIMIT,
        "the first sync of every pair",
        || async { Ok(bench.pairs_ok_since(started_db).await? >= want) },
    )
    .await?;
    let sweep = started.elapsed();

    // Counted from here: the requests and 429s of the arrivals and the drain.
    sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;
    http.post(format!("{base_url}/_sim/arrivals"))
        .send()
        .await?
        .error_for_status()
        .context("starting the simulator's arrivals")?;
    let arrivals_started = Instant::now();
    tokio::time::sleep(plan.arrivals_for).await;
    // The last step may run a little late on a busy machine: wait for its visits, a while.
    let steps = plan
        .arrivals_for
        .as_millis()
        .div_ceil(plan.arrivals_every.as_millis());
    let expected = plan.per_step * u64::try_from(steps)?;
    let last_step = Instant::now() + plan.arrivals_every * 2;
    while sim_stats(&http, &base_url).await?.arrivals < expected && Instant::now() < last_step {
        tokio::time::sleep(LOOK_EVERY).await;
    }
    let arrivals = read_arrivals(&log)?;

    // The drain: until every arrival has landed, for at most one tick plus one sweep.
    let drained = Instant::now();
    loop {
        let landed = bench.arrival_delays(&arrivals).await?;
        if landed.iter().all(Option::is_some) || drained.elapsed() > plan.tick + sweep {
            break;
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("szb-sync run ({policy}) exited with {status} while visits were arriving");
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
    let window = arrivals_started.elapsed();
    let counted: SimStats = sim_stats(&http, &base_url).await?;
    terminate(&mut daemon).await;

    let delays = bench.arrival_delays(&arrivals).await?;
    if counted.arrivals != arrivals.len() as u64 {
        eprintln!(
            "  warning: the simulator opened {} visits, its log holds {}",
            counted.arrivals,
            arrivals.len()
        );
    }
    let of = |hot: bool| -> Vec<Option<f64>> {
        arrivals
            .iter()
            .zip(&delays)
            .filter(|(a, _)| a.hot == hot)
            .map(|(_, d)| *d)
            .collect()
    };
    let run = PolicyRun {
        policy,
        all: DelayStats::of(&delays),
        hot: DelayStats::of(&of(true)),
        cold: DelayStats::of(&of(false)),
        requests: counted.requests,
        rate_limited: counted.rate_limited,
        window,
        sweep,
    };
    tear_down(store, bench, sim, &[&config, &ids_file, &log]).await;
    Ok(run)
}

/// `mock-api`'s options for the plan's arrivals, logged to `log`, started on request.
fn arrival_options(plan: &FreshnessPlan, users: u64, log: &Path) -> Vec<String> {
    let secs = |d: Duration| format!("{}s", d.as_secs());
    [
        ("--arrivals-every", secs(plan.arrivals_every)),
        ("--arrivals-per-step", plan.per_step.to_string()),
        ("--hot-users", plan.hot_users.min(users).to_string()),
        ("--zipf", plan.zipf.to_string()),
        ("--cold-share", plan.cold_share.to_string()),
        ("--arrivals-for", secs(plan.arrivals_for)),
        ("--arrivals-seed", plan.seed.to_string()),
        ("--arrivals-log", log.display().to_string()),
    ]
    .into_iter()
    .flat_map(|(option, value)| [option.to_owned(), value])
    .collect()
}

/// The arrivals log: one JSON line per visit opened.
fn read_arrivals(log: &Path) -> Result<Vec<Arrival>> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("reading the arrivals log {}", log.display()))?;
    text.lines()
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("an arrivals line: {line:?}"))
        })
        .collect()
}

/// Looks every [`LOOK_EVERY`] until `done`, for at most `limit`; fails if `daemon` exits first.
async fn wait_until<F, Fut>(
    daemon: &mut Child,
    limit: Duration,
    what: &str,
    mut done: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await? {
            return Ok(());
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("szb-sync run exited with {status} while the bench waited for {what}");
        }
        if Instant::now() > deadline {
            bail!(
                "gave up after {} waiting for {what}",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
