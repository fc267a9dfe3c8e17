//! The durable hand-off between the request path and the writer, as two interfaces:
//!
//! - [`Handoff`], what the request path feeds: an event is acknowledged only once the hand-off
//!   says it is durable;
//! - [`Source`], what the writer reads: batches of records, decoded by the source, each confirmed
//!   ([`Source::commit`]) only after PostgreSQL has committed it.
//!
//! Two implementations, side by side: [`journal`], an append-only log on the node's own disk (the
//! default, for one machine), and [`jetstream`], a NATS JetStream stream shared by every API node
//! and every writer (for several machines). A new one (Kafka, say) is a new module implementing
//! both traits; neither the request path nor the writer changes.
//!
//! Each hand-off writes and reads its own records: events travel through the stream as their
//! JSON ([`json`]), a public interface, and through the journal in a binary form of its own
//! ([`journal::binary`]); visitors' identifications as JSON in both. docs/ARCHITECTURE.md
//! describes them.

pub mod jetstream;
pub mod journal;
pub mod json;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;

use crate::event::{Event, Identity};

/// Why a hand-off did not take events. Nothing of a refused group is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// No room now (the journal is full): retry later.
    #[error("the hand-off is full ({used} of {limit} bytes in use)")]
    Full { used: u64, limit: u64 },
    /// The hand-off cannot make events durable now (disk failure, NATS unreachable or slow).
    #[error("the hand-off is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the hand-off is closed")]
    Closed,
}

impl HandoffError {
    pub fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        HandoffError::Unavailable(Box::new(error))
    }
}

/// A group of events on its way to being durable; resolves when every one of them is.
pub type Pending = BoxFuture<'static, Result<(), HandoffError>>;

/// What the request path hands accepted events to.
pub trait Handoff: Send + Sync {
    /// Starts handing `events` off, as one group. Refuses at once, writing nothing, when there is
    /// no room; otherwise the returned future resolves once every event is durable.
    fn submit(&self, events: &[&Event]) -> Result<Pending, HandoffError>;

    /// Hands off a visitor's identification, for the writer to attribute the visitor's stored
    /// events; like [`Handoff::submit`], the future resolves once it is durable.
    fn submit_identity(&self, identity: &Identity) -> Result<Pending, HandoffError>;

    /// The hand-off's state, for readiness and metrics.
    fn state(&self) -> HandoffState;

    /// Stops taking events, and waits until those taken are durable (or refused).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// A hand-off's state, as `/health/ready` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HandoffState {
    /// The local journal: bytes of events not yet in PostgreSQL, and the bound; `error` when
    /// it cannot take events now (full, or its last write failed moments ago).
    Journal {
        used_bytes: u64,
        limit_bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The JetStream stream: whether NATS answers and the stream is there.
    Jetstream {
        stream: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl HandoffState {
    /// Whether events can be handed off now.
    pub fn is_ok(&self) -> bool {
        match self {
            HandoffState::Journal { error, .. } => error.is_none(),
            HandoffState::Jetstream { ok, .. } => *ok,
        }
    }
}

/// What a record of the hand-off holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Event),
    Identity(Identity),
}

/// A batch the writer fetched: its records, decoded by the source, what could not be decoded
/// (to set aside with the batch), and what confirms them.
pub struct Fetched<R> {
    pub records: Vec<Record>,
    pub undecodable: Vec<SetAside>,
    pub receipt: R,
}

impl<R> Fetched<R> {
    /// Decodes each payload with `decode`; a payload that is no record is set aside.
    pub fn decode<'a, E: std::fmt::Display>(
        payloads: impl IntoIterator<Item = &'a [u8]>,
        decode: impl Fn(&[u8]) -> Result<Record, E>,
        receipt: R,
    ) -> Self {
        let mut records = Vec::new();
        let mut undecodable = Vec::new();
        for (i, payload) in payloads.into_iter().enumerate() {
            match decode(payload) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(%error, "a record of the hand-off is not an event; setting it aside");
                    undecodable.push(SetAside {
                        name: format!("undecodable-{}-{i}", chrono::Utc::now().timestamp_millis()),
                        item: Aside::Bytes(payload.to_vec()),
                        reason: format!("not an event: {error}"),
                    });
                }
            }
        }
        Self {
            records,
            undecodable,
            receipt,
        }
    }

    /// How many records were fetched, decoded or not.
    pub fn len(&self) -> usize {
        self.records.len() + self.undecodable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Something the writer cannot store, to keep for a person: undecodable bytes, or a record
/// PostgreSQL refused for its content.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// A name that identifies it (an event id, a journal position).
    pub name: String,
    pub item: Aside,
    pub reason: String,
}

/// What is set aside.
#[derive(Debug, Clone)]
pub enum Aside {
    /// A record PostgreSQL refused: kept as its JSON, for a person (and the dead-letter
    /// stream's consumers) to read.
    Record(Record),
    /// Bytes that are no record, kept as they were.
    Bytes(Vec<u8>),
}

impl Aside {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Aside::Record(record) => json::encode_record(record),
            Aside::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// What the writer reads from.
pub trait Source: Send + 'static {
    /// Confirms a fetched batch once it is stored.
    type Receipt: Send + Sync + 'static;

    /// Waits until records are there to fetch. Cancel-safe: the writer waits for this and for
    /// its batches in flight at once.
    fn ready(&mut self) -> impl Future<Output = ()> + Send;

    /// Fetches the next batch: up to `max` records, gathered for at most `linger`. Returns early,
    /// with what it has (perhaps nothing), once `stopping` is true. Never cancelled half-way: the
    /// writer awaits it to the end.
    fn next(
        &mut self,
        max: usize,
        linger: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Option<Fetched<Self::Receipt>>> + Send;

    /// Whether records wait that a stopping writer must still store before it exits (the
    /// journal's backlog; a shared stream's backlog belongs to every writer, so: none).
    fn has_backlog(&mut self) -> bool;

    /// Confirms that the batch of `receipt` is stored. Called in the order batches were fetched.
    fn commit(&mut self, receipt: Self::Receipt) -> impl Future<Output = ()> + Send;

    /// Keeps `item` where a person can find it, with its reason; returns only once it is kept
    /// (retrying meanwhile), so that its batch may be committed.
    fn set_aside(&self, item: SetAside) -> impl Future<Output = ()> + Send;
}
