//! `szb-sync bench`: the workloads of the performance issue, end to end, in one run.
//!
//! Each workload starts the simulator as its own process (`szb-sync mock-api`), syncs into a
//! fresh database (`szb_bench` on the configured server) with `szb-sync sync` as a child process,
//! and reads what happened from the tables (`sync_runs`) and from the simulator (`/_sim/stats`).
//! The `COPY` baseline copies the same rows in the same run. Peak RSS is the sync process's own
//! (`VmHWM`). Nothing here is asserted: it measures and prints.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use szb_simulator::demo_world::{GENERATED_AGENT, GENERATED_TOKEN};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::plural::plural;
use crate::secret::{Secret, redact_url};
use crate::settings::Settings;
use crate::store::{RunSums, Store};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Divide every workload's users by this factor, for a quick look (1: the full workloads).
    #[arg(long, value_name = "FACTOR", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    scale: u64,
    /// Runs of each workload, 1..=9; the table shows the median run (by wall time).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    runs: u64,
    /// Only the workloads whose name contains this text (`--only quiet`, `--only replicas`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    #[command(flatten)]
    pub(super) config: super::ConfigArg,
}

/// What a workload measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A first sync of every visit, set beside `COPY` of the same rows.
    InitialVsCopy,
    /// A first sync, set beside the ideal `pages × latency / max_concurrency`.
    InitialVsIdeal,
    /// A first sync behind a server rate limit, set beside `requests / limit`.
    InitialVsLimit,
    /// A pass with nothing new upstream, after a first sync.
    Quiet,
    /// A first sync, measured on its own.
    Initial,
    /// Three `szb-sync run` processes sharing the pairs: the first sync, quiet ticks, and a
    /// replica SIGKILLed mid-pass.
    Replicas,
    /// After a first sync, `szb-sync run` with its listener, passes every 5 s, while
    /// [`LOAD_CLIENTS`] clients load the status page's views in a tight loop.
    Listener,
}

struct Workload {
    name: &'static str,
    users: u64,
    visits_per_user: u64,
    latency_ms: u64,
    rate_limit: f64,
    /// Config lines added to `[api]`.
    api: &'static str,
    /// Config lines added to `[database]`.
    database: &'static str,
    kind: Kind,
    /// An index of `visits` dropped after the migrations, before the sync: the write path as
    /// it was before a migration added it.
    drop_index: Option<&'static str>,
    /// Time the README's example queries and the views after the sync.
    time_reads: bool,
}

/// The index the analysts' migration added for "who is online right now".
const ONLINE_NOW_INDEX: &str = "visits_last_online_at_idx";

/// The first workload: a first sync of 1M visits, set beside `COPY`.
const ONE_MILLION: Workload = Workload {
    name: "1M visits, 200 users",
    users: 200,
    visits_per_user: 5_000,
    latency_ms: 0,
    rate_limit: 0.0,
    api: "",
    database: "",
    kind: Kind::InitialVsCopy,
    drop_index: None,
    time_reads: true,
};

/// The listener under load, on a table of 1M visits.
const LISTENER_1M: Workload = Workload {
    name: "status page under load, 1M visits",
    users: 200,
    visits_per_user: 5_000,
    latency_ms: 0,
    rate_limit: 0.0,
    api: "",
    database: "",
    kind: Kind::Listener,
    drop_index: None,
    time_reads: false,
};

/// Clients loading the status page at once, each in a tight loop.
const LOAD_CLIENTS: usize = 24;
/// How long they load it.
const LOAD_FOR: Duration = Duration::from_secs(30);

