//! The environment layer: `DATABASE_URL` and `SZB_SECTION__KEY` variables, as a figment
//! provider whose errors name the variable.

use std::collections::BTreeMap;
use std::sync::Arc;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

const SECTIONS: [&str; 6] = ["database", "api", "schedule", "sync", "http", "targets"];

/// Keys whose environment value is taken verbatim rather than parsed as a number, bool or array
/// (a token of digits stays a string; a cron with spaces is not split).
fn is_string_key(key: &str) -> bool {
    matches!(
        key,
        "database.url"
            | "database.schema"
            | "api.base_url"
            | "api.token"
            | "api.token_file"
            | "api.timeout"
            | "api.retry_backoff"
            | "api.max_retry_after"
            | "schedule.cron"
            | "sync.settle_after"
            | "sync.keep_runs"
            | "sync.failure_backoff"
            | "sync.max_failure_backoff"
            | "sync.lease_period"
            | "http.listen"
    )
}

pub(super) fn with_env(figment: Figment, env: Vec<(String, String)>) -> Figment {
    let database_url = env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(k, v)| (k.clone(), "database.url".to_owned(), v.clone()));
    let szb = env.into_iter().filter_map(|(name, value)| {
        let rest = name
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("SZB_"))
            .map(|_| &name[4..])?;
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let is_config = rest.contains("__") || SECTIONS.contains(&key.as_str());
        (is_config && !key.is_empty()).then(|| (name.clone(), key, value))
    });
    figment
        .merge(EnvVars(database_url.into_iter().collect()))
        .merge(EnvVars(szb.collect()))
}

/// A figment provider over (variable name, key path, value) triples, so that [`Settings::load`]
/// and [`Settings::load_from`] share one mapping and errors name the variable.
struct EnvVars(Vec<(String, String, String)>);

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        let names: Arc<BTreeMap<String, String>> = Arc::new(
            self.0
                .iter()
                .map(|(n, k, _)| (k.clone(), n.clone()))
                .collect(),
        );
        Metadata::named("environment variable").interpolater(move |_: &Profile, keys: &[&str]| {
            // The error may be about a key below the one a variable set (SZB_TARGETS sets a whole
            // list) or above it (a misspelt section in SZB_DATABSE__URL).
            let path = keys.join(".");
            let related = |key: &String| {
                let (short, long) = if key.len() <= path.len() {
                    (key, &path)
                } else {
                    (&path, key)
                };
                long == short || long.starts_with(&format!("{short}."))
            };
            names
                .iter()
                .find(|(key, _)| **key == path)
                .or_else(|| names.iter().find(|(key, _)| related(key)))
                .map_or_else(|| "SZB_…".to_owned(), |(_, name)| name.clone())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (_, key, raw) in &self.0 {
            let value = if is_string_key(key) {
                Value::from(raw.clone())
            } else {
                raw.parse()
                    .unwrap_or_else(|never: std::convert::Infallible| match never {})
            };
            insert_path(&mut dict, key, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}
