//! How szb-sync tries a database operation again, in one place: [`backon`]'s exponential
//! backoff, with the errors that say another try can work. (The API client keeps its own loop:
//! it follows `Retry-After` and the pace controller.)

use std::time::Duration;

use backon::ExponentialBuilder;

/// A statement of the pass (claims, run records) that lost its connection (the coordinator
/// reconnects) or deadlocked: 3 tries in all, 200 ms and then 400 ms apart.
pub const PASS_STATEMENT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_times(2);

/// A page whose transaction deadlocked with another pair's (they share activity rows); Postgres
/// aborted it, so it changed nothing: 4 tries in all, 20, 40 and 80 ms apart.
pub const PAGE_DEADLOCK: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(20))
    .with_max_times(3);

/// Migrations at start-up while the database is away: from 1 s, doubling to a minute, until
/// they apply (or shutdown, which the caller watches).
pub const MIGRATIONS: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(60))
    .without_max_times();

impl super::StoreError {
    /// Whether another try of a statement can work: the connection was lost (a new one is
    /// taken), or Postgres aborted a deadlocked transaction.
    pub fn is_transient(&self) -> bool {
        self.is_connection() || self.is_deadlock()
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder as _;

    use super::*;

    /// The waits, rounded to whole milliseconds (backon's factor is an `f32`).
    fn waits(policy: ExponentialBuilder, n: usize) -> Vec<u128> {
        policy
            .build()
            .take(n)
            .map(|d| (d.as_secs_f64() * 1000.0).round() as u128)
            .collect()
    }

    #[test]
    fn each_policy_waits_as_its_doc_says() {
        assert_eq!(waits(PASS_STATEMENT, 9), [200, 400]);
        assert_eq!(waits(PAGE_DEADLOCK, 9), [20, 40, 80]);
        assert_eq!(
            waits(MIGRATIONS, 9),
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
    }
}
