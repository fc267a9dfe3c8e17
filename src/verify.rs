//! `verify`: the seed's test script, against a running service.
//!
//! For a fresh user it posts one event of each type on catalogue items, then checks what the seed
//! checks by hand: the answers, the Redis keys (`LRANGE`, `HGETALL`, `GET`, and their TTLs) and
//! the rows of the seed's SQL query, enriched with category and brand. One line per check; the
//! exit code is non-zero if any fails.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rand::Rng;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::config::{DatabaseArgs, RedisArgs};
use crate::event::{Actor, EventType, UserId};
use crate::{context, db};

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Base URL of the running service.
    #[arg(long, env = "SERVICE_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The service's Redis settings: where, and how its keys are named.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The service's --context-ttl-secs: the keys' TTL must not exceed it.
    #[arg(long, env = "CONTEXT_TTL_SECS", default_value_t = context::ContextConfig::default().ttl.as_secs())]
    pub context_ttl_secs: u64,
    /// How long to wait for the rows to reach PostgreSQL.
    #[arg(long, default_value_t = 15)]
    pub timeout_secs: u64,
}

/// The checks' outcomes, printed as they are made.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => println!("ok   {name}"),
            Err(detail) => {
                self.failed += 1;
                println!("FAIL {name}: {detail}");
            }
        }
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(actual: T, expected: T) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {actual:?}"))
    }
}

struct Item {
    asin: String,
    category: String,
    brand: Option<String>,
}

pub async fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let pool = db::connect(&args.database.database_url, 2).await?;
    let items: Vec<Item> = sqlx::query_as::<_, (String, String, Option<String>)>(
        "SELECT asin, category, brand FROM item_catalogue WHERE category IS NOT NULL ORDER BY random() LIMIT 5",
    )
    .fetch_all(&pool)
    .await
    .context("could not read the catalogue")?
    .into_iter()
    .map(|(asin, category, brand)| Item { asin, category, brand })
    .collect();
    anyhow::ensure!(
        items.len() == 5,
        "the catalogue has fewer than 5 products: run `event-ingest seed-catalog` first"
    );
    let user_id: i64 = rand::rng().random_range(1_000_000_000_000..2_000_000_000_000);
    println!("verifying {} with user {user_id}", args.url);

    let http = reqwest::Client::new();
    let mut report = Report::default();
    for (event_type, item) in EventType::ALL.iter().zip(&items) {
        let body = json!({
            "user_id": user_id, "asin": item.asin, "event_type": event_type.as_str(),
            "metadata": {"page": "verify"}
        });
        let outcome = post(&http, &args.url, &body)
            .await
            .and_then(|(status, answer)| {
                expect(status, 200)?;
                expect(
                    answer,
                    json!({"success": true, "message": format!("Event logged: {event_type}")}),
                )
            });
        report.check(
            &format!("POST /api/event {event_type} answers 200 and the seed's body"),
            outcome,
        );
    }
    let bad = json!({"user_id": user_id, "asin": items[0].asin, "event_type": "like"});
    let outcome = post(&http, &args.url, &bad)
        .await
        .and_then(|(status, answer)| {
            expect(status, 422)?;
            expect(answer["error"]["field"].as_str(), Some("event_type"))
        });
    report.check("an unknown event type gets 422 naming the field", outcome);

    check_redis(args, user_id, &items, &mut report).await?;
    check_postgres(args, &pool, user_id, &items, &mut report).await?;

    if report.failed == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} check(s) failed", report.failed);
        Ok(ExitCode::FAILURE)
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<(u16, Value), String> {
    let response = http
        .post(format!("{}/api/event", url.trim_end_matches('/')))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let answer = response
        .json()
        .await
        .map_err(|e| format!("answer is not JSON: {e}"))?;
    Ok((status, answer))
}

async fn check_redis(
    args: &VerifyArgs,
    user_id: i64,
    items: &[Item],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut redis = context::connect(&args.redis.redis_url, args.redis.redis_cluster)
        .await
        .context("Redis is unreachable")?;
    let keys = args.redis.keys();
    let user = Actor::User(UserId::new(user_id)?);
    let key = |name: &str| keys.key(&user, name);

    let recent: Vec<String> = redis.lrange(key("recent_items"), 0, -1).await?;
    let newest_first: Vec<String> = items.iter().rev().map(|i| i.asin.clone()).collect();
    report.check(
        &format!(
            "LRANGE {} 0 -1 lists the items newest first",
            key("recent_items")
        ),
        expect(recent, newest_first),
    );

    let categories: HashMap<String, i64> = redis.hgetall(key("recent_categories")).await?;
    let mut expected: HashMap<String, i64> = HashMap::new();
    for item in items {
        *expected.entry(item.category.clone()).or_default() += 1;
    }
    report.check(
        &format!("HGETALL {} counts each category", key("recent_categories")),
        expect(categories, expected),
    );

    let last_active: Option<String> = redis.get(key("last_active")).await?;
    let outcome = match last_active
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        Some(Ok(at)) if (chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 120 => Ok(()),
        other => Err(format!(
            "expected a recent RFC 3339 time, got {last_active:?} ({other:?})"
        )),
    };
    report.check(
        &format!("GET {} is the time of the last event", key("last_active")),
        outcome,
    );

    for name in ["recent_items", "recent_categories", "last_active"] {
        let ttl: i64 = redis.ttl(key(name)).await?;
        let outcome = if ttl > 0 && ttl.unsigned_abs() <= args.context_ttl_secs {
            Ok(())
        } else {
            Err(format!(
                "TTL is {ttl}, expected 1..={}",
                args.context_ttl_secs
            ))
        };
        report.check(&format!("TTL {} is set", key(name)), outcome);
    }
    Ok(())
}

async fn check_postgres(
    args: &VerifyArgs,
    pool: &sqlx::PgPool,
    user_id: i64,
    items: &[Item],
    report: &mut Report,
) -> anyhow::Result<()> {
    // The seed's query.
    let query = "SELECT asin, event_type::text, metadata FROM interaction_logs WHERE user_id = $1 ORDER BY ts DESC LIMIT 10";
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let rows = loop {
        let rows: Vec<(String, String, Option<Value>)> =
            sqlx::query_as(query).bind(user_id).fetch_all(pool).await?;
        if rows.len() >= items.len() || Instant::now() >= deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.check(
        "interaction_logs holds one row per event (the seed's SQL query)",
        expect(rows.len(), items.len()),
    );
    for (event_type, item) in EventType::ALL.iter().zip(items) {
        let row = rows
            .iter()
            .find(|(asin, kind, _)| asin == &item.asin && kind == event_type.as_str());
        let outcome = match row {
            None => Err("no row".to_owned()),
            Some((_, _, metadata)) => {
                let metadata = metadata.clone().unwrap_or(Value::Null);
                expect(
                    (
                        metadata["category"].as_str(),
                        metadata["brand"].as_str(),
                        metadata["page"].as_str(),
                    ),
                    (
                        Some(item.category.as_str()),
                        item.brand.as_deref(),
                        Some("verify"),
                    ),
                )
            }
        };
        report.check(
            &format!("the {event_type} row is enriched with category and brand"),
            outcome,
        );
    }
    Ok(())
}
