//! What the upstream does to its list between and during syncs (open visits that grow, clocks that
//! disagree, retention purges, appends, ties, activities that change or disappear, an activity
//! filter), and what must land in the tables each time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::helpers::{
    AGENT, Harness, TOKEN, VisitRow, iso, row_versions, sim_with, sim_without_ties, target,
};
use chrono::{DateTime, Duration, Utc};
use szb_simulator::{RequestInfo, Simulator, TruthActivity, World};
use szb_sync::secret::Secret;
use szb_sync::settings::Target;

/// The simulator seed of this module's worlds.
const SEED: u64 = 11;

const USER: i64 = 1;

/// What every harness here syncs: [`USER`] of [`AGENT`].
fn the_pair() -> Vec<Target> {
    vec![target(AGENT, TOKEN, &[USER])]
}

/// The `sync_state` row of an unfiltered pair.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MarkRow {
    settled: i64,
    anchor: Option<DateTime<Utc>>,
    anchor_ids: Vec<String>,
}

async fn mark(h: &Harness, user: i64) -> MarkRow {
    let (settled, anchor, anchor_ids): (i64, Option<DateTime<Utc>>, Vec<String>) = sqlx::query_as(
        "SELECT settled_count, anchor_visit_at, anchor_activity_ids FROM sync_state
              WHERE agent_id = $1 AND user_id = $2 AND activity_filter = ''",
    )
    .bind(AGENT)
    .bind(user)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    MarkRow {
        settled,
        anchor,
        anchor_ids,
    }
}

/// The recoveries recorded in the pair's latest run row.
async fn last_recoveries(h: &Harness, user: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT recoveries FROM sync_runs WHERE agent_id = $1 AND user_id = $2
          ORDER BY id DESC LIMIT 1",
    )
    .bind(AGENT)
    .bind(user)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

/// The columns of an activity row the upstream's changes touch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActivityRow {
    agent_id: Option<i64>,
    name: Option<String>,
    status: Option<String>,
    is_pushing: Option<bool>,
    ended_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

impl ActivityRow {
    fn of(a: &TruthActivity) -> Self {
        ActivityRow {
            agent_id: Some(a.agent_id),
            name: Some(a.name.clone()),
            status: Some(a.status.clone()),
            is_pushing: Some(a.is_pushing),
            ended_at: a.ended_at,
            updated_at: Some(a.updated_at),
        }
    }

    /// What is known of an activity only ever seen as an id.
    fn id_only() -> Self {
        ActivityRow {
            agent_id: None,
            name: None,
            status: None,
            is_pushing: None,
            ended_at: None,
            updated_at: None,
        }
    }
}

