//! What analysts read: comments on every column, the views (checked against values computed
//! here from the visit rows), the column lists and SQL examples of docs/tables.md, the read-only
//! role recipe, and `database.schema`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use sqlx::{Connection, PgConnection, PgPool, Row};
use szb_sync::bench::sql_blocks;

use crate::helpers::{AGENT, Harness, TOKEN, TestDb, sim_with, target, test_settings};

/// The simulator seed of this module's worlds.
const SEED: u64 = 10;

/// docs/tables.md, read from disk as a user reads it.
fn tables_page() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tables.md")).unwrap()
}

/// The page's sql blocks: the read-only recipe (the one block with `CREATE ROLE`), and the
/// statements of every other block.
fn tables_sql() -> (Vec<String>, Vec<String>) {
    let (recipe, examples): (Vec<_>, Vec<_>) = sql_blocks(&tables_page())
        .into_iter()
        .partition(|b| b.iter().any(|s| s.contains("CREATE ROLE")));
    assert_eq!(recipe.len(), 1, "one read-only recipe in docs/tables.md");
    (
        recipe.into_iter().flatten().collect(),
        examples.into_iter().flatten().collect(),
    )
}

/// Tables and views of `schema` (`_sqlx_migrations` is sqlx's own), each with its columns in
/// order.
async fn relations(pool: &PgPool, schema: &str) -> BTreeMap<String, Vec<String>> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS rel, a.attname::text AS col FROM pg_class c
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'v')
            AND c.relname <> '_sqlx_migrations'
          ORDER BY c.relname, a.attnum",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get("rel")).or_default().push(r.get("col"));
    }
    out
}

/// A harness on a fresh database with `users` generated visits each, migrated into `schema`.
async fn harness_in(schema: &str, users: &[(i64, usize)]) -> Harness {
    let sim = sim_with(SEED, users);
    let mut db = TestDb::new().await;
    // The test's own reads (and the harness's checks) see the schema as szb-sync does.
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    db.pool = PgPool::connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    let server = sim.spawn().await.unwrap();
    let ids: Vec<i64> = users.iter().map(|(u, _)| *u).collect();
    let mut settings = test_settings(&server.base_url, vec![target(AGENT, TOKEN, &ids)]);
    settings.database.url = szb_sync::secret::Secret::new(db.url.clone());
    settings.database.schema = schema.to_owned();
    Harness::with_settings(db, sim, server, settings).await
}

#[tokio::test]
async fn every_table_view_and_column_has_a_comment() {
    let h = Harness::new(sim_with(SEED, &[]), vec![], 1000).await;

    let rels = relations(&h.db.pool, "public").await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname || coalesce('.' || a.attname, '') FROM pg_class c
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'v')
            AND c.relname <> '_sqlx_migrations'
            AND (coalesce(obj_description(c.oid, 'pg_class'), '') = ''
                 OR coalesce(col_description(c.oid, a.attnum), '') = '')
          ORDER BY 1",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();

    for name in [
        "visits",
        "activities",
        "sync_state",
        "sync_runs",
        "sync_passes",
        "sync_rejects",
        "visit_details",
        "user_daily",
        "activity_summary",
    ] {
        assert!(rels.contains_key(name), "{name} is missing from the schema");
    }
    assert!(missing.is_empty(), "no comment on: {}", missing.join(", "));
}

#[tokio::test]
async fn the_tables_page_lists_every_column_of_every_table_and_view_in_order() {
    let h = Harness::new(sim_with(SEED, &[]), vec![], 1000).await;
    let rels = relations(&h.db.pool, "public").await;
    // Tables, views and bookkeeping: the page up to its example queries.
    let text = tables_page();
    let section = &text[..text.find("\n## Example queries\n").unwrap()];

    // An entry starts at **`name`**; its `Columns:` sentence runs to the next blank line.
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in section.split("\n**`").skip(1) {
        let name = entry.split('`').next().unwrap().to_owned();
        let columns = entry
            .split("\nColumns: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{name} has no Columns: list"));
        let columns = columns.split("\n\n").next().unwrap();
        let names = columns
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        listed.insert(name, names);
    }

    assert_eq!(listed, rels);
}

