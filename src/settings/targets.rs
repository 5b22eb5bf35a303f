//! The user-id lists of the targets and the token files: where each user id was written, the
//! checks of `[[targets]]`, the pairs they expand to with their tokens resolved, and the
//! content of `api.token_file` and `http.token_file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;

use super::{HttpSettings, Settings, SettingsError, Target, report};
use crate::domain::{Pair, PairKey};
use crate::secret::Secret;

/// The start of the problem of a token configured twice, which [`name_token_sources`] rewrites.
pub(super) const BOTH_TOKENS: &str = "api.token and api.token_file are both set";

/// Names where `api.token` and `api.token_file` came from when both are set: one may be a
/// leftover line in a copied file, the other a variable of the unit.
pub(super) fn name_token_sources(error: SettingsError, figment: &Figment) -> SettingsError {
    let SettingsError::Invalid(problems) = error else {
        return error;
    };
    let from = |key| {
        report::source_of(figment, key).map_or_else(String::new, |place| format!(" (in {place})"))
    };
    let both = format!(
        "api.token{} and api.token_file{} are both set; keep one",
        from("api.token"),
        from("api.token_file")
    );
    let problems = problems
        .into_iter()
        .map(|p| {
            if p.starts_with(BOTH_TOKENS) {
                both.clone()
            } else {
                p
            }
        })
        .collect();
    SettingsError::Invalid(problems)
}

/// Where each target's token was configured, by target index: its own `targets[i].token`, or
/// `api.token`, or `api.token_file`, each with the file or the variable that set it
/// ("targets[0].token in the file config/szb-sync.toml", "the environment variable
/// SZB_API__TOKEN").
pub(super) fn token_places(settings: &Settings, figment: &Figment) -> Vec<String> {
    let place = |what: String, key: &str| match report::source_of(figment, key) {
        // SZB_API__TOKEN holds the token itself: the variable is the place.
        Some(source) if key == "api.token" && source.starts_with("the environment variable") => {
            source
        }
        Some(source) => format!("{what} in {source}"),
        None => what,
    };
    settings
        .targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            if target.token.is_some() {
                place(format!("targets[{i}].token"), "targets")
            } else if settings.api.token.is_some() {
                place("api.token".to_owned(), "api.token")
            } else if let Some(path) = &settings.api.token_file {
                place(
                    format!("the file {} (api.token_file)", path.display()),
                    "api.token_file",
                )
            } else {
                String::new()
            }
        })
        .collect()
}

impl Settings {
    /// Where each agent's token was configured (its first target's), for the error of a
    /// refused token. Empty for settings built by hand.
    pub fn token_origins(&self) -> BTreeMap<i64, String> {
        let mut origins = BTreeMap::new();
        for (target, place) in self.targets.iter().zip(&self.token_places) {
            if !place.is_empty() {
                origins
                    .entry(target.agent_id)
                    .or_insert_with(|| place.clone());
            }
        }
        origins
    }
}

impl HttpSettings {
    /// `http.token`, or the content of `http.token_file` (trimmed); `None` when neither is set.
    pub fn token(&self) -> Result<Option<Secret>, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err("http.token and http.token_file are both set; keep one".to_owned());
            }
            (Some(token), None) => token.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Secret::new(t.trim()))
                .map_err(|e| format!("http.token_file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        if token.is_empty() {
            return Err(match &self.token_file {
                Some(path) => format!("http.token_file {} is empty", path.display()),
                None => "http.token must not be empty (remove the key for an open page)".to_owned(),
            });
        }
        Ok(Some(token))
    }
}

/// Where a user id of a target was configured, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// In `targets[i].user_ids`.
    List(usize),
    /// In `targets[i].user_ids_file`, at this line.
    File(usize, PathBuf, usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::List(i) => write!(f, "targets[{i}].user_ids"),
            Place::File(i, path, line) => {
                write!(
                    f,
                    "targets[{i}].user_ids_file {} line {line}",
                    path.display()
                )
            }
        }
    }
}

impl Target {
    /// The target's users, each with where it was written: `user_ids` first, then the file's
    /// lines. A file that cannot be read, or a line that is not a number, is an error naming
    /// the file and the line.
    fn users(&self, i: usize) -> Result<Vec<(i64, Place)>, String> {
        let mut users: Vec<(i64, Place)> =
            self.user_ids.iter().map(|u| (*u, Place::List(i))).collect();
        if let Some(path) = &self.user_ids_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("targets[{i}].user_ids_file {}: {e}", path.display()))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (n, line) in text.lines().enumerate() {
                let id = line.split('#').next().unwrap_or("").trim();
                if id.is_empty() {
                    continue;
                }
                let place = Place::File(i, path.clone(), n + 1);
                let id = id
                    .parse::<i64>()
                    .map_err(|_| format!("{place}: {id:?} is not a user id"))?;
                users.push((id, place));
            }
        }
        Ok(users)
    }
}

