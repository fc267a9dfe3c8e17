//! The writer's loop on Tokio's paused clock, with a source and a store in memory: retries and
//! their delays, set-asides, the order of commits. (The end-to-end tests against PostgreSQL are
//! in `tests/api/`.)

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::*;
use crate::event::{Arrival, EventRules};

/// What the source and the store saw.
#[derive(Default)]
struct Log {
    committed: Mutex<Vec<usize>>,
    set_aside: Mutex<Vec<SetAside>>,
    /// Each write attempt: when, and the events it carried.
    attempts: Mutex<Vec<(Instant, Vec<Uuid>)>>,
    stored: Mutex<Vec<Uuid>>,
}

/// Batches handed out in order, each confirmed by its index.
struct MemorySource {
    batches: VecDeque<Fetched<usize>>,
    log: Arc<Log>,
}

impl Source for MemorySource {
    type Receipt = usize;

    async fn ready(&mut self) {
        if self.batches.is_empty() {
            std::future::pending::<()>().await;
        }
    }

    async fn next(
        &mut self,
        _max: usize,
        _linger: Duration,
        _stopping: &mut watch::Receiver<bool>,
    ) -> Option<Fetched<usize>> {
        self.batches.pop_front()
    }

    fn has_backlog(&mut self) -> bool {
        !self.batches.is_empty()
    }

    async fn commit(&mut self, receipt: usize) {
        self.log.committed.lock().push(receipt);
    }

    async fn set_aside(&self, item: SetAside) {
        self.log.set_aside.lock().push(item);
    }
}

/// Stores events in memory; an event in `failing` makes the attempts that carry it fail for a
/// passing reason that many times, one in `refused` makes them fail for its content.
struct MemoryStore {
    log: Arc<Log>,
    failing: Mutex<HashMap<Uuid, usize>>,
    refused: Vec<Uuid>,
}

/// PostgreSQL's answer to a row that breaks a CHECK constraint.
#[derive(Debug, thiserror::Error)]
#[error("new row violates check constraint")]
struct CheckViolation;

impl sqlx::error::DatabaseError for CheckViolation {
    fn message(&self) -> &str {
        "new row violates check constraint"
    }
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some("23514".into())
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::CheckViolation
    }
}

impl Store for MemoryStore {
    async fn write(&self, events: &[Event], _thorough: bool) -> Result<Written, BatchError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        self.log.attempts.lock().push((Instant::now(), ids.clone()));
        {
            let mut failing = self.failing.lock();
            let failing_id = ids
                .iter()
                .find(|id| failing.get(id).is_some_and(|n| *n > 0));
            if let Some(id) = failing_id {
                *failing.get_mut(id).expect("found") -= 1;
                return Err(BatchError::CatalogueUnavailable);
            }
        }
        if ids.iter().any(|id| self.refused.contains(id)) {
            return Err(BatchError::Sql(sqlx::Error::Database(Box::new(
                CheckViolation,
            ))));
        }
        let mut stored = self.log.stored.lock();
        let before = stored.len();
        for id in ids {
            if !stored.contains(&id) {
                stored.push(id);
            }
        }
        Ok(Written {
            stored: (stored.len() - before) as u64,
            expired: 0,
        })
    }

    async fn attribute(&self, _identities: &[Identity]) -> Result<u64, BatchError> {
        Ok(0)
    }
}

fn event(user: i64) -> Event {
    let body = json!({"user_id": user, "asin": "B0TEST", "event_type": "view"});
    Event::from_value(body, &EventRules::default(), Arrival::now()).unwrap()
}

fn fetched(events: &[Event], receipt: usize) -> Fetched<usize> {
    Fetched {
        records: events.iter().cloned().map(Record::Event).collect(),
        undecodable: Vec::new(),
        receipt,
    }
}

const POLICY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(2),
    parked_delay: Duration::from_secs(5),
};

fn config(batch_size: usize) -> WriterConfig {
    WriterConfig {
        batch_size,
        batch_interval: Duration::from_millis(10),
        parallel_batches: 2,
        known_users: 10,
        retry: POLICY,
        partitions: PartitionConfig::default(),
    }
}

