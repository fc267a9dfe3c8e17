//! The background writer: hand-off → PostgreSQL, in batches, idempotently, with retries.
//!
//! It reads batches from a [`Source`] (the journal, or a JetStream consumer: it does not know
//! which), up to `batch_size` events or whatever arrived within `batch_interval`, and writes each
//! batch in one transaction ([`batch`]): users and items not yet known are created so the foreign
//! keys hold, and the events are inserted with their category and brand from the catalogue.
//! `ON CONFLICT (event_id) DO NOTHING` makes a batch written twice (a retry after an unclear
//! failure, a replay after a crash, a redelivery) store each event once. Only after the commit is
//! the batch confirmed to its source, in the order the batches were read.
//!
//! A batch that fails for a passing reason (connection lost, server restarting) is retried with
//! backoff, forever: nothing is confirmed unwritten. So is a batch that fails for a reason nobody
//! foresaw (a dropped table, say): the writer stops there, loudly (errors in the log,
//! `writer_failures_total`, the backlog growing) rather than divert events an operator can mend.
//! An event PostgreSQL refuses for its content (it should not happen: the endpoint validates) is
//! found by writing the batch one event at a time and set aside by the source with the reason
//! (the journal's quarantine, the stream's dead-letter subject); the rest go on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use crate::catalogue::Catalogue;
use crate::event::{Event, Identity};
use crate::handoff::{Aside, Fetched, Record, SetAside, Source};
use crate::health::Health;
use crate::retry::RetryPolicy;
use batch::BatchWriter;
pub use batch::{BatchError, Written};
pub use descriptions::describe_metrics;
pub use partitions::{PartitionConfig, Partitions};

mod batch;
mod descriptions;
pub mod partitions;
#[cfg(test)]
mod tests;

/// Where the writer stores batches: PostgreSQL ([`BatchWriter`]); the writer's own tests give
/// it one in memory. An error says whether it is passing ([`BatchError::is_data_error`]).
pub trait Store: Send + Sync + 'static {
    /// Stores `events`, each once; says how many were new. `thorough` is a retry's.
    fn write(
        &self,
        events: &[Event],
        thorough: bool,
    ) -> impl Future<Output = Result<Written, BatchError>> + Send;

    /// Attributes the identified visitors' stored events to their users; returns how many rows.
    fn attribute(
        &self,
        identities: &[Identity],
    ) -> impl Future<Output = Result<u64, BatchError>> + Send;
}

impl Store for BatchWriter {
    fn write(
        &self,
        events: &[Event],
        thorough: bool,
    ) -> impl Future<Output = Result<Written, BatchError>> + Send {
        BatchWriter::write(self, events, thorough)
    }

    fn attribute(
        &self,
        identities: &[Identity],
    ) -> impl Future<Output = Result<u64, BatchError>> + Send {
        BatchWriter::attribute(self, identities)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub batch_interval: Duration,
    /// Batches written at once, each on a connection of its own, while the writer is behind
    /// (its last batch came back full); one at a time while it keeps up.
    pub parallel_batches: usize,
    /// Users remembered as present in `users`.
    pub known_users: u64,
    pub retry: RetryPolicy,
    /// How `interaction_logs` is partitioned, kept and kept single.
    pub partitions: PartitionConfig,
}

impl Default for WriterConfig {
    /// Batches of up to 5,000 events or 50 ms, two at once while behind.
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            batch_interval: Duration::from_millis(50),
            parallel_batches: 2,
            known_users: 100_000,
            retry: RetryPolicy::default(),
            partitions: PartitionConfig::default(),
        }
    }
}

/// The writer's name in the health registry.
pub const COMPONENT: &str = "writer";

