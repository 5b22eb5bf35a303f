//! The one copy of every test helper: a fresh database per test, the simulator as upstream, and
//! the app built from settings through [`App::build`], as the binary builds it.
//!
//! Postgres is found in this order: `DATABASE_URL`; a server answering on 127.0.0.1:5432;
//! testcontainers' Postgres where Docker runs; else the test fails saying how to provide one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Connection, PgConnection, PgPool, Row};
use szb_simulator::{Simulator, SpawnedSimulator, TruthVisit};
use szb_sync::app::App;
use szb_sync::domain::{Pair, RunOutcome};
use szb_sync::engine::SyncReport;
use szb_sync::secret::Secret;
use szb_sync::settings::{Settings, Target};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// The agent most tests sync, the doc's own, and its token in the simulator.
pub const AGENT: i64 = 105_131;
pub const TOKEN: &str = "tok-105131";

static SERVER: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The URL of a Postgres server the tests may create databases on.
async fn server_url() -> String {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url;
            }
            for url in [
                "postgres://root@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ] {
                if PgConnection::connect(url).await.is_ok() {
                    return url.to_owned();
                }
            }
            if let Some(url) = container_url().await {
                return url;
            }
            panic!(
                "no Postgres for the tests: set DATABASE_URL=postgres://USER@HOST:PORT/DB (a role \
                 that may CREATE DATABASE), or start one on 127.0.0.1:5432 (`docker compose up -d db`), \
                 or install Docker so testcontainers can start one"
            );
        })
        .await
        .clone()
}

/// Starts a throwaway Postgres with testcontainers when a Docker engine answers.
async fn container_url() -> Option<String> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    let container = Postgres::default().start().await.ok()?;
    let port = container.get_host_port_ipv4(5432).await.ok()?;
    // Kept for the whole test process; the testcontainers reaper removes it afterwards.
    Box::leak(Box::new(container));
    Some(format!(
        "postgres://postgres:postgres@127.0.0.1:{port}/postgres"
    ))
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin_url = server_url().await;
        let name = format!(
            "szb_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            rand::random::<u32>()
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connecting to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("creating a test database");
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        let url = url.to_string();
        let pool = PgPool::connect(&url).await.unwrap();
        TestDb {
            url,
            pool,
            name,
            admin_url,
        }
    }
}

impl TestDb {
    /// The database's name, for statements that need it spelled out.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.admin_url, &self.name);
    }
}

/// Drops a database from outside async context (a `Drop`): a thread with its own runtime.
pub fn drop_database(admin_url: &str, name: &str) {
    let (admin_url, name) = (admin_url.to_owned(), name.to_owned());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    })
    .join();
}

/// The stored visits of a pair, sorted.
pub async fn visits_of(pool: &PgPool, agent_id: i64, user_id: i64) -> Vec<VisitRow> {
    let rows = sqlx::query(
        "SELECT user_id, activity_id, visit_at, last_online_at, duration_minutes FROM visits
          WHERE agent_id = $1 AND user_id = $2",
    )
    .bind(agent_id)
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut rows: Vec<VisitRow> = rows
        .iter()
        .map(|r| VisitRow {
            user_id: r.get("user_id"),
            activity_id: r.get("activity_id"),
            visit_at: r.get("visit_at"),
            last_online_at: r.get("last_online_at"),
            duration_minutes: r.get("duration_minutes"),
        })
        .collect();
    rows.sort();
    rows
}

/// A simulator with [`AGENT`] (token [`TOKEN`]) and `n` generated visits for each `(user, n)`.
pub fn sim_with(seed: u64, users: &[(i64, usize)]) -> Simulator {
    sim_adding(seed, users, Simulator::generate_visits)
}

/// [`sim_with`], but with no ties at all (`append_visits` makes none), so every guess of a window
/// ahead is one the walk accepts.
pub fn sim_without_ties(seed: u64, users: &[(i64, usize)]) -> Simulator {
    sim_adding(seed, users, Simulator::append_visits)
}

fn sim_adding(
    seed: u64,
    users: &[(i64, usize)],
    add: impl Fn(&Simulator, i64, i64, usize),
) -> Simulator {
    let sim = Simulator::new(seed);
    sim.add_agent(AGENT, TOKEN);
    for (user, n) in users {
        add(&sim, AGENT, *user, *n);
    }
    sim
}