async fn activity_row(h: &Harness, id: &str) -> Option<ActivityRow> {
    type Cols = (
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<bool>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Cols> = sqlx::query_as(
        "SELECT agent_id, name, status, is_pushing, ended_at, updated_at FROM activities
          WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&h.db.pool)
    .await
    .unwrap();
    row.map(
        |(agent_id, name, status, is_pushing, ended_at, updated_at)| ActivityRow {
            agent_id,
            name,
            status,
            is_pushing,
            ended_at,
            updated_at,
        },
    )
}

type Key = (String, DateTime<Utc>);

/// Every visit the simulator has put in an answer, recorded from a before-request hook.
///
/// A purge during a walk can drop visits no request ever showed; nobody can store those. Every
/// visit that was shown, or is still upstream, must be in the table.
#[derive(Clone, Default)]
struct Served(Arc<Mutex<HashSet<Key>>>);

impl Served {
    /// Records the page `req` is about to be answered with. Call it last in the hook, after
    /// any change to the world. Ties must not be shuffled.
    fn record(&self, world: &World, req: &RequestInfo) {
        let mut list: Vec<_> = world
            .visits(req.agent_id, req.user_id)
            .into_iter()
            .filter(|v| {
                req.activity_id
                    .as_deref()
                    .is_none_or(|a| a == v.activity_id)
            })
            .collect();
        if req.order_desc {
            // The simulator's own stable sort: ties keep their ascending order.
            list.sort_by_key(|v| std::cmp::Reverse(v.visit_at));
        }
        let offset = ((req.page - 1) * req.page_size) as usize;
        let mut served = self.0.lock().unwrap();
        for v in list.into_iter().skip(offset).take(req.page_size as usize) {
            served.insert((v.activity_id, v.visit_at));
        }
    }

    /// Every visit ever held upstream that was served or is still there, with its last values.
    fn expected(&self, h: &Harness, user: i64) -> Vec<VisitRow> {
        let served = self.0.lock().unwrap().clone();
        let current: HashSet<Key> = h
            .sim
            .visits(AGENT, user)
            .into_iter()
            .map(|v| (v.activity_id, v.visit_at))
            .collect();
        h.truth(AGENT, user, true)
            .into_iter()
            .filter(|r| {
                let key = (r.activity_id.clone(), r.visit_at);
                served.contains(&key) || current.contains(&key)
            })
            .collect()
    }
}

/// `assert_eq!` for visit rows, reporting only the rows that differ.
#[track_caller]
fn assert_rows(actual: Vec<VisitRow>, expected: Vec<VisitRow>, context: &str) {
    if actual == expected {
        return;
    }
    let key = |r: &VisitRow| (r.activity_id.clone(), r.visit_at);
    let stored: HashSet<Key> = actual.iter().map(key).collect();
    let wanted: HashSet<Key> = expected.iter().map(key).collect();
    let missing: Vec<&VisitRow> = expected
        .iter()
        .filter(|r| !stored.contains(&key(r)))
        .collect();
    let extra: Vec<&VisitRow> = actual
        .iter()
        .filter(|r| !wanted.contains(&key(r)))
        .collect();
    let stale: Vec<(&VisitRow, &VisitRow)> = actual
        .iter()
        .filter_map(|a| expected.iter().find(|e| key(e) == key(a)).map(|e| (a, e)))
        .filter(|(a, e)| a != e)
        .collect();
    panic!(
        "{context}: {} rows stored, {} expected\nmissing {}: {missing:#?}\nnot expected {}: {extra:#?}\nstale {}: {stale:#?}",
        actual.len(),
        expected.len(),
        missing.len(),
        extra.len(),
        stale.len(),
    );
}

/// A visit item exactly as the upstream serves it, with its activity embedded whole.
fn wire_visit(
    user: i64,
    a: &TruthActivity,
    visit_at: DateTime<Utc>,
    last_online_at: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "activity": {
            "isArchived": a.is_archived,
            "isPushing": a.is_pushing,
            "id": a.id,
            "agentId": a.agent_id,
            "subagentId": a.subagent_id,
            "categoryId": a.category_id,
            "name": a.name,
            "status": a.status,
            "startedAt": iso(a.started_at),
            "endedAt": a.ended_at.map(iso),
            "pushDomain": a.push_domain,
            "pullDomain": a.pull_domain,
            "groupId": a.group_id,
            "createdAt": iso(a.created_at),
            "updatedAt": iso(a.updated_at),
        },
        "visitAt": iso(visit_at),
        "lastOnlineAt": iso(last_online_at),
        "duration": (last_online_at - visit_at).num_minutes(),
        "userId": user,
        "activityId": a.id,
    })
}