/// The running writer. Dropping it stops the writer (the source keeps what is unwritten); call
/// [`WriterHandle::drain`] to write the source's backlog first.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Option<()>>,
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

    /// Stops reading new batches, writes what it holds and the source's backlog (the journal's),
    /// confirms it, and stops. Gives up after `timeout` (PostgreSQL down at shutdown): what is
    /// left stays in the source. Returns whether everything was written.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Some(()))) => true,
            // The health registry has logged why.
            Ok(Ok(None)) => false,
            Ok(Err(error)) => {
                tracing::error!(%error, "the writer task failed; what is unwritten stays in the hand-off");
                false
            }
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

pub fn start<S: Source>(
    pool: PgPool,
    catalogue: Catalogue,
    source: S,
    config: WriterConfig,
    health: &Health,
) -> WriterHandle {
    let partitions = Partitions::new(pool.clone(), config.partitions);
    maintain_partitions(partitions.clone(), health);
    let store = BatchWriter::new(pool, catalogue, partitions, config.known_users);
    start_with(store, source, config, health)
}

/// The partitions' maintenance component's name in the health registry.
pub const PARTITIONS_COMPONENT: &str = "partitions";

/// Runs [`Partitions::maintain`] now and every `--partition-interval`'s few minutes, as a
/// component of the registry; a failure (PostgreSQL down) is logged and counted, and tried again
/// at the next round.
fn maintain_partitions(partitions: Partitions, health: &Health) {
    health.spawn(PARTITIONS_COMPONENT, async move {
        loop {
            if let Err(error) = partitions.maintain(chrono::Utc::now()).await {
                metrics::counter!("partition_maintenance_failures_total").increment(1);
                static WARNING: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
                if let Some(suppressed) = WARNING.allow() {
                    let error = crate::telemetry::chain(&error);
                    tracing::warn!(%error, suppressed, "partition maintenance failed; trying again at the next round");
                }
            }
            tokio::time::sleep(partitions.config().every).await;
        }
    });
}

/// [`start`], storing into `store`.
fn start_with<S: Source, T: Store>(
    store: T,
    source: S,
    config: WriterConfig,
    health: &Health,
) -> WriterHandle {
    let (stop, stopping) = watch::channel(false);
    let status = WriterStatus::default();
    let writer = Writer {
        status: status.clone(),
        storer: Arc::new(Storer {
            batches: store,
            retry: config.retry,
        }),
        source,
        config,
        stopping,
    };
    WriterHandle {
        stop,
        task: health.spawn(COMPONENT, writer.run()),
        status,
    }
}

/// Reads batches from the source and hands them to [`Storer`]s, confirming them to the source in
/// order as they finish: up to `parallel_batches` at a time while the source holds more than a
/// batch (the last fetch came back full: a backlog to catch up on), one at a time while the
/// writer keeps up. Two transactions at once cost PostgreSQL a quarter more CPU per row on a
/// busy machine (bench/README.md), which only catching up is worth.
struct Writer<S: Source, T: Store> {
    status: WriterStatus,
    storer: Arc<Storer<T>>,
    source: S,
    config: WriterConfig,
    stopping: watch::Receiver<bool>,
}

/// Writes one batch until it is stored; shared by the batches in flight.
struct Storer<T: Store> {
    batches: T,
    retry: RetryPolicy,
}

/// A batch ready to write: the events, visitors' identifications, what could not be decoded,
/// and its receipt.
struct Batch<R> {
    events: Arc<Vec<Event>>,
    identities: Arc<Vec<Identity>>,
    undecodable: Vec<SetAside>,
    /// When its oldest event was accepted.
    oldest: Option<DateTime<Utc>>,
    receipt: R,
}

/// A batch being written by a task of its own, which yields the events PostgreSQL refused.
struct InFlight<R> {
    batch: Batch<R>,
    task: AbortOnDropHandle<Vec<SetAside>>,
}

