//! Prometheus metrics: the feed's events become counters and histograms, named by the Prometheus
//! conventions (`szb_` prefix, base units, `_total` counters). No label is per user: agents are
//! few, pairs are not (per-pair detail is the status page's and SQL's).
//!
//! The gauges that describe stored state (pairs by state, the oldest sync) are set from one query
//! just before each scrape, by whoever serves `/metrics`.

use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::events::{Answer, Event, Observer};
use crate::domain::RunOutcome;

/// The registry and every metric of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    retries: IntCounterVec,
    rate_limited: IntCounterVec,
    clock_skew: IntCounterVec,
    concurrency_limit: Gauge,
    pages: IntCounterVec,
    visits_written: IntCounterVec,
    rejects: IntCounterVec,
    strings_cleaned: IntCounterVec,
    pair_runs: IntCounterVec,
    pass_duration: HistogramVec,
    passes: IntCounterVec,
    last_pass_end: Gauge,
    pairs: IntGaugeVec,
    oldest_sync_age: Gauge,
    check_age: HistogramVec,
    checks: IntCounterVec,
    extra_requests: IntCounterVec,
    sweep_estimate: Gauge,
    tick_period: Gauge,
    request_budget: Gauge,
    hot_pairs: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The states `szb_pairs` counts configured pairs in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairStates {
    /// The last run ended well (or was interrupted after its last page).
    pub ok: i64,
    /// The last run failed; the pair may be backing off.
    pub failing: i64,
    /// No run ever finished.
    pub never_synced: i64,
    /// Seconds since the least recently synced pair's last success; `None` when none ever did.
    pub oldest_sync_age_seconds: Option<f64>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("szb_build_info", "The running szb-sync build; always 1."),
            &["version"],
        )
        .expect("a valid gauge");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build)).expect("registered once");
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("a valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("a valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let metrics = Metrics {
            requests: counter(
                &registry,
                "szb_requests_total",
                "Requests to the visits endpoint, each attempt counted, by agent and HTTP \
                 status (\"error\" when no answer came).",
                &["agent", "status"],
            ),
            request_duration: histogram(
                "szb_request_duration_seconds",
                "Time from sending a request to its whole body, or to its failure.",
                &["agent"],
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            retries: counter(
                &registry,
                "szb_retries_total",
                "Failed attempts that were tried again.",
                &["agent"],
            ),
            rate_limited: counter(
                &registry,
                "szb_rate_limited_total",
                "Answers with HTTP 429 Too Many Requests.",
                &["agent"],
            ),
            clock_skew: counter(
                &registry,
                "szb_clock_skew_total",
                "Answers whose Date header was more than a minute from our clock; settling \
                 never trusts a Date ahead of our clock.",
                &["agent"],
            ),
            concurrency_limit: gauge(
                "szb_request_concurrency_limit",
                "Requests allowed in flight now by the adaptive concurrency controllers, \
                 summed over tokens.",
            ),
            pages: counter(
                &registry,
                "szb_pages_total",
                "Pages of visits committed to the database.",
                &["agent"],
            ),
            visits_written: counter(
                &registry,
                "szb_visits_written_total",
                "Visit rows written: kind=\"inserted\" for new visits, \"updated\" for changed \
                 ones.",
                &["agent", "kind"],
            ),
            rejects: counter(
                &registry,
                "szb_rejects_total",
                "Items the upstream sent that are not valid visits (kept in sync_rejects).",
                &["agent"],
            ),
            strings_cleaned: counter(
                &registry,
                "szb_strings_cleaned_total",
                "Strings (and numbers) in pages written that were repaired so Postgres could \
                 store them: NUL, lone surrogates, invalid UTF-8 became U+FFFD.",
                &["agent"],
            ),
            pair_runs: counter(
                &registry,
                "szb_pair_runs_total",
                "Runs of pairs, by outcome.",
                &["outcome"],
            ),
            pass_duration: histogram(
                "szb_pass_duration_seconds",
                "Wall time of a pass over the due pairs.",
                &[],
                vec![
                    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                ],
            ),
            passes: counter(
                &registry,
                "szb_passes_total",
                "Passes, by outcome.",
                &["outcome"],
            ),
            last_pass_end: gauge(
                "szb_last_pass_end_timestamp_seconds",
                "When the last pass ended, as a Unix time.",
            ),
            pairs: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "szb_pairs",
                        "Configured pairs by state: ok, failing (the last run failed), \
                         never_synced.",
                    ),
                    &["state"],
                )
                .expect("a valid gauge");
                registry
                    .register(Box::new(g.clone()))
                    .expect("registered once");
                g
            },
            oldest_sync_age: gauge(
                "szb_oldest_pair_sync_age_seconds",
                "Seconds since the least recently synced configured pair last synced well.",
            ),
            check_age: histogram(
                "szb_pair_check_age_seconds",
                "Age of a pair's previous check when it is checked again: how stale pairs get \
                 before their checks.",
                &[],
                vec![
                    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
                    21600.0, 86400.0,
                ],
            ),
            checks: counter(
                &registry,
                "szb_checks_total",
                "Checks of pairs, by whether they found new visits (found=\"new\" or \
                 \"nothing\") and whether they were extra checks between the ticks \
                 (extra=\"true\"); the hit rate is the share found=\"new\".",
                &["found", "extra"],
            ),
            extra_requests: counter(
                &registry,
                "szb_extra_check_requests_total",
                "Requests spent on checks between the ticks, on pairs due for their arrival \
                 rate, an open visit or a change.",
                &[],
            ),
            sweep_estimate: gauge(
                "szb_sweep_estimate_seconds",
                "How long a check of every configured pair takes at the measured request \
                 budget; above szb_schedule_tick_seconds the sweep runs over the tick.",
            ),
            tick_period: gauge(
                "szb_schedule_tick_seconds",
                "The period of schedule.cron: every pair is checked at least once per tick \
                 when the budget allows.",
            ),
            request_budget: gauge(
                "szb_request_budget_per_second",
                "Requests per second the schedule may spend: measured while due pairs waited, \
                 at most api.max_requests_per_second; 0 before it is known.",
            ),
            hot_pairs: gauge(
                "szb_hot_pairs",
                "Pairs due between the ticks (for their arrival rate, an open visit, a change, \
                 or never synced), as of the latest pass's plan.",
            ),
            registry,
        };
        // Series that exist from the start, so rate() and alerts see zeros, not gaps.
        for state in ["ok", "failing", "never_synced"] {
            metrics.pairs.with_label_values(&[state]).set(0);
        }
        for outcome in RunOutcome::ALL {
            if outcome != RunOutcome::Running {
                metrics.pair_runs.with_label_values(&[outcome.as_str()]);
            }
        }
        for outcome in [RunOutcome::Ok, RunOutcome::Failed, RunOutcome::Interrupted] {
            metrics.passes.with_label_values(&[outcome.as_str()]);
        }
        for found in ["new", "nothing"] {
            for extra in ["true", "false"] {
                metrics.checks.with_label_values(&[found, extra]);
            }
        }
        metrics.extra_requests.with_label_values::<&str>(&[]);
        metrics.check_age.with_label_values::<&str>(&[]);
        metrics
    }

    /// Starts the per-agent series at zero for these agents, so a counter that never moved
    /// (no retry yet, say) is a 0 in Prometheus rather than a missing series.
    pub fn know_agents(&self, agents: impl IntoIterator<Item = i64>) {
        for agent in agents {
            let agent = agent.to_string();
            for c in [
                &self.retries,
                &self.rate_limited,
                &self.clock_skew,
                &self.pages,
                &self.rejects,
                &self.strings_cleaned,
            ] {
                c.with_label_values(&[&agent]);
            }
            for kind in ["inserted", "updated"] {
                self.visits_written.with_label_values(&[&agent, kind]);
            }
        }
    }

    /// The state gauges, from the database.
    pub fn set_pair_states(&self, states: &PairStates) {
        self.pairs.with_label_values(&["ok"]).set(states.ok);
        self.pairs
            .with_label_values(&["failing"])
            .set(states.failing);
        self.pairs
            .with_label_values(&["never_synced"])
            .set(states.never_synced);
        self.oldest_sync_age
            .set(states.oldest_sync_age_seconds.unwrap_or(0.0));
    }

    /// The adaptive limit in effect, from the API client.
    pub fn set_concurrency_limit(&self, limit: f64) {
        self.concurrency_limit.set(limit);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to memory");
        String::from_utf8(out).expect("the encoder writes UTF-8")
    }

    /// The content type of [`Metrics::render`].
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Observer for Metrics {
    fn on(&self, event: &Event<'_>) {
        match *event {
            Event::Request {
                agent_id,
                answer,
                elapsed,
            } => {
                let agent = agent_id.to_string();
                let status = match answer {
                    Answer::Status(code) => code.to_string(),
                    Answer::NoAnswer => "error".to_owned(),
                };
                self.requests.with_label_values(&[&agent, &status]).inc();
                self.request_duration
                    .with_label_values(&[&agent])
                    .observe(elapsed.as_secs_f64());
                if answer == Answer::Status(429) {
                    self.rate_limited.with_label_values(&[&agent]).inc();
                }
            }
            Event::Retry { pair, .. } => {
                self.retries
                    .with_label_values(&[&pair.agent_id.to_string()])
                    .inc();
            }
            Event::PageWritten { pair, counts, .. } => {
                let agent = pair.agent_id.to_string();
                self.pages.with_label_values(&[&agent]).inc();
                self.visits_written
                    .with_label_values(&[&agent, "inserted"])
                    .inc_by(counts.visits_inserted);
                self.visits_written
                    .with_label_values(&[&agent, "updated"])
                    .inc_by(counts.visits_updated);
                self.rejects
                    .with_label_values(&[&agent])
                    .inc_by(counts.rejects);
                self.strings_cleaned
                    .with_label_values(&[&agent])
                    .inc_by(counts.strings_cleaned);
            }
            Event::PairFinished { outcome, .. } => {
                self.pair_runs.with_label_values(&[outcome.as_str()]).inc();
            }
            Event::PassFinished {
                outcome, elapsed, ..
            } => {
                self.pass_duration
                    .with_label_values::<&str>(&[])
                    .observe(elapsed.as_secs_f64());
                self.passes.with_label_values(&[outcome.as_str()]).inc();
                self.last_pass_end.set(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
            }
            Event::ClockSkew { agent_id, .. } => {
                self.clock_skew
                    .with_label_values(&[&agent_id.to_string()])
                    .inc();
            }
            Event::Checked {
                since_last,
                found_new,
                extra,
                requests,
            } => {
                if let Some(age) = since_last {
                    self.check_age
                        .with_label_values::<&str>(&[])
                        .observe(age.as_secs_f64());
                }
                let found = if found_new { "new" } else { "nothing" };
                let extra_label = if extra { "true" } else { "false" };
                self.checks.with_label_values(&[found, extra_label]).inc();
                if extra {
                    self.extra_requests
                        .with_label_values::<&str>(&[])
                        .inc_by(requests);
                }
            }
            Event::Schedule {
                hot,
                tick,
                budget,
                sweep,
                ..
            } => {
                self.tick_period.set(tick.as_secs_f64());
                self.request_budget.set(budget.unwrap_or(0.0));
                self.sweep_estimate
                    .set(sweep.map_or(0.0, |s| s.as_secs_f64()));
                self.hot_pairs.set(hot as f64);
            }
            Event::ListSize { .. } | Event::PassStarted { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PairKey;
    use crate::telemetry::events::Counts;
    use std::time::Duration;

    #[test]
    fn events_become_counters_with_agent_labels_and_no_user_label() {
        let m = Metrics::new();
        let pair = PairKey::new(105131, 15460259, None);
        m.on(&Event::Request {
            agent_id: 105131,
            answer: Answer::Status(429),
            elapsed: Duration::from_millis(30),
        });
        m.on(&Event::Request {
            agent_id: 105131,
            answer: Answer::Status(200),
            elapsed: Duration::from_millis(30),
        });
        m.on(&Event::PageWritten {
            pair: &pair,
            counts: Counts {
                visits_inserted: 7,
                visits_updated: 2,
                rejects: 1,
                ..Counts::default()
            },
            read: 10,
            set_aside: false,
        });
        m.on(&Event::PairFinished {
            pair: &pair,
            outcome: RunOutcome::Ok,
            counts: Counts::default(),
            settled: 9,
            recoveries: &[],
            error: None,
        });

        let text = m.render();

        for line in [
            "szb_requests_total{agent=\"105131\",status=\"429\"} 1",
            "szb_requests_total{agent=\"105131\",status=\"200\"} 1",
            "szb_rate_limited_total{agent=\"105131\"} 1",
            "szb_visits_written_total{agent=\"105131\",kind=\"inserted\"} 7",
            "szb_visits_written_total{agent=\"105131\",kind=\"updated\"} 2",
            "szb_rejects_total{agent=\"105131\"} 1",
            "szb_pages_total{agent=\"105131\"} 1",
            "szb_pair_runs_total{outcome=\"ok\"} 1",
            "szb_pairs{state=\"never_synced\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("szb_build_info{version=\""));
        assert!(!text.contains("15460259"), "no user id in any series");
    }
}
