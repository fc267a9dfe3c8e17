//! The event as the API accepts it: parsed once from the request body, valid by construction.
//!
//! Every rule of docs/ARCHITECTURE.md ("The event") lives here. A value of [`Event`] cannot hold
//! an invalid user id, ASIN, event type or metadata, so no later stage checks them again.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest ASIN accepted, in characters.
pub const MAX_ASIN_CHARS: usize = 64;

/// How far ahead of the service's clock an event's time may be before it is taken as wrong and
/// replaced by the time of receipt: enough for clocks that disagree by a few seconds.
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(10);

/// The default of `--max-event-age`: events that happened longer ago are refused.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A rule an incoming event broke: which field, and what the rule is. The message is meant for the
/// client and names both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEvent {
    /// `missing_field` or `invalid_field`.
    pub code: &'static str,
    /// The field at fault, as it is named in the request (`metadata` for anything inside it).
    pub field: &'static str,
    pub message: String,
}

impl InvalidEvent {
    pub(crate) fn missing(field: &'static str) -> Self {
        Self {
            code: "missing_field",
            field,
            message: format!("{field} is required"),
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_field",
            field,
            message: message.into(),
        }
    }
}

/// A user id: a positive integer that fits PostgreSQL's BIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UserId(i64);

impl UserId {
    pub fn new(id: i64) -> Result<Self, InvalidEvent> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(Self::rule())
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    fn rule() -> InvalidEvent {
        InvalidEvent::invalid(
            "user_id",
            format!("user_id must be an integer from 1 to {}", i64::MAX),
        )
    }

    pub(crate) fn from_json(value: Option<&Value>) -> Result<Self, InvalidEvent> {
        match value {
            None | Some(Value::Null) => Err(InvalidEvent::missing("user_id")),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().and_then(integral))
                .ok_or_else(Self::rule)
                .and_then(Self::new),
            Some(other) => Err(InvalidEvent::invalid(
                "user_id",
                format!("user_id must be an integer, got {}", json_type(other)),
            )),
        }
    }
}

/// `123.0` is an integer too, as JSON Schema counts them; beyond BIGINT it is not.
fn integral(number: f64) -> Option<i64> {
    (number.fract() == 0.0 && number >= 1.0 && number < i64::MAX as f64).then_some(number as i64)
}

impl std::str::FromStr for UserId {
    type Err = InvalidEvent;
    /// As in a URL path: `42`, or an integral number such as `42.0`, as JSON would allow.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<i64>()
            .ok()
            .or_else(|| text.parse().ok().and_then(integral))
            .ok_or_else(Self::rule)
            .and_then(Self::new)
    }
}

