//! The Redis context as a plain model: one actor's five keys as values, and what
//! [`RECORD_SCRIPT`](super::RECORD_SCRIPT) does to them, step by step in the script's own order;
//! and what [`ContextStore::load`](super::ContextStore::load) reads back. Time is an argument
//! (`now_ms`): the script's time argument and Redis's clock alike, so that a history can be
//! replayed in event time (`event-ingest evaluate`).
//!
//! This is the executable description of the keys in docs/ARCHITECTURE.md:
//! `tests/api/context_model.rs` drives random sequences of events through the real script and
//! through this model and compares the two.

use std::collections::HashMap;

use chrono::SecondsFormat;

use super::{ContextConfig, PURCHASED_CAP, UserContext};
use crate::event::{Actor, Event, EventType};

/// Event ids remembered per actor (the script's trim).
pub const EVENT_IDS_KEPT: usize = super::record::EVENT_IDS_CAP;

/// A key's value and when it expires (ms since the epoch; alive while `now <= expires_at`, as
/// Redis has it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expiring<T> {
    value: T,
    expires_at: i64,
}

/// A sorted set's members in Redis's order, ascending: (score, member).
type SortedSet<M> = Vec<(i64, M)>;

/// One actor's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorKeys {
    /// `recent_items`: newest first.
    recent_items: Option<Expiring<Vec<String>>>,
    /// `recent_categories`: category → count.
    recent_categories: Option<Expiring<HashMap<String, i64>>>,
    /// `last_active`: RFC 3339 text.
    last_active: Option<Expiring<String>>,
    /// `event_ids`: (score, member) in Redis's order, ascending.
    event_ids: Option<Expiring<SortedSet<Vec<u8>>>>,
    /// `purchased`: (score, asin) in Redis's order, ascending.
    purchased: Option<Expiring<SortedSet<String>>>,
}

/// What one event brings the script.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub event: &'a Event,
    /// The item's category, if the catalogue knows it.
    pub category: Option<&'a str>,
}

/// The rules of the context, from the service's configuration.
#[derive(Debug, Clone)]
pub struct Model {
    config: ContextConfig,
}

