//! The command line: `serve`, `writer`, `migrate`, `seed-catalog`, `verify`, `evaluate`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{DatabaseArgs, Settings, WriterSettings};
use crate::telemetry::LogFormat;
use crate::{db, evaluate, seed_catalog, startup, verify};

#[derive(Debug, Parser)]
#[command(
    name = "event-ingest",
    version,
    about = "Event ingestion for a real-time recommender"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (creates the database and applies migrations first).
    Serve(Box<Settings>),
    /// Run a writer on its own: JetStream to PostgreSQL, beside API nodes run with
    /// `serve --handoff jetstream --writer off`.
    Writer(Box<WriterSettings>),
    /// Create the database if missing and apply pending migrations.
    Migrate(DatabaseArgs),
    /// Fill a synthetic catalogue (items, products, users) for demos and benchmarks.
    SeedCatalog(seed_catalog::SeedArgs),
    /// Check a running service end to end: HTTP, Redis keys, PostgreSQL rows.
    Verify(verify::VerifyArgs),
    /// Measure offline what the realtime context is worth: sessions replayed, the re-ranker's
    /// rules against a popularity ranking (Recall, MRR and NDCG at 20).
    Evaluate(Box<evaluate::EvaluateArgs>),
}

impl Command {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Serve(settings) => {
                let app = startup::Application::build(*settings).await?;
                app.run_until_stopped(startup::shutdown_signal()).await?;
            }
            Command::Writer(settings) => {
                let node = startup::WriterNode::build(*settings).await?;
                node.run_until_stopped(startup::shutdown_signal()).await?;
            }
            Command::Migrate(args) => {
                db::prepare(&args.database_url, 1).await?;
                tracing::info!("migrations applied");
            }
            Command::SeedCatalog(args) => seed_catalog::run(&args).await?,
            Command::Verify(args) => return verify::run(&args).await,
            Command::Evaluate(args) => evaluate::run(*args).await?,
        }
        Ok(ExitCode::SUCCESS)
    }
}
