//! The keys asked of the types: which take text, so that the environment hands them over
//! verbatim.

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::Value;

use crate::settings::Settings;
use crate::settings::env::with_env;
use crate::settings::keys::{sections, text_keys};

#[test]
fn the_keys_that_take_text_come_from_the_types() {
    let text = text_keys();

    // Strings, durations, URLs, paths, secrets and addresses; options of them too, whose
    // default is `None`.
    for key in [
        "database.url",
        "database.schema",
        "database.statement_timeout",
        "database.synchronous_commit",
        "api.base_url",
        "api.token",
        "api.token_file",
        "api.timeout",
        "api.retry_backoff",
        "api.max_retry_after",
        "schedule.cron",
        "sync.settle_after",
        "sync.keep_runs",
        "sync.failure_backoff",
        "sync.max_failure_backoff",
        "sync.lease_period",
        "http.listen",
        "http.token",
        "http.token_file",
    ] {
        assert!(
            text.contains(key),
            "{key} is not known to take text: {text:?}"
        );
    }
    for key in [
        "database.max_connections",
        "api.page_size",
        "api.max_requests_per_second",
        "api.allow_insecure_http",
        "sync.concurrency",
    ] {
        assert!(!text.contains(key), "{key} is taken for text: {text:?}");
    }
}

/// Whether `section.key` refuses a string in a file as the wrong type (a number, a bool), asked
/// of the settings types through figment rather than through the probe under test.
fn refuses_a_string(section: &str, key: &str) -> bool {
    let toml = format!("[{section}]\n{key} = \"x\"\n");
    match Figment::from(Toml::string(&toml)).extract::<Settings>() {
        Ok(_) => false,
        Err(e) => e
            .into_iter()
            .any(|e| matches!(e.kind, Kind::InvalidType(..))),
    }
}

#[test]
fn every_key_that_accepts_a_string_is_known_to_take_text() {
    let text = text_keys();
    let mut keys = 0;
    for section in sections() {
        for key in section.keys {
            let dotted = format!("{}.{key}", section.name);

            let takes_text = !refuses_a_string(section.name, key);

            assert_eq!(text.contains(&dotted), takes_text, "{dotted}");
            keys += 1;
        }
    }
    assert!(keys > 20, "only {keys} keys walked");
}

#[test]
fn a_text_key_set_to_digits_by_the_environment_stays_a_string() {
    for key in text_keys() {
        let name = format!("SZB_{}", key.replace('.', "__").to_ascii_uppercase());

        let figment = with_env(Figment::new(), vec![(name.clone(), "0042".to_owned())]).unwrap();

        let value = figment.find_value(key).unwrap();
        assert!(
            matches!(&value, Value::String(_, s) if s == "0042"),
            "{name}: {value:?}"
        );
    }
}
