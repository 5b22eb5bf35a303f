//! What a workload measured, and the tables `szb-sync bench` prints of it.

use std::fmt;
use std::time::Duration;

use super::sql::RunSums;
use super::workloads::{Kind, LOAD_CLIENTS, LOAD_FOR, ONLINE_NOW_INDEX, Workload};
use crate::plural::plural;

/// One timed sync process.
#[derive(Debug, Clone)]
pub(super) struct Measured {
    pub(super) wall: Duration,
    pub(super) peak_rss_kib: u64,
    pub(super) sums: RunSums,
    pub(super) rate_limited: u64,
    pub(super) sim_requests: u64,
    /// From the simulator's first request to its last.
    pub(super) sim_span: Duration,
    /// Rows per second of the `COPY` baseline, where the workload has one.
    pub(super) copy_rate: Option<f64>,
    /// Visit rows the timed passes wrote, from `sync_passes`.
    pub(super) pass_visits: i64,
    pub(super) replicas: Option<ReplicaStats>,
    /// The status page's and the metrics' reads over this workload's pairs.
    pub(super) board: Option<BoardTimes>,
    /// The example queries of docs/tables.md and the views, timed after the sync.
    pub(super) reads: Option<ReadTimes>,
    /// The status page's loads, for the listener workloads.
    pub(super) loads: Option<LoadStats>,
}

/// What the clients of the status page saw while `run` synced.
#[derive(Debug, Clone)]
pub(super) struct LoadStats {
    pub(super) loads: usize,
    /// Loads with an answer other than 200 (or none).
    pub(super) failed_loads: usize,
    pub(super) p50: Duration,
    pub(super) p95: Duration,
    pub(super) max: Duration,
    /// Passes of `run` that finished during the load, and the pair runs of them that failed.
    pub(super) passes: i64,
    pub(super) failed_pairs: i64,
    pub(super) visits: i64,
}

/// Each example statement of docs/tables.md, timed (median of five) with the online-now index and
/// without it, and `COPY` into a table shaped like `visits` with and without it.
#[derive(Debug, Clone)]
pub(super) struct ReadTimes {
    /// (the statement's label, rows returned, with the index, without it).
    pub(super) reads: Vec<(String, usize, Duration, Duration)>,
    pub(super) copy_with: f64,
    pub(super) copy_without: f64,
}

/// Median times of the reads behind the status page and `/metrics`, over every configured pair.
#[derive(Debug, Clone, Copy)]
pub(super) struct BoardTimes {
    pub(super) pair_counts: Duration,
    pub(super) attention: Duration,
    pub(super) all_last_page: Duration,
    pub(super) search: Duration,
    pub(super) totals: Duration,
    pub(super) rejects: Duration,
}

/// What the replicas workload measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplicaStats {
    /// Requests per pair per tick over the quiet ticks, all replicas together.
    pub(super) quiet_requests_per_pair: f64,
    pub(super) quiet_ticks: i64,
    /// The smallest and largest share of the pair runs one replica made.
    pub(super) min_share: f64,
    pub(super) max_share: f64,
    /// From the SIGKILL until every pair the killed replica held had run elsewhere.
    pub(super) takeover: Duration,
    pub(super) victim_pairs: usize,
    pub(super) lease: Duration,
    /// The longest quiet pass of a replica.
    pub(super) longest_pass: Duration,
}

/// One workload's line of the report: the workload, its pairs, and its median run.
pub(super) type Row = (&'static Workload, u64, Measured);

/// What `szb-sync bench` measured: its tables, as Markdown, when displayed.
#[derive(Debug)]
pub struct Report {
    pub(super) rows: Vec<Row>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        table(f, &self.rows)?;
        board(f, &self.rows)?;
        reads(f, &self.rows)?;
        loads(f, &self.rows)?;
        pace(f, &self.rows)
    }
}

/// The pace workloads: 429s and requests a second against each server limit, as the
/// simulator counted them between its first request and its last.
fn pace(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    let paced: Vec<_> = rows
        .iter()
        .filter(|(w, _, _)| w.kind == Kind::Pace)
        .collect();
    if paced.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "\n| pace under server limits | limit req/s | latency ms | requests | 429s | 429 share | req/s sent | req/s answered | answered / limit | failed pairs |"
    )?;
    writeln!(
        f,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (w, _, m) in paced {
        let secs = m.sim_span.as_secs_f64().max(1e-3);
        let answered = m.sim_requests.saturating_sub(m.rate_limited) as f64 / secs;
        writeln!(
            f,
            "| {} | {} | {} | {} | {} | {:.1}% | {:.1} | {answered:.1} | {:.2} | {} |",
            w.name,
            w.rate_limit,
            w.latency_ms,
            m.sim_requests,
            m.rate_limited,
            100.0 * m.rate_limited as f64 / m.sim_requests.max(1) as f64,
            m.sim_requests as f64 / secs,
            answered / w.rate_limit,
            m.sums.failed
        )?;
    }
    Ok(())
}

