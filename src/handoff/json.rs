//! The hand-off's JSON records: the JetStream messages (a public interface, described in
//! docs/ARCHITECTURE.md), visitors' identifications in both hand-offs, the events an older build
//! journaled as JSON, and what is set aside for a person to read. The journal's own form of an
//! event is binary, in the journal's module.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Record;
use crate::event::{Actor, AnonymousId, Asin, Event, EventType, Identity, Metadata, UserId};

/// An event as JSON.
pub fn encode(event: &Event) -> Vec<u8> {
    // Room for a record without metadata (some 230 bytes) and the metadata: one allocation.
    let metadata = event.metadata.as_ref().map_or(0, |m| m.as_json().len());
    let mut record = Vec::with_capacity(320 + metadata);
    serde_json::to_writer(&mut record, &RecordOut::of(event)).expect("an event always serializes");
    record
}

/// What an identification travels as: its JSON under the key `identify`, which no event has.
pub fn encode_identity(identity: &Identity) -> Vec<u8> {
    serde_json::to_vec(&IdentifyRecord { identify: identity }).expect("an identity serializes")
}

/// A record as JSON: an event's, or an identification's.
pub fn encode_record(record: &Record) -> Vec<u8> {
    match record {
        Record::Event(event) => encode(event),
        Record::Identity(identity) => encode_identity(identity),
    }
}

/// Decodes a JSON record: an identification (starting as [`encode_identity`] starts), or an
/// event.
pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
    #[derive(Deserialize)]
    struct Identify {
        identify: Identity,
    }
    if bytes.starts_with(IDENTIFY_PREFIX) {
        serde_json::from_slice::<Identify>(bytes).map(|r| Record::Identity(r.identify))
    } else {
        let record: EventRecord = serde_json::from_slice(bytes)?;
        record
            .into_event()
            .map(Record::Event)
            .map_err(serde::de::Error::custom)
    }
}

const IDENTIFY_PREFIX: &[u8] = b"{\"identify\":";

#[derive(Serialize)]
struct IdentifyRecord<'a> {
    identify: &'a Identity,
}

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
    client_event_id: bool,
}

/// An event's record in the hand-off, as read.
#[derive(Deserialize)]
struct EventRecord {
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
    /// Absent from a record written before it existed (or by another producer): read as if the
    /// client had chosen the id, so that its retries are kept single.
    #[serde(default)]
    client_event_id: Option<bool>,
}

impl<'a> RecordOut<'a> {
    fn of(event: &'a Event) -> Self {
        RecordOut {
            event_id: event.event_id,
            user_id: event.actor.user(),
            anonymous_id: event.actor.visitor(),
            asin: &event.asin,
            event_type: event.event_type,
            metadata: event.metadata.as_ref(),
            received_at: event.received_at,
            ts: event.ts,
            client_event_id: event.client_event_id,
        }
    }
}

impl EventRecord {
    fn into_event(self) -> Result<Event, &'static str> {
        let actor = match (self.user_id, self.anonymous_id) {
            (Some(user), None) => Actor::User(user),
            (None, Some(visitor)) => Actor::Visitor(visitor),
            _ => return Err("an event record names exactly one of user_id and anonymous_id"),
        };
        Ok(Event {
            event_id: self.event_id,
            actor,
            asin: self.asin,
            event_type: self.event_type,
            metadata: self.metadata,
            received_at: self.received_at,
            ts: self.ts,
            client_event_id: self.client_event_id.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::event::{AnonymousId, Arrival, EventRules};

    fn parse(value: Value) -> Event {
        Event::from_value(value, &EventRules::default(), Arrival::now()).unwrap()
    }

    fn event_of(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        match decode(bytes)? {
            Record::Event(event) => Ok(event),
            Record::Identity(_) => panic!("an identification"),
        }
    }

    #[test]
    fn an_event_survives_its_json_record() {
        let event = parse(
            json!({"user_id": 9, "asin": "B0", "event_type": "rate", "metadata": {"stars": 5}}),
        );
        assert_eq!(event_of(&encode(&event)).unwrap(), event);
        let chosen = Event {
            client_event_id: true,
            ..event
        };
        assert_eq!(event_of(&encode(&chosen)).unwrap(), chosen);
    }

    #[test]
    fn a_visitor_is_named_by_anonymous_id_and_survives_the_record() {
        let event = parse(json!({"anonymous_id": "v-1.a_B", "asin": "B0", "event_type": "view"}));
        assert_eq!(
            event.actor,
            Actor::Visitor(AnonymousId::new("v-1.a_B".to_owned()).unwrap())
        );
        let text = String::from_utf8(encode(&event)).unwrap();
        assert!(text.contains(r#""anonymous_id":"v-1.a_B""#), "{text}");
        assert!(!text.contains("user_id"), "{text}");
        assert_eq!(event_of(text.as_bytes()).unwrap(), event);
        let both = text.replacen('{', r#"{"user_id":1,"#, 1);
        assert!(event_of(both.as_bytes()).is_err(), "{both}");
    }

    #[test]
    fn an_event_journaled_before_ts_existed_takes_its_time_of_receipt() {
        let old = br#"{"event_id":"7d444840-9dc0-11d1-b245-5ffdce74fad2","user_id":1,"asin":"A","event_type":"view","metadata":null,"received_at":"2026-11-29T12:00:00Z"}"#;
        let at = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap();
        assert_eq!(event_of(old).unwrap().ts(), at);
        assert!(
            event_of(old).unwrap().client_event_id,
            "who chose the id unknown: as if the client had"
        );
    }

    #[test]
    fn an_identification_survives_its_record() {
        let identity = Identity::from_fields(
            Some(&json!("v-9")),
            Some(&json!(42)),
            DateTime::parse_from_rfc3339("2026-11-29T12:00:00.123Z")
                .unwrap()
                .into(),
        )
        .unwrap();
        assert_eq!(
            decode(&encode_identity(&identity)).unwrap(),
            Record::Identity(identity)
        );
    }

    proptest! {
        #[test]
        fn any_valid_event_survives_its_json_record(
            user in 1..i64::MAX,
            asin in "[A-Za-z0-9é_-]{1,64}",
            kind in 0..5usize,
            metadata in prop::option::of(prop::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..4)),
            late_ms in 0i64..100_000,
        ) {
            let types = ["view", "click", "add_to_cart", "purchase", "rate"];
            let now = chrono::Utc::now();
            let timestamp = (now - chrono::TimeDelta::milliseconds(late_ms))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let event = parse(json!({"user_id": user, "asin": asin, "event_type": types[kind],
                                     "metadata": metadata, "timestamp": timestamp}));
            prop_assert_eq!(event_of(&encode(&event)).unwrap(), event);
        }
    }
}
