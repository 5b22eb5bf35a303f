//! Answers within a deadline: what keeps a network partition or a failover from hanging
//! szb-sync.
//!
//! In a partition or a failover, packets vanish with no RST and no FIN, and a socket waits for
//! an answer forever; sqlx 0.9 sets no TCP keepalive on its sockets. So:
//! - Postgres ends each statement of szb-sync's at `database.statement_timeout`, and notices a
//!   vanished client through its own TCP keepalives (both session settings, [`session_options`]);
//! - szb-sync waits for an answer that long plus a margin, then gives the operation up and drops
//!   its connection ([`Deadline::within`]); Postgres rolls back whatever transaction it had open;
//! - pooled connections are pinged, within [`Deadline::ping`], when they are handed out and when
//!   they come back, so a dead one is closed instead of handed out again ([`pool_options`]);
//! - once shutdown was asked for, operations in flight and new ones end within the grace the
//!   app gives ([`Deadline::stop_within`]), so SIGTERM is obeyed during a partition too.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::StoreError;

/// Added to the statement timeout before szb-sync gives an answer up (the statement timeout's
/// own length when that is shorter): time for the server's "canceling statement due to
/// statement timeout" to arrive when the network still works.
const MARGIN: Duration = Duration::from_secs(5);

/// The longest a pooled connection may take to answer a ping.
const PING_WITHIN: Duration = Duration::from_secs(5);

/// The longest wait for a pooled connection (connecting included).
const ACQUIRE_WITHIN: Duration = Duration::from_secs(10);

/// How long szb-sync waits for the database's answers. Clones share the shutdown state.
#[derive(Debug, Clone)]
pub struct Deadline {
    answer: Duration,
    stopping: CancellationToken,
    stop_by: Arc<OnceLock<Instant>>,
}

impl Deadline {
    /// The deadline of a store whose statements end at `statement_timeout`.
    pub(super) fn new(statement_timeout: Duration) -> Self {
        Deadline {
            answer: statement_timeout + statement_timeout.min(MARGIN),
            stopping: CancellationToken::new(),
            stop_by: Arc::default(),
        }
    }

    /// How long an operation may wait for the database's answer.
    pub fn answer(&self) -> Duration {
        self.answer
    }

    /// How long a pooled connection may take to answer a ping.
    pub(super) fn ping(&self) -> Duration {
        self.answer.min(PING_WITHIN)
    }

    /// From now on, every operation (those in flight too) ends within `grace`.
    pub(super) fn stop_within(&self, grace: Duration) {
        let _ = self.stop_by.set(Instant::now() + grace);
        self.stopping.cancel();
    }

    /// Runs `operation`, giving it up (dropping it, and with it its connection) when the
    /// database has not answered in time.
    pub(super) async fn within<T>(
        &self,
        context: &'static str,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let stop = async {
            self.stopping.cancelled().await;
            match self.stop_by.get() {
                Some(at) => tokio::time::sleep_until(*at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            answered = tokio::time::timeout(self.answer, operation) => {
                answered.unwrap_or(Err(StoreError::Timeout { context, after: self.answer, stopping: false }))
            }
            () = stop => Err(StoreError::Timeout { context, after: self.answer, stopping: true }),
        }
    }
}

/// The session settings of every connection of szb-sync's, beside `search_path`.
pub(super) fn session_options(
    statement_timeout: Duration,
    synchronous_commit: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut options = vec![
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        ),
        // The server's side of a vanished client: its backend (and the pair locks and leases'
        // liveness it holds) ends about a minute after the network went silent.
        ("tcp_keepalives_idle", "30".to_owned()),
        ("tcp_keepalives_interval", "10".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ];
    if let Some(mode) = synchronous_commit {
        options.push(("synchronous_commit", mode.to_owned()));
    }
    options
}

/// The pool: connections are pinged within [`Deadline::ping`] when they are handed out and when
/// they come back (sqlx's own checks wait for an answer forever), and waiting for one ends
/// within the deadline.
pub(super) fn pool_options(deadline: &Deadline, max_connections: u32) -> PgPoolOptions {
    let ping = deadline.ping();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(deadline.answer().min(ACQUIRE_WITHIN))
        .test_before_acquire(false)
        .before_acquire(move |conn, _| answers_ping(conn, ping))
        .after_release(move |conn, _| answers_ping(conn, ping))
}

/// `Ok(true)` when `conn` answers a ping within `within`; an error closes it.
fn answers_ping(
    conn: &mut sqlx::PgConnection,
    within: Duration,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        match tokio::time::timeout(within, conn.ping()).await {
            Ok(answered) => answered.map(|()| true),
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection did not answer a ping",
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation the database never answers, under `deadline`.
    async fn unanswered(deadline: &Deadline, what: &'static str) -> Result<(), StoreError> {
        deadline
            .within(what, std::future::pending::<Result<(), StoreError>>())
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_without_an_answer_ends_at_the_deadline() {
        let deadline = Deadline::new(Duration::from_secs(60));
        let started = Instant::now();

        let err = unanswered(&deadline, "writing a page").await.unwrap_err();

        assert_eq!(started.elapsed(), Duration::from_secs(65));
        assert!(err.is_connection());
        assert_eq!(
            err.to_string(),
            "the database did not answer within 1m 5s while writing a page (a network partition \
             or a failover?); the operation was given up and its connection closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_an_operation_in_flight_within_the_grace() {
        let deadline = Deadline::new(Duration::from_secs(60));
        let started = Instant::now();
        let stopper = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stopper.stop_within(Duration::from_secs(10));
        });

        let err = unanswered(&deadline, "writing a page").await.unwrap_err();

        assert_eq!(started.elapsed(), Duration::from_secs(13));
        assert!(err.to_string().contains("shutdown"), "{err}");
        let again = unanswered(&deadline, "closing the pass row").await;
        assert!(again.is_err());
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(13),
            "after the grace, nothing waits"
        );
    }

    #[test]
    fn a_short_statement_timeout_gets_a_margin_of_its_own_length() {
        assert_eq!(
            Deadline::new(Duration::from_secs(2)).answer(),
            Duration::from_secs(4)
        );
        assert_eq!(
            Deadline::new(Duration::from_secs(2)).ping(),
            Duration::from_secs(4)
        );
        assert_eq!(
            Deadline::new(Duration::from_secs(60)).ping(),
            Duration::from_secs(5)
        );
    }
}
