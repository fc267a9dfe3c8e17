//! The events to evaluate on: a CSV file, or `interaction_logs` with the catalogue's categories;
//! interned into numbers, ordered by time (ties keep the input order).

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;

use crate::event::{Actor, AnonymousId, Asin, EventType, UserId};

/// One event, its names interned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub actor: u32,
    pub item: u32,
    pub category: Option<u32>,
    pub event_type: EventType,
    pub ts: DateTime<Utc>,
}

/// The events, in time order, and the names their numbers stand for.
#[derive(Debug, Default)]
pub struct Dataset {
    pub rows: Vec<Row>,
    pub actors: Vec<Actor>,
    pub items: Vec<Asin>,
    /// Each item's category: the last the input gave it.
    pub item_category: Vec<Option<u32>>,
    pub categories: Vec<String>,
    actor_ids: HashMap<String, u32>,
    item_ids: HashMap<String, u32>,
    category_ids: HashMap<String, u32>,
}

/// Other vocabularies' event names and ours: `pv=view,cart=add_to_cart`.
#[derive(Debug, Clone, Default)]
pub struct TypeMap(pub HashMap<String, EventType>);

impl std::str::FromStr for TypeMap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, ours) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not name=event_type"))?;
            let ours = EventType::parse(ours.trim()).ok_or_else(|| {
                format!("`{ours}` is not one of view, click, add_to_cart, purchase, rate")
            })?;
            map.insert(name.trim().to_owned(), ours);
        }
        Ok(Self(map))
    }
}

impl Dataset {
    /// Adds one event; `category` empty for none.
    pub fn push(
        &mut self,
        actor: &str,
        asin: &str,
        category: &str,
        event_type: EventType,
        ts: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.push_as(actor, || parse_actor(actor), asin, category, event_type, ts)
    }

    /// [`Dataset::push`], the actor named by `key` and made by `actor` the first time.
    fn push_as(
        &mut self,
        key: &str,
        actor: impl FnOnce() -> anyhow::Result<Actor>,
        asin: &str,
        category: &str,
        event_type: EventType,
        ts: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let actor = match self.actor_ids.get(key) {
            Some(&id) => id,
            None => {
                let parsed = actor()?;
                let id = self.actors.len() as u32;
                self.actors.push(parsed);
                self.actor_ids.insert(key.to_owned(), id);
                id
            }
        };
        let item = match self.item_ids.get(asin) {
            Some(&id) => id,
            None => {
                let parsed = Asin::new(asin.to_owned())
                    .map_err(|error| anyhow::anyhow!("asin {asin:?}: {error}"))?;
                let id = self.items.len() as u32;
                self.items.push(parsed);
                self.item_category.push(None);
                self.item_ids.insert(asin.to_owned(), id);
                id
            }
        };
        let category = (!category.is_empty()).then(|| match self.category_ids.get(category) {
            Some(&id) => id,
            None => {
                let id = self.categories.len() as u32;
                self.categories.push(category.to_owned());
                self.category_ids.insert(category.to_owned(), id);
                id
            }
        });
        if category.is_some() {
            self.item_category[item as usize] = category;
        }
        self.rows.push(Row {
            actor,
            item,
            category,
            event_type,
            ts,
        });
        Ok(())
    }

    /// The number of a category, if any event has it.
    pub fn category_index(&self, name: &str) -> Option<usize> {
        self.category_ids.get(name).map(|&id| id as usize)
    }

    /// Orders the events by time; ties keep the input order.
    pub fn sort(&mut self) {
        self.rows.sort_by_key(|row| row.ts);
    }

