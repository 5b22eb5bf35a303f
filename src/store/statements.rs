//! What every file of `src/store/sql/` promises, checked by the tests below: it opens with a
//! comment saying what it does and what its parameters are, the store loads it, and text that
//! several statements must share is the same in each.

/// A statement's text without its opening comment lines and its trailing newline: the SQL as
/// a user reads it (the demo prints [`super::SAMPLE_QUERY`]).
pub(super) const fn without_header(sql: &str) -> &str {
    let bytes = sql.as_bytes();
    let mut start = 0;
    while start + 1 < bytes.len() && bytes[start] == b'-' && bytes[start + 1] == b'-' {
        while start < bytes.len() && bytes[start] != b'\n' {
            start += 1;
        }
        start += 1;
    }
    let (_, body) = bytes.split_at(start);
    match std::str::from_utf8(body.trim_ascii_end()) {
        Ok(body) => body,
        Err(_) => panic!("a statement is UTF-8"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Text that must read the same wherever it is used: a word that marks where it is used, the
    /// text, and the statements that use it. Whether a lease may be taken over (free, this
    /// process's, expired, or its owner's liveness lock is gone), and when a pair counts as
    /// failing on the status page.
    const SHARED: [(&str, &str, &[&str]); 3] = [
        (
            "szb_advisory_lock_keys",
            "live AS MATERIALIZED (SELECT k FROM szb_advisory_lock_keys() AS k)",
            &["claim_due_pairs", "forget_mark", "survey_due_pairs"],
        ),
        (
            "szb_owner_lock_key(s.lease_owner)",
            "(s.lease_owner IS NULL OR s.lease_owner = $1 OR s.lease_expires_at < now()
              OR szb_owner_lock_key(s.lease_owner) NOT IN (SELECT k FROM live))",
            &["claim_due_pairs", "forget_mark", "survey_due_pairs"],
        ),
        (
            "'failed'",
            "coalesce(s.failures_in_row > 0 OR s.last_outcome = 'failed', false)",
            &["pair_counts", "pair_page"],
        ),
    ];

    fn sql_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sql")
    }

    /// Every statement file, by name (without `.sql`), with its text.
    fn statements() -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(sql_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                assert_eq!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("sql"),
                    "{path:?}"
                );
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    }

    fn words(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn every_statement_opens_with_one_or_two_lines_saying_what_it_does() {
        for (name, text) in statements() {
            let header = text.lines().take_while(|l| l.starts_with("-- ")).count();
            assert!(
                (1..=2).contains(&header),
                "{name}.sql: {header} header lines"
            );
            assert!(
                !super::without_header(&text).is_empty(),
                "{name}.sql has no statement"
            );
        }
    }

    #[test]
    fn every_statement_file_is_loaded_by_the_store() {
        let dir = sql_dir().parent().unwrap().to_owned();
        let sources: String = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        for (name, _) in statements() {
            assert!(
                sources.contains(&format!("include_str!(\"sql/{name}.sql\")")),
                "{name}.sql is not used"
            );
        }
    }

    #[test]
    fn shared_text_reads_the_same_in_every_statement_that_uses_it() {
        let statements = statements();
        for (marker, shared, users) in SHARED {
            let using: Vec<&str> = statements
                .iter()
                .filter(|(_, text)| text.contains(marker))
                .map(|(name, _)| name.as_str())
                .collect();
            assert_eq!(using, users, "the statements using {marker}");
            for (name, text) in statements
                .iter()
                .filter(|(n, _)| users.contains(&n.as_str()))
            {
                assert!(
                    words(text).contains(&words(shared)),
                    "{name}.sql does not carry: {shared}"
                );
            }
        }
    }

    #[test]
    fn the_header_is_not_part_of_the_statement_text() {
        assert_eq!(
            super::without_header("-- what\n-- and how\nSELECT 1\n  FROM t\n"),
            "SELECT 1\n  FROM t"
        );
        assert_eq!(super::without_header("SELECT 1\n"), "SELECT 1");
    }
}
