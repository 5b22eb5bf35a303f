//! The one cause-chain printer, for logs, run rows and the CLI's last line.

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

    #[test]
    fn causes_are_joined_once_each() {
        let err = e("outer", Some(e("middle", Some(e("root", None)))));
        assert_eq!(chain(&err), "outer: middle: root");

        let quoted = e("outer: middle", Some(e("middle", Some(e("root", None)))));
        assert_eq!(chain(&quoted), "outer: middle: root");
    }
}
