//! The background writer: journal → PostgreSQL, in batches, idempotently, with retries.
//!
//! It reads records in journal order, gathers a batch (up to `batch_size` events, or whatever
//! arrived within `batch_interval` of the first), and writes the batch in one transaction
//! ([`batch`]): users and items not yet known are created so the foreign keys hold, and the
//! events are inserted with their category and brand from the catalogue. `ON CONFLICT (event_id)
//! DO NOTHING` makes a batch written twice (a retry after an unclear failure, a replay after a
//! crash) store each event once. Only after the commit is the journal space released.
//!
//! A batch that fails for a passing reason (connection lost, server restarting) is retried with
//! backoff, forever: nothing leaves the journal unwritten. So is a batch that fails for a reason
//! nobody foresaw (a dropped table, say): the writer stops there, loudly (errors in the log,
//! `writer_failures_total`, the journal growing) rather than divert events an operator can mend. An event PostgreSQL refuses for its
//! content (it should not happen: the endpoint validates) is found by writing the batch one event
//! at a time, set aside in the journal's quarantine with the reason, and the rest go on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::catalogue::Catalogue;
use crate::event::Event;
use crate::health::Health;
use crate::journal::{Journal, JournalReader, Position, ReadRecord};
use crate::retry::RetryPolicy;
use batch::BatchWriter;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod batch;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub batch_interval: Duration,
    /// Batches written at once, each on a connection of its own.
    pub parallel_batches: usize,
    pub retry: RetryPolicy,
}

/// The running writer. Dropping it stops the writer (the journal keeps what is unwritten); call
/// [`WriterHandle::drain`] to write everything first.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Option<JournalReader>>,
    status: WriterStatus,
}

/// What the writer holds unwritten, for the gauges.
#[derive(Clone, Default)]
pub struct WriterStatus {
    /// When (ms since the Unix epoch) the oldest event the writer is writing was accepted; 0 for
    /// none.
    oldest_unwritten_ms: Arc<AtomicI64>,
}

impl WriterStatus {
    /// How long the oldest event not yet in PostgreSQL has waited; zero when none waits.
    pub fn oldest_unwritten_age(&self) -> Duration {
        match self.oldest_unwritten_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            at => {
                let age = chrono::Utc::now().timestamp_millis().saturating_sub(at);
                Duration::from_millis(age.max(0) as u64)
            }
        }
    }

    fn track(&self, oldest: Option<DateTime<Utc>>) {
        let at = oldest.map_or(0, |at| at.timestamp_millis());
        self.oldest_unwritten_ms.store(at, Ordering::Relaxed);
    }
}

impl WriterHandle {
    pub fn status(&self) -> WriterStatus {
        self.status.clone()
    }

    /// Writes everything the journal holds, then stops. Gives up after `timeout` (PostgreSQL
    /// down at shutdown): what is left stays in the journal for the next start. Returns whether
    /// everything was written.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Some(_reader))) => true,
            // The health registry has logged why.
            Ok(Ok(None)) => false,
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

/// The writer's name in the health registry.
pub const COMPONENT: &str = "writer";

pub fn start(
    pool: PgPool,
    catalogue: Catalogue,
    journal: Journal,
    reader: JournalReader,
    config: WriterConfig,
    health: &Health,
) -> WriterHandle {
    let (stop, stopping) = watch::channel(false);
    let status = WriterStatus::default();
    let writer = Writer {
        status: status.clone(),
        storer: Arc::new(Storer {
            batches: BatchWriter::new(pool, catalogue),
            journal,
            retry: config.retry,
        }),
        reader,
        config,
        stopping,
    };
    WriterHandle {
        stop,
        task: health.spawn(COMPONENT, writer.run()),
        status,
    }
}

/// Reads the journal and hands batches to [`Storer`]s, at most `parallel_batches` at a time,
/// releasing journal space in journal order as they finish.
struct Writer {
    status: WriterStatus,
    storer: Arc<Storer>,
    reader: JournalReader,
    config: WriterConfig,
    stopping: watch::Receiver<bool>,
}

/// Writes one batch until it is stored; shared by the batches in flight.
struct Storer {
    batches: BatchWriter,
    journal: Journal,
    retry: RetryPolicy,
}

/// A batch ready to write: the events, and where the journal may be released to afterwards.
struct Batch {
    events: Vec<Event>,
    /// When its oldest event was accepted.
    oldest: Option<DateTime<Utc>>,
    end: Position,
}

/// A batch being written by a task of its own; aborted if dropped (a drain that timed out).
struct InFlight {
    batch: Arc<Batch>,
    task: JoinHandle<()>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Writer {
    async fn run(mut self) -> JournalReader {
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            fail::fail_point!("writer");
            while in_flight.front().is_some_and(|b| b.task.is_finished()) {
                let mut done = in_flight.pop_front().expect("checked");
                let outcome = (&mut done.task).await;
                self.settle(done, outcome, &mut in_flight).await;
            }
            self.status
                .track(in_flight.front().and_then(|b| b.batch.oldest));
            let stopping = *self.stopping.borrow();
            let room = in_flight.len() < self.config.parallel_batches;
            if stopping && in_flight.is_empty() && !self.reader.has_unread() {
                break;
            }
            if room && self.reader.has_unread() {
                if let Some(batch) = self.gather().await {
                    in_flight.push_back(self.spawn(Arc::new(batch), Duration::ZERO));
                }
                continue;
            }
            let oldest = async {
                match in_flight.front_mut() {
                    Some(batch) => (&mut batch.task).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = oldest => {
                    let done = in_flight.pop_front().expect("the oldest batch finished");
                    self.settle(done, outcome, &mut in_flight).await;
                }
                () = self.reader.wait_for_unread(), if room && !stopping => {}
                changed = self.stopping.changed(), if !stopping => {
                    if changed.is_err() {
                        tracing::warn!("the writer's handle is gone; the writer stops, the journal keeps what is unwritten");
                        break;
                    }
                }
            }
        }
        self.status.track(None);
        tracing::info!("the writer has stopped; the journal holds nothing it could write");
        self.reader
    }

    /// Releases a finished batch's journal space, or, if its task failed (a panic), writes it
    /// again after a pause, as the oldest batch in flight.
    async fn settle(
        &mut self,
        done: InFlight,
        outcome: Result<(), tokio::task::JoinError>,
        in_flight: &mut VecDeque<InFlight>,
    ) {
        match outcome {
            Ok(()) => self.release(done.batch.end).await,
            Err(error) => {
                tracing::error!(%error, events = done.batch.events.len(), "a batch's writing task failed; writing it again");
                let delay = self.storer.retry.parked_delay;
                in_flight.push_front(self.spawn(done.batch.clone(), delay));
            }
        }
    }

    /// Starts writing `batch` on a task of its own, after `delay`.
    fn spawn(&self, batch: Arc<Batch>, delay: Duration) -> InFlight {
        let storer = self.storer.clone();
        let events = batch.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            storer.write_until_stored(&events.events).await;
        });
        InFlight { batch, task }
    }

