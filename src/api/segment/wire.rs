//! Segment's wire form, read in place: a message's fields where the mapping uses them, the
//! properties' other entries and the context's `page` and `campaign` as the client wrote them
//! (borrowed from the body, never parsed into a tree), everything else checked for syntax and
//! dropped.
//!
//! A batch is read once, front to back ([`Batch::from_json`]): each message straight into
//! [`Message`], measured as it is read, so that one over [`MAX_MESSAGE_BYTES`] is refused
//! without a first pass over the batch to find where each message ends.

use std::borrow::Cow;

use serde::de::MapAccess;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{Dropped, Elements, ElementsSeed, FieldName, Item, ObjectFields, Shallow};

/// Most bytes of one message, as Segment's API takes them.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Most bytes of one request, inflated, as Segment's API takes them.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;

/// Most messages of one batch, as Segment's API takes them.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

/// An entry of an object, as the client wrote it.
pub type Entry<'a> = (Cow<'a, str>, &'a RawValue);

/// One message: what the mapping reads of it.
#[derive(Default)]
pub struct Message<'a> {
    /// `type`: `track`, `identify`, `alias`, `page`, `screen`, `group`.
    pub kind: Option<Value>,
    /// A track's name.
    pub event: Option<Value>,
    pub user_id: Option<Value>,
    pub anonymous_id: Option<Value>,
    /// An alias's former id.
    pub previous_id: Option<Value>,
    pub message_id: Option<Value>,
    pub timestamp: Option<Value>,
    pub original_timestamp: Option<Value>,
    pub sent_at: Option<Value>,
    /// A single message's own write key (`writeKey` in its body).
    pub write_key: Option<Value>,
    pub properties: Option<Item<Properties<'a>>>,
    pub context: Option<Item<Context<'a>>>,
}

/// A message's `properties`.
#[derive(Default)]
pub struct Properties<'a> {
    pub product_id: Option<Value>,
    pub sku: Option<Value>,
    /// A review's rating, as written: a string in the E-commerce Spec.
    pub rating: Option<&'a RawValue>,
    /// An order's products.
    pub products: Option<Elements<Item<Product<'a>>>>,
    /// Every other entry, for the metadata.
    pub rest: Entries<'a>,
}

/// A product of an order.
#[derive(Default)]
pub struct Product<'a> {
    pub product_id: Option<Value>,
    pub sku: Option<Value>,
    pub rest: Entries<'a>,
}

/// An object's entries as the client wrote them, up to [`MAX_ENTRIES`].
#[derive(Default)]
pub struct Entries<'a> {
    pub kept: Vec<Entry<'a>>,
    /// Whether the object had more than [`MAX_ENTRIES`]: its message is then unused, as too
    /// large, never stored without them.
    pub overflowed: bool,
}

/// What of a message's (or a batch's) `context` the metadata keeps.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    pub page: Option<&'a RawValue>,
    pub campaign: Option<&'a RawValue>,
}

/// Most entries read of an object (the properties, a product), and most products of an order:
/// the metadata's own limit (`--max-metadata-keys`, 128) is far below; past this the rest is
/// skipped unread and the message is unused, as too large.
pub const MAX_ENTRIES: usize = 1024;

impl<'de> ObjectFields<'de> for Message<'de> {
    fn from_map<M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let mut message = Message::default();
        while let Some(FieldName(name)) = map.next_key()? {
            let slot = match name.as_ref() {
                "type" => &mut message.kind,
                "event" => &mut message.event,
                "userId" => &mut message.user_id,
                "anonymousId" => &mut message.anonymous_id,
                "previousId" => &mut message.previous_id,
                "messageId" => &mut message.message_id,
                "timestamp" => &mut message.timestamp,
                "originalTimestamp" => &mut message.original_timestamp,
                "sentAt" => &mut message.sent_at,
                "writeKey" => &mut message.write_key,
                "properties" => {
                    message.properties = Some(map.next_value()?);
                    continue;
                }
                "context" => {
                    message.context = Some(map.next_value()?);
                    continue;
                }
                _ => {
                    map.next_value::<Dropped>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Shallow>()?.0);
        }
        Ok(message)
    }
}

/// The entries of an object other than `named`, which go to `take`.
fn entries<'de, M: MapAccess<'de>>(
    mut map: M,
    mut take: impl FnMut(&str, &mut M) -> Result<bool, M::Error>,
) -> Result<Entries<'de>, M::Error> {
    let mut rest = Entries {
        kept: Vec::with_capacity(map.size_hint().unwrap_or(4).min(16)),
        overflowed: false,
    };
    while let Some(FieldName(name)) = map.next_key()? {
        if take(&name, &mut map)? {
            continue;
        }
        if rest.kept.len() < MAX_ENTRIES {
            rest.kept.push((name, map.next_value()?));
        } else {
            map.next_value::<Dropped>()?;
            rest.overflowed = true;
        }
    }
    Ok(rest)
}

