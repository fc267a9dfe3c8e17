//! `context-check`: are the acknowledged events counted once each in Redis?
//!
//! PostgreSQL's `UNIQUE (event_id)` cannot store an event twice, so a duplicate can only show in
//! Redis: an event whose request was retried, or replayed after a crash, counted again. For every
//! user none of whose events was left unanswered, the category counts in `recent_categories` must
//! equal the user's acknowledged events, per category of the stored (enriched) rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use event_ingest::config::RedisArgs;
use event_ingest::context::{ContextConfig, ContextStore};
use event_ingest::event::{Actor, UserId};
use event_ingest::health::Health;
use event_ingest::secret::SecretUrl;
use serde_json::json;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// `event_id,user_id` lines of the acknowledged events.
    #[arg(long)]
    acked: PathBuf,
    /// `event_id,user_id` lines of the events left unanswered.
    #[arg(long)]
    unresolved: PathBuf,
    #[arg(long, env = "DATABASE_URL")]
    database_url: SecretUrl,
    /// The service's Redis settings.
    #[command(flatten)]
    redis: RedisArgs,
}

fn read_events(path: &Path) -> anyhow::Result<Vec<(Uuid, i64)>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (id, user) = line
                .split_once(',')
                .ok_or_else(|| anyhow::anyhow!("not `event_id,user_id`: {line}"))?;
            Ok((id.parse()?, user.parse()?))
        })
        .collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let acked = read_events(&args.acked)?;
    let unresolved: HashSet<i64> = read_events(&args.unresolved)?
        .into_iter()
        .map(|(_, user)| user)
        .collect();
    let ids: Vec<Uuid> = acked
        .iter()
        .filter(|(_, user)| !unresolved.contains(user))
        .map(|(id, _)| *id)
        .collect();

    let pool = event_ingest::db::connect(&args.database_url, 1).await?;
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT user_id, metadata->>'category', count(*) FROM interaction_logs
         WHERE event_id = ANY($1) AND metadata ? 'category' GROUP BY 1, 2",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let mut expected: BTreeMap<i64, HashMap<String, i64>> = BTreeMap::new();
    for (user, category, count) in rows {
        expected.entry(user).or_default().insert(category, count);
    }

    let config = ContextConfig {
        timeout: Duration::from_secs(5),
        keys: args.redis.keys(),
        ..ContextConfig::default()
    };
    let redis = &args.redis;
    let store = ContextStore::new(
        &redis.redis_url,
        redis.redis_cluster,
        config,
        &Health::default(),
    )?;
    let (mut exact, mut over, mut under) = (0, 0, 0);
    let mut examples = Vec::new();
    for (user, expected) in &expected {
        let counted = store
            .load(&Actor::User(UserId::new(*user)?))
            .await?
            .recent_categories;
        let (more, less) = expected
            .iter()
            .fold((0, 0), |(more, less), (category, &n)| {
                let got = counted.get(category).copied().unwrap_or(0);
                (more + (got - n).max(0), less + (n - got).max(0))
            });
        match (more, less) {
            (0, 0) => exact += 1,
            _ => {
                over += more;
                under += less;
                if examples.len() < 5 {
                    examples.push(json!({"user": user, "expected": expected, "redis": counted}));
                }
            }
        }
    }
    println!(
        "{}",
        json!({
            "users_checked": expected.len(),
            "users_excluded": unresolved.len(),
            "users_exact": exact,
            "counted_twice": over,
            "not_counted": under,
            "examples": examples,
        })
    );
    Ok(())
}