impl TryFrom<i64> for UserId {
    type Error = InvalidEvent;
    fn try_from(id: i64) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<UserId> for i64 {
    fn from(id: UserId) -> i64 {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An item id (Amazon Standard Identification Number or any catalogue key): 1 to 64 characters,
/// none of them whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Asin(String);

impl Asin {
    pub fn new(asin: String) -> Result<Self, InvalidEvent> {
        if asin.is_empty() {
            return Err(InvalidEvent::invalid("asin", "asin must not be empty"));
        }
        if asin.chars().count() > MAX_ASIN_CHARS {
            return Err(InvalidEvent::invalid(
                "asin",
                format!("asin must be at most {MAX_ASIN_CHARS} characters"),
            ));
        }
        // U+FEFF (a byte-order mark) is invisible too, and JSON Schema's `\s` counts it.
        if asin
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
        {
            return Err(InvalidEvent::invalid(
                "asin",
                "asin must not contain whitespace or control characters",
            ));
        }
        Ok(Self(asin))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_json(value: Option<&Value>) -> Result<Self, InvalidEvent> {
        match value {
            None | Some(Value::Null) => Err(InvalidEvent::missing("asin")),
            Some(Value::String(s)) => Self::new(s.clone()),
            Some(other) => Err(InvalidEvent::invalid(
                "asin",
                format!("asin must be a string, got {}", json_type(other)),
            )),
        }
    }
}

impl TryFrom<String> for Asin {
    type Error = InvalidEvent;
    fn try_from(asin: String) -> Result<Self, Self::Error> {
        Self::new(asin)
    }
}

impl From<Asin> for String {
    fn from(asin: Asin) -> String {
        asin.0
    }
}

impl fmt::Display for Asin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The interactions the service records; the names match PostgreSQL's `event_type_enum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    View,
    Click,
    AddToCart,
    Purchase,
    Rate,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::View,
        EventType::Click,
        EventType::AddToCart,
        EventType::Purchase,
        EventType::Rate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
            EventType::Rate => "rate",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn from_json(value: Option<&Value>) -> Result<Self, InvalidEvent> {
        let rule = || {
            let names: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
            format!("event_type must be one of {}", names.join(", "))
        };
        match value {
            None | Some(Value::Null) => Err(InvalidEvent::missing("event_type")),
            Some(Value::String(s)) => Self::parse(s).ok_or_else(|| {
                InvalidEvent::invalid("event_type", format!("{} (got {:?})", rule(), clip(s)))
            }),
            Some(other) => Err(InvalidEvent::invalid(
                "event_type",
                format!("{}, got {}", rule(), json_type(other)),
            )),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on the client's free-form metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// Size of the metadata object as compact JSON, in bytes.
    pub max_bytes: usize,
    /// Nesting depth: `{"a": 1}` has depth 1, `{"a": {"b": 1}}` depth 2.
    pub max_depth: usize,
    /// Keys counted over all nested objects.
    pub max_keys: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024,
            max_depth: 8,
            max_keys: 128,
        }
    }
}

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

/// When a request arrived, and when its client says it sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The service's clock when the request was read.
    pub received_at: DateTime<Utc>,
    /// The batch envelope's `sent_at`; an event's own `sent_at` takes precedence.
    pub sent_at: Option<DateTime<Utc>>,
}

impl Arrival {
    /// A request arriving now, without `sent_at`.
    pub fn now() -> Self {
        Self::at(Utc::now())
    }

    pub fn at(received_at: DateTime<Utc>) -> Self {
        Self {
            received_at,
            sent_at: None,
        }
    }

    /// The stored time of an event that says it happened at `timestamp`: shifted by the client's
    /// clock error (`received_at - sent_at`) when `sent_at` is known, clamped to `received_at`
    /// if it still lies in the future beyond [`FUTURE_TOLERANCE`], refused if older than
    /// `max_age`. Without `timestamp`, the time of receipt.
    pub fn event_time(
        &self,
        timestamp: Option<DateTime<Utc>>,
        sent_at: Option<DateTime<Utc>>,
        max_age: Duration,
    ) -> Result<DateTime<Utc>, InvalidEvent> {
        let Some(timestamp) = timestamp else {
            return Ok(self.received_at);
        };
        let skew = sent_at.map_or(TimeDelta::zero(), |sent| self.received_at - sent);
        let tolerance = TimeDelta::from_std(FUTURE_TOLERANCE).expect("a few seconds");
        let oldest = TimeDelta::from_std(max_age)
            .ok()
            .and_then(|age| self.received_at.checked_sub_signed(age));
        let time = match timestamp.checked_add_signed(skew) {
            Some(time) => time,
            // Beyond the calendar's ends: a clock gone far wrong one way or the other.
            None if skew > TimeDelta::zero() => DateTime::<Utc>::MAX_UTC,
            None => DateTime::<Utc>::MIN_UTC,
        };
        if time > self.received_at + tolerance {
            metrics::counter!("event_time_clamped_total").increment(1);
            return Ok(self.received_at);
        }
        if oldest.is_some_and(|oldest| time < oldest) {
            let corrected = if sent_at.is_some() {
                " once corrected by sent_at"
            } else {
                ""
            };
            return Err(InvalidEvent::invalid(
                "timestamp",
                format!(
                    "timestamp is {} old{corrected}, beyond the limit of {} (--max-event-age)",
                    age_text(self.received_at - time),
                    humantime::format_duration(max_age)
                ),
            ));
        }
        Ok(time)
    }
}

/// A past span, to the second, for messages.
fn age_text(age: TimeDelta) -> String {
    let seconds = age.num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// An RFC 3339 date-time (`2026-11-29T13:35:47.123Z`, any offset), as `timestamp` and `sent_at`
/// carry.
fn parse_time(field: &'static str, value: &Value) -> Result<DateTime<Utc>, InvalidEvent> {
    let rule = || {
        InvalidEvent::invalid(
            field,
            format!("{field} must be an RFC 3339 date-time such as 2026-11-29T13:35:47.123Z"),
        )
    };
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| rule()),
        _ => Err(rule()),
    }
}

/// An optional time field: absent and `null` are the same.
pub(crate) fn optional_time(
    field: &'static str,
    value: Option<&Value>,
) -> Result<Option<DateTime<Utc>>, InvalidEvent> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse_time(field, value).map(Some),
    }
}