    /// Reads a CSV file whose header names the columns `actor`, `asin`, `category`,
    /// `event_type` and `ts` (in any order, among others).
    pub fn from_csv(reader: impl Read, types: &TypeMap) -> anyhow::Result<Self> {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(reader);
        let header = csv.headers().context("the CSV file has no header")?.clone();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h.trim() == name)
                .with_context(|| format!("the CSV header names no `{name}` column (it needs actor, asin, category, event_type, ts)"))
        };
        let [actor, asin, category, kind, ts] =
            ["actor", "asin", "category", "event_type", "ts"].map(column);
        let (actor, asin, category, kind, ts) = (actor?, asin?, category?, kind?, ts?);
        let mut dataset = Dataset::default();
        let mut record = csv::StringRecord::new();
        let mut line = 1;
        while csv
            .read_record(&mut record)
            .context("reading the CSV file")?
        {
            line += 1;
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            let event_type = event_type(field(kind), types)
                .with_context(|| format!("line {line}: event_type"))?;
            let time = parse_time(field(ts)).with_context(|| format!("line {line}: ts"))?;
            dataset
                .push(field(actor), field(asin), field(category), event_type, time)
                .with_context(|| format!("line {line}"))?;
        }
        dataset.sort();
        Ok(dataset)
    }

    /// Reads `interaction_logs` from `since` until `until`, with each item's category from the
    /// catalogue (`item_catalogue`), as the service looked it up.
    pub async fn from_database(
        pool: &sqlx::PgPool,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Self> {
        type Fields = (
            Option<i64>,
            Option<String>,
            String,
            Option<String>,
            String,
            chrono::NaiveDateTime,
        );
        let mut rows = sqlx::query_as::<_, Fields>(
            "SELECT l.user_id, l.anonymous_id, l.asin, c.category, l.event_type::text, l.ts \
             FROM interaction_logs l LEFT JOIN item_catalogue c ON c.asin = l.asin \
             WHERE ($1::timestamp IS NULL OR l.ts >= $1) AND ($2::timestamp IS NULL OR l.ts < $2) \
             ORDER BY l.ts, l.id",
        )
        .bind(since.map(|t| t.naive_utc()))
        .bind(until.map(|t| t.naive_utc()))
        .fetch(pool);
        let mut dataset = Dataset::default();
        while let Some((user, visitor, asin, category, kind, ts)) =
            rows.try_next().await.context("reading interaction_logs")?
        {
            let event_type = EventType::parse(&kind).context("an event type of the database")?;
            // A visitor identified since is the user; a visitor's id is never read as a user's.
            let (key, actor) = match (user, visitor) {
                (Some(user), _) => (format!("u{user}"), UserId::new(user).map(Actor::User)),
                (None, Some(visitor)) => (
                    format!("v{visitor}"),
                    AnonymousId::new(visitor).map(Actor::Visitor),
                ),
                (None, None) => anyhow::bail!("a row of interaction_logs names no actor"),
            };
            dataset.push_as(
                &key,
                || actor.map_err(|error| anyhow::anyhow!("an actor of the database: {error}")),
                &asin,
                category.as_deref().unwrap_or(""),
                event_type,
                ts.and_utc(),
            )?;
        }
        dataset.sort();
        Ok(dataset)
    }
}

/// An actor that is a user id (digits, 1 or more) is a user; any other, a visitor (their
/// purchases then live as long as the rest of their context, as the service keeps a visitor's).
fn parse_actor(actor: &str) -> anyhow::Result<Actor> {
    if let Some(user) = actor
        .parse::<UserId>()
        .ok()
        .filter(|_| actor.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(Actor::User(user));
    }
    Ok(Actor::Visitor(AnonymousId::new(actor.to_owned()).map_err(
        |error| anyhow::anyhow!("actor {actor:?}: neither a user id nor a visitor's id: {error}"),
    )?))
}

fn event_type(name: &str, types: &TypeMap) -> anyhow::Result<EventType> {
    if let Some(&mapped) = types.0.get(name) {
        return Ok(mapped);
    }
    match EventType::parse(name) {
        Some(ours) => Ok(ours),
        None => bail!(
            "`{name}` is none of view, click, add_to_cart, purchase, rate (--type-map maps others)"
        ),
    }
}

/// RFC 3339, or seconds since the Unix epoch (a fraction allowed).
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let seconds: f64 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is neither RFC 3339 nor seconds since 1970"))?;
    let millis = (seconds * 1000.0).round();
    if !millis.is_finite() || millis.abs() > 1e16 {
        bail!("`{text}` is out of range");
    }
    DateTime::from_timestamp_millis(millis as i64)
        .with_context(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_file_is_read_in_time_order_with_its_columns_in_any_order() {
        let csv = "ts,asin,actor,event_type,category,extra\n\
                   1700000060,B2,7,pv,Toys,x\n\
                   2023-11-14T22:13:20Z,B1,v-1,view,,y\n\
                   1700000000.5,B1,7,click,Books,z\n";
        let types: TypeMap = "pv=view".parse().unwrap();
        let data = Dataset::from_csv(csv.as_bytes(), &types).unwrap();
        let asins: Vec<&str> = data
            .rows
            .iter()
            .map(|r| data.items[r.item as usize].as_str())
            .collect();
        assert_eq!(asins, ["B1", "B1", "B2"], "by time, ties in input order");
        assert_eq!(data.rows[0].category, None);
        let b1 = data.rows[0].item as usize;
        let category = data.item_category[b1].map(|c| data.categories[c as usize].as_str());
        assert_eq!(
            category,
            Some("Books"),
            "an item's category: the last the input gives it"
        );
        assert!(matches!(
            data.actors[data.rows[0].actor as usize],
            Actor::Visitor(_)
        ));
        assert!(matches!(
            data.actors[data.rows[1].actor as usize],
            Actor::User(_)
        ));
        assert_eq!(data.rows[2].event_type, EventType::View);
    }

    #[test]
    fn bad_input_is_named_by_its_line() {
        let missing =
            Dataset::from_csv("actor,asin,ts,event_type\n".as_bytes(), &TypeMap::default());
        assert!(format!("{:#}", missing.unwrap_err()).contains("`category`"));
        let bad = "actor,asin,category,event_type,ts\n1,B1,,view,1\n1,B1,,buy,2\n";
        let error = Dataset::from_csv(bad.as_bytes(), &TypeMap::default()).unwrap_err();
        assert!(format!("{error:#}").contains("line 3"), "{error:#}");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("1e300").is_err());
    }
}
