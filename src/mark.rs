//! The high-water mark over the upstream's offset-paginated list, and the walk that moves it.
//!
//! All of the mark's logic lives here, free of I/O: the engine asks [`Walk`] which window to fetch,
//! hands it each page, and gets back what to write and which mark to commit with it.
//!
//! - **The prefix.** Positions `[0, S)` of a pair's ascending list are settled and stored.
//! - **The anchor group.** The visits sharing one `visitAt` that start at `S`. Finding that group
//!   again, preceded by a smaller `visitAt`, tells where `S` is now: the list has no ids and no
//!   "since" filter, and retention purges shift every offset.
//! - **Settled.** `lastOnlineAt <= upstream now - settle_after`. The mark never passes an unsettled
//!   visit (a viewer still online keeps raising it), and moves a whole `visitAt` group at a time.
//! - **Overlap.** Each next window starts at or before the previous window's last tie group, minus
//!   one, and finds that group again; reading pages back to back would skip visits when a purge
//!   lands between two requests.

use chrono::{DateTime, Duration, Utc};

use crate::domain::Entry;

/// How many times one walk may lose its place and start over before it gives up.
const MAX_RESTARTS: u32 = 4;

/// How many times in a row a walk looks further left for a group a purge shifted.
const MAX_STEP_BACKS: u32 = 3;

/// The committed state of one pair's walk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mark {
    /// `S`: how many visits at the head of the ascending list are settled and stored.
    pub settled: i64,
    /// The group at position `S`; `None` exactly when `settled` is 0.
    pub anchor: Option<Anchor>,
}

/// A group of visits sharing one `visitAt`, recorded so it can be found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub visit_at: DateTime<Utc>,
    /// Activity ids of the group's members seen so far. The group may gain members later.
    pub activity_ids: Vec<String>,
}

/// Sort order of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// One request's window over the list: entries `[(page-1)·page_size, page·page_size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub page: i64,
    pub page_size: u32,
    pub order: Order,
}

impl Window {
    /// Position of the window's first entry.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * i64::from(self.page_size)
    }

    /// Position just past the window's last entry.
    pub fn end(&self) -> i64 {
        self.page * i64::from(self.page_size)
    }

    /// The first page of the ascending list.
    pub fn first(max_size: u32) -> Self {
        Window {
            page: 1,
            page_size: max_size,
            order: Order::Asc,
        }
    }

    /// The ascending window that contains position `x` and reaches furthest past it.
    ///
    /// Any page size up to `max_size` works, so try them all: `page = ⌊x/s⌋ + 1` contains `x`,
    /// and the largest `page·s` leaves the most room after `x`. On equal reach the smaller size
    /// wins (fewer entries re-read).
    pub fn covering(x: i64, max_size: u32) -> Self {
        Self::best(x, max_size, |_, end| end)
    }

    /// The ascending window that contains position `x` and balances room on both sides: before
    /// `x`, for visits purged since `known_total` was seen, and after `known_total`, for visits
    /// appended since. A quiet pair then costs one request, and a moderate purge is found in
    /// the same response.
    pub fn around(x: i64, known_total: i64, max_size: u32) -> Self {
        Self::best(x, max_size, |offset, end| {
            (x - offset).min(end - known_total)
        })
    }

    /// The window containing `x` with the highest `score(offset, end)`; ties go to the larger reach.
    fn best(x: i64, max_size: u32, score: impl Fn(i64, i64) -> i64) -> Self {
        let x = x.max(0);
        let mut best: Option<(i64, i64, Window)> = None;
        for s in 1..=i64::from(max_size) {
            let page = x / s + 1;
            let (offset, end) = ((page - 1) * s, page * s);
            let key = (score(offset, end), end);
            if best.as_ref().is_none_or(|(k, e, _)| key > (*k, *e)) {
                best = Some((
                    key.0,
                    key.1,
                    Window {
                        page,
                        page_size: s as u32,
                        order: Order::Asc,
                    },
                ));
            }
        }
        best.map_or(Window::first(max_size), |(_, _, w)| w)
    }
}

/// A fetched page as the mark sees it.
#[derive(Debug, Clone, Copy)]
pub struct PageView<'a> {
    /// `pager.total` of this response.
    pub total: i64,
    pub entries: &'a [Entry],
    /// The upstream's clock when it answered (its `Date` header), when known.
    pub server_date: Option<DateTime<Utc>>,
    /// Our clock when the answer arrived.
    pub local_now: DateTime<Utc>,
}

