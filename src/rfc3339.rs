//! RFC 3339 text of UTC times, written and read without `core::fmt` or chrono's general parser:
//! the journal's records carry two times per event, and each Redis update one; chrono's
//! formatting through `fmt` cost about 2,500 instructions a time, and its parsing about 1,900
//! (`bench/run instructions`). The text written is exactly chrono's, and a text read is the time
//! chrono reads; the tests check both against chrono.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::de;

/// Longest text written here: `2026-11-29T13:35:47.123456789Z`.
const MAX_LEN: usize = 30;

/// Appends the time as chrono's `to_rfc3339_opts(format, true)` writes it, for `AutoSi` (what
/// chrono's `Serialize` uses: 0, 3, 6 or 9 fractional digits, as few as are exact) and `Millis`.
pub fn append(time: DateTime<Utc>, format: SecondsFormat, out: &mut Vec<u8>) {
    let mut buffer = [0u8; MAX_LEN];
    match write(time, format, &mut buffer) {
        Some(len) => out.extend_from_slice(&buffer[..len]),
        None => out.extend_from_slice(time.to_rfc3339_opts(format, true).as_bytes()),
    }
}

/// Serializes a time as chrono's `Serialize` does (`AutoSi`), for `#[serde(serialize_with)]`.
pub fn serialize<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; MAX_LEN];
    match write(*time, SecondsFormat::AutoSi, &mut buffer) {
        Some(len) => serializer.serialize_str(std::str::from_utf8(&buffer[..len]).expect("ASCII")),
        None => serde::Serialize::serialize(time, serializer),
    }
}

/// [`serialize`] for an optional time (absent ones are skipped by the caller).
pub fn serialize_option<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serialize(time, serializer),
        None => serializer.serialize_none(),
    }
}

/// Writes the text into `out` and returns its length; `None` for the formats not handled here
/// (`Secs`, `Micros`, `Nanos`) and for years outside 0 to 9999, which chrono writes otherwise.
fn write(time: DateTime<Utc>, format: SecondsFormat, out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let seconds = time.timestamp();
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let of_day = seconds.rem_euclid(86_400) as u32;
    let (hour, minute) = (of_day / 3600, of_day / 60 % 60);
    // A leap second shows as second 60 with the nanoseconds above 1e9.
    let nanos = time.timestamp_subsec_nanos();
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (of_day % 60 + 1, nanos - 1_000_000_000)
    } else {
        (of_day % 60, nanos)
    };
    let digits = match format {
        SecondsFormat::Millis => 3,
        SecondsFormat::AutoSi if nanos == 0 => 0,
        SecondsFormat::AutoSi if nanos % 1_000_000 == 0 => 3,
        SecondsFormat::AutoSi if nanos % 1_000 == 0 => 6,
        SecondsFormat::AutoSi => 9,
        _ => return None,
    };
    fn put(out: &mut [u8], at: usize, value: u32, width: usize) {
        let mut value = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    put(out, 0, year as u32, 4);
    put(out, 5, month, 2);
    put(out, 8, day, 2);
    put(out, 11, hour, 2);
    put(out, 14, minute, 2);
    put(out, 17, second, 2);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    let mut len = 19;
    if digits > 0 {
        out[len] = b'.';
        put(out, len + 1, nanos / 10u32.pow(9 - digits as u32), digits);
        len += 1 + digits;
    }
    out[len] = b'Z';
    Some(len + 1)
}