/// The outcome of every recorded run, oldest first.
pub async fn outcomes(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM sync_runs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A file of the repository, by its path from the root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The status code and body of a GET.
pub async fn get(url: &str) -> Result<(u16, String), reqwest::Error> {
    let res = reqwest::get(url).await?;
    let status = res.status().as_u16();
    Ok((status, res.text().await?))
}

/// Stored visits whose `activity_id` has no row in `activities`.
pub async fn orphan_visits(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM visits v WHERE NOT EXISTS (SELECT 1 FROM activities a WHERE a.id = v.activity_id)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A time as the platform writes it: RFC 3339 in UTC, with milliseconds.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Row versions of the synced tables, in key order, and each pair's mark: any INSERT or UPDATE
/// of a visit or an activity, and any move of a mark, changes it. (A run also records its
/// last run time on the pair's `sync_state` row; that is bookkeeping, not data.)
pub async fn row_versions(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT string_agg(xmin::text || ctid::text, ',' ORDER BY agent_id, user_id, activity_id, visit_at) FROM visits), '')
             || '|' || coalesce((SELECT string_agg(xmin::text || ctid::text, ',' ORDER BY id) FROM activities), '')
             || '|' || coalesce((SELECT string_agg(concat_ws(' ', settled_count, anchor_visit_at, anchor_activity_ids, upstream_total, mark_moved_at), ',' ORDER BY agent_id, user_id, activity_filter) FROM sync_state), '')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A year decades from now, taken from today's date so no test ever reaches it.
pub fn far_year() -> i32 {
    chrono::Datelike::year(&Utc::now()) + 70
}

/// A cron whose next tick is decades away: `run` syncs at start, and then only when told.
pub fn only_at_start() -> String {
    format!("0 0 0 1 1 * {}", far_year())
}

/// A visit row as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VisitRow {
    pub user_id: i64,
    pub visit_at: DateTime<Utc>,
    pub activity_id: String,
    pub last_online_at: DateTime<Utc>,
    pub duration_minutes: i32,
}

impl From<TruthVisit> for VisitRow {
    fn from(v: TruthVisit) -> Self {
        VisitRow {
            user_id: v.user_id,
            activity_id: v.activity_id,
            visit_at: v.visit_at,
            last_online_at: v.last_online_at,
            duration_minutes: v.duration_minutes,
        }
    }
}

/// Settings for tests: fast retries, no request budget to wait on, short settle time.
pub fn test_settings(base_url: &str, targets: Vec<Target>) -> Settings {
    let mut s = Settings::default();
    s.api.base_url = base_url.parse().unwrap();
    s.api.retry_backoff = Duration::from_millis(1);
    s.api.max_requests_per_second = None;
    s.api.timeout = Duration::from_secs(5);
    s.sync.settle_after = Duration::from_secs(3600);
    s.targets = targets;
    s
}

pub fn target(agent_id: i64, token: &str, user_ids: &[i64]) -> Target {
    Target {
        agent_id,
        user_ids: user_ids.to_vec(),
        user_ids_file: None,
        token: Some(Secret::new(token)),
        activity_id: None,
    }
}

/// A test's world: its database, the simulator serving as upstream, and the app.
pub struct Harness {
    pub db: TestDb,
    pub sim: Simulator,
    /// Serves `sim` for as long as the harness lives.
    _server: SpawnedSimulator,
    pub settings: Settings,
    pub app: App,
}

impl Harness {
    /// Starts the simulator and an engine syncing `targets` with `page_size`.
    pub async fn new(sim: Simulator, targets: Vec<Target>, page_size: u32) -> Harness {
        Self::tweaked(sim, targets, page_size, |_| {}).await
    }

    /// [`Harness::new`], with whatever else `tweak` changes in the test settings (it runs last,
    /// so it may change the page size too).
    pub async fn tweaked(
        sim: Simulator,
        targets: Vec<Target>,
        page_size: u32,
        tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        // `RUST_LOG=szb_sync=debug cargo test …` shows the walk's decisions.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let server = sim.spawn().await.unwrap();
        let mut settings = test_settings(&server.base_url, targets);
        settings.api.page_size = page_size;
        settings.database.url = Secret::new(db.url.clone());
        tweak(&mut settings);
        Self::with_settings(db, sim, server, settings).await
    }

    pub async fn with_settings(
        db: TestDb,
        sim: Simulator,
        server: SpawnedSimulator,
        settings: Settings,
    ) -> Harness {
        settings.validate().expect("test settings are valid");
        let app = App::build(&settings).unwrap();
        app.migrate().await.unwrap();
        Harness {
            db,
            sim,
            _server: server,
            settings,
            app,
        }
    }

    /// The configured pairs.
    pub fn pairs(&self) -> &[Pair] {
        self.app.pairs()
    }

    /// One pass over every pair. Whatever it did, every stored visit's activity has a row
    /// (szb-sync keeps this without a foreign key: see the migrations).
    pub async fn sync(&self) -> SyncReport {
        let report = self.app.sync_once(&CancellationToken::new()).await;
        assert_eq!(
            orphan_visits(&self.db.pool).await,
            0,
            "visits without an activity row"
        );
        report
    }

    /// One pass that must succeed for every pair.
    pub async fn sync_ok(&self) -> SyncReport {
        let report = self.sync().await;
        for p in &report.pairs {
            assert_eq!(p.outcome, RunOutcome::Ok, "{}: {:?}", p.pair, p.error);
        }
        report
    }

    pub async fn visits(&self, agent_id: i64, user_id: i64) -> Vec<VisitRow> {
        visits_of(&self.db.pool, agent_id, user_id).await
    }

    /// What the simulator holds (or ever held, purged visits included), as rows.
    pub fn truth(&self, agent_id: i64, user_id: i64, ever: bool) -> Vec<VisitRow> {
        let visits = if ever {
            self.sim.all_visits_ever(agent_id, user_id)
        } else {
            self.sim.visits(agent_id, user_id)
        };
        let mut rows: Vec<VisitRow> = visits.into_iter().map(VisitRow::from).collect();
        rows.sort();
        rows
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}
