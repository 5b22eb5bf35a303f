//! The endpoint: authentication, query validation, faults, one page of the list as JSON, and
//! serving it on a socket.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::handle::Simulator;
use crate::world::{Entry, Fault, Hostile, RequestInfo, TruthActivity, World};

const VISITS_ROUTE: &str = "/api/v3/agent/{id}/user/{user_id}/stats/visits";
/// The simulator's own routes, for a benchmark driving it from another process.
const STATS_ROUTE: &str = "/_sim/stats";
const CONFIG_ROUTE: &str = "/_sim/config";
const ARRIVALS_ROUTE: &str = "/_sim/arrivals";
const DEFAULT_PAGE_SIZE: u64 = 10;
const MAX_PAGE_SIZE: u64 = 1000;
// Serving a request.
impl World {
    /// Counts a request and takes its fault, if any: a queued one, else a 429 when the
    /// request is over the rate limit.
    fn begin_request(&mut self, ids: Option<(i64, i64)>) -> (u64, Option<Fault>) {
        self.request_count += 1;
        let now = std::time::Instant::now();
        self.requests_span = Some(
            self.requests_span
                .map_or((now, now), |(first, _)| (first, now)),
        );
        if let Some(pair) = ids {
            *self.requests_by_pair.entry(pair).or_default() += 1;
        }
        let fault = self.faults.pop_front().or_else(|| {
            let wait = self.rate_limit.as_mut()?.take().err()?;
            self.rate_limited += 1;
            Some(Fault::TooManyRequests {
                retry_after: wait.to_string(),
            })
        });
        (self.request_count, fault)
    }

    fn run_before_request(&mut self, info: &RequestInfo) {
        if let Some(mut hook) = self.before_request.take() {
            hook(self, info);
            // Keep the hook unless it installed a replacement.
            if self.before_request.is_none() {
                self.before_request = Some(hook);
            }
        }
    }

    /// Answers a visits request (after any `Slow` delay), applying its fault.
    fn finish_request(
        &mut self,
        request_no: u64,
        ids: Option<(i64, i64)>,
        params: &RawParams,
        token: Option<&str>,
        fault: Option<Fault>,
    ) -> Response {
        let lenient = params.lenient();
        if let Some((agent_id, user_id)) = ids {
            let info = RequestInfo {
                agent_id,
                user_id,
                page: lenient.page,
                page_size: lenient.page_size,
                order_desc: lenient.order_desc,
                activity_id: lenient.activity_id.clone(),
                request_no,
            };
            self.run_before_request(&info);
        }
        let now = self.now();
        match fault {
            Some(Fault::Status(code)) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return respond(now, status, error_body("simulated upstream failure"));
            }
            Some(Fault::TooManyRequests { retry_after }) => {
                let mut response = respond(
                    now,
                    StatusCode::TOO_MANY_REQUESTS,
                    error_body("too many requests"),
                );
                if let Ok(value) = HeaderValue::from_str(&retry_after) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
            Some(Fault::NotJson) => {
                let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                            <body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>";
                return respond(now, StatusCode::OK, html.as_bytes().to_vec());
            }
            Some(Fault::DeepNesting(depth)) => {
                let body = format!(
                    r#"{{"pager":{{"page":{},"pageSize":{},"total":1}},"items":{}{}}}"#,
                    lenient.page,
                    lenient.page_size,
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                return respond(now, StatusCode::OK, body.into_bytes());
            }
            _ => {}
        }
        let Some((agent_id, user_id)) = ids else {
            return respond(
                now,
                StatusCode::BAD_REQUEST,
                error_body("agent id and user id must be integers"),
            );
        };
        match self.page(agent_id, user_id, params, token) {
            Ok(page) => respond(now, StatusCode::OK, page.render(fault.as_ref())),
            Err((status, message)) => respond(now, status, error_body(&message)),
        }
    }

    /// The normal answer: auth, validation, then one page of the (filtered, ordered) list.
    fn page(
        &mut self,
        agent_id: i64,
        user_id: i64,
        params: &RawParams,
        token: Option<&str>,
    ) -> Result<PageOut, (StatusCode, String)> {
        let agent = self
            .agents
            .get(&agent_id)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("agent {agent_id} not found")))?;
        if token != Some(agent.token.as_str()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("invalid or missing access token for agent {agent_id}"),
            ));
        }
        if agent.forbidden {
            return Err((
                StatusCode::FORBIDDEN,
                format!("用户明细 is not enabled for agent {agent_id}"),
            ));
        }
        let query = params
            .validate()
            .map_err(|m| (StatusCode::BAD_REQUEST, m))?;

        let mut listed: Vec<&Entry> = agent
            .users
            .get(&user_id)
            .map(|u| {
                u.entries
                    .iter()
                    .filter(|e| e.matches(query.activity_id.as_deref()))
                    .collect()
            })
            .unwrap_or_default();
        if query.order_desc {
            // Stable, so ties keep insertion order in both directions.
            listed.sort_by_key(|e| std::cmp::Reverse(e.sort_at()));
        }
        if self.shuffle_ties {
            shuffle_ties(&mut listed, &mut self.rng);
        }
        let total = listed.len() as u64;
        let offset = (query.page - 1).saturating_mul(query.page_size);
        let items: Vec<WireItem<'_>> = listed
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(query.page_size as usize)
            .map(|e| WireItem::new(e, &self.activities))
            .collect();
        Ok(PageOut {
            pager: WirePager {
                page: query.page,
                page_size: query.page_size,
                total,
            },
            item_count: items.len(),
            items_json: items_json(&items),
        })
    }
}

