//! One batch into PostgreSQL: the catalogue's category and brand merged into each event's
//! metadata, the `users` and `items` rows the foreign keys need, and the idempotent insert.
//!
//! Enrichment happens here, from the catalogue cache the request path has already filled, rather
//! than with a join in SQL: on the drain benchmark the join and the "create if missing" statements
//! cost PostgreSQL more than the insert itself (bench/README.md). Users known to exist are
//! remembered, and only items the catalogue does not know are created, so in the steady state a
//! batch is one statement.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::partitions::Partitions;
use crate::catalogue::{Catalogue, ItemInfo, Lookup};
use crate::event::{AnonymousId, Asin, Event, Identity, UserId};

/// How long the writer waits for the catalogue: far longer than a request may, since a batch
/// that cannot be enriched cannot be written.
const CATALOGUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the catalogue did not answer, so the events cannot be enriched yet")]
    CatalogueUnavailable,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl BatchError {
    /// Whether PostgreSQL refused the rows themselves, so that writing them again cannot help:
    /// SQLSTATE classes 22 (data exception) and 23 (integrity), except a foreign key violation,
    /// which means a catalogue row vanished, and a row without a partition, which means a
    /// partition was dropped meanwhile; the next, thorough, attempt mends both.
    pub fn is_data_error(&self) -> bool {
        match self {
            BatchError::Sql(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                (code.starts_with("22") || code.starts_with("23"))
                    && code != "23503"
                    && !(code == "23514" && db.message().starts_with("no partition"))
            }),
            _ => false,
        }
    }
}

/// What a batch's write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows stored (the rest of the batch was stored before: duplicates).
    pub stored: u64,
    /// Events past `--retention`, not stored.
    pub expired: u64,
}

pub struct BatchWriter {
    pool: PgPool,
    catalogue: Catalogue,
    partitions: Partitions,
    known_users: moka::sync::Cache<i64, ()>,
}

impl BatchWriter {
    pub fn new(
        pool: PgPool,
        catalogue: Catalogue,
        partitions: Partitions,
        known_users: u64,
    ) -> Self {
        Self {
            pool,
            catalogue,
            partitions,
            known_users: moka::sync::Cache::new(known_users),
        }
    }

