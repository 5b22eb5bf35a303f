//! Text the listener shows or the log writes that came from elsewhere (a pass's errors, a pair's
//! last error, a driver's message) may name the database: its URL, user, host and name.
//! [`Redactor`] takes them out. The command line's last error line keeps them: it answers the
//! person who typed the command, about their own configuration.

use std::sync::Arc;

use crate::secret::{Secret, redact_url};

/// What stands in for the database's URL.
const URL: &str = "[database]";
/// What stands in for its user, host, name or password.
const NAME: &str = "[redacted]";

/// Replaces the database's URL, password, user, host and name in text, for the listener.
#[derive(Clone, Default)]
pub struct Redactor {
    /// The URL as configured and as errors print it (password masked), longest first.
    urls: Arc<Vec<String>>,
    password: Option<Secret>,
    /// The user, host and database name in effect.
    names: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor([redacted])")
    }
}

impl Redactor {
    /// For the database at `url`, whose user, host and name in effect are `names` (defaults
    /// included: a URL without a user connects as the OS user).
    pub fn new(url: &Secret, names: Vec<String>) -> Redactor {
        let mut urls = vec![url.expose().to_owned(), redact_url(url.expose())];
        urls.retain(|u| !u.is_empty());
        urls.sort_by_key(|u| std::cmp::Reverse(u.len()));
        let password = url::Url::parse(url.expose()).ok().and_then(|u| {
            let p = u.password()?;
            let p = url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map_or_else(|| p.to_owned(), |(_, v)| v.into_owned());
            Some(Secret::new(p)).filter(|s| !s.is_empty())
        });
        let mut names: Vec<String> = names.into_iter().filter(|n| !n.is_empty()).collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names.dedup();
        Redactor {
            urls: Arc::new(urls),
            password,
            names: Arc::new(names),
        }
    }

    /// `text` without the database's URL, password, user, host or name.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for url in self.urls.iter() {
            text = text.replace(url.as_str(), URL);
        }
        if let Some(password) = &self.password {
            text = password.redact_in(&text);
        }
        for name in self.names.iter() {
            text = text.replace(&format!("\"{name}\""), &format!("\"{NAME}\""));
            text = replace_word(&text, name);
        }
        text
    }
}

/// `text` with each occurrence of `word` that stands alone (not inside a longer name or
/// number) replaced by [`NAME`].
fn replace_word(text: &str, word: &str) -> String {
    let part_of_name = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let alone = !before.is_some_and(part_of_name)
            && !after.is_some_and(|c| part_of_name(c) && c != '.');
        out.push_str(&rest[..at]);
        out.push_str(if alone { NAME } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(
            &Secret::new("postgres://szb_owner:p%40ss-w0rd@db.internal:5432/szb_prod"),
            vec![
                "szb_owner".to_owned(),
                "db.internal".to_owned(),
                "szb_prod".to_owned(),
            ],
        )
    }

    #[test]
    fn the_databases_url_user_host_name_and_password_are_taken_out() {
        let r = redactor();
        let text = "claiming pairs: cannot connect to Postgres at \
                    postgres://szb_owner:***@db.internal:5432/szb_prod: password authentication \
                    failed for user \"szb_owner\"; database \"szb_prod\" on db.internal. p@ss-w0rd";

        let shown = r.apply(text);

        assert_eq!(
            shown,
            "claiming pairs: cannot connect to Postgres at [database]: password authentication \
             failed for user \"[redacted]\"; database \"[redacted]\" on [redacted]. [redacted]"
        );
    }

    #[test]
    fn a_name_inside_a_longer_word_is_left_alone() {
        let r = Redactor::new(
            &Secret::new("postgres://root@db/szb"),
            vec!["root".to_owned(), "db".to_owned(), "szb".to_owned()],
        );

        assert_eq!(
            r.apply("database error while writing a page of szb-sync's dbx: rooted"),
            "database error while writing a page of szb-sync's dbx: rooted"
        );
        assert_eq!(
            r.apply("host db refused root"),
            "host [redacted] refused [redacted]"
        );
    }
}
