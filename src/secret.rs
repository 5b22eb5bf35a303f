//! A string that must never be printed: tokens and database URLs with passwords.

mod redact;

use std::fmt;

use serde::{Deserialize, Deserializer};

pub use redact::Redactor;

/// A secret value. `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
/// Clones share one copy: every pair of a target carries its token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into())
    }

    /// The secret itself. Call this only where the value leaves the process (an HTTP header, a
    /// database connection), never in a log line or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of this secret replaced by `[redacted]`.
    pub fn redact_in(&self, text: &str) -> String {
        if self.is_empty() {
            text.to_owned()
        } else {
            text.replace(self.expose(), "[redacted]")
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A database URL with its password replaced by `***`, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // libpq-style URLs may also carry it as a query parameter.
            if parsed.query().is_some() {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = matches!(k.as_ref(), "password" | "sslpassword");
                        (
                            k.into_owned(),
                            if secret {
                                "***".to_owned()
                            } else {
                                v.into_owned()
                            },
                        )
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "[unparsable url]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "tok-123");
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@db:5432/szb"),
            "postgres://bob:***@db:5432/szb"
        );
        assert_eq!(
            redact_url("postgres://app@db/szb?password=hunter2&sslmode=require"),
            "postgres://app@db/szb?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://root@127.0.0.1/szb"),
            "postgres://root@127.0.0.1/szb"
        );
    }
}
