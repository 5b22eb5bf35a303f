//! Faults and hostile input: a misbehaving upstream, a Postgres that goes away, two syncs racing,
//! items that break the schema. szb-sync must retry what is transient, fail one pair clearly on
//! what is not, never commit half a page, and pick up where it stopped on the next run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{AGENT, Harness, TOKEN, VisitRow, iso, sim_with, target};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use szb_simulator::{Fault, Simulator};
use szb_sync::app::App;
use szb_sync::domain::RunOutcome;
use szb_sync::engine::{PairReport, SyncReport};
use szb_sync::settings::Settings;
use tokio_util::sync::CancellationToken;

/// The simulator seed of this module's worlds.
const SEED: u64 = 11;

/// This module's settings before a test's own: faults are planned by request number (see
/// `plan_faults`), so no windows are fetched ahead and a pair's requests follow each other as
/// the walk names them.
fn one_at_a_time(settings: &mut Settings) {
    settings.sync.fetch_ahead = 0;
}

/// When the simulator answered each request, by request number (a `Slow` one after its delay;
/// one the client gave up on, never).
type Answered = Arc<Mutex<BTreeMap<u64, Instant>>>;

/// Spoils the requests numbered in `plan` (1-based, over all pairs) with their fault.
///
/// Faults are a FIFO consumed by whichever request comes next, so each one is queued while the
/// request before it is being answered; this needs requests to go one at a time.
fn plan_faults(sim: &Simulator, plan: Vec<(u64, Fault)>) -> Answered {
    for (_, fault) in plan.iter().filter(|(n, _)| *n == 1) {
        sim.push_fault(fault.clone());
    }
    let answered = Answered::default();
    let log = Arc::clone(&answered);
    sim.set_before_request(move |world, req| {
        log.lock().unwrap().insert(req.request_no, Instant::now());
        for (_, fault) in plan.iter().filter(|(n, _)| *n == req.request_no + 1) {
            world.push_fault(fault.clone());
        }
    });
    answered
}

/// One `sync_runs` row.
#[derive(Debug, Clone)]
struct RunRow {
    outcome: String,
    error: Option<String>,
    requests: i32,
    pages: i32,
    visits_inserted: i32,
    rejects: i32,
    mark_before: Option<i64>,
    mark_after: Option<i64>,
}

/// The pair's runs, oldest first.
async fn runs(h: &Harness, agent_id: i64, user_id: i64) -> Vec<RunRow> {
    sqlx::query(
        "SELECT outcome, error, requests, pages, visits_inserted, rejects, mark_before, mark_after
           FROM sync_runs WHERE agent_id = $1 AND user_id = $2 ORDER BY id",
    )
    .bind(agent_id)
    .bind(user_id)
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| RunRow {
        outcome: r.get("outcome"),
        error: r.get("error"),
        requests: r.get("requests"),
        pages: r.get("pages"),
        visits_inserted: r.get("visits_inserted"),
        rejects: r.get("rejects"),
        mark_before: r.get("mark_before"),
        mark_after: r.get("mark_after"),
    })
    .collect()
}

/// The only run of the pair.
async fn only_run(h: &Harness, agent_id: i64, user_id: i64) -> RunRow {
    let mut all = runs(h, agent_id, user_id).await;
    assert_eq!(all.len(), 1, "one run row: {all:?}");
    all.remove(0)
}

/// `sync_state.settled_count` of the pair, `None` without a row. (A pair that ran has a row,
/// with its last outcome, even before it has a mark.)
async fn settled(h: &Harness, agent_id: i64, user_id: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT settled_count FROM sync_state WHERE agent_id = $1 AND user_id = $2")
        .bind(agent_id)
        .bind(user_id)
        .fetch_optional(&h.db.pool)
        .await
        .unwrap()
}

fn report_for(report: &SyncReport, agent_id: i64, user_id: i64) -> &PairReport {
    report
        .pairs
        .iter()
        .find(|p| p.pair.agent_id == agent_id && p.pair.user_id == user_id)
        .unwrap_or_else(|| panic!("no report for agent {agent_id} user {user_id}"))
}

