//! The appender: one thread owns the open segment and writes every append.
//!
//! Group commit: while the thread writes and flushes one group, new appends queue in its channel;
//! the next round takes all of them at once, so they share one `write` and one `fdatasync`. Under
//! load the cost of a flush is spread over every request that arrived during the previous one.
//!
//! Nothing but the write and its flush is on the path of an acknowledgement: the next segment is
//! made ahead of time by a thread of its own (the file, and the directory flush that makes it
//! survive a crash), so that a rotation only swaps files; an old segment still to flush (the
//! interval policy) is flushed off this thread; released segments are deleted by the reader.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{
    AppendError, JournalConfig, Position, Shared, SyncPolicy, record, segment_path, sync_dir,
};
use crate::health::Health;

/// The appender's name in the health registry.
pub const COMPONENT: &str = "journal-appender";

/// Most bytes written as one group.
const MAX_GROUP_BYTES: u64 = 8 * 1024 * 1024;

pub(super) enum Message {
    Append {
        payloads: Vec<Vec<u8>>,
        bytes: u64,
        reply: oneshot::Sender<Result<(), AppendError>>,
    },
    Close(oneshot::Sender<()>),
}

pub(super) fn start(
    shared: Arc<Shared>,
    config: &JournalConfig,
    first_segment: u64,
    health: &Health,
) -> io::Result<mpsc::Sender<Message>> {
    let (sender, receiver) = mpsc::channel();
    let segment = Segment::create(&shared.dir, first_segment)?;
    shared.segments.lock().insert(first_segment, 0);
    let spare = Spare::prepare(&shared.dir, first_segment + 1);
    let mut appender = Appender {
        shared,
        sync: config.sync,
        segment_bytes: config.segment_bytes,
        segment,
        spare,
        stray_bytes: false,
        unsynced_since: None,
        buffer: Vec::with_capacity(64 * 1024),
    };
    health.spawn_thread(COMPONENT, move || appender.run(receiver))?;
    Ok(sender)
}

struct Segment {
    id: u64,
    file: File,
    len: u64,
}

impl Segment {
    /// Makes the file of segment `id`, and flushes the directory so that the file survives a
    /// crash. A file of that name can only be left over from a creation that failed half-way, or
    /// a spare never used (ids only grow), so it is emptied.
    fn create(dir: &Path, id: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_path(dir, id))?;
        sync_dir(dir)?;
        Ok(Self { id, file, len: 0 })
    }
}

/// The next segment, being made by a thread of its own.
struct Spare {
    id: u64,
    making: Option<thread::JoinHandle<io::Result<Segment>>>,
}

impl Spare {
    fn prepare(dir: &Path, id: u64) -> Self {
        let dir = dir.to_path_buf();
        let making = thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || Segment::create(&dir, id))
            .ok();
        Self { id, making }
    }

    /// The spare segment; made here and now if its thread could not make it.
    fn take(self, dir: &Path) -> io::Result<Segment> {
        let made = self
            .making
            .map(|thread| {
                thread.join().unwrap_or_else(|_| {
                    Err(io::Error::other("the spare segment's thread panicked"))
                })
            })
            .unwrap_or_else(|| Err(io::Error::other("no thread made the spare segment")));
        match made {
            Ok(segment) => Ok(segment),
            Err(error) => {
                tracing::warn!(%error, "the spare journal segment was not made ahead; making it now");
                Segment::create(dir, self.id)
            }
        }
    }
}

struct Appender {
    shared: Arc<Shared>,
    sync: SyncPolicy,
    segment_bytes: u64,
    segment: Segment,
    spare: Spare,
    /// A failed write left bytes past the segment's length, which a failed cut could not remove.
    stray_bytes: bool,
    /// Since when written bytes await a flush (interval policy only).
    unsynced_since: Option<Instant>,
    buffer: Vec<u8>,
}

type Reply = (oneshot::Sender<Result<(), AppendError>>, u64);