    /// Stores `events` in one transaction, each once. `thorough` (for a retry) creates every
    /// user and item the batch names instead of trusting what is remembered, and reads the
    /// partitions again.
    pub async fn write(&self, events: &[Event], thorough: bool) -> Result<Written, BatchError> {
        if thorough {
            // A partition may have been dropped or made meanwhile.
            self.partitions.refresh().await?;
        }
        let now = chrono::Utc::now();
        // An event twice in one batch (a client's retry beside the first, both still in the
        // hand-off) is written once: its two times may lie in two partitions.
        let mut seen = HashSet::with_capacity(events.len());
        let mut events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.event_id)).collect();
        let before = events.len();
        events.retain(|e| !self.partitions.expired(e.ts().naive_utc(), now));
        let expired = (before - events.len()) as u64;
        if expired > 0 {
            metrics::counter!("writer_expired_total").increment(expired);
            static WARNING: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
            if let Some(suppressed) = WARNING.allow() {
                tracing::warn!(
                    expired,
                    suppressed,
                    "events older than --retention reached the writer and were not stored"
                );
            }
        }
        self.partitions
            .cover(events.iter().map(|e| e.ts().naive_utc()))
            .await?;
        let guarded: Vec<&Event> = events
            .iter()
            .copied()
            .filter(|e| self.partitions.needs_guard(e))
            .collect();

        let asins: Vec<Asin> = events.iter().map(|e| e.asin.clone()).collect();
        let lookups = self
            .catalogue
            .lookup_many_within(&asins, CATALOGUE_TIMEOUT)
            .await;
        if lookups.values().any(|l| *l == Lookup::Unavailable) {
            return Err(BatchError::CatalogueUnavailable);
        }

        let mut users: Vec<i64> = events
            .iter()
            .filter_map(|e| e.actor.user())
            .map(UserId::get)
            .collect();
        users.sort_unstable();
        users.dedup();
        if !thorough {
            users.retain(|id| !self.known_users.contains_key(id));
        }
        let mut new_items: Vec<&str> = lookups
            .iter()
            .filter(|(_, lookup)| thorough || **lookup == Lookup::Unknown)
            .map(|(asin, _)| asin.as_str())
            .collect();
        new_items.sort_unstable();

        let mut tx = self.pool.begin().await?;
        if !guarded.is_empty() {
            let fresh = guard(&mut tx, &guarded).await?;
            let stored_before: HashSet<Uuid> = guarded
                .iter()
                .map(|e| e.event_id)
                .filter(|id| !fresh.contains(id))
                .collect();
            events.retain(|e| !stored_before.contains(&e.event_id));
            metrics::counter!("writer_guarded_total").increment(guarded.len() as u64);
        }
        let rows = Rows::new(&events, &lookups);
        if !rows.visitors.is_empty() {
            lock_visitors(&mut tx, &rows.visitors).await?;
        }
        if !users.is_empty() {
            insert_users(&mut tx, &users).await?;
        }
        if !new_items.is_empty() {
            sqlx::query(
                "INSERT INTO items (asin) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(&new_items)
            .execute(&mut *tx)
            .await?;
        }
        let insert = if rows.visitors.is_empty() {
            sqlx::query(INSERT_EVENTS)
        } else {
            sqlx::query(INSERT_VISITOR_EVENTS).bind(&rows.anonymous_ids)
        };
        let stored = insert
            .bind(&rows.ids)
            .bind(&rows.users)
            .bind(&rows.asins)
            .bind(&rows.types)
            .bind(&rows.times)
            .bind(&rows.metadata)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.remember(users);
        Ok(Written { stored, expired })
    }

    /// Stores identifications (each visitor keeps the first user they were identified as) and
    /// attributes the visitors' stored events to their users; returns how many rows it
    /// attributed. Idempotent: only rows without a user are updated.
    pub async fn attribute(&self, identities: &[Identity]) -> Result<u64, BatchError> {
        let visitors: Vec<&str> = identities.iter().map(|i| i.anonymous_id.as_str()).collect();
        let users: Vec<i64> = identities.iter().map(|i| i.user_id.get()).collect();
        let times: Vec<NaiveDateTime> = identities
            .iter()
            .map(|i| i.identified_at.naive_utc())
            .collect();
        let mut new_users = users.clone();
        new_users.sort_unstable();
        new_users.dedup();
        let mut tx = self.pool.begin().await?;
        lock_visitors(&mut tx, &visitors).await?;
        insert_users(&mut tx, &new_users).await?;
        sqlx::query(
            "INSERT INTO visitor_identities (anonymous_id, user_id, identified_at) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::timestamp[]) ON CONFLICT (anonymous_id) DO NOTHING",
        )
        .bind(&visitors)
        .bind(&users)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        let attributed = sqlx::query(
            "UPDATE interaction_logs l SET user_id = i.user_id FROM visitor_identities i \
             WHERE i.anonymous_id = ANY($1) AND l.anonymous_id = i.anonymous_id AND l.user_id IS NULL",
        )
        .bind(&visitors)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        self.remember(new_users);
        Ok(attributed)
    }

    /// Remembers users whose rows a committed transaction created.
    fn remember(&self, users: Vec<i64>) {
        for user in users {
            self.known_users.insert(user, ());
        }
    }
}

/// Creates the `users` rows the foreign key needs; `users` sorted, so that two transactions take
/// their locks in one order.
async fn insert_users(tx: &mut sqlx::PgConnection, users: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING")
        .bind(users)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records the ids of `guarded` events in `interaction_log_ids`; returns those it had not held:
/// the others were stored before, perhaps in another partition. A second transaction recording
/// the same id waits for the first to end, so that exactly one of them stores the event.
async fn guard(
    tx: &mut sqlx::PgConnection,
    guarded: &[&Event],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    // In the ids' order, so that two transactions wait for each other's ids in one order.
    let mut pairs: Vec<(Uuid, NaiveDateTime)> = guarded
        .iter()
        .map(|e| (e.event_id, e.ts().naive_utc()))
        .collect();
    pairs.sort_unstable();
    let (ids, times): (Vec<Uuid>, Vec<NaiveDateTime>) = pairs.into_iter().unzip();
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO interaction_log_ids (event_id, ts) SELECT * FROM UNNEST($1::uuid[], $2::timestamp[]) \
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&times)
    .fetch_all(tx)
    .await?;
    Ok(fresh.into_iter().collect())
}

