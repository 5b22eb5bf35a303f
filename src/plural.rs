//! Counted nouns for what people read: `1 pair`, `2 pairs`, `0 pages`. One place, so that CLI
//! output, log messages and errors agree.

use std::fmt;

/// A count that can say whether it is exactly one.
pub trait Count: Copy + fmt::Display {
    fn is_one(self) -> bool;
}

macro_rules! count {
    ($($t:ty),*) => {
        $(impl Count for $t {
            fn is_one(self) -> bool {
                self == 1
            }
        })*
    };
}
count!(u8, u16, u32, u64, usize, i32, i64);

/// `n` and the noun that agrees with it: `plural(1, "pair", "pairs")` is `1 pair`,
/// `plural(3, "pair", "pairs")` is `3 pairs`, and so is 0.
pub fn plural(n: impl Count, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

/// Only the noun that agrees with `n`, for sentences that print the number elsewhere.
pub fn noun<'a>(n: impl Count, one: &'a str, many: &'a str) -> &'a str {
    if n.is_one() { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(1_usize, "pair", "pairs"), "1 pair");
        assert_eq!(plural(0_i64, "pair", "pairs"), "0 pairs");
        assert_eq!(plural(2_u32, "activity", "activities"), "2 activities");
        assert_eq!(plural(-1_i64, "mark", "marks"), "-1 marks");
        assert_eq!(noun(1_u64, "page", "pages"), "page");
    }
}