    async fn release(&mut self, end: Position) {
        if let Err(error) = self.reader.release(end).await {
            tracing::error!(%error, "could not release written journal space; it is retried with the next batch");
        }
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
                // A stop, or the handle gone: either way, no more waiting.
                _ = self.stopping.changed() => break,
            }
        }
        let end = records.last()?.end;
        let mut events: Vec<Event> = Vec::with_capacity(records.len());
        for record in records {
            match serde_json::from_slice(&record.payload) {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::error!(%error, "a journal record is not an event; setting it aside");
                    let name = format!(
                        "undecodable-{}-{}.json",
                        record.end.segment, record.end.offset
                    );
                    self.storer.keep_aside(&name, &record.payload).await;
                }
            }
        }
        let oldest = events.iter().map(|e| e.received_at).min();
        Some(Batch {
            events,
            oldest,
            end,
        })
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
}

impl Storer {
    /// Writes the batch, retrying passing failures until it is stored.
    async fn write_until_stored(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            match self.batches.write(events, attempt > 0).await {
                Ok(stored) => {
                    record_written(events.len(), stored, started);
                    if attempt > 0 {
                        tracing::info!(
                            events = events.len(),
                            attempt,
                            "batch stored after retrying"
                        );
                    }
                    return;
                }
                Err(error) if error.is_data_error() => {
                    tracing::warn!(%error, "PostgreSQL refused a batch for its content; writing its events one by one");
                    self.write_one_by_one(events).await;
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    metrics::counter!("writer_retries_total").increment(1);
                    let delay = self.retry.delay(attempt);
                    if self.retry.exhausted(attempt) {
                        metrics::counter!("writer_failures_total").increment(1);
                        tracing::error!(
                            %error, events = events.len(), attempt, retry_in = ?delay,
                            "PostgreSQL write failed after all quick retries; the batch stays in the journal and is retried"
                        );
                    } else {
                        tracing::warn!(%error, events = events.len(), attempt, retry_in = ?delay, "PostgreSQL write failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Copies `bytes` to the journal's quarantine, trying until it succeeds (a full disk, say):
    /// only then may the journal let go of them. The file is written and flushed on a blocking
    /// thread.
    async fn keep_aside(&self, name: &str, bytes: &[u8]) {
        loop {
            let (journal, name, bytes) = (self.journal.clone(), name.to_owned(), bytes.to_vec());
            let written = tokio::task::spawn_blocking(move || journal.quarantine(&name, &bytes))
                .await
                .unwrap_or_else(|panic| Err(std::io::Error::other(panic)));
            match written {
                Ok(path) => {
                    tracing::warn!(path = %path.display(), "set aside in the journal's quarantine");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "could not write to the journal's quarantine; trying again");
                    tokio::time::sleep(self.retry.parked_delay).await;
                }
            }
        }
    }

    /// Isolates the events PostgreSQL refuses, quarantines them, and stores the rest.
    async fn write_one_by_one(&self, events: &[Event]) {
        for event in events {
            let single = [event.clone()];
            match self.batches.write(&single, true).await {
                Ok(stored) => record_written(1, stored, Instant::now()),
                Err(error) if error.is_data_error() => {
                    tracing::error!(%error, event_id = %event.event_id, "PostgreSQL refused an event; setting it aside");
                    let note = serde_json::json!({"error": error.to_string(), "event": event});
                    let name = format!("refused-{}.json", event.event_id);
                    self.keep_aside(&name, note.to_string().as_bytes()).await;
                    metrics::counter!("events_refused_total").increment(1);
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
