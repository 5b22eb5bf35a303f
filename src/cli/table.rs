//! Small helpers for the tables the commands print.

use chrono::{DateTime, Utc};

/// A time as `2026-12-01 12:00:00Z`, or `-` when there is none.
pub(super) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// A count, or `-` when there is none.
pub(super) fn count(n: Option<i64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}
