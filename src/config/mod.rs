//! The service's settings, the command-line surface: every one a flag and an environment
//! variable. `serve` takes [`Settings`], `writer` takes [`WriterSettings`]. Each is made of
//! groups, one a component, each with `.config()` (or so) that builds the component's own
//! configuration; a flag's default is the component's. The groups several commands share are in
//! [`args`], those only `serve` takes in [`serve`]. Checks across groups are here, in
//! [`Settings::check`]. Only this module and `startup` know every component.

mod args;
mod serve;

pub use args::{CatalogueArgs, DatabaseArgs, NatsArgs, RedisArgs, WriterArgs};
pub use serve::{ContextArgs, EdgeArgs, EventArgs, JournalArgs, RerankArgs, SegmentArgs};

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::handoff::journal::SyncPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JournalSync {
    /// Flush to disk before every acknowledgement (shared by concurrent requests).
    Always,
    /// Acknowledge once written to the OS; flush every --journal-sync-interval-ms.
    Interval,
}

impl JournalSync {
    fn of(policy: SyncPolicy) -> Self {
        match policy {
            SyncPolicy::Always => JournalSync::Always,
            SyncPolicy::Interval(_) => JournalSync::Interval,
        }
    }
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

/// The address both `serve` and `writer` listen on unless told otherwise: this machine only.
const DEFAULT_HOST: &str = "127.0.0.1";

/// How long a stopping process waits for its work in hand, unless told otherwise.
const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// The settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where accepted events are made durable before the answer.
    #[arg(long, env = "HANDOFF", value_enum, default_value_t = HandoffKind::Journal)]
    pub handoff: HandoffKind,

    /// Whether this process also writes the events to PostgreSQL.
    #[arg(long = "writer", env = "WRITER", value_enum, default_value_t = WriterMode::On)]
    pub writer_mode: WriterMode,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = DEFAULT_HOST)]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// On SIGTERM, how long to wait for in-flight requests and for the journal to drain.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub context: ContextArgs,

    #[command(flatten)]
    pub journal: JournalArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub writer: WriterArgs,

    #[command(flatten)]
    pub catalogue: CatalogueArgs,

    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub rerank: RerankArgs,

    #[command(flatten)]
    pub segment: SegmentArgs,
}

impl Settings {
    /// What the groups cannot check alone: settings that cannot work together. Each error says
    /// what to change.
    pub fn check(&self) -> anyhow::Result<()> {
        let edge = &self.edge;
        if edge.body_read_timeout_secs >= edge.request_timeout_secs {
            anyhow::bail!(
                "--body-read-timeout-secs ({}) must be shorter than --request-timeout-secs ({}): the request's timeout covers its body too, and a slow body is to be answered 408, not 503",
                edge.body_read_timeout_secs,
                edge.request_timeout_secs
            );
        }
        if self.writer_mode == WriterMode::Off && self.handoff == HandoffKind::Journal {
            anyhow::bail!(
                "--writer off needs --handoff jetstream: a node's journal is written by that node's own writer"
            );
        }
        let redis = &self.redis;
        if !redis.redis_cluster && redis.redis_url.expose().contains(',') {
            anyhow::bail!(
                "REDIS_URL holds several URLs ({}): several URLs are a Redis Cluster's nodes, which need REDIS_CLUSTER=true; a single Redis takes one URL",
                redis.redis_url
            );
        }
        let keys = redis.keys();
        if keys.hash_tags && keys.prefix.contains(['{', '}']) {
            anyhow::bail!("--redis-key-prefix must hold no braces with hash-tagged keys");
        }
        self.writer
            .config(self.events.max_event_age.0)
            .partitions
            .check()
            .map_err(anyhow::Error::msg)
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
    #[arg(long, env = "HOST", default_value = DEFAULT_HOST)]
    pub host: IpAddr,

    /// Port of its health and metrics endpoints (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8001)]
    pub port: u16,

    /// On SIGTERM, how long to wait for the batches in hand to be stored and acknowledged.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,

    /// The API nodes' --max-event-age: partitions are made this far behind, and the ids that
    /// keep retries single are kept this long.
    #[arg(long, env = "MAX_EVENT_AGE", default_value_t = Human(crate::event::DEFAULT_MAX_EVENT_AGE), value_parser = Human::parse)]
    pub max_event_age: Human,
}

impl WriterSettings {
    /// The writer's configuration, checked.
    pub fn writer_config(&self) -> anyhow::Result<crate::writer::WriterConfig> {
        let config = self.writer.config(self.max_event_age.0);
        config.partitions.check().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// A duration written the humantime way (`30d`, `36h`, `90s`), for the flags that take one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl Human {
    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(Human)
            .map_err(|error| error.to_string())
    }
}

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

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

/// `--purchased-ttl`: a humantime duration from a second to ten years (Redis must take it as
/// an `EXPIRE`, and the oldest purchase time kept is computed from it in milliseconds).
fn parse_purchased_ttl(text: &str) -> Result<Human, String> {
    // Ten years as humantime counts them (`10y`: 365.25 days each).
    const MAX: Duration = Duration::from_secs(315_576_000);
    let ttl = Human::parse(text)?;
    if ttl.0 < Duration::from_secs(1) || ttl.0 > MAX {
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
                .edge
                .api_keys
                .iter()
                .all(|k| k.expose_secret().is_empty())
        );
        assert!(
            settings
                .edge
                .server_keys
                .iter()
                .all(|k| k.expose_secret().is_empty())
        );
        assert_eq!(settings.edge.demo, DemoMode::Auto);
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
            ("--segment-events", "Add to Cart=like"),
            ("--segment-events", "no pair"),
        ] {
            assert!(parse(&[flag, value]).is_err(), "{flag} {value}");
        }
    }

    #[test]
    fn segment_events_map_names_to_event_types() {
        let settings = parse(&[
            "--segment-events",
            "Add to Cart=add_to_cart, Quick View = view",
        ])
        .unwrap();
        let config = settings.segment.config();
        assert_eq!(
            config.events["Add to Cart"],
            crate::event::EventType::AddToCart
        );
        assert_eq!(config.events["Quick View"], crate::event::EventType::View);
        assert!(parse(&[]).unwrap().segment.config().events.is_empty());
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
