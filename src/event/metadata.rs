//! The client's free-form metadata and its bounds.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{InvalidEvent, json_type};

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

/// The client's metadata: a JSON object within [`MetadataLimits`], kept as compact JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Box<RawValue>);

impl Metadata {
    pub(super) fn from_json(
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
        // Written straight into a raw value: serde_json's own output needs no second parse.
        let raw = serde_json::value::to_raw_value(object).expect("a JSON map always serializes");
        if raw.get().len() > limits.max_bytes {
            return Err(InvalidEvent::invalid(
                "metadata",
                format!(
                    "metadata must be at most {} bytes as JSON",
                    limits.max_bytes
                ),
            ));
        }
        Ok(Some(Self(raw)))
    }

    /// The metadata as compact JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// Metadata as a record holds it, checked when the event was accepted: `None` unless it is
    /// a JSON object with no whitespace around it (as written).
    pub(crate) fn from_recorded(json: String) -> Option<Self> {
        let len = json.len();
        let raw = RawValue::from_string(json).ok()?;
        (raw.get().len() == len && raw.get().starts_with('{')).then_some(Self(raw))
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