impl Model {
    pub fn new(config: ContextConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &ContextConfig {
        &self.config
    }

    fn ttl_ms(&self) -> i64 {
        self.config.ttl.as_secs().max(1) as i64 * 1000
    }

    /// Applies one event at `now_ms`, as the script does; false if its client id was seen
    /// already (then nothing changes).
    pub fn record(&self, keys: &mut ActorKeys, recorded: Recorded, now_ms: i64) -> bool {
        keys.expire(now_ms);
        let event = recorded.event;
        let ttl = self.ttl_ms();
        if event.client_event_id {
            let id = event.event_id.as_bytes().to_vec();
            let ids = keys.event_ids.get_or_insert_with(|| Expiring {
                value: Vec::new(),
                expires_at: now_ms + ttl,
            });
            if ids.value.iter().any(|(_, member)| *member == id) {
                return false;
            }
            insert_sorted(&mut ids.value, (now_ms, id));
            trim_to(&mut ids.value, EVENT_IDS_KEPT);
            ids.expires_at = now_ms + ttl;
        }
        let asin = event.asin.as_str();
        let items = keys.recent_items.get_or_insert_with(|| Expiring {
            value: Vec::new(),
            expires_at: 0,
        });
        if self.config.distinct_recent_items {
            items.value.retain(|item| item != asin);
        }
        items.value.insert(0, asin.to_owned());
        items.value.truncate(self.config.recent_items_cap.max(1));
        items.expires_at = now_ms + ttl;

        let weight = self.config.category_weights.of(event.event_type);
        if let Some(category) = recorded.category.filter(|c| !c.is_empty())
            && weight != 0
        {
            let categories = keys.recent_categories.get_or_insert_with(|| Expiring {
                value: HashMap::new(),
                expires_at: 0,
            });
            *categories.value.entry(category.to_owned()).or_insert(0) += weight as i64;
            categories.expires_at = now_ms + ttl;
        }

        let text = event.ts().to_rfc3339_opts(SecondsFormat::Millis, true);
        let last = match keys.last_active.take() {
            Some(previous) if previous.value > text => previous.value,
            _ => text,
        };
        keys.last_active = Some(Expiring {
            value: last,
            expires_at: now_ms + ttl,
        });

        if event.event_type == EventType::Purchase {
            let purchase_ttl = match event.actor {
                Actor::User(_) => self.config.purchased_ttl.as_secs().max(1) as i64 * 1000,
                Actor::Visitor(_) => ttl,
            };
            let bought_since = self.config.bought_since_ms_at(now_ms);
            let purchased = keys.purchased.get_or_insert_with(|| Expiring {
                value: Vec::new(),
                expires_at: 0,
            });
            purchased.value.retain(|(_, item)| item != asin);
            insert_sorted(&mut purchased.value, (now_ms, asin.to_owned()));
            purchased.value.retain(|(score, _)| *score > bought_since);
            trim_to(&mut purchased.value, PURCHASED_CAP);
            purchased.expires_at = now_ms + purchase_ttl;
            if purchased.value.is_empty() {
                keys.purchased = None;
            }
        }
        true
    }

    /// What a load at `now_ms` reads: the keys alive then, purchases since `--purchased-ttl`,
    /// the latest first.
    pub fn load(&self, keys: &ActorKeys, now_ms: i64) -> UserContext {
        let alive = |expires_at: i64| now_ms <= expires_at;
        let bought_since = self.config.bought_since_ms_at(now_ms);
        UserContext {
            recent_items: keys
                .recent_items
                .as_ref()
                .filter(|k| alive(k.expires_at))
                .map_or_else(Vec::new, |k| k.value.clone()),
            recent_categories: keys
                .recent_categories
                .as_ref()
                .filter(|k| alive(k.expires_at))
                .map_or_else(HashMap::new, |k| k.value.clone()),
            last_active: keys
                .last_active
                .as_ref()
                .filter(|k| alive(k.expires_at))
                .map(|k| k.value.clone()),
            purchased: keys
                .purchased
                .as_ref()
                .filter(|k| alive(k.expires_at))
                .map_or_else(Vec::new, |k| {
                    k.value
                        .iter()
                        .rev()
                        .filter(|(score, _)| *score >= bought_since)
                        .map(|(_, asin)| asin.clone())
                        .collect()
                }),
        }
    }

    /// When each key expires, for a comparison with Redis's `PTTL`: recent items, categories,
    /// last active, event ids, purchased (None for a key that does not exist at `now_ms`).
    pub fn expiries(&self, keys: &ActorKeys, now_ms: i64) -> [Option<i64>; 5] {
        let alive = |expires_at: i64| (now_ms <= expires_at).then_some(expires_at);
        [
            keys.recent_items.as_ref().and_then(|k| alive(k.expires_at)),
            keys.recent_categories
                .as_ref()
                .and_then(|k| alive(k.expires_at)),
            keys.last_active.as_ref().and_then(|k| alive(k.expires_at)),
            keys.event_ids.as_ref().and_then(|k| alive(k.expires_at)),
            keys.purchased.as_ref().and_then(|k| alive(k.expires_at)),
        ]
    }
}

impl ActorKeys {
    /// Drops the keys that expired by `now_ms`.
    fn expire(&mut self, now_ms: i64) {
        fn drop_expired<T>(key: &mut Option<Expiring<T>>, now_ms: i64) {
            if key.as_ref().is_some_and(|k| now_ms > k.expires_at) {
                *key = None;
            }
        }
        drop_expired(&mut self.recent_items, now_ms);
        drop_expired(&mut self.recent_categories, now_ms);
        drop_expired(&mut self.last_active, now_ms);
        drop_expired(&mut self.event_ids, now_ms);
        drop_expired(&mut self.purchased, now_ms);
    }
}

/// Inserts into a sorted set's members in Redis's order (score, then member bytes).
fn insert_sorted<M: Ord>(set: &mut Vec<(i64, M)>, member: (i64, M)) {
    let at = set.partition_point(|existing| *existing < member);
    set.insert(at, member);
}

/// `ZREMRANGEBYRANK key 0 -(keep + 1)`: keeps the `keep` highest.
fn trim_to<M>(set: &mut Vec<(i64, M)>, keep: usize) {
    if set.len() > keep {
        set.drain(..set.len() - keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Arrival, EventRules};
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn event(asin: &str, event_type: &str, ts: &str) -> Event {
        let body = json!({"user_id": 1, "asin": asin, "event_type": event_type, "timestamp": ts});
        let received = DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .with_timezone(&Utc);
        Event::from_value(body, &EventRules::default(), Arrival::at(received)).unwrap()
    }

    fn at(ts: &str) -> i64 {
        DateTime::parse_from_rfc3339(ts).unwrap().timestamp_millis()
    }

    #[test]
    fn three_events_by_hand() {
        let model = Model::new(ContextConfig {
            recent_items_cap: 2,
            ..ContextConfig::default()
        });
        let mut keys = ActorKeys::default();
        for (asin, kind, ts) in [
            ("A", "view", "2026-12-07T10:00:00Z"),
            ("B", "purchase", "2026-12-07T10:01:00Z"),
            ("C", "click", "2026-12-07T10:02:00Z"),
        ] {
            let event = event(asin, kind, ts);
            let category = Some(if asin == "C" { "Toys" } else { "Books" });
            assert!(model.record(
                &mut keys,
                Recorded {
                    event: &event,
                    category
                },
                at(ts)
            ));
        }
        let context = model.load(&keys, at("2026-12-07T10:05:00Z"));
        assert_eq!(
            context.recent_items,
            ["C", "B"],
            "capped at two, newest first"
        );
        assert_eq!(context.recent_categories["Books"], 2);
        assert_eq!(context.recent_categories["Toys"], 1);
        assert_eq!(
            context.last_active.as_deref(),
            Some("2026-12-07T10:02:00.000Z")
        );
        assert_eq!(context.purchased, ["B"]);
        // Fifteen minutes after the last event everything but the purchase has gone.
        let later = model.load(&keys, at("2026-12-07T10:17:01Z"));
        assert!(later.recent_items.is_empty() && later.last_active.is_none());
        assert_eq!(later.purchased, ["B"]);
    }
}
