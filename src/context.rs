//! The user's short-term context in Redis: what the re-ranker reads.
//!
//! Three keys per user, exactly as docs/ARCHITECTURE.md names them (after an optional deployment
//! prefix):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `user:{id}:recent_items` | List | ASINs, newest first, capped |
//! | `user:{id}:recent_categories` | Hash | category → interaction count |
//! | `user:{id}:last_active` | String | RFC 3339 time of the last event |
//!
//! A fourth key, `user:{id}:event_ids` (a sorted set of the user's last client event ids),
//! exists only for clients that send their own `event_id`: it makes a retried event count once.
//!
//! Updates are one Lua script call: one round trip, and no reader ever sees half an update. The
//! calls of concurrent requests are merged (see [`ContextStore::record`]). Every call has a
//! deadline well under the request's budget, and after a failure calls skip Redis for a second;
//! the caller decides what a failure means (for ingestion: a warning and a 200).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::SecretUrl;
use crate::event::{Event, UserId};
use crate::health::Health;
use crate::telemetry::monotonic_ms;

#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub ttl: Duration,
    pub recent_items_cap: usize,
    /// Deadline of one call to Redis.
    pub timeout: Duration,
    /// Put before every key; empty in production, a random value per test.
    pub key_prefix: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ContextError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed less than {BREAKER_COOLDOWN:?} ago; not tried")]
    RecentlyFailed,
    /// Shared by every request of a merged call, hence the `Arc`.
    #[error("Redis failed: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    #[error("the context store is shut down")]
    Closed,
}

/// A user's context as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// Most event ids remembered per user for deduplication: enough for any client's retries, and
/// few enough that adding one stays cheap (Redis scans its compact encoding on every ZADD; ids
/// are stored as their 16 bytes, not 36 characters, for the same reason).
const EVENT_IDS_CAP: usize = 64;

/// The name, in the health registry, of the task that makes the script calls.
pub const COMPONENT: &str = "redis-context";

/// Most events in one script call.
const MAX_EVENTS_PER_CALL: usize = 512;

/// Applies a list of events. KEYS come four per event (recent_items, recent_categories,
/// last_active, event_ids); ARGV holds the TTL, the list cap, the id-set cap and the time in ms
/// (the ids' score: the oldest are trimmed first), then four per event (asin, category or '', last_active text, client event id or ''). Returns, per event, 1
/// if applied and 0 if its event id was already seen.
pub const RECORD_SCRIPT: &str = r"
local ttl, cap, ids_cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local applied = {}
for i = 0, #KEYS / 4 - 1 do
  local k, a = i * 4, 4 + i * 4
  local fresh = 1
  if ARGV[a + 4] ~= '' then
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

/// A cloneable handle on the user contexts in Redis.
#[derive(Clone)]
pub struct ContextStore {
    redis: Arc<Redis>,
    batcher: mpsc::UnboundedSender<Job>,
}

/// The connection and what every call shares.
struct Redis {
    connection: ConnectionManager,
    config: ContextConfig,
    script: Script,
    breaker: Breaker,
}

/// After a failure, calls fail at once for [`BREAKER_COOLDOWN`]. Measured on the monotonic clock:
/// a wall clock stepped back must not keep Redis skipped.
#[derive(Default)]
struct Breaker {
    /// Until when ([`monotonic_ms`]) calls fail without trying.
    open_until_ms: AtomicU64,
}

impl Breaker {
    fn is_open(&self) -> bool {
        monotonic_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        let until = monotonic_ms() + BREAKER_COOLDOWN.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Relaxed);
    }
}

/// One request's updates, waiting for the next script call.
struct Job {
    updates: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<bool>, ContextError>>,
}

/// An event's keys and arguments, ready for the script.
struct Prepared {
    keys: [String; 4],
    args: [Vec<u8>; 4],
}

impl ContextStore {
    /// Prepares the store without connecting: Redis may be down at start-up, and the connection is
    /// made (and remade after a failure) by the first call that needs it. Must be called within a
    /// Tokio runtime: it starts the task that batches updates.
    pub fn new(
        redis_url: &SecretUrl,
        config: ContextConfig,
        health: &Health,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(redis_url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let redis = Arc::new(Redis {
            connection,
            config,
            script: Script::new(RECORD_SCRIPT),
            breaker: Breaker::default(),
        });
        let (batcher, jobs) = mpsc::unbounded_channel();
        health.spawn(COMPONENT, batch_updates(redis.clone(), jobs));
        Ok(Self { redis, batcher })
    }

    pub fn config(&self) -> &ContextConfig {
        &self.redis.config
    }

    /// The key of one of a user's context entries, e.g. `user:1:recent_items`.
    pub fn key(&self, user: UserId, name: &str) -> String {
        self.redis.key(user, name)
    }

    /// Records events. Returns, per event, whether it was applied (false: its client event id was
    /// seen within the TTL, so it was not counted again).
    ///
    /// Updates of concurrent requests travel together: one task makes the script calls, and each
    /// takes every update that arrived while the previous one was in flight (group commit, as in
    /// the journal). A quiet service makes one call per request; a busy one far fewer calls than
    /// requests, which saves Redis and the service a command and two system calls per event.
    pub async fn record(&self, updates: &[ContextUpdate<'_>]) -> Result<Vec<bool>, ContextError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        self.redis.check_breaker("record")?;
        let updates = updates.iter().map(|u| self.redis.prepare(u)).collect();
        let (reply, answer) = oneshot::channel();
        self.batcher
            .send(Job { updates, reply })
            .map_err(|_| ContextError::Closed)?;
        let timeout = self.redis.config.timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ContextError::Closed),
            Err(_) => Err(ContextError::Timeout(timeout)),
        }
    }

