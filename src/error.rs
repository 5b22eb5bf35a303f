//! The one cause-chain printer, for logs, run rows and the CLI's last line; and what log lines
//! leave out.

use std::sync::RwLock;

use crate::secret::Redactor;

/// Takes the database's URL, user, host and name out of log lines, once a process knows them.
static LOG_REDACTOR: RwLock<Option<Redactor>> = RwLock::new(None);

/// From now on, [`logged`] and [`for_log`] take out what `redactor` knows (the latest call wins:
/// a process talks to one database).
pub fn redact_logs_with(redactor: Redactor) {
    *LOG_REDACTOR.write().unwrap_or_else(|e| e.into_inner()) = Some(redactor);
}

/// `text` as a log line may carry it: without the database's URL, password, user, host or name.
pub fn for_log(text: &str) -> String {
    match &*LOG_REDACTOR.read().unwrap_or_else(|e| e.into_inner()) {
        Some(r) => r.apply(text),
        None => text.to_owned(),
    }
}

/// [`chain`] for a log line (see [`for_log`]).
pub fn logged(err: &dyn std::error::Error) -> String {
    for_log(&chain(err))
}

/// An error with its whole cause chain on one line. A cause whose text the message already
/// quotes is not repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(msg: &'static str, source: Option<E>) -> E {
        E {
            msg,
            source: source.map(Box::new),
        }
    }

    /// Every error field of a log line goes through [`logged`] or [`for_log`]: a new log line
    /// that printed a driver's error as it is would name the database again.
    #[test]
    fn every_logged_error_is_redacted() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let field = ["error", " = %"].concat();
        let mut raw = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains(&field) && !line.contains("logged(") && !line.contains("for_log(")
                {
                    raw.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            files.len() > 50,
            "read the crate's sources: {}",
            files.len()
        );
        assert!(
            raw.is_empty(),
            "errors logged unredacted:\n{}",
            raw.join("\n")
        );
    }

    #[test]
    fn causes_are_joined_once_each() {
        let err = e("outer", Some(e("middle", Some(e("root", None)))));
        assert_eq!(chain(&err), "outer: middle: root");

        let quoted = e("outer: middle", Some(e("middle", Some(e("root", None)))));
        assert_eq!(chain(&quoted), "outer: middle: root");
    }
}
