//! The journal as the two sides of the hand-off: [`Handoff`] for the request path, and
//! [`JournalSource`], what the writer reads.

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{AppendError, Journal, JournalReader, Position, ReadRecord};
use crate::event::{Event, Identity};
use crate::handoff::{Fetched, Handoff, HandoffError, HandoffState, Pending, SetAside, Source};

impl From<AppendError> for HandoffError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Full { used, limit } => HandoffError::Full { used, limit },
            AppendError::Closed => HandoffError::Closed,
            error => HandoffError::unavailable(error),
        }
    }
}

impl Handoff for Journal {
    fn submit(&self, events: &[&Event]) -> Result<Pending, HandoffError> {
        let payloads = events
            .iter()
            .map(|event| super::binary::encode(event))
            .collect();
        let pending = self.append(payloads)?;
        Ok(pending
            .map(|outcome| outcome.map_err(HandoffError::from))
            .boxed())
    }

    fn submit_identity(&self, identity: &Identity) -> Result<Pending, HandoffError> {
        let pending = self.append(vec![crate::handoff::json::encode_identity(identity)])?;
        Ok(pending
            .map(|outcome| outcome.map_err(HandoffError::from))
            .boxed())
    }

    fn state(&self) -> HandoffState {
        HandoffState::Journal {
            used_bytes: self.used_bytes(),
            limit_bytes: self.limit_bytes(),
            error: self.not_taking().map(crate::telemetry::chain),
        }
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Journal::close(self).boxed()
    }
}

/// Wait before trying again to read the journal, or to write to its quarantine, after a failure.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The writer's side of the journal: reads in order, releases space once batches are stored, and
/// keeps what cannot be stored in `quarantine/`.
pub struct JournalSource {
    reader: JournalReader,
    journal: Journal,
}

impl JournalSource {
    pub fn new(journal: Journal, reader: JournalReader) -> Self {
        Self { reader, journal }
    }

    async fn read(&mut self, max: usize) -> Vec<ReadRecord> {
        // File I/O on an async thread: a read is at most a few MB, nearly always from the page
        // cache, and only this task reads.
        match self.reader.read(max) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "could not read the journal; trying again shortly");
                tokio::time::sleep(RETRY_DELAY).await;
                Vec::new()
            }
        }
    }
}

impl Source for JournalSource {
    /// Where the journal may be released to.
    type Receipt = Position;

    async fn ready(&mut self) {
        self.reader.wait_for_unread().await;
    }

    async fn next(
        &mut self,
        max: usize,
        linger: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> Option<Fetched<Position>> {
        let deadline = tokio::time::Instant::now() + linger;
        let mut records = Vec::new();
        loop {
            records.extend(self.read(max - records.len()).await);
            if records.len() >= max || *stopping.borrow() || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::select! {
                () = self.reader.wait_for_unread() => {}
                () = tokio::time::sleep_until(deadline) => {}
                // A stop, or the handle gone: either way, no more waiting.
                _ = stopping.changed() => break,
            }
        }
        let receipt = records.last()?.end;
        Some(Fetched::decode(
            records.iter().map(|record| record.payload.as_slice()),
            super::decode,
            receipt,
        ))
    }

    fn has_backlog(&mut self) -> bool {
        self.reader.has_unread()
    }

    async fn commit(&mut self, end: Position) {
        if let Err(error) = self.reader.release(end).await {
            tracing::error!(%error, "could not release written journal space; it is retried with the next batch");
        }
    }

    /// Copies the item to the journal's quarantine, trying until it succeeds (a full disk, say):
    /// only then may the journal let go of it. The file is written and flushed on a blocking
    /// thread.
    async fn set_aside(&self, item: SetAside) {
        let note = serde_json::json!({
            "reason": item.reason,
            "bytes": String::from_utf8_lossy(&item.item.to_bytes()),
        });
        let bytes = note.to_string().into_bytes();
        loop {
            let (journal, name, bytes) = (self.journal.clone(), item.name.clone(), bytes.clone());
            let written = tokio::task::spawn_blocking(move || journal.quarantine(&name, &bytes))
                .await
                .unwrap_or_else(|panic| Err(std::io::Error::other(panic)));
            match written {
                Ok(path) => {
                    tracing::warn!(path = %path.display(), reason = %item.reason, "set aside in the journal's quarantine");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "could not write to the journal's quarantine; trying again");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }
}
