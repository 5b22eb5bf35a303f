//! The memory of response bodies: one byte budget shared by every request of the client
//! (`api.max_body_bytes_in_flight`), and the reading of one body against it, its size limit
//! (`api.max_body_bytes`) and its deadlines (`api.timeout`, `api.read_timeout`).
//!
//! A body reserves budget as its buffer grows, and gives it back when it is dropped (after the
//! page is decoded). When the budget is spent, a growing body waits: failing it would turn a
//! busy moment into retries. Waiting while holding part of the budget could deadlock (every
//! body waiting for the others), so the budget keeps one body's worth apart: the general pool
//! is `in_flight − max_body_bytes`, and the one body that holds the reserve may grow to
//! `max_body_bytes` without waiting for anyone. Some body always finishes, and the total stays
//! within `in_flight`. The deadline stops while a body waits for the budget: the platform is
//! not slow, we are.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;

/// The budget counts whole KiB, so a permit count (`u32`) covers terabytes.
const UNIT: u64 = 1024;

/// The smallest buffer a body starts with once its first bytes arrive.
const FIRST_BUFFER: usize = 64 * 1024;

/// The byte budget of bodies in flight, shared by every clone of the client.
#[derive(Debug, Clone)]
pub(super) struct BodyBudget {
    /// Units any body may take, `in_flight − limit`.
    general: Arc<Semaphore>,
    /// Held by at most one body, which may then grow to `limit` beyond the general pool.
    reserve: Arc<Mutex<()>>,
    /// `api.max_body_bytes`.
    limit: usize,
}

impl BodyBudget {
    /// `limit` per body, `in_flight` (at least `limit`, as settings check) for all of them.
    pub(super) fn new(limit: u64, in_flight: u64) -> Self {
        let general = in_flight.saturating_sub(limit) / UNIT;
        BodyBudget {
            general: Arc::new(Semaphore::new(
                usize::try_from(general)
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .min(Semaphore::MAX_PERMITS),
            )),
            reserve: Arc::new(Mutex::new(())),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    /// An empty reservation for one body.
    pub(super) fn lease(&self) -> Lease {
        Lease {
            budget: self.clone(),
            units: None,
            reserve: None,
        }
    }

    /// Units of the general pool free now, for tests.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.general.available_permits()
    }
}

/// What one body holds of the budget; dropping it gives everything back.
#[derive(Debug)]
pub(super) struct Lease {
    budget: BodyBudget,
    units: Option<OwnedSemaphorePermit>,
    reserve: Option<OwnedMutexGuard<()>>,
}

impl Lease {
    fn held_bytes(&self) -> u64 {
        self.units.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT
    }

    /// Makes room for a buffer of `bytes` (at most the body limit), waiting while the budget
    /// is spent. Returns how long it waited.
    async fn grow_to(&mut self, bytes: usize) -> Duration {
        if self.reserve.is_some() || bytes as u64 <= self.held_bytes() {
            return Duration::ZERO;
        }
        let more =
            u32::try_from((bytes as u64 - self.held_bytes()).div_ceil(UNIT)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.budget.general.clone().try_acquire_many_owned(more) {
            self.merge(permit);
            return Duration::ZERO;
        }
        let started = Instant::now();
        let general = self.budget.general.clone();
        let reserve = self.budget.reserve.clone();
        tokio::select! {
            permit = general.acquire_many_owned(more) => {
                self.merge(permit.expect("the body budget is never closed"));
            }
            guard = reserve.lock_owned() => self.reserve = Some(guard),
        }
        started.elapsed()
    }

    fn merge(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.units {
            Some(held) => held.merge(permit),
            None => self.units = Some(permit),
        }
    }
}

/// A body read whole, with the budget it holds until it is dropped.
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    _lease: Lease,
}

/// When an attempt must be over, and how long it may go without a byte.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    at: Instant,
    timeout: Duration,
    read_timeout: Duration,
}

impl Deadline {
    /// From now: `timeout` in all, `read_timeout` between reads.
    pub(super) fn start(timeout: Duration, read_timeout: Duration) -> Self {
        let now = Instant::now();
        Deadline {
            at: now
                .checked_add(timeout)
                .unwrap_or(now + super::MAX_DEADLINE),
            timeout,
            read_timeout: read_timeout.min(timeout),
        }
    }

    /// `step` (the answer's head, or the next bytes), within both limits.
    pub(super) async fn run<T>(&self, step: impl Future<Output = T>) -> Result<T, ApiError> {
        let now = Instant::now();
        let until = now
            .checked_add(self.read_timeout)
            .map_or(self.at, |t| t.min(self.at));
        match tokio::time::timeout_at(until, step).await {
            Ok(value) => Ok(value),
            Err(_) if Instant::now() >= self.at => Err(ApiError::Timeout(self.timeout)),
            Err(_) => Err(ApiError::Stalled(self.read_timeout)),
        }
    }

