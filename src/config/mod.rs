//! The service's settings: every one a flag and an environment variable, with the seed's defaults.
//! `serve` takes [`Settings`], `writer` takes [`WriterSettings`]; the groups they share are in
//! [`args`].

mod args;

pub use args::{
    CatalogueArgs, DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, DEFAULT_REDIS_URL, DatabaseArgs,
    NatsArgs, RedisArgs, WriterArgs,
};

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::ingest::UnknownItems;

use crate::api::body::BodyPace;
use crate::context::{CategoryWeights, ContextConfig};
use crate::event::{EventRules, MetadataLimits};
use crate::handoff::journal::{JournalConfig, SyncPolicy};
use crate::rerank::{RerankConfig, RuleConfig};
use crate::server::ConnectionLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JournalSync {
    /// Flush to disk before every acknowledgement (shared by concurrent requests).
    Always,
    /// Acknowledge once written to the OS; flush every --journal-sync-interval-ms.
    Interval,
}

/// Where accepted events are made durable before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandoffKind {
    /// A journal on this node's disk, written by this node's writer (one machine).
    Journal,
    /// A NATS JetStream stream shared by every API node and every writer (several machines).
    Jetstream,
}

/// Whether the demo page is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoMode {
    /// Only when no API key is configured: on for local use, off in a keyed (production) set-up.
    Auto,
    #[value(name = "true", alias = "on")]
    On,
    #[value(name = "false", alias = "off")]
    Off,
}

/// Whether `serve` runs a writer too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriterMode {
    On,
    /// An API node only: writers run elsewhere (`event-ingest writer`); needs `--handoff jetstream`.
    Off,
}

