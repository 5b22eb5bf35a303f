//! The checks of each section's values and their bounds.

use std::time::Duration;

use super::{TOKEN, error, load};
use crate::settings::{MAX_RETRY_AFTER, MAX_SETTLE_AFTER, MIN_SETTLE_AFTER, Settings};

#[test]
fn statement_timeout_and_synchronous_commit_default_to_60s_and_the_servers_and_are_checked() {
    let s = load("").unwrap();
    assert_eq!(s.database.statement_timeout, Duration::from_secs(60));
    assert_eq!(s.database.synchronous_commit, None);
    let set = Settings::load_from(
        Some("[database]\nstatement_timeout = \"5m\"\n"),
        &[("SZB_DATABASE__SYNCHRONOUS_COMMIT", "off")],
    )
    .unwrap();
    assert_eq!(set.database.statement_timeout, Duration::from_secs(300));
    assert_eq!(set.database.synchronous_commit.as_deref(), Some("off"));
    for bad in ["0s", "500ms", "2h"] {
        let msg = error(&format!("[database]\nstatement_timeout = {bad:?}\n"));
        assert!(
            msg.contains("database.statement_timeout must be between 1s and 1h"),
            "{bad}: {msg}"
        );
    }
    let msg = error("[database]\nsynchronous_commit = \"sometimes\"\n");
    assert!(
        msg.contains("database.synchronous_commit must be one of on, off, local"),
        "{msg}"
    );
}

#[test]
fn database_schema_defaults_to_public_comes_from_the_env_and_must_be_a_plain_identifier() {
    assert_eq!(load("").unwrap().database.schema, "public");
    let from_env = Settings::load_from(
        Some("[database]\nschema = \"from_file\"\n"),
        &[("SZB_DATABASE__SCHEMA", "szb_2")],
    )
    .unwrap();
    assert_eq!(from_env.database.schema, "szb_2");
    for bad in [
        "", "Szb", "2szb", "szb-sync", "a b", "x;drop", "\"q\"", "pg_szb",
    ] {
        let msg = error(&format!("[database]\nschema = {bad:?}\n"));
        assert!(msg.contains("database.schema must"), "{bad}: {msg}");
    }
    let long = "s".repeat(64);
    let msg = error(&format!("[database]\nschema = \"{long}\"\n"));
    assert!(
        msg.contains("at most 63 bytes (Postgres's limit), got 64 bytes"),
        "{msg}"
    );
    assert!(load(&format!("[database]\nschema = \"{}\"\n", "s".repeat(63))).is_ok());
}

#[test]
fn page_size_out_of_range_names_the_key() {
    let msg = error("[api]\npage_size = 5000\n");
    assert!(
        msg.contains("api.page_size must be between 1 and 1000, got 5000"),
        "{msg}"
    );
}

#[test]
fn a_five_field_cron_is_explained() {
    let msg = error("[schedule]\ncron = \"*/5 * * * *\"\n");
    assert!(
        msg.contains(
            r#"schedule.cron "*/5 * * * *" has 5 fields; szb-sync expects 6 (sec min hour day-of-month month day-of-week), e.g. "0 */5 * * * *""#
        ),
        "{msg}"
    );
}

