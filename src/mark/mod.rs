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
//! - **Fetching ahead.** The engine may hand the walk a page of a window it guessed
//!   ([`Window::ahead`]) instead of the one [`Decision::next`] named; [`Walk::accepts`] and
//!   [`Walk::verifies`] say when such a page can stand in for it, so the rules above hold as ever.
//!
//! `window.rs` chooses windows, `locate.rs` finds the walk's place in a page, `tests.rs` walks
//! static and changing lists.

mod locate;
#[cfg(test)]
mod tests;
mod window;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{Entry, Mark, Order, Window};
use locate::{Cursor, Located, group_at, is_settled, last_boundary, locate};

/// How many times one walk may lose its place and start over before it gives up.
const MAX_RESTARTS: u32 = 4;

/// How many times in a row a walk looks further left for a group a purge shifted.
const MAX_STEP_BACKS: u32 = 3;

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

impl Decision {
    /// A page whose place in the list is not known (or not trusted): its visits are written all
    /// the same, with no positions and no mark, and the walk goes on with `next`.
    fn unplaced(next: Option<Window>) -> Self {
        Decision {
            write_from: 0,
            first_position: None,
            mark: None,
            next,
            give_up: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WalkError {
    #[error(
        "the upstream list kept shifting: lost the position {} in one run; will retry next run",
        crate::plural::plural(*.0, "time", "times")
    )]
    Unstable(u32),
    #[error(
        "asked for page {asked_page} of size {asked_size}, got {}",
        crate::plural::plural(*got, "item", "items")
    )]
    OversizedPage {
        asked_page: i64,
        asked_size: u32,
        got: usize,
    },
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
    /// Position just past the last ascending page read, once one was placed.
    read_to: Option<i64>,
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
            read_to: None,
            recoveries: Vec::new(),
        }
    }

    /// Whether a page of `window` can stand in for the one the last [`Decision::next`] named,
    /// so that pages fetched ahead need not match the walk's choice exactly. It must start at
    /// or before the place the walk has to find again (the visit before the cursor's group),
    /// and reach past what was read. Its page is then checked like any other: a group not
    /// found where expected is a recovery, never a skip.
    pub fn accepts(&self, window: &Window) -> bool {
        self.might_accept(window)
    }

    /// Whether the page of a window fetched ahead (one [`Walk::accepts`] took) holds the
    /// place the walk must find again exactly where the walk expects it. A guessed page
    /// fetched before or after a purge or a late insert that the page before it did not see
    /// would otherwise read as a recovery; such a page is set aside instead, and the walk's own
    /// window fetched.
    pub fn verifies(&self, window: &Window, entries: &[Entry]) -> bool {
        self.might_accept(window)
            && matches!(
                locate(&self.cursor, window.offset(), entries),
                Located::At(i) if window.offset() + i as i64 == self.cursor.pos
            )
    }

    fn might_accept(&self, window: &Window) -> bool {
        let Some(read_to) = self.read_to else {
            return false;
        };
        if window.order != Order::Asc || self.verifying_mark {
            return false;
        }
        let c = &self.cursor;
        let must_hold = if c.group.is_some() || c.after.is_some() {
            c.pos - 1
        } else {
            c.pos
        };
        window.offset() <= must_hold.max(0) && window.end() > read_to
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
            Located::InsertedBefore => {
                let from = self.restart_from();
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
                return Ok(Decision::unplaced(Some(Window {
                    page: 1,
                    page_size: self.max_size,
                    order: Order::Desc,
                })));
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
                return Ok(Decision::unplaced(Some(Window::covering(x, self.max_size))));
            }
            Located::NotFound => {
                let from = self.restart_from();
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

        // settings refuse a settle_after this large; past the start of time, nothing settles.
        let cutoff = self
            .upstream_now(&page, start)
            .checked_sub_signed(self.settle_after)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
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
        self.read_to = Some(seen_end);
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
                return Decision::unplaced(Some(
                    self.read_from_head(Recovery::LateInsert { from: 0 }),
                ));
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
            return Decision::unplaced(Some(Window::around(start - 1, page.total, self.max_size)));
        }
        let at_oldest = entries.len() < window.page_size as usize
            || offset + entries.len() as i64 >= page.total;
        if at_oldest {
            // Nothing older than the anchor is left: the whole prefix was purged, maybe the
            // anchor group too. Read everything that remains.
            return Decision::unplaced(Some(self.read_from_head(Recovery::Lost { from: 0 })));
        }
        Decision::unplaced(Some(Window {
            page: window.page + 1,
            ..*window
        }))
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

    /// Where [`Walk::restart`] reads again from: the head when the mark itself could not be
    /// verified, else the committed mark.
    fn restart_from(&self) -> i64 {
        if self.verifying_mark {
            0
        } else {
            self.committed.settled
        }
    }

    /// Lost the place: a mid-walk cursor falls back to the committed mark, the mark to the head.
    fn restart(&mut self) -> Result<Decision, WalkError> {
        // Whatever happens to the walk, the visits of this page are written.
        self.restarts += 1;
        if self.restarts > MAX_RESTARTS {
            return Ok(Decision {
                give_up: Some(WalkError::Unstable(self.restarts)),
                ..Decision::unplaced(None)
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
        Ok(Decision::unplaced(Some(self.window_for_cursor())))
    }
}