/// Shuffles each run of entries sharing a `visitAt`, leaving the order between runs alone.
fn shuffle_ties(listed: &mut [&Entry], rng: &mut StdRng) {
    let mut start = 0;
    while start < listed.len() {
        let key = listed[start].sort_at();
        let run = listed[start..]
            .iter()
            .take_while(|e| e.sort_at() == key)
            .count();
        listed[start..start + run].shuffle(rng);
        start += run;
    }
}

#[derive(Default)]
struct RawParams {
    page: Option<String>,
    page_size: Option<String>,
    order: Option<String>,
    activity_id: Option<String>,
}

/// A validated query.
struct VisitsQuery {
    page: u64,
    page_size: u64,
    order_desc: bool,
    activity_id: Option<String>,
}

impl RawParams {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "page" => &mut params.page,
                "pageSize" => &mut params.page_size,
                "order" => &mut params.order,
                "activityId" => &mut params.activity_id,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }

    fn validate(&self) -> Result<VisitsQuery, String> {
        Ok(VisitsQuery {
            page: parse_page(self.page.as_deref())?,
            page_size: parse_page_size(self.page_size.as_deref())?,
            order_desc: parse_order(self.order.as_deref())?,
            activity_id: self.activity_filter(),
        })
    }

    /// The query with defaults in place of anything invalid, for [`RequestInfo`].
    fn lenient(&self) -> VisitsQuery {
        VisitsQuery {
            page: parse_page(self.page.as_deref()).unwrap_or(1),
            page_size: parse_page_size(self.page_size.as_deref()).unwrap_or(DEFAULT_PAGE_SIZE),
            order_desc: parse_order(self.order.as_deref()).unwrap_or(true),
            activity_id: self.activity_filter(),
        }
    }

    fn activity_filter(&self) -> Option<String> {
        self.activity_id.clone().filter(|a| !a.is_empty())
    }
}

fn parse_page(value: Option<&str>) -> Result<u64, String> {
    let Some(s) = value else { return Ok(1) };
    s.parse::<u64>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("page must be an integer >= 1, got {s:?}"))
}

fn parse_page_size(value: Option<&str>) -> Result<u64, String> {
    let Some(s) = value else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
        .ok_or_else(|| format!("pageSize must be an integer in 1..={MAX_PAGE_SIZE}, got {s:?}"))
}

