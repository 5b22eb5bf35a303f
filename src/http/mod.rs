//! The operators' listener (`[http] listen`): Prometheus `/metrics`, `/livez`, `/readyz` (and its
//! alias `/healthz`), and the status page at `/` with the JSON it reads.
//!
//! Everything here reads what the feed already said ([`crate::telemetry`]) or one query per view
//! ([`crate::store`]'s board reads); nothing counts on its own. Like atuin's metrics listener, it
//! is its own socket, so it is never the public one by accident.

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

use crate::api::ApiClient;
use crate::domain::{Pair, PairKey};
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::PairStates;

/// What the listener reads.
#[derive(Debug, Clone)]
pub struct Board {
    pub store: Store,
    pub api: ApiClient,
    pub telemetry: Telemetry,
    /// The configured pairs, as the last (re)load left them.
    pub pairs: watch::Receiver<Arc<Vec<Pair>>>,
    /// A pair whose last good sync is older than this is listed as lagging.
    pub lag_after: Duration,
    /// This process's owner id (`host:pid:nonce`).
    pub owner: String,
}

impl Board {
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

/// Every route.
pub fn router(board: Board) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .merge(page::routes())
        .with_state(board)
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    board: Board,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(board))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// `/metrics`: the counters as the feed left them, and the state gauges from one query.
async fn metrics(State(board): State<Board>) -> Response {
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
            tracing::warn!(error = %crate::error::chain(&e), "metrics: could not count pairs by state")
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
