//! A platform that floods, trickles, hangs, echoes the token or lies about the time, on some
//! pairs: memory stays bounded, those pairs cost a known number of attempts, the token stays out
//! of the logs, no open visit settles early, and every other pair lands whole.

use std::time::{Duration, Instant};

use chrono::Duration as Span;
use sqlx::PgPool;
use szb_simulator::{Hostile, Simulator};
use szb_sync::domain::RunOutcome;

use crate::helpers::{AGENT, Harness, TOKEN, TestDb, VisitRow, sim_with, target, visits_of};
use crate::process::{szb, with_config, write_config};

const SEED: u64 = 16;

/// What the simulator holds for one pair, as rows.
fn truth(sim: &Simulator, agent_id: i64, user_id: i64) -> Vec<VisitRow> {
    let mut rows: Vec<VisitRow> = sim
        .visits(agent_id, user_id)
        .into_iter()
        .map(VisitRow::from)
        .collect();
    rows.sort();
    rows
}

/// The outcome and error of each run of a pair, oldest first.
async fn runs(pool: &PgPool, agent_id: i64, user_id: i64) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT outcome, error FROM sync_runs WHERE agent_id = $1 AND user_id = $2 ORDER BY id",
    )
    .bind(agent_id)
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The peak resident memory of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One `[[targets]]` entry per agent, and the api/sync settings the child runs with.
fn config_toml(
    base_url: &str,
    db_url: &str,
    api: &str,
    targets: &[(i64, String, Vec<i64>)],
) -> String {
    let mut toml = format!(
        "[database]\nurl = {db_url:?}\n\n\
         [api]\nbase_url = {base_url:?}\nretry_backoff = \"1ms\"\n{api}\n\n\
         [schedule]\ncron = \"0 0 0 1 1 *\"\n\n\
         [sync]\nsettle_after = \"1h\"\n"
    );
    for (agent, token, users) in targets {
        toml.push_str(&format!(
            "\n[[targets]]\nagent_id = {agent}\nuser_ids = {users:?}\ntoken = {token:?}\n"
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_and_trickling_bodies_stay_under_128_mib_while_every_other_pair_syncs() {
    // Six ordinary pairs of full 1,000-visit pages; twelve agents whose one pair answers with
    // 300 MB, each behind its own token so that each has a request in flight at once (one
    // token's controller starts at two); two that trickle a byte every 50 ms; one that hangs.
    let good: Vec<i64> = (1..=6).collect();
    let sim = sim_with(SEED, &good.iter().map(|u| (*u, 2_500)).collect::<Vec<_>>());
    let mut targets = vec![(AGENT, TOKEN.to_owned(), good.clone())];
    let hostile = (0..12)
        .map(|_| Hostile::Huge { bytes: 300_000_000 })
        .chain((0..2).map(|_| Hostile::Trickle {
            every: Duration::from_millis(50),
        }))
        .chain([Hostile::Hang]);
    let mut hostile_agents = Vec::new();
    for (i, h) in hostile.enumerate() {
        let agent = 300_000 + i as i64;
        let token = format!("tok-hostile-{i}");
        sim.add_agent(agent, &token);
        sim.set_hostile(agent, 1, Some(h));
        targets.push((agent, token, vec![1]));
        hostile_agents.push(agent);
    }
    let db = TestDb::new().await;
    let server = sim.spawn().await.unwrap();
    // Default body limits; deadlines short enough for a test.
    let file = write_config(&config_toml(
        &server.base_url,
        &db.url,
        "timeout = \"3s\"\nread_timeout = \"2s\"",
        &targets,
    ));

    let started = Instant::now();
    let mut child = szb(&with_config(&file, "sync")).spawn().unwrap();
    let pid = child.id().unwrap();
    let mut peak_kib = 0;
    let status = loop {
        // The high-water mark only grows: the last reading before the exit is the peak.
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(hwm);
        }
        tokio::select! {
            status = child.wait() => break status.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "sync still running after 5 minutes"
        );
    };
    let took = started.elapsed();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        peak_kib > 0 && peak_kib < 128 * 1024,
        "peak RSS {} MiB (must stay under 128 MiB); sync took {took:?}; stderr: {stderr}",
        peak_kib / 1024
    );
    assert!(
        !status.success(),
        "the hostile pairs fail the sync: {status:?}"
    );
    for user in &good {
        let stored = visits_of(&db.pool, AGENT, *user).await;
        assert_eq!(stored.len(), 2_500, "user {user}");
        assert_eq!(stored, truth(&sim, AGENT, *user), "user {user}");
    }
    for (i, agent) in hostile_agents.iter().enumerate() {
        let runs = runs(&db.pool, *agent, 1).await;
        assert_eq!(runs.len(), 1, "agent {agent}: {runs:?}");
        let (outcome, error) = &runs[0];
        let error = error.as_deref().unwrap_or("");
        assert_eq!(outcome, "failed", "agent {agent}: {error}");
        let expected = match i {
            0..12 => "larger than api.max_body_bytes",
            _ => "(api.",
        };
        assert!(error.contains(expected), "agent {agent}: {error}");
        assert!(
            visits_of(&db.pool, *agent, 1).await.is_empty(),
            "agent {agent}"
        );
    }
}

#[tokio::test]
async fn a_hanging_pair_costs_two_attempts_a_failing_one_every_retry_and_the_rest_land() {
    let sim = sim_with(SEED, &[(1, 30), (2, 30), (3, 1), (4, 1), (5, 1)]);
    sim.set_hostile(AGENT, 3, Some(Hostile::Hang));
    sim.set_hostile(
        AGENT,
        4,
        Some(Hostile::Trickle {
            every: Duration::from_millis(20),
        }),
    );
    sim.set_hostile(AGENT, 5, Some(Hostile::EchoAuthorization(502)));
    let db = TestDb::new().await;
    let server = sim.spawn().await.unwrap();
    let mut settings = crate::helpers::test_settings(
        &server.base_url,
        vec![target(AGENT, TOKEN, &[1, 2, 3, 4, 5])],
    );
    settings.database.url = szb_sync::secret::Secret::new(db.url.clone());
    settings.api.page_size = 10;
    settings.api.timeout = Duration::from_millis(800);
    let h = Harness::with_settings(db, sim, server, settings).await;

    let report = h.sync().await;

    let outcome = |user: i64| {
        report
            .pairs
            .iter()
            .find(|p| p.pair.user_id == user)
            .unwrap()
            .outcome
    };
    for user in [1, 2] {
        assert_eq!(outcome(user), RunOutcome::Ok);
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
    }
    // A timeout is retried once; a 5xx max_retries (5) times.
    assert_eq!(h.sim.requests_for(AGENT, 3), 2, "hanging");
    assert_eq!(h.sim.requests_for(AGENT, 4), 2, "trickling");
    assert_eq!(h.sim.requests_for(AGENT, 5), 6, "502");
    for user in [3, 4] {
        let runs = runs(&h.db.pool, AGENT, user).await;
        let error = runs[0].1.clone().unwrap_or_default();
        assert_eq!(runs[0].0, "failed");
        assert!(
            error.contains("gave up after 2 attempts") && error.contains("(api.timeout)"),
            "user {user}: {error}"
        );
    }
    // The 502's body echoed the Authorization header: the stored error quotes it without it.
    let error = runs(&h.db.pool, AGENT, 5).await[0].1.clone().unwrap();
    assert!(error.contains("HTTP 502"), "{error}");
    assert!(error.contains("Bearer [redacted]"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
}

#[tokio::test]
async fn a_5xx_body_echoing_the_token_never_reaches_the_log_lines() {
    let sim = sim_with(SEED, &[(1, 5)]);
    sim.set_hostile(AGENT, 1, Some(Hostile::EchoAuthorization(500)));
    let db = TestDb::new().await;
    let server = sim.spawn().await.unwrap();
    let file = write_config(&config_toml(
        &server.base_url,
        &db.url,
        "max_retries = 2",
        &[(AGENT, TOKEN.to_owned(), vec![1])],
    ));

    let output = szb(&with_config(&file, "sync")).output().await.unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(sim.requests_for(AGENT, 1), 3);
    assert_eq!(
        stderr.matches("retrying").count(),
        2,
        "a warning per retry: {stderr}"
    );
    assert!(stderr.contains("Bearer [redacted]"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(TOKEN));
}

#[tokio::test]
async fn a_platform_date_a_year_ahead_does_not_settle_an_open_visit() {
    let sim = sim_with(SEED, &[(1, 20)]);
    let (_, opened_at) = sim.open_visit(AGENT, 1);
    // Closed visits after it, which a settled open visit would let the mark pass.
    for minutes in 1..=3 {
        sim.insert_visit_at(AGENT, 1, opened_at + Span::minutes(minutes), None);
    }
    sim.set_clock_skew(Span::days(365));
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 10).await;

    h.sync_ok().await;

    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    let (settled, anchor): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT settled_count, anchor_visit_at FROM sync_state WHERE agent_id = $1 AND user_id = 1",
    )
    .bind(AGENT)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(
        settled <= 20 && anchor <= Some(opened_at),
        "a Date a year ahead settled the open visit at position 20: settled {settled}, anchor {anchor:?}"
    );
    let metrics = h.app.telemetry().metrics.render();
    let skewed = metrics
        .lines()
        .find(|l| l.starts_with(&format!("szb_clock_skew_total{{agent=\"{AGENT}\"}}")))
        .unwrap_or_else(|| panic!("no skew counted: {metrics}"));
    assert_ne!(skewed.rsplit(' ').next(), Some("0"), "{skewed}");
}