    /// Reads a user's context in one round trip.
    pub async fn load(&self, user: UserId) -> Result<UserContext, ContextError> {
        let redis = &self.redis;
        let mut connection = redis.connection.clone();
        let mut pipe = redis::pipe();
        pipe.lrange(redis.key(user, "recent_items"), 0, -1)
            .hgetall(redis.key(user, "recent_categories"))
            .get(redis.key(user, "last_active"));
        let (recent_items, recent_categories, last_active) = redis
            .call("load", pipe.query_async(&mut connection))
            .await?;
        Ok(UserContext {
            recent_items,
            recent_categories,
            last_active,
        })
    }

    /// Whether Redis answers a PING in time.
    pub async fn ping(&self) -> Result<(), ContextError> {
        let mut connection = self.redis.connection.clone();
        self.redis
            .call("ping", async move { connection.ping::<String>().await })
            .await
            .map(drop)
    }
}

/// The task behind [`ContextStore::record`]: one script call at a time, each carrying every
/// update waiting when it starts. Ends when the last handle is dropped.
async fn batch_updates(redis: Arc<Redis>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        fail::fail_point!("redis-context");
        let mut events = first.updates.len();
        let mut batch = vec![first];
        while events < MAX_EVENTS_PER_CALL {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.updates.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // Requests that gave up waiting (their deadline passed) are not sent late.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut invocation = redis.script.prepare_invoke();
        invocation
            .arg(redis.config.ttl.as_secs().max(1))
            .arg(redis.config.recent_items_cap)
            .arg(EVENT_IDS_CAP)
            .arg(chrono::Utc::now().timestamp_millis());
        for update in batch.iter().flat_map(|job| &job.updates) {
            invocation.key(&update.keys).arg(&update.args);
        }
        let mut connection = redis.connection.clone();
        let outcome: Result<Vec<i64>, ContextError> = redis
            .call("record", invocation.invoke_async(&mut connection))
            .await;
        let mut applied = outcome.map(|flags| flags.into_iter().map(|flag| flag == 1));
        for job in batch {
            let answer = match &mut applied {
                Ok(flags) => Ok(flags.by_ref().take(job.updates.len()).collect()),
                Err(error) => Err(error.clone()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

impl Redis {
    fn key(&self, user: UserId, name: &str) -> String {
        format!("{}user:{user}:{name}", self.config.key_prefix)
    }

    fn prepare(&self, update: &ContextUpdate<'_>) -> Prepared {
        let event = update.event;
        let user = event.user_id;
        Prepared {
            keys: [
                self.key(user, "recent_items"),
                self.key(user, "recent_categories"),
                self.key(user, "last_active"),
                self.key(user, "event_ids"),
            ],
            args: [
                event.asin.as_str().into(),
                update.category.unwrap_or_default().into(),
                event
                    .received_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
                    .into(),
                if event.client_event_id {
                    event.event_id.as_bytes().to_vec()
                } else {
                    Vec::new()
                },
            ],
        }
    }

    /// Fails at once while the breaker is open (Redis failed less than a cooldown ago).
    fn check_breaker(&self, operation: &'static str) -> Result<(), ContextError> {
        if self.breaker.is_open() {
            metrics::counter!("redis_failures_total", "operation" => operation, "reason" => "recently_failed")
                .increment(1);
            return Err(ContextError::RecentlyFailed);
        }
        Ok(())
    }

    /// Runs one call with the deadline, the breaker and the metrics.
    async fn call<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ContextError> {
        self.check_breaker(operation)?;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.config.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ContextError::Redis(Arc::new(error))),
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
            self.breaker.trip();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_error_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = ContextError::Redis(Arc::new(redis::RedisError::from(io)));
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.to_string().contains("refused"), "{source}");
        assert!(error.to_string().contains("refused"), "{error}");
    }

    /// On Tokio's paused clock, which moves the monotonic clock and not the wall clock.
    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_a_failure_and_closes_after_the_cooldown() {
        let breaker = Breaker::default();
        assert!(!breaker.is_open());
        breaker.trip();
        assert!(breaker.is_open());
        tokio::time::advance(BREAKER_COOLDOWN - Duration::from_millis(1)).await;
        assert!(breaker.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!breaker.is_open());
    }
}
