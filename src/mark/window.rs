//! Which window to ask for: any page size up to the maximum works, so the walk picks the one
//! that serves it best. [`Window`] itself is domain vocabulary; only the choice lives here.

use crate::domain::{Order, Window};

/// How far a window fetched ahead overlaps the one before it, at most: tie groups up to this
/// size at a page's end still let the walk accept it ([`crate::mark::Walk::accepts`]).
const AHEAD_OVERLAP: i64 = 16;

impl Window {
    /// The window to fetch ahead after this one, before its page is seen: it overlaps this
    /// window's end by a few entries, so the walk accepts it unless the page ends in a larger
    /// tie group. `None` when no window of allowed size overlaps so and still reaches further.
    pub fn ahead(&self, max_size: u32) -> Option<Window> {
        // One entry of overlap is the walk's own choice when a page ends without a tie. More
        // holds small tie groups too, at the cost of re-reading them: worth it on large pages
        // only (15 of 1000 is 1.5% more requests; on pages of 10 it would be 20%).
        let overlap = (i64::from(max_size) / 64).clamp(1, AHEAD_OVERLAP);
        let next = Window::covering((self.end() - 1 - overlap).max(0), max_size);
        (next.end() > self.end()).then_some(next)
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