/// A visit row with everything the views read.
#[derive(Debug, Clone)]
struct Row3 {
    agent_id: i64,
    user_id: i64,
    activity_id: String,
    visit_at: DateTime<Utc>,
    last_online_at: DateTime<Utc>,
    minutes: i64,
}

async fn all_visits(pool: &PgPool) -> Vec<Row3> {
    sqlx::query(
        "SELECT agent_id, user_id, activity_id, visit_at, last_online_at, duration_minutes FROM visits",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| Row3 {
        agent_id: r.get("agent_id"),
        user_id: r.get("user_id"),
        activity_id: r.get("activity_id"),
        visit_at: r.get("visit_at"),
        last_online_at: r.get("last_online_at"),
        minutes: i64::from(r.get::<i32, _>("duration_minutes")),
    })
    .collect()
}

/// The most distinct viewers whose visit contains one instant, tried at every visit's start
/// (a maximum of closed intervals is reached at one of their starts): no sweep, no merging.
fn peak_by_brute_force(visits: &[&Row3]) -> i64 {
    visits
        .iter()
        .map(|at| {
            visits
                .iter()
                .filter(|v| v.visit_at <= at.visit_at && at.visit_at <= v.last_online_at)
                .map(|v| (v.agent_id, v.user_id))
                .collect::<BTreeSet<_>>()
                .len() as i64
        })
        .max()
        .unwrap_or(0)
}

fn median(mut minutes: Vec<i64>) -> f64 {
    minutes.sort_unstable();
    let n = minutes.len();
    if n % 2 == 1 {
        minutes[n / 2] as f64
    } else {
        (minutes[n / 2 - 1] + minutes[n / 2]) as f64 / 2.0
    }
}

/// Per activity: (viewers, visits, minutes, median, first visit, last online, peak).
type Summary = (i64, i64, i64, f64, DateTime<Utc>, DateTime<Utc>, i64);

fn expected_summary(visits: &[Row3]) -> BTreeMap<String, Summary> {
    let mut by_activity: BTreeMap<&str, Vec<&Row3>> = BTreeMap::new();
    for v in visits {
        by_activity.entry(&v.activity_id).or_default().push(v);
    }
    by_activity
        .into_iter()
        .map(|(id, vs)| {
            let viewers = vs
                .iter()
                .map(|v| (v.agent_id, v.user_id))
                .collect::<BTreeSet<_>>()
                .len() as i64;
            let summary = (
                viewers,
                vs.len() as i64,
                vs.iter().map(|v| v.minutes).sum(),
                median(vs.iter().map(|v| v.minutes).collect()),
                vs.iter().map(|v| v.visit_at).min().unwrap(),
                vs.iter().map(|v| v.last_online_at).max().unwrap(),
                peak_by_brute_force(&vs),
            );
            (id.to_owned(), summary)
        })
        .collect()
}

async fn stored_summary(pool: &PgPool) -> BTreeMap<String, Summary> {
    sqlx::query(
        "SELECT activity_id, viewers, visits, minutes_watched, median_minutes, first_visit_at,
                last_online_at, peak_concurrent_viewers FROM activity_summary",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("activity_id"),
            (
                r.get("viewers"),
                r.get("visits"),
                r.get("minutes_watched"),
                r.get("median_minutes"),
                r.get("first_visit_at"),
                r.get("last_online_at"),
                r.get("peak_concurrent_viewers"),
            ),
        )
    })
    .collect()
}

