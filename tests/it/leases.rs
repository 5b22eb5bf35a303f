//! Replicas in one process: leases held by another (live or dead) process, a page written after
//! the lease was taken over, renewal, and passes of `run` that share one tick.

use std::time::Duration;

use chrono::{DateTime, Utc};
use szb_sync::app::App;
use szb_sync::domain::{Mark, PairKey, RunOutcome};
use szb_sync::engine::PassPlan;
use szb_sync::store::{ClaimPlan, PageWrite, StoreError};
use tokio_util::sync::CancellationToken;

use crate::helpers::{AGENT, Harness, TOKEN, outcomes, sim_with, target};

const SEED: u64 = 23;
const LEASE: Duration = Duration::from_secs(60);

fn keys(h: &Harness) -> Vec<PairKey> {
    h.pairs().iter().map(|p| p.key.clone()).collect()
}

fn refs(keys: &[PairKey]) -> Vec<&PairKey> {
    keys.iter().collect()
}

/// A plan that claims every pair, for a coordinator that plays another process.
fn every_pair() -> ClaimPlan {
    ClaimPlan {
        due_by: None,
        pass_started: Utc::now(),
    }
}

/// The database's clock now (not the transaction's start, as `now()` would be).
async fn db_clock(h: &Harness) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pair_leased_by_a_live_process_is_skipped_and_taken_over_once_it_dies() {
    let sim = sim_with(SEED, &[(1, 30), (2, 40)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1, 2])], 1000).await;
    let ghost = h.app.store().coordinator("elsewhere:4242:0000beef", LEASE);
    let claimed = ghost
        .claim(&refs(&keys(&h)), 10, &every_pair())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .all(|c| c.locked && c.took_over_from.is_none())
    );

    let held = h.sync().await;

    assert!(
        held.pairs.iter().all(|p| p.outcome == RunOutcome::Skipped),
        "{:?}",
        held.pairs
    );
    assert_eq!(
        h.sim.request_count(),
        0,
        "nothing is fetched for a pair another process holds"
    );
    assert_eq!(h.count("SELECT count(*) FROM visits").await, 0);
    assert_eq!(outcomes(&h.db.pool).await, ["skipped", "skipped"]);

    // The other process dies: its connection closes, and with it its liveness lock.
    ghost.close().await;
    let after = h.sync_ok().await;

    assert_eq!(after.pairs.len(), 2);
    assert_eq!(h.visits(AGENT, 1).await, h.truth(AGENT, 1, false));
    assert_eq!(h.visits(AGENT, 2).await, h.truth(AGENT, 2, false));
    let lost: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM sync_runs WHERE outcome = 'interrupted' ORDER BY user_id",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        lost.len(),
        2,
        "the dead process's runs are recorded as interrupted"
    );
    assert!(
        lost.iter().all(|e| e.contains("elsewhere:4242:0000beef")),
        "{lost:?}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sync_state WHERE lease_owner IS NOT NULL")
            .await,
        0,
        "every lease was given back"
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_owner_can_no_longer_write() {
    let sim = sim_with(SEED, &[(1, 30)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1])], 1000).await;
    h.sync_ok().await;
    let store = h.app.store();
    let stalled = store.coordinator("stalled:1:00000001", LEASE);
    assert_eq!(
        stalled
            .claim(&refs(&keys(&h)), 1, &every_pair())
            .await
            .unwrap()
            .len(),
        1
    );
    let mark_before: i64 = h.count("SELECT settled_count FROM sync_state").await;
    // The stalled process stopped renewing: its lease runs out.
    sqlx::query("UPDATE sync_state SET lease_expires_at = now() - interval '1 second'")
        .execute(&h.db.pool)
        .await
        .unwrap();

    let taker = store.coordinator("taker:2:00000002", LEASE);
    let taken = taker
        .claim(&refs(&keys(&h)), 1, &every_pair())
        .await
        .unwrap();
    let mut late = store.session(&keys(&h)[0], "stalled:1:00000001");
    let refused = late
        .write_page(&PageWrite {
            entries: &[],
            first_position: None,
            mark: &Mark::default(),
            upstream_total: 0,
            set_aside: false,
        })
        .await;

    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].took_over_from.as_deref(),
        Some("stalled:1:00000001")
    );
    assert!(
        !taken[0].locked,
        "the stalled process still holds the pair's advisory lock: the last guard"
    );
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(
        h.count("SELECT settled_count FROM sync_state").await,
        mark_before,
        "the old owner's page did not move the mark"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sync_state WHERE lease_owner = 'taker:2:00000002'")
            .await,
        1
    );
}

