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

/// `text` padded with spaces to `width` terminal columns, left-aligned: a CJK character takes
/// two columns, so padding by characters would misalign the columns after it. Text wider than
/// `width` is returned whole.
pub(super) fn pad(text: &str, width: usize) -> String {
    let used = unicode_width::UnicodeWidthStr::width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_counts_columns_not_characters() {
        assert_eq!(pad("abc", 6), "abc   ");
        // Six characters, twelve columns.
        assert_eq!(pad("产品发布会直", 14), "产品发布会直  ");
        assert_eq!(
            unicode_width::UnicodeWidthStr::width(pad("技术分享沙龙", 24).as_str()),
            unicode_width::UnicodeWidthStr::width(pad("plain", 24).as_str())
        );
        assert_eq!(pad("too wide", 3), "too wide");
    }
}