/// Something that made the walk re-find its place. Recorded in the run's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The anchor was found `by` positions left of where it was: old visits were purged.
    Shifted { by: i64 },
    /// Visits appeared before a position already read (late data): reading again from `from`.
    LateInsert { from: i64 },
    /// The anchor was not in the first window; a `visitAt desc` search found it at `at`.
    Found { at: i64, was: i64 },
    /// The anchor could not be found again: reading again from `from`.
    Lost { from: i64 },
    /// No allowed window holds this tie group whole with the visit before it (a group as large
    /// as a page, or small pages); the walk went on without moving the mark further.
    OversizedTieGroup { at: i64 },
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Shifted { by } => write!(f, "shifted left by {by} (purge upstream)"),
            Recovery::LateInsert { from } => {
                write!(f, "late insert before the mark: re-read from {from}")
            }
            Recovery::Found { at, was } => {
                write!(f, "anchor found by a descending search at {at} (was {was})")
            }
            Recovery::Lost { from } => write!(f, "anchor not found: re-read from {from}"),
            Recovery::OversizedTieGroup { at } => {
                write!(
                    f,
                    "tie group at {at} not readable whole in one window: mark held"
                )
            }
        }
    }
}

/// What to do with a page, decided by [`Walk::on_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Entries `[write_from..]` of the page are to be written; earlier ones were already.
    pub write_from: usize,
    /// List position of `entries[write_from]`; `None` when the page's place in the list is not
    /// known. Its visits are written all the same: rows are keyed by the visits themselves,
    /// only the mark needs positions.
    pub first_position: Option<i64>,
    /// The mark to commit in the same transaction as the page, when it changed.
    pub mark: Option<Mark>,
    /// The next window to fetch, or `None` when the walk reached the end of the list.
    pub next: Option<Window>,
    /// Write this page, then end the run with this error.
    pub give_up: Option<WalkError>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WalkError {
    #[error(
        "the upstream list kept shifting: lost the position {0} times in one run; will retry next run"
    )]
    Unstable(u32),
    #[error("asked for page {asked_page} of size {asked_size}, got {got} items")]
    OversizedPage {
        asked_page: i64,
        asked_size: u32,
        got: usize,
    },
}

/// Where the next window must pick up: the group starting at `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    pos: i64,
    /// The group starting at `pos`, to be found again with the visit before it. `None` at the
    /// head of the list, or when no allowed window can hold that group and its predecessor.
    group: Option<Anchor>,
    /// Without a group: the `visitAt` the entry at `pos - 1` must still have (a weak check: it
    /// lies inside a tie group, so the mark is frozen meanwhile), and where that group starts.
    /// `None` with no group: the position is taken on trust.
    after: Option<(DateTime<Utc>, i64)>,
}

/// One sync of one pair: a state machine fed with pages.
#[derive(Debug)]
pub struct Walk {
    committed: Mark,
    /// The committed mark changed without a page moving it (a shift): commit it with the next page.
    mark_dirty: bool,
    cursor: Cursor,
    /// The cursor is the committed mark being verified, not an overlap inside this walk.
    verifying_mark: bool,
    /// The mark stays at or before this position: the first visit seen in this walk that is not
    /// settled, or the first tie group that could not be read whole in one response (with
    /// shuffled ties, reading a group in two parts can miss a member).
    hold: Option<i64>,
    settle_after: Duration,
    max_size: u32,
    /// `pager.total` when the mark was last written, to aim the first window.
    known_total: Option<i64>,
    /// A `visitAt desc` search for the anchor already ran in this walk.
    searched_desc: bool,
    /// The newest `lastOnlineAt` read in this walk.
    newest_seen: Option<DateTime<Utc>>,
    restarts: u32,
    /// Consecutive windows moved left to find a cursor group shifted by a purge mid-walk.
    step_backs: u32,
    /// `pager.total` of the previous page.
    last_total: Option<i64>,
    recoveries: Vec<Recovery>,
}