fn parse_order(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("visitAt desc") => Ok(true),
        Some("visitAt asc") => Ok(false),
        Some(other) => Err(format!(
            "order must be \"visitAt asc\" or \"visitAt desc\", got {other:?}"
        )),
    }
}

/// One page, ready to render (possibly spoiled by a fault).
struct PageOut {
    pager: WirePager,
    item_count: usize,
    items_json: Vec<u8>,
}

impl PageOut {
    fn render(mut self, fault: Option<&Fault>) -> Vec<u8> {
        if let Some(Fault::BadPager) = fault {
            self.pager.total = if self.item_count > 0 {
                0
            } else {
                // Claims there is something on this page, yet sends nothing.
                self.pager
                    .page
                    .saturating_mul(self.pager.page_size)
                    .saturating_add(1)
            };
        }
        let pager = serde_json::to_string(&self.pager).expect("pager serializes");
        let mut body = format!(r#"{{"pager":{pager},"items":"#).into_bytes();
        body.extend_from_slice(&self.items_json);
        body.push(b'}');
        match fault {
            Some(Fault::Truncated) => body.truncate(body.len() / 2),
            Some(Fault::Huge(min_len)) if body.len() < *min_len => {
                // Whitespace after the opening brace keeps the JSON valid and its content equal.
                let padding = min_len - body.len();
                let mut padded = Vec::with_capacity(*min_len);
                padded.push(b'{');
                padded.resize(1 + padding, b' ');
                padded.extend_from_slice(&body[1..]);
                body = padded;
            }
            _ => {}
        }
        body
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WirePager {
    page: u64,
    page_size: u64,
    total: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireItem<'a> {
    Visit(Box<WireVisit<'a>>),
    Raw(&'a Value),
    /// Spliced in by [`items_json`], never serialized.
    #[serde(skip)]
    Bytes(&'a [u8]),
}

/// The `items` array: each item serialized, raw bytes spliced in as they are.
fn items_json(items: &[WireItem<'_>]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            WireItem::Bytes(bytes) => out.extend_from_slice(bytes),
            item => serde_json::to_writer(&mut out, item).expect("wire items serialize"),
        }
    }
    out.push(b']');
    out
}

impl<'a> WireItem<'a> {
    fn new(entry: &'a Entry, activities: &'a BTreeMap<String, TruthActivity>) -> Self {
        match entry {
            Entry::Raw { item, .. } => WireItem::Raw(item),
            Entry::RawBytes { bytes, .. } => WireItem::Bytes(bytes),
            Entry::Visit(v) => WireItem::Visit(Box::new(WireVisit {
                activity: activities
                    .get(&v.activity_id)
                    .filter(|a| !a.deleted)
                    .map(WireActivity::from),
                visit_at: iso(v.visit_at),
                last_online_at: iso(v.last_online_at),
                duration: v.duration_minutes,
                user_id: v.user_id,
                activity_id: &v.activity_id,
            })),
        }
    }
}

/// A visit as the doc's sample shows it (field order included).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireVisit<'a> {
    activity: Option<WireActivity<'a>>,
    visit_at: String,
    last_online_at: String,
    duration: i32,
    user_id: i64,
    activity_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireActivity<'a> {
    is_archived: bool,
    is_pushing: bool,
    id: &'a str,
    agent_id: i64,
    subagent_id: Option<i64>,
    category_id: i64,
    name: &'a str,
    status: &'a str,
    started_at: String,
    ended_at: Option<String>,
    push_domain: &'a str,
    pull_domain: &'a str,
    group_id: i64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_at: Option<String>,
}

impl<'a> From<&'a TruthActivity> for WireActivity<'a> {
    fn from(a: &'a TruthActivity) -> Self {
        let updated_at = iso(a.updated_at);
        let (updated_at, update_at) = if a.spells_update_at {
            (None, Some(updated_at))
        } else {
            (Some(updated_at), None)
        };
        Self {
            is_archived: a.is_archived,
            is_pushing: a.is_pushing,
            id: &a.id,
            agent_id: a.agent_id,
            subagent_id: a.subagent_id,
            category_id: a.category_id,
            name: &a.name,
            status: &a.status,
            started_at: iso(a.started_at),
            ended_at: a.ended_at.map(iso),
            push_domain: &a.push_domain,
            pull_domain: &a.pull_domain,
            group_id: a.group_id,
            created_at: iso(a.created_at),
            updated_at,
            update_at,
        }
    }
}

/// `2020-06-24T04:28:02.000Z`
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message })).expect("error body serializes")
}

