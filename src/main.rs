//! `szb-sync`: parse the command line, start logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use szb_sync::cli::{Cli, execute};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli =
        Cli::try_parse_from(&args).unwrap_or_else(|e| szb_sync::cli::parse_error(e, &args).exit());
    szb_sync::telemetry::init_with(
        cli.log_format
            .unwrap_or_else(szb_sync::telemetry::LogFormat::detect),
        cli.default_log_filter(),
    );
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            // The whole cause chain on one line, without repeating a cause a message already quotes.
            eprintln!("error: {}", szb_sync::error::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
