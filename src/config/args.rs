//! Groups of settings that more than one command takes: PostgreSQL, the catalogue cache, the
//! writer, NATS JetStream.

use std::time::Duration;

use clap::Args;

use crate::catalogue::CatalogueConfig;
use crate::context::Keys;
use crate::handoff::jetstream::JetStreamConfig;
use crate::retry::RetryPolicy;
use crate::secret::SecretUrl;
use crate::writer::{PartitionConfig, WriterConfig};

use super::Human;

fn writer() -> WriterConfig {
    WriterConfig::default()
}

fn partitions() -> PartitionConfig {
    PartitionConfig::default()
}

fn catalogue() -> CatalogueConfig {
    CatalogueConfig::default()
}

fn nats() -> JetStreamConfig {
    JetStreamConfig::default()
}

/// Where to find PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = crate::db::DEFAULT_URL, hide_env_values = true)]
    pub database_url: SecretUrl,

    /// PostgreSQL connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = crate::db::DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
}

/// Where the realtime context lives, and how its keys are named.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL; with --redis-cluster, the URLs of one or more cluster nodes, comma-separated.
    /// Redis may be down at start-up: the service runs on and reconnects.
    #[arg(long, env = "REDIS_URL", default_value = crate::context::DEFAULT_REDIS_URL, hide_env_values = true)]
    pub redis_url: SecretUrl,

    /// REDIS_URL names a Redis Cluster. Its keys then carry the user id as a hash tag
    /// (`user:{42}:recent_items`), so that one user's keys share a slot.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Hash-tagged keys on a single Redis too (to move to a cluster later); the seed's names
    /// (`user:42:recent_items`) otherwise.
    #[arg(long, env = "REDIS_HASH_TAGS", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_hash_tags: bool,

    /// Prefix for every Redis key (to share one Redis between deployments); no braces.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
}

impl RedisArgs {
    pub fn keys(&self) -> Keys {
        Keys {
            prefix: self.redis_key_prefix.clone(),
            hash_tags: self.redis_hash_tags || self.redis_cluster,
        }
    }
}

/// The in-process cache of the catalogue (category and brand of each item).
#[derive(Debug, Clone, Args)]
pub struct CatalogueArgs {
    /// Items kept in the in-process catalogue cache.
    #[arg(long, env = "CATALOGUE_CACHE_CAPACITY", default_value_t = catalogue().capacity)]
    pub catalogue_cache_capacity: u64,

    /// Lifetime of a cached catalogue entry.
    #[arg(long, env = "CATALOGUE_CACHE_TTL_SECS", default_value_t = catalogue().ttl.as_secs())]
    pub catalogue_cache_ttl_secs: u64,

    /// Lifetime of a cached "no such item".
    #[arg(long, env = "CATALOGUE_MISS_TTL_SECS", default_value_t = catalogue().miss_ttl.as_secs())]
    pub catalogue_miss_ttl_secs: u64,

    /// Deadline of a catalogue query on the request path.
    #[arg(long, env = "CATALOGUE_TIMEOUT_MS", default_value_t = catalogue().timeout.as_millis() as u64)]
    pub catalogue_timeout_ms: u64,
}

impl CatalogueArgs {
    pub fn config(&self) -> CatalogueConfig {
        CatalogueConfig {
            capacity: self.catalogue_cache_capacity,
            ttl: Duration::from_secs(self.catalogue_cache_ttl_secs),
            miss_ttl: Duration::from_secs(self.catalogue_miss_ttl_secs),
            timeout: Duration::from_millis(self.catalogue_timeout_ms),
        }
    }
}

/// How the writer batches and retries.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    /// Most events per PostgreSQL write.
    #[arg(long, env = "BATCH_SIZE", default_value_t = writer().batch_size as u64, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub batch_size: u64,

    /// Longest wait for a batch to fill before it is written anyway.
    #[arg(long, env = "BATCH_INTERVAL_MS", default_value_t = writer().batch_interval.as_millis() as u64)]
    pub batch_interval_ms: u64,

    /// Batches written to PostgreSQL at once, each on a connection of its own, while the writer
    /// is behind (its last batch was full); one at a time while it keeps up.
    #[arg(long, env = "PARALLEL_BATCHES", default_value_t = writer().parallel_batches as u64, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub parallel_batches: u64,

    /// Quick retries of a failed PostgreSQL write before it is logged as an error (the batch is
    /// then kept and retried every --retry-parked-ms until it lands).
    #[arg(long, env = "MAX_RETRIES", default_value_t = writer().retry.max_retries)]
    pub max_retries: u32,

    /// First retry delay; doubled per retry up to 2 s.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = writer().retry.base_delay.as_millis() as u64)]
    pub retry_base_ms: u64,

    /// Delay between attempts once the quick retries are spent.
    #[arg(long, env = "RETRY_PARKED_MS", default_value_t = writer().retry.parked_delay.as_millis() as u64)]
    pub retry_parked_ms: u64,

    /// Users the writer remembers as present in `users` (so that it does not insert them again).
    #[arg(long, env = "KNOWN_USERS_CAPACITY", default_value_t = writer().known_users)]
    pub known_users_capacity: u64,

    /// The span of event time one partition of `interaction_logs` holds (`1d`, `6h`; whole
    /// minutes), cut from midnight UTC.
    #[arg(long, env = "PARTITION_INTERVAL", default_value_t = Human(partitions().interval), value_parser = Human::parse)]
    pub partition_interval: Human,

    /// Partitions made ahead of the current one.
    #[arg(long, env = "PARTITIONS_AHEAD", default_value_t = partitions().ahead, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub partitions_ahead: u32,

    /// Drops the partitions whose events are all older than this (`90d`); events older than it
    /// are not stored. Off unless set; at least --max-event-age.
    #[arg(long, env = "RETENTION", value_parser = Human::parse)]
    pub retention: Option<Human>,

    /// How far apart the times of an event and of a client's retry of it may lie for the retry
    /// to be known across a partition's bound (the network's jitter, a clock corrected between
    /// the two).
    #[arg(long, env = "DEDUP_SKEW", default_value_t = Human(partitions().dedup_skew), value_parser = Human::parse)]
    pub dedup_skew: Human,
}

