//! [`Simulator`]: a cheap handle on a shared [`World`], with each of the world's knobs run
//! under its lock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::world::{Fault, Hostile, RequestInfo, TruthActivity, TruthVisit, World};

/// Gives [`Simulator`] each listed [`World`] knob, run under the lock.
macro_rules! delegate_to_world {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        $(
            #[doc = concat!("See [`World::", stringify!($name), "`].")]
            pub fn $name(&self, $($arg: $ty),*) $(-> $ret)? {
                self.lock().$name($($arg),*)
            }
        )*
    };
}

/// A handle on the simulated upstream; clones share one [`World`].
#[derive(Clone)]
pub struct Simulator {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    /// An empty world whose randomness all comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            world: Arc::new(Mutex::new(World::new(seed))),
        }
    }

    /// Runs `f` on the world under its lock, for anything the knobs below do not cover.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test hook must not take every later request down with it.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    delegate_to_world! {
        fn add_agent(agent_id: i64, token: &str);
        fn set_agent_forbidden(agent_id: i64, forbidden: bool);
        fn generate_visits(agent_id: i64, user_id: i64, n: usize);
        fn append_visits(agent_id: i64, user_id: i64, n: usize);
        fn open_visit(agent_id: i64, user_id: i64) -> (String, DateTime<Utc>);
        fn extend_open_visits(by: Duration);
        fn close_open_visits();
        fn add_tie(agent_id: i64, user_id: i64, visit_at: DateTime<Utc>) -> String;
        fn insert_visit_at(
            agent_id: i64,
            user_id: i64,
            visit_at: DateTime<Utc>,
            activity_id: Option<&str>,
        ) -> String;
        fn set_shuffle_ties(on: bool);
        fn change_activity(activity_id: &str);
        fn delete_activity(activity_id: &str);
        fn purge_oldest(agent_id: i64, user_id: i64, k: usize);
        fn insert_raw_item(agent_id: i64, user_id: i64, sort_at: DateTime<Utc>, item: Value);
        fn replace_raw_item(agent_id: i64, user_id: i64, sort_at: DateTime<Utc>, item: Value);
        fn insert_raw_bytes(agent_id: i64, user_id: i64, sort_at: DateTime<Utc>, bytes: Vec<u8>);
        fn rename_activity(activity_id: &str, name: &str);
        fn set_clock_skew(skew: Duration);
        fn now() -> DateTime<Utc>;
        fn push_fault(fault: Fault);
        fn set_hostile(agent_id: i64, user_id: i64, hostile: Option<Hostile>);
        fn set_rate_limit(limit: Option<(f64, f64)>);
        fn rate_limited_count() -> u64;
        fn set_latency(latency: std::time::Duration);
        fn clear_before_request();
        fn request_count() -> u64;
        fn requests_span() -> std::time::Duration;
        fn requests_for(agent_id: i64, user_id: i64) -> u64;
        fn reset_request_counts();
        fn arrivals_gate() -> tokio::sync::oneshot::Receiver<()>;
        fn open_arrivals_gate() -> bool;
        fn arrivals_count() -> u64;
        fn visits(agent_id: i64, user_id: i64) -> Vec<TruthVisit>;
        fn all_visits_ever(agent_id: i64, user_id: i64) -> Vec<TruthVisit>;
        fn activity(activity_id: &str) -> Option<TruthActivity>;
        fn activities() -> Vec<TruthActivity>;
    }

    /// Runs `hook` under the world lock before each visits request is answered (faulted ones
    /// included, after a `Slow` delay), so a test can change the world in the middle of a walk.
    pub fn set_before_request(&self, hook: impl FnMut(&mut World, &RequestInfo) + Send + 'static) {
        self.lock().set_before_request(hook);
    }
}
