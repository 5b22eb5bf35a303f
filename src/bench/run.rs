//! Running one workload: a fresh database and config, the simulator and `szb-sync sync` (or
//! three `run` replicas, or `run` with its listener under load) as child processes, and what
//! they left in the tables.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use szb_simulator::demo_world::{GENERATED_AGENT, GENERATED_TOKEN};
use tokio::process::Child;

use super::process::{
    child_command, poll, read_listen, sim_config, spawn_run, start_sim, sync, terminate, vm_hwm_kib,
};
use super::reads::{time_board, time_reads};
use super::report::{LoadStats, Measured, ReplicaStats};
use super::sql::{BenchDb, BenchSql};
use super::workloads::{BOARD_FROM_PAIRS, Kind, LOAD_CLIENTS, LOAD_FOR, Workload};
use crate::store::Store;

/// A fresh bench database, and a config for `users` pairs of the generated agent on it with
/// `extra` appended; returns the config's path and the user-id file's.
pub(super) async fn prepare(
    db: &BenchDb,
    base_url: &str,
    w: &Workload,
    users: u64,
    extra: &str,
) -> Result<(PathBuf, PathBuf)> {
    db.recreate().await?;
    let config = std::env::temp_dir().join(format!("szb-bench-{}.toml", std::process::id()));
    let ids_file = config.with_extension("users");
    let user_ids: Vec<String> = (1..=users).map(|u| u.to_string()).collect();
    std::fs::write(&ids_file, user_ids.join("\n")).context("writing the benchmark's user ids")?;
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = {:?}\nschema = {:?}\n{}\n[api]\nbase_url = {base_url:?}\ntoken = {GENERATED_TOKEN:?}\n{}\n\
             {extra}\n[[targets]]\nagent_id = {GENERATED_AGENT}\nuser_ids_file = {:?}\n",
            db.url.expose(),
            db.schema,
            w.database,
            w.api,
            ids_file
        ),
    )
    .context("writing the benchmark's config")?;
    Ok((config, ids_file))
}

/// Closes the workload's connections, stops its simulator and removes its files.
pub(super) async fn tear_down(store: Store, bench: BenchSql, mut sim: Child, files: &[&Path]) {
    store.close().await;
    bench.close().await;
    let _ = sim.kill().await;
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

pub(super) async fn run_workload(
    exe: &Path,
    db: &BenchDb,
    w: &Workload,
    users: u64,
) -> Result<Measured> {
    let (sim, base_url) = start_sim(exe, w, users).await?;
    let http = reqwest::Client::new();
    let (config, ids_file) = prepare(db, &base_url, w, users, "").await?;
    let (store, bench) = db.connect().await?;
    if let Some(index) = w.drop_index {
        // Migrated now, the sync finds nothing to apply and writes without the index.
        store.migrate().await?;
        bench.drop_index(index).await?;
    }
    if w.kind == Kind::Quiet {
        let first = sync(exe, &config).await?;
        if first.0 != 0 {
            bail!("the first sync of {:?} failed", w.name);
        }
    }
    sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;
    let (before, before_pass) = match w.kind {
        Kind::Quiet => (bench.last_run_id().await?, bench.last_pass_id().await?),
        _ => (0, 0),
    };
    let (code, wall, peak_rss_kib) = sync(exe, &config).await?;
    if code != 0 {
        eprintln!("  warning: the sync exited with {code}; see sync_runs in the bench database");
    }
    let sums = bench.runs_since(before).await?;
    // Quiet runs leave no run row; every pass has one.
    let pass_visits = bench.visits_written_since_pass(before_pass).await?;
    let stats = sim_config(&http, &base_url, 0, 0.0).await?;
    let copy_rate = match w.kind {
        Kind::InitialVsCopy => {
            let (rows, took) = bench.copy_visits_baseline(w.drop_index).await?;
            Some(rows as f64 / took.as_secs_f64())
        }
        _ => None,
    };
    let reads = if w.time_reads {
        Some(time_reads(&bench).await?)
    } else {
        None
    };
    let board = if w.kind == Kind::Quiet && users >= BOARD_FROM_PAIRS {
        Some(time_board(&store, users).await?)
    } else {
        None
    };
    tear_down(store, bench, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: stats.1,
        sim_requests: stats.0,
        sim_span: stats.2,
        copy_rate,
        pass_visits,
        replicas: None,
        board,
        reads,
        loads: None,
        freshness: None,
    })
}

