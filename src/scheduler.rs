//! The daemon loop: runs the engine at start and on every cron tick, never two runs at once.
//!
//! tokio-cron-scheduler only produces ticks; one worker consumes them. A tick that arrives while
//! a run is still going is dropped (logged), so slow runs never pile up or overlap.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::settings::PairConfig;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cron schedule {cron:?} rejected: {source}")]
    Cron {
        cron: String,
        #[source]
        source: tokio_cron_scheduler::JobSchedulerError,
    },
    #[error("the job scheduler failed: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// Applies migrations, retrying while the database is away, until it works or shutdown.
/// Returns `false` on shutdown.
pub async fn migrate_with_retry(store: &Store, shutdown: &CancellationToken) -> bool {
    let mut wait = Duration::from_secs(1);
    loop {
        let migrated = tokio::select! {
            migrated = store.migrate() => migrated,
            () = shutdown.cancelled() => return false,
        };
        match migrated {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %crate::engine::chain(&e), retry_in_s = wait.as_secs(), "cannot apply migrations; will retry");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return false,
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Runs the daemon until `shutdown` fires. The run in flight finishes its page first.
pub async fn run(
    engine: Engine,
    pairs: Vec<PairConfig>,
    cron: &str,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    if !migrate_with_retry(engine.store(), &shutdown).await {
        return Ok(());
    }
    let (tick_tx, mut ticks) = mpsc::channel::<()>(1);
    let mut scheduler = JobScheduler::new().await?;
    let job_tx = tick_tx.clone();
    let job = Job::new_async(cron, move |_, _| {
        let tx = job_tx.clone();
        Box::pin(async move {
            if tx.try_send(()).is_err() {
                tracing::warn!("previous sync still running; this tick is skipped");
            }
        })
    })
    .map_err(|source| SchedulerError::Cron {
        cron: cron.to_owned(),
        source,
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    tracing::info!(cron, pairs = pairs.len(), "szb-sync daemon started");

    // A first run right away: nobody wants to wait for the first tick to see data.
    let _ = tick_tx.try_send(());
    loop {
        tokio::select! {
            tick = ticks.recv() => {
                if tick.is_none() { break; }
                let report = engine.sync_all(&pairs, &shutdown).await;
                tracing::info!(summary = %report, "sync run finished");
            }
            () = shutdown.cancelled() => break,
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    scheduler.shutdown().await?;
    tracing::info!("szb-sync daemon stopped");
    Ok(())
}
