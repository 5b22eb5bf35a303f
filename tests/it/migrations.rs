//! Upgrading a database: rows an earlier version let in and the new constraints refuse are moved
//! to `sync_rejects`, not lost, and the constraints hold from then on.

use std::path::Path;

use serde_json::Value;
use sqlx::Row;
use sqlx::migrate::Migrator;
use szb_sync::domain::RunOutcome;
use szb_sync::secret::Secret;
use szb_sync::store::Store;

use crate::helpers::TestDb;

/// The first migration only, as a database synced before the visit constraints holds it.
async fn migrate_to_the_first_version(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let first = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/20261125000001_init.sql");
    std::fs::copy(&first, dir.path().join("20261125000001_init.sql")).unwrap();
    Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&db.pool)
        .await
        .unwrap();
}

/// Every migration, through szb-sync's own store, as the new binary applies them.
async fn migrate_to_the_latest(db: &TestDb) -> Store {
    let store = Store::connect(&Secret::new(db.url.clone()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn insert_visit(db: &TestDb, visit_at: &str, last_online_at: &str, duration: i32) {
    insert_visit_of(db, 2, "a1", visit_at, last_online_at, duration).await;
}

async fn insert_visit_of(
    db: &TestDb,
    user_id: i64,
    activity_id: &str,
    visit_at: &str,
    last_online_at: &str,
    duration: i32,
) {
    sqlx::query(
        "INSERT INTO visits (agent_id, user_id, activity_id, visit_at, last_online_at,
                duration_minutes, extra)
         VALUES (1, $4, $5, $1::timestamptz, $2::timestamptz, $3, '{\"watchedOn\": \"tv\"}')",
    )
    .bind(visit_at)
    .bind(last_online_at)
    .bind(duration)
    .bind(user_id)
    .bind(activity_id)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upgrade_moves_impossible_visits_to_rejects_then_refuses_them() {
    let db = TestDb::new().await;
    migrate_to_the_first_version(&db).await;
    sqlx::query("INSERT INTO activities (id, name) VALUES ('a1', 'x')")
        .execute(&db.pool)
        .await
        .unwrap();
    insert_visit(&db, "2024-05-01T10:00:00Z", "2024-05-01T10:30:00Z", 30).await;
    insert_visit(&db, "2024-05-02T10:00:00Z", "2023-05-02T10:00:00Z", 5).await;
    insert_visit(&db, "2024-05-03T10:00:00Z", "2024-05-03T10:00:00Z", -3).await;
    // A server whose zone is not UTC must not change what the reasons say.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET timezone = 'Asia/Shanghai'",
        db.name()
    )))
    .execute(&db.pool)
    .await
    .unwrap();

    migrate_to_the_latest(&db).await;

    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT to_char(visit_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM visits ORDER BY visit_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(kept, ["2024-05-01"], "only the possible visit stays");
    let rejects = sqlx::query(
        "SELECT agent_id, user_id, activity_filter, raw, reason FROM sync_rejects
          ORDER BY raw->>'visitAt'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rejects.len(), 2);
    let raw: Vec<Value> = rejects.iter().map(|r| r.get("raw")).collect();
    let reasons: Vec<String> = rejects.iter().map(|r| r.get("reason")).collect();
    assert_eq!(
        raw[0],
        serde_json::json!({
            "visitAt": "2024-05-02T10:00:00.000Z",
            "lastOnlineAt": "2023-05-02T10:00:00.000Z",
            "duration": 5,
            "userId": 2,
            "activityId": "a1",
            "watchedOn": "tv",
        })
    );
    assert!(
        reasons[0].starts_with(
            "lastOnlineAt 2023-05-02T10:00:00Z is before visitAt 2024-05-02T10:00:00Z"
        ),
        "{}",
        reasons[0]
    );
    assert_eq!(raw[1]["duration"], -3);
    assert!(reasons[1].contains("duration -3"), "{}", reasons[1]);
    for r in &rejects {
        assert_eq!(
            (r.get::<i64, _>("agent_id"), r.get::<i64, _>("user_id")),
            (1, 2)
        );
        assert_eq!(r.get::<String, _>("activity_filter"), "");
    }

    for (visit_at, last_online_at, duration) in [
        ("2024-06-01T10:00:00Z", "2024-05-01T10:00:00Z", 1),
        ("2024-06-02T10:00:00Z", "2024-06-02T10:00:00Z", -1),
    ] {
        let err = sqlx::query(
            "INSERT INTO visits (agent_id, user_id, activity_id, visit_at, last_online_at,
                    duration_minutes)
             VALUES (1, 2, 'a1', $1::timestamptz, $2::timestamptz, $3)",
        )
        .bind(visit_at)
        .bind(last_online_at)
        .bind(duration)
        .execute(&db.pool)
        .await
        .expect_err("Postgres refuses a visit that cannot exist");
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23514"), "a check violation: {err}");
    }
}

