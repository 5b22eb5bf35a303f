//! Turns cron ticks into engine passes, never two at once.
//!
//! tokio-cron-scheduler only produces ticks; one loop consumes them. A tick that arrives while a
//! pass is still going is dropped (logged), so slow passes never pile up or overlap. Each pass
//! takes the pairs due by its tick and makes them due again at the next one, so replicas on one
//! schedule run each pair once per tick between them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::notify;
use crate::domain::Pair;
use crate::engine::{Engine, PassPlan};
use crate::plural::plural;
use crate::settings::Refresh;
use crate::telemetry::live::Live;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cron schedule {cron:?} rejected: {source}")]
    Cron {
        cron: String,
        #[source]
        source: tokio_cron_scheduler::JobSchedulerError,
    },
    #[error("cron schedule {cron:?} rejected: {detail}")]
    Pattern { cron: String, detail: String },
    #[error("the job scheduler failed: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// Parses `cron` as the scheduler does.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, SchedulerError> {
    crate::settings::cron_pattern(cron).map_err(|e| SchedulerError::Pattern {
        cron: cron.to_owned(),
        detail: e.to_string(),
    })
}

/// A tick that fires this close before its scheduled time (a timer waking early) is that tick.
/// Late ticks need no slack: the latest scheduled time before the tick is its own.
const TICK_SLACK: chrono::Duration = chrono::Duration::milliseconds(500);

/// The plan of a pass started at `now`: by a tick (`ticked`), the pairs due by that tick's
/// scheduled time, due again at the following one; at start-up, the pairs due now, due again
/// at the next tick. The scheduled times come from the pattern, read on the clock that fired the
/// tick, so replicas whose clocks differ by seconds still agree on them.
///
/// With `adaptive` the pass goes on until the next tick, taking pairs as they fall due.
pub fn plan_at(cron: &croner::Cron, now: DateTime<Utc>, ticked: bool, adaptive: bool) -> PassPlan {
    // Whole seconds: croner keeps the fraction of the time it starts from.
    let whole = |t: DateTime<Utc>| t.with_nanosecond(0).unwrap_or(t);
    let due_by = if ticked {
        cron.find_previous_occurrence(&whole(now + TICK_SLACK), true)
            .unwrap_or(now)
    } else {
        now
    };
    let next_due = cron.find_next_occurrence(&whole(due_by), false).ok();
    PassPlan {
        due_by: Some(due_by),
        next_due,
        wait_for_others: true,
        until: next_due.filter(|_| adaptive),
        extra: false,
    }
}

/// How often the schedule loop shows it is alive (to `/livez`, and to systemd's watchdog when
/// its period allows).
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// What the schedule runs, and how.
#[derive(Debug)]
pub struct Schedule<'a> {
    pub cron: &'a str,
    /// How long `sync_runs` and `sync_passes` rows are kept.
    pub keep_runs: Duration,
    /// The configured pairs; a reload (SIGHUP) sends new ones, taken at the next pass.
    pub pairs: watch::Receiver<Arc<Vec<Pair>>>,
    pub live: &'a Live,
    /// `sync.refresh`.
    pub refresh: Refresh,
}

