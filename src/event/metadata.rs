//! The client's free-form metadata and its bounds.
//!
//! Kept as the text the client sent, made compact (whitespace between tokens dropped), never
//! parsed into numbers and written again: `123456789012345678901234567890` and `1e-400` are
//! stored exactly as sent (PostgreSQL's `jsonb` keeps numbers in arbitrary precision). What
//! PostgreSQL could not store is refused here, so that no accepted event fails its write: the
//! `\u0000` escape, a lone UTF-16 surrogate escape, a number too long to write out.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::InvalidEvent;

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

/// Most digits a metadata number may have written out in full (`1e999` has 1,000): PostgreSQL
/// stores and prints numbers written out, so `1e131071` would print as 128 KiB.
pub const MAX_NUMBER_DIGITS: u64 = 1000;

/// The client's metadata: a JSON object within [`MetadataLimits`], kept as compact JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Box<RawValue>);

impl Metadata {
    /// The metadata of a request, from the text of its `metadata` field as the client wrote it
    /// (valid JSON, without whitespace around it); `null` is none.
    pub(crate) fn from_raw(
        raw: Option<Box<RawValue>>,
        limits: &MetadataLimits,
    ) -> Result<Option<Self>, InvalidEvent> {
        let Some(raw) = raw else { return Ok(None) };
        let text = raw.get();
        let kind = match text.as_bytes().first() {
            Some(b'{') => None,
            Some(b'n') => return Ok(None),
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            _ => Some("a number"),
        };
        if let Some(kind) = kind {
            return Err(invalid(format!(
                "metadata must be a JSON object, got {kind}"
            )));
        }
        let compact = compact(text, limits)?;
        let len = compact.as_ref().map_or(text.len(), String::len);
        if len > limits.max_bytes {
            return Err(invalid(format!(
                "metadata must be at most {} bytes as JSON",
                limits.max_bytes
            )));
        }
        let compact = match compact {
            None => raw,
            Some(text) => {
                RawValue::from_string(text).expect("valid JSON stays valid without its whitespace")
            }
        };
        Ok(Some(Self(compact)))
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

fn invalid(message: impl Into<String>) -> InvalidEvent {
    InvalidEvent::invalid("metadata", message)
}

/// Checks valid JSON text against the limits and PostgreSQL's rules, and drops its whitespace:
/// `None` when it had none (as most clients send it), else the compact copy. The text was
/// validated by the JSON parser, which does not look inside escapes or at a number's size.
fn compact(text: &str, limits: &MetadataLimits) -> Result<Option<String>, InvalidEvent> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let (mut depth, mut keys, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(invalid(format!(
                        "metadata must be nested at most {} levels deep",
                        limits.max_depth
                    )));
                }
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                i += 1;
            }
            // Every key of every object is followed by one colon outside a string.
            b':' => {
                keys += 1;
                if keys > limits.max_keys {
                    return Err(invalid(format!(
                        "metadata must have at most {} keys in all",
                        limits.max_keys
                    )));
                }
                i += 1;
            }
            b'"' => i = string_end(bytes, i)?,
            b'-' | b'0'..=b'9' => i = number_end(bytes, i)?,
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.get_or_insert_with(|| bytes[..i].to_vec());
                i += 1;
                continue;
            }
            // `,` and the letters of true, false and null.
            _ => i += 1,
        }
        if let Some(copy) = out.as_mut() {
            copy.extend_from_slice(&bytes[start..i]);
        }
    }
    Ok(out.map(|copy| String::from_utf8(copy).expect("whole tokens of UTF-8 text are UTF-8")))
}

/// The end of the string that opens at `bytes[start]`, refusing the escapes PostgreSQL's
/// `jsonb` refuses: `\u0000`, and a UTF-16 surrogate that is not half of a pair.
fn string_end(bytes: &[u8], start: usize) -> Result<usize, InvalidEvent> {
    let mut i = start + 1;
    let mut awaiting_low = false;
    loop {
        match bytes[i] {
            b'"' if !awaiting_low => return Ok(i + 1),
            b'\\' if bytes[i + 1] == b'u' => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 6]).unwrap_or("");
                let unit = u16::from_str_radix(hex, 16).unwrap_or(0);
                match unit {
                    0 => {
                        return Err(invalid(
                            "metadata must not contain the NUL character (\\u0000)",
                        ));
                    }
                    0xD800..=0xDBFF if !awaiting_low => awaiting_low = true,
                    0xDC00..=0xDFFF if awaiting_low => awaiting_low = false,
                    _ if awaiting_low => return Err(lone_surrogate()),
                    0xDC00..=0xDFFF => return Err(lone_surrogate()),
                    _ => {}
                }
                i += 6;
            }
            _ if awaiting_low => return Err(lone_surrogate()),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