const WORKLOADS: &[Workload] = &[
    ONE_MILLION,
    Workload {
        name: "1M visits, 200 users, synchronous_commit off",
        database: "synchronous_commit = \"off\"\n",
        time_reads: false,
        ..ONE_MILLION
    },
    Workload {
        name: "1M visits, 200 users, without visits_last_online_at_idx",
        drop_index: Some(ONLINE_NOW_INDEX),
        time_reads: false,
        ..ONE_MILLION
    },
    Workload {
        name: "1M visits, 100 ms latency, max_concurrency 8",
        users: 200,
        visits_per_user: 5_000,
        latency_ms: 100,
        rate_limit: 0.0,
        api: "max_concurrency = 8\n",
        database: "",
        kind: Kind::InitialVsIdeal,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "1,500 users behind 50 req/s, 100 ms latency",
        users: 1_500,
        visits_per_user: 20,
        latency_ms: 100,
        rate_limit: 50.0,
        api: "",
        database: "",
        kind: Kind::InitialVsLimit,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "quiet resync, 200 users",
        users: 200,
        visits_per_user: 5_000,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "100,000 pairs × 2 visits, first sync",
        users: 100_000,
        visits_per_user: 2,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Initial,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "quiet resync, 100,000 pairs × 2 visits",
        users: 100_000,
        visits_per_user: 2,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
    Workload {
        name: "3 replicas, 2,000 pairs, 20 ms latency",
        users: 2_000,
        visits_per_user: 5,
        latency_ms: 20,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Replicas,
        drop_index: None,
        time_reads: false,
    },
    LISTENER_1M,
    Workload {
        name: "status page under load, 100,000 visits",
        visits_per_user: 500,
        ..LISTENER_1M
    },
    Workload {
        name: "quiet resync, 10,000 pairs",
        users: 10_000,
        visits_per_user: 5,
        latency_ms: 0,
        rate_limit: 0.0,
        api: "",
        database: "",
        kind: Kind::Quiet,
        drop_index: None,
        time_reads: false,
    },
];

/// One timed sync process.
#[derive(Debug, Clone)]
struct Measured {
    wall: Duration,
    peak_rss_kib: u64,
    sums: RunSums,
    rate_limited: u64,
    sim_requests: u64,
    /// Rows per second of the `COPY` baseline, where the workload has one.
    copy_rate: Option<f64>,
    /// Visit rows the timed passes wrote, from `sync_passes`.
    pass_visits: i64,
    replicas: Option<ReplicaStats>,
    /// The status page's and the metrics' reads over this workload's pairs.
    board: Option<BoardTimes>,
    /// The README's example queries and the views, timed after the sync.
    reads: Option<ReadTimes>,
    /// The status page's loads, for the listener workloads.
    loads: Option<LoadStats>,
}

/// What the clients of the status page saw while `run` synced.
#[derive(Debug, Clone)]
struct LoadStats {
    loads: usize,
    /// Loads with an answer other than 200 (or none).
    failed_loads: usize,
    p50: Duration,
    p95: Duration,
    max: Duration,
    /// Passes of `run` that finished during the load, and the pair runs of them that failed.
    passes: i64,
    failed_pairs: i64,
    visits: i64,
}

/// Each README example statement, timed (median of five) with the online-now index and
/// without it, and `COPY` into a table shaped like `visits` with and without it.
#[derive(Debug, Clone)]
struct ReadTimes {
    /// (the statement's label, rows returned, with the index, without it).
    reads: Vec<(String, usize, Duration, Duration)>,
    copy_with: f64,
    copy_without: f64,
}

/// Median times of the reads behind the status page and `/metrics`, over every configured pair.
#[derive(Debug, Clone, Copy)]
struct BoardTimes {
    pair_counts: Duration,
    attention: Duration,
    all_last_page: Duration,
    search: Duration,
    totals: Duration,
    rejects: Duration,
}

/// Quiet workloads with at least this many pairs time the status page's reads after the sync.
const BOARD_FROM_PAIRS: u64 = 10_000;

/// What the replicas workload measured.
#[derive(Debug, Clone, Copy)]
struct ReplicaStats {
    /// Requests per pair per tick over the quiet ticks, all replicas together.
    quiet_requests_per_pair: f64,
    quiet_ticks: i64,
    /// The smallest and largest share of the pair runs one replica made.
    min_share: f64,
    max_share: f64,
    /// From the SIGKILL until every pair the killed replica held had run elsewhere.
    takeover: Duration,
    victim_pairs: usize,
    lease: Duration,
    /// The longest quiet pass of a replica.
    longest_pass: Duration,
}

/// The bench database: `szb_bench` on the configured server, in `database.schema`.
struct BenchDb {
    url: Secret,
    schema: String,
}

impl BenchDb {
    async fn connect(&self) -> Result<Store> {
        Ok(Store::connect_in(&self.url, &self.schema, 2).await?)
    }
}

pub(super) async fn run(settings: &Settings, args: BenchArgs) -> Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut url = url::Url::parse(settings.database.url.expose()).context("database.url")?;
    url.set_path("szb_bench");
    let db = BenchDb {
        url: Secret::new(url.to_string()),
        schema: settings.database.schema.clone(),
    };
    out!(
        "szb-sync bench → {} schema {} (dropped and created for each workload)\n",
        redact_url(db.url.expose()),
        db.schema
    );
    let exe = std::env::current_exe().context("finding the szb-sync binary")?;
    let mut rows = Vec::new();
    for w in WORKLOADS {
        if args.only.as_deref().is_some_and(|o| !w.name.contains(o)) {
            continue;
        }
        let users = (w.users / args.scale).max(1);
        let mut runs = Vec::new();
        for i in 0..args.runs {
            eprintln!("{} (run {} of {}) …", w.name, i + 1, args.runs);
            runs.push(match w.kind {
                Kind::Replicas => run_replicas(&exe, &db, w, users).await?,
                Kind::Listener => run_listener(&exe, &db, w, users).await?,
                _ => run_workload(&exe, &db, w, users).await?,
            });
        }
        runs.sort_by_key(|m| m.wall);
        rows.push((w, users, runs.swap_remove(runs.len() / 2)));
    }
    print_table(&rows);
    print_board(&rows);
    print_reads(&rows);
    print_loads(&rows);
    Ok(ExitCode::SUCCESS)
}

