//! The walk over static and changing lists, with no I/O.

use super::*;
use crate::domain::{Visit, VisitParts};
use chrono::TimeZone;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_600_000_000 + secs, 0).unwrap()
}

fn visit(secs: i64, activity: &str, open: bool) -> Entry {
    Entry::Visit {
        visit: Visit::new(
            VisitParts {
                agent_id: 1,
                user_id: 2,
                activity_id: activity.to_owned(),
                visit_at: at(secs),
                last_online_at: if open { now() } else { at(secs + 60) },
                duration_minutes: 1,
                extra: Default::default(),
            },
            now(),
        )
        .expect("a valid test visit"),
        activity: None,
    }
}

/// A list of `n` settled visits ten seconds apart.
fn list(n: i64) -> Vec<Entry> {
    (0..n).map(|i| visit(i * 10, "a", false)).collect()
}

fn now() -> DateTime<Utc> {
    at(100_000_000)
}

/// Runs a whole walk over a static list; returns (requests, final mark, written positions).
fn run(list: &[Entry], mark: Mark, known_total: Option<i64>, max: u32) -> (usize, Mark, Vec<i64>) {
    run_guessing(list, mark, known_total, max, false)
}

/// Like [`run`]; with `guess`, each next page is the one fetching ahead would have fetched
/// ([`Window::ahead`] of the previous window) whenever the walk accepts it.
fn run_guessing(
    list: &[Entry],
    mark: Mark,
    known_total: Option<i64>,
    max: u32,
    guess: bool,
) -> (usize, Mark, Vec<i64>) {
    let mut walk = Walk::new(mark, known_total, Duration::hours(1), max);
    let mut window = Some(walk.first_window());
    let (mut requests, mut written) = (0, Vec::new());
    let mut previous: Option<Window> = None;
    while let Some(mut w) = window {
        if guess
            && let Some(g) = previous.and_then(|p| p.ahead(max))
            && walk.accepts(&g)
        {
            w = g;
        }
        previous = Some(w);
        requests += 1;
        assert!(requests < 10_000, "walk does not end");
        let lo = (w.offset() as usize).min(list.len());
        let hi = (w.end() as usize).min(list.len());
        let page: Vec<Entry> = match w.order {
            Order::Asc => list[lo..hi].to_vec(),
            Order::Desc => list.iter().rev().skip(lo).take(hi - lo).cloned().collect(),
        };
        let d = walk
            .on_page(
                &w,
                PageView {
                    total: list.len() as i64,
                    entries: &page,
                    server_date: Some(now()),
                    local_now: now(),
                },
            )
            .unwrap();
        if let Some(first) = d.first_position {
            written.extend((0..(hi - lo - d.write_from) as i64).map(|k| first + k));
        }
        assert!(d.give_up.is_none(), "{:?}", d.give_up);
        window = d.next;
    }
    (requests, walk.mark().clone(), written)
}

#[test]
fn windows_fetched_ahead_read_everything_and_move_the_mark_as_far() {
    // Ties at page boundaries and elsewhere, and an open visit near the end.
    let mut l = list(2600);
    for i in [998usize, 999, 1000, 1500, 1501, 1502, 1996, 1997] {
        l[i] = visit(
            l[i - 1].visit_at().unwrap().timestamp() - 1_600_000_000,
            &format!("t{i}"),
            false,
        );
    }
    l[2590] = visit(25_900, "open", true);
    for max in [10, 100, 1000] {
        let (_, plain, _) = run(&l, Mark::default(), None, max);
        let (_, guessed, written) = run_guessing(&l, Mark::default(), None, max, true);
        let mut uniq = written;
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq,
            (0..2600).collect::<Vec<_>>(),
            "max {max}: every position read"
        );
        assert_eq!(guessed, plain, "max {max}: the same mark");
    }
}