/// The status page's reads, for the workloads that timed them.
fn board(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let timed: Vec<_> = rows
        .iter()
        .filter_map(|(w, users, m)| m.board.map(|b| (w, users, b)))
        .collect();
    if timed.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "\n| status page reads, ms (median of 5) | pairs | /metrics pair states | pairs needing a look | all pairs, last page | search one pair | totals | rejects |"
    )?;
    writeln!(
        f,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (w, users, b) in timed {
        writeln!(
            f,
            "| after {} | {users} | {} | {} | {} | {} | {} | {} |",
            w.name,
            ms(b.pair_counts),
            ms(b.attention),
            ms(b.all_last_page),
            ms(b.search),
            ms(b.totals),
            ms(b.rejects)
        )?;
    }
    Ok(())
}

/// The example queries and the views, for the workloads that timed them.
fn reads(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    for (w, _, m) in rows {
        let Some(r) = &m.reads else { continue };
        writeln!(
            f,
            "\n| after {}: docs/tables.md query (median of 5) | rows | ms | ms without {ONLINE_NOW_INDEX} |",
            w.name
        )?;
        writeln!(f, "| --- | ---: | ---: | ---: |")?;
        for (label, n, with, without) in &r.reads {
            writeln!(f, "| {label} | {n} | {} | {} |", ms(with), ms(without))?;
        }
        writeln!(
            f,
            "\nCOPY into a table shaped like visits (median of 3, alternating): {:.0} rows/s with \
             {ONLINE_NOW_INDEX}, {:.0} rows/s without",
            r.copy_with, r.copy_without
        )?;
    }
    Ok(())
}

/// The status page under load, for the listener workloads.
fn loads(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let timed: Vec<_> = rows
        .iter()
        .filter_map(|(w, _, m)| m.loads.as_ref().map(|l| (w, l)))
        .collect();
    if timed.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "\n| status page under load ({LOAD_CLIENTS} clients, {} s, `run` passing every 5 s) | visits | loads | failed loads | p50 ms | p95 ms | max ms | passes | failed pair runs |",
        LOAD_FOR.as_secs()
    )?;
    writeln!(
        f,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (w, l) in timed {
        writeln!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            l.visits,
            l.loads,
            l.failed_loads,
            ms(l.p50),
            ms(l.p95),
            ms(l.max),
            l.passes,
            l.failed_pairs
        )?;
    }
    Ok(())
}

/// The main table: one row per workload.
fn table(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    writeln!(
        f,
        "| workload | pairs | visits | requests | 429s | wall s | visits/s | vs baseline | peak RSS MiB | rows written |"
    )?;
    writeln!(
        f,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    )?;
    for (w, users, m) in rows {
        let visits = m.sums.visits_inserted;
        let secs = m.wall.as_secs_f64();
        let written = m.pass_visits + m.sums.activities_written;
        let versus = match w.kind {
            Kind::InitialVsCopy => m.copy_rate.map_or("-".to_owned(), |copy| {
                format!(
                    "{:.2} of COPY ({:.0} rows/s)",
                    visits as f64 / secs / copy,
                    copy
                )
            }),
            Kind::InitialVsIdeal => {
                let concurrency = if w.api.contains("max_concurrency = 8") {
                    8.0
                } else {
                    16.0
                };
                let ideal = m.sums.pages as f64 * w.latency_ms as f64 / 1000.0 / concurrency;
                format!("{:.2}× the ideal {ideal:.1} s", secs / ideal)
            }
            Kind::InitialVsLimit => {
                let ideal = m.sim_requests as f64 / w.rate_limit;
                format!(
                    "{:.2}× requests/limit {ideal:.1} s; {:.1}% 429s; {} failed",
                    secs / ideal,
                    100.0 * m.rate_limited as f64 / m.sim_requests.max(1) as f64,
                    plural(m.sums.failed, "pair", "pairs")
                )
            }
            Kind::Replicas => m.replicas.map_or("-".to_owned(), |r| {
                format!(
                    "quiet: {:.2} requests per pair per tick over {}; shares {:.0}%..{:.0}%; \
                     a SIGKILLed replica's {} done {:.1} s after the kill (lease {} s + pass {:.1} s)",
                    r.quiet_requests_per_pair,
                    plural(r.quiet_ticks, "tick", "ticks"),
                    100.0 * r.min_share,
                    100.0 * r.max_share,
                    plural(r.victim_pairs, "pair", "pairs"),
                    r.takeover.as_secs_f64(),
                    r.lease.as_secs(),
                    r.longest_pass.as_secs_f64()
                )
            }),
            Kind::Listener => "first sync; the load is in its own table below".to_owned(),
            Kind::Pace => "first sync; its pace is in its own table below".to_owned(),
            Kind::Quiet | Kind::Initial => format!(
                "{:.2} requests per pair; {} sync_runs rows",
                m.sim_requests as f64 / *users as f64,
                m.sums.runs
            ),
        };
        writeln!(
            f,
            "| {} | {users} | {visits} | {} | {} | {secs:.2} | {:.0} | {versus} | {:.1} | {} |",
            w.name,
            m.sim_requests,
            m.rate_limited,
            visits as f64 / secs,
            m.peak_rss_kib as f64 / 1024.0,
            if w.kind == Kind::Quiet {
                written.to_string()
            } else {
                "-".to_owned()
            },
        )?;
    }
    Ok(())
}
