//! The floor of `bench/run floor`: the smallest server that does the seed's request path, to
//! measure the service against in the same run.
//!
//! `POST /api/event` parses the event (typed, as the seed's handler does), sends the seed's six
//! Redis commands in one pipeline (LPUSH, LTRIM and EXPIRE of `recent_items`, HINCRBY and EXPIRE of
//! `recent_categories`, SET of `last_active` with its TTL) and answers the seed's 200. Nothing
//! else: no catalogue, no journal, no PostgreSQL, no limits, no metrics, no logs. The category is
//! one of 30, from the ASIN, where the service looks it up in its catalogue.
//!
//!     cargo bench --bench floor -- --port 18001 --redis-url redis://127.0.0.1:6379 --key-prefix p:

use std::hash::{Hash, Hasher};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 18001)]
    port: u16,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "")]
    key_prefix: String,
}

#[derive(Deserialize)]
struct EventBody {
    user_id: i64,
    asin: String,
    event_type: String,
    #[allow(dead_code, reason = "parsed as the seed's handler does, then unused")]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone)]
struct Floor {
    redis: redis::aio::MultiplexedConnection,
    prefix: &'static str,
}

const TTL: i64 = 900;

async fn log_event(
    State(floor): State<Floor>,
    Json(event): Json<EventBody>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let key = |name: &str| format!("{}user:{}:{name}", floor.prefix, event.user_id);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    event.asin.hash(&mut hasher);
    let category = format!("category-{}", hasher.finish() % 30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .as_secs();
    let items = key("recent_items");
    let categories = key("recent_categories");
    redis::pipe()
        .lpush(&items, &event.asin)
        .ltrim(&items, 0, 19)
        .expire(&items, TTL)
        .hincr(&categories, category, 1)
        .expire(&categories, TTL)
        .set_ex(key("last_active"), now, TTL as u64)
        .query_async::<()>(&mut floor.redis.clone())
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(
        json!({"success": true, "message": format!("Event logged: {}", event.event_type)}),
    ))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore it.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    tokio::runtime::Runtime::new()?.block_on(async {
        let redis = redis::Client::open(args.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let floor = Floor {
            redis,
            prefix: args.key_prefix.leak(),
        };
        let app = Router::new()
            .route("/api/event", post(log_event))
            .route("/health/live", get(|| async { "ok" }))
            .with_state(floor);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