// ---------------------------------------------------------------------------------------------
// Open visits and clocks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_open_visit_lands_grows_in_place_and_holds_the_mark_until_it_settles() {
    // The upstream's clock starts 5 h behind ours and catches up as time passes upstream: a
    // platform Date ahead of our clock is not trusted (hostile_bodies.rs).
    let behind = Duration::hours(5);
    let sim = Simulator::new(SEED);
    sim.set_clock_skew(-behind);
    sim.add_agent(AGENT, TOKEN);
    sim.generate_visits(AGENT, USER, 50);
    let (_, opened_at) = sim.open_visit(AGENT, USER);
    let h = Harness::new(sim, the_pair(), 10).await;
    let open_row = |rows: Vec<VisitRow>| {
        rows.into_iter()
            .find(|r| r.visit_at == opened_at)
            .expect("the open visit is stored")
    };

    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    assert_eq!(
        open_row(h.visits(AGENT, USER).await).last_online_at,
        opened_at
    );
    let m = mark(&h, USER).await;
    assert!(
        m.settled <= 50 && m.anchor <= Some(opened_at),
        "the mark passed the open visit at position 50: {m:?}"
    );

    // The viewer is still watching: the platform raises lastOnlineAt.
    h.sim.extend_open_visits(Duration::minutes(10));
    let grown = h.sync_ok().await;

    let t = grown.totals();
    assert_eq!((t.visits_inserted, t.visits_updated), (0, 1));
    let rows = h.visits(AGENT, USER).await;
    assert_eq!(rows.len(), 51, "updated in place, not duplicated");
    assert_rows(rows.clone(), h.truth(AGENT, USER, false), "");
    let open = open_row(rows);
    assert_eq!(open.last_online_at, opened_at + Duration::minutes(10));
    assert_eq!(open.duration_minutes, 10);
    let m = mark(&h, USER).await;
    assert!(m.settled <= 50 && m.anchor <= Some(opened_at), "{m:?}");

    // Nothing changed: the open visit is read again, and nothing is written.
    let before = row_versions(&h.db.pool).await;
    h.sim.reset_request_counts();
    let quiet = h.sync_ok().await;

    let t = quiet.totals();
    assert_eq!(
        (t.visits_inserted, t.visits_updated, t.activities_written),
        (0, 0, 0)
    );
    assert_eq!(row_versions(&h.db.pool).await, before, "no row was written");
    assert_eq!(h.sim.requests_for(AGENT, USER), 1);

    // Three hours later by the upstream's clock the viewer is still online, and settled visits
    // have arrived after it: the mark still may not pass it.
    h.sim.set_clock_skew(Duration::hours(3) - behind);
    h.sim.extend_open_visits(Duration::hours(3));
    for minutes in 1..=3 {
        h.sim
            .insert_visit_at(AGENT, USER, opened_at + Duration::minutes(minutes), None);
    }
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    let m = mark(&h, USER).await;
    assert!(
        m.settled <= 50 && m.anchor <= Some(opened_at),
        "the mark passed an open visit because later visits were settled: {m:?}"
    );
    assert_eq!(
        open_row(h.visits(AGENT, USER).await).last_online_at,
        opened_at + Duration::minutes(190)
    );

    // The viewer left, and more than settle_after (1 h) has passed by the upstream's clock.
    h.sim.close_open_visits();
    h.sim.set_clock_skew(Duration::hours(5) - behind);
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    let m = mark(&h, USER).await;
    assert!(
        m.settled > 50 && m.anchor > Some(opened_at),
        "the mark did not move past the settled visit: {m:?}"
    );
}

#[tokio::test]
async fn an_upstream_clock_behind_ours_does_not_settle_a_visit_early() {
    let sim = sim_with(SEED, &[(USER, 20)]);
    // By the upstream's clock (3 h behind ours) the visit began 3 h ago and ended 30 min ago.
    sim.set_clock_skew(Duration::hours(-6));
    let (_, began) = sim.open_visit(AGENT, USER);
    sim.set_clock_skew(Duration::minutes(-210));
    sim.extend_open_visits(Duration::minutes(150));
    sim.close_open_visits();
    sim.set_clock_skew(Duration::hours(-3));
    // Settled visits after it, which would let the mark pass it if it counted as settled.
    for minutes in 1..=3 {
        sim.insert_visit_at(AGENT, USER, began + Duration::minutes(minutes), None);
    }
    let ago = sim.now() - sim.visits(AGENT, USER)[20].last_online_at;
    assert!((Duration::minutes(29)..=Duration::minutes(31)).contains(&ago));
    let h = Harness::new(sim, the_pair(), 10).await;

    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    let m = mark(&h, USER).await;
    assert!(
        m.settled <= 20 && m.anchor <= Some(began),
        "judged by our clock, a visit that ended 30 min ago upstream settled: {m:?}"
    );

    // The upstream's clock catches up: the visit ended 3.5 h ago, and now it is settled.
    h.sim.set_clock_skew(Duration::zero());
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    let m = mark(&h, USER).await;
    assert!(m.settled > 20 && m.anchor > Some(began), "{m:?}");
}

// ---------------------------------------------------------------------------------------------
// Retention purges
// ---------------------------------------------------------------------------------------------

/// How many of the oldest visits a purge between two syncs drops.
#[derive(Debug, Clone, Copy)]
enum Purge {
    Oldest(usize),
    MoreThanAPage,
    /// Every visit before the anchor group: the group is left at position 0.
    AllBeforeAnchor,
    /// The anchor group too, with visits appended after it still upstream.
    ThroughAnchorGroup,
    Everything,
}