/// The insert of a batch. `ON CONFLICT DO NOTHING` without a target: each partition's own
/// unique indexes (its `event_id`, its primary key) decide, as PostgreSQL cannot declare a
/// unique `event_id` on the partitioned table.
const INSERT_EVENTS: &str = r"
INSERT INTO interaction_logs (event_id, user_id, asin, event_type, ts, metadata)
SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::event_type_enum[], $5::timestamp[], $6::jsonb[])
ON CONFLICT DO NOTHING";

/// The insert of a batch that holds visitors' events: a visitor already identified (their
/// identification stored by an earlier batch) has the event attributed to the user at once.
const INSERT_VISITOR_EVENTS: &str = r"
INSERT INTO interaction_logs (event_id, user_id, asin, event_type, ts, metadata, anonymous_id)
SELECT e.event_id, COALESCE(e.user_id, i.user_id), e.asin, e.event_type, e.ts, e.metadata, e.anonymous_id
FROM UNNEST($2::uuid[], $3::bigint[], $4::text[], $5::event_type_enum[], $6::timestamp[], $7::jsonb[], $1::text[])
    AS e (event_id, user_id, asin, event_type, ts, metadata, anonymous_id)
LEFT JOIN visitor_identities i ON i.anonymous_id = e.anonymous_id
ON CONFLICT DO NOTHING";

/// Takes, until the transaction ends, a lock per visitor: the storing of a visitor's events and
/// their identification take turns, so that whichever commits second sees the other's rows
/// (otherwise an event inserted while the identification's update runs could stay unattributed).
/// Taken in one order (by the ids' hash) by everyone, so that two batches cannot deadlock.
async fn lock_visitors(tx: &mut sqlx::PgConnection, visitors: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock($2, k) FROM (SELECT DISTINCT hashtext(a) AS k FROM unnest($1::text[]) a ORDER BY k) s",
    )
    .bind(visitors)
    .bind(VISITOR_LOCKS)
    .execute(tx)
    .await?;
    Ok(())
}

/// The first key of the visitors' advisory locks: the rest of the database's advisory locks
/// cannot clash with them.
const VISITOR_LOCKS: i32 = 0x5649_5349; // "VISI"

/// The batch as columns, for `UNNEST`.
struct Rows<'a> {
    ids: Vec<Uuid>,
    users: Vec<Option<i64>>,
    /// Per event, the visitor's id, if a visitor's.
    anonymous_ids: Vec<Option<&'a str>>,
    /// The distinct visitors of the batch.
    visitors: Vec<&'a str>,
    asins: Vec<&'a str>,
    types: Vec<&'static str>,
    times: Vec<NaiveDateTime>,
    metadata: Vec<Option<JsonbText>>,
}

impl<'a> Rows<'a> {
    fn new(events: &[&'a Event], lookups: &HashMap<Asin, Lookup>) -> Self {
        let n = events.len();
        let mut rows = Rows {
            ids: Vec::with_capacity(n),
            users: Vec::with_capacity(n),
            anonymous_ids: Vec::with_capacity(n),
            visitors: Vec::new(),
            asins: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for &event in events {
            rows.ids.push(event.event_id);
            rows.users.push(event.actor.user().map(UserId::get));
            let visitor = event.actor.visitor().map(AnonymousId::as_str);
            rows.anonymous_ids.push(visitor);
            rows.visitors.extend(visitor);
            rows.asins.push(event.asin.as_str());
            rows.types.push(event.event_type.as_str());
            rows.times.push(event.ts().naive_utc());
            let info = match lookups.get(&event.asin) {
                Some(Lookup::Known(info)) => Some(info.as_ref()),
                _ => None,
            };
            rows.metadata.push(enrich(event, info).map(JsonbText));
        }
        rows.visitors.sort_unstable();
        rows.visitors.dedup();
        rows
    }
}

/// JSON text sent as `jsonb` in its binary form (a version byte, then the text): PostgreSQL
/// parses it once, where a `text` parameter cast to `jsonb` would be converted through text I/O
/// first.
struct JsonbText(String);

impl sqlx::Type<Postgres> for JsonbText {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("jsonb")
    }
}

impl PgHasArrayType for JsonbText {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("_jsonb")
    }
}

impl sqlx::Encode<'_, Postgres> for JsonbText {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // The version of jsonb's binary format.
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

