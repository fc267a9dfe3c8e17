//! The journal's own form of an event: a fixed binary layout, written on the request path and
//! read by the writer for a fraction of what JSON costs (the writer's decode 6,460 → 1,600
//! instructions, the request path's encode some 4,000 → a few hundred: bench/README.md,
//! "Instructions per event"). The JetStream messages stay JSON ([`crate::handoff::json`]): other
//! consumers read them. The journal is the node's own, and it reads both: records written as JSON
//! before this form existed (starting with `{`) are decoded as JSON ([`super::decode`]).
//!
//! Layout (integers little-endian):
//!
//! ```text
//! u8        FORMAT (2): an event, this layout (1: the same, written before flag 8 existed)
//! [u8; 16]  event_id
//! u8        event_type: 1 view, 2 click, 3 add_to_cart, 4 purchase, 5 rate
//! u8        flags: 1 the actor is a visitor, 2 ts is there, 4 metadata is there, 8 the client
//!           chose the event id (format 2 only; a format 1 record is read as if it had)
//! i64       user_id                  | u8 length, then the anonymous_id's bytes (a visitor)
//! i64, u32  received_at: seconds since 1970 and nanoseconds
//! i64, u32  ts, the same way         (if its flag is set)
//! u16       length, then the asin's UTF-8 bytes
//! u32       length, then the metadata's compact JSON (if its flag is set)
//! ```
//!
//! A record is checksummed, but decoding still checks what the types promise (valid ids and
//! asin, metadata a JSON object), refuses unknown flags and trailing bytes, and so reads back
//! exactly the bytes [`encode`] writes. The metadata's limits were checked at acceptance, under
//! the settings of the time, and are not checked again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Actor, AnonymousId, Asin, Event, EventType, Metadata, UserId};

/// The first byte of an event in this form; JSON's first byte is `{`.
pub const FORMAT: u8 = 2;

/// The first byte of the form before [`CLIENT_ID`]: read still, never written.
const FORMAT_1: u8 = 1;

const VISITOR: u8 = 1;
const HAS_TS: u8 = 2;
const HAS_METADATA: u8 = 4;
const CLIENT_ID: u8 = 8;

/// Whether `record` is an event in this form (of either format).
pub fn is_binary(record: &[u8]) -> bool {
    matches!(record.first(), Some(&FORMAT | &FORMAT_1))
}

/// Why bytes are not an event in this form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a binary event record: {0}")]
pub struct DecodeError(&'static str);

/// The record of `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    let metadata = event.metadata.as_ref().map(Metadata::as_json);
    let mut flags = 0;
    if matches!(event.actor, Actor::Visitor(_)) {
        flags |= VISITOR;
    }
    if event.ts.is_some() {
        flags |= HAS_TS;
    }
    if metadata.is_some() {
        flags |= HAS_METADATA;
    }
    if event.client_event_id {
        flags |= CLIENT_ID;
    }
    let mut out = Vec::with_capacity(64 + event.asin.as_str().len() + metadata.map_or(0, str::len));
    out.push(FORMAT);
    out.extend_from_slice(event.event_id.as_bytes());
    out.push(type_code(event.event_type));
    out.push(flags);
    match &event.actor {
        Actor::User(user) => out.extend_from_slice(&user.get().to_le_bytes()),
        Actor::Visitor(visitor) => {
            // At most MAX_ANONYMOUS_ID_CHARS (64) ASCII characters.
            out.push(visitor.as_str().len() as u8);
            out.extend_from_slice(visitor.as_str().as_bytes());
        }
    }
    put_time(&mut out, event.received_at);
    if let Some(ts) = event.ts {
        put_time(&mut out, ts);
    }
    // At most MAX_ASIN_CHARS (64) characters: 256 bytes.
    out.extend_from_slice(&(event.asin.as_str().len() as u16).to_le_bytes());
    out.extend_from_slice(event.asin.as_str().as_bytes());
    if let Some(json) = metadata {
        // At most 1 MiB (`--max-metadata-bytes`' bound).
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
    }
    out
}

/// Reads an event written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let mut input = Input(bytes);
    let known_flags = match input.u8()? {
        FORMAT => VISITOR | HAS_TS | HAS_METADATA | CLIENT_ID,
        FORMAT_1 => VISITOR | HAS_TS | HAS_METADATA,
        _ => return Err(DecodeError("unknown format")),
    };
    let event_id = Uuid::from_bytes(input.take(16)?.try_into().expect("16 bytes"));
    let event_type = event_type(input.u8()?).ok_or(DecodeError("unknown event type"))?;
    let flags = input.u8()?;
    if flags & !known_flags != 0 {
        return Err(DecodeError("unknown flags"));
    }
    // A record of format 1 does not say who chose the id: as if the client had, so that its
    // retries are kept single (docs/ARCHITECTURE.md, "Exactly once across partitions").
    let client_event_id = flags & CLIENT_ID != 0 || known_flags & CLIENT_ID == 0;
    let actor = if flags & VISITOR != 0 {
        let len = input.u8()? as usize;
        let id = input.text(len)?;
        Actor::Visitor(AnonymousId::new(id).map_err(|_| DecodeError("invalid anonymous_id"))?)
    } else {
        let id = i64::from_le_bytes(input.array()?);
        Actor::User(UserId::new(id).map_err(|_| DecodeError("invalid user_id"))?)
    };
    let received_at = input.time()?;
    let ts = if flags & HAS_TS != 0 {
        Some(input.time()?)
    } else {
        None
    };
    let len = u16::from_le_bytes(input.array()?) as usize;
    let asin = Asin::new(input.text(len)?).map_err(|_| DecodeError("invalid asin"))?;
    let metadata = if flags & HAS_METADATA != 0 {
        let len = u32::from_le_bytes(input.array()?) as usize;
        let json = input.text(len)?;
        Some(Metadata::from_recorded(json).ok_or(DecodeError("invalid metadata"))?)
    } else {
        None
    };
    if !input.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Event {
        event_id,
        actor,
        asin,
        event_type,
        metadata,
        received_at,
        ts,
        client_event_id,
    })
}

