//! `interaction_logs`' partitions, one a `--partition-interval` of `ts` (a day by default):
//! made ahead of the events, and behind as far as `--max-event-age` reaches, by a maintenance
//! task of the writer ([`Partitions::maintain`], a component of the health registry); made on
//! demand for an event whose partition is missing ([`Partitions::cover`], before each batch), so
//! that no event waits for maintenance, nor is refused for want of a partition; dropped whole
//! once older than `--retention`.
//!
//! Partitions are cut on a grid of the interval counted from the Unix epoch (so days start at
//! midnight UTC), clipped where a partition exists already: the legacy partition the upgrade made
//! of the unpartitioned table, or partitions of an earlier interval. A range, once it has a
//! partition, keeps it until retention drops it. Partitions are made and dropped under one
//! advisory lock, so that several writers agree.
//!
//! And which events need the id table to be stored once ([`Partitions::needs_guard`]): see
//! docs/ARCHITECTURE.md, "Exactly once across partitions".

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use parking_lot::RwLock;
use sqlx::PgPool;

use crate::event::Event;

/// How the partitions are cut, kept and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionConfig {
    /// The span of `ts` of one partition.
    pub interval: Duration,
    /// Partitions made ahead of the current one.
    pub ahead: u32,
    /// Partitions whose every row is older than this are dropped; `None` keeps them all.
    pub retention: Option<Duration>,
    /// The oldest event the service accepts: partitions are made this far behind, and the id
    /// table keeps ids this long.
    pub max_event_age: Duration,
    /// How far apart the times of an event and of its retry may be for the retry to be known as
    /// the same event across a partition's bound.
    pub dedup_skew: Duration,
    /// How often maintenance runs.
    pub every: Duration,
}

impl Default for PartitionConfig {
    /// A partition a day, two ahead, kept for ever; ids kept as long as events are accepted,
    /// retries known within ten minutes of skew; maintenance every five minutes.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(24 * 3600),
            ahead: 2,
            retention: None,
            max_event_age: crate::event::DEFAULT_MAX_EVENT_AGE,
            dedup_skew: Duration::from_secs(600),
            every: Duration::from_secs(300),
        }
    }
}

impl PartitionConfig {
    /// What cannot work: an interval under a minute or not of whole minutes, more partitions
    /// than PostgreSQL plans well, or events accepted for longer than they are kept.
    pub fn check(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(60) || !self.interval.as_secs().is_multiple_of(60) {
            return Err(format!(
                "--partition-interval must be whole minutes, at least one (got {})",
                humantime::format_duration(self.interval)
            ));
        }
        let window = self.max_event_age.as_secs() / self.interval.as_secs() + self.ahead as u64;
        if window > MAX_PARTITIONS_MADE {
            return Err(format!(
                "--partition-interval ({}) is too short for --max-event-age ({}): {window} partitions would be kept ready, at most {MAX_PARTITIONS_MADE}",
                humantime::format_duration(self.interval),
                humantime::format_duration(self.max_event_age)
            ));
        }
        if let Some(retention) = self.retention
            && self.max_event_age > retention
        {
            return Err(format!(
                "--max-event-age ({}) may not exceed --retention ({}): events would be accepted that retention has dropped the place of",
                humantime::format_duration(self.max_event_age),
                humantime::format_duration(retention)
            ));
        }
        Ok(())
    }
}

/// Where the partitions' DDL takes turns, among writers: the first key of the advisory lock.
const PARTITION_LOCK: i64 = 0x5041_5254; // "PART"

/// Most partitions maintenance keeps made, behind and ahead: a query that cannot prune by time
/// plans each of them.
const MAX_PARTITIONS_MADE: u64 = 1_000;

/// Longest a retention's `DROP TABLE` waits for its lock on `interaction_logs` (inserts queue
/// behind it meanwhile).
const DROP_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Most rows of the id table deleted by one statement of maintenance.
const PRUNE_ROWS: i64 = 10_000;

/// A partition's range of `ts`: `[from, to)`, `None` for an unbounded end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub name: String,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
}