/// The stored rows are true visits, and they are the oldest ones: no gap before the newest.
fn assert_gapless_prefix(stored: &[VisitRow], truth: &[VisitRow]) {
    for row in stored {
        assert!(truth.contains(row), "not an upstream visit: {row:?}");
    }
    let Some(newest) = stored.iter().map(|r| r.visit_at).max() else {
        return;
    };
    for row in truth.iter().filter(|r| r.visit_at < newest) {
        assert!(stored.contains(row), "gap: {row:?} is missing");
    }
}

/// A run that met `plan.len()` retryable faults still ends ok with every visit, and counts
/// every request it made. Returns how long the sync took and when each request was answered.
async fn retried_faults_cost_requests_but_not_visits(
    plan: Vec<(u64, Fault)>,
    tweak: impl FnOnce(&mut Settings),
) -> (Duration, BTreeMap<u64, Instant>) {
    let sim = sim_with(SEED, &[(1, 45)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, |s| {
        one_at_a_time(s);
        tweak(s)
    })
    .await;
    let spoiled = plan.len() as i32;
    let answered = plan_faults(&h.sim, plan);

    let started = Instant::now();
    h.sync_ok().await;
    let took = started.elapsed();

    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    let run = only_run(&h, AGENT, 1).await;
    assert_eq!(run.outcome, "ok");
    assert_eq!(run.error, None);
    assert_eq!(
        run.requests,
        run.pages + spoiled,
        "each spoiled answer cost one more request: {run:?}"
    );
    assert_eq!(
        i64::from(run.requests),
        h.sim.requests_for(AGENT, 1) as i64,
        "the run row counts what the upstream saw"
    );
    let answered = answered.lock().unwrap().clone();
    (took, answered)
}

/// Every attempt at the second request is spoiled: the pair fails with an error holding each of
/// `expect`, and only the first page is in the tables.
async fn a_persistent_fault_fails_the_pair_without_a_partial_page(fault: Fault, expect: &[&str]) {
    let sim = sim_with(SEED, &[(1, 45)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, |s| {
        one_at_a_time(s);
        s.api.max_retries = 2;
        s.api.max_body_bytes = 256 * 1024;
    })
    .await;
    plan_faults(&h.sim, (2..=4).map(|n| (n, fault.clone())).collect());

    let report = h.sync().await;

    let pair = report_for(&report, AGENT, 1);
    assert_eq!(pair.outcome, RunOutcome::Failed);
    let run = only_run(&h, AGENT, 1).await;
    assert_eq!(run.outcome, "failed");
    let error = run.error.clone().expect("a failed run says why");
    // Quoted bodies may come Debug-escaped; compare their content.
    let unescaped = error.replace("\\\"", "\"");
    for needle in expect {
        assert!(
            unescaped.contains(needle),
            "error lacks {needle:?}: {error}"
        );
    }
    assert_eq!(pair.error.as_deref(), Some(error.as_str()));
    let stored = h.visits(AGENT, 1).await;
    let truth = h.truth(AGENT, 1, false);
    assert_eq!(
        stored.len(),
        10,
        "the first page and nothing of the spoiled one"
    );
    assert_gapless_prefix(&stored, &truth);
    assert_eq!(run.pages, 1);
    assert_eq!(i64::from(run.requests), h.sim.requests_for(AGENT, 1) as i64);
    assert_eq!(h.count("SELECT count(*) FROM sync_rejects").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Server errors, retries, timeouts, broken bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_500_502_503_are_retried_and_every_visit_lands() {
    retried_faults_cost_requests_but_not_visits(
        vec![
            (1, Fault::Status(500)),
            (2, Fault::Status(502)),
            (5, Fault::Status(503)),
            (6, Fault::Status(500)),
        ],
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn more_failures_than_max_retries_fail_only_that_pair_which_keeps_its_pages_and_resumes() {
    let sim = sim_with(SEED, &[(1, 30), (2, 50), (3, 30)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1, 2, 3])], 10, |s| {
        one_at_a_time(s);
        s.api.max_retries = 2;
        // One pair after the other, so the faults below reach user 2's requests.
        s.sync.concurrency = 1;
    })
    .await;
    let mut seen_for_user_2 = 0;
    h.sim.set_before_request(move |world, req| {
        if req.user_id == 2 {
            seen_for_user_2 += 1;
            if seen_for_user_2 == 2 {
                // The third request of user 2 and both its retries.
                for _ in 0..3 {
                    world.push_fault(Fault::Status(503));
                }
            }
        }
    });

    let first = h.sync().await;

    assert_eq!(report_for(&first, AGENT, 2).outcome, RunOutcome::Failed);
    for user in [1, 3] {
        assert_eq!(report_for(&first, AGENT, user).outcome, RunOutcome::Ok);
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
        let run = only_run(&h, AGENT, user).await;
        assert_eq!((run.outcome.as_str(), run.requests), ("ok", run.pages));
    }
    let failed = only_run(&h, AGENT, 2).await;
    assert_eq!(failed.outcome, "failed");
    let error = failed.error.clone().unwrap();
    assert!(error.contains("HTTP 503"), "{error}");
    assert_eq!(
        (failed.pages, failed.requests),
        (2, 5),
        "two good pages, then one try and two retries"
    );
    assert_eq!(h.sim.requests_for(AGENT, 2), 5);
    let kept = h.visits(AGENT, 2).await;
    let truth = h.truth(AGENT, 2, false);
    assert_gapless_prefix(&kept, &truth);
    let mark = settled(&h, AGENT, 2).await.expect("the mark was committed");
    assert!(
        mark > 0 && mark <= kept.len() as i64,
        "mark {mark}, {} kept",
        kept.len()
    );
    assert!(kept.len() < truth.len());
    assert_eq!(failed.mark_after, Some(mark));

    h.sim.clear_before_request();
    h.sim.reset_request_counts();
    let second = h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 2).await, truth);
    let resumed = runs(&h, AGENT, 2).await.pop().unwrap();
    assert_eq!(resumed.outcome, "ok");
    assert_eq!(
        resumed.mark_before,
        Some(mark),
        "started from the kept mark"
    );
    assert_eq!(
        resumed.visits_inserted as usize,
        truth.len() - kept.len(),
        "inserted exactly what was missing"
    );
    assert_eq!(
        report_for(&second, AGENT, 2).totals.visits_inserted as usize,
        truth.len() - kept.len()
    );
}

#[tokio::test]
async fn a_request_slower_than_api_timeout_is_retried() {
    const SLOW: Duration = Duration::from_secs(120);
    let (took, answered) =
        retried_faults_cost_requests_but_not_visits(vec![(1, Fault::Slow(SLOW))], |s| {
            s.api.timeout = Duration::from_secs(2)
        })
        .await;

    // The count above proves the retry: an answer waited for would have been a page. The slow
    // one was never answered, and the sync (one timeout, then five quick pages) ended long
    // before it would have been: a generous bound, for a loaded machine.
    assert!(!answered.contains_key(&1), "{answered:?}");
    assert!(
        took < SLOW / 4,
        "the client gave up on the slow answer at api.timeout (2 s) instead of waiting {SLOW:?}: \
         the sync took {took:?}"
    );
}

#[tokio::test]
async fn timeouts_past_the_retry_budget_fail_the_pair_naming_api_timeout() {
    let sim = sim_with(SEED, &[(1, 15)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, |s| {
        one_at_a_time(s);
        s.api.timeout = Duration::from_millis(300);
        s.api.max_retries = 1;
    })
    .await;
    h.sim.push_fault(Fault::Slow(Duration::from_secs(1)));
    h.sim.push_fault(Fault::Slow(Duration::from_secs(1)));

    let report = h.sync().await;

    assert_eq!(report.pairs[0].outcome, RunOutcome::Failed);
    let run = only_run(&h, AGENT, 1).await;
    assert_eq!(
        (run.outcome.as_str(), run.requests, run.pages),
        ("failed", 2, 0)
    );
    let error = run.error.unwrap();
    assert!(error.contains("api.timeout"), "{error}");
    assert!(h.visits(AGENT, 1).await.is_empty());
    assert_eq!(settled(&h, AGENT, 1).await, Some(0), "no mark");
}

#[tokio::test]
async fn a_truncated_body_is_retried() {
    retried_faults_cost_requests_but_not_visits(vec![(2, Fault::Truncated)], |_| {}).await;
}

#[tokio::test]
async fn an_html_page_with_status_200_is_retried() {
    retried_faults_cost_requests_but_not_visits(vec![(2, Fault::NotJson)], |_| {}).await;
}

#[tokio::test]
async fn truncated_bodies_every_time_fail_the_pair_quoting_the_body() {
    a_persistent_fault_fails_the_pair_without_a_partial_page(
        Fault::Truncated,
        &["undecodable", "{\"pager\":{\"page\":"],
    )
    .await;
}

#[tokio::test]
async fn html_bodies_every_time_fail_the_pair_quoting_the_body() {
    a_persistent_fault_fails_the_pair_without_a_partial_page(
        Fault::NotJson,
        &[
            "undecodable",
            "<!DOCTYPE html><html><head><title>502 Bad Gateway",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 429, end to end (the budget, the cap and HTTP dates run on paused time in api::budget)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_requests_waits_the_retry_after_seconds_then_succeeds() {
    let (_, answered) = retried_faults_cost_requests_but_not_visits(
        vec![(
            2,
            Fault::TooManyRequests {
                retry_after: "1".into(),
            },
        )],
        |_| {},
    )
    .await;

    // The retry (request 3) came at least the Retry-After after the 429 (request 2); with
    // `retry_backoff` at 1 ms nothing else waits that long.
    let waited = answered[&3] - answered[&2];
    assert!(
        waited >= Duration::from_secs(1),
        "retried {waited:?} after the 429"
    );
}

// ---------------------------------------------------------------------------------------------
// Refused tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_tokens_401_and_403_are_not_retried_and_say_what_to_check() {
    const FORBIDDEN: i64 = 300_001;
    const WRONG: i64 = 300_002;
    let sim = sim_with(SEED, &[(1, 25)]);
    sim.add_agent(FORBIDDEN, "tok-forbidden");
    sim.generate_visits(FORBIDDEN, 2, 5);
    sim.set_agent_forbidden(FORBIDDEN, true);
    sim.add_agent(WRONG, "the-right-one");
    sim.generate_visits(WRONG, 3, 5);
    let h = Harness::tweaked(
        sim,
        vec![
            target(AGENT, TOKEN, &[1]),
            target(FORBIDDEN, "tok-forbidden", &[2]),
            target(WRONG, "not-the-right-one", &[3]),
        ],
        10,
        |s| {
            one_at_a_time(s);
            s.api.max_retries = 3;
        },
    )
    .await;

    let report = h.sync().await;

    assert_eq!(report_for(&report, AGENT, 1).outcome, RunOutcome::Ok);
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    for (agent, user, status, advice) in [
        (FORBIDDEN, 2, "403", "用户明细"),
        (WRONG, 3, "401", "does not know it"),
    ] {
        assert_eq!(
            h.sim.requests_for(agent, user),
            1,
            "HTTP {status} is not retried"
        );
        assert_eq!(report_for(&report, agent, user).outcome, RunOutcome::Failed);
        let run = only_run(&h, agent, user).await;
        assert_eq!((run.outcome.as_str(), run.requests), ("failed", 1));
        let error = run.error.unwrap();
        for needle in [format!("agent {agent}"), advice.into(), status.into()] {
            assert!(
                error.contains(&needle),
                "HTTP {status}: lacks {needle:?}: {error}"
            );
        }
        assert!(!error.contains("not-the-right-one"), "{error}");
        assert!(h.visits(agent, user).await.is_empty());
        assert_eq!(settled(&h, agent, user).await, Some(0), "no mark");
    }
}

// ---------------------------------------------------------------------------------------------
// Postgres going away, two syncs at once
// ---------------------------------------------------------------------------------------------

/// `(visits committed, backends terminated)`, or what went wrong.
type Terminated = Result<(i64, i64), String>;

/// From a connection of its own: the visits committed so far, then every other backend of the
/// database terminated. Runs on its own thread and runtime (the caller holds a std lock).
fn terminate_other_backends(url: String) -> Terminated {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM visits")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let killed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
            )
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            Ok((committed, killed))
        })
    })
    .join()
    .map_err(|_| "the terminating thread panicked".to_owned())?
}