fn type_code(event_type: EventType) -> u8 {
    match event_type {
        EventType::View => 1,
        EventType::Click => 2,
        EventType::AddToCart => 3,
        EventType::Purchase => 4,
        EventType::Rate => 5,
    }
}

fn event_type(code: u8) -> Option<EventType> {
    EventType::ALL.into_iter().find(|t| type_code(*t) == code)
}

fn put_time(out: &mut Vec<u8>, at: DateTime<Utc>) {
    out.extend_from_slice(&at.timestamp().to_le_bytes());
    out.extend_from_slice(&at.timestamp_subsec_nanos().to_le_bytes());
}

/// The bytes not yet read.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn text(&mut self, len: usize) -> Result<String, DecodeError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("text not UTF-8"))
    }

    fn time(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        let seconds = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        DateTime::from_timestamp(seconds, nanos).ok_or(DecodeError("time out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Arrival, EventRules};
    use proptest::prelude::*;
    use serde_json::json;

    fn event(body: serde_json::Value) -> Event {
        Event::from_value(body, &EventRules::default(), Arrival::now()).unwrap()
    }

    fn round_trip(event: &Event) -> Event {
        decode(&encode(event)).unwrap()
    }

    #[test]
    fn events_of_users_and_visitors_round_trip() {
        for body in [
            json!({"user_id": 42, "asin": "B08XXXX", "event_type": "view"}),
            json!({"user_id": i64::MAX, "asin": "é".repeat(64), "event_type": "rate",
                   "metadata": {"page": "p", "nested": {"a": [1, 2.5, null, "x\"y"]}}}),
            json!({"anonymous_id": "a".repeat(64), "asin": "X", "event_type": "add_to_cart",
                   "event_id": "019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b10",
                   "timestamp": chrono::Utc::now().to_rfc3339()}),
        ] {
            let mut event = event(body);
            assert_eq!(round_trip(&event), event);
            event.client_event_id = !event.client_event_id;
            assert_eq!(round_trip(&event), event);
        }
    }

    #[test]
    fn an_event_without_ts_round_trips_without_it() {
        // As decoded from a JSON record written before `ts` existed.
        let json = br#"{"event_id":"019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b10","user_id":7,"asin":"B1","event_type":"click","metadata":null,"received_at":"2026-11-29T07:12:01.123456789Z"}"#;
        let Ok(crate::handoff::Record::Event(old)) = crate::handoff::journal::decode(json) else {
            panic!("not an event");
        };
        assert_eq!(old.ts, None);
        assert_eq!(round_trip(&old), old);
    }

    #[test]
    fn the_type_codes_are_fixed() {
        // Records on disk hold these numbers: they never change.
        let codes: Vec<u8> = EventType::ALL.into_iter().map(type_code).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
        assert_eq!(event_type(0), None);
        assert_eq!(event_type(6), None);
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let bytes = encode(&event(
            json!({"user_id": 1, "asin": "B1", "event_type": "view", "metadata": {"a": 1}}),
        ));
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeError("trailing bytes")));
        let mut other = bytes.clone();
        other[0] = b'{';
        assert_eq!(decode(&other), Err(DecodeError("unknown format")));
        let mut format_1 = bytes.clone();
        format_1[0] = FORMAT_1;
        assert!(
            decode(&format_1).unwrap().client_event_id,
            "read as the client's id"
        );
        format_1[18] |= CLIENT_ID;
        assert_eq!(decode(&format_1), Err(DecodeError("unknown flags")));
        let mut bad_user = bytes.clone();
        bad_user[19..27].copy_from_slice(&0i64.to_le_bytes());
        assert_eq!(decode(&bad_user), Err(DecodeError("invalid user_id")));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_valid_event_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(event) = decode(&bytes) {
                prop_assert_eq!(decode(&encode(&event)), Ok(event.clone()));
                if bytes[0] == FORMAT {
                    prop_assert_eq!(encode(&event), bytes);
                }
            }
        }

        #[test]
        fn a_changed_byte_is_refused_or_read_back_exactly(
            at in any::<proptest::sample::Index>(),
            value in any::<u8>(),
            visitor in any::<bool>(),
        ) {
            let actor = if visitor { json!({"anonymous_id": "v-1"}) } else { json!({"user_id": 9}) };
            let mut body = json!({"asin": "B1", "event_type": "purchase", "metadata": {"a": [1, {"b": null}]}});
            body.as_object_mut().unwrap().extend(actor.as_object().unwrap().clone());
            let mut bytes = encode(&event(body));
            let at = at.index(bytes.len());
            bytes[at] = value;
            // Whatever still decodes is a valid event whose record is exactly these bytes (or, of
            // the older format, the same event).
            if let Ok(event) = decode(&bytes) {
                prop_assert_eq!(decode(&encode(&event)), Ok(event.clone()));
                if bytes[0] == FORMAT {
                    prop_assert_eq!(encode(&event), bytes);
                }
            }
        }
    }
}
