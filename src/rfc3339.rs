//! RFC 3339 text of UTC times, written without `core::fmt`: the journal's records carry two times
//! per event, and each Redis update one, and chrono's formatting through `fmt` cost about 2,500
//! instructions a time (`bench/run instructions`). The text is exactly chrono's; the tests check
//! it against chrono for any time.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Longest text written here: `2026-11-29T13:35:47.123456789Z`.
const MAX_LEN: usize = 30;

/// The time as chrono's `to_rfc3339_opts(format, true)` writes it, for `AutoSi` (what chrono's
/// `Serialize` uses: 0, 3, 6 or 9 fractional digits, as few as are exact) and `Millis`.
pub fn format(time: DateTime<Utc>, format: SecondsFormat) -> String {
    let mut buffer = [0u8; MAX_LEN];
    match write(time, format, &mut buffer) {
        Some(len) => std::str::from_utf8(&buffer[..len])
            .expect("ASCII digits and separators")
            .to_owned(),
        None => time.to_rfc3339_opts(format, true),
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
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    // A leap second shows as second 60 with the nanoseconds above 1e9.
    let nanos = time.nanosecond();
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (time.second() + 1, nanos - 1_000_000_000)
    } else {
        (time.second(), nanos)
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
    put(out, 5, time.month(), 2);
    put(out, 8, time.day(), 2);
    put(out, 11, time.hour(), 2);
    put(out, 14, time.minute(), 2);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    }
}
