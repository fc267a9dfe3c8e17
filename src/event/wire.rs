//! The request's wire form: an event's fields read from the body as it is parsed, a batch's
//! elements, and why a body could not become an event.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::InvalidEvent;

/// An event request's fields as the body has them: each known field's JSON value, taken as the
/// body is read, without an object of them all; other fields are read and dropped. A repeated
/// key counts as its last occurrence, as when the object is read whole.
#[derive(Debug, Default)]
pub struct EventFields {
    pub(super) user_id: Option<Value>,
    pub(super) anonymous_id: Option<Value>,
    pub(super) asin: Option<Value>,
    pub(super) event_type: Option<Value>,
    pub(super) metadata: Option<Value>,
    pub(super) event_id: Option<Value>,
    pub(super) timestamp: Option<Value>,
    pub(super) sent_at: Option<Value>,
}

impl EventFields {
    /// Where the field of this name goes; `None` for a field events do not have.
    fn slot(&mut self, name: &str) -> Option<&mut Option<Value>> {
        Some(match name {
            "user_id" => &mut self.user_id,
            "anonymous_id" => &mut self.anonymous_id,
            "asin" => &mut self.asin,
            "event_type" => &mut self.event_type,
            "metadata" => &mut self.metadata,
            "event_id" => &mut self.event_id,
            "timestamp" => &mut self.timestamp,
            "sent_at" => &mut self.sent_at,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for EventFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
    type Value = EventFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<EventFields, M::Error> {
        let mut fields = EventFields::default();
        while let Some(FieldName(name)) = map.next_key()? {
            // Another field is read as strictly as the event's own (UTF-8, escapes, number
            // range, nesting), as when the object was read whole, and dropped.
            let value = map.next_value()?;
            if let Some(slot) = fields.slot(&name) {
                *slot = Some(value);
            }
        }
        Ok(fields)
    }
}

/// A value of a batch's body, read as the body is parsed (no JSON tree of the batch is built):
/// an object's event fields (read as a single event's body is), an array's elements, or the kind
/// of any other value, for its error. Every value is read as strictly as the rest of the body.
// Nearly every value is an event's fields: boxing them would add an allocation to each event.
#[allow(clippy::large_enum_variant)]
pub enum BatchValue {
    Fields(EventFields),
    Array(Vec<BatchValue>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for BatchValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchValueVisitor)
    }
}

struct BatchValueVisitor;

impl<'de> serde::de::Visitor<'de> for BatchValueVisitor {
    type Value = BatchValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<BatchValue, M::Error> {
        FieldsVisitor.visit_map(map).map(BatchValue::Fields)
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<BatchValue, S::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(BatchValue::Array(items))
    }

    fn visit_unit<E>(self) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<BatchValue, E> {
        Ok(BatchValue::Other("a string"))
    }
}

/// A key of the body's object, borrowed from the body unless it holds escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(name.into()))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(name.to_owned().into()))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Why a request body could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all, or cut short.
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

impl From<serde_json::Error> for ParseError {
    fn from(error: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ParseError::NotAnObject,
            Category::Syntax | Category::Eof | Category::Io => {
                ParseError::Syntax(error.to_string())
            }
        }
    }
}
