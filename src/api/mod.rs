//! The upstream client: `GET /api/v3/agent/:id/user/:userId/stats/visits`.
//!
//! It owns the wire format ([`wire`], serde structs shaped like the JSON) and hands the engine
//! validated [`Entry`] values. It retries what can be retried (5xx, timeouts, broken bodies,
//! 429 after its `Retry-After`) with exponential backoff and jitter, never a refused token, and
//! spaces requests by a budget shared by every pair that uses the same token ([`budget`]).
//! Bodies are read against a byte budget shared by every request, within a deadline
//! ([`body`]). The platform's `Date` is trusted up to our own clock ([`sane_upstream_now`]).

mod body;
mod budget;
pub mod concurrency;
mod error;
mod rate_cap;
mod repair;
mod wire;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{DATE, RETRY_AFTER};

pub use budget::RetryPolicy;
pub use error::{ApiError, parse_retry_after};

use body::{BodyBudget, Deadline};
use budget::Pacers;
use concurrency::Pace;
use error::status_error;

use crate::domain::{Entry, Order, PairKey, Window};
use crate::secret::Secret;
use crate::settings::ApiSettings;
use crate::telemetry::events::{Answer, Event, Feed};

/// Retries of an attempt that timed out: one, so a hanging platform costs a request two
/// deadlines (about a minute with the default `api.timeout`), not `1 + api.max_retries`.
const MAX_TIMEOUT_RETRIES: u32 = 1;

/// The furthest deadline, for an `api.timeout` that would overflow the clock.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// A platform `Date` further than this from our clock is a skew worth telling.
pub const LARGE_SKEW: Duration = Duration::from_secs(60);

/// One fetched and validated page.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    pub total: i64,
    pub entries: Vec<Entry>,
    /// The upstream's clock: its `Date` header, when it sent a readable one.
    pub server_date: Option<DateTime<Utc>>,
    /// Our clock when the answer arrived.
    pub local_now: DateTime<Utc>,
    /// Requests this page cost, retries included.
    pub attempts: u32,
    /// Strings (and numbers) in the body repaired so they can be stored (NUL, lone surrogates,
    /// invalid UTF-8, numbers past a double: see docs/how-sync-works.md, "Rejects").
    pub strings_cleaned: u64,
}

/// The client for the visits endpoint. Cheap to clone; clones share the request budgets.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: url::Url,
    timeout: Duration,
    read_timeout: Duration,
    bodies: BodyBudget,
    retry: RetryPolicy,
    pacers: Pacers,
    feed: Feed,
    /// Where each agent's token was configured, for the error of a refused one.
    token_origins: std::sync::Arc<std::collections::BTreeMap<i64, String>>,
}

impl ApiClient {
    pub fn new(settings: &ApiSettings) -> Result<Self, ApiError> {
        // One crypto provider for the whole process (reqwest and sqlx both use rustls + ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The deadlines are ours (body::Deadline), so a wait for the body budget can pause them.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("szb-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Client(e.to_string()))?;
        Ok(ApiClient {
            http,
            base_url: settings.base_url.clone(),
            timeout: settings.timeout,
            read_timeout: settings.read_timeout,
            bodies: BodyBudget::new(settings.max_body_bytes, settings.max_body_bytes_in_flight),
            retry: RetryPolicy {
                max_retries: settings.max_retries,
                max_timeout_retries: MAX_TIMEOUT_RETRIES,
                initial_backoff: settings.retry_backoff,
                max_backoff: Duration::from_secs(60),
                max_retry_after: settings.max_retry_after,
            },
            pacers: Pacers::new(settings.max_concurrency, settings.max_requests_per_second),
            feed: Feed::new(),
            token_origins: Default::default(),
        })
    }

    /// The same client, naming where each agent's token was configured
    /// ([`crate::settings::Settings::token_origins`]) when the platform refuses it.
    pub fn with_token_origins(mut self, origins: std::collections::BTreeMap<i64, String>) -> Self {
        self.token_origins = std::sync::Arc::new(origins);
        self
    }

