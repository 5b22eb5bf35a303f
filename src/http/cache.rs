//! Answers of `/api/*` shared between clients for [`FRESH_FOR`]: however many tabs are open, the
//! database answers each distinct view at most once a second. Requests for a view whose answer
//! is being read wait for that one read instead of starting their own. Only successful answers
//! are kept: an error goes to the requests that waited for it, and the next one reads afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::OnceCell;

/// How long an answer is shared. The page refreshes every 5 s.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Distinct views kept at once (path and query); past it, answers are read without sharing.
const MAX_VIEWS: usize = 256;

/// The largest answer kept (a page of pairs is a few kB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One answer, as read once.
#[derive(Clone)]
struct Kept {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Kept {
    async fn read(response: Response) -> Kept {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(body) => Kept {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            Err(e) => Kept {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: HeaderMap::new(),
                body: Bytes::from(format!("reading the answer: {e}")),
            },
        }
    }

    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// A view's answer: read once by the first request after it went stale.
struct Slot {
    since: Instant,
    answer: OnceCell<Kept>,
}

/// The shared answers of one listener.
#[derive(Clone, Default)]
pub struct Cache {
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

impl Cache {
    /// The slot for `view`: the fresh one, or a new one in its place. `None` when the cache is
    /// full of fresh views.
    fn slot(&self, view: &str, now: Instant) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(view).filter(|s| now - s.since < FRESH_FOR) {
            return Some(slot.clone());
        }
        if slots.len() >= MAX_VIEWS {
            slots.retain(|_, s| now - s.since < FRESH_FOR);
            if slots.len() >= MAX_VIEWS {
                return None;
            }
        }
        let slot = Arc::new(Slot {
            since: now,
            answer: OnceCell::new(),
        });
        slots.insert(view.to_owned(), slot.clone());
        Some(slot)
    }
}

/// The middleware: answers from the shared slot, reading it through `next` when stale.
pub async fn shared(State(cache): State<Cache>, request: Request, next: Next) -> Response {
    let view = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let Some(slot) = cache.slot(&view, Instant::now()) else {
        return next.run(request).await;
    };
    // A request that finds the answer being read waits for it (`request` and `next` then go
    // unused).
    let kept = slot
        .answer
        .get_or_init(|| async { Kept::read(next.run(request).await).await })
        .await;
    if !kept.status.is_success() {
        // The requests that waited share the error; the next one reads the view afresh.
        cache.forget(&view, &slot);
    }
    kept.response()
}

impl Cache {
    /// Drops `slot` as `view`'s answer, unless a newer one took its place.
    fn forget(&self, view: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.get(view).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(view);
        }
    }
}