/// Every response goes through here, so each carries `Date` (simulator clock) and a JSON type.
fn respond(now: DateTime<Utc>, status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let date = httpdate::fmt_http_date(SystemTime::from(now));
    headers.insert(
        header::DATE,
        HeaderValue::from_str(&date).expect("an HTTP date is a valid header value"),
    );
    response
}

/// The token of `Authorization: Bearer <token>`, scheme matched case-insensitively.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn visits_endpoint(
    State(sim): State<Simulator>,
    Path((agent_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ids = agent_id
        .parse::<i64>()
        .ok()
        .zip(user_id.parse::<i64>().ok());
    let params = RawParams::parse(query.as_deref());
    let (request_no, fault, latency, hostile) = sim.with_world(|w| {
        let (no, fault) = w.begin_request(ids);
        let hostile = ids.and_then(|pair| w.hostile.get(&pair).cloned());
        (no, fault, w.latency, hostile)
    });
    if let Some(hostile) = hostile {
        return hostile_answer(&sim, hostile, &params, &headers).await;
    }
    let delay = match &fault {
        Some(Fault::Slow(delay)) => latency + *delay,
        _ => latency,
    };
    if !delay.is_zero() {
        // The lock is not held here, so other requests and knobs go on meanwhile.
        tokio::time::sleep(delay).await;
    }
    let token = bearer_token(&headers);
    sim.with_world(|w| w.finish_request(request_no, ids, &params, token, fault))
}

/// The answer of a [`Hostile`] pair.
async fn hostile_answer(
    sim: &Simulator,
    hostile: Hostile,
    params: &RawParams,
    headers: &HeaderMap,
) -> Response {
    let now = sim.now();
    let lenient = params.lenient();
    match hostile {
        Hostile::Hang => std::future::pending().await,
        Hostile::EchoAuthorization(status) => {
            let echoed = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let body = serde_json::json!({
                "message": "upstream failure",
                "request": { "headers": { "authorization": echoed } },
            });
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            respond(now, status, body.to_string().into_bytes())
        }
        Hostile::Huge { bytes } => {
            let head = format!(
                r#"{{"pager":{{"page":{},"pageSize":{},"total":0}},"items":[]"#,
                lenient.page, lenient.page_size
            );
            let pad = bytes.saturating_sub(head.len() as u64 + 1);
            const CHUNK: u64 = 64 * 1024;
            let spaces = axum::body::Bytes::from(vec![b' '; CHUNK as usize]);
            let stream = futures_util::stream::iter(
                std::iter::once(axum::body::Bytes::from(head))
                    .chain((0..pad / CHUNK).map(move |_| spaces.clone()))
                    .chain(std::iter::once(axum::body::Bytes::from(
                        " ".repeat((pad % CHUNK) as usize) + "}",
                    )))
                    .map(Ok::<_, std::convert::Infallible>),
            );
            respond_streaming(now, Body::from_stream(stream))
        }
        Hostile::Trickle { every } => {
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent > 0 {
                    tokio::time::sleep(every).await;
                }
                let byte = if sent == 0 { b'{' } else { b' ' };
                Some((
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(vec![byte])),
                    sent + 1,
                ))
            });
            respond_streaming(now, Body::from_stream(stream))
        }
    }
}