/// `exe` as a child of the bench, without the variables that would override the bench's own
/// config (`DATABASE_URL`, every `SZB_…`): an exported `SZB_DATABASE__URL` must not send a
/// million simulated visits into the database it names while the bench reads `szb_bench`.
fn child_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy().to_ascii_uppercase();
        if text == "DATABASE_URL" || text.starts_with("SZB_") {
            command.env_remove(&name);
        }
    }
    command
}

/// The simulator of a workload, running with no latency or limit yet, and its base URL.
async fn start_sim(exe: &Path, w: &Workload, users: u64) -> Result<(Child, String)> {
    let mut sim = child_command(exe);
    sim.args(["mock-api", "--listen", "127.0.0.1:0", "--users"])
        .arg(users.to_string())
        .arg("--visits-per-user")
        .arg(w.visits_per_user.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut sim = sim.spawn().context("starting szb-sync mock-api")?;
    let base_url = read_base_url(&mut sim).await?;
    sim_config(&reqwest::Client::new(), &base_url, 0, 0.0).await?;
    Ok((sim, base_url))
}

/// A fresh bench database, and a config for `users` pairs of the generated agent on it with
/// `extra` appended; returns the config's path and the user-id file's.
async fn prepare(
    db: &BenchDb,
    base_url: &str,
    w: &Workload,
    users: u64,
    extra: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    Store::recreate_database(&db.url).await?;
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
async fn tear_down(store: Store, mut sim: Child, files: &[&Path]) {
    store.close().await;
    let _ = sim.kill().await;
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

async fn run_workload(exe: &Path, db: &BenchDb, w: &Workload, users: u64) -> Result<Measured> {
    let (sim, base_url) = start_sim(exe, w, users).await?;
    let http = reqwest::Client::new();
    let (config, ids_file) = prepare(db, &base_url, w, users, "").await?;
    let store = db.connect().await?;
    if let Some(index) = w.drop_index {
        // Migrated now, the sync finds nothing to apply and writes without the index.
        store.migrate().await?;
        store.drop_index(index).await?;
    }
    if w.kind == Kind::Quiet {
        let first = sync(exe, &config).await?;
        if first.0 != 0 {
            bail!("the first sync of {:?} failed", w.name);
        }
    }
    sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;
    let (before, before_pass) = match w.kind {
        Kind::Quiet => (store.last_run_id().await?, store.last_pass_id().await?),
        _ => (0, 0),
    };
    let (code, wall, peak_rss_kib) = sync(exe, &config).await?;
    if code != 0 {
        eprintln!("  warning: the sync exited with {code}; see sync_runs in the bench database");
    }
    let sums = store.runs_since(before).await?;
    // Quiet runs leave no run row; every pass has one.
    let pass_visits = store.visits_written_since_pass(before_pass).await?;
    let stats = sim_config(&http, &base_url, 0, 0.0).await?;
    let copy_rate = match w.kind {
        Kind::InitialVsCopy => {
            let (rows, took) = store.copy_visits_baseline(w.drop_index).await?;
            Some(rows as f64 / took.as_secs_f64())
        }
        _ => None,
    };
    let reads = if w.time_reads {
        Some(time_reads(&store).await?)
    } else {
        None
    };
    let board = if w.kind == Kind::Quiet && users >= BOARD_FROM_PAIRS {
        Some(time_board(&store, users).await?)
    } else {
        None
    };
    tear_down(store, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: stats.1,
        sim_requests: stats.0,
        copy_rate,
        pass_visits,
        replicas: None,
        board,
        reads,
        loads: None,
    })
}

/// Times each read of the status page and `/metrics` over the workload's `users` pairs: the
/// median of five calls each.
async fn time_board(store: &Store, users: u64) -> Result<BoardTimes> {
    use crate::domain::PairKey;
    use crate::store::PairQuery;
    let keys: Vec<PairKey> = (1..=users as i64)
        .map(|u| PairKey::new(GENERATED_AGENT, u, None))
        .collect();
    async fn median<F, Fut, T>(mut f: F) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
    {
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            f().await?;
            took.push(started.elapsed());
        }
        took.sort();
        Ok(took[2])
    }
    let page = |attention, user_id, offset| PairQuery {
        attention,
        lag_after: Duration::from_secs(1800),
        agent_id: None,
        user_id,
        offset,
        limit: 50,
    };
    let (attention, all, search) = (
        page(true, None, 0),
        page(false, None, users as i64 - 50),
        page(false, Some(users as i64 / 2), 0),
    );
    let first_rejects = crate::store::RejectFilter {
        limit: 20,
        ..Default::default()
    };
    Ok(BoardTimes {
        pair_counts: median(|| store.pair_counts(&keys)).await?,
        attention: median(|| store.pair_page(&keys, &attention)).await?,
        all_last_page: median(|| store.pair_page(&keys, &all)).await?,
        search: median(|| store.pair_page(&keys, &search)).await?,
        totals: median(|| store.totals()).await?,
        rejects: median(|| store.rejects(&first_rejects)).await?,
    })
}

/// The README, whose ```sql examples the benchmark times.
const README: &str = include_str!("../../README.md");

/// Times every SELECT of the README's examples, after `VACUUM (ANALYZE) visits` (what
/// autovacuum does soon after a first sync), with the online-now index and without it (the
/// drop rolled back), and `COPY` into a table shaped like `visits`, with and without it
/// (alternating, the median of three each). The examples' activity and user become the busiest
/// activity and user 1 of the generated world, so per-activity reads are timed on real rows.
async fn time_reads(store: &Store) -> Result<ReadTimes> {
    store.vacuum_analyze_visits().await?;
    let activity = store.busiest_activity().await?.unwrap_or_default();
    let mut reads = Vec::new();
    for statement in crate::store::sql_blocks(README).into_iter().flatten() {
        let body: Vec<&str> = statement
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
            .collect();
        if !body
            .first()
            .is_some_and(|l| l.trim_start().starts_with("SELECT"))
        {
            continue;
        }
        let label = statement
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("-- "))
            .next_back()
            .map_or_else(|| body[0].trim().to_owned(), str::to_owned);
        let sql = body
            .join("\n")
            .replace("'10096289'", &format!("'{activity}'"))
            .replace("user_id = 15460259", "user_id = 1");
        let (with, rows) = store.time_read(&sql, None, 5).await?;
        let (without, _) = store.time_read(&sql, Some(ONLINE_NOW_INDEX), 5).await?;
        reads.push((label, rows, with, without));
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (rows, took) = store.copy_visits_baseline(None).await?;
        with.push(rows as f64 / took.as_secs_f64());
        let (rows, took) = store.copy_visits_baseline(Some(ONLINE_NOW_INDEX)).await?;
        without.push(rows as f64 / took.as_secs_f64());
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    Ok(ReadTimes {
        reads,
        copy_with: with[1],
        copy_without: without[1],
    })
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "gave up after {} waiting for {what}",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three `szb-sync run` processes on one database and one simulator: how long the first sync
/// takes, what a quiet tick costs, how the work is shared, and how fast the others finish the
/// pairs of one that is SIGKILLed mid-pass.
async fn run_replicas(exe: &Path, db: &BenchDb, w: &Workload, users: u64) -> Result<Measured> {
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
    let store = db.connect().await?;
    store.migrate().await?;
    let started_db = store.now().await?;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..REPLICAS)
        .map(|_| {
            child_command(exe)
                .arg("--config")
                .arg(&config)
                .arg("run")
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting szb-sync run")
        })
        .collect::<Result<_>>()?;
    let want = i64::try_from(users)?;
    poll(Duration::from_secs(1800), "the first sync", || async {
        Ok((store.pairs_ok_since(started_db).await? == want).then_some(()))
    })
    .await?;
    let wall = started.elapsed();
    let first = sim_config(&http, &base_url, w.latency_ms, w.rate_limit).await?;

    // Two whole quiet ticks after the first sync: every replica's pass for each finished.
    let quiet_from = store.now().await?;
    let quiet = poll(Duration::from_secs(120), "two quiet ticks", || async {
        let ticks = store.ticks_since(quiet_from).await?;
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
    let shares = store.pairs_by_owner().await?;
    let total: i64 = shares.iter().map(|(_, pairs)| pairs).sum::<i64>().max(1);
    let share = |(_, pairs): &(String, i64)| *pairs as f64 / total as f64;

    let (victim, _) = poll(
        Duration::from_secs(120),
        "a replica holding leases",
        || async { Ok(store.busiest_lease_owner().await?) },
    )
    .await?;
    let held = store.leased_by(&victim).await?;
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
    let killed_db = store.now().await?;
    let wanted = i64::try_from(held.len())?;
    poll(LEASE * 3, "the killed replica's pairs", || async {
        Ok((store.count_synced_since(&held, killed_db).await? >= wanted).then_some(()))
    })
    .await?;
    let takeover = killed.elapsed();

    let mut peak_rss_kib = 0;
    for c in &mut children {
        if let Some(pid) = c.id() {
            peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid).unwrap_or(0));
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
    }
    let sums = store.runs_since(0).await?;
    tear_down(store, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: first.1,
        sim_requests: first.0,
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
    })
}

/// A first sync, then `szb-sync run` with its listener (passes every 5 s) while
/// [`LOAD_CLIENTS`] clients each load the status page's three views (as the page does, at
/// once) in a tight loop for [`LOAD_FOR`].
async fn run_listener(exe: &Path, db: &BenchDb, w: &Workload, users: u64) -> Result<Measured> {
    let (sim, base_url) = start_sim(exe, w, users).await?;
    let extra = "[schedule]\ncron = \"*/5 * * * * *\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n";
    let (config, ids_file) = prepare(db, &base_url, w, users, extra).await?;
    let store = db.connect().await?;
    let (code, wall, peak_rss_kib) = sync(exe, &config).await?;
    if code != 0 {
        bail!("the first sync of {:?} failed", w.name);
    }
    store.vacuum_analyze_visits().await?;
    let visits = store.runs_since(0).await?.visits_inserted;
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
    let before_pass = store.last_pass_id().await?;
    let before_run = store.last_run_id().await?;
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
    let passes = store.passes_finished_since(before_pass).await?;
    let failed_pairs = store.runs_since(before_run).await?.failed;
    if let Some(pid) = daemon.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
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
    let sums = store.runs_since(0).await?;
    tear_down(store, sim, &[&config, &ids_file]).await;
    Ok(Measured {
        wall,
        peak_rss_kib,
        sums,
        rate_limited: 0,
        sim_requests: 0,
        copy_rate: None,
        pass_visits: 0,
        replicas: None,
        board: None,
        reads: None,
        loads: Some(loads),
    })
}

/// Reads `run`'s log until the listener's line, `serving … listen=ADDR`; keeps draining it.
async fn read_listen(daemon: &mut Child) -> Result<String> {
    let stderr = daemon.stderr.take().context("run's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("listen=") {
                let addr = line[at + 7..].split_whitespace().next().unwrap_or("");
                return Ok::<_, std::io::Error>(Some(addr.to_owned()));
            }
        }
        Ok(None)
    })
    .await
    .context("run did not report its listener within a minute")??
    .context("run exited before it listened")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