impl Appender {
    fn run(&mut self, receiver: mpsc::Receiver<Message>) {
        loop {
            if self.flush_due() {
                self.flush_quietly();
            }
            let first = match self.flush_deadline() {
                Some(deadline) => match receiver
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(message) => message,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match receiver.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            fail::fail_point!("journal-appender");
            let mut replies: Vec<Reply> = Vec::new();
            let mut closing = None;
            let mut group_bytes = 0;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Append {
                        payloads,
                        bytes,
                        reply,
                    } => {
                        let start = self.buffer.len();
                        let encoded: Result<(), _> = payloads
                            .iter()
                            .try_for_each(|payload| record::encode(payload, &mut self.buffer));
                        match encoded {
                            Ok(()) => {
                                replies.push((reply, bytes));
                                group_bytes += bytes;
                            }
                            // `Journal::append` checks sizes first; should one slip through, it
                            // is refused alone and the group goes on.
                            Err(error) => {
                                self.buffer.truncate(start);
                                self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
                                let _ = reply.send(Err(error.into()));
                            }
                        }
                    }
                    Message::Close(done) => closing = Some(done),
                }
                if closing.is_none() && group_bytes < MAX_GROUP_BYTES {
                    next = receiver.try_recv().ok();
                }
            }
            if !replies.is_empty() {
                self.write_group(replies);
            }
            if let Some(done) = closing {
                self.flush_quietly();
                let _ = done.send(());
                break;
            }
        }
        self.flush_quietly();
        // Anything still queued after a close is refused, releasing its reservation.
        while let Ok(message) = receiver.try_recv() {
            if let Message::Append { bytes, reply, .. } = message {
                self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
                let _ = reply.send(Err(AppendError::Closed));
            }
        }
    }

    /// When written bytes must be flushed at the latest (interval policy with bytes unflushed).
    fn flush_deadline(&self) -> Option<Instant> {
        match (self.sync, self.unsynced_since) {
            (SyncPolicy::Interval(interval), Some(since)) => Some(since + interval),
            _ => None,
        }
    }

    fn flush_due(&self) -> bool {
        self.flush_deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
    }

    fn write_group(&mut self, replies: Vec<Reply>) {
        let outcome = self.write_buffer();
        self.buffer.clear();
        match outcome {
            Ok(()) => {
                if self.shared.failure.lock().is_some() {
                    *self.shared.failure.lock() = None;
                    tracing::info!("the journal takes writes again");
                }
                for (reply, _) in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, segment = self.segment.id, "journal write failed; the appends are refused");
                let error = Arc::new(error);
                *self.shared.failure.lock() =
                    Some((crate::telemetry::monotonic_ms(), error.clone()));
                for (reply, bytes) in replies {
                    self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
                    let _ = reply.send(Err(AppendError::Io(error.clone())));
                }
            }
        }
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        let len = self.buffer.len() as u64;
        if self.segment.len > 0 && self.segment.len + len > self.segment_bytes {
            let started = Instant::now();
            self.rotate()?;
            metrics::histogram!("journal_rotation_seconds").record(started.elapsed().as_secs_f64());
        }
        if let Err(error) = self.write_and_sync() {
            // Cut whatever part of the group reached the file. Should that fail too, no harm:
            // writes go at the segment's length, so the next group overwrites the stray bytes
            // (and a rotation tries the cut again).
            self.stray_bytes = self.segment.file.set_len(self.segment.len).is_err();
            return Err(error);
        }
        self.segment.len += len;
        self.publish();
        Ok(())
    }

    fn write_and_sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.segment
            .file
            .write_all_at(&self.buffer, self.segment.len)?;
        metrics::histogram!("journal_write_seconds").record(started.elapsed().as_secs_f64());
        match self.sync {
            SyncPolicy::Always => self.flush(),
            SyncPolicy::Interval(_) => {
                self.unsynced_since.get_or_insert_with(Instant::now);
                Ok(())
            }
        }
    }

    /// Makes the written end visible to the reader and to the space accounting.
    fn publish(&self) {
        self.shared
            .segments
            .lock()
            .insert(self.segment.id, self.segment.len);
        self.shared.durable.send_replace(Position {
            segment: self.segment.id,
            offset: self.segment.len,
        });
    }

    /// Closes the open segment and begins the spare one.
    fn rotate(&mut self) -> io::Result<()> {
        if self.stray_bytes {
            // Leave the segment at its last whole record; rare, so done here.
            self.segment.file.set_len(self.segment.len)?;
            self.flush()?;
            self.stray_bytes = false;
        }
        let next_id = self.segment.id + 1;
        let spare = std::mem::replace(
            &mut self.spare,
            Spare::prepare(&self.shared.dir, next_id + 1),
        );
        let next = spare.take(&self.shared.dir)?;
        let old = std::mem::replace(&mut self.segment, next);
        self.shared.segments.lock().insert(next_id, 0);
        if self.unsynced_since.take().is_some() {
            // The interval policy acknowledged these bytes before their flush already.
            flush_in_background(old);
        }
        self.publish();
        Ok(())
    }

    /// Flushes the open segment to the disk itself, timed and counted.
    fn flush(&self) -> io::Result<()> {
        let started = Instant::now();
        self.segment.file.sync_data()?;
        metrics::histogram!("journal_flush_seconds").record(started.elapsed().as_secs_f64());
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes what awaits a flush; after a failure it is due again one interval later.
    fn flush_quietly(&mut self) {
        if self.unsynced_since.is_some() {
            match self.flush() {
                Ok(()) => self.unsynced_since = None,
                Err(error) => {
                    tracing::error!(%error, "journal flush failed; trying again after the interval");
                    self.unsynced_since = Some(Instant::now());
                }
            }
        }
    }
}

/// Flushes a closed segment on a thread of its own.
fn flush_in_background(old: Segment) {
    let spawned = thread::Builder::new()
        .name("journal-flush".into())
        .spawn(move || {
            if let Err(error) = old.file.sync_data() {
                tracing::error!(%error, segment = old.id, "could not flush a closed journal segment");
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start a thread to flush a closed journal segment; the kernel writes it back later");
    }
}
