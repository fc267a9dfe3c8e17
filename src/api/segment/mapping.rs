//! From Segment's messages to our events and identifications (the table of README.md's
//! "Already on Segment or RudderStack?").
//!
//! A message that is well-formed but cannot be used (a page view, a track of another name, a
//! user id that is not the shop's numeric id, ...) is not an error: it is [`Outcome::Unused`],
//! with its reason, for a metric and a log line. Nothing is ever stored under another actor,
//! and nothing is cut to fit: what does not fit the limits is unused, whole.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::wire::{Context, Entry, Message, Product, Properties};
use crate::event::{
    Actor, AnonymousId, Arrival, Asin, Event, EventRules, EventType, Identity, InvalidEvent, Item,
    Metadata, UserId, optional_time,
};

/// How Segment's messages become events.
#[derive(Debug, Clone, Default)]
pub struct SegmentConfig {
    /// Track names of the shop's own, and the event each is (`"Add to Cart" → add_to_cart`);
    /// the E-commerce Spec's names need none.
    pub events: HashMap<String, EventType>,
    /// Which property names the item when a product has both.
    pub item_id: ItemId,
}

/// Which of a product's `product_id` and `sku` names the item when both are there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ItemId {
    #[default]
    ProductId,
    Sku,
}

/// The message types; a single-message route's is its path's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Identify,
    Alias,
    Page,
    Screen,
    Group,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Track,
        Kind::Identify,
        Kind::Alias,
        Kind::Page,
        Kind::Screen,
        Kind::Group,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Alias => "alias",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Group => "group",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// A message's type: the route's, or for a batch's, its own `type`.
    pub fn of(message: &Message) -> Option<Self> {
        match &message.kind {
            Some(Value::String(name)) => Self::parse(name),
            _ => None,
        }
    }
}

/// Why a well-formed message was not used: the label of `segment_messages_unused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unused {
    /// A page, screen or group call: nothing of ours records them.
    UnmappedType,
    /// A track of a name neither the E-commerce Spec's nor mapped by `--segment-events`.
    UnmappedEvent,
    /// An identify without an anonymous id: no visitor to merge.
    IdentifyWithoutAnonymousId,
    /// No `type`, or one Segment does not have.
    UnknownType,
    /// `userId` is not the shop's numeric user id (and is not stored as anyone else).
    NonNumericUserId,
    /// Neither a user id nor an anonymous id, or an anonymous id we do not take.
    NoActor,
    /// No product id or sku, or one that is no item id of ours.
    NoItem,
    /// The metadata breaks its limits or PostgreSQL's rules (never cut to fit).
    Metadata,
    /// A time field that is not RFC 3339, or an event older than `--max-event-age`.
    Time,
    /// Properties or a product of more than 1,024 entries, or an order of more than 1,024
    /// products (a message over 32 KiB fails its whole request, 413).
    TooLarge,
    /// The visitor belongs to another user already (the first identification wins).
    AlreadyIdentified,
    /// `--unknown-items reject`, and the catalogue does not know the item.
    UnknownItem,
    /// The message is no JSON object, or its properties or context are not.
    NotAnObject,
}

impl Unused {
    pub const ALL: [Unused; 13] = [
        Unused::UnmappedType,
        Unused::UnmappedEvent,
        Unused::IdentifyWithoutAnonymousId,
        Unused::UnknownType,
        Unused::NonNumericUserId,
        Unused::NoActor,
        Unused::NoItem,
        Unused::Metadata,
        Unused::Time,
        Unused::TooLarge,
        Unused::AlreadyIdentified,
        Unused::UnknownItem,
        Unused::NotAnObject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unused::UnmappedType => "unmapped_type",
            Unused::UnmappedEvent => "unmapped_event",
            Unused::IdentifyWithoutAnonymousId => "identify_without_anonymous_id",
            Unused::UnknownType => "unknown_type",
            Unused::NonNumericUserId => "non_numeric_user_id",
            Unused::NoActor => "no_actor",
            Unused::NoItem => "no_item",
            Unused::Metadata => "metadata",
            Unused::Time => "time",
            Unused::TooLarge => "too_large",
            Unused::AlreadyIdentified => "already_identified",
            Unused::UnknownItem => "unknown_item",
            Unused::NotAnObject => "not_an_object",
        }
    }
}

/// What a message becomes.
pub enum Outcome {
    /// Events to accept (an order, one a product), and the products of it that were unused.
    Events(Vec<Event>, Vec<Unused>),
    Identify(Identity),
    Unused(Unused),
}

