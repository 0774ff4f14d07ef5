use std::process::ExitCode;

use clap::Parser;
use partner_gateway::cli::{Cli, run};

// jemalloc instead of glibc's allocator: a proxied call allocates and frees many small,
// short-lived buffers, and glibc's malloc was 17% of its CPU (docs/PERFORMANCE.md §10).
// Measured against glibc in one bench session: 157-172 µs of CPU per call instead of
// 203-242 µs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}