impl Range {
    fn contains(&self, ts: NaiveDateTime) -> bool {
        self.from.is_none_or(|from| from <= ts) && self.to.is_none_or(|to| ts < to)
    }
}

/// What a maintenance run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintained {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    pub ids_pruned: u64,
}

/// The partitions, as last read from PostgreSQL; cheap to clone.
#[derive(Clone)]
pub struct Partitions {
    pool: PgPool,
    config: PartitionConfig,
    known: Arc<RwLock<Vec<Range>>>,
}

impl Partitions {
    pub fn new(pool: PgPool, config: PartitionConfig) -> Self {
        Self {
            pool,
            config,
            known: Arc::default(),
        }
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// The partitions, as last read.
    pub fn known(&self) -> Vec<Range> {
        self.known.read().clone()
    }

    /// Reads the partitions from PostgreSQL's catalogue.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let ranges = read_ranges(&self.pool).await?;
        *self.known.write() = ranges;
        Ok(())
    }

    /// Whether an event of this time is past retention: not to be stored.
    pub fn expired(&self, ts: NaiveDateTime, now: DateTime<Utc>) -> bool {
        self.config
            .retention
            .and_then(|retention| TimeDelta::from_std(retention).ok())
            .is_some_and(|retention| ts < (now - retention).naive_utc())
    }

    /// Makes a partition for every time of `times` that has none.
    pub async fn cover(
        &self,
        times: impl Iterator<Item = NaiveDateTime>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let missing: Vec<NaiveDateTime> = {
            let known = self.known.read();
            times
                .filter(|ts| !known.iter().any(|range| range.contains(*ts)))
                .collect()
        };
        let (Some(first), Some(last)) = (missing.iter().min(), missing.iter().max()) else {
            return Ok(Vec::new());
        };
        self.ensure(*first, *last).await
    }

    /// Makes partitions so that every time from `first` to `last` has one; the names of those
    /// made.
    pub async fn ensure(
        &self,
        first: NaiveDateTime,
        last: NaiveDateTime,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        // Under the lock, what another writer may have made counts.
        let mut known = read_ranges(&mut *tx).await?;
        let mut made = Vec::new();
        for mut piece in missing_pieces(&known, first, last, self.config.interval) {
            create(&mut tx, &mut piece).await?;
            made.push(piece.name.clone());
            known.push(piece);
        }
        tx.commit().await?;
        known.sort_by_key(|range| range.from);
        *self.known.write() = known;
        for name in &made {
            tracing::info!(partition = %name, "made a partition of interaction_logs");
        }
        metrics::counter!("partitions_created_total").increment(made.len() as u64);
        Ok(made)
    }

    /// One round of maintenance: partitions made from `--max-event-age` behind to
    /// `--partitions-ahead` ahead, those past `--retention` dropped, the id table pruned.
    pub async fn maintain(&self, now: DateTime<Utc>) -> Result<Maintained, sqlx::Error> {
        let config = &self.config;
        let now_naive = now.naive_utc();
        let behind = TimeDelta::from_std(config.max_event_age).unwrap_or(TimeDelta::MAX);
        let interval = TimeDelta::from_std(config.interval).expect("an interval of minutes");
        let first = now_naive
            .checked_sub_signed(behind)
            .unwrap_or(NaiveDateTime::MIN);
        // Somewhere in the `ahead`th partition after the current one.
        let last = now_naive + interval * config.ahead as i32;
        // Each step whatever became of the one before: a partition that cannot be made now
        // does not hold retention back.
        let created = self.ensure(first, last).await;
        let dropped = self.drop_expired(now).await;
        let ids_pruned = self.prune_ids(now).await;
        metrics::gauge!("partitions").set(self.known.read().len() as f64);
        Ok(Maintained {
            created: created?,
            dropped: dropped?,
            ids_pruned: ids_pruned?,
        })
    }