#[tokio::test]
async fn a_moved_visit_of_a_filtered_pair_is_filed_under_that_pair() {
    let db = TestDb::new().await;
    migrate_to_the_first_version(&db).await;
    sqlx::raw_sql(
        "INSERT INTO activities (id) VALUES ('a1'), ('a2');
         INSERT INTO sync_state (agent_id, user_id, activity_filter) VALUES (1, 3, 'a2');
         INSERT INTO sync_state (agent_id, user_id, activity_filter) VALUES (1, 4, ''),
                (1, 4, 'a2');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // User 3 is synced only through its filter on a2; user 4 also without a filter.
    insert_visit_of(
        &db,
        3,
        "a2",
        "2024-05-02T10:00:00Z",
        "2023-05-02T10:00:00Z",
        1,
    )
    .await;
    insert_visit_of(
        &db,
        4,
        "a2",
        "2024-05-02T10:00:00Z",
        "2023-05-02T10:00:00Z",
        1,
    )
    .await;

    migrate_to_the_latest(&db).await;

    let filed: Vec<(i64, String)> =
        sqlx::query_as("SELECT user_id, activity_filter FROM sync_rejects ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(filed, [(3, "a2".to_owned()), (4, String::new())]);
}

#[tokio::test]
async fn an_upgrade_folds_each_rejected_item_into_one_row() {
    let db = TestDb::new().await;
    migrate_to_the_first_version(&db).await;
    // An earlier version kept a row per version of an open rejected item (keyed by the hash
    // of its raw JSON): three reads of one item as its lastOnlineAt moved, and another item.
    sqlx::raw_sql(
        r#"INSERT INTO sync_rejects (agent_id, user_id, raw, reason, first_seen_at) VALUES
           (1, 2, '{"visitAt": "2024-05-01T10:00:00Z", "activityId": "a1", "userId": 2,
                    "lastOnlineAt": "2024-05-01T10:05:00Z", "duration": "5"}', 'v1',
            '2024-05-01T10:06:00Z'),
           (1, 2, '{"visitAt": "2024-05-01T10:00:00Z", "activityId": "a1", "userId": 2,
                    "lastOnlineAt": "2024-05-01T10:15:00Z", "duration": "15"}', 'v2',
            '2024-05-01T10:16:00Z'),
           (1, 2, '{"visitAt": "2024-05-01T10:00:00Z", "activityId": "a1", "userId": 2,
                    "lastOnlineAt": "2024-05-01T10:25:00Z", "duration": "25"}', 'v3',
            '2024-05-01T10:26:00Z'),
           (1, 2, '{"visitAt": "2024-05-01T11:00:00Z", "activityId": "a1", "userId": 2,
                    "lastOnlineAt": "2024-05-01T11:05:00Z", "duration": "5"}', 'other',
            '2024-05-01T11:06:00Z'),
           -- The same item seen by another pair is that pair's own row.
           (1, 3, '{"visitAt": "2024-05-01T10:00:00Z", "activityId": "a1", "userId": 2,
                    "lastOnlineAt": "2024-05-01T10:05:00Z", "duration": "5"}', 'pair 3',
            '2024-05-01T10:06:00Z');"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();

    migrate_to_the_latest(&db).await;

    let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT user_id, reason, raw->>'duration',
                to_char(first_seen_at AT TIME ZONE 'UTC', 'HH24:MI'),
                to_char(last_seen_at AT TIME ZONE 'UTC', 'HH24:MI')
           FROM sync_rejects ORDER BY user_id, first_seen_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let row = |u: i64, r: &str, d: &str, first: &str, last: &str| {
        (
            u,
            r.to_owned(),
            d.to_owned(),
            first.to_owned(),
            last.to_owned(),
        )
    };
    assert_eq!(
        rows,
        [
            // The newest version, first seen when the oldest was.
            row(2, "v3", "25", "10:06", "10:26"),
            row(2, "other", "5", "11:06", "11:06"),
            row(3, "pair 3", "5", "10:06", "10:06"),
        ]
    );
}

#[tokio::test]
async fn a_fresh_database_migrates_with_the_constraints_in_place() {
    let db = TestDb::new().await;

    let store = migrate_to_the_latest(&db).await;
    store.migrate().await.unwrap();

    let checks: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint
          WHERE conrelid = 'visits'::regclass AND contype = 'c' ORDER BY conname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        checks,
        [
            "visits_duration_minutes_not_negative",
            "visits_last_online_at_not_before_visit_at"
        ]
    );
    let foreign_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'visits'::regclass AND contype = 'f'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        foreign_keys, 0,
        "the writer keeps activities complete, not a per-row check"
    );
}

