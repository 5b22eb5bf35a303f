//! Pacing and retrying: what a token's pairs share (its concurrency [`Controller`] and an
//! optional requests-per-second cap), and the retry loop around each request.
//!
//! Everything here only waits on tokio's clock, so the tests run on paused time.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::concurrency::{Controller, Signal};
use super::error::ApiError;
use crate::secret::Secret;

/// Spaces the requests of one token `interval` apart.
#[derive(Debug)]
pub(super) struct Budget {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Budget {
    pub(super) fn new(interval: Duration) -> Self {
        Budget {
            interval,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for this token's next free slot.
    pub(super) async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What every request of one token goes through: the concurrency controller, then the
/// optional rate cap.
#[derive(Debug)]
pub(super) struct TokenPacer {
    pub(super) controller: Arc<Controller>,
    budget: Option<Budget>,
}

impl TokenPacer {
    pub(super) fn new(max_concurrency: usize, max_requests_per_second: Option<f64>) -> Self {
        TokenPacer {
            controller: Controller::new(max_concurrency),
            budget: max_requests_per_second
                .filter(|r| *r > 0.0)
                .map(|r| Budget::new(Duration::from_secs_f64(1.0 / r))),
        }
    }
}

/// One pacer per token, shared by every pair (and every clone of the client) that uses it.
/// Keyed by a hash of the token, so the map (and `Debug`) never holds a token.
#[derive(Debug, Clone)]
pub(super) struct Pacers {
    max_concurrency: usize,
    max_requests_per_second: Option<f64>,
    by_token: Arc<Mutex<HashMap<u64, Arc<TokenPacer>>>>,
}

impl Pacers {
    pub(super) fn new(max_concurrency: usize, max_requests_per_second: Option<f64>) -> Self {
        Pacers {
            max_concurrency,
            max_requests_per_second,
            by_token: Arc::default(),
        }
    }

    pub(super) fn for_token(&self, token: &Secret) -> Arc<TokenPacer> {
        // One hasher per process keeps the key stable across clones.
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let key = KEYS.get_or_init(RandomState::new).hash_one(token.expose());
        let mut pacers = self.by_token.lock().expect("pacer map poisoned");
        pacers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(TokenPacer::new(
                    self.max_concurrency,
                    self.max_requests_per_second,
                ))
            })
            .clone()
    }

    /// Every token's pacer, for logs and metrics.
    pub(super) fn all(&self) -> Vec<Arc<TokenPacer>> {
        let pacers = self.by_token.lock().expect("pacer map poisoned");
        pacers.values().cloned().collect()
    }
}

/// 429s with a `Retry-After` one request may meet before it gives up.
const MAX_PACED_RETRIES: u32 = 30;

/// Retry timings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Retries of an attempt that timed out (no answer, or a body that stalled or trickled
    /// past its deadline), within `max_retries`: a platform that hangs costs each request
    /// `1 + max_timeout_retries` deadlines, not `1 + max_retries`.
    pub max_timeout_retries: u32,
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

