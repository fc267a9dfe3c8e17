//! The user's short-term context in Redis: what the re-ranker reads.
//!
//! Three keys per user, exactly as docs/ARCHITECTURE.md names them (after an optional deployment
//! prefix):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `user:42:recent_items` | List | ASINs, newest first, capped |
//! | `user:42:recent_categories` | Hash | category → interaction count |
//! | `user:42:last_active` | String | RFC 3339 time of the latest event; never moves back |
//!
//! A fourth key, `user:42:event_ids` (a sorted set of the user's last client event ids), exists
//! only for clients that send their own `event_id`: it makes a retried event count once. A fifth,
//! `user:42:purchased` (a sorted set of ASINs by time of purchase), lives for `--purchased-ttl`
//! rather than the context's TTL: what a user bought stays known for weeks. On a
//! Redis Cluster the user id is a hash tag, `user:{42}:recent_items`, so that one user's keys
//! share a slot and their update stays one atomic script ([`Keys`]).
//!
//! Updates are one Lua script call per user at most: one round trip, and no reader ever sees half
//! an update. The calls of concurrent requests are merged ([`record`]). Every call has a deadline
//! well under the request's budget, and after a failure of a Redis (one master of a cluster),
//! calls to it skip it for a second ([`breaker`]); the caller decides what a failure means (for
//! ingestion: a warning and a 200).

mod breaker;
mod connection;
mod identify;
pub mod model;
mod record;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Script;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use breaker::BREAKER_COOLDOWN;
use breaker::{Breaker, Breakers, slot_of};
pub use identify::Merged;
pub use record::{KEY_NAMES, RECORD_SCRIPT};

use crate::event::{Actor, Event, EventType};
use crate::health::Health;
use crate::secret::SecretUrl;
use connection::Backend;
pub use connection::Connection;
use record::{Job, Prepared};

#[derive(Debug, Clone)]
pub struct ContextConfig {
    pub ttl: Duration,
    pub recent_items_cap: usize,
    /// An item seen again moves to the front of the recent items instead of being listed twice.
    pub distinct_recent_items: bool,
    /// What each event type adds to its category's count.
    pub category_weights: CategoryWeights,
    /// How long a purchased item is remembered.
    pub purchased_ttl: Duration,
    /// Deadline of one call to Redis.
    pub timeout: Duration,
    pub keys: Keys,
}

impl ContextConfig {
    /// The oldest purchase time (ms since the epoch) still remembered: now less `purchased_ttl`.
    pub fn bought_since_ms(&self) -> i64 {
        self.bought_since_ms_at(chrono::Utc::now().timestamp_millis())
    }

    /// [`Self::bought_since_ms`] as of `now_ms`.
    pub fn bought_since_ms_at(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.purchased_ttl.as_millis().min(i64::MAX as u128) as i64)
    }

    /// `--recent-items-distinct` as the scripts take it: '1' or '0'.
    pub fn distinct_flag(&self) -> &'static str {
        if self.distinct_recent_items { "1" } else { "0" }
    }
}

impl Default for ContextConfig {
    /// The seed's context: 15 minutes, 20 items, every event counting 1.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(900),
            recent_items_cap: 20,
            distinct_recent_items: false,
            category_weights: CategoryWeights::default(),
            purchased_ttl: DEFAULT_PURCHASED_TTL,
            timeout: Duration::from_millis(50),
            keys: Keys::default(),
        }
    }
}

/// Where Redis is unless told otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The default of `--purchased-ttl`.
pub const DEFAULT_PURCHASED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most purchased items remembered per user; the oldest go first.
pub const PURCHASED_CAP: usize = 500;

/// What an event of each type adds to its category's count in `recent_categories`: 1 for every
/// type by default (the seed's rule). Written `view=1,click=2,add_to_cart=3,purchase=5,rate=2`;
/// types left out keep 1, and 0 leaves the counts alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryWeights([u32; EventType::ALL.len()]);

impl Default for CategoryWeights {
    fn default() -> Self {
        Self([1; EventType::ALL.len()])
    }
}