/// The stored metadata as JSON text: the client's, plus the catalogue's category and brand where
/// known. None when there is nothing to store.
///
/// The catalogue's fields are appended to the client's object as text, not merged into a parsed
/// map: where the client sent a field of the same name, the text holds the name twice, and
/// PostgreSQL's `jsonb` keeps the last, so the catalogue's wins.
pub fn enrich(event: &Event, info: Option<&ItemInfo>) -> Option<String> {
    // Compact JSON as the API writes it; a record from elsewhere (the stream) may have
    // whitespace, and anything but an object counts as none, as a parsed map would.
    let client = event.metadata.as_ref().map_or("{}", |m| m.as_json().trim());
    let client = match client.strip_suffix('}') {
        Some(open) if client.starts_with('{') => open.trim_end(),
        _ => "{",
    };
    let mut fields = [("category", None), ("brand", None)];
    if let Some(info) = info {
        fields = [
            ("category", info.category.as_deref()),
            ("brand", info.brand.as_deref()),
        ];
    }
    // The client's object without its closing brace.
    let mut empty = client[1..].trim_start().is_empty();
    let mut text = client.as_bytes().to_vec();
    for (name, value) in fields {
        let Some(value) = value else { continue };
        if !empty {
            text.push(b',');
        }
        empty = false;
        serde_json::to_writer(&mut text, name).expect("a string serializes");
        text.push(b':');
        serde_json::to_writer(&mut text, value).expect("a string serializes");
    }
    if empty {
        return None;
    }
    text.push(b'}');
    Some(String::from_utf8(text).expect("JSON text is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Arrival, EventRules};
    use serde_json::{Value, json};

    /// The stored metadata as PostgreSQL's `jsonb` reads it (the last of a repeated name).
    fn enriched(event: &Event, info: Option<&ItemInfo>) -> Option<Value> {
        enrich(event, info).map(|text| serde_json::from_str(&text).unwrap())
    }

    fn event(metadata: Value) -> Event {
        let mut body = json!({"user_id": 1, "asin": "B0", "event_type": "view"});
        if !metadata.is_null() {
            body["metadata"] = metadata;
        }
        Event::from_value(body, &EventRules::default(), Arrival::now()).unwrap()
    }

    fn info(category: Option<&str>, brand: Option<&str>) -> ItemInfo {
        ItemInfo {
            category: category.map(str::to_owned),
            brand: brand.map(str::to_owned),
        }
    }

    #[test]
    fn the_catalogue_is_merged_into_the_clients_metadata() {
        let enriched = enriched(
            &event(json!({"page": "pdp", "category": "mine"})),
            Some(&info(Some("Books"), Some("Penguin"))),
        );
        assert_eq!(
            enriched,
            Some(json!({"page": "pdp", "category": "Books", "brand": "Penguin"}))
        );
    }

    #[test]
    fn what_is_unknown_is_left_out() {
        assert_eq!(enriched(&event(Value::Null), None), None);
        assert_eq!(enriched(&event(Value::Null), Some(&info(None, None))), None);
        assert_eq!(
            enriched(&event(Value::Null), Some(&info(Some("Books"), None))),
            Some(json!({"category": "Books"}))
        );
        assert_eq!(
            enriched(&event(json!({"a": 1})), None),
            Some(json!({"a": 1}))
        );
        assert_eq!(enriched(&event(json!({})), Some(&info(None, None))), None);
    }

    #[test]
    fn metadata_with_whitespace_from_the_stream_is_still_an_object() {
        let record = br#"{"event_id":"019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b10","user_id":7,"asin":"B0","event_type":"view","metadata": { "a" : 1 } ,"received_at":"2026-11-29T07:12:01Z"}"#;
        let empty = br#"{"event_id":"019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b10","user_id":7,"asin":"B0","event_type":"view","metadata":{ },"received_at":"2026-11-29T07:12:01Z"}"#;
        let event = |bytes: &[u8]| match crate::handoff::json::decode(bytes) {
            Ok(crate::handoff::Record::Event(event)) => event,
            _ => panic!("not an event"),
        };
        let books = info(Some("Books"), None);
        assert_eq!(
            enriched(&event(record), Some(&books)),
            Some(json!({"a": 1, "category": "Books"}))
        );
        assert_eq!(
            enriched(&event(empty), Some(&books)),
            Some(json!({"category": "Books"}))
        );
        assert_eq!(enriched(&event(empty), None), None);
    }

    #[test]
    fn the_catalogues_text_is_escaped() {
        let quoted = info(Some("Toys \"& Games\"\n"), Some("Ü"));
        assert_eq!(
            enriched(&event(json!({})), Some(&quoted)),
            Some(json!({"category": "Toys \"& Games\"\n", "brand": "Ü"}))
        );
    }
}