/// Waits for `mock-api`'s first line, `simulated shangzhibo.tv API on http://ADDR`.
async fn read_base_url(sim: &mut Child) -> Result<String> {
    let stdout = sim.stdout.take().context("mock-api's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("mock-api did not start within 10 minutes")??
        .context("mock-api exited before it listened")?;
    let url = first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("unexpected first line from mock-api: {first:?}"))?;
    // Keep reading, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(url.to_owned())
}

/// Sets the simulator's latency and rate limit, resets its counts, and returns the counts it
/// had: (requests, 429s).
async fn sim_config(
    http: &reqwest::Client,
    base_url: &str,
    latency_ms: u64,
    rate_limit: f64,
) -> Result<(u64, u64)> {
    let reply: serde_json::Value = http
        .get(format!("{base_url}/_sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    http.post(format!(
        "{base_url}/_sim/config?latencyMs={latency_ms}&rateLimit={rate_limit}&reset=true"
    ))
    .send()
    .await?
    .error_for_status()?;
    let count = |k: &str| reply[k].as_u64().unwrap_or(0);
    Ok((count("requests"), count("rateLimited")))
}

/// Runs `szb-sync sync` on `config`: its exit code, its wall time and its peak RSS in KiB.
async fn sync(exe: &Path, config: &Path) -> Result<(i32, Duration, u64)> {
    let started = Instant::now();
    let mut child = child_command(exe)
        .arg("--config")
        .arg(config)
        .arg("sync")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting szb-sync sync")?;
    let pid = child.id().context("the sync's pid")?;
    let mut peak = 0;
    let status = loop {
        // The high-water mark only grows, so the last reading before exit is the peak.
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak = peak.max(hwm);
        }
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    Ok((status.code().unwrap_or(-1), started.elapsed(), peak))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The status page's reads, for the workloads that timed them.
fn print_board(rows: &[(&Workload, u64, Measured)]) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let timed: Vec<_> = rows
        .iter()
        .filter_map(|(w, users, m)| m.board.map(|b| (w, users, b)))
        .collect();
    if timed.is_empty() {
        return;
    }
    println!(
        "\n| status page reads, ms (median of 5) | pairs | /metrics pair states | pairs needing a look | all pairs, last page | search one pair | totals | rejects |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (w, users, b) in timed {
        println!(
            "| after {} | {users} | {} | {} | {} | {} | {} | {} |",
            w.name,
            ms(b.pair_counts),
            ms(b.attention),
            ms(b.all_last_page),
            ms(b.search),
            ms(b.totals),
            ms(b.rejects)
        );
    }
}

