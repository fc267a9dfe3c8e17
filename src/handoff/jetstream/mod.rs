//! NATS JetStream as the hand-off, for more than one machine: every API node publishes accepted
//! events to one stream ([`JetStreamHandoff`]), and every writer reads them through one durable
//! pull consumer ([`JetStreamSource`]), so API nodes keep nothing on disk and writers scale on
//! their own.
//!
//! The stream (`EVENTS` by default) takes the subjects `events.<event_type>`; each message is an
//! event's JSON with `Nats-Msg-Id` = its `event_id`, so that a client's retry inside the duplicate
//! window is stored once. Its retention is limits (age and bytes), so that other consumers (a
//! model-training job, say) can read the same stream. What PostgreSQL refuses for its content goes
//! to a dead-letter stream (`EVENTS_DEAD`, subject `events_dead`) with the reason in a header.
//! docs/ARCHITECTURE.md describes the messages as a public interface.
//!
//! NATS may be down at start-up: the client connects in the background, the streams are created
//! (or updated to the configured limits) once it answers, and until then the hand-off says it is
//! not ready and events get 503.

mod consume;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::CreateStreamError;
use async_nats::jetstream::{self, stream};
use parking_lot::Mutex;
use tokio::sync::Notify;

pub use consume::JetStreamSource;
pub use publish::JetStreamHandoff;

use crate::event::EventType;
use crate::health::Health;
use crate::secret::SecretUrl;

#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    pub url: SecretUrl,
    /// The events' stream.
    pub stream: String,
    /// The first token of the events' subjects: `<prefix>.<event_type>`.
    pub subject_prefix: String,
    pub replicas: usize,
    pub max_age: Duration,
    pub max_bytes: i64,
    /// How long a `Nats-Msg-Id` is remembered: a publish repeated within it is stored once.
    pub duplicate_window: Duration,
    /// How long a request waits for JetStream's acknowledgements.
    pub ack_timeout: Duration,
    /// The writers' durable consumer.
    pub consumer: String,
    /// How long a message handed to a writer may stay unacknowledged before another gets it.
    pub ack_wait: Duration,
    /// Most messages handed to writers and not yet acknowledged, across every writer.
    pub max_ack_pending: i64,
}

/// Where NATS is unless told otherwise.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl Default for JetStreamConfig {
    /// The stream `EVENTS` on subjects `events.<event_type>`, one copy, kept 7 days or 10 GiB;
    /// the writers' consumer `writers`.
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_NATS_URL),
            stream: "EVENTS".to_owned(),
            subject_prefix: "events".to_owned(),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 10 << 30,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_millis(2_000),
            consumer: "writers".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
        }
    }
}

impl JetStreamConfig {
    pub fn subject(&self, event_type: EventType) -> String {
        format!("{}.{}", self.subject_prefix, event_type.as_str())
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD", self.stream)
    }

    pub fn dead_letter_subject(&self) -> String {
        format!("{}_dead", self.subject_prefix)
    }

    fn events_stream(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    /// Dead letters are few: the stream takes a tenth of the events' bytes, at most 1 GiB
    /// (JetStream reserves a stream's bytes on the server at creation).
    fn dead_letter_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.dead_letter_stream(),
            subjects: vec![self.dead_letter_subject()],
            max_bytes: (self.max_bytes / 10).clamp(1024 * 1024, 1 << 30),
            ..self.events_stream()
        }
    }
}

/// A connection to NATS and the streams' state; cheap to clone.
#[derive(Clone)]
pub struct JetStream {
    client: async_nats::Client,
    context: jetstream::Context,
    config: Arc<JetStreamConfig>,
    streams: Arc<Streams>,
}

/// The name, in the health registry, of the task that keeps the streams in place.
pub const STREAMS_COMPONENT: &str = "jetstream-streams";

/// Why events cannot be published now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("connecting to NATS")]
    Connecting,
    #[error("NATS is unreachable; reconnecting")]
    Unreachable,
    #[error("the streams are not yet created")]
    NotYetCreated,
    #[error("no stream for the events' subjects")]
    NoStream,
    #[error("could not create the stream {stream}")]
    Streams {
        stream: String,
        #[source]
        cause: Arc<CreateStreamError>,
    },
}

/// Whether the streams are known to exist as configured, and the last error if not.
struct Streams {
    state: Mutex<Result<(), NotReady>>,
    /// Wakes the task that creates them (a publish found no stream).
    recheck: Notify,
}

impl JetStream {
    /// Connects in the background (NATS may be down) and starts the component that creates or
    /// updates the streams once NATS answers ([`STREAMS_COMPONENT`]). Fails only on a URL that
    /// cannot be used.
    pub async fn connect(config: JetStreamConfig, health: &Health) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("event-ingest")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Back within a second of NATS's return, not the client's default of up to 4 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .connect(config.url.expose())
            .await
            .with_context(|| format!("NATS_URL {} cannot be used", config.url))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .build(client.clone());
        let streams = Arc::new(Streams {
            state: Mutex::new(Err(NotReady::NotYetCreated)),
            recheck: Notify::new(),
        });
        let jetstream = Self {
            client,
            context,
            config: Arc::new(config),
            streams,
        };
        health.spawn(STREAMS_COMPONENT, jetstream.clone().keep_streams());
        Ok(jetstream)
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// Whether events can be published now: connected, and the streams in place. The error says
    /// why not.
    pub fn ready(&self) -> Result<(), NotReady> {
        use async_nats::connection::State;
        match self.client.connection_state() {
            State::Connected => self.streams.state.lock().clone(),
            State::Pending => Err(NotReady::Connecting),
            State::Disconnected => Err(NotReady::Unreachable),
        }
    }

    /// Has the streams checked again (a publish met no stream: deleted by hand, say).
    fn recheck_streams(&self) {
        *self.streams.state.lock() = Err(NotReady::NoStream);
        self.streams.recheck.notify_one();
    }

    /// Creates the streams, or updates them to the configured limits, whenever they are not
    /// known to be in place; retries every second until NATS takes it. Runs as long as the
    /// process.
    async fn keep_streams(self) {
        let mut failures = 0u32;
        loop {
            let outcome = self.create_streams().await;
            match &outcome {
                Ok(()) => {
                    failures = 0;
                    tracing::info!(stream = %self.config.stream, "the JetStream streams are in place");
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        let error = crate::telemetry::chain(error);
                        tracing::warn!(%error, failures, "could not create the JetStream streams; trying again every second");
                    }
                }
            }
            let created = outcome.is_ok();
            *self.streams.state.lock() = outcome;
            if created {
                self.streams.recheck.notified().await;
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn create_streams(&self) -> Result<(), NotReady> {
        for config in [
            self.config.events_stream(),
            self.config.dead_letter_stream_config(),
        ] {
            let stream = config.name.clone();
            self.context
                .create_or_update_stream(config)
                .await
                .map_err(|cause| NotReady::Streams {
                    stream,
                    cause: Arc::new(cause),
                })?;
        }
        Ok(())
    }
}