/// Sync, purge, append, sync: every visit ever seen is stored, the appended ones land once, a
/// recovery is recorded, and the next quiet sync costs one request. Page sizes 10 and 1000.
async fn purge_between_syncs_loses_nothing(purge: Purge) {
    for page_size in [10u32, 1000] {
        let n = if page_size == 10 { 137 } else { 2500 };
        let h = Harness::new(sim_with(SEED, &[(USER, n)]), the_pair(), page_size).await;
        h.sync_ok().await;
        let before = mark(&h, USER).await;
        let appended_before = match purge {
            Purge::ThroughAnchorGroup => 4,
            _ => 0,
        };
        h.sim.append_visits(AGENT, USER, appended_before);
        let anchor_group = h
            .sim
            .visits(AGENT, USER)
            .iter()
            .filter(|v| Some(v.visit_at) == before.anchor)
            .count();
        let k = match purge {
            Purge::Oldest(k) => k,
            Purge::MoreThanAPage => page_size as usize + 3,
            Purge::AllBeforeAnchor => before.settled as usize,
            Purge::ThroughAnchorGroup => before.settled as usize + anchor_group,
            Purge::Everything => n,
        };
        let context = format!("page size {page_size}, {n} visits, {purge:?} = {k}, {before:?}");

        h.sim.purge_oldest(AGENT, USER, k);
        h.sim.append_visits(AGENT, USER, 3);
        let report = h.sync_ok().await;

        assert_rows(
            h.visits(AGENT, USER).await,
            h.truth(AGENT, USER, true),
            &context,
        );
        assert_eq!(
            report.totals().visits_inserted,
            appended_before as u64 + 3,
            "{context}"
        );
        assert!(
            !last_recoveries(&h, USER).await.is_empty(),
            "the run row records the recovery: {context}"
        );

        h.sim.reset_request_counts();
        let quiet = h.sync_ok().await;

        assert_eq!(h.sim.requests_for(AGENT, USER), 1, "{context}");
        let t = quiet.totals();
        assert_eq!((t.visits_inserted, t.visits_updated), (0, 0), "{context}");
        assert_rows(
            h.visits(AGENT, USER).await,
            h.truth(AGENT, USER, true),
            &context,
        );
    }
}

#[tokio::test]
async fn purging_the_oldest_visit_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::Oldest(1)).await;
}

#[tokio::test]
async fn purging_a_few_oldest_visits_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::Oldest(5)).await;
}

#[tokio::test]
async fn purging_more_than_a_page_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::MoreThanAPage).await;
}

#[tokio::test]
async fn purging_everything_before_the_anchor_group_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::AllBeforeAnchor).await;
}

#[tokio::test]
async fn purging_through_the_anchor_group_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::ThroughAnchorGroup).await;
}

#[tokio::test]
async fn purging_every_visit_between_syncs_loses_nothing() {
    purge_between_syncs_loses_nothing(Purge::Everything).await;
}

/// Installs a hook that, at each listed request, purges `k` oldest visits and appends 4, and
/// records everything served. What is already stored counts as served.
async fn purge_at(h: &Harness, purges: &[(u64, usize)]) -> Served {
    let stored = h.visits(AGENT, USER).await;
    let served = Served::default();
    served
        .0
        .lock()
        .unwrap()
        .extend(stored.into_iter().map(|r| (r.activity_id, r.visit_at)));
    let tracker = served.clone();
    let purges = purges.to_vec();
    h.sim.set_before_request(move |world, req| {
        for &(at, k) in &purges {
            if req.request_no == at {
                world.purge_oldest(req.agent_id, req.user_id, k);
                world.append_visits(req.agent_id, req.user_id, 4);
            }
        }
        tracker.record(world, req);
    });
    served
}