#[tokio::test]
async fn every_run_outcome_is_a_value_sync_runs_accepts_and_no_other_is() {
    let db = TestDb::new().await;
    migrate_to_the_latest(&db).await;

    for outcome in RunOutcome::ALL {
        sqlx::query("INSERT INTO sync_runs (agent_id, user_id, outcome) VALUES (1, 2, $1)")
            .bind(outcome.as_str())
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{outcome} refused: {e}"));
    }
    let err =
        sqlx::query("INSERT INTO sync_runs (agent_id, user_id, outcome) VALUES (1, 2, 'done')")
            .execute(&db.pool)
            .await
            .expect_err("an outcome szb-sync does not know is refused");
    let code = err.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23514"), "{err}");
}

/// The migration files, in order.
fn migration_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// A table's rows as JSON, to write into the same table of another schema version (columns
/// that version lacks are left out by `json_populate_recordset`).
async fn rows_json(pool: &sqlx::PgPool, table: &str) -> Value {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(jsonb_agg(t), '[]') FROM {table} t"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Each pair's mark, in key order.
async fn marks(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' ', agent_id, user_id, activity_filter, settled_count,
                anchor_visit_at, anchor_activity_ids, upstream_total)
           FROM sync_state ORDER BY agent_id, user_id, activity_filter",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_upgrade_from_every_earlier_migration_set_keeps_rows_and_marks_and_syncs_quietly() {
    use crate::helpers::{AGENT, Harness, TOKEN, row_versions, sim_with, target};
    let users = [1, 2, 3];
    // What a sync wrote: the rows an earlier version would have written too.
    let h = Harness::new(
        sim_with(16, &[(1, 40), (2, 25), (3, 1)]),
        vec![target(AGENT, TOKEN, &users)],
        10,
    )
    .await;
    h.sync_ok().await;
    let (visits, activities) = (
        rows_json(&h.db.pool, "visits").await,
        rows_json(&h.db.pool, "activities").await,
    );
    let state = rows_json(&h.db.pool, "sync_state").await;
    let want_marks = marks(&h.db.pool).await;
    let want_rows = row_versions(&h.db.pool).await.matches(',').count();
    let files = migration_files();

    // Every release could have been cut after any migration file: each strict prefix.
    for k in 1..files.len() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        for f in &files[..k] {
            std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        Migrator::new(dir.path())
            .await
            .unwrap()
            .run(&db.pool)
            .await
            .unwrap();
        for (table, rows) in [("activities", &activities), ("visits", &visits)] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1)"
            )))
            .bind(rows)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO sync_state (agent_id, user_id, activity_filter, settled_count,
                    anchor_visit_at, anchor_activity_ids, upstream_total)
             SELECT agent_id, user_id, activity_filter, settled_count, anchor_visit_at,
                    anchor_activity_ids, upstream_total
               FROM jsonb_populate_recordset(NULL::sync_state, $1)",
        )
        .bind(&state)
        .execute(&db.pool)
        .await
        .unwrap();
        let before: Vec<u64> = users
            .iter()
            .map(|u| h.sim.requests_for(AGENT, *u))
            .collect();

        let mut settings = h.settings.clone();
        settings.database.url = Secret::new(db.url.clone());
        let app = szb_sync::app::App::build(&settings).unwrap();
        app.migrate().await.unwrap();
        let report = app
            .sync_once(&tokio_util::sync::CancellationToken::new())
            .await;
        app.close().await;

        let last = files[k - 1].file_name().unwrap().to_string_lossy();
        for p in &report.pairs {
            assert_eq!(
                p.outcome,
                RunOutcome::Ok,
                "after {last}: {}: {:?}",
                p.pair,
                p.error
            );
        }
        assert_eq!(marks(&db.pool).await, want_marks, "marks kept after {last}");
        for (i, u) in users.iter().enumerate() {
            assert_eq!(
                h.sim.requests_for(AGENT, *u) - before[i],
                1,
                "one request for the quiet pair {u} after {last}"
            );
            assert_eq!(
                crate::helpers::visits_of(&db.pool, AGENT, *u).await,
                crate::helpers::visits_of(&h.db.pool, AGENT, *u).await,
                "visits kept after {last}"
            );
        }
        let activities_kept: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            activities_kept,
            activities.as_array().unwrap().len() as i64,
            "activities kept after {last}"
        );
        assert_eq!(
            row_versions(&db.pool).await.matches(',').count(),
            want_rows,
            "no row added or lost after {last}"
        );
    }
}
