//! The event as the API accepts it: parsed once from the request body, valid by construction.
//!
//! Every rule of docs/ARCHITECTURE.md ("The event") lives here, one idea a file: the values
//! ([`values`]), the event time ([`time`]), the metadata ([`metadata`]), the request's wire form
//! ([`wire`]) and an identification ([`identity`]). A value of [`Event`] cannot hold an invalid
//! user id, ASIN, event type or metadata, so no later stage checks them again. How an event is
//! written down in a hand-off is the hand-off's own.

mod identity;
mod metadata;
mod time;
mod values;
mod wire;

pub use identity::Identity;
pub use metadata::{Metadata, MetadataLimits};
pub(crate) use time::optional_time;
pub use time::{Arrival, DEFAULT_MAX_EVENT_AGE, FUTURE_TOLERANCE};
pub(crate) use values::json_type;
pub use values::{
    Actor, AnonymousId, Asin, EventType, InvalidEvent, MAX_ANONYMOUS_ID_CHARS, MAX_ASIN_CHARS,
    UserId,
};
pub use wire::{Batch, BatchError, BatchItem, Elements, EventFields, ParseError};
pub(crate) use wire::{Dropped, ElementsSeed, FieldName, Id, Item, ObjectFields, Shallow};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// What an event must satisfy besides its fields' own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRules {
    pub metadata: MetadataLimits,
    /// The oldest event time accepted, counted back from the time of receipt.
    pub max_age: Duration,
}

impl Default for EventRules {
    fn default() -> Self {
        Self {
            metadata: MetadataLimits::default(),
            max_age: DEFAULT_MAX_EVENT_AGE,
        }
    }
}

/// An accepted interaction, as it travels through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The idempotency key: the client's, or one the service assigned (UUIDv7, time-ordered).
    pub event_id: Uuid,
    /// Who: a user, or a visitor.
    pub actor: Actor,
    pub asin: Asin,
    pub event_type: EventType,
    pub metadata: Option<Metadata>,
    /// When the service received the event.
    pub received_at: DateTime<Utc>,
    /// When the event happened, settled once at acceptance by [`Arrival::event_time`] and carried
    /// with the event, so that a replay stores the same time. Records journaled before this
    /// field existed lack it: their time is `received_at`. Read it with [`Event::ts`].
    pub(crate) ts: Option<DateTime<Utc>>,
    /// Whether the client chose the event id (and so may send the same event again).
    pub client_event_id: bool,
}

impl Event {
    /// Parses one event from its JSON text.
    pub fn from_json(
        body: &[u8],
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, ParseError> {
        let fields: EventFields = serde_json::from_slice(body).map_err(ParseError::from)?;
        Ok(Self::from_fields(fields, rules, arrival)?)
    }

    /// Builds an event from an element of a batch, as read from the body.
    pub fn from_item(
        item: BatchItem,
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, InvalidEvent> {
        let kind = match item {
            Item::Object(fields) => return Self::from_fields(fields, rules, arrival),
            Item::Other(kind) => kind,
        };
        Err(InvalidEvent::invalid(
            "event",
            format!("an event must be a JSON object, got {kind}"),
        ))
    }

    /// Builds an event from an already parsed JSON value, as an element of a batch (the load
    /// generator's events, tests).
    pub fn from_value(
        value: Value,
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, InvalidEvent> {
        // Read from its text, as a body is: the parser reads ids and metadata in place.
        let text = value.to_string();
        let item: BatchItem = serde_json::from_str(&text).expect("any JSON value is read");
        Self::from_item(item, rules, arrival)
    }

    fn from_fields(
        fields: EventFields,
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, InvalidEvent> {
        let actor = Actor::from_fields(fields.user_id.as_ref(), fields.anonymous_id.as_ref())?;
        let asin = Asin::from_json(fields.asin.as_ref())?;
        let event_type = EventType::from_json(fields.event_type.as_ref())?;
        let metadata = Metadata::from_raw(fields.metadata, &rules.metadata)?;
        let received_at = arrival.received_at;
        let (event_id, client_event_id) = match &fields.event_id {
            None | Some(Value::Null) => (new_event_id(received_at), false),
            Some(value) => (parse_event_id(value)?, true),
        };
        let timestamp = optional_time("timestamp", fields.timestamp.as_ref())?;
        let sent_at = optional_time("sent_at", fields.sent_at.as_ref())?.or(arrival.sent_at);
        let ts = arrival.event_time(timestamp, sent_at, rules.max_age)?;
        Ok(Self {
            event_id,
            actor,
            asin,
            event_type,
            metadata,
            received_at,
            ts: Some(ts),
            client_event_id,
        })
    }

    /// When the event happened, as stored in `interaction_logs.ts`.
    pub fn ts(&self) -> DateTime<Utc> {
        self.ts.unwrap_or(self.received_at)
    }
}

/// A UUIDv7 carries its creation time in its first bits, so ids assigned by the service arrive in
/// nearly ascending order and the unique index on `event_id` stays cheap to insert into.
fn new_event_id(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

fn parse_event_id(value: &Value) -> Result<Uuid, InvalidEvent> {
    let rule = || {
        InvalidEvent::invalid(
            "event_id",
            "event_id must be a UUID string other than the nil UUID",
        )
    };
    match value {
        Value::String(s) => match Uuid::parse_str(s) {
            Ok(id) if !id.is_nil() => Ok(id),
            _ => Err(rule()),
        },
        _ => Err(rule()),
    }
}

#[cfg(test)]
mod tests;
