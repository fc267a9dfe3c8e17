//! The groups of settings only `serve` takes: the Redis context, the journal, the events' rules,
//! the API's edge, the re-ranker. Each flag's default is its component's own (`Default`, or a
//! constant beside the component), so that it is written once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser as _;
use secrecy::SecretString;

use super::{DemoMode, Human, JournalSync, bytes_up_to, parse_purchased_ttl, secret, weight};
use crate::api::access::AccessConfig;
use crate::api::body::{self, BodyPace};
use crate::api::limits;
use crate::api::segment::{ItemId, SegmentConfig};
use crate::context::{CategoryWeights, ContextConfig, Keys};
use crate::event::{DEFAULT_MAX_EVENT_AGE, EventRules, EventType, MetadataLimits};
use crate::handoff::journal::{DEFAULT_SYNC_INTERVAL, JournalConfig, SyncPolicy};
use crate::ingest::UnknownItems;
use crate::rerank::{RerankConfig, RuleConfig};
use crate::server::ConnectionLimits;

/// Largest body a setting may allow: a batch of events must fit the journal's largest group.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Largest metadata a setting may allow, so that one event always fits one journal record
/// ([`crate::handoff::journal::record::MAX_PAYLOAD_BYTES`], 16 MiB) with room to spare.
pub const MAX_METADATA_LIMIT: usize = 1024 * 1024;

/// Most seconds `--context-ttl-secs` may be: a year. Redis refuses an `EXPIRE` past about 9.2e15
/// seconds, and every update would fail; nothing short-term needs more than this.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

fn context() -> ContextConfig {
    ContextConfig::default()
}

/// The realtime context in Redis (where Redis is, and its keys' names: [`super::RedisArgs`]).
#[derive(Debug, Clone, Args)]
pub struct ContextArgs {
    /// Lifetime of a user's context keys in Redis, refreshed by every event; at most a year.
    #[arg(long, env = "CONTEXT_TTL_SECS", default_value_t = context().ttl.as_secs(), value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    pub context_ttl_secs: u64,

    /// How many recent items are kept per user.
    #[arg(long, env = "RECENT_ITEMS_CAP", default_value_t = context().recent_items_cap as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub recent_items_cap: u64,

    /// Keep the recent items distinct: an item seen again moves to the front instead of being
    /// listed twice. Off: the seed's list, one entry per event.
    #[arg(long, env = "RECENT_ITEMS_DISTINCT", default_value_t = context().distinct_recent_items, action = clap::ArgAction::Set)]
    pub recent_items_distinct: bool,

    /// What each event type adds to its category's count, e.g.
    /// `view=1,click=2,add_to_cart=3,purchase=5,rate=2`; types left out count 1, 0 not at all.
    #[arg(long, env = "CATEGORY_WEIGHTS", default_value_t = context().category_weights)]
    pub category_weights: CategoryWeights,

    /// How long a purchased item is remembered (and demoted by the re-ranker): `30d`, `12h`, ...;
    /// from a second to ten years.
    #[arg(long, env = "PURCHASED_TTL", default_value_t = Human(context().purchased_ttl), value_parser = parse_purchased_ttl)]
    pub purchased_ttl: Human,

    /// Deadline of one Redis call; past it the request goes on without Redis.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = context().timeout.as_millis() as u64)]
    pub redis_timeout_ms: u64,
}

impl ContextArgs {
    pub fn config(&self, keys: Keys) -> ContextConfig {
        ContextConfig {
            ttl: Duration::from_secs(self.context_ttl_secs),
            recent_items_cap: self.recent_items_cap as usize,
            distinct_recent_items: self.recent_items_distinct,
            category_weights: self.category_weights,
            purchased_ttl: self.purchased_ttl.0,
            timeout: Duration::from_millis(self.redis_timeout_ms),
            keys,
        }
    }
}

fn journal() -> JournalConfig {
    JournalConfig::default()
}

