//! End-to-end syncs against the simulator and a real Postgres: what lands in the tables.

use crate::helpers::{AGENT, Harness, TOKEN, row_versions, sim_with, target};
use szb_sync::domain::RunOutcome;

/// The simulator seed of this module's worlds.
const SEED: u64 = 7;

#[tokio::test]
async fn first_sync_lands_every_visit_and_activity_with_the_right_values() {
    let sim = sim_with(SEED, &[(1, 2345), (2, 17)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1, 2])], 1000).await;

    let report = h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(h.visits(AGENT, 2).await, h.truth(AGENT, 2, false));
    assert_eq!(report.totals().visits_inserted, 2345 + 17);
    let referenced: std::collections::HashSet<String> = [1, 2]
        .into_iter()
        .flat_map(|u| h.sim.visits(AGENT, u))
        .map(|v| v.activity_id)
        .collect();
    let stored_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM activities")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        stored_ids
            .iter()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        referenced,
        "a row for each activity of a synced visit, and no other"
    );
    for a in h
        .sim
        .activities()
        .into_iter()
        .filter(|a| referenced.contains(&a.id))
    {
        let row = sqlx::query_as::<
            _,
            (
                Option<String>,
                Option<String>,
                Option<bool>,
                Option<chrono::DateTime<chrono::Utc>>,
                Option<i64>,
            ),
        >(
            "SELECT name, status, is_pushing, updated_at, agent_id FROM activities WHERE id = $1",
        )
        .bind(&a.id)
        .fetch_optional(&h.db.pool)
        .await
        .unwrap();
        let (name, status, pushing, updated, agent) =
            row.unwrap_or_else(|| panic!("activity {} of a synced visit has no row", a.id));
        assert_eq!(name.as_deref(), Some(a.name.as_str()));
        assert_eq!(status.as_deref(), Some(a.status.as_str()));
        assert_eq!(pushing, Some(a.is_pushing));
        assert_eq!(
            updated,
            Some(a.updated_at),
            "updatedAt and the updateAt spelling both land"
        );
        assert_eq!(agent, Some(a.agent_id));
    }
    let missing: i64 = h
        .count("SELECT count(*) FROM visits v LEFT JOIN activities a ON a.id = v.activity_id WHERE a.name IS NULL")
        .await;
    assert_eq!(missing, 0, "every visit's activity landed whole");
}

#[tokio::test]
async fn resync_with_no_changes_makes_one_request_per_pair_and_writes_nothing() {
    let sim = sim_with(SEED, &[(1, 2345), (2, 1000), (3, 1)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1, 2, 3])], 1000).await;
    h.sync_ok().await;
    let before = row_versions(&h.db.pool).await;
    h.sim.reset_request_counts();

    let report = h.sync_ok().await;

    for user in [1, 2, 3] {
        assert_eq!(h.sim.requests_for(AGENT, user), 1, "user {user}");
    }
    assert_eq!(row_versions(&h.db.pool).await, before, "no row was written");
    let t = report.totals();
    assert_eq!(
        (t.visits_inserted, t.visits_updated, t.activities_written),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn appended_visits_land_on_the_next_sync() {
    let sim = sim_with(SEED, &[(1, 1500)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    h.sync_ok().await;

    h.sim.append_visits(AGENT, 1, 777);
    let report = h.sync_ok().await;

    assert_eq!(report.totals().visits_inserted, 777);
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
}

#[tokio::test]
async fn pairs_of_every_size_around_the_page_boundary_sync_exactly() {
    let sizes = [0usize, 1, 999, 1000, 1001, 2500];
    let users: Vec<(i64, usize)> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64 + 1, *n))
        .collect();
    let sim = sim_with(SEED, &users);
    let ids: Vec<i64> = users.iter().map(|(u, _)| *u).collect();
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &ids)], 1000).await;

    h.sync_ok().await;
    h.sim.reset_request_counts();
    h.sync_ok().await;

    for (user, n) in users {
        let rows = h.visits(AGENT, user).await;
        assert_eq!(rows.len(), n, "user {user}");
        assert_eq!(rows, h.truth(AGENT, user, false), "user {user}");
        assert_eq!(
            h.sim.requests_for(AGENT, user),
            1,
            "quiet resync of {n} visits"
        );
    }
}