impl Walk {
    pub fn new(
        mark: Mark,
        known_total: Option<i64>,
        settle_after: Duration,
        max_size: u32,
    ) -> Self {
        let cursor = Cursor {
            pos: mark.settled,
            group: mark.anchor.clone(),
            after: None,
        };
        Walk {
            committed: mark,
            mark_dirty: false,
            cursor,
            verifying_mark: true,
            hold: None,
            settle_after,
            max_size: max_size.max(1),
            known_total,
            searched_desc: false,
            newest_seen: None,
            restarts: 0,
            step_backs: 0,
            last_total: None,
            recoveries: Vec::new(),
        }
    }

    /// The first window: it holds the visit just before the anchor group and reaches as far past
    /// it as any page size allows, so a quiet pair costs one request.
    pub fn first_window(&self) -> Window {
        match (self.known_total, self.cursor.pos) {
            (Some(total), pos) if pos > 0 && self.cursor.group.is_some() => {
                Window::around(pos - 1, total, self.max_size)
            }
            _ => self.window_for_cursor(),
        }
    }

    /// The mark as committed so far (or as loaded).
    pub fn mark(&self) -> &Mark {
        &self.committed
    }

    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    fn window_for_cursor(&self) -> Window {
        let c = &self.cursor;
        match (c.pos, c.group.is_some() || c.after.is_some()) {
            (0, _) => Window::first(self.max_size),
            (pos, true) => Window::covering(pos - 1, self.max_size),
            (pos, false) => Window::covering(pos, self.max_size),
        }
    }

    /// Takes the page fetched for `window` and decides what to write, what to commit and what to
    /// fetch next.
    pub fn on_page(&mut self, window: &Window, page: PageView<'_>) -> Result<Decision, WalkError> {
        let entries = page.entries;
        if entries.len() > window.page_size as usize {
            return Err(WalkError::OversizedPage {
                asked_page: window.page,
                asked_size: window.page_size,
                got: entries.len(),
            });
        }
        if window.order == Order::Desc {
            return Ok(self.on_desc_page(window, page));
        }
        let offset = window.offset();
        let start = match locate(&self.cursor, offset, entries) {
            Located::At(i) => i,
            Located::Right => {
                let from = if self.verifying_mark {
                    0
                } else {
                    self.committed.settled
                };
                self.recoveries.push(Recovery::LateInsert { from });
                return self.restart();
            }
            Located::NotFound
                if self.verifying_mark
                    && self.committed.anchor.is_some()
                    && !self.searched_desc =>
            {
                // Purged past the window, most likely: the anchor sits near the newest end, so
                // a descending search finds it in a request or two.
                self.searched_desc = true;
                return Ok(Decision {
                    write_from: 0,
                    first_position: None,
                    mark: None,
                    give_up: None,
                    next: Some(Window {
                        page: 1,
                        page_size: self.max_size,
                        order: Order::Desc,
                    }),
                });
            }
            Located::NotFound
                if !self.verifying_mark
                    && self.step_backs < MAX_STEP_BACKS
                    && self.cursor.pos > 0
                    && entries
                        .first()
                        .and_then(Entry::visit_at)
                        .zip(self.cursor.group.as_ref())
                        .is_some_and(|(first, group)| first >= group.visit_at) =>
            {
                // The page starts at or after the group: old visits were purged since the last
                // request. Look a little further left (the drop in `total` is a lower bound on
                // the shift), instead of walking again from the mark.
                let drop = self.last_total.map_or(1, |t| (t - page.total).max(1));
                let back = drop.saturating_mul(2 << self.step_backs);
                self.step_backs += 1;
                self.last_total = Some(page.total);
                let x = (self.cursor.pos - 1 - back).max(0);
                return Ok(Decision {
                    write_from: 0,
                    first_position: None,
                    mark: None,
                    give_up: None,
                    next: Some(Window::covering(x, self.max_size)),
                });
            }
            Located::NotFound => {
                let from = if self.verifying_mark {
                    0
                } else {
                    self.committed.settled
                };
                self.recoveries.push(Recovery::Lost { from });
                return self.restart();
            }
        };
        self.step_backs = 0;
        self.last_total = Some(page.total);
        let found_at = offset + start as i64;
        // Continuing by the last entry's visitAt: write that entry's whole tie group as this
        // response shows it, since shuffled ties may have changed places since the last one.
        let mut write_from = start;
        if let Some((visit_at, _)) = self.cursor.after {
            while write_from > 0 && entries[write_from - 1].visit_at() == Some(visit_at) {
                write_from -= 1;
            }
        }
        if found_at < self.cursor.pos {
            self.shift_left(self.cursor.pos - found_at);
        }
        self.verifying_mark = false;

        let cutoff = self.upstream_now(&page, start) - self.settle_after;
        for (j, entry) in entries.iter().enumerate().skip(start) {
            if !is_settled(entry, cutoff) {
                self.hold_at(offset + j as i64);
            }
        }

        let mut mark = None;
        let limit = self.hold.unwrap_or(i64::MAX);
        let lowest = (self.committed.settled + 1).max(offset + 1);
        if let Some(b) = last_boundary(entries, offset, lowest, limit) {
            self.committed = Mark {
                settled: b,
                anchor: Some(group_at(entries, (b - offset) as usize)),
            };
            self.mark_dirty = true;
        }
        if self.mark_dirty {
            mark = Some(self.committed.clone());
            self.mark_dirty = false;
        }

        let seen_end = offset + entries.len() as i64;
        let next = if entries.len() < window.page_size as usize || seen_end >= page.total {
            None
        } else {
            Some(self.advance_cursor(entries, offset, found_at))
        };
        Ok(Decision {
            write_from,
            first_position: Some(offset + write_from as i64),
            mark,
            next,
            give_up: None,
        })
    }

