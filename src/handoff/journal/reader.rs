//! The reader: the background writer's view of the journal, from the oldest unreleased record to
//! the durable end. There is exactly one; it reads in order and releases space behind it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::record::{self, Piece};
use super::released::ReleasedMark;
use super::{Position, Shared};

/// Bytes read from a segment at a time (grown for a record larger than this): about a batch of
/// 1,000 typical events.
const READ_CHUNK_BYTES: u64 = 256 * 1024;

/// A record read back: its payload and the position just past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub payload: Vec<u8>,
    pub end: Position,
}

pub struct JournalReader {
    shared: Arc<Shared>,
    durable: watch::Receiver<Position>,
    at: Position,
    /// Everything before this is stored for good.
    released: Position,
    /// Segments released whose files are still to delete.
    undeleted: Vec<u64>,
    file: Option<(u64, File)>,
    /// `released`, on disk.
    mark: ReleasedMark,
}

/// Deletes the segment files `ids`; returns the ids whose file is still there, with the first
/// error. The directory is not flushed: a deletion a crash undoes brings back stored events,
/// which are stored again harmlessly, and a directory flush would make the appender's next flush
/// wait for it (one journal commit of the file system at a time).
fn delete_segments(shared: &Shared, ids: Vec<u64>) -> (Vec<u64>, io::Result<()>) {
    let mut left = Vec::new();
    let mut outcome = Ok(());
    for id in ids {
        match fs::remove_file(shared.segment_path(id)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                left.push(id);
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
    }
    (left, outcome)
}

impl JournalReader {
    pub(super) fn new(
        shared: Arc<Shared>,
        durable: watch::Receiver<Position>,
        start: Position,
        mark: ReleasedMark,
    ) -> Self {
        Self {
            shared,
            durable,
            at: start,
            released: start,
            undeleted: Vec::new(),
            file: None,
            mark,
        }
    }

    /// Whether durable records wait to be read.
    pub fn has_unread(&mut self) -> bool {
        self.skip_finished_segments();
        self.at.offset < self.readable_end()
    }

    /// Waits until durable records wait to be read.
    pub async fn wait_for_unread(&mut self) {
        while !self.has_unread() {
            // The sender lives in `Shared`, which this reader holds: `changed` cannot fail.
            let _ = self.durable.changed().await;
        }
    }

    /// Reads up to `max_records` records past the read position, from one segment. Damaged bytes
    /// met on the way are quarantined and skipped. Never blocks on an empty journal: it returns
    /// no records.
    pub fn read(&mut self, max_records: usize) -> io::Result<Vec<ReadRecord>> {
        self.skip_finished_segments();
        let end = self.readable_end();
        let mut want = READ_CHUNK_BYTES.min(end.saturating_sub(self.at.offset));
        let mut records = Vec::new();
        while want > 0 && records.len() < max_records {
            let data = self.read_at(self.at.offset, want as usize)?;
            let reached_end = self.at.offset + want == end;
            let mut consumed = 0;
            for piece in record::scan(&data) {
                if records.len() == max_records {
                    break;
                }
                match piece {
                    Piece::Record(range) => {
                        consumed = range.end;
                        records.push(ReadRecord {
                            payload: record::payload(&data, &range).to_vec(),
                            end: Position {
                                segment: self.at.segment,
                                offset: self.at.offset + range.end as u64,
                            },
                        });
                    }
                    // Cut by the end of this chunk, not damaged: read it next round.
                    Piece::Damaged(range) if !reached_end && range.end == data.len() => break,
                    Piece::Damaged(range) => {
                        self.quarantine(&data[range.clone()], self.at.offset + range.start as u64)?;
                        consumed = range.end;
                    }
                }
            }
            if consumed == 0 {
                // One record larger than the chunk: read more of it at once.
                want = (want * 2).min(end - self.at.offset);
                continue;
            }
            self.at.offset += consumed as u64;
            want = READ_CHUNK_BYTES.min(end - self.at.offset);
        }
        Ok(records)
    }

    /// Marks everything before `upto` as stored for good: its bytes no longer count against the
    /// journal's limit, and the segments it covers entirely are deleted, on a blocking thread
    /// (file deletion and a directory flush do not belong on an async one). A deletion that
    /// fails is tried again at the next release.
    ///
    /// The position is kept on disk first ([`ReleasedMark`]), so that a restart resumes there.
    pub async fn release(&mut self, upto: Position) -> io::Result<()> {
        if upto > self.released
            && let Err(error) = self.mark.write(upto)
        {
            tracing::warn!(%error, "could not keep the released position; a restart would store again what was released since the last one kept");
        }
        let finished = self.account(upto);
        if self
            .file
            .as_ref()
            .is_some_and(|(open, _)| finished.contains(open))
        {
            self.file = None;
        }
        self.undeleted.extend(finished);
        if self.undeleted.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.undeleted);
        let shared = self.shared.clone();
        let (left, outcome) = tokio::task::spawn_blocking(move || delete_segments(&shared, ids))
            .await
            .map_err(io::Error::other)?;
        self.undeleted = left;
        outcome
    }

    /// Frees the bytes before `upto` and takes the segments wholly before it out of the map;
    /// returns their ids. Holds the segment map's lock for no I/O.
    fn account(&mut self, upto: Position) -> Vec<u64> {
        if upto <= self.released {
            return Vec::new();
        }
        let durable_segment = self.durable.borrow().segment;
        let mut segments = self.shared.segments.lock();
        let freed: u64 = segments
            .range(self.released.segment..=upto.segment)
            .map(|(&id, &len)| {
                let start = if id == self.released.segment {
                    self.released.offset
                } else {
                    0
                };
                let end = if id == upto.segment { upto.offset } else { len };
                end.saturating_sub(start)
            })
            .sum();
        self.shared.used.fetch_sub(freed, Ordering::AcqRel);
        self.released = upto;

        let finished: Vec<u64> = segments
            .iter()
            .take_while(|&(&id, &len)| {
                id < upto.segment
                    || (id == upto.segment && id < durable_segment && upto.offset >= len)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in &finished {
            segments.remove(id);
        }
        finished
    }

    /// The read position: everything before it has been handed out.
    pub fn position(&self) -> Position {
        self.at
    }

    /// Moves past segments that are closed and read to their end.
    fn skip_finished_segments(&mut self) {
        let durable = *self.durable.borrow();
        let segments = self.shared.segments.lock();
        while self.at.segment < durable.segment {
            let len = segments.get(&self.at.segment).copied().unwrap_or(0);
            if self.at.offset < len {
                break;
            }
            let next = segments
                .range(self.at.segment + 1..)
                .next()
                .map_or(durable.segment, |(&id, _)| id);
            self.at = Position {
                segment: next,
                offset: 0,
            };
        }
    }

    /// How far the read position's segment may be read.
    fn readable_end(&self) -> u64 {
        let durable = *self.durable.borrow();
        if self.at.segment == durable.segment {
            durable.offset
        } else {
            let segments = self.shared.segments.lock();
            segments.get(&self.at.segment).copied().unwrap_or(0)
        }
    }

    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let segment = self.at.segment;
        if self.file.as_ref().is_none_or(|(open, _)| *open != segment) {
            self.file = Some((segment, File::open(self.shared.segment_path(segment))?));
        }
        let (_, file) = self.file.as_ref().unwrap();
        let mut data = vec![0; len];
        file.read_exact_at(&mut data, offset)?;
        Ok(data)
    }

    fn quarantine(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let name = format!("segment-{:020}-at-{offset}.bin", self.at.segment);
        let path = super::quarantine(&self.shared.quarantine_dir(), &name, bytes)?;
        tracing::error!(
            bytes = bytes.len(),
            path = %path.display(),
            "damaged bytes in the journal were set aside; they hold no readable event"
        );
        Ok(())
    }
}