#[test]
fn a_window_past_the_place_to_verify_is_not_accepted() {
    let l = list(3000);
    let mut walk = Walk::new(Mark::default(), None, Duration::hours(1), 1000);
    let w = walk.first_window();
    assert!(!walk.accepts(&w.ahead(1000).unwrap()), "nothing read yet");
    let d = walk
        .on_page(
            &w,
            PageView {
                total: 3000,
                entries: &l[..1000],
                server_date: Some(now()),
                local_now: now(),
            },
        )
        .unwrap();
    let next = d.next.unwrap();

    assert!(walk.accepts(&next));
    assert!(walk.accepts(&w.ahead(1000).unwrap()), "the guess overlaps");
    let past = Window {
        page: 2,
        page_size: 1000,
        order: Order::Asc,
    };
    assert!(
        !walk.accepts(&past),
        "starts after the visit before the cursor's group"
    );
    let behind = Window {
        page: 1,
        page_size: 1000,
        order: Order::Asc,
    };
    assert!(
        !walk.accepts(&behind),
        "reaches no further than what was read"
    );
}

#[test]
fn a_guessed_page_from_a_shifted_list_does_not_verify() {
    let l = list(3000);
    let mut walk = Walk::new(Mark::default(), None, Duration::hours(1), 1000);
    let w = walk.first_window();
    walk.on_page(
        &w,
        PageView {
            total: 3000,
            entries: &l[..1000],
            server_date: Some(now()),
            local_now: now(),
        },
    )
    .unwrap();
    let guess = w.ahead(1000).unwrap();
    let page = |list: &[Entry]| {
        list[guess.offset() as usize..(guess.end() as usize).min(list.len())].to_vec()
    };

    assert!(walk.verifies(&guess, &page(&l)), "the list as it was");
    // 5 old visits purged before the guess was answered: its place moved left.
    assert!(!walk.verifies(&guess, &page(&l[5..])));
    // 5 late visits inserted at the head: its place moved right.
    let mut late: Vec<Entry> = (0..5)
        .map(|i| visit(i - 100, &format!("l{i}"), false))
        .collect();
    late.extend_from_slice(&l);
    assert!(!walk.verifies(&guess, &page(&late)));
}

#[test]
fn covering_window_holds_the_position_and_reaches_furthest() {
    for x in [0, 1, 998, 999, 1000, 1001, 54_321, 999_999] {
        let w = Window::covering(x, 1000);
        assert!(w.offset() <= x && x < w.end(), "{x}: {w:?}");
        let furthest = (1..=1000).map(|s| (x / s + 1) * s).max().unwrap();
        assert_eq!(w.end(), furthest, "{x}: no page size reaches further");
    }
    assert_eq!(Window::covering(999, 1000).end(), 1998);
}

#[test]
fn first_sync_reads_everything_once_and_keeps_the_last_group_as_anchor() {
    for n in [0, 1, 999, 1000, 1001, 2500] {
        let l = list(n);
        let (_, mark, written) = run(&l, Mark::default(), None, 1000);
        let mut uniq = written.clone();
        uniq.dedup();
        assert_eq!(uniq, (0..n).collect::<Vec<_>>(), "n = {n}");
        assert_eq!(mark.settled, (n - 1).max(0), "n = {n}");
    }
}

#[test]
fn quiet_pair_costs_one_request() {
    for n in [1, 2, 999, 1000, 1001, 1999, 2000, 2500, 123_457] {
        let l = list(n);
        let (_, mark, _) = run(&l, Mark::default(), None, 1000);
        let (requests, again, written) = run(&l, mark.clone(), Some(n), 1000);
        assert_eq!(requests, 1, "n = {n}");
        assert_eq!(again, mark);
        assert_eq!(
            written,
            vec![n - 1],
            "only the anchor group is re-read, n = {n}"
        );
    }
}

#[test]
fn tiny_pages_write_everything_even_when_the_mark_must_wait() {
    // Pages of 5 often cannot line up around a group: the walk still reads and writes
    // everything from the mark on, and the mark never passes what it did not verify.
    for n in [2, 6, 21, 37, 100] {
        let l = list(n);
        let (mut mark, mut known) = (Mark::default(), None);
        for _ in 0..3 {
            let (_, next, written) = run(&l, mark.clone(), known, 5);
            let mut uniq = written;
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq, (mark.settled..n).collect::<Vec<_>>(), "n = {n}");
            assert!(mark.settled <= next.settled && next.settled < n.max(1));
            (mark, known) = (next, Some(n));
        }
    }
}