    /// The same client, telling `feed` of each attempt and retry.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = feed;
        self
    }

    /// How each token's requests are paced now, for logs and metrics. Tokens are not named:
    /// the list follows no order a reader could map back to one.
    pub fn pace(&self) -> Vec<Pace> {
        self.pacers
            .all()
            .iter()
            .map(|p| p.controller.pace())
            .collect()
    }

    /// The URL of one window of a pair's list.
    pub fn url(&self, pair: &PairKey, window: &Window) -> url::Url {
        let mut url = self.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!(
            "{base_path}/api/v3/agent/{}/user/{}/stats/visits",
            pair.agent_id, pair.user_id
        ));
        {
            let mut q = url.query_pairs_mut();
            q.clear();
            q.append_pair("page", &window.page.to_string());
            q.append_pair("pageSize", &window.page_size.to_string());
            q.append_pair(
                "order",
                match window.order {
                    Order::Asc => "visitAt asc",
                    Order::Desc => "visitAt desc",
                },
            );
            if let Some(activity) = &pair.activity_filter {
                q.append_pair("activityId", activity);
            }
        }
        url
    }

    /// Fetches one window, retrying transient failures.
    pub async fn fetch(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
    ) -> Result<FetchedPage, ApiError> {
        self.fetch_counted(pair, token, window, &AtomicU32::new(0))
            .await
    }

    /// One attempt at one window, never retried: `check`'s probe, which must say at once what
    /// failed rather than wait out the retries.
    pub async fn probe(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
    ) -> Result<FetchedPage, ApiError> {
        self.fetch_once(pair, token, window).await
    }

    /// Like [`ApiClient::fetch`], adding one to `sent` as each attempt starts: a caller that
    /// drops fetches in flight still knows how many requests it made.
    pub async fn fetch_counted(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
        sent: &AtomicU32,
    ) -> Result<FetchedPage, ApiError> {
        let pacer = self.pacers.for_token(token);
        let (mut page, attempts) = self
            .retry
            .run(
                &pacer,
                || {
                    sent.fetch_add(1, Ordering::Relaxed);
                    self.fetch_once(pair, token, window)
                },
                |attempt, wait, err| {
                    self.feed.emit(Event::Retry {
                        pair,
                        page: window.page,
                        attempt,
                        wait,
                        rate_limited: matches!(err, ApiError::RateLimited { .. }),
                        error: err,
                    });
                },
            )
            .await?;
        page.attempts = attempts;
        Ok(page)
    }

    /// One attempt, told to the feed: its status (or that none came) and how long it took. An
    /// attempt dropped in flight (a fetch ahead that was aborted) is told too, without an answer,
    /// so the feed's requests are the requests made.
    async fn fetch_once(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
    ) -> Result<FetchedPage, ApiError> {
        let mut told = AttemptReport {
            feed: &self.feed,
            agent_id: pair.agent_id,
            started: std::time::Instant::now(),
            answer: Answer::NoAnswer,
        };
        // A body may echo the request's headers back: its text never carries the token on.
        self.attempt(pair, token, window, &mut told.answer)
            .await
            .map_err(|e| e.redacted(token.expose()))
    }

    async fn attempt(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
        answer: &mut Answer,
    ) -> Result<FetchedPage, ApiError> {
        let deadline = Deadline::start(self.timeout, self.read_timeout);
        let request = self
            .http
            .get(self.url(pair, window))
            // bearer_auth marks the header sensitive: never shown in reqwest's Debug output.
            .bearer_auth(token.expose())
            .send();
        let response = deadline
            .run(request)
            .await?
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        *answer = Answer::Status(status.as_u16());
        let local_now = Utc::now();
        let (server_date, retry_after) = clocks(response.headers(), local_now);
        let body = body::read(response, &self.bodies, deadline, |e| {
            self.transport_error(e)
        })
        .await?;
        if !status.is_success() {
            let origin = self
                .token_origins
                .get(&pair.agent_id)
                .map_or("", String::as_str);
            return Err(status_error(status, pair, retry_after, &body.bytes, origin));
        }
        // Items are checked against the platform's own clock (a visit from its future is
        // refused); what is settled is judged on the sane one below.
        let page = wire::decode_page(&body.bytes, pair, window, server_date.unwrap_or(local_now))?;
        drop(body);
        let server_date = server_date.map(|date| {
            let skew = date - local_now;
            if skew.abs().to_std().is_ok_and(|s| s > LARGE_SKEW) {
                self.feed.emit(Event::ClockSkew {
                    agent_id: pair.agent_id,
                    skew_seconds: skew.num_seconds(),
                });
            }
            sane_upstream_now(date, local_now, &page.entries)
        });
        Ok(FetchedPage {
            total: page.total,
            entries: page.entries,
            strings_cleaned: page.cleaned,
            server_date,
            local_now,
            attempts: 1,
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            // reqwest's message names the URL (no token: that travels in a header) and the cause.
            ApiError::Transport(crate::error::chain(&e))
        }
    }
}

/// Tells the feed of one attempt when dropped: at its end, or when it is dropped in flight.
struct AttemptReport<'a> {
    feed: &'a Feed,
    agent_id: i64,
    started: std::time::Instant,
    answer: Answer,
}

impl Drop for AttemptReport<'_> {
    fn drop(&mut self) {
        self.feed.emit(Event::Request {
            agent_id: self.agent_id,
            answer: self.answer,
            elapsed: self.started.elapsed(),
        });
    }
}

