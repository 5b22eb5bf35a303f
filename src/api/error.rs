//! What can go wrong talking to the platform, in the user's terms.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use crate::domain::PairKey;

/// How many bytes of a bad body an error quotes.
const SNIPPET_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", unauthorized_message(*.agent_id, *.status, .origin, .detail))]
    Unauthorized {
        agent_id: i64,
        status: u16,
        /// Where the agent's token was configured ("targets[0].token in the file …", "the
        /// environment variable SZB_API__TOKEN"); empty when not known.
        origin: String,
        detail: String,
    },
    #[error(
        "agent {agent_id} user {user_id}: not found upstream (HTTP 404); check the target's agent_id and user_ids{detail}"
    )]
    NotFound {
        agent_id: i64,
        user_id: i64,
        detail: String,
    },
    #[error("the platform rejected the request (HTTP {status}): {snippet}")]
    BadRequest { status: u16, snippet: String },
    #[error("rate limited by the platform (HTTP 429), Retry-After {}", fmt_retry_after(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("upstream server error (HTTP {status}): {snippet}")]
    Server { status: u16, snippet: String },
    #[error("no answer within {} (api.timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error(
        "the platform sent nothing for {} (api.read_timeout)",
        humantime::format_duration(*.0)
    )]
    Stalled(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error(
        "response body larger than api.max_body_bytes ({})",
        crate::plural::plural(*limit, "byte", "bytes")
    )]
    TooLarge { limit: u64 },
    #[error("undecodable response body ({reason}); it starts with: {snippet:?}")]
    Decode { reason: String, snippet: String },
    #[error("the response's pager contradicts its items: {0}")]
    Inconsistent(String),
    #[error(
        "the platform answered pageSize {got} to a request for {asked}: it caps the page size; \
         set api.page_size = {got}"
    )]
    PageSizeCapped { asked: i64, got: i64 },
    #[error(
        "gave up after {}; last error: {last}",
        crate::plural::plural(*attempts, "attempt", "attempts")
    )]
    Exhausted { attempts: u32, last: Box<ApiError> },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A 401 is a token the platform does not know (a typo, an old one): the fix is in the
/// configuration, named by `origin`. A 403 is a known token without the rights: the fix is on
/// the platform's side, and only then is its feature list worth reading.
fn unauthorized_message(agent_id: i64, status: u16, origin: &str, detail: &str) -> String {
    let origin = if origin.is_empty() {
        "the token configured for this agent"
    } else {
        origin
    };
    if status == 403 {
        format!(
            "agent {agent_id}: the platform refused the token (HTTP 403): it knows the token \
             ({origin}) but does not let it read visits; ask the platform to enable 用户明细 (user \
             details) and 用户管理 (user management) for the account, third-party login \
             customisation, and the UID whitelist{detail}"
        )
    } else {
        format!(
            "agent {agent_id}: the platform refused the token (HTTP {status}): it does not know \
             it; check {origin}{detail}"
        )
    }
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    d.map_or_else(|| "not given".to_owned(), |d| format!("{}s", d.as_secs()))
}

impl ApiError {
    /// The upstream says it is overloaded: 429, 503, or no answer in time. The token's
    /// concurrency controller backs off.
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Timeout(_)
                | ApiError::Stalled(_)
                | ApiError::Server { status: 503, .. }
        )
    }

    /// No answer, or no whole body, in time: retried fewer times than other failures.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Timeout(_) | ApiError::Stalled(_))
    }

    /// The same error with `secret` (the request's token) cut out of every text the platform
    /// sent: a body may echo the request's headers back.
    pub(super) fn redacted(self, secret: &str) -> ApiError {
        let r = |text: String| redact(&text, secret);
        match self {
            ApiError::Unauthorized {
                agent_id,
                status,
                origin,
                detail,
            } => ApiError::Unauthorized {
                agent_id,
                status,
                origin,
                detail: r(detail),
            },
            ApiError::NotFound {
                agent_id,
                user_id,
                detail,
            } => ApiError::NotFound {
                agent_id,
                user_id,
                detail: r(detail),
            },
            ApiError::BadRequest { status, snippet } => ApiError::BadRequest {
                status,
                snippet: r(snippet),
            },
            ApiError::Server { status, snippet } => ApiError::Server {
                status,
                snippet: r(snippet),
            },
            ApiError::Transport(text) => ApiError::Transport(r(text)),
            ApiError::Decode { reason, snippet } => ApiError::Decode {
                reason: r(reason),
                snippet: r(snippet),
            },
            ApiError::Inconsistent(text) => ApiError::Inconsistent(r(text)),
            other => other,
        }
    }

    /// Worth another attempt within this run.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout(_)
                | ApiError::Stalled(_)
                | ApiError::Transport(_)
                | ApiError::Decode { .. }
                | ApiError::Inconsistent(_)
                // A proxy's error page can be huge once; a page of ours stays far below it.
                | ApiError::TooLarge { .. }
        )
    }
}

