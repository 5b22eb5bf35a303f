//! Turns cron ticks into engine passes, never two at once.
//!
//! tokio-cron-scheduler only produces ticks; one loop consumes them. A tick that arrives while a
//! pass is still going is dropped (logged), so slow passes never pile up or overlap.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::domain::Pair;
use crate::engine::Engine;

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

/// A pass right away, then one per tick of `cron`, until `shutdown` fires. The pass in flight
/// finishes its page first.
pub async fn run(
    engine: &Engine,
    pairs: &[Pair],
    cron: &str,
    keep_runs: Duration,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
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

    // A first pass right away: nobody wants to wait for the first tick to see data.
    let _ = tick_tx.try_send(());
    loop {
        tokio::select! {
            tick = ticks.recv() => {
                if tick.is_none() { break; }
                let report = engine.sync_due(pairs, shutdown).await;
                tracing::info!(summary = %report, "sync run finished");
                match engine.prune_history(keep_runs).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "old sync_runs and sync_passes rows pruned"),
                    Err(e) => tracing::warn!(error = %crate::error::chain(&e), "pruning old history failed"),
                }
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
