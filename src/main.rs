use std::process::ExitCode;

use clap::Parser;
use partner_gateway::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}
