//! Repairs what a response body holds that cannot be decoded or stored, in the JSON text itself,
//! so every value decoded from it (a visit's fields, its `extra`, its activity, a reject's
//! `raw`) sees the same repaired string:
//!
//! - NUL, as the escape `\u0000` or a raw byte: Postgres refuses it in `text` and `jsonb`;
//! - a lone UTF-16 surrogate escape (`"\ud800"`): serde_json refuses it, and Rust strings
//!   cannot hold it;
//! - invalid UTF-8 inside a string;
//!
//! each of these becomes U+FFFD, the replacement character; and
//!
//! - a raw control character inside a string (invalid JSON) becomes its escape;
//! - a number serde_json cannot hold (`1e400`: past a double) becomes a string of its text.
//!
//! Everything else, invalid JSON included, is left for the decoder to judge. The usual page
//! needs none of this and never comes here (see `wire::decode_page`).

use std::borrow::Cow;

/// U+FFFD as a JSON escape.
const REPLACEMENT: &[u8] = br"\ufffd";

/// The body with every repair made, and how many strings and numbers were repaired (a string
/// with three NULs counts once).
pub(super) fn repair(body: &[u8]) -> (Cow<'_, [u8]>, u64) {
    let mut out = Out::new(body);
    // Valid UTF-8 throughout (the usual case) spares the check of each multi-byte character.
    let utf8 = std::str::from_utf8(body).is_ok();
    let mut repaired = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let (end, changed) = string(body, i + 1, utf8, &mut out);
                repaired += u64::from(changed);
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let end = i + body[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(body.len() - i);
                let number = &body[i..end];
                if unholdable(number) {
                    let mut quoted = Vec::with_capacity(number.len() + 2);
                    quoted.push(b'"');
                    quoted.extend_from_slice(number);
                    quoted.push(b'"');
                    out.replace(i, end, &quoted);
                    repaired += 1;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    (out.finish(), repaired)
}

/// Scans the string whose contents start at `start`; returns where it ends (past its closing
/// quote) and whether anything in it was repaired.
fn string(body: &[u8], start: usize, utf8: bool, out: &mut Out<'_>) -> (usize, bool) {
    let mut changed = false;
    let mut i = start;
    while i < body.len() {
        match body[i] {
            b'"' => return (i + 1, changed),
            b'\\' if body.get(i + 1) == Some(&b'u') => match hex4(body, i + 2) {
                Some(0) | Some(0xDC00..=0xDFFF) => {
                    out.replace(i, i + 6, REPLACEMENT);
                    changed = true;
                    i += 6;
                }
                Some(0xD800..=0xDBFF) => {
                    let paired = body.get(i + 6) == Some(&b'\\')
                        && body.get(i + 7) == Some(&b'u')
                        && hex4(body, i + 8).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                    if paired {
                        i += 12;
                    } else {
                        out.replace(i, i + 6, REPLACEMENT);
                        changed = true;
                        i += 6;
                    }
                }
                // Another character, or a malformed escape the decoder will name.
                _ => i += 2,
            },
            // Any other escape, `\"` and `\\` included, is two bytes.
            b'\\' => i += 2,
            0 => {
                out.replace(i, i + 1, REPLACEMENT);
                changed = true;
                i += 1;
            }
            b @ 0x01..=0x1f => {
                out.replace(i, i + 1, format!("\\u{b:04x}").as_bytes());
                changed = true;
                i += 1;
            }
            0x80.. if !utf8 => match utf8_width(body, i) {
                Some(width) => i += width,
                None => {
                    out.replace(i, i + 1, REPLACEMENT);
                    changed = true;
                    i += 1;
                }
            },
            _ => i += 1,
        }
    }
    // Unterminated: the decoder refuses the body.
    (body.len(), changed)
}

/// The code unit of the four hex digits at `at`.
fn hex4(body: &[u8], at: usize) -> Option<u32> {
    let digits = body.get(at..at + 4)?;
    let digits = std::str::from_utf8(digits).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The length of the valid UTF-8 character at `at`, if there is one.
fn utf8_width(body: &[u8], at: usize) -> Option<usize> {
    let width = match body[at] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let bytes = body.get(at..at + width)?;
    std::str::from_utf8(bytes).ok().map(|_| width)
}

/// A number token serde_json refuses although it is a number (`1e400`, past a double).
/// Short plain integers, nearly all numbers, are never parsed here.
fn unholdable(number: &[u8]) -> bool {
    let plain = number.len() < 300 && !number.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if plain {
        return false;
    }
    let is_number = std::str::from_utf8(number).is_ok_and(|s| s.parse::<f64>().is_ok());
    is_number && serde_json::from_slice::<serde_json::Value>(number).is_err()
}

/// The repaired body, copied only from the first repair on.
struct Out<'a> {
    body: &'a [u8],
    out: Option<Vec<u8>>,
    /// `body[..copied]` is in `out` (repaired).
    copied: usize,
}

impl<'a> Out<'a> {
    fn new(body: &'a [u8]) -> Self {
        Out {
            body,
            out: None,
            copied: 0,
        }
    }

    /// Puts `with` in place of `body[from..to]`.
    fn replace(&mut self, from: usize, to: usize, with: &[u8]) {
        let body = self.body;
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
        out.extend_from_slice(&body[self.copied..from]);
        out.extend_from_slice(with);
        self.copied = to;
    }

    fn finish(self) -> Cow<'a, [u8]> {
        match self.out {
            None => Cow::Borrowed(self.body),
            Some(mut out) => {
                out.extend_from_slice(&self.body[self.copied..]);
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(body: &[u8]) -> (String, u64) {
        let (out, n) = repair(body);
        (String::from_utf8(out.into_owned()).unwrap(), n)
    }

    #[test]
    fn a_body_with_nothing_to_repair_is_borrowed_as_it_is() {
        let body =
            br#"{"a":"x\"\\u0000 \u00e9 \ud83d\ude00","n":[1,-2.5,3e10,12345678901234567890]}"#;
        let (out, n) = repair(body);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
    }

    #[test]
    fn nul_lone_surrogates_and_bad_utf8_become_the_replacement_character() {
        assert_eq!(
            fixed(br#"{"k\u0000":"a\u0000b\u0000","s":"\ud800x\udc00","p":"\uD83D\uDE00"}"#),
            (
                r#"{"k\ufffd":"a\ufffdb\ufffd","s":"\ufffdx\ufffd","p":"\uD83D\uDE00"}"#.into(),
                3
            )
        );
        assert_eq!(
            fixed(b"[\"a\xffb\xe4\xb8\",\"\xe4\xb8\xad\"]"),
            (r#"["a\ufffdb\ufffd\ufffd","中"]"#.into(), 1)
        );
        assert_eq!(
            fixed(b"[\"\x00\x01\x1f\"]"),
            (r#"["\ufffd\u0001\u001f"]"#.into(), 1)
        );
        // A high surrogate followed by another high one: both lone.
        assert_eq!(
            fixed(br#"["\ud800\ud800\udc00"]"#),
            (r#"["\ufffd\ud800\udc00"]"#.into(), 1)
        );
    }

    #[test]
    fn numbers_past_a_double_become_their_text() {
        assert_eq!(
            fixed(br#"{"a":1e400,"b":[-2E999,1e300,0.5],"c":"1e400"}"#),
            (
                r#"{"a":"1e400","b":["-2E999",1e300,0.5],"c":"1e400"}"#.into(),
                2
            )
        );
    }

    #[test]
    fn repaired_bodies_parse_and_hold_no_nul() {
        let (out, _) = repair(b"{\"a\\u0000\":[\"\\udfff\x00\xc0\",1e999]}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(!v.to_string().contains("\\u0000"), "{v}");
    }
}

#[cfg(test)]
mod property {
    use chrono::Utc;
    use proptest::prelude::*;

    use crate::api::wire::decode_page;
    use crate::domain::{Entry, Order, PairKey, Window};

    /// Pieces of a JSON string's text, hostile ones included.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(szb_simulator::HOSTILE_STRING_PIECES).prop_map(<[u8]>::to_vec),
            "[a-z0-9 ]{0,4}".prop_map(String::into_bytes),
        ]
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(piece(), 0..5).prop_map(|p| p.concat())
    }

    fn number() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["0", "-1", "1e400", "-2E999", "1.5e300", "1e-400", "7"])
    }

    fn holds_nul(v: &serde_json::Value) -> bool {
        v.to_string().contains(r"\u0000")
    }

    proptest! {
        /// Whatever the strings hold, decoding never panics, and what decodes holds no NUL
        /// (the one thing Postgres refuses in text and jsonb that a Rust string can hold).
        #[test]
        fn decoding_never_panics_and_yields_only_storable_strings(
            id in text(), name in text(), key in text(), value in text(), n in number(),
            visit_at in prop::sample::select(vec!["2020-06-24T04:28:02.000Z", "yesterday\\u0000"]),
        ) {
            let q = |b: &[u8]| [b"\"".as_slice(), b, b"\""].concat();
            let activity = [
                br#"{"id":"#.as_slice(), &q(&id), br#","name":"#, &q(&name), b",\"n\":", n.as_bytes(), b"}",
            ].concat();
            let item = [
                br#"{"activity":"#.as_slice(), &activity,
                br#","visitAt":""#, visit_at.as_bytes(),
                br#"","lastOnlineAt":"2020-06-24T04:30:02.000Z","duration":2,"userId":2,"activityId":"#,
                &q(&id), b",", &q(&key), b":", &q(&value), b",\"x\":", n.as_bytes(), b"}",
            ].concat();
            let body = [
                br#"{"pager":{"page":1,"pageSize":10,"total":1},"items":["#.as_slice(), &item, b"]}",
            ].concat();
            let window = Window { page: 1, page_size: 10, order: Order::Asc };
            let page = decode_page(&body, &PairKey::new(1, 2, None), &window, Utc::now());
            let page = page.map_err(|e| TestCaseError::fail(format!("{e}")))?;
            for entry in &page.entries {
                match entry {
                    Entry::Visit { visit, activity } => {
                        prop_assert!(!visit.activity_id().contains('\0'));
                        prop_assert!(!holds_nul(&serde_json::Value::Object(visit.extra().clone())));
                        if let Some(a) = activity {
                            prop_assert!(!a.id.contains('\0'));
                            prop_assert!(!a.name.as_deref().unwrap_or("").contains('\0'));
                            prop_assert!(!holds_nul(&serde_json::Value::Object(a.extra.clone())));
                        }
                    }
                    Entry::Rejected { reject, activity_id, .. } => {
                        prop_assert!(!holds_nul(&reject.raw));
                        prop_assert!(!reject.reason.contains('\0'));
                        prop_assert!(!activity_id.as_deref().unwrap_or("").contains('\0'));
                    }
                }
            }
        }
    }
}
