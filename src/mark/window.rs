//! Which window to ask for: any page size up to the maximum works, so the walk picks the one
//! that serves it best. [`Window`] itself is domain vocabulary; only the choice lives here.

use crate::domain::{Order, Window};

impl Window {
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