impl<'de> ObjectFields<'de> for Properties<'de> {
    fn from_map<M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        let mut properties = Properties::default();
        properties.rest = entries(map, |name, map| {
            match name {
                "product_id" => properties.product_id = Some(map.next_value::<Shallow>()?.0),
                "sku" => properties.sku = Some(map.next_value::<Shallow>()?.0),
                "rating" => properties.rating = Some(map.next_value()?),
                "products" => {
                    properties.products =
                        Some(map.next_value_seed(ElementsSeed::new(MAX_ENTRIES))?);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(properties)
    }
}

impl<'de> ObjectFields<'de> for Product<'de> {
    fn from_map<M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        let mut product = Product::default();
        product.rest = entries(map, |name, map| {
            match name {
                "product_id" => product.product_id = Some(map.next_value::<Shallow>()?.0),
                "sku" => product.sku = Some(map.next_value::<Shallow>()?.0),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(product)
    }
}

impl<'de> ObjectFields<'de> for Context<'de> {
    fn from_map<M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let mut context = Context::default();
        while let Some(FieldName(name)) = map.next_key()? {
            match name.as_ref() {
                "page" => context.page = Some(map.next_value()?),
                "campaign" => context.campaign = Some(map.next_value()?),
                _ => {
                    map.next_value::<Dropped>()?;
                }
            }
        }
        Ok(context)
    }
}

/// A batch's body: `{"batch": [...], "sentAt"?, "context"?, "writeKey"?}` (`integrations` and
/// anything else dropped).
pub struct Batch<'a> {
    pub messages: Messages<'a>,
    pub sent_at: Option<Value>,
    pub context: Option<Item<Context<'a>>>,
    pub write_key: Option<Value>,
}

/// A batch's `batch`.
pub enum Messages<'a> {
    Read(Vec<Item<Message<'a>>>),
    /// More than [`MAX_BATCH_MESSAGES`]; the rest was not read.
    TooMany,
    /// A message over [`MAX_MESSAGE_BYTES`]; the rest was not read.
    TooLarge,
    /// Not an array: what it is instead.
    Not(&'static str),
}

impl Messages<'_> {
    /// Whether the batch was read to its end (else it is refused whole).
    fn whole(&self) -> bool {
        matches!(self, Messages::Read(_) | Messages::Not(_))
    }
}

/// Why a body is not a batch, or not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(&'static str),
}

const NOT_A_BATCH: &str = r#"the body must be a JSON object {"batch": [...]}"#;

fn classify(error: serde_json::Error, shape: &'static str) -> WireError {
    match error.classify() {
        serde_json::error::Category::Data => WireError::Shape(shape),
        _ => WireError::Syntax(error.to_string()),
    }
}

impl<'a> Batch<'a> {
    /// Reads the body once, front to back: the envelope's punctuation here, each value by
    /// serde_json from where it starts, so that where each message ends is known (its size is
    /// measured exactly) without a first pass over the batch.
    pub fn from_json(body: &'a [u8]) -> Result<Self, WireError> {
        // UTF-8 checked once here, not string by string as each value is read.
        let text =
            std::str::from_utf8(body).map_err(|error| WireError::Syntax(error.to_string()))?;
        let mut reader = Reader { text, at: 0 };
        let batch = reader.batch();
        match batch {
            Ok(batch) => Ok(batch),
            // Whether the body is JSON at all decides the answer: 400 `invalid_json`, or
            // `invalid_body` for JSON of another shape.
            Err(error) => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(syntax) => Err(WireError::Syntax(syntax.to_string())),
                Ok(_) => Err(error),
            },
        }
    }
}

/// Where the envelope's reading stands in the body.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn batch(&mut self) -> Result<Batch<'a>, WireError> {
        let (mut messages, mut sent_at, mut context, mut write_key) = (None, None, None, None);
        self.punctuation(b'{')?;
        if !self.next_is(b'}') {
            loop {
                let FieldName(name) = self.value()?;
                self.punctuation(b':')?;
                match name.as_ref() {
                    "batch" => {
                        let read = self.messages()?;
                        let whole = read.whole();
                        messages = Some(read);
                        if !whole {
                            break; // refused whole: the rest need not be read
                        }
                    }
                    "sentAt" => sent_at = Some(self.value::<Shallow>()?.0),
                    "context" => context = Some(self.value()?),
                    "writeKey" => write_key = Some(self.value::<Shallow>()?.0),
                    _ => {
                        self.value::<Dropped>()?;
                    }
                }
                if !self.next_is(b',') {
                    self.punctuation(b'}')?;
                    self.skip_whitespace();
                    if self.at != self.text.len() {
                        return Err(WireError::Shape(NOT_A_BATCH));
                    }
                    break;
                }
            }
        }
        Ok(Batch {
            messages: messages.ok_or(WireError::Shape(NOT_A_BATCH))?,
            sent_at,
            context,
            write_key,
        })
    }

    /// The messages of `batch`, each read once and measured, up to the limits.
    fn messages(&mut self) -> Result<Messages<'a>, WireError> {
        if !self.next_is(b'[') {
            let kind = match self.value::<Shallow>()?.0 {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) | Value::Object(_) => "an object",
            };
            return Ok(Messages::Not(kind));
        }
        // Room for the messages the rest of the body holds if each is 256 bytes of text (an
        // SDK's are more), so that the vector is seldom grown and moved as it fills: about
        // twice the body's size at most.
        let room = (self.text.len() - self.at) / 256;
        let mut messages = Vec::with_capacity(room.clamp(1, MAX_BATCH_MESSAGES));
        if self.next_is(b']') {
            return Ok(Messages::Read(messages));
        }
        loop {
            if messages.len() == MAX_BATCH_MESSAGES {
                return Ok(Messages::TooMany);
            }
            self.skip_whitespace();
            let start = self.at;
            let message = self.value()?;
            if self.at - start > MAX_MESSAGE_BYTES {
                return Ok(Messages::TooLarge);
            }
            messages.push(message);
            if !self.next_is(b',') {
                break;
            }
        }
        self.punctuation(b']')?;
        Ok(Messages::Read(messages))
    }

    /// The JSON value that starts here (after any whitespace), read by serde_json.
    fn value<T: serde::Deserialize<'a>>(&mut self) -> Result<T, WireError> {
        // `at` is always at an ASCII byte (punctuation, whitespace or a value's end).
        let rest = &self.text[self.at..];
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(value)) => {
                self.at += values.byte_offset();
                Ok(value)
            }
            Some(Err(error)) => Err(classify(error, NOT_A_BATCH)),
            None => Err(WireError::Shape(NOT_A_BATCH)),
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// Whether `byte` comes next (after any whitespace); if so, it is passed.
    fn next_is(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let is = self.text.as_bytes().get(self.at) == Some(&byte);
        self.at += usize::from(is);
        is
    }

    fn punctuation(&mut self, byte: u8) -> Result<(), WireError> {
        if self.next_is(byte) {
            Ok(())
        } else {
            Err(WireError::Shape(NOT_A_BATCH))
        }
    }
}

