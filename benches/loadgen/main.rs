//! The load generator behind `bench/run`.
//!
//! - `http`: drives one endpoint over keep-alive HTTP/1.1 connections, either as fast as the
//!   service answers (closed loop) or at a fixed rate (open loop: requests are due on a schedule
//!   and latency is measured from when each was due, so a slow answer cannot hide the queue
//!   behind it).
//! - `redis`: the ceiling Redis gives for the service's per-event context update, the same script
//!   call through the same library code, without HTTP.
//! - `journal`: writes a backlog of events straight into a journal directory, for timing the
//!   writer's drain.
//!
//! Every run prints one JSON object on stdout.

mod http;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use event_ingest::context::{ContextConfig, ContextStore, ContextUpdate};
use event_ingest::event::{Event, EventType, MetadataLimits};
use event_ingest::journal::{Journal, JournalConfig, SyncPolicy};
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
    Redis(RedisArgs),
    Journal(JournalArgs),
}

#[derive(clap::Args)]
struct RedisArgs {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "bench:")]
    key_prefix: String,
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 1000)]
    users: i64,
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
            Command::Redis(args) => redis_ceiling(args).await,
            Command::Journal(args) => fill_journal(args).await,
        }
    })
}

/// A random valid event for `users` users over `asins`.
pub fn random_event(rng: &mut SmallRng, users: i64, asins: &[String]) -> serde_json::Value {
    let event_type = EventType::ALL[rng.random_range(0..EventType::ALL.len())];
    json!({
        "user_id": rng.random_range(1..=users),
        "asin": asins[rng.random_range(0..asins.len())],
        "event_type": event_type.as_str(),
        "event_id": uuid::Uuid::from_u128(rng.random()),
        "metadata": {"page": "bench"},
    })
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

async fn redis_ceiling(args: RedisArgs) -> anyhow::Result<()> {
    let store = ContextStore::new(
        &args.redis_url,
        ContextConfig {
            ttl: Duration::from_secs(900),
            recent_items_cap: 20,
            timeout: Duration::from_secs(5),
            key_prefix: args.key_prefix.clone(),
        },
    )?;
    store.ping().await?;
    let asins: Vec<String> = (0..10_000).map(|i| format!("B0BENCH{i:04}")).collect();
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.tasks {
        let store = store.clone();
        let asins = asins.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ task as u64);
            let mut histogram = Histogram::<u64>::new(3).unwrap();
            let mut done = 0u64;
            while Instant::now() < deadline {
                let body = random_event(&mut rng, args.users, &asins);
                let event =
                    Event::from_value(&body, &MetadataLimits::default(), chrono::Utc::now())
                        .expect("a valid event");
                let update = [ContextUpdate {
                    event: &event,
                    category: Some("Books"),
                }];
                let sent = Instant::now();
                store.record(&update).await.expect("Redis answers");
                histogram.record(sent.elapsed().as_micros() as u64).unwrap();
                done += 1;
            }
            (done, histogram)
        }));
    }
    let mut total = 0;
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        let (done, h) = task.await?;
        total += done;
        histogram.add(h)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut out = json!({"mode": "redis", "events": total, "seconds": seconds, "events_per_sec": total as f64 / seconds});
    merge(&mut out, percentiles(&histogram));
    println!("{out}");
    cleanup_redis(&args.redis_url, &args.key_prefix).await;
    Ok(())
}

async fn cleanup_redis(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

async fn fill_journal(args: JournalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.asins.is_empty(), "--asins is required");
    let (journal, _reader, _) = Journal::open(JournalConfig {
        dir: args.dir.clone(),
        max_bytes: u64::MAX / 2,
        segment_bytes: 16 << 20,
        sync: SyncPolicy::Interval(Duration::from_millis(100)),
    })?;
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(rand::random());
    let now = chrono::Utc::now();
    let mut pending = Vec::new();
    for chunk in 0..args.events.div_ceil(1000) {
        let n = 1000.min(args.events - chunk * 1000);
        let payloads = (0..n)
            .map(|_| {
                let body = random_event(&mut rng, args.users, &args.asins);
                let event = Event::from_value(&body, &MetadataLimits::default(), now).unwrap();
                serde_json::to_vec(&event).unwrap()
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

/// Adds `extra`'s fields to `out`.
pub fn merge(out: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(out), serde_json::Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
}