/// The client's metadata: a JSON object within [`MetadataLimits`], kept as compact JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Box<RawValue>);

impl Metadata {
    fn from_json(
        value: Option<&Value>,
        limits: &MetadataLimits,
    ) -> Result<Option<Self>, InvalidEvent> {
        let object = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(object)) => object,
            Some(other) => {
                return Err(InvalidEvent::invalid(
                    "metadata",
                    format!("metadata must be a JSON object, got {}", json_type(other)),
                ));
            }
        };
        let mut keys = 0;
        check_object(object, 1, limits, &mut keys)?;
        let text = serde_json::to_string(object).expect("a JSON map always serializes");
        if text.len() > limits.max_bytes {
            return Err(InvalidEvent::invalid(
                "metadata",
                format!(
                    "metadata must be at most {} bytes as JSON",
                    limits.max_bytes
                ),
            ));
        }
        let raw = RawValue::from_string(text).expect("serde_json output is valid JSON");
        Ok(Some(Self(raw)))
    }

    /// The metadata as compact JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

fn check_object(
    object: &Map<String, Value>,
    depth: usize,
    limits: &MetadataLimits,
    keys: &mut usize,
) -> Result<(), InvalidEvent> {
    if depth > limits.max_depth {
        return Err(InvalidEvent::invalid(
            "metadata",
            format!(
                "metadata must be nested at most {} levels deep",
                limits.max_depth
            ),
        ));
    }
    *keys += object.len();
    if *keys > limits.max_keys {
        return Err(InvalidEvent::invalid(
            "metadata",
            format!("metadata must have at most {} keys in all", limits.max_keys),
        ));
    }
    for (key, value) in object {
        check_text(key)?;
        check_value(value, depth, limits, keys)?;
    }
    Ok(())
}

fn check_value(
    value: &Value,
    depth: usize,
    limits: &MetadataLimits,
    keys: &mut usize,
) -> Result<(), InvalidEvent> {
    match value {
        Value::Object(inner) => check_object(inner, depth + 1, limits, keys),
        Value::Array(items) => {
            if depth + 1 > limits.max_depth {
                return Err(InvalidEvent::invalid(
                    "metadata",
                    format!(
                        "metadata must be nested at most {} levels deep",
                        limits.max_depth
                    ),
                ));
            }
            items
                .iter()
                .try_for_each(|item| check_value(item, depth + 1, limits, keys))
        }
        Value::String(text) => check_text(text),
        _ => Ok(()),
    }
}

