//! The journal: the default hand-off between the request path and the background writer, on
//! the node's own disk ([`JournalSource`] is the writer's side).
//!
//! Each accepted event is appended to an append-only journal on local disk before the client gets
//! its 200; the background writer reads the journal, stores batches in PostgreSQL, and only then
//! releases the space. A crash at any moment loses nothing that was acknowledged: on start-up the
//! journal is recovered (torn tail cut, damage quarantined) and whatever it still holds is written
//! again, which the unique `event_id` makes harmless.
//!
//! Layout: a directory of segment files `{id:020}.log`, appended in id order, each at most
//! `segment_bytes` long (a group of records is never split across two), plus `quarantine/` for
//! damaged bytes and events PostgreSQL refused. Concurrent appends share one write and one flush
//! (group commit); see [`appender`].

mod appender;
pub mod binary;
pub mod reader;
pub mod record;
mod recovery;
mod released;
mod source;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

// parking_lot's mutex is not poisoned by a panic: a panic in one holder cannot make every later
// append or read fail.
use parking_lot::Mutex;

use tokio::sync::{oneshot, watch};

pub use appender::COMPONENT as APPENDER;
pub use reader::{JournalReader, ReadRecord};
pub use recovery::RecoveryReport;
pub use source::JournalSource;

use crate::health::Health;

/// When appended records reach the disk itself (not just the kernel's page cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Flush before acknowledging: a power cut loses nothing acknowledged.
    Always,
    /// Acknowledge once written to the kernel and flush on this interval: a killed process loses
    /// nothing, a power cut can lose up to one interval.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// Bytes of unreleased records and appends in flight beyond which appends are refused. The
    /// disk holds at most one segment more: released records until their segment is finished.
    pub max_bytes: u64,
    /// Size at which a segment is closed and the next one begun.
    pub segment_bytes: u64,
    pub sync: SyncPolicy,
}

/// Why a record of the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Binary(#[from] binary::DecodeError),
}

/// Decodes a record of the journal: an event in the binary form; or as JSON, an identification,
/// or an event an older build journaled.
pub fn decode(payload: &[u8]) -> Result<crate::handoff::Record, DecodeError> {
    if binary::is_binary(payload) {
        Ok(crate::handoff::Record::Event(binary::decode(payload)?))
    } else {
        Ok(crate::handoff::json::decode(payload)?)
    }
}

/// How long a failed write keeps the journal from being ready, unless a write succeeds first.
pub const FAILURE_HOLDS: Duration = Duration::from_secs(5);

/// Why the journal cannot take events now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotTaking {
    #[error("the journal is full ({used} of {limit} bytes in use)")]
    Full { used: u64, limit: u64 },
    #[error("the journal's last write failed")]
    Failing(#[source] Arc<io::Error>),
}

impl Default for JournalConfig {
    /// `data/journal`, 1 GiB at most, segments of 16 MiB, flushed before every acknowledgement.
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/journal"),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            sync: SyncPolicy::Always,
        }
    }
}

/// The flush interval under [`SyncPolicy::Interval`] unless told otherwise.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// A place in the journal: a segment and a byte offset in it. Positions order as the records do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the journal is full ({used} of {limit} bytes in use)")]
    Full { used: u64, limit: u64 },
    /// Shared by every append of the failed group, hence the `Arc`.
    #[error("the journal could not be written: {0}")]
    Io(#[source] Arc<io::Error>),
    #[error(transparent)]
    TooLarge(#[from] record::TooLarge),
    #[error("the journal is closed")]
    Closed,
}

/// State shared by the appender thread, the reader and the handles.
struct Shared {
    dir: PathBuf,
    limit: u64,
    /// Bytes appended and not yet released, plus bytes reserved by appends in flight.
    used: AtomicU64,
    /// Live segments and their durable sizes.
    segments: Mutex<BTreeMap<u64, u64>>,
    /// The end of what has been written (and flushed, under [`SyncPolicy::Always`]).
    durable: watch::Sender<Position>,
    /// Flushes (`fdatasync`) done so far.
    flushes: AtomicU64,
    /// The last write's failure, until a write succeeds: when (on the monotonic clock, ms) and
    /// why.
    failure: Mutex<Option<(u64, Arc<io::Error>)>>,
}

impl Shared {
    fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.dir.join("quarantine")
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A handle for appending; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    appender: mpsc::Sender<appender::Message>,
    // Holds the directory lock for as long as any handle lives.
    _lock: Arc<File>,
}

/// An append on its way to disk; await it for the outcome.
pub struct PendingAppend(oneshot::Receiver<Result<(), AppendError>>);

impl std::future::Future for PendingAppend {
    type Output = Result<(), AppendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(AppendError::Closed)))
    }
}