/// The journal, the default hand-off.
#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// Directory of the durable journal (created if missing).
    #[arg(long, env = "JOURNAL_DIR", default_value_os_t = journal().dir)]
    pub journal_dir: PathBuf,

    /// Bound of the journal: unwritten events beyond it get 503 with Retry-After.
    #[arg(long, env = "JOURNAL_MAX_BYTES", default_value_t = journal().max_bytes, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub journal_max_bytes: u64,

    /// Size of one journal segment file.
    #[arg(long, env = "JOURNAL_SEGMENT_BYTES", default_value_t = journal().segment_bytes, value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    pub journal_segment_bytes: u64,

    /// When an acknowledged event is flushed to disk.
    #[arg(long, env = "JOURNAL_SYNC", value_enum, default_value_t = JournalSync::of(journal().sync))]
    pub journal_sync: JournalSync,

    /// Flush interval under --journal-sync interval.
    #[arg(long, env = "JOURNAL_SYNC_INTERVAL_MS", default_value_t = DEFAULT_SYNC_INTERVAL.as_millis() as u64)]
    pub journal_sync_interval_ms: u64,
}

impl JournalArgs {
    pub fn config(&self) -> JournalConfig {
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
}

fn metadata() -> MetadataLimits {
    MetadataLimits::default()
}

/// What an event must satisfy, and what becomes of one for an unknown item.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// What to do with events for items the catalogue does not know.
    #[arg(long, env = "UNKNOWN_ITEMS", value_enum, default_value_t = UnknownItems::default())]
    pub unknown_items: UnknownItems,

    /// Largest metadata object, as compact JSON.
    #[arg(long, env = "MAX_METADATA_BYTES", default_value_t = metadata().max_bytes, value_parser = bytes_up_to::<{ MAX_METADATA_LIMIT }>)]
    pub max_metadata_bytes: usize,

    /// Deepest nesting of metadata.
    #[arg(long, env = "MAX_METADATA_DEPTH", default_value_t = metadata().max_depth, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub max_metadata_depth: usize,

    /// Most keys in metadata, counted over all nested objects.
    #[arg(long, env = "MAX_METADATA_KEYS", default_value_t = metadata().max_keys, value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub max_metadata_keys: usize,

    /// The oldest event accepted, by its `timestamp` (a duration such as `7d` or `36h`); older
    /// events are refused with 422.
    #[arg(long, env = "MAX_EVENT_AGE", default_value_t = Human(DEFAULT_MAX_EVENT_AGE), value_parser = Human::parse)]
    pub max_event_age: Human,
}

impl EventArgs {
    pub fn rules(&self) -> EventRules {
        EventRules {
            metadata: MetadataLimits {
                max_bytes: self.max_metadata_bytes,
                max_depth: self.max_metadata_depth,
                max_keys: self.max_metadata_keys,
            },
            max_age: self.max_event_age.0,
        }
    }
}

fn connections() -> ConnectionLimits {
    ConnectionLimits::default()
}

fn access() -> AccessConfig {
    AccessConfig::default()
}

