//! The background writer: journal → PostgreSQL, in batches, idempotently, with retries.
//!
//! It reads records in journal order, gathers a batch (up to `batch_size` events, or whatever
//! arrived within `batch_interval` of the first), and writes the batch in one transaction:
//! users and items not yet known are created so the foreign keys hold, and the events are
//! inserted with their category and brand joined from the catalogue. `ON CONFLICT (event_id) DO
//! NOTHING` makes a batch written twice (a retry after an unclear failure, a replay after a crash)
//! store each event once. Only after the commit is the journal space released.
//!
//! A batch that fails for a passing reason (connection lost, server restarting) is retried with
//! backoff, forever: nothing leaves the journal unwritten. An event PostgreSQL refuses for its
//! content (it should not happen: the endpoint validates) is found by writing the batch one event
//! at a time, set aside in the journal's quarantine with the reason, and the rest go on.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::event::Event;
use crate::journal::{Journal, JournalReader, Position, ReadRecord};
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub retry: RetryPolicy,
}

/// The running writer. Dropping it leaves the task running; call [`WriterHandle::drain`].
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<JournalReader>,
}

impl WriterHandle {
    /// Writes everything the journal holds, then stops. Gives up after `timeout` (PostgreSQL
    /// down at shutdown): what is left stays in the journal for the next start. Returns whether
    /// everything was written.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(_reader)) => true,
            Ok(Err(error)) => {
                tracing::error!(%error, "the writer task failed; unwritten events stay in the journal");
                false
            }
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

pub fn start(
    pool: PgPool,
    journal: Journal,
    reader: JournalReader,
    config: WriterConfig,
) -> WriterHandle {
    let (stop, stopping) = watch::channel(false);
    let writer = Writer {
        pool,
        journal,
        reader,
        config,
        stopping,
    };
    WriterHandle {
        stop,
        task: tokio::spawn(writer.run()),
    }
}

struct Writer {
    pool: PgPool,
    journal: Journal,
    reader: JournalReader,
    config: WriterConfig,
    stopping: watch::Receiver<bool>,
}

/// A batch ready to write: the events, and where the journal may be released to afterwards.
struct Batch {
    events: Vec<Event>,
    end: Position,
}

impl Writer {
    async fn run(mut self) -> JournalReader {
        loop {
            let stopping = *self.stopping.borrow();
            if stopping && !self.reader.has_unread() {
                break;
            }
            if !stopping {
                tokio::select! {
                    () = self.reader.wait_for_unread() => {}
                    _ = self.stopping.changed() => continue,
                }
            }
            let Some(batch) = self.gather().await else {
                continue;
            };
            self.write_until_stored(&batch).await;
            if let Err(error) = self.reader.release(batch.end) {
                tracing::error!(%error, "could not release written journal space; it is retried with the next batch");
            }
            metrics::gauge!("journal_bytes").set(self.journal.used_bytes() as f64);
            if !self.reader.has_unread() {
                metrics::gauge!("journal_oldest_unwritten_seconds").set(0.0);
            }
        }
        tracing::info!("the writer has written everything in the journal");
        self.reader
    }

    /// Reads up to a batch, waiting at most `batch_interval` for it to fill (not when stopping).
    async fn gather(&mut self) -> Option<Batch> {
        let deadline = tokio::time::Instant::now() + self.config.batch_interval;
        let mut records = Vec::new();
        loop {
            let wanted = self.config.batch_size - records.len();
            records.extend(self.read(wanted).await);
            let full = records.len() >= self.config.batch_size;
            if full || *self.stopping.borrow() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                () = self.reader.wait_for_unread() => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = self.stopping.changed() => {}
            }
        }
        let end = records.last()?.end;
        let events = records.into_iter().filter_map(|r| self.decode(r)).collect();
        Some(Batch { events, end })
    }

