//! Finding the walk's place in a page, and reading groups and boundaries off it.

use chrono::{DateTime, Utc};

use crate::domain::{Anchor, Entry};

/// Where the next window must pick up: the group starting at `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) pos: i64,
    /// The group starting at `pos`, to be found again with the visit before it. `None` at the
    /// head of the list, or when no allowed window can hold that group and its predecessor.
    pub(super) group: Option<Anchor>,
    /// Without a group: the `visitAt` the entry at `pos - 1` must still have (a weak check: it
    /// lies inside a tie group, so the mark is frozen meanwhile), and where that group starts.
    /// `None` with no group: the position is taken on trust.
    pub(super) after: Option<(DateTime<Utc>, i64)>,
}

pub(super) enum Located {
    /// The cursor's position is at this index of the page.
    At(usize),
    /// The cursor's group sits further right than expected: visits were inserted before it.
    InsertedBefore,
    NotFound,
}

/// Finds the cursor's position in a page at `offset`: the first entry with `visitAt` at or after
/// the group's, preceded by a smaller one. The list is sorted, so that place is unique, and it
/// stays right even if the group itself lost members.
pub(super) fn locate(cursor: &Cursor, offset: i64, entries: &[Entry]) -> Located {
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
        return Located::InsertedBefore;
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

pub(super) fn is_settled(entry: &Entry, cutoff: DateTime<Utc>) -> bool {
    match entry.last_online_at() {
        Some(t) => t <= cutoff,
        // A reject whose lastOnlineAt cannot be read will not become readable by waiting.
        None => matches!(entry, Entry::Rejected { .. }),
    }
}

/// The largest group boundary `b` with `lowest <= b <= limit` inside the page: entries `b-1`
/// and `b` both have a readable `visitAt`, in strict order.
pub(super) fn last_boundary(
    entries: &[Entry],
    offset: i64,
    lowest: i64,
    limit: i64,
) -> Option<i64> {
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
pub(super) fn group_at(entries: &[Entry], i: usize) -> Anchor {
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
