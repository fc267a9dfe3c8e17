//! The load generator behind `bench/run`.
//!
//! - `http`: drives one endpoint over keep-alive HTTP/1.1 connections, either as fast as the
//!   service answers (closed loop) or at a fixed rate (open loop: requests are due on a schedule
//!   and latency is measured from when each was due, so a slow answer cannot hide the queue
//!   behind it).
//! - `script`: prints the Redis context script, for `redis-benchmark` to measure Redis's own
//!   ceiling for it.
//! - `journal`: writes a backlog of events straight into a journal directory, for timing the
//!   writer's drain.
//! - `context-check`: after a crash test, compares each user's Redis category counts with the
//!   acknowledged events stored in PostgreSQL: an event counted twice (a retry, a replay) shows.
//!
//! Every run prints one JSON object on stdout.

mod context_check;
mod http;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use event_ingest::event::{Arrival, Event, EventRules, EventType};
use event_ingest::handoff::journal::{Journal, JournalConfig, SyncPolicy};
use hdrhistogram::Histogram;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Http(http::HttpArgs),
    Journal(JournalArgs),
    ContextCheck(context_check::Args),
    /// Prints the Lua script of the Redis context update (for redis-benchmark).
    Script,
}

#[derive(clap::Args)]
struct JournalArgs {
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 1000)]
    users: i64,
    /// ASINs to use, comma-separated (the catalogue's).
    #[arg(long, value_delimiter = ',')]
    asins: Vec<String>,
    /// Each event with a `timestamp` and `sent_at` of the client's, as the TypeScript client
    /// sends them (its time then is the client's, not the time of receipt).
    #[arg(long)]
    client_times: bool,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore it.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Http(args) => http::run(args).await,
            Command::Journal(args) => fill_journal(args).await,
            Command::ContextCheck(args) => context_check::run(args).await,
            Command::Script => {
                print!("{}", event_ingest::context::RECORD_SCRIPT);
                Ok(())
            }
        }
    })
}

/// What client event id the generated events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventIds {
    /// A UUIDv7 of the current time, as the TypeScript client sends.
    TimeOrdered,
    /// 128 random bits, as clients that use UUIDv4 send.
    Random,
    /// None, as in the seed's event shape: the service gives each event one.
    None,
}

/// A random valid event for `users` users over `asins`, with a client event id of the kind `ids`.
pub fn random_event(
    rng: &mut SmallRng,
    users: i64,
    asins: &[String],
    ids: EventIds,
) -> serde_json::Value {
    let event_type = EventType::ALL[rng.random_range(0..EventType::ALL.len())];
    let mut event = json!({
        "user_id": rng.random_range(1..=users),
        "asin": asins[rng.random_range(0..asins.len())],
        "event_type": event_type.as_str(),
        "metadata": {"page": "bench"},
    });
    let event_id = match ids {
        EventIds::TimeOrdered => {
            let now = chrono::Utc::now().timestamp_millis() as u64;
            uuid::Builder::from_unix_timestamp_millis(now, &rng.random()).into_uuid()
        }
        EventIds::Random => uuid::Uuid::from_u128(rng.random()),
        EventIds::None => return event,
    };
    event["event_id"] = json!(event_id);
    event
}

/// Latency figures in milliseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    json!({
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "p999_ms": ms(histogram.value_at_quantile(0.999)),
        "max_ms": ms(histogram.max()),
    })
}

async fn fill_journal(args: JournalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.asins.is_empty(), "--asins is required");
    let (journal, _reader, _) = Journal::open(
        JournalConfig {
            dir: args.dir.clone(),
            max_bytes: u64::MAX / 2,
            segment_bytes: 16 << 20,
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
        },
        &event_ingest::health::Health::default(),
    )?;
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(rand::random());
    let now = chrono::Utc::now();
    let mut pending = Vec::new();
    for chunk in 0..args.events.div_ceil(1000) {
        let n = 1000.min(args.events - chunk * 1000);
        let payloads = (0..n)
            .map(|_| {
                let mut body =
                    random_event(&mut rng, args.users, &args.asins, EventIds::TimeOrdered);
                if args.client_times {
                    let at = now - chrono::TimeDelta::milliseconds(rng.random_range(0..60_000));
                    body["timestamp"] = json!(at.to_rfc3339());
                    body["sent_at"] = json!(now.to_rfc3339());
                }
                let event =
                    Event::from_value(body, &EventRules::default(), Arrival::at(now)).unwrap();
                event_ingest::handoff::journal::binary::encode(&event)
            })
            .collect();
        pending.push(journal.append(payloads)?);
        if pending.len() >= 64 {
            for append in pending.drain(..) {
                append.await?;
            }
        }
    }
    for append in pending {
        append.await?;
    }
    journal.close().await;
    println!(
        "{}",
        json!({"mode": "journal", "events": args.events, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// CPU time this process has used, user and system, in seconds.
pub fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// Adds `extra`'s fields to `out`.
pub fn merge(out: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(out), serde_json::Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
}