/// Runs a writer over `batches` into a store with `failing` and `refused`, until it has
/// committed them all; returns what it saw.
async fn run(
    batches: Vec<Fetched<usize>>,
    batch_size: usize,
    failing: HashMap<Uuid, usize>,
    refused: Vec<Uuid>,
) -> Arc<Log> {
    let log = Arc::new(Log::default());
    let count = batches.len();
    let source = MemorySource {
        batches: batches.into(),
        log: log.clone(),
    };
    let store = MemoryStore {
        log: log.clone(),
        failing: Mutex::new(failing),
        refused,
    };
    let handle = start_with(store, source, config(batch_size), &Health::default());
    let deadline = Instant::now() + Duration::from_secs(600);
    while log.committed.lock().len() < count {
        assert!(
            Instant::now() < deadline,
            "the batches were never committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.drain(Duration::from_secs(1)).await, "drained");
    log
}

#[tokio::test(start_paused = true)]
async fn a_passing_failure_is_retried_with_the_policys_delays_without_end_and_committed_once_stored()
 {
    let events = [event(1), event(2)];
    let failing = HashMap::from([(events[0].event_id, 6)]);
    let log = run(vec![fetched(&events, 0)], 10, failing, Vec::new()).await;

    let attempts = log.attempts.lock();
    assert_eq!(
        attempts.len(),
        7,
        "one attempt, three quick retries, three parked"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // Doubling from the base delay, with up to 25% jitter below; then the parked delay.
    for (gap, nominal) in gaps.iter().zip([100, 200, 400, 5000, 5000, 5000]) {
        let nominal = Duration::from_millis(nominal);
        assert!(
            *gap <= nominal + Duration::from_millis(20) && *gap >= nominal.mul_f64(0.75),
            "{gap:?} against {nominal:?}: {gaps:?}"
        );
    }
    assert_eq!(*log.committed.lock(), [0]);
    assert_eq!(log.stored.lock().len(), 2);
    assert!(log.set_aside.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_event_refused_for_its_content_is_set_aside_and_the_rest_of_its_batch_stored() {
    let events = [event(1), event(2), event(3)];
    let refused = vec![events[1].event_id];
    let log = run(vec![fetched(&events, 0)], 10, HashMap::new(), refused).await;

    assert_eq!(*log.stored.lock(), [events[0].event_id, events[2].event_id]);
    let set_aside = log.set_aside.lock();
    assert_eq!(set_aside.len(), 1);
    assert!(
        matches!(&set_aside[0].item, Aside::Record(Record::Event(e)) if e.event_id == events[1].event_id),
        "{:?}",
        set_aside[0]
    );
    assert!(
        set_aside[0].reason.contains("refused"),
        "{}",
        set_aside[0].reason
    );
    assert_eq!(
        *log.committed.lock(),
        [0],
        "committed once what could be stored is"
    );
}

#[tokio::test(start_paused = true)]
async fn batches_written_side_by_side_are_committed_in_the_order_they_were_fetched() {
    // Full batches (of 2): the writer is behind, and writes two at once. The first one fails
    // twice, so the second is stored first; it is committed second all the same.
    let (first, second) = ([event(1), event(2)], [event(3), event(4)]);
    let failing = HashMap::from([(first[0].event_id, 2)]);
    let batches = vec![fetched(&first, 0), fetched(&second, 1)];
    let log = run(batches, 2, failing, Vec::new()).await;

    let stored = log.stored.lock();
    assert_eq!(
        stored[..2],
        [second[0].event_id, second[1].event_id],
        "the second stored first"
    );
    assert_eq!(*log.committed.lock(), [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn what_cannot_be_decoded_is_set_aside_and_its_batch_committed() {
    let events = [event(1)];
    let mut batch = fetched(&events, 0);
    batch.undecodable.push(SetAside {
        name: "undecodable-0".to_owned(),
        item: Aside::Bytes(b"not a record".to_vec()),
        reason: "not an event".to_owned(),
    });
    let log = run(vec![batch], 10, HashMap::new(), Vec::new()).await;

    assert_eq!(log.set_aside.lock().len(), 1);
    assert_eq!(log.stored.lock().len(), 1);
    assert_eq!(*log.committed.lock(), [0]);
}