pub(super) fn read_token_file(path: &Path) -> Result<Secret, SettingsError> {
    let content = std::fs::read_to_string(path).map_err(|source| SettingsError::TokenFile {
        path: path.into(),
        source,
    })?;
    let token = content.trim();
    if token.is_empty() {
        return Err(SettingsError::Invalid(vec![format!(
            "api.token_file {} is empty",
            path.display()
        )]));
    }
    Ok(Secret::new(token))
}

impl Settings {
    /// The checks of `[[targets]]`, each problem given to `problem`: positive ids, readable
    /// user-id files, a token for each, and no pair listed twice.
    pub(super) fn check_targets(&self, mut problem: impl FnMut(String)) {
        let api = &self.api;
        let has_default_token = api.token.is_some() || api.token_file.is_some();
        let mut seen: BTreeMap<(i64, i64, Option<String>), Place> = BTreeMap::new();
        for (i, target) in self.targets.iter().enumerate() {
            if target.agent_id <= 0 {
                problem(format!(
                    "targets[{i}].agent_id must be a positive id, got {}",
                    target.agent_id
                ));
            }
            let users = match target.users(i) {
                Ok(users) => users,
                Err(msg) => {
                    problem(msg);
                    Vec::new()
                }
            };
            match &target.user_ids_file {
                None if users.is_empty() => {
                    problem(format!("targets[{i}].user_ids must not be empty"));
                }
                Some(path) if users.is_empty() && path.is_file() => problem(format!(
                    "targets[{i}]: user_ids_file {} holds no user ids, and user_ids is empty",
                    path.display()
                )),
                _ => {}
            }
            if target.token.as_ref().is_some_and(Secret::is_empty) {
                problem(format!("targets[{i}].token must not be empty"));
            } else if target.token.is_none() && !has_default_token {
                problem(format!(
                    "targets[{i}]: no token: set targets[{i}].token, api.token or api.token_file"
                ));
            }
            if target
                .activity_id
                .as_deref()
                .is_some_and(|a| a.trim().is_empty())
            {
                problem(format!(
                    "targets[{i}].activity_id must not be empty (remove the key to sync every \
                     activity)"
                ));
            }
            for (user_id, place) in users {
                if user_id <= 0 {
                    match place {
                        Place::List(_) => problem(format!(
                            "targets[{i}].user_ids must hold positive ids, got {user_id}"
                        )),
                        place => {
                            problem(format!("{place}: user ids must be positive, got {user_id}"))
                        }
                    }
                    continue;
                }
                let key = (target.agent_id, user_id, target.activity_id.clone());
                if let Some(first) = seen.get(&key) {
                    let activity = target
                        .activity_id
                        .as_ref()
                        .map(|a| format!(" activity {a:?}"))
                        .unwrap_or_default();
                    let again = match (first, &place) {
                        (Place::List(f), Place::List(_)) if *f == i => {
                            "twice in the same target".to_owned()
                        }
                        (Place::List(f), Place::List(_)) => format!("already in targets[{f}]"),
                        (first, place) => format!("listed at {place} and already at {first}"),
                    };
                    problem(format!(
                        "targets[{i}]: agent {} user {user_id}{activity} is {again}",
                        target.agent_id
                    ));
                } else {
                    seen.insert(key, place);
                }
            }
        }
    }

    /// One entry per (target, user id), in configuration order, with its token resolved:
    /// the target's own token, else `api.token`, else the content of `api.token_file`.
    pub fn pairs(&self) -> Result<Vec<Pair>, SettingsError> {
        let file_token = match (&self.file_token, &self.api.token_file) {
            (Some(token), _) => Some(token.clone()),
            // Settings built by hand rather than loaded: read the file now.
            (None, Some(path)) if self.api.token.is_none() => Some(read_token_file(path)?),
            _ => None,
        };
        let mut pairs = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            let token = target
                .token
                .as_ref()
                .or(self.api.token.as_ref())
                .or(file_token.as_ref())
                .ok_or_else(|| {
                    SettingsError::Invalid(vec![format!(
                        "targets[{i}]: no token: set targets[{i}].token, api.token or \
                         api.token_file"
                    )])
                })?;
            let users = target
                .users(i)
                .map_err(|msg| SettingsError::Invalid(vec![msg]))?;
            for (user_id, _) in users {
                pairs.push(Pair {
                    key: PairKey::new(target.agent_id, user_id, target.activity_id.clone()),
                    token: token.clone(),
                });
            }
        }
        Ok(pairs)
    }
}