/// The settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Where accepted events are made durable before the answer.
    #[arg(long, env = "HANDOFF", value_enum, default_value_t = HandoffKind::Journal)]
    pub handoff: HandoffKind,

    /// Whether this process also writes the events to PostgreSQL.
    #[arg(long = "writer", env = "WRITER", value_enum, default_value_t = WriterMode::On)]
    pub writer_mode: WriterMode,

    #[command(flatten)]
    pub writer: WriterArgs,

    #[command(flatten)]
    pub catalogue: CatalogueArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Lifetime of a user's context keys in Redis, refreshed by every event; at most a year.
    #[arg(long, env = "CONTEXT_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    pub context_ttl_secs: u64,

    /// How many recent items are kept per user.
    #[arg(long, env = "RECENT_ITEMS_CAP", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub recent_items_cap: u64,

    /// Keep the recent items distinct: an item seen again moves to the front instead of being
    /// listed twice. Off: the seed's list, one entry per event.
    #[arg(long, env = "RECENT_ITEMS_DISTINCT", default_value_t = false, action = clap::ArgAction::Set)]
    pub recent_items_distinct: bool,

    /// What each event type adds to its category's count, e.g.
    /// `view=1,click=2,add_to_cart=3,purchase=5,rate=2`; types left out count 1, 0 not at all.
    #[arg(
        long,
        env = "CATEGORY_WEIGHTS",
        default_value = "view=1,click=1,add_to_cart=1,purchase=1,rate=1"
    )]
    pub category_weights: CategoryWeights,

    /// How long a purchased item is remembered (and demoted by the re-ranker): `30d`, `12h`, ...;
    /// from a second to ten years.
    #[arg(long, env = "PURCHASED_TTL", default_value = "30d", value_parser = parse_purchased_ttl)]
    pub purchased_ttl: Duration,

    /// Deadline of one Redis call; past it the request goes on without Redis.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub redis_timeout_ms: u64,

    /// Directory of the durable journal (created if missing).
    #[arg(long, env = "JOURNAL_DIR", default_value = "data/journal")]
    pub journal_dir: PathBuf,

    /// Bound of the journal: unwritten events beyond it get 503 with Retry-After.
    #[arg(long, env = "JOURNAL_MAX_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub journal_max_bytes: u64,

    /// Size of one journal segment file.
    #[arg(long, env = "JOURNAL_SEGMENT_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    pub journal_segment_bytes: u64,

    /// When an acknowledged event is flushed to disk.
    #[arg(long, env = "JOURNAL_SYNC", value_enum, default_value_t = JournalSync::Always)]
    pub journal_sync: JournalSync,

    /// Flush interval under --journal-sync interval.
    #[arg(long, env = "JOURNAL_SYNC_INTERVAL_MS", default_value_t = 10)]
    pub journal_sync_interval_ms: u64,

    /// What to do with events for items the catalogue does not know.
    #[arg(long, env = "UNKNOWN_ITEMS", value_enum, default_value_t = UnknownItems::Create)]
    pub unknown_items: UnknownItems,

    /// Largest request body of POST /api/event.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024, value_parser = bytes_up_to::<{ MAX_BODY_LIMIT }>)]
    pub max_body_bytes: usize,

    /// Largest request body of POST /api/events and POST /api/rerank.
    #[arg(long, env = "MAX_BATCH_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = bytes_up_to::<{ MAX_BODY_LIMIT }>)]
    pub max_batch_body_bytes: usize,

    /// Largest request head (request line and headers).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = bytes_up_to::<{ 1024 * 1024 }>)]
    pub max_header_bytes: usize,

    /// A client must send its request head within this, or the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// A client must send its whole body within this, or gets 408.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout_secs: u64,

    /// After its first second, a body must arrive at least this fast on average, or gets 408
    /// (0: no minimum).
    #[arg(long, env = "BODY_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub body_min_bytes_per_sec: u64,

    /// A request not answered within this, its body included, gets 503 (retryable: event ids
    /// make it safe). Longer than --body-read-timeout-secs.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Requests worked on at once (a body still arriving does not count); beyond it, 503 with
    /// Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_concurrent_requests: usize,

    /// Open connections at most; past it, a new connection is closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_connections: usize,

    /// Open connections at most from one client address (an IPv6 client by its /64); past it,
    /// a new one is closed at once. 0: no such cap. Not applied with --trust-forwarded-for: the
    /// connections then come from the proxy.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=1_000_000).map(|n| n as usize))]
    pub max_connections_per_address: usize,

    /// Origins allowed to call the API from a browser: a comma-separated list, or `*` for any.
    /// Empty (the default) allows http://localhost and http://127.0.0.1 on any port.
    #[arg(long, env = "CORS_ORIGINS", default_value = "", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Write keys, comma-separated: the keys pages carry (public by nature). They may send events,
    /// batches and identifications, nothing that reads; a key may be limited to origins:
    /// `KEY@https://a.example|https://b.example`. When any key (this or --server-keys) is set,
    /// every /api request needs one in the X-API-Key header. Empty: no keys (local use).
    #[arg(
        long,
        env = "API_KEYS",
        default_value = "",
        value_delimiter = ',',
        value_parser = secret,
        hide_env_values = true
    )]
    pub api_keys: Vec<SecretString>,

    /// Server keys, comma-separated: secrets for servers (the recommender), never bound to an
    /// origin. They may do what a write key does, and also re-rank and read contexts. With
    /// write keys and no server key, the read routes refuse every request.
    #[arg(
        long,
        env = "SERVER_KEYS",
        default_value = "",
        value_delimiter = ',',
        value_parser = secret,
        hide_env_values = true
    )]
    pub server_keys: Vec<SecretString>,

    /// Requests per second allowed per API key (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_KEY", default_value_t = 0)]
    pub rate_limit_per_key: u32,

    /// Requests per second allowed per client address (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 0)]
    pub rate_limit_per_ip: u32,

    /// Most client addresses the per-address rate limit remembers (an IPv6 client counts by its
    /// /64); past it, idle ones are forgotten, and if none is idle, the limit starts afresh.
    #[arg(long, env = "RATE_LIMIT_MAX_ADDRESSES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000).map(|n| n as usize))]
    pub rate_limit_max_addresses: usize,

    /// Requests a key or address may send at once above its rate (the bucket's size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Take the client address from X-Forwarded-For (only behind a proxy that sets it).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Serve the demo page at /demo/: `auto` serves it only when no API key is configured (local
    /// use); with keys it needs `true`, and the page then asks for a server key.
    #[arg(long, env = "DEMO", value_enum, default_value_t = DemoMode::Auto)]
    pub demo: DemoMode,

    /// Largest metadata object, as compact JSON.
    #[arg(long, env = "MAX_METADATA_BYTES", default_value_t = 8 * 1024, value_parser = bytes_up_to::<{ MAX_METADATA_LIMIT }>)]
    pub max_metadata_bytes: usize,

    /// Deepest nesting of metadata.
    #[arg(long, env = "MAX_METADATA_DEPTH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub max_metadata_depth: usize,

    /// Most keys in metadata, counted over all nested objects.
    #[arg(long, env = "MAX_METADATA_KEYS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub max_metadata_keys: usize,

    /// The oldest event accepted, by its `timestamp` (a duration such as `7d` or `36h`); older
    /// events are refused with 422.
    #[arg(long, env = "MAX_EVENT_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_event_age: Duration,

    /// Re-ranking: apply the intent boost (items of the categories the user browses gain).
    #[arg(long, env = "RERANK_INTENT_BOOST", default_value_t = true, action = clap::ArgAction::Set)]
    pub rerank_intent_boost: bool,

    /// Re-ranking: score an item gains × its category's share of recent interactions.
    #[arg(long, env = "RERANK_INTENT_BOOST_WEIGHT", default_value_t = 0.3, value_parser = weight)]
    pub rerank_intent_boost_weight: f64,

    /// Re-ranking: apply the recent penalty (items just interacted with lose).
    #[arg(long, env = "RERANK_RECENT_PENALTY", default_value_t = true, action = clap::ArgAction::Set)]
    pub rerank_recent_penalty: bool,

    /// Re-ranking: score the most recent item loses; older ones lose less.
    #[arg(long, env = "RERANK_RECENT_PENALTY_WEIGHT", default_value_t = 0.5, value_parser = weight)]
    pub rerank_recent_penalty_weight: f64,

    /// Re-ranking: apply the purchased rule (items the user bought lose).
    #[arg(long, env = "RERANK_PURCHASED", default_value_t = true, action = clap::ArgAction::Set)]
    pub rerank_purchased: bool,

    /// Re-ranking: score an item the user bought loses.
    #[arg(long, env = "RERANK_PURCHASED_WEIGHT", default_value_t = 1.0, value_parser = weight)]
    pub rerank_purchased_weight: f64,

    /// Re-ranking: leave the items the user bought out of the list instead of demoting them.
    #[arg(long, env = "RERANK_PURCHASED_REMOVE", default_value_t = false, action = clap::ArgAction::Set)]
    pub rerank_purchased_remove: bool,

    /// On SIGTERM, how long to wait for in-flight requests and for the journal to drain.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
}

