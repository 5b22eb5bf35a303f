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
    match &md.source {
        Some(Source::File(file)) => format!(" (in {})", file.display()),
        _ if md.name == "environment variable" => {
            let profile = error.profile.clone().unwrap_or_default();
            format!(" (from {})", md.interpolate(&profile, path))
        }
        _ => String::new(),
    }
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
