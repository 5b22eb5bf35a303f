//! `szb-sync bench`: its arguments; the workloads, their runs and their report are in
//! [`crate::bench`].

use std::process::ExitCode;

use anyhow::Result;

use crate::bench::{Bench, Options};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Divide every workload's users by this factor, for a quick look (1: the full workloads).
    #[arg(long, value_name = "FACTOR", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    scale: u64,
    /// Runs of each workload, 1..=9; the table shows the median run (by wall time).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    runs: u64,
    /// Only the workloads whose name contains this text (`--only quiet`, `--only replicas`).
    /// Without it, every workload but freshness, which takes about 25 minutes of mostly
    /// waiting: `--only freshness`.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Only the freshness workload, in a quick version that checks its plumbing in about three
    /// minutes: 200 pairs, a minute of arrivals, cron every 20 s.
    #[arg(long, hide = true)]
    smoke: bool,
    #[command(flatten)]
    pub(super) config: super::ConfigArg,
}

pub(super) async fn run(settings: &Settings, args: BenchArgs) -> Result<ExitCode> {
    let bench = Bench::new(settings)?;
    out!(
        "szb-sync bench → {} (dropped and created for each workload)\n",
        bench.target()
    );
    let options = Options {
        scale: args.scale,
        runs: args.runs,
        only: args.only,
        smoke: args.smoke,
    };
    let report = bench.run(&options).await?;
    super::output::write(report.to_string().as_bytes());
    Ok(ExitCode::SUCCESS)
}
