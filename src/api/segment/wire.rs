//! Segment's wire form, read in place: a message's fields where the mapping uses them, the
//! properties' other entries and the context's `page` and `campaign` as the client wrote them
//! (borrowed from the body, never parsed into a tree), everything else checked for syntax and
//! dropped.
//!
//! A batch's messages are first taken as the text each one is (a byte scan, which builds
//! nothing), so that a message over [`MAX_MESSAGE_BYTES`] is measured exactly; each is then read
//! once, into [`Message`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
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
    /// A review's rating: a string in the E-commerce Spec.
    pub rating: Option<Value>,
    /// An order's products.
    pub products: Option<Elements<Item<Product<'a>>>>,
    /// Every other entry, for the metadata.
    pub rest: Vec<Entry<'a>>,
}

/// A product of an order.
#[derive(Default)]
pub struct Product<'a> {
    pub product_id: Option<Value>,
    pub sku: Option<Value>,
    pub rest: Vec<Entry<'a>>,
}

/// What of a message's (or a batch's) `context` the metadata keeps.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    pub page: Option<&'a RawValue>,
    pub campaign: Option<&'a RawValue>,
}

/// Most entries kept of an object (the properties, a product): the metadata's own limit is far
/// below; past this the rest is dropped and the message refused as too large.
const MAX_ENTRIES: usize = 1024;

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
) -> Result<Vec<Entry<'de>>, M::Error> {
    let mut rest = Vec::new();
    while let Some(FieldName(name)) = map.next_key()? {
        if take(&name, &mut map)? {
            continue;
        }
        let value: &'de RawValue = map.next_value()?;
        if rest.len() < MAX_ENTRIES {
            rest.push((name, value));
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
                "rating" => properties.rating = Some(map.next_value::<Shallow>()?.0),
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
/// anything else dropped). The messages are the text of each.
pub struct Batch<'a> {
    pub messages: Elements<&'a RawValue>,
    pub sent_at: Option<Value>,
    pub context: Option<Item<Context<'a>>>,
    pub write_key: Option<Value>,
}

/// Why a body is not a batch, or not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(&'static str),
}

fn classify(error: serde_json::Error, shape: &'static str) -> WireError {
    match error.classify() {
        serde_json::error::Category::Data => WireError::Shape(shape),
        _ => WireError::Syntax(error.to_string()),
    }
}

impl<'a> Batch<'a> {
    pub fn from_json(body: &'a [u8]) -> Result<Self, WireError> {
        use serde::Deserializer as _;
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let batch = deserializer
            .deserialize_map(BatchVisitor)
            .and_then(|batch| deserializer.end().map(|()| batch));
        batch.map_err(|error| classify(error, r#"the body must be a JSON object {"batch": [...]}"#))
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a JSON object {"batch": [...]}"#)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Batch<'de>, M::Error> {
        let (mut messages, mut sent_at, mut context, mut write_key) = (None, None, None, None);
        while let Some(FieldName(name)) = map.next_key()? {
            match name.as_ref() {
                "batch" => {
                    messages = Some(map.next_value_seed(ElementsSeed::new(MAX_BATCH_MESSAGES))?);
                }
                "sentAt" => sent_at = Some(map.next_value::<Shallow>()?.0),
                "context" => context = Some(map.next_value()?),
                "writeKey" => write_key = Some(map.next_value::<Shallow>()?.0),
                _ => {
                    map.next_value::<Dropped>()?;
                }
            }
        }
        let messages = messages.ok_or_else(|| serde::de::Error::missing_field("batch"))?;
        Ok(Batch {
            messages,
            sent_at,
            context,
            write_key,
        })
    }
}

/// Reads one message from its text; `Item::Other` names what it is instead of an object.
pub fn message(text: &str) -> Result<Item<Message<'_>>, WireError> {
    serde_json::from_str(text).map_err(|error| classify(error, "a message must be a JSON object"))
}
