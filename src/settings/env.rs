//! The environment layer: `DATABASE_URL` and `SZB_SECTION__KEY` variables, as a figment
//! provider whose errors name the variable. Every other `SZB_` variable is refused, naming it
//! and the closest real name, as an unknown key in the file is; only [`NOT_CONFIG`] and the
//! service links Kubernetes injects ([`is_service_link`]) are passed by.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::SettingsError;
use super::keys::{sections, text_keys};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// `SZB_` variables that are not configuration and are left alone. `SZB_TOKEN_FILE` is
/// `docker-compose.yml`'s: the host path of the token secret, read by compose, so it may well be
/// exported in the shell that runs szb-sync too.
pub(super) const NOT_CONFIG: [&str; 1] = ["SZB_TOKEN_FILE"];

/// Every variable name that sets something: `SZB_API`, `SZB_API__TOKEN`, …, upper case.
fn known_names() -> Vec<String> {
    let mut names = Vec::new();
    for section in sections() {
        names.push(format!("SZB_{}", section.name.to_ascii_uppercase()));
        for key in section.keys {
            names.push(format!("SZB_{}__{}", section.name, key).to_ascii_uppercase());
        }
    }
    names
}

/// `SZB_…` variables that set nothing, each named with the closest real name when one is near.
fn check_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), SettingsError> {
    let known = known_names();
    let mut problems = Vec::new();
    for name in names {
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with("SZB_")
            || known.contains(&upper)
            || NOT_CONFIG.contains(&upper.as_str())
            || is_service_link(&upper)
        {
            continue;
        }
        let key = upper[4..].to_ascii_lowercase().replace("__", ".");
        let what = if key.contains('.') {
            format!(" (`{key}` is not a key)")
        } else {
            String::new()
        };
        let hint = match closest(&upper, &known) {
            Some(close) => format!("; did you mean {close}?"),
            None => "; a setting is SZB_ and its section and key joined by two underscores, \
                     e.g. SZB_API__TOKEN or SZB_SYNC__SETTLE_AFTER"
                .to_owned(),
        };
        problems.push(format!(
            "config error: environment variable {name} matches no setting{what}{hint}"
        ));
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SettingsError::Parse(problems.join("; ")))
    }
}

/// True for the variables Kubernetes injects into every pod for each Service in its namespace
/// (the "service links"), here of a Service whose name starts with `szb` (`szb-sync`, `szb-db`):
/// `SZB_SYNC_SERVICE_HOST`, `SZB_SYNC_SERVICE_PORT`, `SZB_SYNC_SERVICE_PORT_<PORT NAME>`,
/// `SZB_SYNC_PORT`, `SZB_SYNC_PORT_9187_TCP` and its `_PROTO`, `_PORT` and `_ADDR`. None holds
/// a double underscore, which every setting does, so a misspelt setting is still refused.
fn is_service_link(upper: &str) -> bool {
    if upper.contains("__")
        || !upper
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return false;
    }
    let words: Vec<&str> = upper.split('_').collect();
    if words.first() != Some(&"SZB") {
        return false;
    }
    let protocol = |w: &str| matches!(w, "TCP" | "UDP" | "SCTP");
    let number = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    // The service's name is `words[..at]` (hyphens became underscores); the rest names the link.
    (1..words.len()).any(|at| match &words[at..] {
        ["SERVICE", "HOST"] | ["SERVICE", "PORT"] | ["PORT"] => true,
        ["SERVICE", "PORT", _, ..] => true,
        ["PORT", n, p] => number(n) && protocol(p),
        ["PORT", n, p, "PROTO" | "PORT" | "ADDR"] => number(n) && protocol(p),
        _ => false,
    })
}

/// The known name `name` most likely meant: the same letters with other underscores
/// (`SZB_API_TOKEN`), else the nearest by edit distance when it is only a typo away.
fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let letters = |s: &str| s.replace('_', "");
    if let Some(same) = known.iter().find(|k| letters(k) == letters(name)) {
        return Some(same);
    }
    let (distance, best) = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .min()?;
    (distance <= 1 + name.len() / 8).then_some(best.as_str())
}

/// True when a variable sets the targets: `SZB_TARGETS`, the only way the environment can
/// (`targets` is a list, so no `SZB_TARGETS__KEY` names a setting; [`check_names`] refuses them).
pub(super) fn sets_targets(env: &[(String, String)]) -> bool {
    env.iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("SZB_TARGETS"))
}

pub(super) fn with_env(
    figment: Figment,
    env: Vec<(String, String)>,
) -> Result<Figment, SettingsError> {
    check_names(env.iter().map(|(name, _)| name.as_str()))?;
    let sections: Vec<&str> = sections().into_iter().map(|s| s.name).collect();
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
        let is_config = rest.contains("__") || sections.contains(&key.as_str());
        (is_config && !key.is_empty()).then(|| (name.clone(), key, value))
    });
    Ok(figment
        .merge(EnvVars(database_url.into_iter().collect()))
        .merge(EnvVars(szb.collect())))
}