#[tokio::test]
async fn sync_stopped_after_its_second_page_resumes_without_gap_or_duplicate() {
    let sim = sim_with(SEED, &[(1, 2500)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let trip = stop.clone();
    h.sim.set_before_request(move |_, req| {
        if req.request_no == 3 {
            trip.cancel();
        }
    });

    let first = h.app.sync_once(&stop).await;
    let landed = h.visits(AGENT, 1).await.len();
    h.sim.clear_before_request();
    let second = h.sync_ok().await;

    assert_eq!(first.pairs[0].outcome, RunOutcome::Interrupted);
    assert!(
        (1000..2500).contains(&landed),
        "two pages committed, not more: {landed}"
    );
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(
        second.totals().visits_inserted as usize,
        2500 - landed,
        "the resumed run inserts exactly what was missing"
    );
    let runs: Vec<String> = sqlx::query_scalar("SELECT outcome FROM sync_runs ORDER BY id")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, ["interrupted", "ok"]);
}

#[tokio::test]
async fn a_refused_token_fails_that_pair_clearly_and_the_others_still_sync() {
    let sim = sim_with(SEED, &[(1, 30)]);
    sim.add_agent(200_001, "right-token");
    sim.generate_visits(200_001, 9, 12);
    let h = Harness::new(
        sim,
        vec![
            target(AGENT, TOKEN, &[1]),
            target(200_001, "wrong-token", &[9]),
        ],
        1000,
    )
    .await;

    let report = h.sync().await;

    let bad = report
        .pairs
        .iter()
        .find(|p| p.pair.agent_id == 200_001)
        .unwrap();
    assert_eq!(bad.outcome, RunOutcome::Failed);
    let msg = bad.error.as_deref().unwrap();
    assert!(
        msg.contains("agent 200001") && msg.contains("token"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-token"),
        "the token never appears in errors: {msg}"
    );
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert!(h.visits(200_001, 9).await.is_empty());
    let (outcome, error): (String, Option<String>) =
        sqlx::query_as("SELECT outcome, error FROM sync_runs WHERE agent_id = 200001")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "failed");
    // A 401: the platform does not know the token, and no platform feature fixes that.
    let error = error.unwrap();
    assert!(
        error.contains("HTTP 401")
            && error.contains("does not know it")
            && !error.contains("用户明细"),
        "{error}"
    );
}

#[tokio::test]
async fn small_pages_walk_with_overlap_and_land_everything() {
    let sim = sim_with(SEED, &[(1, 503)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 10).await;

    h.sync_ok().await;
    let again = h.sync_ok().await;

    // Pages of 10 cannot always line up around a tie group, so the mark may wait and a quiet
    // sync cost more than one request; it never writes a row.
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    let t = again.totals();
    assert_eq!((t.visits_inserted, t.visits_updated), (0, 0));
}

#[tokio::test]
async fn pages_of_fifty_line_up_and_a_quiet_sync_costs_one_request() {
    let sim = sim_with(SEED, &[(1, 2003)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 50).await;

    h.sync_ok().await;
    h.sim.reset_request_counts();
    h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(h.sim.requests_for(AGENT, 1), 1);
}

#[tokio::test]
async fn forgetting_a_mark_re_reads_the_pair_from_the_start() {
    let sim = sim_with(SEED, &[(1, 1500), (2, 40)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1, 2])], 1000).await;
    h.sync_ok().await;
    // A row lost behind the mark (restored from an old backup, say): a plain sync does not see it.
    sqlx::query("DELETE FROM visits WHERE agent_id = $1 AND user_id = 1 AND visit_at = (SELECT min(visit_at) FROM visits WHERE user_id = 1)")
        .bind(AGENT)
        .execute(&h.db.pool)
        .await
        .unwrap();
    h.sync_ok().await;
    assert_eq!(h.visits(AGENT, 1).await.len(), 1499);

    let forgotten = h
        .app
        .store()
        .forget_marks(&[h.pairs()[0].key.clone()])
        .await
        .unwrap();
    let report = h.sync_ok().await;

    assert_eq!((forgotten.forgotten, forgotten.busy.len()), (1, 0));
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(
        report.totals().visits_inserted,
        1,
        "only the lost row is written again"
    );
}

#[tokio::test]
async fn resync_leaves_a_pair_that_is_syncing_alone() {
    let sim = sim_with(SEED, &[(1, 30)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    h.sync_ok().await;
    let store = h.app.store();
    let held = store
        .lock_pair(&h.pairs()[0].key)
        .await
        .unwrap()
        .expect("lock is free");

    let outcome = store
        .forget_marks(&[h.pairs()[0].key.clone()])
        .await
        .unwrap();

    assert_eq!(outcome.forgotten, 0);
    assert_eq!(outcome.busy, vec![h.pairs()[0].key.clone()]);
    assert_eq!(
        h.count("SELECT count(*) FROM sync_state").await,
        1,
        "the mark stays"
    );
    held.release().await.unwrap();
}

#[tokio::test]
async fn each_pass_leaves_one_sync_passes_row_with_its_totals() {
    let sim = sim_with(SEED, &[(1, 1500), (2, 40)]);
    sim.add_agent(200_001, "right-token");
    sim.generate_visits(200_001, 9, 12);
    let h = Harness::new(
        sim,
        vec![
            target(AGENT, TOKEN, &[1, 2]),
            target(200_001, "wrong-token", &[9]),
        ],
        1000,
    )
    .await;

    let first = h.sync().await;
    let quiet = h.sync().await;

    let rows: Vec<(i32, i64, i64, i32, String, bool)> = sqlx::query_as(
        "SELECT pairs, requests, visits_written, failures, outcome, finished_at IS NOT NULL
           FROM sync_passes ORDER BY id",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                3,
                i64::from(first.totals().requests),
                1540,
                1,
                "failed".to_owned(),
                true
            ),
            (
                3,
                i64::from(quiet.totals().requests),
                0,
                1,
                "failed".to_owned(),
                true
            ),
        ]
    );
}

#[tokio::test]
async fn a_pairs_last_run_success_and_error_stay_on_its_state_row() {
    let sim = sim_with(SEED, &[(1, 30)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    let state = || async {
        sqlx::query_as::<_, (Option<String>, bool, bool, Option<String>)>(
            "SELECT last_outcome, last_run_at IS NOT NULL, last_success_at IS NOT NULL, last_error
               FROM sync_state WHERE agent_id = $1 AND user_id = 1",
        )
        .bind(AGENT)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
    };

    h.sim.with_world(|w| w.set_agent_forbidden(AGENT, true));
    h.sync().await;
    let refused = state().await;
    h.sim.with_world(|w| w.set_agent_forbidden(AGENT, false));
    h.sync_ok().await;
    let recovered = state().await;
    // resync forgets the mark, not the history.
    h.app
        .store()
        .forget_marks(&[h.pairs()[0].key.clone()])
        .await
        .unwrap();
    let forgotten = state().await;

    assert_eq!(refused.0.as_deref(), Some("failed"));
    assert!(refused.1 && !refused.2, "ran, never succeeded: {refused:?}");
    assert!(refused.3.as_deref().unwrap().contains("refused the token"));
    assert_eq!(recovered.0.as_deref(), Some("ok"));
    assert!(recovered.2, "the success is recorded");
    assert_eq!(
        recovered.3, refused.3,
        "the last error stays after a success"
    );
    assert_eq!(forgotten, recovered);

    let mark: i64 = h
        .count("SELECT settled_count FROM sync_state WHERE user_id = 1")
        .await;
    assert_eq!(mark, 0, "the mark is gone");
    // A quiet run leaves no run row; status still shows it, from the state row.
    let key = h.pairs()[0].key.clone();
    h.sync_ok().await;
    let before = h
        .app
        .store()
        .status(
            std::slice::from_ref(&key),
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    h.sync_ok().await;
    let after = h
        .app
        .store()
        .status(
            std::slice::from_ref(&key),
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(after[0].last_outcome, Some(RunOutcome::Ok));
    assert_eq!(after[0].last_error, None, "the latest run did not fail");
    assert!(
        after[0].last_finished_at > before[0].last_finished_at,
        "the quiet run is the latest: {:?} then {:?}",
        before[0].last_finished_at,
        after[0].last_finished_at
    );
}

#[tokio::test]
async fn history_older_than_keep_runs_is_pruned_and_newer_history_stays() {
    let sim = sim_with(SEED, &[(1, 30)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    h.sync_ok().await;
    h.sync_ok().await;
    sqlx::raw_sql(
        "INSERT INTO sync_runs (agent_id, user_id, started_at, finished_at, outcome)
         SELECT 1, 2, now() - interval '40 days', now() - interval '40 days', 'ok'
           FROM generate_series(1, 12000);
         INSERT INTO sync_passes (started_at, finished_at, outcome)
         SELECT now() - interval '40 days', now() - interval '40 days', 'ok'
           FROM generate_series(1, 3);
         -- Old, but still going (a very long first sync): never pruned.
         INSERT INTO sync_runs (agent_id, user_id, started_at, outcome)
         VALUES (1, 3, now() - interval '40 days', 'running');
         -- A reject last read 40 days ago goes; one first seen then but read since stays.
         INSERT INTO sync_rejects (agent_id, user_id, raw, reason, first_seen_at, last_seen_at)
         VALUES (1, 2, '{\"visitAt\": \"x\"}', 'gone', now() - interval '40 days',
                 now() - interval '40 days'),
                (1, 2, '{\"visitAt\": \"y\"}', 'kept', now() - interval '40 days', now());",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();

    let pruned = h
        .app
        .store()
        .prune_history(std::time::Duration::from_secs(30 * 86_400))
        .await
        .unwrap();

    assert_eq!(pruned, 12_004);
    // The first run wrote visits (the quiet second one left no run row), and the old run that
    // is still going stays.
    assert_eq!(h.count("SELECT count(*) FROM sync_runs").await, 2);
    assert_eq!(h.count("SELECT count(*) FROM sync_passes").await, 2);
    let rejects: Vec<String> = sqlx::query_scalar("SELECT reason FROM sync_rejects")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(rejects, ["kept"]);
}