/// Three `szb-sync run` processes on one database and one simulator: how long the first sync
/// takes, what a quiet tick costs, how the work is shared, and how fast the others finish the
/// pairs of one that is SIGKILLed mid-pass.
pub(super) async fn run_replicas(
    exe: &Path,
    db: &BenchDb,
    w: &Workload,
    users: u64,
) -> Result<Measured> {
    const REPLICAS: usize = 3;
    const LEASE: Duration = Duration::from_secs(10);
    let (sim, base_url) = start_sim(exe, w, users).await?;
    let http = reqwest::Client::new();
    sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;
    let extra = format!(
        "[schedule]\ncron = \"*/5 * * * * *\"\n\n[sync]\nlease_period = \"{}s\"\n",
        LEASE.as_secs()
    );
    let (config, ids_file) = prepare(db, &base_url, w, users, &extra).await?;
    let (store, bench) = db.connect().await?;
    store.migrate().await?;
    let started_db = bench.now().await?;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..REPLICAS)
        .map(|_| spawn_run(exe, &config))
        .collect::<Result<_>>()?;
    let want = i64::try_from(users)?;
    poll(Duration::from_secs(1800), "the first sync", || async {
        Ok((bench.pairs_ok_since(started_db).await? == want).then_some(()))
    })
    .await?;
    let wall = started.elapsed();
    let first = sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;

    // Two whole quiet ticks after the first sync: every replica's pass for each finished.
    let quiet_from = bench.now().await?;
    let quiet = poll(Duration::from_secs(120), "two quiet ticks", || async {
        let ticks = bench.ticks_since(quiet_from).await?;
        let done: Vec<_> = ticks
            .into_iter()
            .filter(|t| t.passes == REPLICAS as i64 && t.finished == t.passes)
            .collect();
        Ok((done.len() >= 2).then(|| done[..2].to_vec()))
    })
    .await?;
    let ticks = quiet.len() as i64;
    let quiet_requests: i64 = quiet.iter().map(|t| t.requests).sum();
    let longest_pass = quiet.iter().map(|t| t.longest_secs).fold(0.0, f64::max);
    let shares = bench.pairs_by_owner().await?;
    let total: i64 = shares.iter().map(|(_, pairs)| pairs).sum::<i64>().max(1);
    let share = |(_, pairs): &(String, i64)| *pairs as f64 / total as f64;

    let (victim, _) = poll(
        Duration::from_secs(120),
        "a replica holding leases",
        || async { bench.busiest_lease_owner().await },
    )
    .await?;
    let held = bench.leased_by(&victim).await?;
    let pid: u32 = victim
        .rsplit(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no pid in the owner id {victim:?}"))?;
    let child = children
        .iter_mut()
        .find(|c| c.id() == Some(pid))
        .with_context(|| format!("{victim} is not one of the replicas"))?;
    child.start_kill()?;
    let killed = Instant::now();
    let killed_db = bench.now().await?;
    let wanted = i64::try_from(held.len())?;
    poll(LEASE * 3, "the killed replica's pairs", || async {
        Ok((bench.count_synced_since(&held, killed_db).await? >= wanted).then_some(()))
    })
    .await?;
    let takeover = killed.elapsed();

    let mut peak_rss_kib = 0;
    for c in &mut children {
        if let Some(pid) = c.id() {
            peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        }
        terminate(c).await;
    }
    let sums = bench.runs_since(0).await?;
    tear_down(store, bench, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: first.1,
        sim_requests: first.0,
        sim_span: first.2,
        copy_rate: None,
        pass_visits: 0,
        reads: None,
        replicas: Some(ReplicaStats {
            quiet_requests_per_pair: quiet_requests as f64 / (want * ticks) as f64,
            quiet_ticks: ticks,
            min_share: shares.iter().map(share).fold(1.0, f64::min),
            max_share: shares.iter().map(share).fold(0.0, f64::max),
            takeover,
            victim_pairs: held.len(),
            lease: LEASE,
            longest_pass: Duration::from_secs_f64(longest_pass),
        }),
        board: None,
        loads: None,
        freshness: None,
    })
}

/// A first sync, then `szb-sync run` with its listener (passes every 5 s) while
/// [`LOAD_CLIENTS`] clients each load the status page's three views (as the page does, at
/// once) in a tight loop for [`LOAD_FOR`].
pub(super) async fn run_listener(
    exe: &Path,
    db: &BenchDb,
    w: &Workload,
    users: u64,
) -> Result<Measured> {
    let (sim, base_url) = start_sim(exe, w, users).await?;
    let extra = "[schedule]\ncron = \"*/5 * * * * *\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n";
    let (config, ids_file) = prepare(db, &base_url, w, users, extra).await?;
    let (store, bench) = db.connect().await?;
    let (code, wall, peak_rss_kib) = sync(exe, &config).await?;
    if code != 0 {
        bail!("the first sync of {:?} failed", w.name);
    }
    bench.vacuum_analyze_visits().await?;
    let visits = bench.runs_since(0).await?.visits_inserted;
    let mut daemon = child_command(exe)
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "text", "run"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting szb-sync run")?;
    let listen = read_listen(&mut daemon).await?;
    let before_pass = bench.last_pass_id().await?;
    let before_run = bench.last_run_id().await?;
    let http = reqwest::Client::new();
    let until = Instant::now() + LOAD_FOR;
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|_| {
            let http = http.clone();
            let base = format!("http://{listen}");
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let get = |path: &str| {
                        let request = http.get(format!("{base}{path}")).send();
                        async move {
                            match request.await {
                                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                Err(_) => false,
                            }
                        }
                    };
                    let started = Instant::now();
                    let (a, b, c) = tokio::join!(
                        get("/api/overview"),
                        get("/api/pairs?view=attention&page=0&per=50"),
                        get("/api/rejects?page=0&per=20"),
                    );
                    seen.push((started.elapsed(), a && b && c));
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.await?);
    }
    let passes = bench.passes_finished_since(before_pass).await?;
    let failed_pairs = bench.runs_since(before_run).await?.failed;
    terminate(&mut daemon).await;
    let mut times: Vec<Duration> = seen.iter().map(|(t, _)| *t).collect();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let loads = LoadStats {
        loads: seen.len(),
        failed_loads: seen.iter().filter(|(_, ok)| !ok).count(),
        p50: at(0.5),
        p95: at(0.95),
        max: times.last().copied().unwrap_or_default(),
        passes,
        failed_pairs: failed_pairs as i64,
        visits,
    };
    let sums = bench.runs_since(0).await?;
    tear_down(store, bench, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: 0,
        sim_requests: 0,
        sim_span: Duration::ZERO,
        copy_rate: None,
        pass_visits: 0,
        replicas: None,
        board: None,
        reads: None,
        loads: Some(loads),
        freshness: None,
    })
}