/// A figment provider over (variable name, key path, value) triples, so that
/// [`Settings::load`](super::Settings::load) and
/// [`Settings::load_from`](super::Settings::load_from) share one mapping and errors name the
/// variable.
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
            // Text is taken verbatim: a token of digits stays a string, a cron is not split.
            let value = if text_keys().contains(key) {
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

#[cfg(test)]
mod tests {
    use super::super::keys::fields;
    use super::super::{ApiSettings, Settings};
    use super::*;

    fn refused(name: &str) -> String {
        Settings::load_from(None, &[(name, "x")])
            .expect_err("the variable should be refused")
            .to_string()
    }

    #[test]
    fn the_sections_are_the_fields_of_settings() {
        let declared: Vec<&str> = sections().into_iter().map(|s| s.name).collect();
        assert_eq!(declared, fields::<Settings>());
        assert!(fields::<ApiSettings>().contains(&"token_file"));
        assert!(known_names().contains(&"SZB_SYNC__SETTLE_AFTER".to_owned()));
    }

    #[test]
    fn a_variable_that_sets_nothing_is_refused_with_the_closest_name() {
        let msg = refused("SZB_API_TOKEN");
        assert_eq!(
            msg,
            "config error: environment variable SZB_API_TOKEN matches no setting; did you mean \
             SZB_API__TOKEN?"
        );
        let msg = refused("SZB_API__TOKNE");
        assert!(
            msg.contains("SZB_API__TOKNE matches no setting (`api.tokne` is not a key); did you mean SZB_API__TOKEN?"),
            "{msg}"
        );
        let msg = refused("SZB_SYNC_SETTLE_AFTER");
        assert!(
            msg.ends_with("did you mean SZB_SYNC__SETTLE_AFTER?"),
            "{msg}"
        );
        let msg = refused("SZB_DATABSE__URL");
        assert!(msg.ends_with("did you mean SZB_DATABASE__URL?"), "{msg}");

        let msg = refused("SZB_FOO");
        assert!(msg.contains("environment variable SZB_FOO matches no setting; a setting is SZB_ and its section and key joined by two underscores"), "{msg}");
        assert!(!msg.contains("did you mean"), "{msg}");
    }

    #[test]
    fn real_names_any_case_and_the_compose_variable_are_taken() {
        let env = [
            ("szb_api__token", "t"),
            ("SZB_TOKEN_FILE", "./szb-token"),
            ("SZB_HTTP", "{listen=\"127.0.0.1:9\"}"),
            ("SZBX", "not ours"),
        ];
        let s = Settings::load_from(None, &env).unwrap();
        assert_eq!(s.api.token.unwrap().expose(), "t");
        assert!(s.http.listen.is_some());
    }

    /// What Kubernetes injects for a Service `szb-sync` with a port 9187 named `http`, and for a
    /// Service `szb-db` beside it.
    const SERVICE_LINKS: [(&str, &str); 12] = [
        ("SZB_SYNC_SERVICE_HOST", "10.96.12.34"),
        ("SZB_SYNC_SERVICE_PORT", "9187"),
        ("SZB_SYNC_SERVICE_PORT_HTTP", "9187"),
        ("SZB_SYNC_PORT", "tcp://10.96.12.34:9187"),
        ("SZB_SYNC_PORT_9187_TCP", "tcp://10.96.12.34:9187"),
        ("SZB_SYNC_PORT_9187_TCP_PROTO", "tcp"),
        ("SZB_SYNC_PORT_9187_TCP_PORT", "9187"),
        ("SZB_SYNC_PORT_9187_TCP_ADDR", "10.96.12.34"),
        ("SZB_DB_SERVICE_HOST", "10.96.0.7"),
        ("SZB_DB_PORT_5432_TCP_ADDR", "10.96.0.7"),
        ("SZB_SERVICE_HOST", "10.96.0.8"),
        ("SZB_PORT_53_UDP", "udp://10.96.0.8:53"),
    ];

    #[test]
    fn kubernetes_service_links_never_stop_the_daemon() {
        let mut env = SERVICE_LINKS.to_vec();
        env.push(("SZB_API__TOKEN", "t"));

        let s = Settings::load_from(None, &env).unwrap();

        assert_eq!(s.api.token.unwrap().expose(), "t");
        for (name, _) in SERVICE_LINKS {
            assert!(is_service_link(name), "{name}");
        }
    }

    #[test]
    fn a_misspelt_setting_beside_service_links_still_gets_its_did_you_mean() {
        for (typo, meant) in [
            ("SZB_API_TOKEN", "SZB_API__TOKEN"),
            ("SZB_SYNC_SETTLE_AFTER", "SZB_SYNC__SETTLE_AFTER"),
            ("SZB_HTTP__LISTN", "SZB_HTTP__LISTEN"),
            ("SZB_HTTP_LISTEN", "SZB_HTTP__LISTEN"),
        ] {
            let mut env = SERVICE_LINKS.to_vec();
            env.push((typo, "x"));

            let msg = Settings::load_from(None, &env).unwrap_err().to_string();

            assert!(msg.ends_with(&format!("did you mean {meant}?")), "{msg}");
            assert!(!msg.contains("SERVICE"), "{msg}");
        }
        for not_a_link in [
            "SZB_SYNC_PORT_HTTP_TCP",
            "SZB_SYNC_PORT_9187_TCP_HOST",
            "SZB_SYNC__SERVICE_HOST",
            "SZB_SYNC_SERVICE",
        ] {
            assert!(!is_service_link(not_a_link), "{not_a_link}");
        }
    }

    #[test]
    fn every_unknown_variable_is_named_once() {
        let env = [("SZB_FOO", "1"), ("SZB_API_TOKEN", "2"), ("SZB_FOO", "3")];
        let msg = Settings::load_from(None, &env).unwrap_err().to_string();
        assert_eq!(msg.matches("SZB_FOO matches").count(), 1, "{msg}");
        assert!(msg.contains("SZB_API_TOKEN matches"), "{msg}");
    }
}