/// PostgreSQL's JSONB cannot hold the NUL character: refuse it here rather than fail the write.
fn check_text(text: &str) -> Result<(), InvalidEvent> {
    if text.contains('\0') {
        Err(InvalidEvent::invalid(
            "metadata",
            "metadata must not contain the NUL character (\\u0000)",
        ))
    } else {
        Ok(())
    }
}

/// An accepted interaction, as it travels through the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The idempotency key: the client's, or one the service assigned (UUIDv7, time-ordered).
    pub event_id: Uuid,
    pub user_id: UserId,
    pub asin: Asin,
    pub event_type: EventType,
    pub metadata: Option<Metadata>,
    /// When the service received the event.
    pub received_at: DateTime<Utc>,
    /// When the event happened, settled once at acceptance by [`Arrival::event_time`] and carried
    /// with the event, so that a replay stores the same time. Records journaled before this
    /// field existed lack it: their time is `received_at`. Read it with [`Event::ts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<DateTime<Utc>>,
    /// Whether the client chose the event id (and so may send the same event again).
    #[serde(skip)]
    pub client_event_id: bool,
}

impl Event {
    /// Parses one event from its JSON text.
    pub fn from_json(
        body: &[u8],
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, ParseError> {
        let object: Map<String, Value> = serde_json::from_slice(body).map_err(ParseError::from)?;
        Ok(Self::from_object(&object, rules, arrival)?)
    }

    /// Builds an event from an already parsed JSON value (an element of a batch).
    pub fn from_value(
        value: &Value,
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, InvalidEvent> {
        match value {
            Value::Object(object) => Self::from_object(object, rules, arrival),
            other => Err(InvalidEvent::invalid(
                "event",
                format!("an event must be a JSON object, got {}", json_type(other)),
            )),
        }
    }

    fn from_object(
        object: &Map<String, Value>,
        rules: &EventRules,
        arrival: Arrival,
    ) -> Result<Self, InvalidEvent> {
        let user_id = UserId::from_json(object.get("user_id"))?;
        let asin = Asin::from_json(object.get("asin"))?;
        let event_type = EventType::from_json(object.get("event_type"))?;
        let metadata = Metadata::from_json(object.get("metadata"), &rules.metadata)?;
        let received_at = arrival.received_at;
        let (event_id, client_event_id) = match object.get("event_id") {
            None | Some(Value::Null) => (new_event_id(received_at), false),
            Some(value) => (parse_event_id(value)?, true),
        };
        let timestamp = optional_time("timestamp", object.get("timestamp"))?;
        let sent_at = optional_time("sent_at", object.get("sent_at"))?.or(arrival.sent_at);
        let ts = arrival.event_time(timestamp, sent_at, rules.max_age)?;
        Ok(Self {
            event_id,
            user_id,
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

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Echo at most a short prefix of client input in an error message.
fn clip(text: &str) -> String {
    const MAX: usize = 32;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Event, InvalidEvent> {
        Event::from_value(&value, &EventRules::default(), Arrival::now())
    }

    fn field_of(value: Value) -> (&'static str, &'static str) {
        let error = parse(value).unwrap_err();
        (error.code, error.field)
    }

    #[test]
    fn a_well_formed_event_parses() {
        let event = parse(json!({
            "user_id": 123, "asin": "B08XXXX", "event_type": "add_to_cart",
            "metadata": {"page": "product_detail"}
        }))
        .unwrap();
        assert_eq!(event.user_id.get(), 123);
        assert_eq!(event.asin.as_str(), "B08XXXX");
        assert_eq!(event.event_type, EventType::AddToCart);
        assert_eq!(
            event.metadata.unwrap().as_json(),
            r#"{"page":"product_detail"}"#
        );
        assert!(!event.client_event_id);
        assert_eq!(event.event_id.get_version_num(), 7);
    }

    #[test]
    fn a_client_event_id_is_kept() {
        let id = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
        let event = parse(json!({"user_id": 1, "asin": "A", "event_type": "view", "event_id": id}))
            .unwrap();
        assert_eq!(event.event_id.to_string(), id);
        assert!(event.client_event_id);
    }

    #[test]
    fn each_rule_names_its_field() {
        let base = json!({"user_id": 1, "asin": "A", "event_type": "view"});
        let with = |key: &str, value: Value| {
            let mut v = base.clone();
            v[key] = value;
            v
        };
        assert_eq!(
            field_of(json!({"asin": "A", "event_type": "view"})),
            ("missing_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!(0))),
            ("invalid_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!(-5))),
            ("invalid_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!(1.5))),
            ("invalid_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!(-2.0))),
            ("invalid_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!(1e300))),
            ("invalid_field", "user_id")
        );
        assert!(
            parse(with("user_id", json!(435.0))).is_ok(),
            "an integral number is an integer"
        );
        assert_eq!(
            field_of(with("user_id", json!(u64::MAX))),
            ("invalid_field", "user_id")
        );
        assert_eq!(
            field_of(with("user_id", json!("1"))),
            ("invalid_field", "user_id")
        );
        assert_eq!(field_of(with("asin", json!(""))), ("invalid_field", "asin"));
        assert_eq!(
            field_of(with("asin", json!("a b"))),
            ("invalid_field", "asin")
        );
        assert_eq!(
            field_of(with("asin", json!("x".repeat(65)))),
            ("invalid_field", "asin")
        );
        assert_eq!(field_of(with("asin", json!(7))), ("invalid_field", "asin"));
        assert_eq!(
            field_of(with("event_type", json!("like"))),
            ("invalid_field", "event_type")
        );
        assert_eq!(
            field_of(with("event_type", json!("View"))),
            ("invalid_field", "event_type")
        );
        assert_eq!(
            field_of(with("metadata", json!([1]))),
            ("invalid_field", "metadata")
        );
        assert_eq!(
            field_of(with("metadata", json!({"a": "\u{0}"}))),
            ("invalid_field", "metadata")
        );
        assert_eq!(
            field_of(with("event_id", json!("not-a-uuid"))),
            ("invalid_field", "event_id")
        );
        assert_eq!(
            field_of(with(
                "event_id",
                json!("00000000-0000-0000-0000-000000000000")
            )),
            ("invalid_field", "event_id")
        );
    }

    #[test]
    fn asin_of_exactly_the_limit_is_accepted() {
        assert!(Asin::new("é".repeat(MAX_ASIN_CHARS)).is_ok());
    }

    #[test]
    fn metadata_limits_hold() {
        let limits = MetadataLimits {
            max_bytes: 64,
            max_depth: 2,
            max_keys: 3,
        };
        let check = |v: Value| Metadata::from_json(Some(&v), &limits);
        assert!(check(json!({"a": {"b": 1}})).is_ok());
        assert!(check(json!({"a": {"b": {"c": 1}}})).is_err());
        assert!(check(json!({"a": [[1]]})).is_err());
        assert!(check(json!({"a": 1, "b": 2, "c": 3, "d": 4})).is_err());
        assert!(check(json!({"a": "x".repeat(64)})).is_err());
        assert!(
            Metadata::from_json(Some(&Value::Null), &limits)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_a_syntax_error() {
        let limits = EventRules::default();
        assert!(matches!(
            Event::from_json(b"{", &limits, Arrival::now()),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            Event::from_json(b"[1]", &limits, Arrival::now()),
            Err(ParseError::NotAnObject)
        ));
        assert!(matches!(
            Event::from_json(b"", &limits, Arrival::now()),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn an_event_survives_its_journal_encoding() {
        let event = parse(
            json!({"user_id": 9, "asin": "B0", "event_type": "rate", "metadata": {"stars": 5}}),
        )
        .unwrap();
        let text = serde_json::to_vec(&event).unwrap();
        let back: Event = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, event);
    }

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn received(text: &str) -> Arrival {
        Arrival::at(time(text))
    }

    const WEEK: Duration = DEFAULT_MAX_EVENT_AGE;

    #[test]
    fn without_a_timestamp_the_event_time_is_the_time_of_receipt() {
        let arrival = received("2026-11-29T12:00:00Z");
        let event = Event::from_value(
            &json!({"user_id": 1, "asin": "A", "event_type": "view", "sent_at": "2020-01-01T00:00:00Z"}),
            &EventRules::default(),
            arrival,
        )
        .unwrap();
        assert_eq!(event.ts(), arrival.received_at);
    }

    #[test]
    fn a_clock_an_hour_fast_is_corrected_by_sent_at() {
        // The client's clock reads 13:00 when the true time is 12:00; the event happened five
        // minutes before it was sent.
        let arrival = received("2026-11-29T12:00:00.250Z");
        let ts = arrival
            .event_time(
                Some(time("2026-11-29T12:55:00Z")),
                Some(time("2026-11-29T13:00:00Z")),
                WEEK,
            )
            .unwrap();
        assert_eq!(ts, time("2026-11-29T11:55:00.250Z"));
        // Alone, the timestamp is taken as it is.
        let ts = arrival
            .event_time(Some(time("2026-11-29T11:00:00+01:00")), None, WEEK)
            .unwrap();
        assert_eq!(ts, time("2026-11-29T10:00:00Z"));
    }

    #[test]
    fn a_time_in_the_future_is_clamped_to_the_time_of_receipt() {
        let arrival = received("2026-11-29T12:00:00Z");
        let within = time("2026-11-29T12:00:05Z");
        assert_eq!(arrival.event_time(Some(within), None, WEEK), Ok(within));
        for (timestamp, sent_at) in [
            ("2026-11-29T12:00:11Z", None),
            ("2027-01-01T00:00:00Z", Some("2026-11-29T12:00:00Z")),
            ("2026-11-29T11:00:00Z", Some("2026-11-29T10:00:00Z")),
        ] {
            let ts = arrival.event_time(Some(time(timestamp)), sent_at.map(time), WEEK);
            assert_eq!(ts, Ok(arrival.received_at), "{timestamp} sent {sent_at:?}");
        }
        let beyond_the_calendar = arrival.event_time(
            Some(DateTime::<Utc>::MAX_UTC),
            Some(DateTime::<Utc>::MIN_UTC),
            WEEK,
        );
        assert_eq!(beyond_the_calendar, Ok(arrival.received_at));
    }

    #[test]
    fn a_time_older_than_the_limit_is_refused_naming_timestamp() {
        let arrival = received("2026-11-29T12:00:00Z");
        let oldest = time("2026-11-22T12:00:00Z");
        assert_eq!(arrival.event_time(Some(oldest), None, WEEK), Ok(oldest));
        for (timestamp, sent_at) in [
            (time("2026-11-22T11:59:59Z"), None),
            (
                time("2026-11-29T11:00:00Z"),
                Some(time("2026-12-07T00:00:00Z")),
            ),
            (DateTime::<Utc>::MIN_UTC, Some(DateTime::<Utc>::MAX_UTC)),
            (time("2026-11-29T11:00:00Z"), Some(DateTime::<Utc>::MAX_UTC)),
        ] {
            let error = arrival
                .event_time(Some(timestamp), sent_at, WEEK)
                .unwrap_err();
            assert_eq!((error.code, error.field), ("invalid_field", "timestamp"));
            assert!(
                error.message.contains("--max-event-age"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn time_fields_must_be_rfc_3339() {
        let base = json!({"user_id": 1, "asin": "A", "event_type": "view"});
        for field in ["timestamp", "sent_at"] {
            for bad in [json!("yesterday"), json!(1764417600), json!("2026-11-29")] {
                let mut value = base.clone();
                value[field] = bad;
                assert_eq!(field_of(value), ("invalid_field", field));
            }
        }
    }

    #[test]
    fn an_event_journaled_before_ts_existed_takes_its_time_of_receipt() {
        let old = r#"{"event_id":"7d444840-9dc0-11d1-b245-5ffdce74fad2","user_id":1,"asin":"A","event_type":"view","metadata":null,"received_at":"2026-11-29T12:00:00Z"}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert_eq!(event.ts(), time("2026-11-29T12:00:00Z"));
    }

    /// Any JSON value, nested up to a few levels.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,80}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::hash_map(".{0,12}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An RFC 3339 time anywhere in the calendar, most of them near now.
    fn any_time() -> impl Strategy<Value = Value> {
        let now = Utc::now().timestamp();
        prop_oneof![
            (now - 30 * 86_400..now + 86_400),
            (-8_000_000_000_000_i64..8_000_000_000_000),
        ]
        .prop_map(|seconds| {
            Value::from(
                DateTime::from_timestamp(seconds, 0)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        })
    }

    /// An object with the event's keys (each maybe present) holding any values: the shapes a
    /// parser meets in the wild, far more often than random bytes reach them.
    fn event_shaped() -> impl Strategy<Value = Value> {
        let field = |strategy: BoxedStrategy<Value>| prop::option::of(strategy);
        (
            field(prop_oneof![any_json(), any::<i64>().prop_map(Value::from)].boxed()),
            field(prop_oneof![any_json(), "[A-Z0-9]{0,70}".prop_map(Value::from)].boxed()),
            field(
                prop_oneof![
                    any_json(),
                    "(view|click|add_to_cart|purchase|rate|x)".prop_map(Value::from)
                ]
                .boxed(),
            ),
            field(any_json().boxed()),
            field(
                prop_oneof![
                    any_json(),
                    any::<u128>().prop_map(|u| Value::from(Uuid::from_u128(u).to_string()))
                ]
                .boxed(),
            ),
            field(prop_oneof![any_json(), any_time()].boxed()),
            field(prop_oneof![any_json(), any_time()].boxed()),
        )
            .prop_map(
                |(user_id, asin, event_type, metadata, event_id, timestamp, sent_at)| {
                    let mut object = Map::new();
                    for (key, value) in [
                        ("user_id", user_id),
                        ("asin", asin),
                        ("event_type", event_type),
                        ("metadata", metadata),
                        ("event_id", event_id),
                        ("timestamp", timestamp),
                        ("sent_at", sent_at),
                    ] {
                        if let Some(value) = value {
                            object.insert(key.to_owned(), value);
                        }
                    }
                    Value::Object(object)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_json_value_parses_or_fails_with_a_named_field(value in prop_oneof![any_json(), event_shaped()]) {
            let rules = EventRules::default();
            match Event::from_value(&value, &rules, Arrival::now()) {
                Ok(event) => {
                    // What parses is valid by construction, and survives the journal.
                    prop_assert!(event.user_id.get() > 0);
                    let text = serde_json::to_vec(&event).unwrap();
                    let back: Event = serde_json::from_slice(&text).unwrap();
                    prop_assert_eq!(back, Event { client_event_id: false, ..event });
                }
                Err(invalid) => {
                    prop_assert!(!invalid.message.is_empty());
                    prop_assert!(invalid.message.contains(invalid.field) || invalid.field == "event");
                }
            }
            let text = value.to_string();
            let _ = Event::from_json(text.as_bytes(), &rules, Arrival::now());
        }
    }

    proptest! {
        #[test]
        fn user_ids_are_accepted_exactly_when_positive(id in any::<i64>()) {
            prop_assert_eq!(UserId::new(id).is_ok(), id > 0);
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Event::from_json(&body, &EventRules::default(), Arrival::now());
        }

        #[test]
        fn asins_without_space_or_control_up_to_the_limit_are_accepted(asin in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(Asin::new(asin).is_ok());
        }
    }
}
