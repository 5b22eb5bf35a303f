//! Keeping the wire full without losing exactness: windows fetched ahead, pairs in parallel, and
//! the adaptive concurrency controller under a platform that answers 429. No test here times
//! anything, or depends on how fast the machine sends; they count requests and rows.

use szb_simulator::Fault;
use szb_sync::domain::RunOutcome;

use crate::helpers::{AGENT, Harness, TOKEN, sim_with, sim_without_ties, target};

/// The simulator seed of this module's worlds.
const SEED: u64 = 23;

#[tokio::test]
async fn windows_fetched_ahead_cost_no_request_more_than_one_at_a_time() {
    let mut requests = Vec::new();
    for fetch_ahead in [0, 4] {
        let sim = sim_without_ties(SEED, &[(1, 347)]);
        let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1])], 10, |s| {
            s.sync.fetch_ahead = fetch_ahead
        })
        .await;

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
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &[1, 2, 3])], 25, |s| {
        s.sync.fetch_ahead = 8
    })
    .await;

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
async fn behind_a_platform_that_answers_429_every_visit_lands_and_no_pair_fails() {
    let users = [1, 2, 3, 4, 5, 6];
    // No ties, so every window fetched ahead is used: a request more than a page is a 429.
    let sim = sim_without_ties(SEED, &users.map(|u| (u, 80)));
    // The platform's limit is met by request number, not by how fast this machine sends: a
    // burst of three refusals early on and two later, each with `Retry-After: 1`.
    const REFUSED: [u64; 5] = [6, 7, 8, 30, 31];
    let retry_after = || Fault::TooManyRequests {
        retry_after: "1".into(),
    };
    sim.set_before_request(move |world, req| {
        if REFUSED.contains(&(req.request_no + 1)) {
            world.push_fault(retry_after());
        }
    });
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &users)], 10, |s| {
        s.sync.concurrency = 6;
        s.api.max_retries = 10;
    })
    .await;

    let report = h.sync().await;

    for p in &report.pairs {
        assert_eq!(p.outcome, RunOutcome::Ok, "{}: {:?}", p.pair, p.error);
    }
    for user in users {
        assert_eq!(h.visits(AGENT, user).await, h.truth(AGENT, user, false));
    }
    assert_eq!(
        u64::from(report.totals().requests),
        h.sim.request_count(),
        "429s are counted as requests"
    );
    let (requests, pages): (i64, i64) =
        sqlx::query_as("SELECT sum(requests)::int8, sum(pages)::int8 FROM sync_runs")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        requests - pages,
        REFUSED.len() as i64,
        "each 429 cost one request more, and nothing else did"
    );
    let pace = h.app.api().pace();
    assert_eq!(pace.len(), 1, "one controller for the one token");
    assert_eq!(
        pace[0].backpressure,
        REFUSED.len() as u64,
        "the controller heard every 429: {pace:?}"
    );
}

#[tokio::test]
async fn behind_a_limit_of_10_requests_a_second_fewer_than_one_request_in_ten_meets_a_429() {
    // 150 pairs of one visit each, one page a pair: about 15 s of requests at the limit, the
    // simulator's own token bucket (bursts of 10, `Retry-After` in whole seconds).
    let users: Vec<i64> = (1..=150).collect();
    let sim = sim_without_ties(SEED, &users.iter().map(|u| (*u, 1)).collect::<Vec<_>>());
    sim.set_rate_limit(Some((10.0, 10.0)));
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &users)], 10, |s| {
        s.api.max_retries = 10;
    })
    .await;

    let report = h.sync_ok().await;

    let (requests, refused) = (h.sim.request_count(), h.sim.rate_limited_count());
    assert_eq!(
        u64::from(report.totals().requests),
        requests,
        "the run counts every request the simulator saw"
    );
    assert_eq!(report.totals().visits_inserted, users.len() as u64);
    assert!(
        refused * 10 < requests,
        "{refused} of {requests} requests were answered 429"
    );
    let pace = h.app.api().pace();
    let cap = pace[0]
        .rate_cap
        .expect("a 429 taught the client a rate cap");
    // Learned from the accepted rate, then probing up by 2% a second: near the limit, not
    // the first round's guess from a full bucket's burst.
    assert!(
        cap < 20.0,
        "the cap it learned, {cap}, is near the limit of 10"
    );
    eprintln!("{refused} of {requests} requests answered 429; rate cap {cap:.1}");
}
