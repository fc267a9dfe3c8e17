use std::process::ExitCode;

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
