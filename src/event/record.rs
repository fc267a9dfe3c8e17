//! An event's JSON record in the hand-off (the JetStream messages, and the journal's records
//! written before the binary layout).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Actor, AnonymousId, Asin, Event, EventType, Metadata, UserId};

/// An event's record in the hand-off, as written: exactly one of `user_id` and `anonymous_id`.
#[derive(Serialize)]
struct RecordOut<'a> {
    event_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a AnonymousId>,
    asin: &'a Asin,
    event_type: EventType,
    metadata: Option<&'a Metadata>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    received_at: DateTime<Utc>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    ts: Option<DateTime<Utc>>,
}

/// An event's record in the hand-off, as read.
#[derive(Deserialize)]
pub(super) struct EventRecord {
    event_id: Uuid,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    anonymous_id: Option<AnonymousId>,
    asin: Asin,
    event_type: EventType,
    metadata: Option<Metadata>,
    #[serde(deserialize_with = "crate::rfc3339::deserialize")]
    received_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "crate::rfc3339::deserialize_option")]
    ts: Option<DateTime<Utc>>,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RecordOut {
            event_id: self.event_id,
            user_id: self.actor.user(),
            anonymous_id: self.actor.visitor(),
            asin: &self.asin,
            event_type: self.event_type,
            metadata: self.metadata.as_ref(),
            received_at: self.received_at,
            ts: self.ts,
        }
        .serialize(serializer)
    }
}

impl TryFrom<EventRecord> for Event {
    type Error = &'static str;
    fn try_from(record: EventRecord) -> Result<Self, Self::Error> {
        let actor = match (record.user_id, record.anonymous_id) {
            (Some(user), None) => Actor::User(user),
            (None, Some(visitor)) => Actor::Visitor(visitor),
            _ => return Err("an event record names exactly one of user_id and anonymous_id"),
        };
        Ok(Self {
            event_id: record.event_id,
            actor,
            asin: record.asin,
            event_type: record.event_type,
            metadata: record.metadata,
            received_at: record.received_at,
            ts: record.ts,
            client_event_id: false,
        })
    }
}
