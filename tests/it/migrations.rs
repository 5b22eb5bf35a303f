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

    let store = Store::connect(&Secret::new(db.url.clone()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();

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

    let store = Store::connect(&Secret::new(db.url.clone()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let filed: Vec<(i64, String)> =
        sqlx::query_as("SELECT user_id, activity_filter FROM sync_rejects ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(filed, [(3, "a2".to_owned()), (4, String::new())]);
}

#[tokio::test]
async fn a_fresh_database_migrates_with_the_constraints_in_place() {
    let db = TestDb::new().await;
    let store = Store::connect(&Secret::new(db.url.clone()), 2)
        .await
        .unwrap();

    store.migrate().await.unwrap();
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
    let store = Store::connect(&Secret::new(db.url.clone()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();

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