    /// A page of the descending search for the anchor group lost from the first window.
    fn on_desc_page(&mut self, window: &Window, page: PageView<'_>) -> Decision {
        let entries = page.entries;
        let offset = window.offset();
        let anchor = self
            .committed
            .anchor
            .clone()
            .expect("a descending search runs only for a mark with an anchor");
        let t = anchor.visit_at;
        // Written (its visits are real), but a descending page has no ascending positions.
        let nothing = Decision {
            write_from: 0,
            first_position: None,
            mark: None,
            next: None,
            give_up: None,
        };
        if let Some(j) = entries
            .iter()
            .position(|e| e.visit_at().is_some_and(|v| v < t))
        {
            // The first older visit, counted from the newest end of one response: its total and
            // offset agree, so appends between requests cannot skew the position.
            let start = page.total - (offset + j as i64);
            if start > self.committed.settled {
                // More visits before the anchor than before: late data, not a purge. They sit
                // somewhere in the prefix, so read it all again.
                return Decision {
                    next: Some(self.read_from_head(Recovery::LateInsert { from: 0 })),
                    ..nothing
                };
            }
            self.recoveries.push(Recovery::Found {
                at: start,
                was: self.committed.settled,
            });
            self.committed.settled = start;
            self.mark_dirty = true;
            self.cursor = Cursor {
                pos: start,
                group: Some(anchor),
                after: None,
            };
            self.hold = None;
            return Decision {
                next: Some(Window::around(start - 1, page.total, self.max_size)),
                ..nothing
            };
        }
        let at_oldest = entries.len() < window.page_size as usize
            || offset + entries.len() as i64 >= page.total;
        if at_oldest {
            // Nothing older than the anchor is left: the whole prefix was purged, maybe the
            // anchor group too. Read everything that remains.
            return Decision {
                next: Some(self.read_from_head(Recovery::Lost { from: 0 })),
                ..nothing
            };
        }
        Decision {
            next: Some(Window {
                page: window.page + 1,
                ..*window
            }),
            ..nothing
        }
    }