/// What every message of a request shares: the settings, the key its ids are derived from, when
/// the request arrived, the batch's `sentAt` and `context`.
pub struct Request<'a> {
    pub config: &'a SegmentConfig,
    pub rules: &'a EventRules,
    pub write_key: &'a str,
    pub received_at: DateTime<Utc>,
    pub sent_at: Option<&'a Value>,
    pub context: Option<&'a Context<'a>>,
}

/// The namespace of the event ids derived from messages (a UUIDv4 made for this service):
/// `uuidv5(NAMESPACE, "<write key>:<messageId>[:<product index>]")`.
const NAMESPACE: Uuid = Uuid::from_u128(0x5b3e_6f0e_8a4d_4c1b_9e27_1d0f_3c8a_72e5);

impl Request<'_> {
    /// The message as our events or identification.
    pub fn translate(&self, kind: Kind, message: &Message) -> Outcome {
        match self.try_translate(kind, message) {
            Ok(outcome) => outcome,
            Err(unused) => Outcome::Unused(unused),
        }
    }

    fn try_translate(&self, kind: Kind, message: &Message) -> Result<Outcome, Unused> {
        match kind {
            Kind::Page | Kind::Screen | Kind::Group => Err(Unused::UnmappedType),
            Kind::Identify => {
                let user = self.user(message)?.ok_or(Unused::NoActor)?;
                let visitor = match present(message.anonymous_id.as_ref()) {
                    Some(id) => visitor(id)?,
                    None => return Err(Unused::IdentifyWithoutAnonymousId),
                };
                Ok(Outcome::Identify(identity(visitor, user, self.received_at)))
            }
            Kind::Alias => {
                let user = self.user(message)?.ok_or(Unused::NoActor)?;
                let visitor =
                    visitor(present(message.previous_id.as_ref()).ok_or(Unused::NoActor)?)?;
                Ok(Outcome::Identify(identity(visitor, user, self.received_at)))
            }
            Kind::Track => self.track(message),
        }
    }

    /// `userId`, if the message has one: the shop's numeric id, written as digits or as a JSON
    /// integer.
    fn user(&self, message: &Message) -> Result<Option<UserId>, Unused> {
        let Some(id) = present(message.user_id.as_ref()) else {
            return Ok(None);
        };
        let id = match id {
            Value::String(text) => text.parse::<UserId>().ok(),
            number => UserId::from_json(Some(number)).ok(),
        };
        id.map(Some).ok_or(Unused::NonNumericUserId)
    }

    fn track(&self, message: &Message) -> Result<Outcome, Unused> {
        let name = match &message.event {
            Some(Value::String(name)) => name.as_str(),
            _ => return Err(Unused::UnmappedEvent),
        };
        let (event_type, spec_order) = match name {
            "Product Viewed" | "Viewed Product" => (EventType::View, false),
            "Product Clicked" | "Clicked Product" => (EventType::Click, false),
            "Product Added" | "Added Product" => (EventType::AddToCart, false),
            "Product Reviewed" => (EventType::Rate, false),
            "Order Completed" | "Completed Order" => (EventType::Purchase, true),
            custom => match self.config.events.get(custom) {
                Some(event_type) => (*event_type, false),
                None => return Err(Unused::UnmappedEvent),
            },
        };
        let actor = match (self.user(message)?, present(message.anonymous_id.as_ref())) {
            (Some(user), _) => Actor::User(user),
            (None, Some(id)) => Actor::Visitor(visitor(id)?),
            (None, None) => return Err(Unused::NoActor),
        };
        let properties = match &message.properties {
            None => &Properties::default(),
            Some(Item::Object(properties)) => properties,
            Some(Item::Other(_)) => return Err(Unused::NotAnObject),
        };
        let context = match &message.context {
            None => self.context,
            Some(Item::Object(context)) => Some(context),
            Some(Item::Other(_)) => return Err(Unused::NotAnObject),
        };
        if properties.rest.overflowed {
            return Err(Unused::TooLarge);
        }
        let time = self.time(message)?;
        let template = Template {
            actor,
            received_at: self.received_at,
            event_type,
            time,
            message_id: message_id(message),
            write_key: self.write_key,
            context,
            rules: self.rules,
        };
        // An order: the Spec's, or a purchase of the shop's own name that lists its products.
        let order =
            spec_order || (event_type == EventType::Purchase && properties.products.is_some());
        // A rating is kept in the metadata whatever the event; a review's as a number when it
        // is one (the Spec writes it as a string).
        let rating: Vec<(&str, Box<RawValue>)> = properties
            .rating
            .map(|value| {
                let number = (event_type == EventType::Rate)
                    .then(|| number_of(value))
                    .flatten();
                ("rating", number.unwrap_or_else(|| value.to_owned()))
            })
            .into_iter()
            .collect();
        if !order {
            let asin = self.item(properties.product_id.as_ref(), properties.sku.as_ref())?;
            let event = template.event(asin, None, &[&properties.rest.kept], &rating)?;
            return Ok(Outcome::Events(vec![event], Vec::new()));
        }
        // One purchase a product, its metadata the order's properties and the product's own.
        let products = match &properties.products {
            Some(crate::event::Elements::Items(products)) => products,
            Some(crate::event::Elements::TooMany) => return Err(Unused::TooLarge),
            _ => return Err(Unused::NoItem),
        };
        let (mut events, mut unused) = (Vec::new(), Vec::new());
        for (index, product) in products.iter().enumerate() {
            let made = match product {
                Item::Object(product) if product.rest.overflowed => Err(Unused::TooLarge),
                Item::Object(Product {
                    product_id,
                    sku,
                    rest,
                }) => self
                    .item(product_id.as_ref(), sku.as_ref())
                    .and_then(|asin| {
                        template.event(
                            asin,
                            Some(index),
                            &[&properties.rest.kept, &rest.kept],
                            &rating,
                        )
                    }),
                Item::Other(_) => Err(Unused::NotAnObject),
            };
            match made {
                Ok(event) => events.push(event),
                Err(reason) => unused.push(reason),
            }
        }
        if events.is_empty() {
            return Err(unused.first().copied().unwrap_or(Unused::NoItem));
        }
        Ok(Outcome::Events(events, unused))
    }

    /// The item: `product_id` or `sku` (the one `--segment-item-id` names wins when both are
    /// there), a number taken as its digits.
    fn item(&self, product_id: Option<&Value>, sku: Option<&Value>) -> Result<Asin, Unused> {
        let (first, second) = match self.config.item_id {
            ItemId::ProductId => (product_id, sku),
            ItemId::Sku => (sku, product_id),
        };
        let id = present(first).or(present(second)).ok_or(Unused::NoItem)?;
        let text = match id {
            Value::String(text) => text.clone(),
            Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
            _ => return Err(Unused::NoItem),
        };
        Asin::new(text).map_err(|_| Unused::NoItem)
    }

    /// When it happened, and when it was sent: `originalTimestamp` with the message's (or the
    /// batch's) `sentAt`, so that the client's clock error is removed (Segment's own rule);
    /// else `timestamp`, taken as it is.
    fn time(&self, message: &Message) -> Result<DateTime<Utc>, Unused> {
        let time =
            |field, value: Option<&Value>| optional_time(field, value).map_err(|_| Unused::Time);
        let original = time("originalTimestamp", message.original_timestamp.as_ref())?;
        let (timestamp, sent_at) = match original {
            Some(original) => {
                let sent_at = match present(message.sent_at.as_ref()) {
                    Some(sent_at) => time("sentAt", Some(sent_at))?,
                    None => time("sentAt", self.sent_at)?,
                };
                (Some(original), sent_at)
            }
            None => (time("timestamp", message.timestamp.as_ref())?, None),
        };
        Arrival::at(self.received_at)
            .event_time(timestamp, sent_at, self.rules.max_age)
            .map_err(|_| Unused::Time)
    }
}