impl WriterArgs {
    /// The writer's configuration, for a service that accepts events up to `max_event_age` old.
    pub fn config(&self, max_event_age: Duration) -> WriterConfig {
        WriterConfig {
            batch_size: self.batch_size as usize,
            batch_interval: Duration::from_millis(self.batch_interval_ms),
            parallel_batches: self.parallel_batches as usize,
            known_users: self.known_users_capacity,
            retry: RetryPolicy {
                max_retries: self.max_retries,
                base_delay: Duration::from_millis(self.retry_base_ms),
                parked_delay: Duration::from_millis(self.retry_parked_ms),
                ..writer().retry
            },
            partitions: PartitionConfig {
                interval: self.partition_interval.0,
                ahead: self.partitions_ahead,
                retention: self.retention.map(|r| r.0),
                max_event_age,
                dedup_skew: self.dedup_skew.0,
                every: partitions().every,
            },
        }
    }
}

/// NATS JetStream, for `--handoff jetstream` and the `writer` command.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS URL (with credentials if the server wants them).
    #[arg(long, env = "NATS_URL", default_value = crate::handoff::jetstream::DEFAULT_NATS_URL, hide_env_values = true)]
    pub nats_url: SecretUrl,

    /// The events' stream; created, or updated to these limits, at start-up.
    #[arg(long, env = "NATS_STREAM", default_value_t = nats().stream)]
    pub nats_stream: String,

    /// The events' subjects are `<prefix>.<event_type>`; dead letters go to `<prefix>_dead`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value_t = nats().subject_prefix)]
    pub nats_subject_prefix: String,

    /// Copies of the stream in a NATS cluster (3 in production; 1 for a single server).
    #[arg(long, env = "NATS_REPLICAS", default_value_t = nats().replicas as u64, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nats_replicas: u64,

    /// How long the stream keeps an event (limits retention: other consumers can read it).
    #[arg(long, env = "NATS_MAX_AGE_SECS", default_value_t = nats().max_age.as_secs(), value_parser = clap::value_parser!(u64).range(120..))]
    pub nats_max_age_secs: u64,

    /// Most bytes the stream keeps; the oldest events go first beyond it.
    #[arg(long, env = "NATS_MAX_BYTES", default_value_t = nats().max_bytes, value_parser = clap::value_parser!(i64).range(1024 * 1024..))]
    pub nats_max_bytes: i64,

    /// How long an event id is remembered: a publish repeated within it is stored once. Cover
    /// the clients' retries.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS", default_value_t = nats().duplicate_window.as_secs(), value_parser = clap::value_parser!(u64).range(120..))]
    pub nats_duplicate_window_secs: u64,

    /// How long a request waits for JetStream to acknowledge its events (then 503).
    #[arg(long, env = "NATS_ACK_TIMEOUT_MS", default_value_t = nats().ack_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_ack_timeout_ms: u64,

    /// The writers' durable consumer, shared by every writer.
    #[arg(long, env = "NATS_CONSUMER", default_value_t = nats().consumer)]
    pub nats_consumer: String,

    /// How long a message handed to a writer may stay unacknowledged (the writer killed) before
    /// another writer gets it.
    #[arg(long, env = "NATS_ACK_WAIT_SECS", default_value_t = nats().ack_wait.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_ack_wait_secs: u64,

    /// Most messages handed to writers and not yet acknowledged, across every writer.
    #[arg(long, env = "NATS_MAX_ACK_PENDING", default_value_t = nats().max_ack_pending, value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_max_ack_pending: i64,
}

impl NatsArgs {
    pub fn config(&self) -> JetStreamConfig {
        JetStreamConfig {
            url: self.nats_url.clone(),
            stream: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
            replicas: self.nats_replicas as usize,
            max_age: Duration::from_secs(self.nats_max_age_secs),
            max_bytes: self.nats_max_bytes,
            duplicate_window: Duration::from_secs(
                self.nats_duplicate_window_secs.min(self.nats_max_age_secs),
            ),
            ack_timeout: Duration::from_millis(self.nats_ack_timeout_ms),
            consumer: self.nats_consumer.clone(),
            ack_wait: Duration::from_secs(self.nats_ack_wait_secs),
            max_ack_pending: self.nats_max_ack_pending,
        }
    }
}