/// The error of an answer with `status`; `origin` says where the pair's token was configured.
pub(super) fn status_error(
    status: StatusCode,
    pair: &PairKey,
    retry_after: Option<Duration>,
    body: &[u8],
    origin: &str,
) -> ApiError {
    let snippet = snippet(body);
    let detail = if snippet.is_empty() {
        String::new()
    } else {
        format!(". The platform said: {snippet}")
    };
    match status.as_u16() {
        401 | 403 => ApiError::Unauthorized {
            agent_id: pair.agent_id,
            status: status.as_u16(),
            origin: origin.to_owned(),
            detail,
        },
        404 => ApiError::NotFound {
            agent_id: pair.agent_id,
            user_id: pair.user_id,
            detail,
        },
        429 => ApiError::RateLimited { retry_after },
        500..=599 => ApiError::Server {
            status: status.as_u16(),
            snippet,
        },
        // 408 and similar are worth another try; other 4xx will not change.
        408 | 425 => ApiError::Server {
            status: status.as_u16(),
            snippet,
        },
        s => ApiError::BadRequest { status: s, snippet },
    }
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::<Utc>::from(httpdate::parse_http_date(value).ok()?);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The first bytes of a body, as text, for error messages: control characters (a terminal's
/// escapes, line breaks that would forge log lines) become spaces.
pub(super) fn snippet(body: &[u8]) -> String {
    let end = body.len().min(SNIPPET_BYTES);
    let mut s: String = String::from_utf8_lossy(&body[..end])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > end {
        s.push('…');
    }
    s
}

/// `text` without `secret`: each occurrence becomes `[redacted]`, and a start of it left at
/// the end of a snippet cut short (`…`) is dropped.
pub(super) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let out = text.replace(secret, "[redacted]");
    let Some(cut) = out.strip_suffix('…') else {
        return out;
    };
    let started = (1..secret.len())
        .rev()
        .filter(|n| secret.is_char_boundary(*n))
        .find(|n| cut.ends_with(&secret[..*n]));
    match started {
        Some(n) => format!("{}[redacted]…", &cut[..cut.len() - n]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = Utc::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date((now + chrono::Duration::seconds(30)).into());
        let d = parse_retry_after(&later, now).unwrap();
        assert!((28..=30).contains(&d.as_secs()), "{d:?}");
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_body_echoing_the_token_is_quoted_without_it_even_when_cut_inside_it() {
        let token = "tok-echoed-4711";
        let pair = PairKey::new(1, 2, None);
        let whole = format!("{{\"error\":\"upstream down\",\"authorization\":\"Bearer {token}\"}}");
        let mut cut = "x".repeat(SNIPPET_BYTES - 11).into_bytes();
        cut.extend_from_slice(format!("Bearer {token} and more").as_bytes());

        for body in [whole.as_bytes(), &cut] {
            let err = status_error(StatusCode::BAD_GATEWAY, &pair, None, body, "").redacted(token);

            let msg = err.to_string();
            assert!(!msg.contains("tok-"), "{msg}");
            assert!(msg.contains("Bearer [redacted]"), "{msg}");
        }
        assert_eq!(
            redact("a\u{2026}", token),
            "a\u{2026}",
            "no start of the token, nothing cut"
        );
        let lines = snippet(b"line one\nFAKE log line\x1b[31m");
        assert!(
            !lines.contains('\n') && !lines.contains('\x1b'),
            "{lines:?}"
        );
    }

    #[test]
    fn unauthorized_names_the_agent_and_what_to_check() {
        let pair = PairKey::new(105131, 1, None);
        let origin = "targets[0].token in the file config/szb-sync.toml";
        let error = |status| status_error(status, &pair, None, b"{\"message\":\"bad\"}", origin);

        let unknown = error(StatusCode::UNAUTHORIZED).to_string();
        let forbidden = error(StatusCode::FORBIDDEN).to_string();

        // A 401 is a typo or an old token: it names where the token came from, and no
        // platform feature, which no typo fixes.
        assert_eq!(
            unknown,
            "agent 105131: the platform refused the token (HTTP 401): it does not know it; check \
             targets[0].token in the file config/szb-sync.toml. The platform said: \
             {\"message\":\"bad\"}"
        );
        // A 403: the token is known, the rights are missing; the feature list is the advice.
        assert!(
            forbidden.contains("agent 105131")
                && forbidden.contains("HTTP 403")
                && forbidden.contains(origin)
                && forbidden.contains("用户明细")
                && forbidden.contains("UID whitelist"),
            "{forbidden}"
        );
        assert!(!error(StatusCode::UNAUTHORIZED).is_retryable());
        assert!(
            status_error(StatusCode::UNAUTHORIZED, &pair, None, b"", "")
                .to_string()
                .ends_with("check the token configured for this agent")
        );
    }
}