#[test]
fn ordinary_page_sizes_never_hold_the_mark_without_ties() {
    for (n, size) in [
        (1_000, 25),
        (3_001, 37),
        (5_000, 50),
        (12_345, 100),
        (20_000, 997),
    ] {
        let l = list(n);
        let (_, mark, _) = run(&l, Mark::default(), None, size);
        assert_eq!(mark.settled, n - 1, "n = {n}, page size {size}");
        let (requests, _, _) = run(&l, mark, Some(n), size);
        assert_eq!(requests, 1, "n = {n}, page size {size}: quiet");
    }
}

#[test]
fn without_a_date_header_a_fast_local_clock_cannot_settle_recent_visits() {
    // 40 visits 10 s apart, each online for 60 s; our clock is a year ahead.
    let l = list(40);
    let mut walk = Walk::new(Mark::default(), None, Duration::seconds(100), 1000);
    let window = walk.first_window();
    walk.on_page(
        &window,
        PageView {
            total: 40,
            entries: &l,
            server_date: None,
            local_now: at(365 * 86_400),
        },
    )
    .unwrap();
    // The newest lastOnlineAt is at(450): only visits last online by at(350) are settled.
    let settled_until = walk.mark().anchor.as_ref().unwrap().visit_at;
    assert_eq!(walk.mark().settled, 30);
    assert_eq!(settled_until, at(300));
}

#[test]
fn mark_stops_before_an_open_visit() {
    let mut l = list(50);
    l[20] = visit(200, "a", true);
    let (_, mark, _) = run(&l, Mark::default(), None, 7);
    assert_eq!(mark.settled, 20);
    assert_eq!(mark.anchor.unwrap().visit_at, at(200));
}

#[test]
fn purge_before_the_mark_shifts_it_without_a_restart() {
    let l = list(3000);
    let (_, mark, _) = run(&l, Mark::default(), None, 1000);
    let purged = &l[10..];
    let (requests, again, written) = run(purged, mark, Some(3000), 1000);
    assert_eq!(requests, 1);
    assert_eq!(again.settled, 2989);
    assert_eq!(written, vec![2989]);
}

#[test]
fn purge_past_the_first_window_is_found_by_a_descending_search() {
    let l = list(5000);
    let (_, mark, _) = run(&l, Mark::default(), None, 1000);
    let purged = &l[2500..];
    let (requests, again, written) = run(purged, mark, Some(5000), 1000);
    assert_eq!(
        requests, 3,
        "first window, one descending page, the window around the anchor"
    );
    assert_eq!(again.settled, 2499);
    assert_eq!(written, vec![2499]);
}

#[test]
fn a_purge_between_two_pages_of_a_walk_is_found_by_stepping_back() {
    let l = list(3000);
    let mut walk = Walk::new(Mark::default(), None, Duration::hours(1), 1000);
    let view = |entries: &[Entry], total: usize| PageView {
        total: total as i64,
        entries: entries.to_vec().leak(),
        server_date: Some(now()),
        local_now: now(),
    };
    let w1 = walk.first_window();
    let d1 = walk.on_page(&w1, view(&l[..1000], 3000)).unwrap();
    // 7 of the oldest visits are purged before the second request.
    let purged = &l[7..];
    let w2 = d1.next.unwrap();
    let page2 = &purged[w2.offset() as usize..(w2.end() as usize).min(purged.len())];
    let d2 = walk.on_page(&w2, view(page2, purged.len())).unwrap();
    let w3 = d2.next.unwrap();
    assert!(w3.offset() < w2.offset(), "looked further left: {w3:?}");
    let page3 = &purged[w3.offset() as usize..(w3.end() as usize).min(purged.len())];
    let d3 = walk.on_page(&w3, view(page3, purged.len())).unwrap();
    assert_eq!(
        d3.first_position,
        Some(999 - 7),
        "the group found 7 to the left"
    );
    assert_eq!(walk.recoveries(), &[Recovery::Shifted { by: 7 }]);
}

