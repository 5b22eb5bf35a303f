//! Keeping the wire full without losing exactness: windows fetched ahead, pairs in parallel, and
//! the adaptive concurrency controller under a server that rate-limits. No test here times
//! anything; they count requests and rows.

use szb_sync::domain::RunOutcome;
use szb_sync::simulator::Simulator;

use crate::helpers::{AGENT, Harness, TOKEN, TestDb, sim_with, target, test_settings};

/// The simulator seed of this module's worlds.
const SEED: u64 = 23;

/// A harness over `sim` syncing `users` with pages of `page_size`, after `tweak`.
async fn harness(
    sim: Simulator,
    users: &[i64],
    page_size: u32,
    tweak: impl FnOnce(&mut szb_sync::settings::Settings),
) -> Harness {
    let db = TestDb::new().await;
    let server = sim.spawn().await.unwrap();
    let mut settings = test_settings(&server.base_url, vec![target(AGENT, TOKEN, users)]);
    settings.api.page_size = page_size;
    settings.database.url = szb_sync::secret::Secret::new(db.url.clone());
    tweak(&mut settings);
    Harness::with_settings(db, sim, server, settings).await
}

/// Visits with no ties at all (`append_visits` makes none), so every guess of a window ahead
/// is one the walk accepts.
fn sim_without_ties(users: &[(i64, usize)]) -> Simulator {
    let sim = Simulator::new(SEED);
    sim.add_agent(AGENT, TOKEN);
    for (user, n) in users {
        sim.append_visits(AGENT, *user, *n);
    }
    sim
}

#[tokio::test]
async fn windows_fetched_ahead_cost_no_request_more_than_one_at_a_time() {
    let mut requests = Vec::new();
    for fetch_ahead in [0, 4] {
        let sim = sim_without_ties(&[(1, 347)]);
        let h = harness(sim, &[1], 10, |s| s.sync.fetch_ahead = fetch_ahead).await;

        let report = h.sync_ok().await;

        assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
        assert_eq!(report.totals().visits_inserted, 347);
        assert_eq!(
            u64::from(report.totals().requests),
            h.sim.requests_for(AGENT, 1),
            "the run counts every request the upstream saw"
        );
        requests.push(report.totals().requests);
        let quiet = h.sync_ok().await.totals();
        assert_eq!((quiet.requests, quiet.visits_inserted), (1, 0));
    }
    assert_eq!(
        requests[0], requests[1],
        "fetching ahead guessed every window"
    );
}

#[tokio::test]
async fn windows_fetched_ahead_over_ties_and_appends_land_every_visit_once() {
    let sim = sim_with(SEED, &[(1, 1200), (2, 900), (3, 60)]);
    sim.set_shuffle_ties(true);
    sim.set_before_request(|world, req| {
        if req.request_no % 5 == 0 {
            world.append_visits(req.agent_id, req.user_id, 3);
            let at = world
                .visits(req.agent_id, req.user_id)
                .last()
                .unwrap()
                .visit_at;
            world.add_tie(req.agent_id, req.user_id, at);
        }
    });
    let h = harness(sim, &[1, 2, 3], 25, |s| s.sync.fetch_ahead = 8).await;

    let first = h.sync_ok().await;
    h.sim.clear_before_request();
    let second = h.sync_ok().await;

    for user in [1, 2, 3] {
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, true));
    }
    let stored: i64 = h.count("SELECT count(*) FROM visits").await;
    assert_eq!(
        first.totals().visits_inserted + second.totals().visits_inserted,
        stored as u64,
        "each visit inserted once"
    );
}

#[tokio::test]
async fn behind_a_server_rate_limit_every_visit_lands_and_no_pair_fails() {
    let sim = sim_with(
        SEED,
        &[(1, 80), (2, 80), (3, 80), (4, 80), (5, 80), (6, 80)],
    );
    // 30 requests a second, bursts of 5: far below what 6 pairs fetching ahead would send.
    sim.set_rate_limit(Some((30.0, 5.0)));
    let h = harness(sim, &[1, 2, 3, 4, 5, 6], 10, |s| {
        s.sync.concurrency = 6;
        s.api.max_retries = 10;
    })
    .await;

    let report = h.sync().await;

    for p in &report.pairs {
        assert_eq!(p.outcome, RunOutcome::Ok, "{}: {:?}", p.pair, p.error);
    }
    for user in 1..=6 {
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
    }
    let limited = h.sim.rate_limited_count();
    assert!(limited > 0, "the server limit was met");
    assert_eq!(
        u64::from(report.totals().requests),
        h.sim.request_count(),
        "429s are counted as requests"
    );
    let pace = h.app.api().pace();
    assert_eq!(pace.len(), 1, "one controller for the one token");
    assert!(pace[0].backpressure > 0, "{pace:?}");
    assert!(
        pace[0].limit < 16.0,
        "the controller backed off below the ceiling: {pace:?}"
    );
}