/// A 200 whose body is streamed, with the headers of [`respond`].
fn respond_streaming(now: DateTime<Utc>, body: Body) -> Response {
    let mut response = respond(now, StatusCode::OK, Vec::new());
    *response.body_mut() = body;
    response
}

/// `GET /_sim/stats`: `{"requests": N, "rateLimited": N, "spanMs": N, "arrivals": N}`, the
/// first three since the last reset (the span from the first visits request to the latest).
async fn stats_endpoint(State(sim): State<Simulator>) -> Response {
    let body = sim.with_world(|w| {
        serde_json::json!({
            "requests": w.request_count(),
            "rateLimited": w.rate_limited_count(),
            "spanMs": u64::try_from(w.requests_span().as_millis()).unwrap_or(u64::MAX),
            "arrivals": w.arrivals_count(),
        })
    });
    respond(sim.now(), StatusCode::OK, body.to_string().into_bytes())
}

/// `POST /_sim/config?latencyMs=100&rateLimit=50&reset=true`: changes the latency and the rate
/// limit (`0` lifts it) of a running simulator, and resets its counts.
async fn config_endpoint(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Response {
    let mut latency = None;
    let mut rate = None;
    let mut reset = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let parsed = match key.as_ref() {
            "latencyMs" => value.parse::<u64>().map(|ms| latency = Some(ms)).is_ok(),
            "rateLimit" => value.parse::<f64>().map(|r| rate = Some(r)).is_ok(),
            "reset" => value.parse::<bool>().map(|r| reset = r).is_ok(),
            _ => false,
        };
        if !parsed {
            let message = format!("bad parameter {key}={value}");
            return respond(sim.now(), StatusCode::BAD_REQUEST, error_body(&message));
        }
    }
    sim.with_world(|w| {
        if let Some(ms) = latency {
            w.set_latency(std::time::Duration::from_millis(ms));
        }
        if let Some(rate) = rate {
            w.set_rate_limit((rate > 0.0).then_some((rate, rate)));
        }
        if reset {
            w.reset_request_counts();
        }
    });
    stats_endpoint(State(sim)).await
}

/// `POST /_sim/arrivals`: starts the arrival process waiting behind its gate (`mock-api
/// --arrivals-every …`); 409 when none waits.
async fn arrivals_endpoint(State(sim): State<Simulator>) -> Response {
    if sim.open_arrivals_gate() {
        return respond(sim.now(), StatusCode::OK, br#"{"started":true}"#.to_vec());
    }
    let message = "no arrival process is waiting to start (none was planned, or it has started)";
    respond(sim.now(), StatusCode::CONFLICT, error_body(message))
}

async fn not_found(State(sim): State<Simulator>) -> Response {
    respond(sim.now(), StatusCode::NOT_FOUND, error_body("not found"))
}

async fn method_not_allowed(State(sim): State<Simulator>) -> Response {
    respond(
        sim.now(),
        StatusCode::METHOD_NOT_ALLOWED,
        error_body("method not allowed"),
    )
}

impl Simulator {
    /// The upstream's routes: the visits endpoint, and JSON 404/405 for everything else.
    pub fn router(&self) -> Router {
        Router::new()
            .route(VISITS_ROUTE, get(visits_endpoint))
            .route(STATS_ROUTE, get(stats_endpoint))
            .route(CONFIG_ROUTE, post(config_endpoint))
            .route(ARRIVALS_ROUTE, post(arrivals_endpoint))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }

    /// Serves the router on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves on `127.0.0.1` at a free port in a background task, until the returned handle is
    /// dropped or shut down.
    pub async fn spawn(&self) -> std::io::Result<SpawnedSimulator> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.clone().serve(listener, async {
            // A dropped sender ends the wait as well.
            let _ = stopped.await;
        }));
        Ok(SpawnedSimulator {
            base_url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A simulator serving in the background; dropping it stops the server.
#[derive(Debug)]
pub struct SpawnedSimulator {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SpawnedSimulator {
    /// Stops the server and waits until it has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SpawnedSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