#[tokio::test]
async fn a_purge_during_the_first_walk_loses_no_visit_that_was_served() {
    for (at, k) in [(2, 1), (4, 5), (6, 25), (6, 60), (3, 300)] {
        let h = Harness::new(sim_with(SEED, &[(USER, 300)]), the_pair(), 10).await;
        let served = purge_at(&h, &[(at, k)]).await;

        h.sync_ok().await;
        h.sim.clear_before_request();
        h.sync_ok().await;

        let context = format!("purge of {k} at request {at}");
        assert_rows(
            h.visits(AGENT, USER).await,
            served.expected(&h, USER),
            &context,
        );
        // Pages of 10 do not always line up around a tie group after such a purge: the mark may
        // then wait and a quiet sync cost more than one request. It never writes a row.
        let quiet = h.sync_ok().await.totals();
        assert_eq!(
            (quiet.visits_inserted, quiet.visits_updated),
            (0, 0),
            "{context}"
        );
    }
}

#[tokio::test]
async fn a_purge_during_a_later_walk_loses_no_visit_that_was_served() {
    // The mark sits at 99 (100 visits, all settled); 80 more are appended before the walk.
    for (at, k) in [(1, 3), (2, 3), (2, 40), (3, 99), (2, 101), (1, 180)] {
        let h = Harness::new(sim_with(SEED, &[(USER, 100)]), the_pair(), 10).await;
        h.sync_ok().await;
        h.sim.append_visits(AGENT, USER, 80);
        h.sim.reset_request_counts();
        let served = purge_at(&h, &[(at, k)]).await;

        h.sync_ok().await;
        h.sim.clear_before_request();
        h.sync_ok().await;

        let context = format!("purge of {k} at request {at}");
        assert_rows(
            h.visits(AGENT, USER).await,
            served.expected(&h, USER),
            &context,
        );
        h.sim.reset_request_counts();
        h.sync_ok().await;
        assert_eq!(h.sim.requests_for(AGENT, USER), 1, "{context}");
    }
}

#[tokio::test]
async fn two_purges_during_one_walk_lose_no_visit_that_was_served() {
    let h = Harness::new(sim_with(SEED, &[(USER, 300)]), the_pair(), 10).await;
    let served = purge_at(&h, &[(5, 6), (12, 6)]).await;

    h.sync_ok().await;
    h.sim.clear_before_request();
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, served.expected(&h, USER), "");
    let quiet = h.sync_ok().await.totals();
    assert_eq!((quiet.visits_inserted, quiet.visits_updated), (0, 0));
}

#[tokio::test]
async fn a_purge_at_every_third_request_loses_no_visit_that_was_served() {
    let h = Harness::new(sim_with(SEED, &[(USER, 300)]), the_pair(), 10).await;
    let purges: Vec<(u64, usize)> = (1..=60).filter(|r| r % 3 == 0).map(|r| (r, 3)).collect();
    let served = purge_at(&h, &purges).await;

    // The walk may give up on a list that keeps shifting ("will retry next run"); what it was
    // shown must be stored all the same.
    h.sync().await;
    h.sim.clear_before_request();
    h.sync_ok().await;
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, served.expected(&h, USER), "");
    let quiet = h.sync_ok().await.totals();
    assert_eq!((quiet.visits_inserted, quiet.visits_updated), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Appends during a walk
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn visits_appended_at_every_request_of_a_walk_land_exactly_once() {
    for (page_size, n, per_request) in [(10u32, 200, 3), (1000, 2500, 300)] {
        let h = Harness::new(sim_with(SEED, &[(USER, n)]), the_pair(), page_size).await;
        h.sim.set_before_request(move |world, req| {
            world.append_visits(req.agent_id, req.user_id, per_request);
        });

        let first = h.sync_ok().await;
        h.sim.clear_before_request();
        let second = h.sync_ok().await;

        let context = format!("page size {page_size}");
        let rows = h.visits(AGENT, USER).await;
        assert!(rows.len() > n, "the hook appended: {context}");
        assert_rows(rows.clone(), h.truth(AGENT, USER, true), &context);
        assert_eq!(
            first.totals().visits_inserted + second.totals().visits_inserted,
            rows.len() as u64,
            "each visit inserted once: {context}"
        );
    }
}

#[tokio::test]
async fn visits_appended_at_every_request_of_a_later_walk_land_exactly_once() {
    let h = Harness::new(sim_with(SEED, &[(USER, 120)]), the_pair(), 10).await;
    h.sync_ok().await;
    h.sim.append_visits(AGENT, USER, 90);
    h.sim
        .set_before_request(|world, req| world.append_visits(req.agent_id, req.user_id, 2));

    h.sync_ok().await;
    h.sim.clear_before_request();
    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, true), "");
    let inserted: i64 = h
        .count("SELECT coalesce(sum(visits_inserted), 0)::int8 FROM sync_runs")
        .await;
    assert_eq!(inserted as usize, h.truth(AGENT, USER, true).len());
}