/// The proleptic Gregorian date (year, month, day) of a day counted from 1970-01-01: Howard
/// Hinnant's `civil_from_days`, in place of chrono's calendar reads (a few hundred instructions
/// each).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 is March
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Reads an RFC 3339 time as chrono's `FromStr` for `DateTime<Utc>` does (any offset, converted
/// to UTC). The shape written here (`2026-11-29T13:35:47.123456Z`) is read directly; any other
/// goes to chrono.
fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_utc(text.as_bytes()) {
        Some(time) => Ok(time),
        None => text.parse(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with a valid date and time, leap seconds excepted; `None` for
/// anything else, which may still be RFC 3339.
fn parse_utc(text: &[u8]) -> Option<DateTime<Utc>> {
    fn number(digits: &[u8]) -> Option<u32> {
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    }
    let (&b'Z', text) = text.split_last()? else {
        return None;
    };
    if text.len() < 19 || [text[4], text[7], text[10], text[13], text[16]] != *b"--T::" {
        return None;
    }
    let nanos = match &text[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            number(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(
        number(&text[0..4])? as i32,
        number(&text[5..7])?,
        number(&text[8..10])?,
    )?;
    // Second 60 (a leap second) is not a valid time here: chrono reads it.
    let time = date.and_hms_nano_opt(
        number(&text[11..13])?,
        number(&text[14..16])?,
        number(&text[17..19])?,
        nanos,
    )?;
    Some(time.and_utc())
}

/// Deserializes a time as chrono's `Deserialize` does, through [`parse`], for
/// `#[serde(deserialize_with)]`.
pub fn deserialize<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(TimeVisitor)
}

/// [`deserialize`] for an optional time: `null` is `None`.
pub fn deserialize_option<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    deserializer.deserialize_option(OptionVisitor)
}

struct TimeVisitor;

impl de::Visitor<'_> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 date-time")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }
}

struct OptionVisitor;

impl<'de> de::Visitor<'de> for OptionVisitor {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 date-time or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn format(time: DateTime<Utc>, format: SecondsFormat) -> String {
        let mut out = Vec::new();
        append(time, format, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn chrono_serde(time: DateTime<Utc>) -> String {
        serde_json::to_string(&time).unwrap()
    }

    fn ours_serde(time: DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(&time, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_text_is_chronos_at_the_edges() {
        for text in [
            "2026-11-29T13:35:47Z",
            "2026-11-29T13:35:47.100Z",
            "2026-11-29T13:35:47.000100Z",
            "2026-11-29T13:35:47.000000001Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2016-12-31T23:59:60.5Z",
        ] {
            let time = DateTime::parse_from_rfc3339(text).unwrap().to_utc();
            assert_eq!(ours_serde(time), chrono_serde(time), "{text}");
            assert_eq!(
                format(time, SecondsFormat::Millis),
                time.to_rfc3339_opts(SecondsFormat::Millis, true),
                "{text}"
            );
        }
        // Beyond four-digit years, chrono's own text.
        let far = DateTime::parse_from_rfc3339("+10000-01-01T00:00:00Z");
        if let Ok(far) = far {
            assert_eq!(ours_serde(far.to_utc()), chrono_serde(far.to_utc()));
        }
    }

    fn chrono_parse(text: &str) -> Option<DateTime<Utc>> {
        text.parse().ok()
    }

    #[test]
    fn a_text_reads_as_chrono_reads_it() {
        for text in [
            "2026-11-29T13:35:47Z",
            "2026-11-29T13:35:47.1Z",
            "2026-11-29T13:35:47.123456789Z",
            "2024-02-29T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            // Left to chrono: a leap second, offsets, lower case, a space, ten digits.
            "2016-12-31T23:59:60.5Z",
            "2026-11-29T13:35:47+07:00",
            "2026-11-29t13:35:47z",
            "2026-11-29 13:35:47Z",
            "2026-11-29T13:35:47.1234567891Z",
            // Refused by both.
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T13:35:47.Z",
            "2026-11-29T13:35:4xZ",
            "2026-11-29T13:35Z",
            "",
        ] {
            assert_eq!(parse(text).ok(), chrono_parse(text), "{text}");
        }
        let json = r#"{"at": "2026-11-29T13:35:47.5Z", "none": null}"#;
        #[derive(serde::Deserialize)]
        struct Times {
            #[serde(deserialize_with = "deserialize")]
            at: DateTime<Utc>,
            #[serde(default, deserialize_with = "deserialize_option")]
            none: Option<DateTime<Utc>>,
            #[serde(default, deserialize_with = "deserialize_option")]
            absent: Option<DateTime<Utc>>,
        }
        let times: Times = serde_json::from_str(json).unwrap();
        assert_eq!(Some(times.at), chrono_parse("2026-11-29T13:35:47.5Z"));
        assert_eq!((times.none, times.absent), (None, None));
        let wrong = serde_json::from_str::<Times>(r#"{"at": "yesterday"}"#);
        assert!(wrong.is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn the_text_is_chronos_for_any_time(
            seconds in -70_000_000_000_i64..260_000_000_000,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        ) {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap();
            prop_assert_eq!(ours_serde(time), chrono_serde(time));
            prop_assert_eq!(
                format(time, SecondsFormat::Millis),
                time.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }

        #[test]
        fn what_is_written_reads_back(
            seconds in -62_000_000_000_i64..253_000_000_000,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), 0u32..1_000_000_000],
        ) {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap();
            let text = ours_serde(time);
            prop_assert_eq!(parse_utc(text.trim_matches('"').as_bytes()), Some(time));
        }

        #[test]
        fn any_text_of_the_shape_reads_as_chrono_reads_it(
            text in "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,10})?Z",
        ) {
            prop_assert_eq!(parse(&text).ok(), chrono_parse(&text));
        }
    }
}