    /// Drops the partitions whose every row is past retention.
    async fn drop_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, sqlx::Error> {
        let Some(retention) = self
            .config
            .retention
            .and_then(|r| TimeDelta::from_std(r).ok())
        else {
            return Ok(Vec::new());
        };
        let horizon = (now - retention).naive_utc();
        let expired: Vec<Range> = read_ranges(&self.pool)
            .await?
            .into_iter()
            .filter(|range| range.to.is_some_and(|to| to <= horizon))
            .collect();
        let mut dropped = Vec::new();
        // One partition a transaction: `DROP TABLE` of a partition locks `interaction_logs`
        // itself, for a catalogue change (milliseconds), and waits for that lock at most
        // DROP_LOCK_TIMEOUT, while inserts queue behind it; past it, the next round tries again.
        for range in expired {
            let mut tx = self.pool.begin().await?;
            lock(&mut tx).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL lock_timeout = '{}ms'",
                DROP_LOCK_TIMEOUT.as_millis()
            )))
            .execute(&mut *tx)
            .await?;
            let rows: Option<f64> = sqlx::query_scalar(
                "SELECT c.reltuples::float8 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'interaction_logs'::regclass AND c.relname = $1",
            )
            .bind(&range.name)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(rows) = rows else {
                continue; // dropped by another writer meanwhile
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP TABLE {}",
                quote_ident(&range.name)
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                partition = %range.name,
                until = %range.to.expect("bounded"),
                rows_estimated = rows.max(0.0) as u64,
                "dropped a partition past --retention"
            );
            metrics::counter!("partitions_dropped_total").increment(1);
            self.known.write().retain(|known| known.name != range.name);
            dropped.push(range.name);
        }
        Ok(dropped)
    }

    /// Deletes the ids no retry can match any more: of events older than `--max-event-age`
    /// and the skew (a retry of those is refused, or, for an event without a time of the
    /// client's, comes too late to be known).
    async fn prune_ids(&self, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let keep = TimeDelta::from_std(self.config.max_event_age + self.config.dedup_skew)
            .unwrap_or(TimeDelta::MAX);
        let Some(horizon) = now.checked_sub_signed(keep) else {
            return Ok(0);
        };
        let mut pruned = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM interaction_log_ids WHERE event_id IN \
                 (SELECT event_id FROM interaction_log_ids WHERE ts < $1 LIMIT $2)",
            )
            .bind(horizon.naive_utc())
            .bind(PRUNE_ROWS)
            .execute(&self.pool)
            .await?
            .rows_affected();
            pruned += deleted;
            if deleted < PRUNE_ROWS as u64 {
                return Ok(pruned);
            }
        }
    }

    /// Whether a client's retry of `event` could be stored in another partition than `event`:
    /// the client chose its id (so may send it again) and its time either is the time of receipt
    /// (no time of the client's: a retry's differs by as long as the client waited) or lies
    /// within `--dedup-skew` of its partition's bounds (a retry's differs by the network's
    /// jitter). Those events pass through the id table; the others are kept single by their
    /// partition's own unique index. Read after [`Partitions::cover`].
    pub fn needs_guard(&self, event: &Event) -> bool {
        if !event.client_event_id {
            return false;
        }
        let ts = event.ts();
        if ts == event.received_at {
            return true;
        }
        let ts = ts.naive_utc();
        let skew = TimeDelta::from_std(self.config.dedup_skew).unwrap_or(TimeDelta::MAX);
        let known = self.known.read();
        match known.iter().find(|range| range.contains(ts)) {
            Some(range) => {
                range.from.is_some_and(|from| ts - from <= skew)
                    || range.to.is_some_and(|to| to - ts <= skew)
            }
            None => true,
        }
    }
}