impl CategoryWeights {
    /// Most any type may weigh: enough for any taste, far from overflowing a count.
    pub const MAX: u32 = 1_000;

    pub fn of(&self, event_type: EventType) -> u32 {
        // `EventType::ALL` lists the types in declaration order.
        self.0[event_type as usize]
    }
}

impl std::str::FromStr for CategoryWeights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not type=weight"))?;
            let event_type = EventType::parse(name.trim())
                .ok_or_else(|| format!("{name:?} is not an event type"))?;
            weights.0[event_type as usize] = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= Self::MAX)
                .ok_or_else(|| {
                    format!(
                        "the weight of {name} must be an integer from 0 to {}",
                        Self::MAX
                    )
                })?;
        }
        Ok(weights)
    }
}

impl std::fmt::Display for CategoryWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, event_type) in EventType::ALL.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            write!(f, "{comma}{event_type}={}", self.0[i])?;
        }
        Ok(())
    }
}

/// How an actor's keys are named: the seed's `user:42:recent_items` (`visitor:abc:recent_items`
/// for a visitor), or with the id as a Redis Cluster hash tag, `user:{42}:recent_items`; after a
/// deployment prefix in either case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Put before every key; empty in production, a random value per test. Must hold no `{`.
    pub prefix: String,
    pub hash_tags: bool,
}

impl Keys {
    /// The key of one of an actor's context entries, e.g. `user:1:recent_items`.
    pub fn key(&self, actor: &Actor, name: &str) -> String {
        let mut key = self.stem(actor);
        key.push_str(name);
        key
    }

    /// What an actor's keys start with, e.g. `user:1:`: built once for an event's five keys.
    pub fn stem(&self, actor: &Actor) -> String {
        // Built by hand rather than by `format!`: an event's keys are built on the request path.
        let mut number = itoa::Buffer::new();
        let id = match actor {
            Actor::User(id) => number.format(id.get()),
            Actor::Visitor(id) => id.as_str(),
        };
        let kind = actor.kind();
        let mut stem = String::with_capacity(self.prefix.len() + kind.len() + id.len() + 4);
        stem.extend([&self.prefix, kind, ":"]);
        if self.hash_tags {
            stem.extend(["{", id, "}:"]);
        } else {
            stem.extend([id, ":"]);
        }
        stem
    }
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

impl From<redis::RedisError> for ContextError {
    fn from(error: redis::RedisError) -> Self {
        ContextError::Redis(Arc::new(error))
    }
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
    /// ASINs bought within `--purchased-ttl`, the latest first.
    pub purchased: Vec<String>,
}

impl UserContext {
    pub fn is_empty(&self) -> bool {
        self.recent_items.is_empty()
            && self.recent_categories.is_empty()
            && self.purchased.is_empty()
    }
}

/// The name, in the health registry, of the task that makes the script calls.
pub const COMPONENT: &str = "redis-context";

/// The name, in the health registry, of the task that keeps a cluster's slot map.
pub const SLOT_MAP_COMPONENT: &str = "redis-slot-map";

/// Reads the cluster's slot map (`CLUSTER SLOTS`) every 10 seconds (every second until it is
/// first read), for the breakers of its masters.
async fn keep_slot_map(redis: Arc<Redis>) {
    let Breakers::Cluster(map) = &redis.breakers else {
        return;
    };
    let mut known = false;
    loop {
        let read = async {
            let mut connection = redis.backend.connection().await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<redis::Value>(&mut connection)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(slots)) => match map.update(&slots) {
                Ok(masters) => {
                    if !known {
                        tracing::info!(masters, "read the Redis Cluster's slot map");
                    }
                    known = true;
                }
                Err(why) => tracing::warn!(why, "could not read the Redis Cluster's slot map"),
            },
            Ok(Err(error)) if !known => {
                tracing::debug!(%error, "the Redis Cluster's slot map is not read yet");
            }
            _ => {}
        }
        let every = if known { 10 } else { 1 };
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

/// One event to record, with the category the catalogue gave it (if any).
pub struct ContextUpdate<'a> {
    pub event: &'a Event,
    pub category: Option<&'a str>,
}

/// A cloneable handle on the user contexts in Redis.
#[derive(Clone)]
pub struct ContextStore {
    redis: Arc<Redis>,
    merger: mpsc::UnboundedSender<Job>,
}

/// The connection and what every call shares.
struct Redis {
    backend: Backend,
    config: ContextConfig,
    script: Script,
    breakers: Breakers,
}

impl ContextStore {
    /// Prepares the store without connecting: Redis may be down at start-up, and the connection is
    /// made (and remade after a failure) by the first call that needs it. `url` is one Redis, or
    /// with `cluster`, one or more nodes of a Redis Cluster, comma-separated (which also needs
    /// hash-tagged keys). Must be called within a Tokio runtime: it starts the task that merges
    /// updates.
    pub fn new(
        url: &SecretUrl,
        cluster: bool,
        config: ContextConfig,
        health: &Health,
    ) -> Result<Self, redis::RedisError> {
        let backend = Backend::new(url, cluster, config.timeout)?;
        let breakers = if cluster {
            Breakers::Cluster(Default::default())
        } else {
            Breakers::Single(Arc::new(Breaker::default()))
        };
        let redis = Arc::new(Redis {
            backend,
            config,
            script: Script::new(RECORD_SCRIPT),
            breakers,
        });
        let (merger, jobs) = mpsc::unbounded_channel();
        health.spawn(COMPONENT, record::merge_updates(redis.clone(), jobs));
        if cluster {
            health.spawn(SLOT_MAP_COMPONENT, keep_slot_map(redis.clone()));
        }
        Ok(Self { redis, merger })
    }