    /// Moves the cursor to the page's last tie group, so the next window re-reads it whole.
    fn advance_cursor(&mut self, entries: &[Entry], offset: i64, found_at: i64) -> Window {
        let seen_end = offset + entries.len() as i64;
        let lowest = (found_at + 1).max(offset + 1);
        let last_group = last_boundary(entries, offset, lowest, i64::MAX);
        // The last group first; when no window holds it with its predecessor and still reaches
        // further (small pages line up badly), an earlier group, re-reading a little more.
        let mut limit = i64::MAX;
        while let Some(c) = last_boundary(entries, offset, lowest, limit) {
            let next = Window::covering(c - 1, self.max_size);
            if next.end() > seen_end {
                self.cursor = Cursor {
                    pos: c,
                    group: Some(group_at(entries, (c - offset) as usize)),
                    after: None,
                };
                return next;
            }
            limit = c - 1;
        }
        // No allowed window holds the last group with the visit before it (a group as large as a
        // page, or small pages that do not line up). Any check left lies inside one tie group,
        // where a purge between two requests goes unnoticed, so the mark stays where it is for
        // the rest of this walk; the walk goes on to write what it reads.
        let group_from = last_group.unwrap_or(found_at);
        tracing::warn!(
            at = group_from,
            "tie group cannot be re-read whole in one window: the mark waits for the next sync"
        );
        self.recoveries
            .push(Recovery::OversizedTieGroup { at: group_from });
        self.hold_at(self.committed.settled);
        if let Some(last) = entries.last().and_then(Entry::visit_at) {
            let next = Window::covering(seen_end - 1, self.max_size);
            if next.end() > seen_end {
                self.cursor = Cursor {
                    pos: seen_end,
                    group: None,
                    after: Some((last, group_from)),
                };
                return next;
            }
        }
        self.cursor = Cursor {
            pos: seen_end,
            group: None,
            after: None,
        };
        self.window_for_cursor()
    }

    /// "Now" on the platform's clock, which `lastOnlineAt` is written with: its `Date` header.
    /// Without one, the newest `lastOnlineAt` seen in this walk bounds our clock, so a local
    /// clock running ahead cannot settle a visit early.
    fn upstream_now(&mut self, page: &PageView<'_>, start: usize) -> DateTime<Utc> {
        let newest = page.entries[start..]
            .iter()
            .filter_map(Entry::last_online_at)
            .max();
        self.newest_seen = self.newest_seen.max(newest);
        match (page.server_date, self.newest_seen) {
            (Some(date), _) => date,
            (None, Some(newest)) => newest.min(page.local_now),
            (None, None) => page.local_now,
        }
    }

    /// Forgets the mark and walks the whole list again from position 0.
    fn read_from_head(&mut self, recovery: Recovery) -> Window {
        self.recoveries.push(recovery);
        self.committed = Mark::default();
        self.mark_dirty = true;
        self.cursor = Cursor {
            pos: 0,
            group: None,
            after: None,
        };
        self.hold = None;
        Window::first(self.max_size)
    }

    fn hold_at(&mut self, pos: i64) {
        self.hold = Some(self.hold.map_or(pos, |h| h.min(pos)));
    }

    /// Purged visits moved everything left by `d`; keep positions in the new coordinates.
    fn shift_left(&mut self, d: i64) {
        self.recoveries.push(Recovery::Shifted { by: d });
        if self.committed.settled > d {
            self.committed.settled -= d;
        } else {
            // The purge reached the anchor group itself: nothing left before the cursor.
            self.committed = Mark::default();
        }
        self.mark_dirty = true;
        self.hold = self.hold.map(|u| (u - d).max(0));
    }

    /// Lost the place: a mid-walk cursor falls back to the committed mark, the mark to the head.
    fn restart(&mut self) -> Result<Decision, WalkError> {
        // Whatever happens to the walk, the visits of this page are written.
        let lost_page = Decision {
            write_from: 0,
            first_position: None,
            mark: None,
            next: None,
            give_up: None,
        };
        self.restarts += 1;
        if self.restarts > MAX_RESTARTS {
            return Ok(Decision {
                give_up: Some(WalkError::Unstable(self.restarts)),
                ..lost_page
            });
        }
        if self.verifying_mark {
            self.committed = Mark::default();
            self.mark_dirty = true;
        }
        self.cursor = Cursor {
            pos: self.committed.settled,
            group: self.committed.anchor.clone(),
            after: None,
        };
        self.verifying_mark = true;
        self.hold = None;
        Ok(Decision {
            next: Some(self.window_for_cursor()),
            ..lost_page
        })
    }
}

enum Located {
    /// The cursor's position is at this index of the page.
    At(usize),
    /// The cursor's group sits further right than expected: visits were inserted before it.
    Right,
    NotFound,
}