#[tokio::test]
async fn losing_postgres_mid_run_fails_the_run_cleanly_and_the_next_sync_repairs_it() {
    let sim = sim_with(SEED, &[(1, 60)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, one_at_a_time).await;
    let outcome: Arc<Mutex<Option<Terminated>>> = Arc::default();
    let (url, slot) = (h.db.url.clone(), outcome.clone());
    h.sim.set_before_request(move |_, req| {
        if req.request_no == 3 {
            *slot.lock().unwrap() = Some(terminate_other_backends(url.clone()));
        }
    });

    let first = h.sync().await;

    let (committed, killed) = outcome
        .lock()
        .unwrap()
        .take()
        .expect("the hook ran")
        .expect("terminating the backends worked");
    assert!(killed >= 1, "the engine's connections were terminated");
    assert!(
        committed >= 10,
        "two pages were committed before: {committed}"
    );
    let pair = &first.pairs[0];
    assert_eq!(pair.outcome, RunOutcome::Failed);
    let error = pair.error.as_deref().unwrap_or_default();
    assert!(error.to_lowercase().contains("database"), "{error}");
    let stored = h.visits(AGENT, 1).await;
    let truth = h.truth(AGENT, 1, false);
    assert_eq!(
        stored.len() as i64,
        committed,
        "nothing was written after the connection was lost"
    );
    assert_gapless_prefix(&stored, &truth);
    assert!(settled(&h, AGENT, 1).await.unwrap_or(0) <= committed);

    h.sim.clear_before_request();
    h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 1).await, truth);
    let all = runs(&h, AGENT, 1).await;
    let outcomes: Vec<&str> = all.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes.len(), 2, "{all:?}");
    assert_eq!(
        outcomes[0], "failed",
        "the lost run is closed with its real outcome: {all:?}"
    );
    assert!(
        all[0].error.as_deref().unwrap_or("").contains("database"),
        "the lost run's row keeps the real error: {all:?}"
    );
    assert_eq!(outcomes[1], "ok");
}