    pub fn config(&self) -> &ContextConfig {
        &self.redis.config
    }

    /// The cluster slot of an actor's keys (all of them share it); none on a single Redis.
    fn slot(&self, actor: &Actor) -> Option<u16> {
        self.redis
            .backend
            .is_cluster()
            .then(|| slot_of(self.key(actor, "recent_items").as_bytes()))
    }

    /// The key of one of an actor's context entries, e.g. `user:1:recent_items`.
    pub fn key(&self, actor: &Actor, name: &str) -> String {
        self.redis.config.keys.key(actor, name)
    }

    /// Records events. Returns, per event, whether it was applied (false: its client event id was
    /// seen within the TTL, so it was not counted again).
    ///
    /// Updates of concurrent requests travel together: one task makes the script calls, and each
    /// round takes every update that arrived while the previous one was in flight (group commit,
    /// as in the journal). A quiet service makes one call per request; a busy one far fewer calls
    /// than requests, which saves Redis and the service a command and two system calls per event.
    pub async fn record(&self, updates: &[ContextUpdate<'_>]) -> Result<Vec<bool>, ContextError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        // A cluster's calls go per slot, each checked against its master's breaker.
        if !self.redis.backend.is_cluster() {
            self.redis.check_breaker("record", None)?;
        }
        let updates = updates
            .iter()
            .map(|u| Prepared::new(&self.redis, u))
            .collect();
        let (reply, answer) = oneshot::channel();
        self.merger
            .send(Job { updates, reply })
            .map_err(|_| ContextError::Closed)?;
        let timeout = self.redis.config.timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ContextError::Closed),
            Err(_) => Err(ContextError::Timeout(timeout)),
        }
    }

    /// Reads an actor's context in one round trip (the keys share a slot on a cluster).
    pub async fn load(&self, actor: &Actor) -> Result<UserContext, ContextError> {
        let redis = &self.redis;
        let bought_since = redis.config.bought_since_ms();
        let mut pipe = redis::pipe();
        pipe.lrange(self.key(actor, "recent_items"), 0, -1)
            .hgetall(self.key(actor, "recent_categories"))
            .get(self.key(actor, "last_active"))
            .zrevrangebyscore(self.key(actor, "purchased"), "+inf", bought_since);
        let slot = self.slot(actor);
        let (recent_items, recent_categories, last_active, purchased) = redis
            .call("load", slot, async {
                let mut connection = redis.backend.connection().await?;
                pipe.query_async(&mut connection).await
            })
            .await?;
        Ok(UserContext {
            recent_items,
            recent_categories,
            last_active,
            purchased,
        })
    }

