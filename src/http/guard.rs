//! What every answer of the listener goes through, outermost first: the security headers; the
//! `Host` check against DNS rebinding (when it listens on loopback); `http.token` for the page
//! and its JSON; and a limit on answers at once with a deadline for each, per group of routes,
//! so a flood of page loads never starves Prometheus or the probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use tokio::sync::Semaphore;

use super::line;
use crate::secret::Secret;

/// The longest an answer may take, waiting for its turn included.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The longest an answer waits for its turn before it is told the listener is busy.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Answers of `/metrics` and the probes at once.
pub const PROBES_AT_ONCE: usize = 8;
/// Answers of the page, its assets and its JSON at once; more wait for their turn.
pub const PAGES_AT_ONCE: usize = 32;

/// The paths that stay open without `http.token`, as Prometheus and Kubernetes expect.
const PROBES: [&str; 4] = ["/metrics", "/livez", "/readyz", "/healthz"];

/// `script-src 'self'`: the page's script and style are files of their own (no inline code), it
/// talks to its own origin only, and no other site may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The listener's rules, built once per listener.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The `Host` values accepted when the listener is on loopback; `None` on other addresses.
    hosts: Option<Arc<Vec<String>>>,
    token: Option<Secret>,
    probes: Arc<Semaphore>,
    pages: Arc<Semaphore>,
    limits: Limits,
}

/// How many answers at once, and how long each may wait and take.
#[derive(Debug, Clone, Copy)]
struct Limits {
    probes_at_once: usize,
    pages_at_once: usize,
    queue_wait: Duration,
    deadline: Duration,
}

const LIMITS: Limits = Limits {
    probes_at_once: PROBES_AT_ONCE,
    pages_at_once: PAGES_AT_ONCE,
    queue_wait: QUEUE_WAIT,
    deadline: DEADLINE,
};

impl Guard {
    /// The rules of a listener bound to `local`, with `http.token` when one is set.
    pub fn new(local: SocketAddr, token: Option<Secret>) -> Guard {
        Self::with_limits(local, token, LIMITS)
    }

    fn with_limits(local: SocketAddr, token: Option<Secret>, limits: Limits) -> Guard {
        let hosts = local.ip().is_loopback().then(|| {
            let port = local.port();
            let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
                .iter()
                .map(|h| format!("{h}:{port}"))
                .collect();
            if port == 80 {
                hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
            }
            Arc::new(hosts)
        });
        Guard {
            hosts,
            token,
            probes: Arc::new(Semaphore::new(limits.probes_at_once)),
            pages: Arc::new(Semaphore::new(limits.pages_at_once)),
            limits,
        }
    }
}

/// The middleware: every rule, in order, around every route.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let mut response = check(&guard, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn check(guard: &Guard, request: Request, next: Next) -> Response {
    if let Some(hosts) = &guard.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return line(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "misdirected: this listener is on loopback and answers to {} only (another \
                     name may be a DNS rebinding attack)",
                    hosts.join(", ")
                ),
            );
        }
    }
    let probe = PROBES.contains(&request.uri().path());
    if !probe
        && let Some(token) = &guard.token
        && !authorized(request.headers(), token)
    {
        let mut refused = line(
            StatusCode::UNAUTHORIZED,
            "unauthorized: the status page and /api/* need http.token: send `Authorization: \
             Bearer TOKEN`, or sign in with any user name and the token as the password",
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"szb-sync\", charset=\"UTF-8\""),
        );
        return refused;
    }
    let (turns, at_once) = match probe {
        true => (&guard.probes, guard.limits.probes_at_once),
        false => (&guard.pages, guard.limits.pages_at_once),
    };
    let Limits {
        queue_wait,
        deadline,
        ..
    } = guard.limits;
    let started = tokio::time::Instant::now();
    // The semaphores are never closed: an error is as good as no turn.
    let Ok(Ok(_turn)) = tokio::time::timeout(queue_wait, turns.acquire()).await else {
        return busy(at_once, queue_wait);
    };
    match tokio::time::timeout_at(started + deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => line(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "timed out: the answer took over {} ms (is the database slow? szb-sync's log may say)",
                deadline.as_millis()
            ),
        ),
    }
}

