//! The upstream client: `GET /api/v3/agent/:id/user/:userId/stats/visits`.
//!
//! It owns the wire format (serde structs shaped like the JSON, in [`wire`]) and hands the engine
//! validated [`Entry`] values. It retries what can be retried (5xx, timeouts, broken bodies,
//! 429 after its `Retry-After`) with exponential backoff and jitter, never a refused token, and
//! spaces requests by a budget shared by every pair that uses the same token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, DATE, RETRY_AFTER};
use tokio::time::Instant;

use crate::domain::{Entry, PairKey};
use crate::mark::{Order, Window};
use crate::secret::Secret;
use crate::settings::ApiSettings;

/// How many bytes of a bad body an error quotes.
const SNIPPET_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "agent {agent_id}: the platform refused the token (HTTP {status}). Check the token configured \
         for this agent, and ask the platform to enable 用户明细 (user details) and 用户管理 (user \
         management) for the account, third-party login customisation, and the UID whitelist{detail}"
    )]
    Unauthorized {
        agent_id: i64,
        status: u16,
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
    #[error("no answer within {0:?} (api.timeout)")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("response body larger than api.max_body_bytes ({limit} bytes)")]
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
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: Box<ApiError> },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    d.map_or_else(|| "not given".to_owned(), |d| format!("{}s", d.as_secs()))
}

impl ApiError {
    /// Worth another attempt within this run.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout(_)
                | ApiError::Transport(_)
                | ApiError::Decode { .. }
                | ApiError::Inconsistent(_)
                // A proxy's error page can be huge once; a page of ours stays far below it.
                | ApiError::TooLarge { .. }
        )
    }
}

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
}

/// Spaces requests of one token `interval` apart.
#[derive(Debug)]
struct Budget {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Budget {
    async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Retry timings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter over the upper half: `[b/2, b]`, `b = initial·2^n`.
    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_backoff);
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// The client for the visits endpoint. Cheap to clone; clones share the request budgets.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: url::Url,
    timeout: Duration,
    max_body_bytes: u64,
    retry: RetryPolicy,
    interval: Duration,
    /// Keyed by a hash of the token, so the map (and `Debug`) never holds a token.
    budgets: Arc<Mutex<HashMap<u64, Arc<Budget>>>>,
}

impl ApiClient {
    pub fn new(settings: &ApiSettings) -> Result<Self, ApiError> {
        // One crypto provider for the whole process (reqwest and sqlx both use rustls + ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("szb-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Client(e.to_string()))?;
        let rps = settings.max_requests_per_second;
        Ok(ApiClient {
            http,
            base_url: settings.base_url.clone(),
            timeout: settings.timeout,
            max_body_bytes: settings.max_body_bytes,
            retry: RetryPolicy {
                max_retries: settings.max_retries,
                initial_backoff: settings.retry_backoff,
                max_backoff: Duration::from_secs(60),
                max_retry_after: settings.max_retry_after,
            },
            interval: if rps > 0.0 {
                Duration::from_secs_f64(1.0 / rps)
            } else {
                Duration::ZERO
            },
            budgets: Arc::default(),
        })
    }