fn lone_surrogate() -> InvalidEvent {
    invalid("metadata must not contain half of a UTF-16 surrogate pair (\\ud800 alone, say)")
}

/// The end of the number that starts at `bytes[start]`, refusing one of more than
/// [`MAX_NUMBER_DIGITS`] digits written out in full.
fn number_end(bytes: &[u8], start: usize) -> Result<usize, InvalidEvent> {
    let mut i = start;
    let mut digits: u64 = 0;
    let mut exponent: u64 = 0;
    let mut in_exponent = false;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'0'..=b'9' if in_exponent => {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(u64::from(byte - b'0'));
            }
            b'0'..=b'9' => digits += 1,
            b'e' | b'E' => in_exponent = true,
            b'-' | b'+' | b'.' => {}
            _ => break,
        }
        i += 1;
    }
    if digits.saturating_add(exponent) > MAX_NUMBER_DIGITS {
        return Err(invalid(format!(
            "a metadata number must have at most {MAX_NUMBER_DIGITS} digits written out in full"
        )));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The metadata of an event whose body holds `metadata` as this text.
    fn metadata_of(text: &str, limits: &MetadataLimits) -> Result<Option<String>, InvalidEvent> {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(text).unwrap();
        Metadata::from_raw(Some(raw), limits).map(|m| m.map(|m| m.as_json().to_owned()))
    }

    #[test]
    fn metadata_limits_hold() {
        let limits = MetadataLimits {
            max_bytes: 64,
            max_depth: 2,
            max_keys: 3,
        };
        let check = |v: Value| metadata_of(&v.to_string(), &limits);
        assert!(check(json!({"a": {"b": 1}})).is_ok());
        assert!(check(json!({"a": {"b": {"c": 1}}})).is_err());
        assert!(check(json!({"a": [[1]]})).is_err());
        assert!(check(json!({"a": 1, "b": 2, "c": 3, "d": 4})).is_err());
        assert!(check(json!({"a": "x".repeat(64)})).is_err());
        assert_eq!(check(Value::Null), Ok(None));
        // The size is the compact size: whitespace does not count against it.
        let spaced = format!("{{ \"a\" :\n  \"{}\" }}", "x".repeat(50));
        assert_eq!(
            metadata_of(&spaced, &limits).unwrap().unwrap(),
            format!("{{\"a\":\"{}\"}}", "x".repeat(50))
        );
    }

    #[test]
    fn metadata_numbers_are_kept_exactly_as_sent() {
        let limits = MetadataLimits::default();
        for text in [
            r#"{"big":123456789012345678901234567890}"#,
            r#"{"tiny":1e-400}"#,
            r#"{"price":19.90,"neg":-0,"e":1E+5}"#,
            r#"{"deep":{"list":[1.50,{"x":2.000}]}}"#,
            r#"{"escaped":"a\u00e9\ud83d\ude00 \"b\"","key with space":1}"#,
        ] {
            assert_eq!(metadata_of(text, &limits).unwrap().as_deref(), Some(text));
        }
        assert_eq!(
            metadata_of("{ \"a\" : [ 1 , 2 ] , \"s\" : \" x y \" }", &limits)
                .unwrap()
                .as_deref(),
            Some(r#"{"a":[1,2],"s":" x y "}"#)
        );
    }

    #[test]
    fn metadata_postgresql_cannot_store_is_refused() {
        let limits = MetadataLimits::default();
        for text in [
            r#"{"a":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800x"}"#,
            r#"{"a":1e1000}"#,
            r#"{"a":1e-99999999999999999999}"#,
        ] {
            let error = metadata_of(text, &limits).unwrap_err();
            assert_eq!(error.field, "metadata", "{text}");
        }
        assert!(metadata_of(r#"{"a":1e999}"#, &limits).is_ok());
        assert!(
            metadata_of(r#"{"a":"\\u0000"}"#, &limits).is_ok(),
            "an escaped backslash"
        );
        for (text, kind) in [
            ("[1]", "an array"),
            ("\"x\"", "a string"),
            ("true", "a boolean"),
            ("1", "a number"),
        ] {
            let error = metadata_of(text, &limits).unwrap_err();
            assert!(error.message.ends_with(kind), "{text}: {}", error.message);
        }
    }
}