#[tokio::test]
async fn two_syncs_at_once_never_corrupt_or_duplicate() {
    let users = [1, 2, 3];
    let sim = sim_with(SEED, &[(1, 40), (2, 40), (3, 40)]);
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &users)], 10, one_at_a_time).await;
    // A second app on the same database, as a second process would build it.
    let other = App::build(&h.settings).unwrap();
    // Slow first answers keep the first sync's locks held while the second one starts.
    for _ in 0..3 {
        h.sim.push_fault(Fault::Slow(Duration::from_millis(400)));
    }
    let stop = CancellationToken::new();

    let (a, b) = tokio::join!(h.app.sync_once(&stop), other.sync_once(&stop));

    for user in users {
        let outcomes = [
            report_for(&a, AGENT, user).outcome,
            report_for(&b, AGENT, user).outcome,
        ];
        assert!(
            matches!(
                outcomes,
                [RunOutcome::Ok, RunOutcome::Ok | RunOutcome::Skipped]
                    | [RunOutcome::Skipped, RunOutcome::Ok]
            ),
            "user {user}: {outcomes:?} ({:?} / {:?})",
            report_for(&a, AGENT, user).error,
            report_for(&b, AGENT, user).error
        );
        let mut rows: Vec<String> = runs(&h, AGENT, user)
            .await
            .into_iter()
            .map(|r| r.outcome)
            .collect();
        rows.sort();
        assert!(
            rows == ["ok", "ok"] || rows == ["ok", "skipped"],
            "user {user}: {rows:?}"
        );
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
    }
    assert_eq!(
        h.count(
            "SELECT count(*) - count(DISTINCT (agent_id, user_id, activity_id, visit_at)) FROM visits"
        )
        .await,
        0
    );
    assert_eq!(h.count("SELECT count(*) FROM sync_state").await, 3);

    h.sim.reset_request_counts();
    h.sync_ok().await;
    for user in users {
        assert_eq!(
            h.sim.requests_for(AGENT, user),
            1,
            "a quiet pair after the race"
        );
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn items_breaking_the_schema_are_rejected_once_each_and_the_rest_lands() {
    let sim = sim_with(SEED, &[(1, 35)]);
    let truth = sim.visits(AGENT, 1);
    let activity = truth[0].activity_id.clone();
    let item = |at: DateTime<Utc>| {
        json!({
            "activity": null,
            "visitAt": iso(at),
            "lastOnlineAt": iso(at + chrono::Duration::minutes(4)),
            "duration": 4,
            "userId": 1,
            "activityId": activity,
        })
    };
    let at = |i: usize| truth[i].visit_at + chrono::Duration::milliseconds(500);
    let mut bad_visit_at = item(at(4));
    bad_visit_at["visitAt"] = json!("yesterday");
    let mut no_user = item(at(12));
    no_user.as_object_mut().unwrap().remove("userId");
    let mut string_duration = item(at(21));
    string_duration["duration"] = json!("4");
    // The one that once landed: seen a year before it began.
    let mut ends_before_it_starts = item(at(27));
    ends_before_it_starts["lastOnlineAt"] = json!(iso(at(27) - chrono::Duration::days(365)));
    ends_before_it_starts["duration"] = json!(5);
    // Last in the list: every later sync reads it again.
    let mut absurd_duration = item(truth[34].visit_at + chrono::Duration::hours(1));
    absurd_duration["duration"] = json!(99_999_999);
    let bad: Vec<(Value, DateTime<Utc>, &str)> = vec![
        (bad_visit_at, at(4), "visitAt"),
        (no_user, at(12), "userId"),
        (string_duration, at(21), "duration"),
        (ends_before_it_starts, at(27), "is before visitAt"),
        (
            absurd_duration,
            truth[34].visit_at + chrono::Duration::hours(1),
            "duration",
        ),
    ];
    for (raw, sort_at, _) in &bad {
        sim.insert_raw_item(AGENT, 1, *sort_at, raw.clone());
    }
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, one_at_a_time).await;

    h.sync_ok().await;
    h.sync_ok().await;
    // A walk from scratch reads every bad item again.
    sqlx::query("DELETE FROM sync_state")
        .execute(&h.db.pool)
        .await
        .unwrap();
    h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(h.count("SELECT count(*) FROM sync_rejects").await, 5);
    let all = runs(&h, AGENT, 1).await;
    // The later syncs found nothing new (a reject read again is not new): they leave no run
    // row, only their passes.
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(h.count("SELECT count(*) FROM sync_passes").await, 3);
    assert!(
        all[0].rejects >= 5,
        "the first run counts its rejects: {:?}",
        all[0]
    );
    let mut unnamed = Vec::new();
    for (raw, _, field) in &bad {
        let reasons: Vec<String> = sqlx::query_scalar(
            "SELECT reason FROM sync_rejects WHERE agent_id = $1 AND user_id = 1 AND raw = $2",
        )
        .bind(AGENT)
        .bind(raw)
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
        assert_eq!(reasons.len(), 1, "stored once, verbatim: {raw}");
        if !reasons[0].contains(field) {
            unnamed.push(format!("{field}: {:?} for {raw}", reasons[0]));
        }
    }
    assert!(
        unnamed.is_empty(),
        "each reason names its field: {unnamed:#?}"
    );
}