/// Finds the cursor's position in a page at `offset`: the first entry with `visitAt` at or after
/// the group's, preceded by a smaller one. The list is sorted, so that place is unique, and it
/// stays right even if the group itself lost members.
fn locate(cursor: &Cursor, offset: i64, entries: &[Entry]) -> Located {
    let Some(group) = &cursor.group else {
        let i = cursor.pos - offset;
        let in_page = (0..=entries.len() as i64).contains(&i);
        return match cursor.after {
            _ if !in_page => Located::NotFound,
            None => Located::At(i as usize),
            Some((visit_at, _))
                if i > 0 && entries[i as usize - 1].visit_at() == Some(visit_at) =>
            {
                Located::At(i as usize)
            }
            Some(_) => Located::NotFound,
        };
    };
    let t = group.visit_at;
    let Some(i) = entries
        .iter()
        .position(|e| e.visit_at().is_some_and(|v| v >= t))
    else {
        return Located::NotFound;
    };
    let boundary_seen = if i == 0 {
        offset == 0
    } else {
        entries[i - 1].visit_at().is_some_and(|v| v < t)
    };
    if !boundary_seen {
        return Located::NotFound;
    }
    let found = offset + i as i64;
    if found > cursor.pos {
        return Located::Right;
    }
    if entries[i].visit_at() == Some(t) {
        let members: Vec<&str> = entries[i..]
            .iter()
            .take_while(|e| e.visit_at() == Some(t))
            .filter_map(Entry::activity_id)
            .collect();
        let missing = group
            .activity_ids
            .iter()
            .filter(|id| !members.contains(&id.as_str()))
            .count();
        if missing > 0 {
            tracing::debug!(missing, "anchor group lost members upstream");
        }
    }
    Located::At(i)
}

fn is_settled(entry: &Entry, cutoff: DateTime<Utc>) -> bool {
    match entry.last_online_at() {
        Some(t) => t <= cutoff,
        // A reject whose lastOnlineAt cannot be read will not become readable by waiting.
        None => matches!(entry, Entry::Rejected { .. }),
    }
}

/// The largest group boundary `b` with `lowest <= b <= limit` inside the page: entries `b-1`
/// and `b` both have a readable `visitAt`, in strict order.
fn last_boundary(entries: &[Entry], offset: i64, lowest: i64, limit: i64) -> Option<i64> {
    (1..entries.len()).rev().find_map(|j| {
        let b = offset + j as i64;
        if b < lowest || b > limit {
            return None;
        }
        match (entries[j - 1].visit_at(), entries[j].visit_at()) {
            (Some(a), Some(c)) if a < c => Some(b),
            _ => None,
        }
    })
}

/// The group starting at index `i`, as far as this page shows it.
fn group_at(entries: &[Entry], i: usize) -> Anchor {
    let visit_at = entries[i]
        .visit_at()
        .expect("boundaries have readable visitAt");
    Anchor {
        visit_at,
        activity_ids: entries[i..]
            .iter()
            .take_while(|e| e.visit_at() == Some(visit_at))
            .filter_map(|e| e.activity_id().map(str::to_owned))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Visit;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_600_000_000 + secs, 0).unwrap()
    }

    fn visit(secs: i64, activity: &str, open: bool) -> Entry {
        Entry::Visit {
            visit: Visit {
                agent_id: 1,
                user_id: 2,
                activity_id: activity.to_owned(),
                visit_at: at(secs),
                last_online_at: if open { now() } else { at(secs + 60) },
                duration_minutes: 1,
                extra: Default::default(),
            },
            activity: None,
        }
    }

    /// A list of `n` settled visits one second apart.
    fn list(n: i64) -> Vec<Entry> {
        (0..n).map(|i| visit(i * 10, "a", false)).collect()
    }

    fn now() -> DateTime<Utc> {
        at(100_000_000)
    }

    /// Runs a whole walk over a static list; returns (requests, final mark, written positions).
    fn run(
        list: &[Entry],
        mark: Mark,
        known_total: Option<i64>,
        max: u32,
    ) -> (usize, Mark, Vec<i64>) {
        let mut walk = Walk::new(mark, known_total, Duration::hours(1), max);
        let mut window = Some(walk.first_window());
        let (mut requests, mut written) = (0, Vec::new());
        while let Some(w) = window {
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
    fn covering_window_holds_the_position_and_reaches_furthest() {
        for x in [0, 1, 998, 999, 1000, 1001, 54_321, 999_999] {
            let w = Window::covering(x, 1000);
            assert!(w.offset() <= x && x < w.end(), "{x}: {w:?}");
            assert!(w.end() > x);
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
}