/// The pieces of the grid, clipped against `known`, that cover `[first, last]` where nothing
/// does yet.
fn missing_pieces(
    known: &[Range],
    first: NaiveDateTime,
    last: NaiveDateTime,
    interval: Duration,
) -> Vec<Range> {
    let step = TimeDelta::from_std(interval).expect("an interval of minutes");
    let epoch = DateTime::UNIX_EPOCH.naive_utc();
    let cells_before = (first - epoch).num_seconds().div_euclid(step.num_seconds());
    let mut cell = epoch + TimeDelta::seconds(cells_before * step.num_seconds());
    let mut pieces = Vec::new();
    while cell <= last {
        let end = cell + step;
        // What of [cell, end) no known range covers, as one or more pieces.
        let mut from = cell;
        let mut covering: Vec<&Range> = known
            .iter()
            .filter(|r| r.from.is_none_or(|f| f < end) && r.to.is_none_or(|t| t > cell))
            .collect();
        covering.sort_by_key(|r| r.from);
        for range in covering {
            let range_from = range.from.unwrap_or(NaiveDateTime::MIN).max(cell);
            if range_from > from {
                pieces.push(piece(from, range_from));
            }
            from = from.max(range.to.unwrap_or(NaiveDateTime::MAX).min(end));
        }
        if from < end {
            pieces.push(piece(from, end));
        }
        cell = end;
    }
    pieces
}

fn piece(from: NaiveDateTime, to: NaiveDateTime) -> Range {
    let midnight = from.time() == chrono::NaiveTime::MIN;
    let name = if midnight {
        format!("interaction_logs_p{}", from.format("%Y%m%d"))
    } else {
        format!("interaction_logs_p{}", from.format("%Y%m%d_%H%M"))
    };
    Range {
        name,
        from: Some(from),
        to: Some(to),
    }
}