    /// Time spent waiting for the body budget does not count.
    fn extend(&mut self, by: Duration) {
        self.at = self.at.checked_add(by).unwrap_or(self.at);
    }
}

/// Reads a body into a buffer that grows as bytes arrive (never from `Content-Length`,
/// which the platform could inflate), within the size limit, the budget and the deadline.
pub(super) async fn read(
    mut response: reqwest::Response,
    budget: &BodyBudget,
    mut deadline: Deadline,
    transport_error: impl Fn(reqwest::Error) -> ApiError,
) -> Result<Body, ApiError> {
    let limit = budget.limit;
    let too_large = || ApiError::TooLarge {
        limit: limit as u64,
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut lease = budget.lease();
    let mut bytes = Vec::new();
    while let Some(chunk) = deadline
        .run(response.chunk())
        .await?
        .map_err(&transport_error)?
    {
        let needed = bytes.len() + chunk.len();
        if needed > limit {
            return Err(too_large());
        }
        if needed > bytes.capacity() {
            let grown = needed
                .max(bytes.capacity() * 2)
                .max(FIRST_BUFFER)
                .min(limit);
            let waited = lease.grow_to(grown).await;
            deadline.extend(waited);
            bytes.reserve_exact(grown - bytes.len());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        _lease: lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test(start_paused = true)]
    async fn bodies_wait_for_the_budget_and_one_always_can_grow_to_the_limit() {
        // 4 MiB per body, 6 MiB in all: 2 MiB general, one body's worth held apart.
        let budget = BodyBudget::new(4 * MIB, 6 * MIB);
        let mut a = budget.lease();
        let mut b = budget.lease();
        let mut c = budget.lease();

        // a and b take the general pool between them.
        assert_eq!(a.grow_to(MIB as usize).await, Duration::ZERO);
        assert_eq!(b.grow_to(MIB as usize).await, Duration::ZERO);
        assert_eq!(budget.free(), 0);
        // Both want more: the first to ask takes the reserve and grows to the limit at once;
        // the other waits, holding what it has, until something is given back.
        assert_eq!(a.grow_to(4 * MIB as usize).await, Duration::ZERO);
        let waiting = tokio::spawn(async move {
            let waited = b.grow_to(2 * MIB as usize).await;
            (b, waited)
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished(), "b waits while a holds the reserve");
        drop(a);
        let (b, waited) = waiting.await.unwrap();
        assert_eq!(waited, Duration::from_secs(3));
        assert!(b.reserve.is_some() || b.held_bytes() >= 2 * MIB);
        drop(b);
        // Everything given back: a new body takes the whole general pool without waiting.
        assert_eq!(c.grow_to(2 * MIB as usize).await, Duration::ZERO);
        assert_eq!(budget.free(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_of_exactly_one_body_serves_bodies_one_at_a_time() {
        let budget = BodyBudget::new(MIB, MIB);
        let mut a = budget.lease();
        let mut b = budget.lease();

        assert_eq!(a.grow_to(1000).await, Duration::ZERO);
        let waiting = tokio::spawn(async move { b.grow_to(1000).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_names_api_timeout_and_a_silence_names_api_read_timeout() {
        let never = std::future::pending::<()>;
        let deadline = Deadline::start(Duration::from_secs(30), Duration::from_secs(10));
        let err = deadline.run(never()).await.unwrap_err();
        assert!(matches!(err, ApiError::Stalled(d) if d == Duration::from_secs(10)));

        // A read_timeout beyond the deadline is the deadline.
        let deadline = Deadline::start(Duration::from_secs(1), Duration::from_secs(10));
        let err = deadline.run(never()).await.unwrap_err();
        assert!(matches!(err, ApiError::Timeout(d) if d == Duration::from_secs(1)));
        assert!(err.to_string().contains("api.timeout"), "{err}");

        // Trickling: each step within read_timeout, the whole past the deadline.
        let deadline = Deadline::start(Duration::from_secs(30), Duration::from_secs(10));
        let mut steps = 0;
        let err = loop {
            match deadline
                .run(tokio::time::sleep(Duration::from_secs(9)))
                .await
            {
                Ok(()) => steps += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(steps, 3);
        assert!(matches!(err, ApiError::Timeout(_)), "{err}");
        let huge = Deadline::start(Duration::MAX, Duration::MAX);
        assert!(huge.at > Instant::now(), "saturates instead of panicking");
    }
}