/// The API's edge: what one client may send or hold, who may call, how often.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Largest request body of POST /api/event.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = body::DEFAULT_MAX_BODY_BYTES, value_parser = bytes_up_to::<{ MAX_BODY_LIMIT }>)]
    pub max_body_bytes: usize,

    /// Largest request body of POST /api/events and POST /api/rerank.
    #[arg(long, env = "MAX_BATCH_BODY_BYTES", default_value_t = body::DEFAULT_MAX_BATCH_BODY_BYTES, value_parser = bytes_up_to::<{ MAX_BODY_LIMIT }>)]
    pub max_batch_body_bytes: usize,

    /// Largest request head (request line and headers).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = connections().max_header_bytes, value_parser = bytes_up_to::<{ 1024 * 1024 }>)]
    pub max_header_bytes: usize,

    /// A client must send its request head within this, or the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = connections().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,

    /// A client must send its whole body within this, or gets 408.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = BodyPace::default().timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout_secs: u64,

    /// After its first second, a body must arrive at least this fast on average, or gets 408
    /// (0: no minimum).
    #[arg(long, env = "BODY_MIN_BYTES_PER_SEC", default_value_t = BodyPace::default().min_bytes_per_sec)]
    pub body_min_bytes_per_sec: u64,

    /// A request not answered within this, its body included, gets 503 (retryable: event ids
    /// make it safe). Longer than --body-read-timeout-secs.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = limits::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Requests worked on at once (a body still arriving does not count); beyond it, 503 with
    /// Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = limits::DEFAULT_MAX_CONCURRENT, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_concurrent_requests: usize,

    /// Open connections at most; past it, a new connection is closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = connections().max_connections, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_connections: usize,

    /// Open connections at most from one client address (an IPv6 client by its /64); past it,
    /// a new one is closed at once. 0: no such cap. Not applied with --trust-forwarded-for: the
    /// connections then come from the proxy.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = connections().max_per_address.unwrap_or(0), value_parser = clap::value_parser!(u64).range(0..=1_000_000).map(|n| n as usize))]
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
    #[arg(long, env = "RATE_LIMIT_PER_KEY", default_value_t = access().per_key_per_second)]
    pub rate_limit_per_key: u32,

    /// Requests per second allowed per client address (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = access().per_address_per_second)]
    pub rate_limit_per_ip: u32,

    /// Most client addresses the per-address rate limit remembers (an IPv6 client counts by its
    /// /64); past it, idle ones are forgotten, and if none is idle, the limit starts afresh.
    #[arg(long, env = "RATE_LIMIT_MAX_ADDRESSES", default_value_t = access().max_addresses, value_parser = clap::value_parser!(u64).range(1..=100_000_000).map(|n| n as usize))]
    pub rate_limit_max_addresses: usize,

    /// Requests a key or address may send at once above its rate (the bucket's size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = access().burst)]
    pub rate_limit_burst: u32,

    /// Take the client address from X-Forwarded-For (only behind a proxy that sets it).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = access().trust_forwarded_for, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Serve the demo page at /demo/: `auto` serves it only when no API key is configured (local
    /// use); with keys it needs `true`, and the page then asks for a server key.
    #[arg(long, env = "DEMO", value_enum, default_value_t = DemoMode::Auto)]
    pub demo: DemoMode,

    /// The demo's Segment mode (/demo/?tracking=segment): a directory holding Segment's browser
    /// SDK as its npm package builds it (`node_modules/@segment/analytics-next/dist/umd`),
    /// served to the page at /demo/segment/ so that nothing comes from Segment's CDN.
    #[arg(long, env = "DEMO_SEGMENT_SDK")]
    pub demo_segment_sdk: Option<PathBuf>,
}

