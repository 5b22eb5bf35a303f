//! Strings Postgres cannot store (NUL, lone surrogates, invalid UTF-8, numbers past a double)
//! never block a pair: valid visits land with the string repaired and counted, invalid items
//! land in `sync_rejects` with a storable `raw`, and the visits after them land in the same run.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::Row;
use szb_sync::domain::RunOutcome;

use crate::helpers::{AGENT, Harness, TOKEN, iso, sim_with, target};

const SEED: u64 = 16;

/// A visit item as the platform writes it, with `more` (JSON members, possibly hostile bytes)
/// spliced in after its own fields.
fn item(user_id: i64, activity_id: &str, at: DateTime<Utc>, more: &[u8]) -> Vec<u8> {
    let mut out = format!(
        r#"{{"activity":null,"visitAt":"{}","lastOnlineAt":"{}","duration":4,"userId":{user_id},"activityId":"{activity_id}""#,
        iso(at),
        iso(at + Duration::minutes(4)),
    )
    .into_bytes();
    if !more.is_empty() {
        out.push(b',');
        out.extend_from_slice(more);
    }
    out.push(b'}');
    out
}

/// The stored `extra` of the visit of `user_id` at `at`, if it landed.
async fn extra_of(h: &Harness, user_id: i64, at: DateTime<Utc>) -> Option<Value> {
    sqlx::query_scalar(
        "SELECT extra FROM visits WHERE agent_id = $1 AND user_id = $2 AND visit_at = $3",
    )
    .bind(AGENT)
    .bind(user_id)
    .bind(at)
    .fetch_optional(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn strings_postgres_cannot_store_never_block_a_pair() {
    let users: Vec<(i64, usize)> = (1..=7).map(|u| (u, 25)).collect();
    let sim = sim_with(SEED, &users);
    // An activity renamed with a NUL: every pair that watched it reads the name.
    let watched = sim.visits(AGENT, 1)[20].activity_id.clone();
    sim.rename_activity(&watched, "直播\0回放");
    // Per user, one hostile item placed between its 10th and 11th visit, and whether it is a
    // valid visit (it lands, repaired) or not (it is rejected).
    let hostile: Vec<(i64, &[u8], bool)> = vec![
        (2, br#""note":"a\u0000b","k\u0000ey":[1,"\u0000"]"#, true),
        (
            3,
            br#""note":"\ud800 and \udfff alone, \ud83d\ude00 paired""#,
            true,
        ),
        (4, br#""big":1e400,"bigger":-2e999999,"fine":1e300"#, true),
        (
            5,
            b"\"note\":\"raw \x00 nul, raw \x01, bad \xff\xfe utf-8\"",
            true,
        ),
        (6, br#""duration":"x\u0000""#, false),
        (7, b"", false),
    ];
    let mut placed = Vec::new();
    for (user, more, _) in &hostile {
        let truth = sim.visits(AGENT, *user);
        let at = truth[10].visit_at - Duration::milliseconds(500);
        let activity = &truth[0].activity_id;
        let bytes = if *user == 7 {
            // An id too long for a B-tree index entry (random, so it does not compress).
            let mut x: u64 = 1;
            let id: String = (0..3000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    char::from(b'a' + (x >> 59) as u8 % 26)
                })
                .collect();
            item(*user, &id, at, more)
        } else if *user == 6 {
            // A rejected item: its visitAt cannot be read either.
            let mut b =
                br#"{"visitAt":"yesterday\u0000","userId":6,"activityId":"x\u0000y","#.to_vec();
            b.extend_from_slice(more);
            b.push(b'}');
            b
        } else {
            item(*user, activity, at, more)
        };
        sim.insert_raw_bytes(AGENT, *user, at, bytes);
        placed.push(at);
    }
    let targets = vec![target(
        AGENT,
        TOKEN,
        &users.iter().map(|u| u.0).collect::<Vec<_>>(),
    )];
    let h = Harness::new(sim, targets, 10).await;

    let report = h.sync().await;

    let failed: Vec<String> = report
        .pairs
        .iter()
        .filter(|p| p.outcome != RunOutcome::Ok)
        .map(|p| format!("{}: {:?}", p.pair, p.error))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for (user, _) in &users {
        let stored = h.visits(AGENT, *user).await;
        let truth = h.truth(AGENT, *user, false);
        let missing: Vec<_> = truth.iter().filter(|v| !stored.contains(v)).collect();
        assert!(missing.is_empty(), "user {user} lacks {missing:?}");
        let lands = hostile.iter().any(|(u, _, valid)| u == user && *valid);
        assert_eq!(
            stored.len(),
            truth.len() + usize::from(lands),
            "user {user}: the valid hostile visit lands too, once"
        );
    }
    let fffd = "\u{fffd}";
    let extra = |i: usize| extra_of(&h, hostile[i].0, placed[i]);
    assert_eq!(
        extra(0).await.unwrap(),
        serde_json::json!({"note": format!("a{fffd}b"), format!("k{fffd}ey"): [1, fffd]})
    );
    assert_eq!(
        extra(1).await.unwrap()["note"],
        format!("{fffd} and {fffd} alone, 😀 paired")
    );
    assert_eq!(
        extra(2).await.unwrap(),
        serde_json::json!({"big": "1e400", "bigger": "-2e999999", "fine": 1e300}),
        "numbers past a double are kept as their text"
    );
    assert_eq!(
        extra(3).await.unwrap()["note"],
        format!("raw {fffd} nul, raw \u{1}, bad {fffd}{fffd} utf-8")
    );
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM activities WHERE id = $1")
        .bind(&watched)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some(format!("直播{fffd}回放").as_str()));

    let rejects = sqlx::query("SELECT user_id, raw, reason FROM sync_rejects ORDER BY user_id")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(rejects.len(), 2, "only the items that cannot be visits");
    assert!(
        rejects[1]
            .get::<String, _>("reason")
            .contains("activityId is 3000 bytes long"),
        "{}",
        rejects[1].get::<String, _>("reason")
    );
    let raw: Value = rejects[0].get("raw");
    assert_eq!(rejects[0].get::<i64, _>("user_id"), 6);
    assert_eq!(raw["visitAt"], format!("yesterday{fffd}"));
    assert_eq!(raw["duration"], format!("x{fffd}"));

    // Counted: on the runs and in the metrics, one per string or number repaired.
    let cleaned: i64 = h
        .count("SELECT coalesce(sum(strings_cleaned), 0)::int8 FROM sync_runs")
        .await;
    assert!(cleaned >= 11, "strings cleaned over the runs: {cleaned}");
    let metrics = h.app.telemetry().metrics.render();
    assert!(
        metrics.contains("szb_strings_cleaned_total{agent=\"105131\"}"),
        "{metrics}"
    );
}