// ---------------------------------------------------------------------------------------------
// Ties
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn shuffled_ties_around_page_boundaries_all_land() {
    for start in [8usize, 9, 10, 15, 16, 29] {
        for size in [2, 4] {
            let sim = sim_with(SEED, &[(USER, 30)]);
            let at = sim.visits(AGENT, USER)[start].visit_at;
            for _ in 1..size {
                sim.add_tie(AGENT, USER, at);
            }
            sim.set_shuffle_ties(true);
            let h = Harness::new(sim, the_pair(), 10).await;

            h.sync_ok().await;

            let context = format!("{size} ties from position {start}");
            assert_rows(
                h.visits(AGENT, USER).await,
                h.truth(AGENT, USER, false),
                &context,
            );
            h.sim.reset_request_counts();
            h.sync_ok().await;
            assert_eq!(h.sim.requests_for(AGENT, USER), 1, "{context}");
        }
    }
}

#[tokio::test]
async fn a_shuffled_tie_group_no_window_can_hold_whole_never_lets_the_mark_pass_a_missing_member() {
    // With pages of at most 10, no window holds 7 visits from position 30, 35, 40 or 48 together
    // with the visit before and after them: the group is read in two parts, in random order.
    for start in [30usize, 35, 40, 48] {
        let sim = sim_without_ties(SEED, &[(USER, 80)]);
        let at = sim.visits(AGENT, USER)[start].visit_at;
        for _ in 1..7 {
            sim.add_tie(AGENT, USER, at);
        }
        sim.set_shuffle_ties(true);
        let h = Harness::new(sim, the_pair(), 10).await;
        let members = |rows: &[VisitRow]| rows.iter().filter(|r| r.visit_at == at).count();

        let mut syncs = 0;
        while members(&h.visits(AGENT, USER).await) < 7 && syncs < 10 {
            h.sync_ok().await;
            syncs += 1;

            let stored = members(&h.visits(AGENT, USER).await);
            let m = mark(&h, USER).await;
            assert!(
                stored == 7 || (m.settled <= start as i64 && m.anchor <= Some(at)),
                "group at {start}: {stored} of 7 members stored, yet the mark passed it: {m:?}"
            );
        }

        assert_rows(
            h.visits(AGENT, USER).await,
            h.truth(AGENT, USER, false),
            &format!("group at {start}, after {syncs} syncs"),
        );
    }
}

#[tokio::test]
async fn shuffled_tie_groups_of_fifty_around_full_page_boundaries_land_in_one_sync() {
    let sim = sim_without_ties(SEED, &[(USER, 2500)]);
    let visits = sim.visits(AGENT, USER);
    for start in [975usize, 1990] {
        for _ in 1..50 {
            sim.add_tie(AGENT, USER, visits[start].visit_at);
        }
    }
    sim.set_shuffle_ties(true);
    let h = Harness::new(sim, the_pair(), 1000).await;

    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    h.sim.reset_request_counts();
    h.sync_ok().await;
    assert_eq!(h.sim.requests_for(AGENT, USER), 1);
}

#[tokio::test]
async fn a_late_visit_joining_the_anchor_group_lands() {
    for page_size in [10u32, 1000] {
        for appended_after in [0, 5] {
            let sim = sim_with(SEED, &[(USER, 40)]);
            sim.set_shuffle_ties(true);
            let h = Harness::new(sim, the_pair(), page_size).await;
            h.sync_ok().await;
            let anchor = mark(&h, USER).await.anchor.unwrap();
            let last = h.sim.visits(AGENT, USER).last().unwrap().visit_at;
            assert_eq!(anchor, last, "all settled: the anchor is the last group");

            h.sim.add_tie(AGENT, USER, anchor);
            h.sim.append_visits(AGENT, USER, appended_after);
            let report = h.sync_ok().await;

            let context = format!("page size {page_size}, {appended_after} appended");
            assert_rows(
                h.visits(AGENT, USER).await,
                h.truth(AGENT, USER, false),
                &context,
            );
            assert_eq!(
                report.totals().visits_inserted,
                1 + appended_after as u64,
                "{context}"
            );
            h.sim.reset_request_counts();
            h.sync_ok().await;
            assert_eq!(h.sim.requests_for(AGENT, USER), 1, "{context}");
        }
    }
}