impl<S: Source, T: Store> Writer<S, T> {
    async fn run(mut self) {
        let mut in_flight: VecDeque<InFlight<S::Receipt>> = VecDeque::new();
        let mut behind = false;
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
            let parallel = if behind {
                self.config.parallel_batches
            } else {
                1
            };
            let room = in_flight.len() < parallel;
            if stopping && in_flight.is_empty() && !self.source.has_backlog() {
                break;
            }
            let fetch = room && (!stopping || self.source.has_backlog());
            let oldest = async {
                match in_flight.front_mut() {
                    Some(batch) => (&mut batch.task).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.source.ready(), if fetch => {
                    let (max, linger) = (self.config.batch_size, self.config.batch_interval);
                    if let Some(fetched) = self.source.next(max, linger, &mut self.stopping).await {
                        behind = fetched.len() >= max;
                        in_flight.push_back(self.spawn(batch(fetched), Duration::ZERO));
                    }
                }
                outcome = oldest => {
                    let done = in_flight.pop_front().expect("the oldest batch finished");
                    self.settle(done, outcome, &mut in_flight).await;
                }
                changed = self.stopping.changed(), if !stopping => {
                    if changed.is_err() {
                        tracing::warn!("the writer's handle is gone; the writer stops, the hand-off keeps what is unwritten");
                        break;
                    }
                }
            }
        }
        self.status.track(None);
        tracing::info!("the writer has stopped; it holds nothing unwritten");
    }

    /// Sets aside what the finished batch could not store, then confirms it to the source; or,
    /// if its task failed (a panic), writes it again after a pause, as the oldest batch in
    /// flight.
    async fn settle(
        &mut self,
        done: InFlight<S::Receipt>,
        outcome: Result<Vec<SetAside>, tokio::task::JoinError>,
        in_flight: &mut VecDeque<InFlight<S::Receipt>>,
    ) {
        match outcome {
            Ok(refused) => {
                for item in done.batch.undecodable.into_iter().chain(refused) {
                    self.source.set_aside(item).await;
                }
                self.source.commit(done.batch.receipt).await;
            }
            Err(error) => {
                tracing::error!(%error, events = done.batch.events.len(), "a batch's writing task failed; writing it again");
                let delay = self.storer.retry.parked_delay;
                in_flight.push_front(self.spawn(done.batch, delay));
            }
        }
    }

    /// Starts writing `batch` on a task of its own, after `delay`.
    fn spawn(&self, batch: Batch<S::Receipt>, delay: Duration) -> InFlight<S::Receipt> {
        let storer = self.storer.clone();
        let (events, identities) = (batch.events.clone(), batch.identities.clone());
        let task = AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Events first: a visitor's events that arrived before their identification, in the
            // same batch, are stored before it attributes them.
            let mut refused = storer.write_until_stored(&events).await;
            refused.extend(storer.attribute_until_stored(&identities).await);
            refused
        }));
        InFlight { batch, task }
    }
}

/// Sorts the fetched records into events and identifications, for the batch.
fn batch<R>(fetched: Fetched<R>) -> Batch<R> {
    let mut events = Vec::with_capacity(fetched.records.len());
    let mut identities = Vec::new();
    for record in fetched.records {
        match record {
            Record::Event(event) => events.push(event),
            Record::Identity(identity) => identities.push(identity),
        }
    }
    let undecodable = fetched.undecodable;
    let oldest = events
        .iter()
        .map(|e| e.received_at)
        .chain(identities.iter().map(|i| i.identified_at))
        .min();
    Batch {
        events: Arc::new(events),
        identities: Arc::new(identities),
        undecodable,
        oldest,
        receipt: fetched.receipt,
    }
}

impl<T: Store> Storer<T> {
    /// Writes the batch, retrying passing failures until it is stored; returns the events
    /// PostgreSQL refused for their content, to set aside.
    async fn write_until_stored(&self, events: &[Event]) -> Vec<SetAside> {
        if events.is_empty() {
            return Vec::new();
        }
        let written = self
            .until_done("batch", events.len(), |thorough| async move {
                let started = Instant::now();
                let stored = self.batches.write(events, thorough).await?;
                Ok((stored, started))
            })
            .await;
        match written {
            Ok((stored, started)) => {
                record_written(events.len(), stored, started);
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(%error, "PostgreSQL refused a batch for its content; writing its events one by one");
                self.write_one_by_one(events).await
            }
        }
    }