    /// How long to wait after failed attempt number `attempt` (1-based): a 429's
    /// `Retry-After`, capped, or the backoff.
    fn wait_after(&self, attempt: u32, err: &ApiError) -> Duration {
        match err {
            ApiError::RateLimited {
                retry_after: Some(after),
            } => (*after).min(self.max_retry_after),
            _ => self.backoff(attempt - 1),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been retried `max_retries`
    /// times. Each attempt first takes a slot of the token's `pacer`, and tells its controller
    /// how it went. A `Retry-After` pauses the whole token; other retries wait here. Returns the
    /// value and the number of attempts made; `on_retry` hears of each retry before its wait.
    pub(super) async fn run<T, Fut>(
        &self,
        pacer: &TokenPacer,
        mut attempt: impl FnMut() -> Fut,
        mut on_retry: impl FnMut(u32, Duration, &ApiError),
    ) -> Result<(T, u32), ApiError>
    where
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let (mut attempts, mut paced, mut timeouts) = (0, 0, 0);
        loop {
            let mut permit = pacer.controller.acquire().await;
            if let Some(budget) = &pacer.budget {
                budget.acquire().await;
                permit.start_clock();
            }
            attempts += 1;
            let result = attempt().await;
            permit.finish(|took| match &result {
                Err(ApiError::RateLimited { .. }) => Signal::RateLimited,
                Err(e) if e.is_backpressure() => Signal::Backpressure,
                _ => Signal::Answered(took),
            });
            let err = match result {
                Ok(value) => return Ok((value, attempts)),
                Err(err) => err,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            // A 429 with a Retry-After is the platform setting the pace, which the controller
            // follows: it does not use up the retries meant for failures, up to a bound.
            let is_paced = matches!(
                err,
                ApiError::RateLimited {
                    retry_after: Some(_)
                }
            );
            paced += u32::from(is_paced);
            timeouts += u32::from(err.is_timeout());
            if attempts - paced > self.max_retries
                || paced > MAX_PACED_RETRIES
                || timeouts > self.max_timeout_retries
            {
                return Err(ApiError::Exhausted {
                    attempts,
                    last: Box::new(err),
                });
            }
            let wait = self.wait_after(attempts, &err);
            on_retry(attempts, wait, &err);
            match &err {
                // Every pair of the token waits, not only this one.
                ApiError::RateLimited {
                    retry_after: Some(_),
                } => pacer.controller.pause(wait),
                _ => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            max_timeout_retries: 1,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }

    /// Runs the retry loop over scripted results; returns what it ended with, the attempts
    /// made, and how long it took on tokio's (paused) clock.
    async fn script(
        policy: RetryPolicy,
        results: Vec<Result<u8, ApiError>>,
    ) -> (Result<(u8, u32), ApiError>, u32, Duration) {
        let results = Mutex::new(VecDeque::from(results));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let pacer = TokenPacer::new(16, None);
        let started = Instant::now();
        let out = policy
            .run(
                &pacer,
                || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let next = results.lock().unwrap().pop_front().expect("script ran out");
                    async move { next }
                },
                |_, _, _| {},
            )
            .await;
        (out, calls.into_inner(), started.elapsed())
    }

    fn limited(secs: u64) -> ApiError {
        ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_its_retry_after_then_retries() {
        let (out, calls, elapsed) = script(policy(), vec![Err(limited(7)), Ok(1)]).await;

        assert_eq!(out.unwrap(), (1, 2));
        assert_eq!(calls, 2);
        assert_eq!(elapsed, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_max_retry_after_waits_only_the_cap() {
        let capped = RetryPolicy {
            max_retry_after: Duration::from_secs(1),
            ..policy()
        };

        let (out, _, elapsed) = script(capped, vec![Err(limited(3600)), Ok(1)]).await;

        assert_eq!(out.unwrap(), (1, 2));
        assert_eq!(elapsed, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_within_its_jitter_and_gives_up_after_max_retries() {
        let server = || ApiError::Server {
            status: 503,
            snippet: String::new(),
        };
        let waits = Mutex::new(Vec::new());
        let pacer = TokenPacer::new(16, None);
        let started = Instant::now();

        let out: Result<((), u32), ApiError> = policy()
            .run(
                &pacer,
                || async { Err(server()) },
                |_, wait, _| waits.lock().unwrap().push(wait),
            )
            .await;

        let Err(ApiError::Exhausted { attempts, last }) = out else {
            panic!("expected Exhausted, got {out:?}");
        };
        assert_eq!(attempts, 4, "the first attempt and max_retries = 3 retries");
        assert!(matches!(*last, ApiError::Server { status: 503, .. }));
        let waits = waits.into_inner().unwrap();
        assert_eq!(waits.len(), 3);
        for (i, wait) in waits.iter().enumerate() {
            let base = Duration::from_millis(500) * 2u32.pow(i as u32);
            assert!(
                *wait >= base / 2 && *wait <= base,
                "retry {i}: {wait:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        // The timer rounds each sleep up to its millisecond.
        let slept: Duration = waits.iter().sum();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= slept && elapsed <= slept + Duration::from_millis(3),
            "slept {elapsed:?} for waits of {slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_does_not_use_up_the_retries_for_failures() {
        let server = || ApiError::Server {
            status: 502,
            snippet: String::new(),
        };
        // max_retries = 3: six 429s and three 502s, then an answer.
        let mut script: Vec<Result<u8, ApiError>> = (0..6).map(|_| Err(limited(1))).collect();
        script.extend((0..3).map(|_| Err(server())));
        script.push(Ok(9));

        let (out, calls, _) = self::script(policy(), script).await;

        assert_eq!(out.unwrap(), (9, 10));
        assert_eq!(calls, 10);
        let (out, _, _) = self::script(
            policy(),
            (0..=MAX_PACED_RETRIES).map(|_| Err(limited(1))).collect(),
        )
        .await;
        assert!(matches!(out, Err(ApiError::Exhausted { .. })), "{out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_are_retried_once_while_server_errors_use_every_retry() {
        let timeout = || ApiError::Timeout(Duration::from_secs(30));

        let (out, calls, _) = script(policy(), vec![Err(timeout()), Err(timeout())]).await;

        let Err(ApiError::Exhausted { attempts, .. }) = out else {
            panic!("expected Exhausted, got {out:?}");
        };
        assert_eq!((attempts, calls), (2, 2), "a hanging platform: one retry");
        // A timeout then 5xx: the 5xx still has the rest of max_retries = 3.
        let server = || ApiError::Server {
            status: 502,
            snippet: String::new(),
        };
        let (out, calls, _) = script(
            policy(),
            vec![Err(timeout()), Err(server()), Err(server()), Ok(7)],
        )
        .await;
        assert_eq!(out.unwrap(), (7, 4));
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_not_retried() {
        let refused = ApiError::Unauthorized {
            agent_id: 1,
            status: 401,
            origin: String::new(),
            detail: String::new(),
        };

        let (out, calls, elapsed) = script(policy(), vec![Err(refused)]).await;

        assert!(matches!(out, Err(ApiError::Unauthorized { .. })));
        assert_eq!(calls, 1);
        assert_eq!(elapsed, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn pairs_sharing_a_token_share_its_rate_cap_and_other_tokens_do_not_wait() {
        let pacers = Pacers::new(16, Some(5.0));
        let clone = pacers.clone();
        let token = Secret::new("tok-a");
        let started = Instant::now();
        let request = |p: Arc<TokenPacer>| async move {
            policy()
                .run(&p, || async { Ok(()) }, |_, _, _| {})
                .await
                .unwrap();
        };

        // Two pairs of one token, three requests each, through two clones of the client.
        let pair = |p: Pacers| {
            let token = token.clone();
            async move {
                for _ in 0..3 {
                    request(p.for_token(&token)).await;
                }
            }
        };
        tokio::join!(pair(pacers.clone()), pair(clone));
        let shared = started.elapsed();
        request(pacers.for_token(&Secret::new("tok-b"))).await;

        assert!(Arc::ptr_eq(
            &pacers.for_token(&token),
            &pacers.for_token(&token)
        ));
        assert_eq!(pacers.all().len(), 2);

        // Six requests at 5/s: the last one starts 5 intervals after the first.
        assert_eq!(shared, Duration::from_secs(1));
        assert_eq!(
            started.elapsed(),
            shared,
            "another token has its own budget"
        );
    }

    /// A platform's gateway on tokio's clock, like the simulator's: `rate` requests a second,
    /// bursts of `rate`, and a 429 with a `Retry-After` in whole seconds.
    struct Gateway {
        rate: f64,
        tokens: f64,
        at: Instant,
    }

    impl Gateway {
        fn take(&mut self) -> Result<(), Duration> {
            let now = Instant::now();
            let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.rate);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return Ok(());
            }
            let wait = ((1.0 - self.tokens) / self.rate).ceil().max(1.0);
            Err(Duration::from_secs_f64(wait))
        }
    }

    /// `requests` pages fetched by 16 pairs of one token through the retry loop, behind a
    /// gateway of `limit` requests a second answering after `latency`: (attempts, 429s, the
    /// time it took).
    async fn behind_a_gateway(
        limit: f64,
        latency: Duration,
        requests: usize,
    ) -> (u64, u64, Duration) {
        let gateway = Arc::new(Mutex::new(Gateway {
            rate: limit,
            tokens: limit,
            at: Instant::now(),
        }));
        let pacer = Arc::new(TokenPacer::new(16, None));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let started = Instant::now();
        let pairs: Vec<_> = (0..16)
            .map(|_| {
                let (gateway, pacer, next) = (gateway.clone(), pacer.clone(), next.clone());
                let (counts, refused) = (counts.clone(), refused.clone());
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    while next.fetch_add(1, SeqCst) < requests {
                        let attempt = || {
                            counts.fetch_add(1, SeqCst);
                            let taken = gateway.lock().unwrap().take();
                            let refused = refused.clone();
                            async move {
                                tokio::time::sleep(latency).await;
                                taken.map_err(|wait| {
                                    refused.fetch_add(1, SeqCst);
                                    ApiError::RateLimited {
                                        retry_after: Some(wait),
                                    }
                                })
                            }
                        };
                        policy().run(&pacer, attempt, |_, _, _| {}).await.unwrap();
                    }
                })
            })
            .collect();
        for pair in pairs {
            pair.await.unwrap();
        }
        (
            counts.load(std::sync::atomic::Ordering::SeqCst),
            refused.load(std::sync::atomic::Ordering::SeqCst),
            started.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn behind_any_limit_from_5_to_100_a_second_fewer_than_one_request_in_ten_meets_a_429() {
        let mut seen = Vec::new();
        for latency in [Duration::ZERO, Duration::from_millis(50)] {
            for limit in [5.0, 10.0, 20.0, 50.0, 100.0] {
                // A minute's worth of the limit.
                let pages = (limit * 60.0) as usize;
                let (attempts, refused, took) = behind_a_gateway(limit, latency, pages).await;
                let share = refused as f64 / attempts as f64;
                let pace = (attempts - refused) as f64 / took.as_secs_f64();
                seen.push(format!(
                    "{limit}/s {latency:?}: {attempts} attempts, {refused} 429s ({:.1}%), {pace:.1}/s",
                    share * 100.0
                ));
                assert!(share < 0.10, "{seen:#?}");
                assert!(pace > 0.75 * limit, "the limit is used: {seen:#?}");
            }
        }
        eprintln!("{seen:#?}");
    }
}