#[tokio::test]
async fn renewal_extends_only_the_leases_still_held() {
    let sim = sim_with(SEED, &[(1, 5), (2, 5)]);
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &[1, 2])], 1000).await;
    let store = h.app.store();
    let a = store.coordinator("a:1:0000000a", Duration::from_secs(5));
    assert_eq!(
        a.claim(&refs(&keys(&h)), 2, &every_pair())
            .await
            .unwrap()
            .len(),
        2
    );
    // One lease is about to run out; the other was taken over by another process.
    sqlx::raw_sql(
        "UPDATE sync_state SET lease_expires_at = now() + interval '1 second' WHERE user_id = 1;
         UPDATE sync_state SET lease_owner = 'b:2:0000000b' WHERE user_id = 2;",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();

    let before = db_clock(&h).await;
    let renewed = a.renew(&keys(&h)).await.unwrap();
    let after = db_clock(&h).await;

    assert_eq!(
        renewed, 1,
        "the lease another process holds now is not renewed"
    );
    let expires: DateTime<Utc> =
        sqlx::query_scalar("SELECT lease_expires_at FROM sync_state WHERE user_id = 1")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    // The renewal's own clock reading lies between the two taken around it.
    let period = chrono::Duration::seconds(5);
    assert!(
        before + period <= expires && expires <= after + period,
        "renewed for a whole lease period from the renewal: expires {expires}, renewed between \
         {before} and {after}"
    );
    let other: String = sqlx::query_scalar("SELECT lease_owner FROM sync_state WHERE user_id = 2")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        other, "b:2:0000000b",
        "the other process's lease is left alone"
    );
}

#[tokio::test]
async fn passes_of_two_replicas_for_one_tick_run_each_pair_once() {
    let users = [1, 2, 3, 4, 5, 6];
    let sim = sim_with(SEED, &users.map(|u| (u, 20)));
    let h = Harness::new(sim, vec![target(AGENT, TOKEN, &users)], 1000).await;
    let other = App::build(&h.settings).unwrap();
    let stop = CancellationToken::new();
    let tick = Utc::now();
    let plan = |due_by: chrono::DateTime<Utc>| PassPlan {
        due_by: Some(due_by),
        next_due: Some(due_by + chrono::Duration::minutes(10)),
        wait_for_others: true,
        until: None,
        extra: false,
    };

    let first = h.app.engine().sync_due(h.pairs(), plan(tick), &stop).await;
    let before = h.sim.request_count();
    let same_tick = other.engine().sync_due(h.pairs(), plan(tick), &stop).await;
    let same_tick_requests = h.sim.request_count() - before;
    let next_tick = other
        .engine()
        .sync_due(h.pairs(), plan(tick + chrono::Duration::minutes(10)), &stop)
        .await;

    assert_eq!(first.pairs.len(), users.len());
    assert!(first.all_ok(), "{first}");
    assert!(same_tick.pairs.is_empty(), "{same_tick}");
    assert_eq!(same_tick_requests, 0);
    assert_eq!(
        next_tick.pairs.len(),
        users.len(),
        "the next tick runs them all again"
    );
    for u in users {
        assert_eq!(h.visits(AGENT, u).await, h.truth(AGENT, u, false));
    }
    let due: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT DISTINCT next_due_at FROM sync_state")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        due.len(),
        1,
        "every pair is due at the tick after its last: {due:?}"
    );
    assert!(
        (due[0] - (tick + chrono::Duration::minutes(20)))
            .num_milliseconds()
            .abs()
            < 1
    );
    let owners: Vec<(Option<String>, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT owner, due_by FROM sync_passes ORDER BY id")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(owners.len(), 3);
    assert_eq!(owners[0].0.as_deref(), Some(h.app.engine().owner()));
    assert_eq!(owners[1].0.as_deref(), Some(other.engine().owner()));
}
