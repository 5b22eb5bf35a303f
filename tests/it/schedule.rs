//! The adaptive schedule against the simulator: a pass of `run` that lasts one tick checks a
//! busy viewer again and again, and every dormant one once; the new visit of a busy viewer lands
//! before the next tick; replicas share the due checks, each made once.

use std::time::Duration;

use chrono::Utc;
use szb_sync::app::App;
use szb_sync::engine::{PassPlan, SyncReport};
use tokio_util::sync::CancellationToken;

use crate::helpers::{AGENT, Harness, TOKEN, sim_with, target};

const SEED: u64 = 41;
const HOT: i64 = 1;
const DORMANT: [i64; 9] = [2, 3, 4, 5, 6, 7, 8, 9, 10];
/// The tick of these passes.
const TICK: chrono::Duration = chrono::Duration::seconds(12);

/// Ten viewers with old visits; the first also watched sixty times in the last hour.
async fn account() -> Harness {
    let mut users = vec![(HOT, 5)];
    users.extend(DORMANT.map(|u| (u, 5)));
    let sim = sim_with(SEED, &users);
    let now = Utc::now();
    for k in 1..=60 {
        let at = now - chrono::Duration::minutes(61) + chrono::Duration::minutes(k);
        sim.insert_visit_at(AGENT, HOT, at, None);
    }
    let all: Vec<i64> = users.iter().map(|(u, _)| *u).collect();
    let h = Harness::tweaked(sim, vec![target(AGENT, TOKEN, &all)], 1000, |s| {
        s.api.max_requests_per_second = Some(20.0);
        s.sync.min_interval = Duration::from_secs(1);
    })
    .await;
    // The first sync reads every pair's history: the busy viewer's rate is learnt from it.
    h.sync_ok().await;
    h
}

/// One tick of the daemon's adaptive pass, starting now.
fn tick_plan() -> PassPlan {
    let now = Utc::now();
    PassPlan {
        due_by: Some(now),
        next_due: Some(now + TICK),
        wait_for_others: true,
        until: Some(now + TICK),
        extra: false,
    }
}

/// What the daemon does for one tick of `plan`: the tick's pass, then a pass whenever a pair
/// falls due before the next tick. Returns the reports of every pass.
async fn one_tick(
    app: &App,
    h: &Harness,
    plan: PassPlan,
    stop: &CancellationToken,
) -> Vec<SyncReport> {
    let until = plan.until.unwrap();
    let mut reports = vec![app.engine().sync_due(h.pairs(), plan, stop).await];
    while let Some(at) = app.engine().next_extra_pass(until).await {
        tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
        let extra = PassPlan {
            due_by: Some(Utc::now()),
            extra: true,
            ..plan
        };
        reports.push(app.engine().sync_due(h.pairs(), extra, stop).await);
    }
    reports
}

async fn due_reason(h: &Harness, user: i64) -> Option<String> {
    sqlx::query_scalar("SELECT due_reason FROM sync_state WHERE user_id = $1")
        .bind(user)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_busy_viewers_new_visit_lands_before_the_next_tick_and_dormant_pairs_are_checked_once() {
    let h = account().await;
    h.sim.reset_request_counts();
    let plan = tick_plan();
    let until = plan.until.unwrap();
    let stop = CancellationToken::new();
    let pass = one_tick(&h.app, &h, plan, &stop);
    let visit = async {
        // Once the pass has checked the busy viewer twice, they start watching again.
        while h.sim.requests_for(AGENT, HOT) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h.sim.open_visit(AGENT, HOT)
    };
    let (reports, (activity, visit_at)) = tokio::join!(pass, visit);
    for report in &reports {
        assert!(report.errors.is_empty(), "{report}");
    }

    let landed: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "SELECT first_synced_at FROM visits WHERE user_id = $1 AND activity_id = $2 \
         AND visit_at = $3",
    )
    .bind(HOT)
    .bind(&activity)
    .bind(visit_at)
    .fetch_optional(&h.db.pool)
    .await
    .unwrap();
    let landed = landed.expect("the busy viewer's new visit landed in the pass");
    assert!(
        landed < until,
        "it landed at {landed}, after the next tick at {until}"
    );

    for u in DORMANT {
        assert_eq!(
            h.sim.requests_for(AGENT, u),
            1,
            "a dormant pair is checked once per tick"
        );
        assert_eq!(due_reason(&h, u).await.as_deref(), Some("sweep"));
    }
    let hot_checks = h.sim.requests_for(AGENT, HOT);
    assert!(
        hot_checks >= 4,
        "the busy viewer was checked {hot_checks} times"
    );
    let (rate, next): (f64, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT arrival_rate, next_due_at FROM sync_state WHERE user_id = $1")
            .bind(HOT)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert!(rate > 0.0);
    assert!(next <= until, "due again by the next tick at the latest");
    // Every dormant pair is due at the next tick exactly.
    let dormant_due: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT DISTINCT next_due_at FROM sync_state WHERE user_id <> $1")
            .bind(HOT)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(dormant_due.len(), 1, "{dormant_due:?}");
    assert!((dormant_due[0] - until).num_milliseconds().abs() < 1);
}

#[tokio::test]
async fn replicas_on_the_adaptive_schedule_make_each_due_check_once() {
    let h = account().await;
    let other = App::build(&h.settings).unwrap();
    h.sim.reset_request_counts();
    let plan = tick_plan();
    let stop = CancellationToken::new();
    let (a, b) = tokio::join!(
        one_tick(&h.app, &h, plan, &stop),
        one_tick(&other, &h, plan, &stop),
    );
    let runs: usize = a
        .iter()
        .chain(&b)
        .map(|r| {
            assert!(r.errors.is_empty(), "{r}");
            r.pairs.iter().filter(|p| p.totals.requests > 0).count()
        })
        .sum();
    for u in DORMANT {
        assert_eq!(
            h.sim.requests_for(AGENT, u),
            1,
            "pair {u}: each due check is made by one replica"
        );
    }
    let hot = h.sim.requests_for(AGENT, HOT) as usize;
    assert_eq!(
        runs,
        DORMANT.len() + hot,
        "every run is one request: no pair was checked by both at once"
    );
    assert!(
        hot >= 3,
        "the busy viewer was checked {hot} times between them"
    );
    for u in std::iter::once(HOT).chain(DORMANT) {
        assert_eq!(h.visits(AGENT, u).await, h.truth(AGENT, u, false));
    }
}