/// Takes the partitions' advisory lock until the transaction ends, waiting at most a few seconds
/// for it or for any lock the DDL needs: maintenance tries again later rather than queue the
/// writers behind a long query.
async fn lock(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Makes one partition: a table like `interaction_logs` with its own primary key and unique
/// event id, then attached (which takes a lock that lets inserts go on, and builds the parent's
/// indexes and foreign keys on an empty table).
async fn create(tx: &mut sqlx::PgConnection, range: &mut Range) -> Result<(), sqlx::Error> {
    // A table of the grid's name may stand already, a partition detached by hand to archive it:
    // the new one takes the next free name.
    let base = range.name.clone();
    for n in 2.. {
        let taken: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(quote_ident(&range.name))
            .fetch_one(&mut *tx)
            .await?;
        if !taken {
            break;
        }
        range.name = format!("{base}_{n}");
    }
    let name = quote_ident(&range.name);
    let bound = |time: Option<NaiveDateTime>, none: &str| {
        time.map_or(none.to_owned(), |t| {
            format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.f"))
        })
    };
    let statements = [
        format!(
            "CREATE TABLE {name} (LIKE interaction_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ),
        format!("ALTER TABLE {name} ADD PRIMARY KEY (id), ADD UNIQUE (event_id)"),
        format!(
            "ALTER TABLE interaction_logs ATTACH PARTITION {name} FOR VALUES FROM ({}) TO ({})",
            bound(range.from, "MINVALUE"),
            bound(range.to, "MAXVALUE")
        ),
    ];
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The partitions of `interaction_logs` and their ranges, from the catalogue, in order.
async fn read_ranges<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<Vec<Range>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'interaction_logs'::regclass",
    )
    .fetch_all(executor)
    .await?;
    let mut ranges: Vec<Range> = rows
        .into_iter()
        .filter_map(|(name, bound)| parse_bound(&bound).map(|(from, to)| Range { name, from, to }))
        .collect();
    ranges.sort_by_key(|range| range.from);
    Ok(ranges)
}

/// `FOR VALUES FROM ('2026-12-07 00:00:00') TO ('2026-12-08 00:00:00')`, either end possibly
/// `MINVALUE` or `MAXVALUE`, as PostgreSQL writes a range partition's bound.
fn parse_bound(bound: &str) -> Option<(Option<NaiveDateTime>, Option<NaiveDateTime>)> {
    let rest = bound.strip_prefix("FOR VALUES FROM (")?;
    let (from, rest) = rest.split_once(") TO (")?;
    let to = rest.strip_suffix(')')?;
    let value = |text: &str| -> Option<Option<NaiveDateTime>> {
        match text {
            "MINVALUE" | "MAXVALUE" => Some(None),
            quoted => {
                let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
                NaiveDateTime::parse_from_str(inner, "%Y-%m-%d %H:%M:%S%.f")
                    .ok()
                    .map(Some)
            }
        }
    };
    Some((value(from)?, value(to)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap()
    }

    fn range(from: Option<&str>, to: Option<&str>) -> Range {
        Range {
            name: String::new(),
            from: from.map(at),
            to: to.map(at),
        }
    }

    fn bounds(pieces: &[Range]) -> Vec<(Option<NaiveDateTime>, Option<NaiveDateTime>)> {
        pieces.iter().map(|p| (p.from, p.to)).collect()
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn postgresqls_bounds_are_read() {
        assert_eq!(
            parse_bound("FOR VALUES FROM ('2026-12-07 00:00:00') TO ('2026-12-08 00:00:00')"),
            Some((Some(at("2026-12-07 00:00")), Some(at("2026-12-08 00:00"))))
        );
        assert_eq!(
            parse_bound("FOR VALUES FROM (MINVALUE) TO ('2026-12-09 00:00:00')"),
            Some((None, Some(at("2026-12-09 00:00"))))
        );
        assert_eq!(
            parse_bound("FOR VALUES FROM ('2026-12-07 06:30:00.5') TO (MAXVALUE)")
                .unwrap()
                .0,
            Some(at("2026-12-07 06:30") + TimeDelta::milliseconds(500))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
    }

    #[test]
    fn the_grid_is_cut_from_the_epoch_and_clipped_against_what_exists() {
        let none = missing_pieces(&[], at("2026-12-07 10:00"), at("2026-12-08 10:00"), DAY);
        assert_eq!(
            bounds(&none),
            [
                (Some(at("2026-12-07 00:00")), Some(at("2026-12-08 00:00"))),
                (Some(at("2026-12-08 00:00")), Some(at("2026-12-09 00:00")))
            ]
        );
        assert_eq!(none[0].name, "interaction_logs_p20261207");
        // The legacy partition below 2026-12-09 00:00, and one made on a 6-hour grid.
        let known = [
            range(None, Some("2026-12-09 00:00")),
            range(Some("2026-12-10 06:00"), Some("2026-12-10 12:00")),
        ];
        let pieces = missing_pieces(&known, at("2026-12-08 12:00"), at("2026-12-10 20:00"), DAY);
        assert_eq!(
            bounds(&pieces),
            [
                (Some(at("2026-12-09 00:00")), Some(at("2026-12-10 00:00"))),
                (Some(at("2026-12-10 00:00")), Some(at("2026-12-10 06:00"))),
                (Some(at("2026-12-10 12:00")), Some(at("2026-12-11 00:00")))
            ]
        );
        assert_eq!(pieces[2].name, "interaction_logs_p20261210_1200");
        let hours = missing_pieces(
            &[],
            at("1969-12-31 23:30"),
            at("1970-01-01 00:10"),
            DAY / 24,
        );
        assert_eq!(
            bounds(&hours)[0].0,
            Some(at("1969-12-31 23:00")),
            "before the epoch too"
        );
        assert!(
            missing_pieces(
                &known[..1],
                at("2026-12-01 00:00"),
                at("2026-12-08 23:59"),
                DAY
            )
            .is_empty()
        );
    }

    #[test]
    fn max_event_age_may_not_exceed_retention_and_the_interval_is_whole_minutes() {
        let config = |retention: Option<u64>, interval: u64| PartitionConfig {
            retention: retention.map(|days| DAY * days as u32),
            interval: Duration::from_secs(interval),
            ..PartitionConfig::default()
        };
        assert!(config(None, 86_400).check().is_ok());
        assert!(config(Some(7), 3_600).check().is_ok());
        assert!(
            config(Some(6), 3_600)
                .check()
                .unwrap_err()
                .contains("--max-event-age")
        );
        assert!(config(None, 90).check().is_err());
        assert!(config(None, 30).check().is_err());
    }
}
