//! The request's wire form: an event's fields read from the body as it is parsed, a batch's
//! elements, and why a body could not become an event.
//!
//! Nothing is built from a value that will be refused. A known field keeps its value whole only
//! when it is a scalar, the only kind any field takes (an array or an object keeps just its
//! kind, for the error: [`Shallow`]); the metadata is kept as the text the client sent; other
//! fields, and the elements of an array past its limit, are checked for syntax and dropped. So
//! a request's memory is a small multiple of its body, whatever the body holds.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer as _};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::InvalidEvent;

/// An event request's fields as the body has them: each known field's value, taken as the body
/// is read, without an object of them all; other fields are read and dropped. A repeated key
/// counts as its last occurrence, as when the object is read whole.
#[derive(Debug, Default)]
pub struct EventFields {
    pub(super) user_id: Option<Value>,
    pub(super) anonymous_id: Option<Value>,
    pub(super) asin: Option<Value>,
    pub(super) event_type: Option<Value>,
    /// As the client wrote it: its numbers exactly as sent.
    pub(super) metadata: Option<Box<RawValue>>,
    pub(super) event_id: Option<Value>,
    pub(super) timestamp: Option<Value>,
    pub(super) sent_at: Option<Value>,
}

impl EventFields {
    /// Where the scalar field of this name goes; `None` for the metadata and for a field events
    /// do not have.
    fn slot(&mut self, name: &str) -> Option<&mut Option<Value>> {
        Some(match name {
            "anonymous_id" => &mut self.anonymous_id,
            "asin" => &mut self.asin,
            "event_type" => &mut self.event_type,
            "event_id" => &mut self.event_id,
            "timestamp" => &mut self.timestamp,
            "sent_at" => &mut self.sent_at,
            _ => return None,
        })
    }

    /// The `user_id` and `anonymous_id` fields (an identification's body is read as an event's).
    pub(crate) fn actor_fields(&self) -> (Option<&Value>, Option<&Value>) {
        (self.user_id.as_ref(), self.anonymous_id.as_ref())
    }
}

impl<'de> Deserialize<'de> for EventFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = EventFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<EventFields, M::Error> {
        let mut fields = EventFields::default();
        while let Some(FieldName(name)) = map.next_key()? {
            if name == "metadata" {
                fields.metadata = Some(map.next_value()?);
            } else if name == "user_id" {
                fields.user_id = Some(map.next_value::<Id>()?.0);
            } else if let Some(slot) = fields.slot(&name) {
                *slot = Some(map.next_value::<Shallow>()?.0);
            } else {
                map.next_value::<Dropped>()?;
            }
        }
        Ok(fields)
    }
}

/// A value read as strictly as those the service keeps (UTF-8, escapes, number range, nesting)
/// and dropped: nothing of it is built (serde's `IgnoredAny` would skip the checks inside
/// strings and numbers).
pub struct Dropped;

impl<'de> Deserialize<'de> for Dropped {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DroppedVisitor)
    }
}

struct DroppedVisitor;

impl<'de> Visitor<'de> for DroppedVisitor {
    type Value = Dropped;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_str<E>(self, _: &str) -> Result<Dropped, E> {
        Ok(Dropped)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Dropped, S::Error> {
        while seq.next_element::<Dropped>()?.is_some() {}
        Ok(Dropped)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Dropped, M::Error> {
        while map.next_entry::<Dropped, Dropped>()?.is_some() {}
        Ok(Dropped)
    }
}

/// A JSON value kept whole if it is a scalar; an array or an object becomes an empty one, its
/// contents checked for syntax and dropped. For fields that take only scalars: an array or an
/// object there is refused by its kind alone.
pub struct Shallow(pub Value);

impl<'de> Deserialize<'de> for Shallow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShallowVisitor).map(Shallow)
    }
}

struct ShallowVisitor;

impl<'de> Visitor<'de> for ShallowVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // serde_json gives no infinite or NaN number.
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Value, S::Error> {
        while seq.next_element::<Dropped>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Value, M::Error> {
        while map.next_entry::<Dropped, Dropped>()?.is_some() {}
        Ok(Value::Object(Map::new()))
    }
}

/// An id field's value, read from the number's text so that it is exact: a number that is an
/// integer (`42`, `42.0`, `4.2e1`, `9007199254740993.0`) is that integer, whatever a float
/// would round it to; any other number (`12345678901234567.5`, one beyond 64 bits) is a float,
/// which no id is; any other value as [`Shallow`] keeps it. Needs a body read in place (the
/// request parser's `from_slice`).
pub struct Id(pub Value);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        Ok(Id(match text.as_bytes().first() {
            Some(b'-' | b'0'..=b'9') => exact_integer(text).map_or(Value::from(0.5), Value::from),
            _ => serde_json::from_str::<Shallow>(text).map_or(Value::Null, |shallow| shallow.0),
        }))
    }
}