/// The README's queries and the views, for the workloads that timed them.
fn print_reads(rows: &[(&Workload, u64, Measured)]) {
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    for (w, _, m) in rows {
        let Some(r) = &m.reads else { continue };
        println!(
            "\n| after {}: README query (median of 5) | rows | ms | ms without {ONLINE_NOW_INDEX} |",
            w.name
        );
        println!("| --- | ---: | ---: | ---: |");
        for (label, n, with, without) in &r.reads {
            println!("| {label} | {n} | {} | {} |", ms(with), ms(without));
        }
        println!(
            "\nCOPY into a table shaped like visits (median of 3, alternating): {:.0} rows/s with \
             {ONLINE_NOW_INDEX}, {:.0} rows/s without",
            r.copy_with, r.copy_without
        );
    }
}

/// The status page under load, for the listener workloads.
fn print_loads(rows: &[(&Workload, u64, Measured)]) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let timed: Vec<_> = rows
        .iter()
        .filter_map(|(w, _, m)| m.loads.as_ref().map(|l| (w, l)))
        .collect();
    if timed.is_empty() {
        return;
    }
    println!(
        "\n| status page under load ({LOAD_CLIENTS} clients, {} s, `run` passing every 5 s) | visits | loads | failed loads | p50 ms | p95 ms | max ms | passes | failed pair runs |",
        LOAD_FOR.as_secs()
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (w, l) in timed {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            l.visits,
            l.loads,
            l.failed_loads,
            ms(l.p50),
            ms(l.p95),
            ms(l.max),
            l.passes,
            l.failed_pairs
        );
    }
}