/// A pass right away, then one per tick of `cron`, until `shutdown` fires. The pass in flight
/// finishes its page first. The loop beats every second, during passes too: a loop that stops
/// beating is stuck, and systemd's watchdog (pinged from these beats) restarts the process.
pub async fn run(
    engine: &Engine,
    mut schedule: Schedule<'_>,
    shutdown: &CancellationToken,
) -> Result<(), SchedulerError> {
    let cron = schedule.cron;
    let pattern = parse_cron(cron)?;
    let (tick_tx, mut ticks) = mpsc::channel::<bool>(1);
    let mut scheduler = JobScheduler::new().await?;
    let job_tx = tick_tx.clone();
    let job = Job::new_async(cron, move |_, _| {
        let tx = job_tx.clone();
        Box::pin(async move {
            if tx.try_send(true).is_err() {
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
    let pairs = schedule.pairs.borrow_and_update().len();
    // Settings refuse a cron that never fires; "never" stays a possibility for one built by hand.
    let next_run = pattern
        .find_next_occurrence(
            &Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now),
            false,
        )
        .map_or_else(
            |_| "never".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    tracing::info!(
        cron,
        next_run = %next_run,
        pairs,
        owner = engine.owner(),
        "szb-sync daemon started: a first pass now, the next on the schedule at {next_run}"
    );

    let live = schedule.live;
    let mut beat = Heartbeat::new(live);
    notify::ready(&format!(
        "{}; first pass starting",
        plural(pairs, "pair", "pairs")
    ));
    // A first pass right away: nobody wants to wait for the first tick to see data.
    let _ = tick_tx.try_send(false);
    // With the adaptive schedule: when the next pass between the ticks is due.
    let adaptive = schedule.refresh == Refresh::Adaptive;
    let mut extra_at: Option<DateTime<Utc>> = None;
    loop {
        let early = async {
            match extra_at {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        let plan = tokio::select! {
            tick = ticks.recv() => {
                let Some(ticked) = tick else { break };
                plan_at(&pattern, Utc::now(), ticked, adaptive)
            }
            () = early => PassPlan {
                extra: true,
                ..plan_at(&pattern, Utc::now(), false, adaptive)
            },
            _ = beat.tick() => continue,
            () = shutdown.cancelled() => break,
        };
        let pairs = schedule.pairs.borrow_and_update().clone();
        if !plan.extra {
            notify::status(&format!(
                "pass for the tick of {} running over {}",
                plan.due_by
                    .map_or_else(|| "now".to_owned(), |t| t.to_rfc3339()),
                plural(pairs.len(), "pair", "pairs")
            ));
        }
        live.set_next_pass(plan.next_due);
        let report = beat.during(engine.sync_due(&pairs, plan, shutdown)).await;
        if !plan.extra {
            notify::status(&format!("last pass: {report}"));
            match beat.during(engine.prune_history(schedule.keep_runs)).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(
                    pruned,
                    "old sync_runs, sync_passes and sync_rejects rows pruned"
                ),
                Err(e) => {
                    tracing::warn!(error = %crate::error::logged(&e), "pruning old history failed")
                }
            }
        }
        extra_at = match plan.until {
            Some(next_tick) if !shutdown.is_cancelled() => beat
                .during(engine.next_extra_pass(next_tick))
                .await
                // Never sooner than a second from now: a pair due now that no pass could take
                // (another replica holds it) is not polled for in a tight loop.
                .map(|at| at.max(Utc::now() + chrono::Duration::seconds(1))),
            _ => None,
        };
        if shutdown.is_cancelled() {
            break;
        }
    }
    notify::stopping();
    scheduler.shutdown().await?;
    engine.close().await;
    tracing::info!("szb-sync daemon stopped");
    Ok(())
}

/// The loop's heartbeat: every second to [`Live`], and to systemd's watchdog at half its period.
struct Heartbeat<'a> {
    live: &'a Live,
    period: Duration,
    every: tokio::time::Interval,
    /// Half of systemd's watchdog period, when it set one.
    watchdog: Option<Duration>,
    pinged: Option<std::time::Instant>,
}

impl<'a> Heartbeat<'a> {
    fn new(live: &'a Live) -> Self {
        live.beat();
        let watchdog = notify::watchdog_interval();
        let period = watchdog.map_or(BEAT_EVERY, |half| half.min(BEAT_EVERY));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Heartbeat {
            live,
            period,
            every,
            watchdog,
            pinged: None,
        }
    }

    /// Runs `work` to its end, beating meanwhile.
    async fn during<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = self.tick() => {}
            }
        }
    }

    async fn tick(&mut self) {
        self.every.tick().await;
        self.live.beat();
        if let Some(half) = self.watchdog
            && self
                .pinged
                .is_none_or(|at| at.elapsed() + self.period / 2 >= half)
        {
            notify::watchdog();
            self.pinged = Some(std::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_tick_takes_the_pairs_due_by_its_scheduled_time_and_makes_them_due_at_the_next() {
        let cron = parse_cron("0 */10 * * * *").unwrap();
        // Fired 2 s late.
        let plan = plan_at(&cron, at("2026-12-01T12:10:02Z"), true, false);
        assert_eq!(plan.due_by, Some(at("2026-12-01T12:10:00Z")));
        assert_eq!(plan.next_due, Some(at("2026-12-01T12:20:00Z")));
        // A timer that woke a little early: the same tick.
        let early = plan_at(&cron, at("2026-12-01T12:09:59.700Z"), true, false);
        assert_eq!(early, plan);
        // A tick every 2 s is never mistaken for a later one.
        let fast = parse_cron("*/2 * * * * *").unwrap();
        let plan = plan_at(&fast, at("2026-12-01T12:00:04.050Z"), true, false);
        assert_eq!(plan.due_by, Some(at("2026-12-01T12:00:04Z")));
        assert_eq!(plan.next_due, Some(at("2026-12-01T12:00:06Z")));
        assert!(plan.wait_for_others);
    }

    #[test]
    fn the_start_up_pass_takes_the_pairs_due_now() {
        let cron = parse_cron("0 */10 * * * *").unwrap();
        let plan = plan_at(&cron, at("2026-12-01T12:03:00.250Z"), false, true);
        assert_eq!(plan.due_by, Some(at("2026-12-01T12:03:00.250Z")));
        assert_eq!(
            plan.next_due,
            Some(at("2026-12-01T12:10:00Z")),
            "on the tick, to the second"
        );
    }
}