    /// Whether Redis (every master of a cluster) answers a PING in time.
    pub async fn ping(&self) -> Result<(), ContextError> {
        self.redis
            .call("ping", None, self.redis.backend.ping())
            .await
    }
}

/// A connection to the context's Redis (for tools that read the keys: `verify`, the benchmarks),
/// made at once.
pub async fn connect(url: &SecretUrl, cluster: bool) -> redis::RedisResult<Connection> {
    Backend::new(url, cluster, Duration::from_secs(5))?
        .connection()
        .await
}

impl Redis {
    /// Fails at once while the breaker of the Redis holding `slot` is open (it failed less than
    /// a cooldown ago).
    fn check_breaker(
        &self,
        operation: &'static str,
        slot: Option<u16>,
    ) -> Result<(), ContextError> {
        if self
            .breakers
            .of(slot)
            .is_some_and(|breaker| breaker.is_open())
        {
            metrics::counter!("redis_failures_total", "operation" => operation, "reason" => "recently_failed")
                .increment(1);
            return Err(ContextError::RecentlyFailed);
        }
        Ok(())
    }

    /// Runs one call, for keys of `slot` on a cluster, with the deadline, the breaker and the
    /// metrics.
    async fn call<T>(
        &self,
        operation: &'static str,
        slot: Option<u16>,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ContextError> {
        self.check_breaker(operation, slot)?;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.config.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ContextError::from(error)),
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
            if let Some(breaker) = self.breakers.of(slot) {
                breaker.trip();
            }
        }
        outcome
    }
}

/// The Redis context's metrics, its failures published at zero.
pub fn describe_metrics() {
    use metrics::{Unit, counter, describe_counter, describe_histogram};

    describe_counter!(
        "redis_failures_total",
        "Redis calls that failed or were skipped, by operation and reason"
    );
    describe_histogram!(
        "redis_latency_seconds",
        Unit::Seconds,
        "Time of a Redis call, by operation"
    );

    for operation in ["record", "load", "identify", "ping"] {
        for reason in ["timeout", "error", "recently_failed"] {
            counter!("redis_failures_total", "operation" => operation, "reason" => reason)
                .increment(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AnonymousId, UserId};

    #[test]
    fn category_weights_index_the_types_in_declaration_order() {
        for (index, event_type) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(event_type as usize, index);
        }
        let weights: CategoryWeights = "purchase=5, click=0".parse().unwrap();
        assert_eq!(weights.of(EventType::Purchase), 5);
        assert_eq!(weights.of(EventType::Click), 0);
        assert_eq!(weights.of(EventType::View), 1);
        assert_eq!(
            weights.to_string(),
            "view=1,click=0,add_to_cart=1,purchase=5,rate=1"
        );
        assert!("like=2".parse::<CategoryWeights>().is_err());
        assert!("view=1001".parse::<CategoryWeights>().is_err());
    }

    #[test]
    fn keys_follow_the_seed_or_carry_a_hash_tag() {
        let user = Actor::User(UserId::new(42).unwrap());
        let visitor = Actor::Visitor(AnonymousId::new("v-1".to_owned()).unwrap());
        let seed = Keys {
            prefix: "p:".to_owned(),
            hash_tags: false,
        };
        assert_eq!(seed.key(&user, "recent_items"), "p:user:42:recent_items");
        assert_eq!(
            seed.key(&visitor, "last_active"),
            "p:visitor:v-1:last_active"
        );
        let tagged = Keys {
            hash_tags: true,
            ..seed
        };
        assert_eq!(
            tagged.key(&user, "recent_items"),
            "p:user:{42}:recent_items"
        );
        assert_eq!(
            tagged.key(&visitor, "purchased"),
            "p:visitor:{v-1}:purchased"
        );
    }

    #[test]
    fn a_redis_error_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = ContextError::Redis(Arc::new(redis::RedisError::from(io)));
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.to_string().contains("refused"), "{source}");
        assert!(error.to_string().contains("refused"), "{error}");
    }
}