impl Settings {
    pub fn context(&self) -> ContextConfig {
        ContextConfig {
            ttl: Duration::from_secs(self.context_ttl_secs),
            recent_items_cap: self.recent_items_cap as usize,
            distinct_recent_items: self.recent_items_distinct,
            category_weights: self.category_weights,
            purchased_ttl: self.purchased_ttl,
            timeout: Duration::from_millis(self.redis_timeout_ms),
            keys: self.redis.keys(),
        }
    }

    pub fn journal(&self) -> JournalConfig {
        JournalConfig {
            dir: self.journal_dir.clone(),
            max_bytes: self.journal_max_bytes,
            segment_bytes: self.journal_segment_bytes,
            sync: match self.journal_sync {
                JournalSync::Always => SyncPolicy::Always,
                JournalSync::Interval => {
                    SyncPolicy::Interval(Duration::from_millis(self.journal_sync_interval_ms))
                }
            },
        }
    }

    pub fn event_rules(&self) -> EventRules {
        EventRules {
            metadata: MetadataLimits {
                max_bytes: self.max_metadata_bytes,
                max_depth: self.max_metadata_depth,
                max_keys: self.max_metadata_keys,
            },
            max_age: self.max_event_age,
        }
    }

    pub fn rerank(&self) -> RerankConfig {
        RerankConfig {
            intent_boost: RuleConfig {
                enabled: self.rerank_intent_boost,
                weight: self.rerank_intent_boost_weight,
            },
            recent_penalty: RuleConfig {
                enabled: self.rerank_recent_penalty,
                weight: self.rerank_recent_penalty_weight,
            },
            purchased: RuleConfig {
                enabled: self.rerank_purchased,
                weight: self.rerank_purchased_weight,
            },
            purchased_remove: self.rerank_purchased_remove,
        }
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_per_address: (!self.trust_forwarded_for && self.max_connections_per_address > 0)
                .then_some(self.max_connections_per_address),
        }
    }

    pub fn body_pace(&self) -> BodyPace {
        BodyPace {
            timeout: Duration::from_secs(self.body_read_timeout_secs),
            min_bytes_per_sec: self.body_min_bytes_per_sec,
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// The settings of `writer`: a writer on its own, reading the JetStream stream.
#[derive(Debug, Clone, Args)]
pub struct WriterSettings {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub writer: WriterArgs,

    #[command(flatten)]
    pub catalogue: CatalogueArgs,

    /// Address of its health and metrics endpoints.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port of its health and metrics endpoints (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8001)]
    pub port: u16,

    /// On SIGTERM, how long to wait for the batches in hand to be stored and acknowledged.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
}

/// Largest body a setting may allow: a batch of events must fit the journal's largest group.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Largest metadata a setting may allow, so that one event always fits one journal record
/// ([`crate::handoff::journal::record::MAX_PAYLOAD_BYTES`], 16 MiB) with room to spare.
pub const MAX_METADATA_LIMIT: usize = 1024 * 1024;

/// A byte count from 1 to `MAX`.
fn bytes_up_to<const MAX: usize>(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    if (1..=MAX).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!("must be from 1 to {MAX} bytes"))
    }
}

fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

/// A rule weight: a finite number from 0 to 1000, so that adjusted scores stay finite.
fn weight(text: &str) -> Result<f64, String> {
    let weight: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1000.0).contains(&weight) {
        Ok(weight)
    } else {
        Err("a weight must be from 0 to 1000".to_owned())
    }
}

/// The defaults, as a command with no flags would have them, whatever the environment holds:
/// tests build their settings from these, so an exported `API_KEYS` cannot change them.
fn defaults<T: Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        .mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("the defaults parse");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

impl Default for Settings {
    fn default() -> Self {
        defaults()
    }
}

impl Default for WriterSettings {
    fn default() -> Self {
        defaults()
    }
}

/// Most seconds `--context-ttl-secs` may be: a year. Redis refuses an `EXPIRE` past about 9.2e15
/// seconds, and every update would fail; nothing short-term needs more than this.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

/// `--purchased-ttl`: a humantime duration from a second to ten years (Redis must take it as
/// an `EXPIRE`, and the oldest purchase time kept is computed from it in milliseconds).
fn parse_purchased_ttl(text: &str) -> Result<Duration, String> {
    // Ten years as humantime counts them (`10y`: 365.25 days each).
    const MAX: Duration = Duration::from_secs(315_576_000);
    let ttl = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if ttl < Duration::from_secs(1) || ttl > MAX {
        return Err("must be from 1s to 10y".to_owned());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Command, FromArgMatches};
    use secrecy::ExposeSecret;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        let command = Settings::augment_args(Command::new("serve").no_binary_name(true))
            .mut_args(|arg| arg.env(None));
        Settings::from_arg_matches(&command.try_get_matches_from(args)?)
    }

    #[test]
    fn the_defaults_ignore_the_environment() {
        // SAFETY: nextest runs every test in a process of its own; no other thread reads the
        // environment meanwhile.
        unsafe {
            std::env::set_var("API_KEYS", "from-the-environment");
            std::env::set_var("DEMO", "false");
            std::env::set_var("SERVER_KEYS", "from-the-environment");
        }
        let settings = Settings::default();
        assert!(
            settings
                .api_keys
                .iter()
                .all(|k| k.expose_secret().is_empty())
        );
        assert!(
            settings
                .server_keys
                .iter()
                .all(|k| k.expose_secret().is_empty())
        );
        assert_eq!(settings.demo, DemoMode::Auto);
    }

    #[test]
    fn settings_that_size_journal_records_are_bounded() {
        assert!(parse(&["--max-metadata-bytes", "1048576"]).is_ok());
        assert!(parse(&["--context-ttl-secs", "31536000", "--purchased-ttl", "10y"]).is_ok());
        for (flag, value) in [
            ("--max-metadata-bytes", "1048577"),
            ("--max-metadata-bytes", "0"),
            ("--max-body-bytes", "100000000"),
            ("--max-batch-body-bytes", "100000000"),
            ("--max-metadata-depth", "1000"),
            ("--max-metadata-keys", "0"),
            ("--journal-segment-bytes", "10"),
            ("--context-ttl-secs", "31536001"),
            ("--purchased-ttl", "11y"),
            ("--purchased-ttl", "0s"),
        ] {
            assert!(parse(&[flag, value]).is_err(), "{flag} {value}");
        }
    }

    #[test]
    fn no_secret_reaches_debug() {
        let settings = parse(&[
            "--database-url",
            "postgres://app:hunter2@db/events",
            "--redis-url",
            "redis://:sesame@cache:6379",
            "--api-keys",
            "k3y-one,k3y-two@https://shop.example",
            "--server-keys",
            "s3rver-k3y",
        ])
        .unwrap();
        let shown = format!("{settings:?}");
        for secret in ["hunter2", "sesame", "k3y-one", "k3y-two", "s3rver-k3y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://app:***@db/events"), "{shown}");
    }
}