fn busy(at_once: usize, waited: Duration) -> Response {
    let mut response = line(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "busy: {at_once} answers of this kind were under way, and none ended within {} ms; \
             try again",
            waited.as_millis()
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `Authorization: Bearer TOKEN`, or `Basic` with any user and the token as the password (what
/// a browser sends once asked), compared in constant time.
fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(credentials.as_bytes(), token.expose().as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        let password = match decoded.iter().position(|b| *b == b':') {
            Some(at) => &decoded[at + 1..],
            None => return false,
        };
        return same(password, token.expose().as_bytes());
    }
    false
}

/// Equal bytes, in a time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tokio::sync::mpsc;

    /// A listener whose `/api/slow` never answers (each call reports that it began) and whose
    /// `/livez` answers at once, with these limits; its base URL.
    async fn slow_listener(limits: Limits) -> (String, mpsc::UnboundedReceiver<()>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (listener, local) = super::super::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (began, calls) = mpsc::unbounded_channel::<()>();
        let app = Router::new()
            .route(
                "/api/slow",
                get(move || {
                    let began = began.clone();
                    async move {
                        let _ = began.send(());
                        std::future::pending::<&'static str>().await
                    }
                }),
            )
            .route("/livez", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Guard::with_limits(local, None, limits),
                guard,
            ));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{local}"), calls)
    }

    async fn status(url: String) -> (u16, String) {
        let res = reqwest::get(url).await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_past_its_deadline_is_504_and_one_without_a_turn_is_503() {
        let limits = Limits {
            probes_at_once: 1,
            pages_at_once: 2,
            queue_wait: Duration::from_millis(100),
            deadline: Duration::from_secs(3600),
        };
        let (base, mut began) = slow_listener(limits).await;
        let holders: Vec<_> = (0..2)
            .map(|_| tokio::spawn(status(format!("{base}/api/slow"))))
            .collect();
        for _ in 0..2 {
            began.recv().await.unwrap();
        }

        let (code, body) = status(format!("{base}/api/slow")).await;
        let (probe, _) = status(format!("{base}/livez")).await;

        assert_eq!(code, 503, "{body}");
        assert!(body.starts_with("busy: 2 answers of this kind"), "{body}");
        assert_eq!(probe, 200, "the probes have turns of their own");
        holders.iter().for_each(|h| h.abort());

        let (base, _began) = slow_listener(Limits {
            deadline: Duration::from_millis(50),
            ..limits
        })
        .await;
        let (code, body) = status(format!("{base}/api/slow")).await;
        assert_eq!(code, 504, "{body}");
        assert!(
            body.starts_with("timed out: the answer took over 50 ms"),
            "{body}"
        );
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_bearer_token_or_basic_with_the_token_as_password_is_let_in() {
        let token = Secret::new("page-token-1");
        let basic = |userpass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(userpass)
            )
        };

        assert!(authorized(&with("Bearer page-token-1"), &token));
        assert!(authorized(&with("bearer  page-token-1 "), &token));
        assert!(authorized(&with(&basic("anyone:page-token-1")), &token));
        assert!(authorized(&with(&basic(":page-token-1")), &token));

        assert!(!authorized(&HeaderMap::new(), &token));
        assert!(!authorized(&with("Bearer page-token-2"), &token));
        assert!(!authorized(&with("Bearer page-token-1x"), &token));
        assert!(!authorized(&with(&basic("page-token-1")), &token));
        assert!(!authorized(&with(&basic("page-token-1:x")), &token));
        assert!(!authorized(&with("Basic !!!"), &token));
        assert!(!authorized(&with("Token page-token-1"), &token));
    }
}