impl EdgeArgs {
    pub fn access(&self) -> AccessConfig {
        AccessConfig {
            api_keys: self.api_keys.clone(),
            server_keys: self.server_keys.clone(),
            per_key_per_second: self.rate_limit_per_key,
            per_address_per_second: self.rate_limit_per_ip,
            burst: self.rate_limit_burst,
            trust_forwarded_for: self.trust_forwarded_for,
            max_addresses: self.rate_limit_max_addresses,
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

    pub fn request_limits(&self) -> limits::RequestLimits {
        limits::RequestLimits::new(
            self.max_concurrent_requests,
            Duration::from_secs(self.request_timeout_secs),
        )
    }
}

fn rerank() -> RerankConfig {
    RerankConfig::default()
}

/// The re-ranker's rules: each on or off, and its weight.
#[derive(Debug, Clone, Args)]
pub struct RerankArgs {
    /// Re-ranking: apply the intent boost (items of the categories the user browses gain).
    #[arg(long, env = "RERANK_INTENT_BOOST", default_value_t = rerank().intent_boost.enabled, action = clap::ArgAction::Set)]
    pub rerank_intent_boost: bool,

    /// Re-ranking: score an item gains × its category's share of recent interactions.
    #[arg(long, env = "RERANK_INTENT_BOOST_WEIGHT", default_value_t = rerank().intent_boost.weight, value_parser = weight)]
    pub rerank_intent_boost_weight: f64,

    /// Re-ranking: apply the recent penalty (items just interacted with lose).
    #[arg(long, env = "RERANK_RECENT_PENALTY", default_value_t = rerank().recent_penalty.enabled, action = clap::ArgAction::Set)]
    pub rerank_recent_penalty: bool,

    /// Re-ranking: score the most recent item loses; older ones lose less.
    #[arg(long, env = "RERANK_RECENT_PENALTY_WEIGHT", default_value_t = rerank().recent_penalty.weight, value_parser = weight)]
    pub rerank_recent_penalty_weight: f64,

    /// Re-ranking: apply the purchased rule (items the user bought lose).
    #[arg(long, env = "RERANK_PURCHASED", default_value_t = rerank().purchased.enabled, action = clap::ArgAction::Set)]
    pub rerank_purchased: bool,

    /// Re-ranking: score an item the user bought loses.
    #[arg(long, env = "RERANK_PURCHASED_WEIGHT", default_value_t = rerank().purchased.weight, value_parser = weight)]
    pub rerank_purchased_weight: f64,

    /// Re-ranking: leave the items the user bought out of the list instead of demoting them.
    #[arg(long, env = "RERANK_PURCHASED_REMOVE", default_value_t = rerank().purchased_remove, action = clap::ArgAction::Set)]
    pub rerank_purchased_remove: bool,
}

impl RerankArgs {
    pub fn config(&self) -> RerankConfig {
        let rule = |enabled, weight| RuleConfig { enabled, weight };
        RerankConfig {
            intent_boost: rule(self.rerank_intent_boost, self.rerank_intent_boost_weight),
            recent_penalty: rule(
                self.rerank_recent_penalty,
                self.rerank_recent_penalty_weight,
            ),
            purchased: rule(self.rerank_purchased, self.rerank_purchased_weight),
            purchased_remove: self.rerank_purchased_remove,
        }
    }
}

/// Segment's tracking API: how its messages become events.
#[derive(Debug, Clone, Args)]
pub struct SegmentArgs {
    /// Track names of the shop's own and the event each is, comma-separated:
    /// `Add to Cart=add_to_cart,Quick View=view`. The E-commerce Spec's names need none.
    #[arg(long, env = "SEGMENT_EVENTS", default_value = "")]
    pub segment_events: SegmentEvents,

    /// Which property names the item when a product has both `product_id` and `sku`.
    #[arg(long, env = "SEGMENT_ITEM_ID", value_enum, default_value_t = ItemId::default())]
    pub segment_item_id: ItemId,
}

impl SegmentArgs {
    pub fn config(&self) -> SegmentConfig {
        SegmentConfig {
            events: self.segment_events.0.iter().cloned().collect(),
            item_id: self.segment_item_id,
        }
    }
}

/// `--segment-events`: `Name=event_type` pairs, comma-separated.
#[derive(Debug, Clone, Default)]
pub struct SegmentEvents(pub Vec<(String, EventType)>);

impl std::str::FromStr for SegmentEvents {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, kind) = pair
                    .rsplit_once('=')
                    .ok_or_else(|| format!("{pair:?} is not Name=event_type"))?;
                let kind = EventType::parse(kind.trim()).ok_or_else(|| {
                    format!("{kind:?} is not one of view, click, add_to_cart, purchase, rate")
                })?;
                Ok((name.trim().to_owned(), kind))
            })
            .collect::<Result<_, _>>()
            .map(SegmentEvents)
    }
}