    async fn read(&mut self, max: usize) -> Vec<ReadRecord> {
        // File I/O on an async thread: a read is at most a few MB, nearly always from the page
        // cache, and only this task reads.
        match self.reader.read(max) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "could not read the journal; trying again shortly");
                tokio::time::sleep(Duration::from_millis(500)).await;
                Vec::new()
            }
        }
    }

    fn decode(&self, record: ReadRecord) -> Option<Event> {
        match serde_json::from_slice(&record.payload) {
            Ok(event) => Some(event),
            Err(error) => {
                let name = format!(
                    "undecodable-{}-{}.json",
                    record.end.segment, record.end.offset
                );
                let saved = self.journal.quarantine(&name, &record.payload);
                tracing::error!(%error, ?saved, "a journal record is not an event; set aside");
                None
            }
        }
    }

    /// Writes the batch, retrying passing failures until it is stored.
    async fn write_until_stored(&mut self, batch: &Batch) {
        if batch.events.is_empty() {
            return;
        }
        let oldest = batch.events.iter().map(|e| e.received_at).min();
        let mut attempt = 0;
        loop {
            if let Some(oldest) = oldest {
                let age = (chrono::Utc::now() - oldest).num_milliseconds() as f64 / 1000.0;
                metrics::gauge!("journal_oldest_unwritten_seconds").set(age.max(0.0));
            }
            let started = Instant::now();
            match insert(&self.pool, &batch.events).await {
                Ok(stored) => {
                    record_written(batch.events.len(), stored, started);
                    if attempt > 0 {
                        tracing::info!(
                            events = batch.events.len(),
                            attempt,
                            "batch stored after retrying"
                        );
                    }
                    return;
                }
                Err(error) if is_data_error(&error) => {
                    tracing::warn!(%error, "PostgreSQL refused a batch for its content; writing its events one by one");
                    self.write_one_by_one(&batch.events).await;
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    metrics::counter!("writer_retries_total").increment(1);
                    let delay = self.config.retry.delay(attempt);
                    if self.config.retry.exhausted(attempt) {
                        metrics::counter!("writer_failures_total").increment(1);
                        tracing::error!(
                            %error, events = batch.events.len(), attempt, retry_in = ?delay,
                            "PostgreSQL write failed after all quick retries; the batch stays in the journal and is retried"
                        );
                    } else {
                        tracing::warn!(%error, events = batch.events.len(), attempt, retry_in = ?delay, "PostgreSQL write failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Isolates the events PostgreSQL refuses, quarantines them, and stores the rest.
    async fn write_one_by_one(&mut self, events: &[Event]) {
        for event in events {
            let single = Batch {
                events: vec![event.clone()],
                end: Position::default(),
            };
            match insert(&self.pool, &single.events).await {
                Ok(stored) => record_written(1, stored, Instant::now()),
                Err(error) if is_data_error(&error) => {
                    let note = serde_json::json!({"error": error.to_string(), "event": event});
                    let name = format!("refused-{}.json", event.event_id);
                    let saved = self.journal.quarantine(&name, note.to_string().as_bytes());
                    metrics::counter!("events_refused_total").increment(1);
                    tracing::error!(%error, event_id = %event.event_id, ?saved, "PostgreSQL refused an event; set aside");
                }
                // A passing failure: back to the patient path for this one event.
                Err(_) => Box::pin(self.write_until_stored(&single)).await,
            }
        }
    }
}

fn record_written(events: usize, stored: u64, started: Instant) {
    metrics::counter!("writer_batches_total").increment(1);
    metrics::counter!("writer_rows_total").increment(stored);
    metrics::counter!("writer_duplicates_total").increment(events as u64 - stored);
    metrics::histogram!("writer_batch_seconds").record(started.elapsed().as_secs_f64());
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation): retrying the
/// same rows cannot help.
fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

const ENSURE_USERS: &str =
    "INSERT INTO users (id) SELECT DISTINCT unnest($1::bigint[]) ON CONFLICT DO NOTHING";
const ENSURE_ITEMS: &str =
    "INSERT INTO items (asin) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING";
const INSERT_EVENTS: &str = r"
INSERT INTO interaction_logs (event_id, user_id, asin, event_type, ts, metadata)
SELECT e.event_id, e.user_id, e.asin, e.event_type::event_type_enum, e.ts,
       NULLIF(COALESCE(e.metadata::jsonb, '{}'::jsonb)
              || jsonb_strip_nulls(jsonb_build_object('category', c.category, 'brand', c.brand)),
              '{}'::jsonb)
FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamp[], $6::text[])
     AS e(event_id, user_id, asin, event_type, ts, metadata)
LEFT JOIN item_catalogue c ON c.asin = e.asin
ON CONFLICT (event_id) DO NOTHING";

/// Stores events in one transaction; returns how many were new.
pub async fn insert(pool: &PgPool, events: &[Event]) -> Result<u64, sqlx::Error> {
    let mut ids: Vec<Uuid> = Vec::with_capacity(events.len());
    let mut users: Vec<i64> = Vec::with_capacity(events.len());
    let mut asins: Vec<&str> = Vec::with_capacity(events.len());
    let mut types: Vec<&str> = Vec::with_capacity(events.len());
    let mut times: Vec<NaiveDateTime> = Vec::with_capacity(events.len());
    let mut metadata: Vec<Option<&str>> = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.event_id);
        users.push(event.user_id.get());
        asins.push(event.asin.as_str());
        types.push(event.event_type.as_str());
        times.push(event.received_at.naive_utc());
        metadata.push(event.metadata.as_ref().map(|m| m.as_json()));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(ENSURE_USERS)
        .bind(&users)
        .execute(&mut *tx)
        .await?;
    sqlx::query(ENSURE_ITEMS)
        .bind(&asins)
        .execute(&mut *tx)
        .await?;
    let stored = sqlx::query(INSERT_EVENTS)
        .bind(&ids)
        .bind(&users)
        .bind(&asins)
        .bind(&types)
        .bind(&times)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(stored)
}