/// The integer a JSON number's text denotes exactly, if it is one that fits 64 bits.
pub fn exact_integer(text: &str) -> Option<i64> {
    // Plain digits, as nearly every client writes an id.
    if text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    // Where the decimal point falls in `digits`, once the leading zeros are gone.
    let zeros = digits.iter().take_while(|d| **d == b'0').count();
    let digits = &digits[zeros..];
    if digits.is_empty() {
        return Some(0);
    }
    let point = (whole.len() as i64 - zeros as i64).checked_add(exponent)?;
    if point <= 0 || point > 19 {
        return None;
    }
    let point = point as usize;
    let (integer, rest) = digits.split_at(point.min(digits.len()));
    if rest.iter().any(|d| *d != b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for digit in integer
        .iter()
        .chain(std::iter::repeat_n(&b'0', point - integer.len()))
    {
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// What a JSON value is, for an error that names it.
fn kind(value: &Value) -> &'static str {
    super::json_type(value)
}

/// A JSON array read element by element, at most `max` of them: past it the rest is checked for
/// syntax and dropped, and nothing more is built.
pub enum Elements<T> {
    Items(Vec<T>),
    /// More than the limit.
    TooMany,
    /// Not an array: what it is instead.
    Not(&'static str),
}

/// Reads [`Elements`] of at most `max` items.
pub struct ElementsSeed<T> {
    pub max: usize,
    item: PhantomData<T>,
}

impl<T> ElementsSeed<T> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ElementsSeed<T> {
    type Value = Elements<T>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ElementsSeed<T> {
    type Value = Elements<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} items", self.max)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                while seq.next_element::<Dropped>()?.is_some() {}
                return Ok(Elements::TooMany);
            }
            items.push(item);
        }
        Ok(Elements::Items(items))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        ShallowVisitor
            .visit_map(map)
            .map(|v| Elements::Not(kind(&v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Elements::Not("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Elements::Not("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Elements::Not("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Elements::Not("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Elements::Not("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Elements::Not("a string"))
    }
}

/// An element of an array that should hold objects: an object's fields as `T` reads them, or
/// the kind of any other value (an array's contents checked for syntax and dropped).
pub enum Item<T> {
    Object(T),
    Other(&'static str),
}

impl<'de, T: ObjectFields<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor(PhantomData))
    }
}

/// A type read from a JSON object's entries.
pub trait ObjectFields<'de>: Sized {
    fn from_map<M: MapAccess<'de>>(map: M) -> Result<Self, M::Error>;
}

impl<'de> ObjectFields<'de> for EventFields {
    fn from_map<M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        FieldsVisitor.visit_map(map)
    }
}

struct ItemVisitor<T>(PhantomData<T>);

impl<'de, T: ObjectFields<'de>> Visitor<'de> for ItemVisitor<T> {
    type Value = Item<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Item<T>, M::Error> {
        T::from_map(map).map(Item::Object)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Item<T>, S::Error> {
        ShallowVisitor
            .visit_seq(seq)
            .map(|_| Item::Other("an array"))
    }

    fn visit_unit<E>(self) -> Result<Item<T>, E> {
        Ok(Item::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Item<T>, E> {
        Ok(Item::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Item<T>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Item<T>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Item<T>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Item<T>, E> {
        Ok(Item::Other("a string"))
    }
}

/// An element of a batch's `events`.
pub type BatchItem = Item<EventFields>;

/// `POST /api/events`'s body, `{"events": [...], "sent_at"?}`, read as it is parsed: at most
/// `max` events are built.
pub struct Batch {
    pub events: Elements<BatchItem>,
    pub sent_at: Option<Value>,
}

/// Why a batch's body is not a batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error(r#"the body must be a JSON object {{"events": [...]}}"#)]
    NotAnEnvelope,
}

impl Batch {
    pub fn from_json(body: &[u8], max: usize) -> Result<Self, BatchError> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let batch = deserializer
            .deserialize_map(BatchVisitor { max })
            .and_then(|batch| deserializer.end().map(|()| batch));
        batch.map_err(|error| match error.classify() {
            serde_json::error::Category::Data => BatchError::NotAnEnvelope,
            _ => BatchError::Syntax(error.to_string()),
        })
    }
}

struct BatchVisitor {
    max: usize,
}

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a JSON object {"events": [...]}"#)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Batch, M::Error> {
        let (mut events, mut sent_at) = (None, None);
        while let Some(FieldName(name)) = map.next_key()? {
            match name.as_ref() {
                "events" => events = Some(map.next_value_seed(ElementsSeed::new(self.max))?),
                "sent_at" => sent_at = Some(map.next_value::<Shallow>()?.0),
                _ => {
                    map.next_value::<Dropped>()?;
                }
            }
        }
        let events = events.ok_or_else(|| serde::de::Error::missing_field("events"))?;
        Ok(Batch { events, sent_at })
    }
}

/// A key of the body's object, borrowed from the body unless it holds escapes.
pub struct FieldName<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
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