#[tokio::test]
async fn the_views_hold_what_the_visit_rows_say() {
    let h = Harness::new(
        sim_with(SEED, &[(1, 800), (2, 300), (3, 40)]),
        vec![target(AGENT, TOKEN, &[1, 2, 3])],
        1000,
    )
    .await;
    // Viewers watching right now, and an activity deleted upstream that keeps its visits.
    h.sim.open_visit(AGENT, 1);
    h.sim.open_visit(AGENT, 2);
    h.sync_ok().await;
    let deleted = h.sim.visits(AGENT, 3)[0].activity_id.clone();
    sqlx::query("UPDATE activities SET name = NULL, status = NULL WHERE id = $1")
        .bind(&deleted)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let visits = all_visits(&h.db.pool).await;
    assert!(visits.len() > 1100);

    // visit_details: every visit once, with its activity's name and status.
    let names: HashMap<String, (Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id, name, status FROM activities")
            .fetch_all(&h.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, name, status)| (id, (name, status)))
            .collect();
    type Detail = (
        i64,
        i64,
        String,
        Option<String>,
        Option<String>,
        DateTime<Utc>,
    );
    let mut expected: Vec<Detail> = visits
        .iter()
        .map(|v| {
            let (name, status) = names[&v.activity_id].clone();
            (
                v.agent_id,
                v.user_id,
                v.activity_id.clone(),
                name,
                status,
                v.visit_at,
            )
        })
        .collect();
    expected.sort();
    let details: Vec<Detail> = sqlx::query_as(
        "SELECT agent_id, user_id, activity_id, activity_name, activity_status, visit_at
           FROM visit_details ORDER BY 1, 2, 3, 6",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let mut details_sorted = details.clone();
    details_sorted.sort();
    assert_eq!(details_sorted, expected);
    assert!(details.iter().any(|d| d.2 == deleted && d.3.is_none()));

    // user_daily: Asia/Shanghai is UTC+8 all year (no daylight saving since 1991).
    let shanghai = FixedOffset::east_opt(8 * 3600).unwrap();
    type Day = (i64, i64, NaiveDate);
    let mut daily: BTreeMap<Day, (i64, i64, BTreeSet<String>)> = BTreeMap::new();
    for v in &visits {
        let day = shanghai
            .from_utc_datetime(&v.visit_at.naive_utc())
            .date_naive();
        let e = daily.entry((v.agent_id, v.user_id, day)).or_default();
        e.0 += 1;
        e.1 += v.minutes;
        e.2.insert(v.activity_id.clone());
    }
    let expected: Vec<(i64, i64, NaiveDate, i64, i64, i64)> = daily
        .into_iter()
        .map(|((a, u, d), (n, m, acts))| (a, u, d, n, m, acts.len() as i64))
        .collect();
    let stored: Vec<(i64, i64, NaiveDate, i64, i64, i64)> = sqlx::query_as(
        "SELECT agent_id, user_id, day, visits, minutes_watched, activities FROM user_daily
          ORDER BY 1, 2, 3",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, expected);

    // activity_summary, peak concurrency included.
    let expected = expected_summary(&visits);
    assert_eq!(stored_summary(&h.db.pool).await, expected);
    assert!(
        expected.values().any(|s| s.6 >= 2),
        "some activity has concurrent viewers"
    );
    let names: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT activity_id, activity_name FROM activity_summary")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    for (id, name) in names {
        assert_eq!(name, names_of(&h.db.pool, &id).await, "{id}");
    }
}

async fn names_of(pool: &PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT name FROM activities WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn peak_concurrency_merges_a_users_overlaps_and_counts_touching_visits_together() {
    let h = Harness::new(sim_with(SEED, &[]), vec![], 1000).await;
    let t = |m: i64| Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap() + Duration::minutes(m);
    // (agent, user, activity, from, until), minutes after 10:00.
    let visits = [
        (AGENT, 1, "A", 0, 30),
        (AGENT, 1, "A", 10, 20), // inside user 1's first visit: still one viewer
        (AGENT, 3, "A", 15, 25),
        (AGENT, 4, "A", 20, 20), // zero length, at 10:20
        (7, 1, "A", 20, 22),     // the same user id of another agent: another viewer
        (AGENT, 2, "A", 30, 40), // begins as user 1's first visit ends: concurrent at 10:30
        (AGENT, 5, "A", 41, 50),
        (AGENT, 1, "B", 0, 10),
        (AGENT, 1, "B", 10, 20), // touches the one before: the same viewer, once
        (AGENT, 2, "B", 20, 20), // touches user 1 at 10:20: two
    ];
    sqlx::query("INSERT INTO activities (id, name) VALUES ('A', 'a'), ('B', 'b')")
        .execute(&h.db.pool)
        .await
        .unwrap();
    for (agent, user, activity, from, until) in visits {
        sqlx::query(
            "INSERT INTO visits (agent_id, user_id, activity_id, visit_at, last_online_at,
                                 duration_minutes) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(agent)
        .bind(user)
        .bind(activity)
        .bind(t(from))
        .bind(t(until))
        .bind((until - from) as i32)
        .execute(&h.db.pool)
        .await
        .unwrap();
    }

    let stored = stored_summary(&h.db.pool).await;

    // At 10:20: user 1 (both visits), user 3, user 4 and agent 7's user 1.
    assert_eq!(stored["A"].6, 4);
    assert_eq!(stored["B"].6, 2);
    assert_eq!(stored["A"].0, 6, "viewers");
    assert_eq!(stored["A"].3, 10.0, "median of 30, 10, 10, 0, 2, 10, 9");
    assert_eq!(stored, expected_summary(&all_visits(&h.db.pool).await));
}

#[tokio::test]
async fn every_sql_example_in_the_docs_runs_against_synced_data() {
    const USER: i64 = 15_460_259;
    let h = Harness::new(
        sim_with(SEED, &[(USER, 300), (2, 50)]),
        vec![target(AGENT, TOKEN, &[USER, 2])],
        1000,
    )
    .await;
    // The examples name the doc's activity 10096289 and user 15460259; someone is online.
    let at = h.sim.visits(AGENT, 2)[10].visit_at + Duration::seconds(1);
    h.sim.insert_visit_at(AGENT, USER, at, Some("10096289"));
    h.sim.open_visit(AGENT, 2);
    h.sync_ok().await;
    let (_, examples) = tables_sql();
    assert!(examples.len() >= 9, "{} statements", examples.len());

    let mut rows_of = BTreeMap::new();
    for sql in &examples {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(&h.db.pool)
            .await
            .unwrap_or_else(|e| panic!("docs/tables.md example failed: {e}\n{sql}"));
        let label = sql
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap()
            .to_owned();
        rows_of.insert(sql.clone(), (label, rows));
    }

    for (sql, (label, rows)) in &rows_of {
        if label.contains("Is the sync healthy?") {
            assert!(rows.is_empty(), "every pair synced ok just now:\n{sql}");
        } else {
            assert!(!rows.is_empty(), "no rows from:\n{sql}");
        }
        if label.contains("online right now") {
            let users: Vec<i64> = rows.iter().map(|r| r.get("user_id")).collect();
            assert_eq!(users, [2], "the open visit, and only it");
        }
    }
}

#[tokio::test]
async fn sync_into_its_own_schema_leaves_public_without_tables() {
    let schema = format!("szb_test_{}", rand::random::<u32>());
    let h = harness_in(&schema, &[(1, 120), (2, 30)]).await;

    h.sync_ok().await;

    let in_schema: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.visits"
    )))
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(in_schema, 150);
    let public: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert!(public.is_empty(), "public holds {public:?}");
    let migrations: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}._sqlx_migrations"
    )))
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(migrations, szb_sync::store::MIGRATOR.iter().count() as i64);
    let summary: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT sum(visits)::int8 FROM {schema}.activity_summary"
    )))
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(summary, 150);
    // What status and the status page read comes from the schema too.
    let pairs = h.app.store().known_pairs().await.unwrap();
    let status = h
        .app
        .store()
        .status(&pairs, h.settings.sync.rate_half_life)
        .await
        .unwrap();
    let visits: Vec<i64> = status.iter().map(|p| p.visits).collect();
    assert_eq!(visits, [120, 30]);
    assert_eq!(h.app.store().totals().await.unwrap().visits, 150);
    // A second migrate finds everything applied.
    h.app.migrate().await.unwrap();
}