/// `uuidv5(NAMESPACE, "<write key>:<messageId>[:<index>]")`, hashed in place (RFC 9562's
/// UUIDv5: SHA-1 over the namespace's bytes and the name; the `sha1` crate uses the CPU's SHA
/// instructions where it has them).
fn derived_id(write_key: &str, message_id: &str, index: Option<usize>) -> Uuid {
    use sha1::Digest as _;
    let mut hash = sha1::Sha1::new();
    hash.update(NAMESPACE.as_bytes());
    hash.update(write_key.as_bytes());
    hash.update(b":");
    hash.update(message_id.as_bytes());
    if let Some(index) = index {
        hash.update(b":");
        hash.update(itoa::Buffer::new().format(index).as_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// What a message's events share.
struct Template<'a> {
    actor: Actor,
    received_at: DateTime<Utc>,
    event_type: EventType,
    time: DateTime<Utc>,
    message_id: Option<String>,
    write_key: &'a str,
    context: Option<&'a Context<'a>>,
    rules: &'a EventRules,
}

impl Template<'_> {
    /// The event of `asin`: the `index`th product of an order, or the message's only one.
    fn event(
        &self,
        asin: Asin,
        index: Option<usize>,
        entries: &[&Vec<Entry>],
        extra: &[(&str, Box<RawValue>)],
    ) -> Result<Event, Unused> {
        let metadata = self.metadata(entries, extra)?;
        let event_id = match &self.message_id {
            Some(id) => derived_id(self.write_key, id, index),
            // No messageId, no retry to recognise: an id of its own.
            None => Uuid::now_v7(),
        };
        Ok(Event {
            event_id,
            actor: self.actor.clone(),
            asin,
            event_type: self.event_type,
            metadata,
            received_at: self.received_at,
            ts: Some(self.time),
            client_event_id: self.message_id.is_some(),
        })
    }

    /// The metadata: the context's `page` and `campaign`, the entries as written, the extra
    /// ones; checked against the limits, never cut. Written in that order, so that where a name
    /// comes twice (a property `page` beside the context's, an order's property beside its
    /// product's), PostgreSQL's `jsonb`, which keeps the last, keeps the later one.
    fn metadata(
        &self,
        entries: &[&Vec<Entry>],
        extra: &[(&str, Box<RawValue>)],
    ) -> Result<Option<Metadata>, Unused> {
        let context: Vec<(&str, &RawValue)> = self
            .context
            .into_iter()
            .flat_map(|c| [("page", c.page), ("campaign", c.campaign)])
            .filter_map(|(key, raw)| raw.map(|raw| (key, raw)))
            .collect();
        let all =
            Joined(
                context
                    .iter()
                    .copied()
                    .chain(entries.iter().flat_map(|entries| {
                        entries.iter().map(|(key, raw)| (key.as_ref(), &**raw))
                    }))
                    .chain(extra.iter().map(|(key, raw)| (*key, &**raw))),
            );
        if all.0.clone().next().is_none() {
            return Ok(None);
        }
        // Written, not parsed again: the keys are escaped as they are written, and each value is
        // JSON already.
        let raw = serde_json::value::to_raw_value(&all).map_err(|_| Unused::Metadata)?;
        Metadata::from_raw(Some(raw), &self.rules.metadata)
            .map_err(|_: InvalidEvent| Unused::Metadata)
    }
}

/// Entries written as one JSON object, in their order (a name that comes twice is written
/// twice).
struct Joined<I>(I);

impl<'a, I: Iterator<Item = (&'a str, &'a RawValue)> + Clone> serde::Serialize for Joined<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.clone() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The number a string holds, exactly as written: `"5"` is 5, `"4.5"` 4.5; `None` for a string
/// that holds none, or for a value that is no string (kept as written).
fn number_of(value: &RawValue) -> Option<Box<RawValue>> {
    let inner: String = serde_json::from_str(value.get()).ok()?;
    let inner = inner.trim();
    serde_json::from_str::<serde_json::Number>(inner).ok()?;
    RawValue::from_string(inner.to_owned()).ok()
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null() && *v != &Value::String(String::new()))
}

