//! `szb-sync`: parse the command line, start logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use szb_sync::cli::{Cli, execute};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