#[tokio::test]
async fn the_read_only_recipe_reads_every_table_and_view_and_writes_nothing() {
    read_only_recipe_in(&format!("szb_ro_{}", rand::random::<u32>())).await;
}

#[tokio::test]
async fn the_read_only_recipe_as_written_in_public_reads_and_writes_nothing() {
    read_only_recipe_in("public").await;
}

/// The read-only recipe of docs/tables.md, run in `schema` (its `public` replaced), then the reader's
/// reads and refused writes.
async fn read_only_recipe_in(schema: &str) {
    let role = format!(
        "szb_reader_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let h = harness_in(schema, &[(1, 20)]).await;
    h.sync_ok().await;
    let (recipe, _) = tables_sql();
    let mut owner = PgConnection::connect(&h.db.url).await.unwrap();
    for statement in &recipe {
        let sql = statement
            .replace("szb_reader", &role)
            .replace("DATABASE szb ", &format!("DATABASE {} ", h.db.name()))
            .replace("public", schema);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut owner)
            .await
            .unwrap_or_else(|e| panic!("recipe line failed: {e}\n{sql}"));
    }
    // A table a later migration adds: the default privileges cover it.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {schema}.added_later (x int)"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let mut relations: Vec<String> = relations(&h.db.pool, schema).await.into_keys().collect();
    assert!(relations.contains(&"added_later".to_owned()) && relations.len() >= 10);
    relations.sort();

    let mut url = url::Url::parse(&h.db.url).unwrap();
    url.set_username(&role).unwrap();
    let outcome = async {
        let mut reader = PgConnection::connect(url.as_str()).await?;
        let mut read = Vec::new();
        for rel in &relations {
            // Unqualified: the recipe set the role's search_path.
            let sql = format!("SELECT count(*) FROM {rel}");
            read.push((
                rel.clone(),
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut reader)
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        let mut refused = Vec::new();
        for sql in [
            "INSERT INTO activities (id) VALUES ('x')",
            "UPDATE visits SET duration_minutes = 0",
            "DELETE FROM sync_state",
            "CREATE TABLE mine (x int)",
        ] {
            let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut reader)
                .await
                .err()
                .and_then(|e| {
                    e.as_database_error()
                        .and_then(|d| d.code())
                        .map(|c| c.into_owned())
                });
            refused.push((sql, err));
        }
        let _ = reader.close().await;
        Ok::<_, sqlx::Error>((read, refused))
    }
    .await;
    // The role is the server's, not the test database's: drop it before asserting.
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut owner)
            .await
            .unwrap();
    }

    let (read, refused) = outcome.unwrap();
    for (rel, count) in &read {
        assert!(count.is_ok(), "{role} cannot read {rel}: {count:?}");
    }
    assert_eq!(read.iter().find(|r| r.0 == "visits").unwrap().1, Ok(20));
    for (sql, code) in refused {
        assert_eq!(code.as_deref(), Some("42501"), "not refused: {sql}");
    }
}