fn print_table(rows: &[(&Workload, u64, Measured)]) {
    out!(
        "| workload | pairs | visits | requests | 429s | wall s | visits/s | vs baseline | peak RSS MiB | rows written |"
    );
    out!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
    for (w, users, m) in rows {
        let visits = m.sums.visits_inserted;
        let secs = m.wall.as_secs_f64();
        let written = m.pass_visits + m.sums.activities_written;
        let versus = match w.kind {
            Kind::InitialVsCopy => m.copy_rate.map_or("-".to_owned(), |copy| {
                format!(
                    "{:.2} of COPY ({:.0} rows/s)",
                    visits as f64 / secs / copy,
                    copy
                )
            }),
            Kind::InitialVsIdeal => {
                let concurrency = if w.api.contains("max_concurrency = 8") {
                    8.0
                } else {
                    16.0
                };
                let ideal = m.sums.pages as f64 * w.latency_ms as f64 / 1000.0 / concurrency;
                format!("{:.2}× the ideal {ideal:.1} s", secs / ideal)
            }
            Kind::InitialVsLimit => {
                let ideal = m.sim_requests as f64 / w.rate_limit;
                format!(
                    "{:.2}× requests/limit {ideal:.1} s; {:.1}% 429s; {} failed",
                    secs / ideal,
                    100.0 * m.rate_limited as f64 / m.sim_requests.max(1) as f64,
                    plural(m.sums.failed, "pair", "pairs")
                )
            }
            Kind::Replicas => m.replicas.map_or("-".to_owned(), |r| {
                format!(
                    "quiet: {:.2} requests per pair per tick over {}; shares {:.0}%..{:.0}%; \
                     a SIGKILLed replica's {} done {:.1} s after the kill (lease {} s + pass {:.1} s)",
                    r.quiet_requests_per_pair,
                    plural(r.quiet_ticks, "tick", "ticks"),
                    100.0 * r.min_share,
                    100.0 * r.max_share,
                    plural(r.victim_pairs, "pair", "pairs"),
                    r.takeover.as_secs_f64(),
                    r.lease.as_secs(),
                    r.longest_pass.as_secs_f64()
                )
            }),
            Kind::Listener => "first sync; the load is in its own table below".to_owned(),
            Kind::Quiet | Kind::Initial => format!(
                "{:.2} requests per pair; {} sync_runs rows",
                m.sim_requests as f64 / *users as f64,
                m.sums.runs
            ),
        };
        out!(
            "| {} | {users} | {visits} | {} | {} | {secs:.2} | {:.0} | {versus} | {:.1} | {} |",
            w.name,
            m.sim_requests,
            m.rate_limited,
            visits as f64 / secs,
            m.peak_rss_kib as f64 / 1024.0,
            if w.kind == Kind::Quiet {
                written.to_string()
            } else {
                "-".to_owned()
            },
        );
    }
}