/// Reads one message from its text; `Item::Other` names what it is instead of an object.
pub fn message(text: &str) -> Result<Item<Message<'_>>, WireError> {
    serde_json::from_str(text).map_err(|error| classify(error, "a message must be a JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<Batch<'_>, WireError> {
        Batch::from_json(body.as_bytes())
    }

    fn count(body: &str) -> usize {
        match read(body).unwrap().messages {
            Messages::Read(messages) => messages.len(),
            _ => panic!("not read whole: {body}"),
        }
    }

    #[test]
    fn the_envelope_is_read_in_any_order_with_any_whitespace() {
        assert_eq!(count(r#"{"batch":[]}"#), 0);
        assert_eq!(
            count(" {\n\"sentAt\" : \"x\" ,\t\"batch\" : [ {} , 7 ,{\"a\":[1,{}]} ] } \r\n"),
            3
        );
        assert_eq!(
            count(r#"{"integrations":{"a":[1,2]},"batch":[{}],"context":{"page":{}}}"#),
            1
        );
        assert_eq!(count(r#"{"b\u0061tch":[{},{}]}"#), 2, "an escaped key");
        let batch = read(r#"{"batch":[],"sentAt":"2026-01-01T00:00:00Z","writeKey":"k"}"#).unwrap();
        assert_eq!(batch.sent_at, Some(Value::from("2026-01-01T00:00:00Z")));
        assert_eq!(batch.write_key, Some(Value::from("k")));
    }

    #[test]
    fn what_is_no_json_is_a_syntax_error_and_json_of_another_shape_a_shape_error() {
        for body in [
            r#"{"batch":[{},]}"#,
            r#"{"batch":[{}]"#,
            r#"{"batch":[]} x"#,
            "{not",
            "",
        ] {
            assert!(matches!(read(body), Err(WireError::Syntax(_))), "{body}");
        }
        for body in ["[1]", "3", r#"{"events":[]}"#, "{}"] {
            assert!(matches!(read(body), Err(WireError::Shape(_))), "{body}");
        }
        assert!(matches!(
            read(r#"{"batch":3}"#).unwrap().messages,
            Messages::Not("a number")
        ));
    }

    #[test]
    fn a_message_is_measured_exactly_and_the_batch_counted_as_it_is_read() {
        // {"p":"xxx…"} of exactly MAX_MESSAGE_BYTES bytes, then one byte more.
        let message = |len: usize| format!(r#"{{"p":"{}"}}"#, "x".repeat(len - 8));
        let at_limit = format!(r#"{{"batch":[ {} ]}}"#, message(MAX_MESSAGE_BYTES));
        assert_eq!(count(&at_limit), 1);
        let over = format!(r#"{{"batch":[{}]}}"#, message(MAX_MESSAGE_BYTES + 1));
        assert!(matches!(read(&over).unwrap().messages, Messages::TooLarge));
        let full = format!(
            r#"{{"batch":[{}]}}"#,
            vec!["{}"; MAX_BATCH_MESSAGES].join(",")
        );
        assert_eq!(count(&full), MAX_BATCH_MESSAGES);
        // Past the limit the rest is not read, not even checked.
        let more = format!(
            r#"{{"batch":[{},{{}}, not json"#,
            vec!["{}"; MAX_BATCH_MESSAGES].join(",")
        );
        assert!(matches!(read(&more).unwrap().messages, Messages::TooMany));
    }
}