#[tokio::test]
async fn an_open_rejected_item_stays_one_row_as_it_moves() {
    let sim = sim_with(SEED, &[(1, 12)]);
    let activity = sim.visits(AGENT, 1)[0].activity_id.clone();
    // Open (last seen a minute ago), so every sync reads it again, and rejected for its
    // string duration; each read finds it with a later lastOnlineAt.
    let visit_at = sim.now().trunc_subsecs(3) - chrono::Duration::minutes(10);
    let version = |minutes: i64| {
        json!({
            "activity": null,
            "visitAt": iso(visit_at),
            "lastOnlineAt": iso(visit_at + chrono::Duration::minutes(minutes)),
            "duration": minutes.to_string(),
            "userId": 1,
            "activityId": activity,
        })
    };
    sim.insert_raw_item(AGENT, 1, visit_at, version(8));
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, one_at_a_time).await;

    h.sync_ok().await;
    for minutes in [9, 10] {
        h.sim.replace_raw_item(AGENT, 1, visit_at, version(minutes));
        h.sync_ok().await;
    }

    let rows = sqlx::query(
        "SELECT raw, reason, first_seen_at < last_seen_at AS seen_again FROM sync_rejects",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "one row for the item, not one per version");
    assert_eq!(
        rows[0].get::<Value, _>("raw"),
        version(10),
        "its latest version"
    );
    assert!(rows[0].get::<String, _>("reason").contains("duration"));
    assert!(rows[0].get::<bool, _>("seen_again"), "last_seen_at moved");
    let counted: Vec<i32> = runs(&h, AGENT, 1).await.iter().map(|r| r.rejects).collect();
    assert_eq!(
        counted.iter().sum::<i32>(),
        1,
        "only the first sight counts: {counted:?}"
    );
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
}

