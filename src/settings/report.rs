//! Figment's errors, rewritten for users: the key as they write it, where the value came from,
//! and never a secret's value.

use std::collections::BTreeSet;

use figment::Source;

use super::SettingsError;

pub(super) fn describe_figment_error(error: figment::Error) -> SettingsError {
    let messages: BTreeSet<String> = error.into_iter().map(|e| describe_one(&e)).collect();
    SettingsError::Parse(messages.into_iter().collect::<Vec<_>>().join("; "))
}

fn describe_one(error: &figment::Error) -> String {
    use figment::error::Kind;

    let key = display_path(&error.path);
    let secret = key == "database.url" || key.ends_with("token");

    let what = match &error.kind {
        Kind::UnknownField(field, expected) => {
            // The path ends with the unknown field itself.
            let parent = error.path.strip_suffix(std::slice::from_ref(field));
            let section = match parent.map(display_path) {
                Some(p) if !p.is_empty() => format!("in [{p}]"),
                _ => "at the top level".to_owned(),
            };
            return format!(
                "config error: unknown key `{key}` {section}{}; known keys: {}",
                origin(error, &error.path),
                expected.join(", ")
            );
        }
        // The found value could be a token: say only what was expected.
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) if secret => {
            format!("invalid value, expected {expected}")
        }
        Kind::Message(msg) if msg.starts_with("TOML parse error") => sanitize_toml_error(msg),
        kind => kind.to_string(),
    };
    let origin = origin(error, &error.path);
    if key.is_empty() {
        format!("config error: {what}{origin}")
    } else {
        format!("config error at {key}: {what}{origin}")
    }
}

/// `targets.0.token` as users write it: `targets[0].token`.
fn display_path(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

fn origin(error: &figment::Error, path: &[String]) -> String {
    let Some(md) = &error.metadata else {
        return String::new();
    };
    let profile = error.profile.clone().unwrap_or_default();
    match place(md, &profile, path) {
        Some(Place::File(file)) => format!(" (in {file})"),
        Some(Place::Variable(name)) => format!(" (from {name})"),
        None => String::new(),
    }
}

/// Where a value was configured, when figment knows.
pub(super) enum Place {
    /// A file, by the path it was read from.
    File(String),
    /// An environment variable, by its name.
    Variable(String),
}

/// Where the value at `path`, provided by `md`, came from.
pub(super) fn place(
    md: &figment::Metadata,
    profile: &figment::Profile,
    path: &[String],
) -> Option<Place> {
    match &md.source {
        Some(Source::File(file)) => Some(Place::File(file.display().to_string())),
        _ if md.name == "environment variable" => {
            Some(Place::Variable(md.interpolate(profile, path)))
        }
        _ => None,
    }
}

/// Where the value of the dotted `key` in `figment` came from, for a message: "the file
/// /etc/szb-sync/szb-sync.toml", "the environment variable SZB_API__TOKEN".
pub(super) fn source_of(figment: &figment::Figment, key: &str) -> Option<String> {
    let md = figment.find_metadata(key)?;
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    Some(match place(md, &figment::Profile::Default, &path)? {
        Place::File(file) => format!("the file {file}"),
        Place::Variable(name) => format!("the environment variable {name}"),
    })
}

/// Keeps the position and the reason of a TOML syntax error but drops the quoted source lines,
/// which may hold a token.
fn sanitize_toml_error(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .collect::<Vec<_>>()
        .join(": ")
}