#[tokio::test]
async fn deployments_in_two_schemas_of_one_database_do_not_share_pair_locks() {
    // Advisory locks span the database: the key names the schema, so one pair configured in
    // two schemas is two pairs, while in one schema it stays one.
    let db = TestDb::new().await;
    let url = szb_sync::secret::Secret::new(db.url.clone());
    let store_in = |schema: &str| szb_sync::store::Store::connect_lazy_in(&url, schema, 4).unwrap();
    let (public, other, public_again) = (
        store_in("public"),
        store_in("szb_other"),
        store_in("public"),
    );
    for store in [&public, &other] {
        store.migrate().await.unwrap();
    }
    let pair = szb_sync::domain::PairKey {
        agent_id: AGENT,
        user_id: 1,
        activity_filter: None,
    };

    let held = public.lock_pair(&pair).await.unwrap().expect("a free lock");

    assert!(
        public_again.lock_pair(&pair).await.unwrap().is_none(),
        "a second process in the same schema must not take the pair"
    );
    let elsewhere = other.lock_pair(&pair).await.unwrap();
    assert!(elsewhere.is_some(), "the other schema's pair is its own");
    // The key in `public` is the one earlier versions took, so mixed replicas still exclude.
    let old_key_taken: bool = sqlx::query_scalar(
        "SELECT NOT pg_try_advisory_lock(hashtextextended('szb-sync:' || $1 || ':1:', 0))",
    )
    .bind(AGENT)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(old_key_taken, "public's key is the pre-schema key");
    held.release().await.unwrap();
    elsewhere.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn replicas_starting_at_once_on_a_new_schema_all_migrate() {
    // The look-up and CREATE SCHEMA race between replicas; the one that loses must go on.
    let db = TestDb::new().await;
    let url = szb_sync::secret::Secret::new(db.url.clone());
    let stores: Vec<_> = (0..6)
        .map(|_| szb_sync::store::Store::connect_lazy_in(&url, "szb_race", 2).unwrap())
        .collect();

    let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;

    for result in results {
        result.unwrap();
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'szb_race'::regnamespace AND relname = 'visits'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}