#[tokio::test]
async fn a_late_visit_tied_with_the_last_settled_visit_before_the_anchor_lands() {
    for page_size in [10u32, 1000] {
        let h = Harness::new(sim_with(SEED, &[(USER, 40)]), the_pair(), page_size).await;
        h.sync_ok().await;
        let settled = mark(&h, USER).await.settled as usize;
        let before_anchor = h.sim.visits(AGENT, USER)[settled - 1].visit_at;

        h.sim.add_tie(AGENT, USER, before_anchor);
        let report = h.sync_ok().await;

        let context = format!("page size {page_size}");
        assert_rows(
            h.visits(AGENT, USER).await,
            h.truth(AGENT, USER, false),
            &context,
        );
        assert_eq!(report.totals().visits_inserted, 1, "{context}");
        h.sim.reset_request_counts();
        h.sync_ok().await;
        assert_eq!(h.sim.requests_for(AGENT, USER), 1, "{context}");
    }
}

// ---------------------------------------------------------------------------------------------
// Activities that change or disappear
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_changed_activity_lands_when_its_open_visit_is_read_again() {
    let sim = sim_with(SEED, &[(USER, 30)]);
    let (activity, _) = sim.open_visit(AGENT, USER);
    let h = Harness::new(sim, the_pair(), 10).await;
    h.sync_ok().await;
    let old = h.sim.activity(&activity).unwrap();
    assert_eq!(
        activity_row(&h, &activity).await,
        Some(ActivityRow::of(&old))
    );

    h.sim.change_activity(&activity);
    h.sim.extend_open_visits(Duration::minutes(5));
    h.sync_ok().await;

    let new = h.sim.activity(&activity).unwrap();
    assert_ne!((&new.name, &new.status), (&old.name, &old.status));
    assert_eq!(
        activity_row(&h, &activity).await,
        Some(ActivityRow::of(&new))
    );
}

#[tokio::test]
async fn a_changed_activity_lands_with_a_new_visit_of_it() {
    let h = Harness::new(sim_with(SEED, &[(USER, 30)]), the_pair(), 10).await;
    h.sync_ok().await;
    let visits = h.sim.visits(AGENT, USER);
    let activity = visits[3].activity_id.clone();
    let last = visits.last().unwrap().visit_at;

    h.sim.change_activity(&activity);
    h.sim
        .insert_visit_at(AGENT, USER, last + Duration::minutes(1), Some(&activity));
    h.sync_ok().await;

    let new = h.sim.activity(&activity).unwrap();
    assert_eq!(
        activity_row(&h, &activity).await,
        Some(ActivityRow::of(&new))
    );
    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
}

