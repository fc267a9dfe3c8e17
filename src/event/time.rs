//! When an event happened: the client's `timestamp`, corrected by its `sent_at`, clamped and
//! bounded against the time the service received it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::InvalidEvent;

/// How far ahead of the service's clock an event's time may be before it is taken as wrong and
/// replaced by the time of receipt: enough for clocks that disagree by a few seconds.
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(10);

/// The default of `--max-event-age`: events that happened longer ago are refused.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{Event, EventRules, InvalidEvent};

    fn field_of(value: serde_json::Value) -> (&'static str, &'static str) {
        let error: InvalidEvent =
            Event::from_value(value, &EventRules::default(), Arrival::now()).unwrap_err();
        (error.code, error.field)
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
            json!({"user_id": 1, "asin": "A", "event_type": "view", "sent_at": "2020-01-01T00:00:00Z"}),
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
}