#[test]
fn an_unparsable_cron_shows_the_parser_error() {
    let msg = error("[schedule]\ncron = \"0 61 * * * *\"\n");
    assert!(
        msg.starts_with(r#"schedule.cron "0 61 * * * *" is not a valid cron"#),
        "{msg}"
    );
    assert!(msg.len() > r#"schedule.cron "0 61 * * * *" is not a valid cron expression: "#.len());

    // A year field: next year's, so the test never meets a year in the past.
    let next_year = chrono::Datelike::year(&chrono::Utc::now()) + 1;
    assert!(
        load(&format!(
            "[schedule]\ncron = \"0 0 12 * * Mon-Fri {next_year}\"\n"
        ))
        .is_ok()
    );
}

#[test]
fn a_settle_after_below_the_floor_is_refused_naming_key_floor_and_why() {
    for short in ["0s", "1m 30s", "4m 59s"] {
        let msg = error(&format!("[sync]\nsettle_after = \"{short}\"\n"));
        assert!(
            msg.contains(&format!(
                "sync.settle_after must be at least 5m, got {short}"
            )),
            "{msg}"
        );
        assert!(msg.contains("lastOnlineAt"), "says why: {msg}");
    }
    let msg = Settings::load_from(None, &[("SZB_SYNC__SETTLE_AFTER", "1s")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sync.settle_after must be at least 5m, got 1s"),
        "{msg}"
    );

    let floor = load("[sync]\nsettle_after = \"5m\"\n").unwrap();
    assert_eq!(floor.sync.settle_after, MIN_SETTLE_AFTER);
}

#[test]
fn durations_added_to_a_clock_are_refused_above_their_maximum_naming_key_and_maximum() {
    // Each of these once reached `Instant + wait` or `DateTime - d` and panicked there.
    for (toml, expect) in [
        (
            "[sync]\nsettle_after = \"100000000y\"\n",
            "sync.settle_after must be at most 30days, got 100000000years",
        ),
        (
            "[sync]\nkeep_runs = \"200y\"\n",
            "sync.keep_runs must be at most 100years, got 200years",
        ),
        (
            "[api]\nmax_retry_after = \"100000000y\"\n",
            "api.max_retry_after must be at most 1day, got 100000000years",
        ),
        (
            "[api]\nretry_backoff = \"2h\"\n",
            "api.retry_backoff must be at most 1h, got 2h",
        ),
        (
            "[api]\ntimeout = \"100000000y\"\n",
            "api.timeout must be more than 0s and at most 1h, got 100000000years",
        ),
        (
            "[api]\nread_timeout = \"0s\"\n",
            "api.read_timeout must be more than 0s and at most 1h, got 0s",
        ),
    ] {
        let msg = error(toml);
        assert!(msg.contains(expect), "{toml}: {msg}");
    }
    let ceiling = load(
        "[sync]\nsettle_after = \"30d\"\nkeep_runs = \"100y\"\n\
         [api]\nmax_retry_after = \"1d\"\ntimeout = \"1h\"\nread_timeout = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(ceiling.sync.settle_after, MAX_SETTLE_AFTER);
    assert_eq!(ceiling.api.max_retry_after, MAX_RETRY_AFTER);
}

#[test]
fn body_limits_are_refused_when_one_body_could_not_fit_in_flight() {
    let msg = error("[api]\nmax_body_bytes = 67108864\n");
    assert!(
        msg.contains(
            "api.max_body_bytes_in_flight (33554432) must be at least api.max_body_bytes \
             (67108864)"
        ),
        "{msg}"
    );
    let msg = error("[api]\nmax_body_bytes = 0\n");
    assert!(
        msg.contains("api.max_body_bytes must be between 1 and"),
        "{msg}"
    );
    let msg = error("[api]\nmax_body_bytes = 2147483648\nmax_body_bytes_in_flight = 4294967296\n");
    assert!(msg.contains("(1 GiB), got 2147483648"), "{msg}");
    let equal = load("[api]\nmax_body_bytes = 1024\nmax_body_bytes_in_flight = 1024\n");
    assert!(equal.is_ok(), "{equal:?}");
}

#[test]
fn a_cron_that_never_fires_is_refused() {
    for never in ["0 0 0 31 2 *", "0 0 0 30 2 * *", "0 0 12 * * * 2020"] {
        let msg = error(&format!("[schedule]\ncron = \"{never}\"\n"));
        assert!(
            msg.contains(&format!("schedule.cron \"{never}\" never fires")),
            "{never}: {msg}"
        );
    }
    // Rare is not never: every fourth year, and once, decades from now.
    let far = chrono::Datelike::year(&chrono::Utc::now()) + 70;
    assert!(load("[schedule]\ncron = \"0 0 0 29 2 *\"\n").is_ok());
    assert!(load(&format!("[schedule]\ncron = \"0 0 0 1 1 * {far}\"\n")).is_ok());
}

#[test]
fn a_base_url_with_a_path_query_or_fragment_is_refused() {
    for (url, what) in [
        ("https://shangzhibo.tv/api/v3", "the path /api/v3"),
        ("https://shangzhibo.tv/api/v3/", "the path /api/v3/"),
        ("http://127.0.0.1:8080/x", "the path /x"),
        ("https://shangzhibo.tv/?a=1", "a query"),
        ("https://shangzhibo.tv#top", "a fragment"),
    ] {
        let msg = error(&format!("[api]\nbase_url = \"{url}\"\n"));
        assert!(
            msg.contains(&format!(
                "api.base_url has {what}; give only the scheme and host (and port), e.g. \
                 https://shangzhibo.tv: szb-sync appends /api/v3/agent/… itself"
            )),
            "{url}: {msg}"
        );
    }
    let msg = error(&format!(
        "[api]\nbase_url = \"https://u:{TOKEN}@shangzhibo.tv/v3\"\n"
    ));
    assert!(!msg.contains(TOKEN), "{msg}");

    for ok in [
        "https://shangzhibo.tv",
        "https://shangzhibo.tv/",
        "http://127.0.0.1:8080/",
    ] {
        assert!(
            load(&format!("[api]\nbase_url = \"{ok}\"\n")).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn plain_http_is_refused_unless_loopback_or_allowed() {
    let msg = error("[api]\nbase_url = \"http://example.com\"\n");
    assert!(
        msg.contains(
            "api.base_url: plain http is only allowed for loopback hosts (set \
             api.allow_insecure_http = true to override)"
        ),
        "{msg}"
    );

    for remote in ["http://api.example.com", "http://10.1.2.3:8080"] {
        let msg = error(&format!("[api]\nbase_url = \"{remote}\"\n"));
        assert!(msg.contains("allow_insecure_http"), "{remote}: {msg}");
        let allowed = load(&format!(
            "[api]\nbase_url = \"{remote}\"\nallow_insecure_http = true\n"
        ))
        .unwrap();
        assert_eq!(allowed.api.base_url.as_str().trim_end_matches('/'), remote);
    }

    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        assert!(
            load(&format!("[api]\nbase_url = \"{ok}\"\n")).is_ok(),
            "{ok}"
        );
    }
    assert!(load("[api]\nbase_url = \"http://example.com\"\nallow_insecure_http = true\n").is_ok());
    let msg = error("[api]\nbase_url = \"not a url\"\n");
    assert!(
        msg.contains("config error at api.base_url: invalid URL"),
        "{msg}"
    );
}

#[test]
fn backoff_settings_are_checked() {
    let msg = error("[sync]\nmax_failure_backoff = \"400d\"\n");
    assert!(
        msg.contains("sync.max_failure_backoff must be at most 30d"),
        "{msg}"
    );
    let msg = error("[sync]\nfailure_backoff = \"2h\"\nmax_failure_backoff = \"1h\"\n");
    assert!(
        msg.contains("must not exceed sync.max_failure_backoff"),
        "{msg}"
    );
    let msg = error("[sync]\nkeep_runs = \"10m\"\n");
    assert!(msg.contains("sync.keep_runs must be at least 1h"), "{msg}");
}

#[test]
fn a_pool_smaller_than_the_concurrency_needs_is_refused_naming_the_minimum() {
    let msg = error("[database]\nmax_connections = 8\n");
    assert!(
        msg.contains("database.max_connections must be at least 18 (sync.concurrency 16 + 2"),
        "{msg}"
    );
    assert!(msg.contains("got 8"), "{msg}");
    let msg = error("[database]\nmax_connections = 5\n[sync]\nconcurrency = 4\n");
    assert!(msg.contains("must be at least 6"), "{msg}");

    let fits = load("[database]\nmax_connections = 6\n[sync]\nconcurrency = 4\n").unwrap();
    assert_eq!(fits.pool_size(), 6, "as set, never raised");
    let bigger = load("[database]\nmax_connections = 40\n").unwrap();
    assert_eq!(bigger.pool_size(), 40);
}
