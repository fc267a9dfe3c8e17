//! The user's short-term context in Redis: what the re-ranker reads.
//!
//! Three keys per user, exactly as DESIGN.md names them (after an optional deployment prefix):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `user:{id}:recent_items` | List | ASINs, newest first, capped |
//! | `user:{id}:recent_categories` | Hash | category → interaction count |
//! | `user:{id}:last_active` | String | RFC 3339 time of the last event |
//!
//! A fourth key, `user:{id}:event_ids` (a sorted set of the client's event ids within the TTL),
//! exists only for clients that send their own `event_id`: it makes a retried event count once.
//!
//! All updates of a request, one event or a whole batch, are one script call: one round trip, and
//! no reader ever sees half an update. Every call has a deadline well under the request's budget;
//! the caller decides what a failure means (for ingestion: a warning and a 200).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::SecondsFormat;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::Serialize;

use crate::event::{Event, UserId};

#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub ttl: Duration,
    pub recent_items_cap: usize,
    /// Deadline of one call to Redis.
    pub timeout: Duration,
    /// Put before every key; empty in production, a random value per test.
    pub key_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed less than {BREAKER_COOLDOWN:?} ago; not tried")]
    RecentlyFailed,
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A user's context as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserContext {
    /// ASINs, newest first.
    pub recent_items: Vec<String>,
    /// Category → number of recent interactions.
    pub recent_categories: HashMap<String, i64>,
    /// RFC 3339 time of the last event, if within the TTL.
    pub last_active: Option<String>,
}

impl UserContext {
    pub fn is_empty(&self) -> bool {
        self.recent_items.is_empty() && self.recent_categories.is_empty()
    }
}

/// After a failure, calls fail at once for this long, so that an outage costs a request nothing
/// instead of the timeout; then calls try again.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// Most event ids remembered per user for deduplication.
const EVENT_IDS_CAP: usize = 1000;

/// Applies a list of events. KEYS come four per event (recent_items, recent_categories,
/// last_active, event_ids); ARGV holds the TTL, the list cap, the id-set cap and the time in ms,
/// then four per event (asin, category or '', last_active text, client event id or '').
/// Returns, per event, 1 if applied and 0 if its event id was already seen.
const RECORD_SCRIPT: &str = r"
local ttl, cap, ids_cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local applied = {}
for i = 0, #KEYS / 4 - 1 do
  local k, a = i * 4, 4 + i * 4
  local fresh = 1
  if ARGV[a + 4] ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now - ttl * 1000)
    if redis.call('ZADD', KEYS[k + 4], 'NX', now, ARGV[a + 4]) == 0 then
      fresh = 0
    else
      redis.call('ZREMRANGEBYRANK', KEYS[k + 4], 0, -ids_cap - 1)
      redis.call('EXPIRE', KEYS[k + 4], ttl)
    end
  end
  if fresh == 1 then
    redis.call('LPUSH', KEYS[k + 1], ARGV[a + 1])
    redis.call('LTRIM', KEYS[k + 1], 0, cap - 1)
    redis.call('EXPIRE', KEYS[k + 1], ttl)
    if ARGV[a + 2] ~= '' then
      redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 2], 1)
      redis.call('EXPIRE', KEYS[k + 2], ttl)
    end
    redis.call('SET', KEYS[k + 3], ARGV[a + 3], 'EX', ttl)
  end
  applied[i + 1] = fresh
end
return applied
";

/// One event to record, with the category the catalogue gave it (if any).
pub struct ContextUpdate<'a> {
    pub event: &'a Event,
    pub category: Option<&'a str>,
}

#[derive(Clone)]
pub struct ContextStore {
    connection: ConnectionManager,
    config: ContextConfig,
    script: Script,
    /// Until when (ms since the Unix epoch) calls fail without trying: see [`BREAKER_COOLDOWN`].
    failing_until: Arc<AtomicU64>,
}

impl ContextStore {
    /// Prepares the store without connecting: Redis may be down at start-up, and the connection is
    /// made (and remade after a failure) by the first call that needs it.
    pub fn new(redis_url: &str, config: ContextConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self {
            connection,
            config,
            script: Script::new(RECORD_SCRIPT),
            failing_until: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn config(&self) -> &ContextConfig {
        &self.config
    }

    /// The key of one of a user's context entries, e.g. `user:1:recent_items`.
    pub fn key(&self, user: UserId, name: &str) -> String {
        format!("{}user:{user}:{name}", self.config.key_prefix)
    }

    /// Records events in one round trip. Returns, per event, whether it was applied (false: its
    /// client event id was seen within the TTL, so it was not counted again).
    pub async fn record(&self, updates: &[ContextUpdate<'_>]) -> Result<Vec<bool>, ContextError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(self.config.ttl.as_secs().max(1))
            .arg(self.config.recent_items_cap)
            .arg(EVENT_IDS_CAP)
            .arg(now);
        for update in updates {
            let event = update.event;
            invocation
                .key(self.key(event.user_id, "recent_items"))
                .key(self.key(event.user_id, "recent_categories"))
                .key(self.key(event.user_id, "last_active"))
                .key(self.key(event.user_id, "event_ids"))
                .arg(event.asin.as_str())
                .arg(update.category.unwrap_or(""))
                .arg(
                    event
                        .received_at
                        .to_rfc3339_opts(SecondsFormat::Millis, true),
                )
                .arg(if event.client_event_id {
                    event.event_id.to_string()
                } else {
                    String::new()
                });
        }
        let mut connection = self.connection.clone();
        let applied: Vec<i64> = self
            .call("record", invocation.invoke_async(&mut connection))
            .await?;
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Reads a user's context in one round trip.
    pub async fn load(&self, user: UserId) -> Result<UserContext, ContextError> {
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.lrange(self.key(user, "recent_items"), 0, -1)
            .hgetall(self.key(user, "recent_categories"))
            .get(self.key(user, "last_active"));
        let (recent_items, recent_categories, last_active) =
            self.call("load", pipe.query_async(&mut connection)).await?;
        Ok(UserContext {
            recent_items,
            recent_categories,
            last_active,
        })
    }

    /// Whether Redis answers a PING in time.
    pub async fn ping(&self) -> Result<(), ContextError> {
        let mut connection = self.connection.clone();
        self.call("ping", async move { connection.ping::<String>().await })
            .await
            .map(drop)
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ContextError> {
        if now_ms() < self.failing_until.load(Ordering::Relaxed) {
            metrics::counter!("redis_failures_total", "operation" => operation, "reason" => "recently_failed")
                .increment(1);
            return Err(ContextError::RecentlyFailed);
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.config.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ContextError::Redis(error)),
            Err(_) => Err(ContextError::Timeout(self.config.timeout)),
        };
        metrics::histogram!("redis_latency_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &outcome {
            let reason = match error {
                ContextError::Timeout(_) => "timeout",
                _ => "error",
            };
            metrics::counter!("redis_failures_total", "operation" => operation, "reason" => reason)
                .increment(1);
            self.failing_until.store(
                now_ms() + BREAKER_COOLDOWN.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        outcome
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