/// "Now" on the platform's clock, for deciding what is settled: its `Date`, but never ahead of
/// ours (a `Date` from the future would make open visits look settled), nor behind the newest
/// `lastOnlineAt` of a visit on the page when that is still behind ours (the platform wrote it,
/// so its clock has passed it). A platform whose clock runs ahead has its visits settle by our
/// clock instead: later, never early.
pub fn sane_upstream_now(
    date: DateTime<Utc>,
    local_now: DateTime<Utc>,
    entries: &[Entry],
) -> DateTime<Utc> {
    let newest = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Visit { visit, .. } => Some(visit.last_online_at()),
            Entry::Rejected { .. } => None,
        })
        .max();
    let floor = newest.map_or(date, |n| n.min(local_now));
    date.max(floor).min(local_now)
}

/// The upstream's `Date`, when readable, and its `Retry-After` as a wait. An HTTP-date
/// `Retry-After` is measured against the upstream's own clock (its `Date`), so a local clock
/// that is off does not stretch or shorten the wait.
fn clocks(
    headers: &reqwest::header::HeaderMap,
    local_now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<Duration>) {
    let server_date = headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(DateTime::<Utc>::from);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, server_date.unwrap_or(local_now)));
    (server_date, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(reqwest::header::HeaderName, String)]) -> reqwest::header::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_retry_after_date_is_measured_on_the_upstreams_clock() {
        let server_now = Utc::now();
        let local_now = server_now + chrono::Duration::hours(1);
        let at = |t: DateTime<Utc>| httpdate::fmt_http_date(t.into());
        let h = headers(&[
            (DATE, at(server_now)),
            (RETRY_AFTER, at(server_now + chrono::Duration::seconds(30))),
        ]);

        let (date, wait) = clocks(&h, local_now);

        assert!(date.is_some());
        let wait = wait.unwrap().as_secs();
        assert!((29..=30).contains(&wait), "waits 30 s, not 0: {wait}");
        // Without a Date header, our clock is all there is.
        let h = headers(&[(RETRY_AFTER, at(local_now + chrono::Duration::seconds(10)))]);
        let wait = clocks(&h, local_now).1.unwrap().as_secs();
        assert!((9..=10).contains(&wait), "{wait}");
        let h = headers(&[(RETRY_AFTER, "7".to_owned())]);
        assert_eq!(clocks(&h, local_now), (None, Some(Duration::from_secs(7))));
    }

    #[test]
    fn the_platforms_date_is_trusted_up_to_our_clock_and_down_to_its_newest_visit() {
        let now = Utc::now();
        let hours = chrono::Duration::hours;
        let page = |last_online: &[DateTime<Utc>]| -> Vec<Entry> {
            last_online
                .iter()
                .map(|t| Entry::Visit {
                    visit: crate::domain::Visit::new(
                        crate::domain::VisitParts {
                            agent_id: 1,
                            user_id: 1,
                            activity_id: "a".into(),
                            visit_at: *t - hours(1),
                            last_online_at: *t,
                            duration_minutes: 60,
                            extra: Default::default(),
                        },
                        now + hours(24 * 365),
                    )
                    .unwrap(),
                    activity: None,
                })
                .collect()
        };

        // A year ahead, while its visits are stamped by a right clock: ours.
        let open = page(&[now - hours(3), now]);
        assert_eq!(sane_upstream_now(now + hours(24 * 365), now, &open), now);
        // Behind ours, as its own visits are: its own, which settles nothing early.
        let behind = page(&[now - hours(6)]);
        assert_eq!(
            sane_upstream_now(now - hours(5), now, &behind),
            now - hours(5)
        );
        // Behind its own newest visit: at least that.
        assert_eq!(
            sane_upstream_now(now - hours(7), now, &behind),
            now - hours(6)
        );
        assert_eq!(sane_upstream_now(now - hours(7), now, &[]), now - hours(7));
    }

    #[test]
    fn the_pace_settings_reach_each_tokens_pacer() {
        let mut settings = crate::settings::Settings::default().api;
        settings.max_concurrency = 1;
        let client = ApiClient::new(&settings).unwrap();

        let pacer = client.pacers.for_token(&Secret::new("a"));

        assert_eq!(
            pacer.controller.pace().limit,
            1.0,
            "max_concurrency caps the start"
        );
        assert_eq!(client.pace().len(), 1);
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let client = ApiClient::new(&crate::settings::Settings::default().api).unwrap();
        let _ = client.pacers.for_token(&Secret::new("tok-very-secret"));
        assert!(!format!("{client:?}").contains("tok-very-secret"));
    }
}