#[tokio::test]
async fn an_older_copy_of_an_activity_never_overwrites_a_newer_one() {
    let sim = sim_with(SEED, &[(USER, 30)]);
    // The last visit's activity is served on every sync: the anchor group is always re-read.
    let activity = sim.visits(AGENT, USER).last().unwrap().activity_id.clone();
    let served = sim.activity(&activity).unwrap();
    let h = Harness::new(sim, the_pair(), 10).await;
    let newer = ActivityRow {
        agent_id: Some(AGENT),
        name: Some("renamed after the upstream's copy".to_owned()),
        status: Some("forbidden".to_owned()),
        is_pushing: Some(false),
        ended_at: None,
        updated_at: Some(served.updated_at + Duration::days(1)),
    };
    sqlx::query(
        "INSERT INTO activities (id, agent_id, name, status, is_pushing, ended_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&activity)
    .bind(newer.agent_id)
    .bind(&newer.name)
    .bind(&newer.status)
    .bind(newer.is_pushing)
    .bind(newer.ended_at)
    .bind(newer.updated_at)
    .execute(&h.db.pool)
    .await
    .unwrap();

    h.sync_ok().await;
    h.sync_ok().await;

    assert_eq!(activity_row(&h, &activity).await, Some(newer));
    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
}

#[tokio::test]
async fn a_deleted_activity_is_stored_as_its_id_until_a_later_sighting_fills_it_in() {
    let sim = sim_with(SEED, &[(USER, 30)]);
    let deleted = sim.visits(AGENT, USER)[10].activity_id.clone();
    sim.delete_activity(&deleted);
    let h = Harness::new(sim, the_pair(), 10).await;

    h.sync_ok().await;

    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
    assert_eq!(
        activity_row(&h, &deleted).await,
        Some(ActivityRow::id_only())
    );

    // The simulator has no undelete, and `World` keeps its activities private, so the later
    // sighting is a new visit served verbatim with the activity embedded whole, exactly as the
    // platform would serve it.
    let activity = h.sim.activity(&deleted).unwrap();
    let at = h.sim.visits(AGENT, USER).last().unwrap().visit_at + Duration::minutes(1);
    let left = at + Duration::minutes(20);
    h.sim
        .insert_raw_item(AGENT, USER, at, wire_visit(USER, &activity, at, left));
    h.sync_ok().await;

    assert_eq!(
        activity_row(&h, &deleted).await,
        Some(ActivityRow::of(&activity))
    );
    let mut expected = h.truth(AGENT, USER, false);
    expected.push(VisitRow {
        user_id: USER,
        visit_at: at,
        activity_id: deleted.clone(),
        last_online_at: left,
        duration_minutes: 20,
    });
    expected.sort();
    assert_rows(h.visits(AGENT, USER).await, expected, "");
}

#[tokio::test]
async fn an_activity_deleted_after_it_was_seen_keeps_its_last_known_values() {
    let sim = sim_with(SEED, &[(USER, 30)]);
    let activity = sim.visits(AGENT, USER).last().unwrap().activity_id.clone();
    let h = Harness::new(sim, the_pair(), 10).await;
    h.sync_ok().await;
    let known = h.sim.activity(&activity).unwrap();

    h.sim.delete_activity(&activity);
    h.sync_ok().await;

    assert_eq!(
        activity_row(&h, &activity).await,
        Some(ActivityRow::of(&known))
    );
    assert_rows(h.visits(AGENT, USER).await, h.truth(AGENT, USER, false), "");
}

// ---------------------------------------------------------------------------------------------
// Activity filter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_target_with_an_activity_filter_stores_only_that_activity_under_its_own_mark() {
    let sim = sim_with(SEED, &[(USER, 300)]);
    let visits = sim.visits(AGENT, USER);
    let mut ids: Vec<String> = visits.iter().map(|v| v.activity_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let count = |id: &String| visits.iter().filter(|v| &v.activity_id == id).count();
    let wanted = ids.iter().max_by_key(|id| count(id)).unwrap().clone();
    let other = ids.iter().find(|id| **id != wanted).unwrap().clone();
    let last = visits.last().unwrap().visit_at;
    let filtered = Target {
        agent_id: AGENT,
        user_ids: vec![USER],
        user_ids_file: None,
        token: Some(Secret::new(TOKEN)),
        activity_id: Some(wanted.clone()),
    };
    let h = Harness::new(sim, vec![filtered], 10).await;
    let only_wanted = |h: &Harness| -> Vec<VisitRow> {
        h.truth(AGENT, USER, false)
            .into_iter()
            .filter(|r| r.activity_id == wanted)
            .collect()
    };

    h.sync_ok().await;

    let expected = only_wanted(&h);
    assert!(expected.len() >= 5, "the filter has visits to sync");
    assert_rows(h.visits(AGENT, USER).await, expected.clone(), "");
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT activity_filter, settled_count FROM sync_state
          WHERE agent_id = $1 AND user_id = $2",
    )
    .bind(AGENT)
    .bind(USER)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(states, [(wanted.clone(), expected.len() as i64 - 1)]);

    h.sim
        .insert_visit_at(AGENT, USER, last + Duration::minutes(1), Some(&other));
    h.sim
        .insert_visit_at(AGENT, USER, last + Duration::minutes(2), Some(&wanted));
    let report = h.sync_ok().await;

    assert_eq!(report.totals().visits_inserted, 1);
    assert_rows(h.visits(AGENT, USER).await, only_wanted(&h), "");
    h.sim.reset_request_counts();
    h.sync_ok().await;
    assert_eq!(h.sim.requests_for(AGENT, USER), 1);
}