impl Journal {
    /// Opens (creating if needed) and recovers the journal in `config.dir`, and starts its
    /// appender thread. Returns the append handle, the one reader, and what recovery found.
    pub fn open(
        config: JournalConfig,
        health: &Health,
    ) -> io::Result<(Journal, JournalReader, RecoveryReport)> {
        fs::create_dir_all(&config.dir)?;
        let lock = File::create(config.dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the journal {} is in use by another process",
                    config.dir.display()
                ),
            )
        })?;
        let mut report = recovery::recover(&config.dir)?;
        let next_segment = report
            .segments
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        let (mark, released) = released::ReleasedMark::open(&config.dir)?;
        let start = released
            .filter(|&position| recovery::is_boundary(&config.dir, &report, position))
            .unwrap_or_else(|| Position {
                segment: report
                    .segments
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or(next_segment),
                offset: 0,
            });
        // Segments wholly released before a crash, their deletion undone or never done.
        let before: Vec<u64> = report
            .segments
            .range(..start.segment)
            .map(|(&id, _)| id)
            .collect();
        for id in before {
            fs::remove_file(segment_path(&config.dir, id))?;
            report.segments.remove(&id);
        }
        report.released = start;
        let used = report.segments.values().sum::<u64>() - start.offset;

        let (durable, durable_rx) = watch::channel(Position {
            segment: next_segment,
            offset: 0,
        });
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            limit: config.max_bytes,
            used: AtomicU64::new(used),
            segments: Mutex::new(report.segments.clone()),
            durable,
            flushes: AtomicU64::new(0),
            failure: Mutex::new(None),
        });
        let appender = appender::start(shared.clone(), &config, next_segment, health)?;
        let reader = JournalReader::new(shared.clone(), durable_rx, start, mark);
        let journal = Journal {
            shared,
            appender,
            _lock: Arc::new(lock),
        };
        Ok((journal, reader, report))
    }

    /// Starts appending `payloads` as one group. Refuses at once, writing nothing, when the journal
    /// has no room; otherwise the returned future resolves once the records are durable.
    pub fn append(&self, payloads: Vec<Vec<u8>>) -> Result<PendingAppend, AppendError> {
        for payload in &payloads {
            record::check(payload)?;
        }
        let bytes = payloads
            .iter()
            .map(|p| record::encoded_len(p.len()) as u64)
            .sum();
        self.reserve(bytes)?;
        let (reply, outcome) = oneshot::channel();
        let message = appender::Message::Append {
            payloads,
            bytes,
            reply,
        };
        if self.appender.send(message).is_err() {
            self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(AppendError::Closed);
        }
        Ok(PendingAppend(outcome))
    }

    fn reserve(&self, bytes: u64) -> Result<(), AppendError> {
        let limit = self.shared.limit;
        self.shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= limit).then_some(used + bytes)
            })
            .map(|_| ())
            .map_err(|used| AppendError::Full { used, limit })
    }

    /// Bytes in use: records not yet released and appends in flight.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used.load(Ordering::Acquire)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.shared.limit
    }

    /// Why the journal cannot take events now, if it cannot: it is full (less room left than
    /// a large batch, or 1% of its bound), or its last write failed within [`FAILURE_HOLDS`]
    /// (then the next append tries again, so that a disk that mends is noticed).
    pub fn not_taking(&self) -> Option<NotTaking> {
        let (used, limit) = (self.used_bytes(), self.shared.limit);
        let margin = (limit / 100).clamp(4096, 1 << 20);
        if limit.saturating_sub(used) < margin {
            return Some(NotTaking::Full { used, limit });
        }
        let failure = self.shared.failure.lock().clone();
        failure
            .filter(|(at, _)| {
                crate::telemetry::monotonic_ms().saturating_sub(*at)
                    < FAILURE_HOLDS.as_millis() as u64
            })
            .map(|(_, cause)| NotTaking::Failing(cause))
    }

    /// Flushes what is written and stops the appender; later appends fail with `Closed`.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.appender.send(appender::Message::Close(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// Keeps `bytes` for a person to inspect, in `quarantine/{name}`; never overwrites.
    pub fn quarantine(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        quarantine(&self.shared.quarantine_dir(), name, bytes)
    }
}

fn quarantine(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    fs::create_dir_all(dir)?;
    let mut path = dir.join(name);
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    let mut file = File::create_new(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(path)
}

/// The journal's metrics.
pub fn describe_metrics() {
    use metrics::{Unit, describe_gauge, describe_histogram};

    describe_gauge!(
        "journal_bytes",
        Unit::Bytes,
        "Bytes of the journal not yet released: events not yet in PostgreSQL, and appends in flight"
    );
    describe_histogram!(
        "journal_write_seconds",
        Unit::Seconds,
        "Time of one journal write (a group of appends), before its flush"
    );
    describe_histogram!(
        "journal_flush_seconds",
        Unit::Seconds,
        "Time of one journal flush (fdatasync)"
    );
    describe_histogram!(
        "journal_rotation_seconds",
        Unit::Seconds,
        "Time to close a full journal segment and begin the next"
    );
}

#[cfg(test)]
mod tests;