    /// Attributes the identified visitors' stored events to their users, retrying passing
    /// failures; returns the identifications PostgreSQL refused, to set aside.
    async fn attribute_until_stored(&self, identities: &[Identity]) -> Vec<SetAside> {
        if identities.is_empty() {
            return Vec::new();
        }
        let attributed = self
            .until_done("attribution", identities.len(), |_| {
                self.batches.attribute(identities)
            })
            .await;
        match attributed {
            Ok(rows) => {
                metrics::counter!("visitor_events_attributed_total").increment(rows);
                Vec::new()
            }
            Err(error) => {
                tracing::error!(%error, "PostgreSQL refused identifications; setting them aside");
                identities
                    .iter()
                    .map(|identity| SetAside {
                        name: format!("identify-{}", identity.anonymous_id),
                        item: Aside::Record(Record::Identity(identity.clone())),
                        reason: format!("PostgreSQL refused it: {error}"),
                    })
                    .collect()
            }
        }
    }

    /// Runs `attempt` until it succeeds or PostgreSQL refuses the data itself (the error
    /// returned), retrying passing failures with the retry policy's delays; `attempt` is told
    /// whether this is a retry (`thorough`).
    async fn until_done<V, F>(
        &self,
        what: &'static str,
        items: usize,
        mut attempt: impl FnMut(bool) -> F,
    ) -> Result<V, BatchError>
    where
        F: Future<Output = Result<V, BatchError>>,
    {
        let mut tries = 0;
        loop {
            match attempt(tries > 0).await {
                Ok(done) => {
                    if tries > 0 {
                        tracing::info!(what, items, attempt = tries, "stored after retrying");
                    }
                    return Ok(done);
                }
                Err(error) if error.is_data_error() => return Err(error),
                Err(error) => {
                    tries += 1;
                    metrics::counter!("writer_retries_total").increment(1);
                    let delay = self.retry.delay(tries);
                    if self.retry.exhausted(tries) {
                        metrics::counter!("writer_failures_total").increment(1);
                        tracing::error!(
                            %error, what, items, attempt = tries, retry_in = ?delay,
                            "PostgreSQL write failed after all quick retries; the batch stays in the hand-off and is retried"
                        );
                    } else {
                        tracing::warn!(%error, what, items, attempt = tries, retry_in = ?delay, "PostgreSQL write failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Isolates the events PostgreSQL refuses and stores the rest; returns the refused ones.
    async fn write_one_by_one(&self, events: &[Event]) -> Vec<SetAside> {
        let mut refused = Vec::new();
        for event in events {
            let single = [event.clone()];
            let started = Instant::now();
            match self.batches.write(&single, true).await {
                Ok(written) => record_written(1, written, started),
                Err(error) if error.is_data_error() => {
                    tracing::error!(%error, event_id = %event.event_id, "PostgreSQL refused an event; setting it aside");
                    metrics::counter!("events_refused_total").increment(1);
                    refused.push(SetAside {
                        name: format!("refused-{}", event.event_id),
                        item: Aside::Record(Record::Event(event.clone())),
                        reason: format!("PostgreSQL refused it: {error}"),
                    });
                }
                // A passing failure: back to the patient path for this one event.
                Err(_) => refused.extend(Box::pin(self.write_until_stored(&single)).await),
            }
        }
        refused
    }
}

fn record_written(events: usize, written: Written, started: Instant) {
    metrics::counter!("writer_batches_total").increment(1);
    metrics::counter!("writer_rows_total").increment(written.stored);
    metrics::counter!("writer_duplicates_total")
        .increment(events as u64 - written.stored - written.expired);
    metrics::histogram!("writer_batch_seconds").record(started.elapsed().as_secs_f64());
}