fn visitor(id: &Value) -> Result<AnonymousId, Unused> {
    match id {
        Value::String(text) => text.parse().map_err(|_| Unused::NoActor),
        _ => Err(Unused::NoActor),
    }
}

fn message_id(message: &Message) -> Option<String> {
    match present(message.message_id.as_ref())? {
        Value::String(id) => Some(id.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn identity(anonymous_id: AnonymousId, user_id: UserId, at: DateTime<Utc>) -> Identity {
    Identity {
        anonymous_id,
        user_id,
        identified_at: at,
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    #[test]
    fn derived_ids_are_the_uuidv5_of_the_key_and_the_message_id() {
        let v5 = |name: &str| Uuid::new_v5(&super::NAMESPACE, name.as_bytes());
        assert_eq!(
            super::derived_id("key", "ajs-next-1", None),
            v5("key:ajs-next-1")
        );
        assert_eq!(super::derived_id("key", "m", Some(12)), v5("key:m:12"));
        assert_eq!(super::derived_id("", "m", Some(0)), v5(":m:0"));
    }

    #[test]
    fn entries_are_joined_into_one_object_with_their_keys_escaped_and_their_values_as_written() {
        let values: Vec<Box<serde_json::value::RawValue>> = ["1.50", r#"{"a":[1]}"#, r#""é""#, "2"]
            .into_iter()
            .map(|text| serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
            .collect();
        let keys = ["plain", "with \"quotes\" and \\", "tab\there", "plain"];
        let entries: Vec<(&str, &serde_json::value::RawValue)> = keys
            .iter()
            .copied()
            .zip(values.iter().map(|v| &**v))
            .collect();
        let joined =
            serde_json::value::to_raw_value(&super::Joined(entries.iter().copied())).unwrap();
        assert_eq!(
            joined.get(),
            r#"{"plain":1.50,"with \"quotes\" and \\":{"a":[1]},"tab\there":"é","plain":2}"#
        );
    }
}