#[tokio::test]
async fn a_body_over_max_body_bytes_once_is_retried() {
    retried_faults_cost_requests_but_not_visits(vec![(2, Fault::Huge(1_000_000))], |s| {
        s.api.max_body_bytes = 256 * 1024;
    })
    .await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_every_time_fail_the_pair_clearly() {
    a_persistent_fault_fails_the_pair_without_a_partial_page(
        Fault::Huge(1_000_000),
        &["max_body_bytes"],
    )
    .await;
}

#[tokio::test]
async fn deeply_nested_json_once_is_retried() {
    retried_faults_cost_requests_but_not_visits(vec![(2, Fault::DeepNesting(10_000))], |_| {})
        .await;
}

#[tokio::test]
async fn deeply_nested_json_every_time_fails_the_pair_without_crashing() {
    a_persistent_fault_fails_the_pair_without_a_partial_page(
        Fault::DeepNesting(10_000),
        &["undecodable", "recursion limit"],
    )
    .await;
}

#[tokio::test]
async fn a_pager_contradicting_its_items_once_is_retried() {
    retried_faults_cost_requests_but_not_visits(vec![(2, Fault::BadPager)], |_| {}).await;
}

#[tokio::test]
async fn a_pager_contradicting_its_items_every_time_fails_the_pair() {
    a_persistent_fault_fails_the_pair_without_a_partial_page(
        Fault::BadPager,
        &["pager contradicts its items"],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Failing pairs back off
// ---------------------------------------------------------------------------------------------

/// `(failures_in_row, seconds from the last run to the next try)` of a pair.
async fn backoff_of(h: &Harness, agent_id: i64, user_id: i64) -> (i32, Option<i64>) {
    sqlx::query_as(
        "SELECT failures_in_row,
                extract(epoch FROM next_due_at - last_run_at)::int8
           FROM sync_state WHERE agent_id = $1 AND user_id = $2",
    )
    .bind(agent_id)
    .bind(user_id)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

async fn make_due(h: &Harness) {
    sqlx::query("UPDATE sync_state SET next_due_at = now() - interval '1 second' WHERE next_due_at IS NOT NULL")
        .execute(&h.db.pool)
        .await
        .unwrap();
}

/// A 403: the platform knows the token but denies it the visits (a feature not enabled), which
/// no configuration fixes: the pair backs off from the first refusal.
#[tokio::test]
async fn a_refused_pair_backs_off_doubling_while_the_others_sync_at_every_pass() {
    const REFUSED: i64 = 300_001;
    let sim = sim_with(SEED, &[(1, 30)]);
    sim.add_agent(REFUSED, "its-token");
    sim.set_agent_forbidden(REFUSED, true);
    sim.generate_visits(REFUSED, 9, 12);
    let h = Harness::tweaked(
        sim,
        vec![
            target(AGENT, TOKEN, &[1]),
            target(REFUSED, "its-token", &[9]),
        ],
        10,
        one_at_a_time,
    )
    .await;
    let never = CancellationToken::new();

    let mut good = Vec::new();
    h.app.sync_due(&never).await;
    good.push(h.sim.requests_for(AGENT, 1));
    let first = backoff_of(&h, REFUSED, 9).await;
    h.app.sync_due(&never).await;
    good.push(h.sim.requests_for(AGENT, 1));
    let waited = h.sim.requests_for(REFUSED, 9);
    make_due(&h).await;
    h.app.sync_due(&never).await;
    good.push(h.sim.requests_for(AGENT, 1));
    let second = backoff_of(&h, REFUSED, 9).await;
    // The platform enables the feature.
    h.sim.set_agent_forbidden(REFUSED, false);
    make_due(&h).await;
    h.app.sync_due(&never).await;
    good.push(h.sim.requests_for(AGENT, 1));
    let recovered = backoff_of(&h, REFUSED, 9).await;

    assert_eq!(first, (1, Some(600)), "backs off 10 min after one refusal");
    assert_eq!(waited, 1, "not tried while it waits");
    assert_eq!(second, (2, Some(1200)), "the wait doubles");
    assert_eq!(recovered, (0, None), "a success clears the backoff");
    assert_eq!(h.visits(REFUSED, 9).await, h.truth(REFUSED, 9, false));
    assert!(
        good.windows(2).all(|w| w[0] < w[1]),
        "the good pair synced at every pass: {good:?}"
    );
}

/// A 401: the platform does not know the token (a typo). The next configuration fixes it, so
/// the pair never backs off: a daemon started with the right token must not wait out the wrong
/// one's backoff.
#[tokio::test]
async fn an_unknown_token_never_backs_off_the_pair() {
    const TYPO: i64 = 300_002;
    let sim = sim_with(SEED, &[(1, 30)]);
    sim.add_agent(TYPO, "the-right-token");
    sim.generate_visits(TYPO, 9, 12);
    let h = Harness::tweaked(
        sim,
        vec![
            target(AGENT, TOKEN, &[1]),
            target(TYPO, "the-right-tokem", &[9]),
        ],
        10,
        one_at_a_time,
    )
    .await;
    let never = CancellationToken::new();

    let mut seen = Vec::new();
    for _ in 0..4 {
        h.app.sync_due(&never).await;
        seen.push((backoff_of(&h, TYPO, 9).await, h.sim.requests_for(TYPO, 9)));
    }

    assert_eq!(
        seen,
        [
            ((1, None), 1),
            ((2, None), 2),
            ((3, None), 3),
            ((4, None), 4)
        ],
        "failures counted, no next_due_at: tried at every pass"
    );
}

#[tokio::test]
async fn other_failures_back_off_after_three_in_a_row_and_sync_tries_anyway() {
    const MISSING: i64 = 300_404;
    let sim = sim_with(SEED, &[(1, 30)]);
    let h = Harness::tweaked(
        sim,
        vec![target(AGENT, TOKEN, &[1]), target(MISSING, "tok", &[5])],
        10,
        |s| {
            one_at_a_time(s);
            s.sync.failure_backoff = Duration::from_secs(60);
            s.sync.max_failure_backoff = Duration::from_secs(90);
        },
    )
    .await;
    let never = CancellationToken::new();

    let mut seen = Vec::new();
    for _ in 0..4 {
        h.app.sync_due(&never).await;
        seen.push(backoff_of(&h, MISSING, 5).await);
        make_due(&h).await;
    }
    let backing_off = {
        h.app.sync_due(&never).await;
        backoff_of(&h, MISSING, 5).await
    };
    let before = h.sim.requests_for(MISSING, 5);
    h.sync().await;

    assert_eq!(
        seen,
        [(1, None), (2, None), (3, Some(60)), (4, Some(90))],
        "after 3 failures in a row: 60 s, then doubled but capped at 90 s"
    );
    assert_eq!(backing_off.0, 5);
    assert_eq!(
        h.sim.requests_for(MISSING, 5),
        before + 1,
        "szb-sync sync tries a pair that backs off"
    );
}