#[test]
fn a_purge_inside_a_tie_group_between_two_small_pages_never_lets_the_mark_skip() {
    // visitAt 2,4,4,5,6×6,9,10,…; the visit at position 7 is still open.
    let times = [2, 4, 4, 5, 6, 6, 6, 6, 6, 6, 9, 10, 11, 12, 13, 14, 15, 16];
    let l: Vec<Entry> = times
        .iter()
        .enumerate()
        .map(|(i, t)| visit(*t, &format!("a{i}"), i == 7))
        .collect();
    let mut walk = Walk::new(Mark::default(), None, Duration::hours(1), 7);
    let mut window = Some(walk.first_window());
    let (mut requests, mut written) = (0, Vec::new());
    let mut current = l.clone();
    while let Some(w) = window {
        requests += 1;
        if requests == 2 {
            current = l[3..].to_vec(); // the 3 oldest are purged between the requests
        }
        let lo = (w.offset() as usize).min(current.len());
        let hi = (w.end() as usize).min(current.len());
        let d = walk
            .on_page(
                &w,
                PageView {
                    total: current.len() as i64,
                    entries: &current[lo..hi],
                    server_date: Some(now()),
                    local_now: now(),
                },
            )
            .unwrap();
        written.extend(current[lo + d.write_from..hi].iter().cloned());
        window = d.next;
        assert!(requests < 100);
    }
    let settled = walk.mark().settled as usize;
    let open_at = current
        .iter()
        .position(|e| e.last_online_at() == Some(now()))
        .unwrap();
    assert!(
        settled <= open_at,
        "the mark passed the open visit: {settled} > {open_at}"
    );
    for e in &current[..settled] {
        assert!(
            written.contains(e),
            "the mark passed {:?}, never written",
            e.activity_id()
        );
    }
}

#[test]
fn a_large_backfill_before_the_mark_is_read_not_skipped() {
    let l = list(3000);
    let (_, mark, _) = run(&l, Mark::default(), None, 1000);
    // 800 late visits, older than any synced one, land at the head of the list.
    let mut late: Vec<Entry> = (0..800)
        .map(|i| visit(i - 1000, &format!("late{i}"), false))
        .collect();
    late.extend_from_slice(&l);
    let (_, again, written) = run(&late, mark, Some(3000), 1000);
    let mut uniq = written;
    uniq.sort();
    uniq.dedup();
    assert!(
        (0..800).all(|p| uniq.binary_search(&p).is_ok()),
        "every late visit read"
    );
    assert_eq!(again.settled, 3799);
}

#[test]
fn purge_larger_than_the_window_reads_again_from_the_head() {
    let l = list(30);
    let (_, mark, _) = run(&l, Mark::default(), None, 10);
    let mut purged = l[29..].to_vec();
    purged.extend((0..5).map(|i| visit(1000 + i, "b", false)));
    let (_, again, written) = run(&purged, mark, Some(30), 10);
    let mut uniq = written;
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq, (0..6).collect::<Vec<_>>());
    assert_eq!(again.settled, 5);
}

#[test]
fn ties_across_a_page_boundary_are_read_whole() {
    let mut l = list(25);
    for (i, e) in l.iter_mut().enumerate().skip(8).take(5) {
        *e = visit(85, &format!("t{i}"), false);
    }
    let (_, _, written) = run(&l, Mark::default(), None, 10);
    let mut uniq = written;
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq, (0..25).collect::<Vec<_>>());
}

#[test]
fn a_tie_group_larger_than_a_page_still_ends() {
    let mut l = list(40);
    for (i, e) in l.iter_mut().enumerate().skip(5).take(25) {
        *e = visit(55, &format!("t{i}"), false);
    }
    let (_, _, written) = run(&l, Mark::default(), None, 10);
    let mut uniq = written;
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq, (0..40).collect::<Vec<_>>());
}
