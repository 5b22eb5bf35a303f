//! Timing reads: the status page's and `/metrics`' over a workload's pairs, and the example
//! queries of docs/tables.md with and without an index; and finding those examples in the page.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::report::{BoardTimes, ReadTimes};
use super::sql::BenchSql;
use super::workloads::ONLINE_NOW_INDEX;
use crate::domain::PairKey;
use crate::store::{PairQuery, RejectFilter, Store, StoreError};
use szb_simulator::demo_world::GENERATED_AGENT;

/// Times each read of the status page and `/metrics` over the workload's `users` pairs: the
/// median of five calls each.
pub(super) async fn time_board(store: &Store, users: u64) -> Result<BoardTimes> {
    let keys: Vec<PairKey> = (1..=users as i64)
        .map(|u| PairKey::new(GENERATED_AGENT, u, None))
        .collect();
    async fn median<F, Fut, T>(mut f: F) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            f().await?;
            took.push(started.elapsed());
        }
        took.sort();
        Ok(took[2])
    }
    let page = |attention, user_id, offset| PairQuery {
        attention,
        hot: false,
        lag_after: Duration::from_secs(1800),
        agent_id: None,
        user_id,
        offset,
        limit: 50,
    };
    let (attention, all, search) = (
        page(true, None, 0),
        page(false, None, users as i64 - 50),
        page(false, Some(users as i64 / 2), 0),
    );
    let first_rejects = RejectFilter {
        limit: 20,
        ..Default::default()
    };
    Ok(BoardTimes {
        pair_counts: median(|| store.pair_counts(&keys)).await?,
        attention: median(|| store.pair_page(&keys, &attention)).await?,
        all_last_page: median(|| store.pair_page(&keys, &all)).await?,
        search: median(|| store.pair_page(&keys, &search)).await?,
        totals: median(|| store.totals()).await?,
        rejects: median(|| store.rejects(&first_rejects)).await?,
    })
}

/// docs/tables.md, whose ```sql examples the benchmark times (the Dockerfile copies it into the
/// build stage for this).
const TABLES_PAGE: &str = include_str!("../../docs/tables.md");

/// Times every SELECT of the page's examples, after `VACUUM (ANALYZE) visits` (what
/// autovacuum does soon after a first sync), with the online-now index and without it (the
/// drop rolled back), and `COPY` into a table shaped like `visits`, with and without it
/// (alternating, the median of three each). The examples' activity and user become the busiest
/// activity and user 1 of the generated world, so per-activity reads are timed on real rows.
pub(super) async fn time_reads(bench: &BenchSql) -> Result<ReadTimes> {
    bench.vacuum_analyze_visits().await?;
    let activity = bench.busiest_activity().await?.unwrap_or_default();
    let mut reads = Vec::new();
    for statement in sql_blocks(TABLES_PAGE).into_iter().flatten() {
        let body: Vec<&str> = statement
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
            .collect();
        if !body
            .first()
            .is_some_and(|l| l.trim_start().starts_with("SELECT"))
        {
            continue;
        }
        let label = statement
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("-- "))
            .next_back()
            .map_or_else(|| body[0].trim().to_owned(), str::to_owned);
        let sql = body
            .join("\n")
            .replace("'10096289'", &format!("'{activity}'"))
            .replace("user_id = 15460259", "user_id = 1");
        let (with, rows) = bench.time_read(&sql, None, 5).await?;
        let (without, _) = bench.time_read(&sql, Some(ONLINE_NOW_INDEX), 5).await?;
        reads.push((label, rows, with, without));
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (rows, took) = bench.copy_visits_baseline(None).await?;
        with.push(rows as f64 / took.as_secs_f64());
        let (rows, took) = bench.copy_visits_baseline(Some(ONLINE_NOW_INDEX)).await?;
        without.push(rows as f64 / took.as_secs_f64());
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    Ok(ReadTimes {
        reads,
        copy_with: with[1],
        copy_without: without[1],
    })
}

/// The SQL statements of a Markdown text's ```sql blocks, each with the comment lines before it
/// (the examples of docs/tables.md: the benchmark times them, a test runs them). A statement ends at a
/// line ending in `;`.
pub fn sql_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sql" {
            continue;
        }
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            current.push_str(line);
            current.push('\n');
            if line.trim_end().ends_with(';') {
                statements.push(std::mem::take(&mut current));
            }
        }
        if !current.trim().is_empty() {
            statements.push(current);
        }
        blocks.push(statements);
    }
    blocks
}