    fn budget(&self, token: &Secret) -> Arc<Budget> {
        use std::hash::{BuildHasher, RandomState};
        // One RandomState per process would do; a fixed one keeps the key stable across clones.
        static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let key = KEYS.get_or_init(RandomState::new).hash_one(token.expose());
        let mut budgets = self.budgets.lock().expect("budget map poisoned");
        budgets
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Budget {
                    interval: self.interval,
                    next: tokio::sync::Mutex::new(Instant::now()),
                })
            })
            .clone()
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
        let budget = self.budget(token);
        let mut attempts = 0;
        loop {
            budget.acquire().await;
            attempts += 1;
            let err = match self.fetch_once(pair, token, window).await {
                Ok(mut page) => {
                    page.attempts = attempts;
                    return Ok(page);
                }
                Err(err) => err,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            if attempts > self.retry.max_retries {
                return Err(ApiError::Exhausted {
                    attempts,
                    last: Box::new(err),
                });
            }
            let wait = match &err {
                ApiError::RateLimited {
                    retry_after: Some(after),
                } => (*after).min(self.retry.max_retry_after),
                _ => self.retry.backoff(attempts - 1),
            };
            tracing::warn!(%pair, page = window.page, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch_once(
        &self,
        pair: &PairKey,
        token: &Secret,
        window: &Window,
    ) -> Result<FetchedPage, ApiError> {
        let response = self
            .http
            .get(self.url(pair, window))
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let local_now = Utc::now();
        let server_date = response
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(DateTime::<Utc>::from);
        let upstream_now = server_date.unwrap_or(local_now);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, upstream_now));
        let body = self.read_body(response).await?;
        if !status.is_success() {
            return Err(status_error(status, pair, retry_after, &body));
        }
        let (total, entries) = wire::decode_page(&body, pair, window, upstream_now)?;
        Ok(FetchedPage {
            total,
            entries,
            server_date,
            local_now,
            attempts: 1,
        })
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ApiError> {
        let limit = self.max_body_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(ApiError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(ApiError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            // reqwest's message names the URL (no token: that travels in a header) and the cause.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            ApiError::Transport(msg)
        }
    }
}

fn status_error(
    status: StatusCode,
    pair: &PairKey,
    retry_after: Option<Duration>,
    body: &[u8],
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

/// The first bytes of a body, as text, for error messages.
fn snippet(body: &[u8]) -> String {
    let end = body.len().min(SNIPPET_BYTES);
    let mut s = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > end {
        s.push('…');
    }
    s
}

/// The JSON as the platform sends it. Nothing here leaves this module.
mod wire {
    use chrono::{DateTime, Utc};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};

    use super::{ApiError, snippet};
    use crate::domain::{Activity, Entry, PairKey, Reject, Visit};
    use crate::mark::Window;

    /// Longest plausible visit: a year, in minutes.
    const MAX_DURATION_MINUTES: i64 = 366 * 24 * 60;

    /// Items stay raw until each is validated on its own: one bad item must not sink the page.
    #[derive(Deserialize)]
    struct Envelope<'a> {
        pager: Pager,
        #[serde(borrow)]
        items: Vec<&'a RawValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Pager {
        page: Option<i64>,
        page_size: Option<i64>,
        total: i64,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireVisit<'a> {
        visit_at: String,
        last_online_at: String,
        duration: i64,
        user_id: i64,
        activity_id: String,
        #[serde(borrow)]
        activity: Option<&'a RawValue>,
    }

    const VISIT_FIELDS: &[&str] = &[
        "visitAt",
        "lastOnlineAt",
        "duration",
        "userId",
        "activityId",
        "activity",
    ];

    const ACTIVITY_FIELDS: &[&str] = &[
        "id",
        "agentId",
        "subagentId",
        "categoryId",
        "groupId",
        "name",
        "status",
        "isPushing",
        "isArchived",
        "startedAt",
        "endedAt",
        "createdAt",
        "updatedAt",
        "updateAt",
        "pushDomain",
        "pullDomain",
    ];

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireActivity {
        id: String,
        agent_id: Option<i64>,
        subagent_id: Option<i64>,
        category_id: Option<i64>,
        group_id: Option<i64>,
        name: Option<String>,
        status: Option<String>,
        is_pushing: Option<bool>,
        is_archived: Option<bool>,
        started_at: Option<String>,
        ended_at: Option<String>,
        created_at: Option<String>,
        updated_at: Option<String>,
        /// The doc's table spells it `updateAt`; its sample says `updatedAt`. Accept both.
        update_at: Option<String>,
        push_domain: Option<String>,
        pull_domain: Option<String>,
    }

    /// Deserializes `T` from one JSON object, with the failing field's path in the error.
    fn typed<'a, T: Deserialize<'a>>(json: &'a str, prefix: &str) -> Result<T, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            match (prefix, path.as_str()) {
                ("", _) => e.to_string(),
                (p, ".") => format!("{p}: {}", e.inner()),
                (p, path) => format!("{p}.{path}: {}", e.inner()),
            }
        })
    }

    /// The fields of a JSON object this version does not know, kept verbatim.
    fn unknown_fields(json: &str, known: &[&str]) -> Result<Map<String, Value>, String> {
        let all: Vec<(String, &RawValue)> =
            serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(json)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .collect();
        all.into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_str(v.get()).map_err(|e| e.to_string())?)))
            .collect()
    }

    /// Decodes and checks a whole page; items that fail validation become rejects.
    pub(super) fn decode_page(
        body: &[u8],
        pair: &PairKey,
        window: &Window,
        now: DateTime<Utc>,
    ) -> Result<(i64, Vec<Entry>), ApiError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| ApiError::Decode {
            reason: e.to_string(),
            snippet: snippet(body),
        })?;
        let n = envelope.items.len() as i64;
        let entries: Vec<Entry> = envelope
            .items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                decode_item(raw, pair, now).map_err(|reason| ApiError::Decode {
                    reason: format!("item {i}: {reason}"),
                    snippet: snippet(raw.get().as_bytes()),
                })
            })
            .collect::<Result<_, _>>()?;
        let pager = envelope.pager;
        let asked = i64::from(window.page_size);
        let offset = window.offset();
        let problem = if pager.page.is_some_and(|p| p != window.page) {
            Some(format!(
                "asked for page {}, pager says {:?}",
                window.page, pager.page
            ))
        } else if let Some(got) = pager.page_size.filter(|s| *s != asked) {
            return Err(ApiError::PageSizeCapped { asked, got });
        } else if n > asked {
            Some(format!("{n} items on a page of {asked}"))
        } else if pager.total < 0 {
            Some(format!("negative total {}", pager.total))
        } else if n > 0 && offset + n > pager.total {
            Some(format!(
                "{n} items at offset {offset} but total {}",
                pager.total
            ))
        } else if n < asked && offset + n < pager.total {
            Some(format!(
                "short page of {n} at offset {offset} but total {}",
                pager.total
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(ApiError::Inconsistent(p));
        }
        Ok((pager.total, entries))
    }

    /// One item: a visit, or a reject kept whole. An item that is not even a JSON value we can
    /// hold (nested past serde_json's depth limit) fails the page instead.
    fn decode_item(raw: &RawValue, pair: &PairKey, now: DateTime<Utc>) -> Result<Entry, String> {
        let reason = match validate(raw.get(), pair, now) {
            Ok((visit, activity)) => return Ok(Entry::Visit { visit, activity }),
            Err(reason) => reason,
        };
        // Only a rejected item is parsed into a tree, to keep it whole.
        let raw: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        Ok(Entry::Rejected {
            visit_at: raw
                .get("visitAt")
                .and_then(Value::as_str)
                .and_then(|s| time(s).ok()),
            activity_id: raw
                .get("activityId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            last_online_at: raw
                .get("lastOnlineAt")
                .and_then(Value::as_str)
                .and_then(|s| time(s).ok()),
            reject: Reject { raw, reason },
        })
    }

    fn validate(
        json: &str,
        pair: &PairKey,
        now: DateTime<Utc>,
    ) -> Result<(Visit, Option<Activity>), String> {
        // The path names the field, also for type errors (`duration: invalid type …`).
        let wire: WireVisit<'_> = typed(json, "")?;
        let visit_at = time(&wire.visit_at).map_err(|e| format!("visitAt: {e}"))?;
        let last_online_at =
            time(&wire.last_online_at).map_err(|e| format!("lastOnlineAt: {e}"))?;
        if wire.user_id != pair.user_id {
            return Err(format!(
                "userId {} differs from the requested user {}",
                wire.user_id, pair.user_id
            ));
        }
        if wire.activity_id.trim().is_empty() {
            return Err("activityId is empty".to_owned());
        }
        if !(0..=MAX_DURATION_MINUTES).contains(&wire.duration) {
            return Err(format!(
                "duration {} minutes is out of range 0..={MAX_DURATION_MINUTES}",
                wire.duration
            ));
        }
        let horizon = now + chrono::Duration::days(1);
        if visit_at > horizon || last_online_at > horizon {
            return Err(format!(
                "visitAt {visit_at} or lastOnlineAt {last_online_at} lies in the future"
            ));
        }
        if visit_at.timestamp() < 946_684_800 {
            return Err(format!("visitAt {visit_at} is before 2000"));
        }
        let activity = match wire.activity {
            None => None,
            Some(raw) => {
                let a: WireActivity = typed(raw.get(), "activity")?;
                if a.id != wire.activity_id {
                    return Err(format!(
                        "activity.id {} differs from activityId {}",
                        a.id, wire.activity_id
                    ));
                }
                let extra = unknown_fields(raw.get(), ACTIVITY_FIELDS)?;
                Some(activity(a, extra)?)
            }
        };
        let visit = Visit {
            agent_id: pair.agent_id,
            user_id: wire.user_id,
            activity_id: wire.activity_id,
            visit_at,
            last_online_at,
            duration_minutes: wire.duration as i32,
            extra: unknown_fields(json, VISIT_FIELDS)?,
        };
        Ok((visit, activity))
    }

    fn activity(a: WireActivity, extra: Map<String, Value>) -> Result<Activity, String> {
        let opt = |field: &str, v: Option<String>| -> Result<Option<DateTime<Utc>>, String> {
            v.map(|s| time(&s).map_err(|e| format!("activity.{field}: {e}")))
                .transpose()
        };
        Ok(Activity {
            started_at: opt("startedAt", a.started_at)?,
            ended_at: opt("endedAt", a.ended_at)?,
            created_at: opt("createdAt", a.created_at)?,
            updated_at: match a.updated_at {
                Some(s) => opt("updatedAt", Some(s))?,
                None => opt("updateAt", a.update_at)?,
            },
            id: a.id,
            agent_id: a.agent_id,
            subagent_id: a.subagent_id,
            category_id: a.category_id,
            group_id: a.group_id,
            name: a.name,
            status: a.status,
            is_pushing: a.is_pushing,
            is_archived: a.is_archived,
            push_domain: a.push_domain,
            pull_domain: a.pull_domain,
            extra,
        })
    }

    fn time(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::mark::Order;

        /// The doc's sample response, verbatim.
        const SAMPLE: &str = r#"{
    "pager":{
        "page":1,
        "pageSize":10,
        "total":2
    },
    "items":[{
            "activity":{
                "isArchived":false,
                "isPushing":false,
                "id":"10096289",
                "agentId":105131,
                "subagentId":null,
                "categoryId":1,
                "name":"这是一场直播",
                "status":"disabled",
                "startedAt":"2020-06-24T00:00:00.000Z",
                "endedAt":"2020-06-24T05:36:51.878Z",
                "pushDomain":"push.shangzhibo.tv",
                "pullDomain":"play.shangzhibo.tv",
                "groupId":-1,
                "createdAt":"2020-06-22T03:06:29.000Z",
                "updatedAt":"2020-06-24T05:37:26.322Z"
            },
            "visitAt":"2020-06-24T04:28:02.000Z",
            "lastOnlineAt":"2020-06-24T04:28:05.000Z",
            "duration":0,
            "userId":15460259,
            "activityId":"10096289"
        }, {
            "activity":{
                "isArchived":false,
                "isPushing":false,
                "id":"10096289",
                "agentId":105131,
                "subagentId":null,
                "categoryId":1,
                "name":"这是一场直播",
                "status":"disabled",
                "startedAt":"2020-06-24T00:00:00.000Z",
                "endedAt":"2020-06-24T05:36:51.878Z",
                "pushDomain":"push.shangzhibo.tv",
                "pullDomain":"play.shangzhibo.tv",
                "groupId":-1,
                "createdAt":"2020-06-22T03:06:29.000Z",
                "updatedAt":"2020-06-24T05:37:26.322Z"
            },
            "visitAt":"2020-06-24T01:40:01.000Z",
            "lastOnlineAt":"2020-06-24T01:44:04.000Z",
            "duration":4,
            "userId":15460259,
            "activityId":"10096289"
        }]
}"#;

        fn pair() -> PairKey {
            PairKey::new(105131, 15460259, None)
        }

        fn window() -> Window {
            Window {
                page: 1,
                page_size: 10,
                order: Order::Desc,
            }
        }

        fn t(s: &str) -> DateTime<Utc> {
            time(s).unwrap()
        }

        #[test]
        fn the_docs_sample_decodes_exactly() {
            let (total, entries) =
                decode_page(SAMPLE.as_bytes(), &pair(), &window(), Utc::now()).unwrap();
            assert_eq!(total, 2);
            let Entry::Visit { visit, activity } = &entries[1] else {
                panic!("rejected: {:?}", entries[1]);
            };
            assert_eq!(
                visit,
                &Visit {
                    agent_id: 105131,
                    user_id: 15460259,
                    activity_id: "10096289".into(),
                    visit_at: t("2020-06-24T01:40:01.000Z"),
                    last_online_at: t("2020-06-24T01:44:04.000Z"),
                    duration_minutes: 4,
                    extra: Map::new(),
                }
            );
            assert_eq!(
                activity.as_ref().unwrap(),
                &Activity {
                    id: "10096289".into(),
                    agent_id: Some(105131),
                    subagent_id: None,
                    category_id: Some(1),
                    group_id: Some(-1),
                    name: Some("这是一场直播".into()),
                    status: Some("disabled".into()),
                    is_pushing: Some(false),
                    is_archived: Some(false),
                    started_at: Some(t("2020-06-24T00:00:00.000Z")),
                    ended_at: Some(t("2020-06-24T05:36:51.878Z")),
                    created_at: Some(t("2020-06-22T03:06:29.000Z")),
                    updated_at: Some(t("2020-06-24T05:37:26.322Z")),
                    push_domain: Some("push.shangzhibo.tv".into()),
                    pull_domain: Some("play.shangzhibo.tv".into()),
                    extra: Map::new(),
                }
            );
            assert!(matches!(&entries[0], Entry::Visit { .. }));
        }

        fn one_item(item: Value) -> Entry {
            let body = serde_json::json!({"pager": {"page": 1, "pageSize": 10, "total": 1}, "items": [item]});
            let (_, mut entries) =
                decode_page(body.to_string().as_bytes(), &pair(), &window(), Utc::now()).unwrap();
            entries.remove(0)
        }

        fn sample_item() -> Value {
            let v: Value = serde_json::from_str(SAMPLE).unwrap();
            v["items"][0].clone()
        }

        #[test]
        fn update_at_spelling_and_unknown_fields_are_kept() {
            let mut item = sample_item();
            let a = item["activity"].as_object_mut().unwrap();
            let updated = a.remove("updatedAt").unwrap();
            a.insert("updateAt".into(), updated);
            a.insert("coverUrl".into(), "x.png".into());
            item["watchedOn"] = "mobile".into();
            let Entry::Visit { visit, activity } = one_item(item) else {
                panic!()
            };
            let activity = activity.unwrap();
            assert_eq!(activity.updated_at, Some(t("2020-06-24T05:37:26.322Z")));
            assert_eq!(activity.extra["coverUrl"], "x.png");
            assert_eq!(visit.extra["watchedOn"], "mobile");
        }

        #[test]
        fn null_activity_and_null_ended_at_are_accepted() {
            let mut item = sample_item();
            item["activity"]["endedAt"] = Value::Null;
            let Entry::Visit { activity, .. } = one_item(item.clone()) else {
                panic!()
            };
            assert_eq!(activity.unwrap().ended_at, None);
            item["activity"] = Value::Null;
            assert!(matches!(
                one_item(item),
                Entry::Visit { activity: None, .. }
            ));
        }

        #[test]
        fn bad_items_become_rejects_that_name_the_problem() {
            let cases = [
                ("visitAt", Value::from("yesterday"), "visitAt"),
                ("userId", Value::Null, "userId"),
                ("duration", Value::from("4"), "duration"),
                ("duration", Value::from(99_999_999), "duration"),
                ("userId", Value::from(1), "differs from the requested user"),
            ];
            for (field, value, expect) in cases {
                let mut item = sample_item();
                if value.is_null() {
                    item.as_object_mut().unwrap().remove(field);
                } else {
                    item[field] = value;
                }
                match one_item(item) {
                    Entry::Rejected { reject, .. } => {
                        assert!(reject.reason.contains(expect), "{field}: {}", reject.reason)
                    }
                    other => panic!("{field} accepted: {other:?}"),
                }
            }
        }

        #[test]
        fn a_capped_page_size_says_which_setting_to_change() {
            let body = SAMPLE.replace("\"pageSize\":10", "\"pageSize\":5");
            let err = decode_page(body.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
            assert!(!err.is_retryable());
            assert!(err.to_string().contains("set api.page_size = 5"), "{err}");
        }

        #[test]
        fn a_pager_that_contradicts_the_items_is_an_error() {
            let body = SAMPLE.replace("\"total\":2", "\"total\":0");
            let err = decode_page(body.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
            assert!(matches!(err, ApiError::Inconsistent(_)), "{err}");
        }

        #[test]
        fn html_and_deep_nesting_are_decode_errors() {
            let err =
                decode_page(b"<html>oops</html>", &pair(), &window(), Utc::now()).unwrap_err();
            assert!(err.to_string().contains("<html>oops"), "{err}");
            let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
            let err = decode_page(deep.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
            assert!(matches!(err, ApiError::Decode { .. }));
        }
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
    fn debug_output_never_shows_a_token() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ApiClient::new(&crate::settings::Settings::default().api).unwrap();
        let _ = client.budget(&Secret::new("tok-very-secret"));
        assert!(!format!("{client:?}").contains("tok-very-secret"));
    }

    #[test]
    fn unauthorized_names_the_agent_and_what_to_check() {
        let pair = PairKey::new(105131, 1, None);
        let err = status_error(
            StatusCode::UNAUTHORIZED,
            &pair,
            None,
            b"{\"message\":\"bad token\"}",
        );
        let msg = err.to_string();
        assert!(
            msg.contains("agent 105131")
                && msg.contains("用户明细")
                && msg.contains("UID whitelist"),
            "{msg}"
        );
        assert!(!err.is_retryable());
    }
}
