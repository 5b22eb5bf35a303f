//! The operators' listener (`[http] listen`): Prometheus `/metrics`, `/livez`, `/readyz` (and its
//! alias `/healthz`), and the status page at `/` with the JSON it reads.
//!
//! Everything here reads what the feed already said ([`crate::telemetry`]) or one query per view
//! ([`crate::store`]'s board reads), through a read-only pool of its own; nothing counts on its
//! own. Like atuin's metrics listener, it is its own socket, so it is never the public one by
//! accident. Every route is guarded ([`guard`]): security headers, a `Host` check on loopback,
//! `http.token` for the page, and a limit and a deadline per answer. An error names what failed
//! in general terms; its detail, which may name the database's user and host, goes to the log.

mod cache;
mod guard;
mod health;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crate::secret::Redactor;
pub use cache::FRESH_FOR;
pub use guard::{DEADLINE, PAGES_AT_ONCE, PROBES_AT_ONCE, QUEUE_WAIT};

use crate::api::ApiClient;
use crate::domain::{Pair, PairKey};
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::PairStates;

/// What the listener reads.
#[derive(Debug, Clone)]
pub struct ListenerState {
    /// The listener's own read-only pool ([`Store::for_listener`]), never the sync's.
    pub store: Store,
    pub api: ApiClient,
    pub telemetry: Telemetry,
    /// The configured pairs, as the last (re)load left them.
    pub pairs: watch::Receiver<Arc<Vec<Pair>>>,
    /// A pair whose last good sync is older than this is listed as lagging.
    pub lag_after: Duration,
    /// This process's owner id (`host:pid:nonce`).
    pub owner: String,
    /// Takes the database's URL, user, host and name out of errors the listener shows.
    pub redact: Redactor,
    /// `http.token`: when set, the page and `/api/*` need it.
    pub token: Option<Secret>,
}

impl ListenerState {
    fn keys(&self) -> Vec<PairKey> {
        self.pairs.borrow().iter().map(|p| p.key.clone()).collect()
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("http.listen: cannot listen on {addr}: {source}")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `addr` (port 0 picks a free one); returns the listener and where it listens.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    Ok((listener, local))
}

/// Every route, guarded for a listener bound to `local`.
pub fn router(board: ListenerState, local: SocketAddr) -> Router {
    let guard = guard::Guard::new(local, board.token.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .merge(page::routes())
        .with_state(board)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    board: ListenerState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    axum::serve(listener, router(board, local))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// `/metrics`: the counters as the feed left them, and the state gauges from one query.
async fn metrics(State(board): State<ListenerState>) -> Response {
    let metrics = &board.telemetry.metrics;
    // A scrape never waits long on a busy database: the gauges keep their last values.
    let keys = board.keys();
    let counts = tokio::time::timeout(Duration::from_secs(2), board.store.pair_counts(&keys));
    match counts.await {
        Err(_) => tracing::warn!(
            "metrics: counting pairs by state took over 2 s; the state gauges keep their last values"
        ),
        Ok(Ok(c)) => metrics.set_pair_states(&PairStates {
            ok: c.ok,
            failing: c.failing,
            never_synced: c.never_synced,
            oldest_sync_age_seconds: c.oldest_sync_age_seconds,
        }),
        // The counters are still worth a scrape; the gauges keep their last values.
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error::logged(&e), "metrics: could not count pairs by state")
        }
    }
    metrics.set_concurrency_limit(board.api.pace().iter().map(|p| p.limit).sum());
    (
        [(
            header::CONTENT_TYPE,
            crate::telemetry::metrics::Metrics::content_type(),
        )],
        metrics.render(),
    )
        .into_response()
}

/// A database error, in general terms for an answer (503), with `what` failed; the detail goes
/// to the log, never to the answer: it may name the database's user, host and name.
fn database_trouble(what: &str, e: &StoreError) -> Response {
    tracing::warn!(error = %crate::error::logged(e), "listener: {what} failed");
    line(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what}: {} (szb-sync's log says more)", in_general(e)),
    )
}

/// What went wrong with the database, in words that name nothing of it.
fn in_general(e: &StoreError) -> String {
    if e.is_statement_timeout() {
        format!(
            "the database did not answer within {} s",
            crate::store::LISTENER_STATEMENT_TIMEOUT.as_secs()
        )
    } else if e.is_refused() {
        "the database refused the listener's connection (its credentials, rights or name)"
            .to_owned()
    } else if e.is_connection() {
        "the database is unreachable, or its connections for the listener are all busy".to_owned()
    } else {
        "the database answered with an error".to_owned()
    }
}

/// A plain-text answer of one line.
fn line(status: StatusCode, text: impl Into<String>) -> Response {
    let mut text = text.into();
    text.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}
