//! End-to-end benchmark: szb-sync's initial sync against Postgres's own `COPY`, in one run.
//!
//! ```sh
//! cargo run --release --example bench -- 200000
//! ```
//!
//! It creates a fresh database `szb_bench` (on `DATABASE_URL`'s server, else 127.0.0.1:5432),
//! generates N visits in the built-in simulator and measures:
//! 1. the baseline: `COPY` of the same N visit rows into a table shaped like `visits`;
//! 2. szb-sync's initial sync of those visits (HTTP to the simulator, decode, upsert);
//! 3. a quiet resync (nothing new upstream);
//! 4. a resync after 1% new visits.
//!
//! Rates are rows per second. Each is also shown as a ratio to the `COPY` baseline.

use std::time::Instant;

use szb_sync::app::App;
use szb_sync::secret::Secret;
use szb_sync::settings::{Settings, Target};
use szb_sync::simulator::Simulator;
use tokio_util::sync::CancellationToken;

const AGENT: i64 = 105_131;
const USER: i64 = 15_460_259;
const TOKEN: &str = "bench-token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `RUST_LOG=szb_sync=debug` shows per-page fetch and write times.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
    let mut url = url::Url::parse(&server)?;
    url.set_path("szb_bench");
    let url = Secret::new(url.to_string());
    {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await?;
        sqlx::query("DROP DATABASE IF EXISTS szb_bench WITH (FORCE)")
            .execute(&mut admin)
            .await?;
        sqlx::query("CREATE DATABASE szb_bench")
            .execute(&mut admin)
            .await?;
    }

    println!("generating {n} visits in the simulator …");
    let sim = Simulator::new(1);
    sim.add_agent(AGENT, TOKEN);
    sim.generate_visits(AGENT, USER, n);
    let truth = sim.visits(AGENT, USER);
    let spawned = sim.spawn().await?;
    // szb-sync, built as the binary builds it, against the simulator.
    let mut settings = Settings::default();
    settings.api.base_url = spawned.base_url.parse()?;
    settings.database.url = url.clone();
    settings.targets = vec![Target {
        agent_id: AGENT,
        user_ids: vec![USER],
        token: Some(Secret::new(TOKEN)),
        activity_id: None,
    }];
    settings.sync.concurrency = 1;
    let app = App::build(&settings)?;
    app.migrate().await?;

    // 1. Baseline: COPY the same rows into a keyed table shaped like `visits`.
    let pool = sqlx::PgPool::connect(url.expose()).await?;
    sqlx::query("CREATE TABLE visits_copy (LIKE visits INCLUDING DEFAULTS INCLUDING INDEXES)")
        .execute(&pool)
        .await?;
    let mut csv = String::with_capacity(n * 90);
    for v in &truth {
        csv.push_str(&format!(
            "{AGENT},{USER},{},{},{},{},{{}}\n",
            v.activity_id,
            v.visit_at.to_rfc3339(),
            v.last_online_at.to_rfc3339(),
            v.duration_minutes
        ));
    }
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY visits_copy (agent_id, user_id, activity_id, visit_at, last_online_at, duration_minutes, extra) FROM STDIN (FORMAT csv)",
        )
        .await?;
    copy.send(csv.as_bytes()).await?;
    copy.finish().await?;
    let copy_secs = started.elapsed().as_secs_f64();
    drop(conn);

    // 2–4. szb-sync against the simulator.
    let never = CancellationToken::new();
    let timed = |label: &'static str| {
        let (app, never) = (&app, never.clone());
        async move {
            let started = Instant::now();
            let report = app.sync_once(&never).await;
            let secs = started.elapsed().as_secs_f64();
            assert!(report.failed().count() == 0, "{label}: {report}");
            (report.totals(), secs)
        }
    };
    let (initial, initial_secs) = timed("initial").await;
    let (quiet, quiet_secs) = timed("quiet").await;
    sim.append_visits(AGENT, USER, n / 100);
    let (delta, delta_secs) = timed("delta").await;

    let copy_rate = n as f64 / copy_secs;
    let rate = |rows: u64, secs: f64| rows as f64 / secs;
    println!(
        "\n{:<34} {:>10} {:>9} {:>12} {:>8}",
        "", "rows", "requests", "rows/s", "vs COPY"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>12.0} {:>8}",
        "COPY into a keyed table (baseline)", n, "-", copy_rate, "1.00"
    );
    let line = |label: &str, rows: u64, requests: u32, secs: f64| {
        println!(
            "{:<34} {:>10} {:>9} {:>12.0} {:>8.2}",
            label,
            rows,
            requests,
            rate(rows, secs),
            rate(rows, secs) / copy_rate
        );
    };
    line(
        "szb-sync initial sync",
        initial.visits_inserted,
        initial.requests,
        initial_secs,
    );
    line(
        "szb-sync resync after +1%",
        delta.visits_inserted,
        delta.requests,
        delta_secs,
    );
    println!(
        "{:<34} {:>10} {:>9} {:>11.1}ms",
        "szb-sync quiet resync",
        quiet.visits_inserted + quiet.visits_updated,
        quiet.requests,
        quiet_secs * 1000.0
    );
    spawned.shutdown().await?;
    Ok(())
}
