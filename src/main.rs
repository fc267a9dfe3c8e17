use std::process::ExitCode;

/// mimalloc: the service allocates small, short-lived buffers on every thread; glibc's malloc
/// spent about 12% of the service's CPU under load (bench/README.md has the profile).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use event_ingest::cli::Cli;
use event_ingest::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    match cli.command.run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
