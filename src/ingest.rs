//! The request path of ingestion, for one event or a batch: catalogue lookup, then the durable
//! hand-off and the Redis context update side by side, then the answer. And the identification
//! of a visitor ([`Ingest::identify`]): the Redis merge, then the hand-off.
//!
//! Ordering matters: the hand-off takes the events (or refuses them, a full journal say) before
//! anything is written, so a refusal leaves nothing done; the Redis update runs while the hand-off
//! makes the events durable, so the request costs the slower of the two, not their sum. A Redis
//! failure is a warning (the seed's rule); a hand-off failure is the request's failure, because
//! only the hand-off makes the events durable.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use metrics::Counter;

use crate::catalogue::{Catalogue, Lookup};
use crate::context::{ContextError, ContextStore, ContextUpdate, Merged};
use crate::event::{Asin, Event, EventType, Identity};
use crate::handoff::{Handoff, HandoffError};
use crate::telemetry::Throttle;

/// What to do with events for items the catalogue does not know (`--unknown-items`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownItems {
    /// Accept events for items not in the catalogue, creating the `items` row on write.
    #[default]
    Create,
    /// Answer 422 for an item the catalogue does not know.
    Reject,
}

#[derive(Clone)]
pub struct Ingest {
    pub catalogue: Catalogue,
    pub context: ContextStore,
    pub handoff: Arc<dyn Handoff>,
    pub unknown_items: UnknownItems,
    pub accepted: AcceptedCounters,
}

/// `events_accepted_total` by event type, looked up in the metrics registry once, when the
/// service starts (after the recorder is installed), not for every event.
#[derive(Clone)]
pub struct AcceptedCounters([Counter; EventType::ALL.len()]);

impl Default for AcceptedCounters {
    fn default() -> Self {
        Self(EventType::ALL.map(|event_type| {
            metrics::counter!("events_accepted_total", "event_type" => event_type.as_str())
        }))
    }
}

impl AcceptedCounters {
    fn of(&self, event_type: EventType) -> &Counter {
        // `EventType::ALL` lists the types in declaration order.
        &self.0[event_type as usize]
    }
}

/// Why an identification was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("the visitor's context could not be merged")]
    Context(#[source] ContextError),
    #[error(transparent)]
    Handoff(#[from] HandoffError),
}

/// Why an otherwise valid event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `--unknown-items reject` and the catalogue does not know the item.
    UnknownItem(Asin),
    /// `--unknown-items reject` and the catalogue cannot tell now: try again later.
    CatalogueUnavailable,
}

impl Ingest {
    /// Accepts `events` as one group: afterwards each is either durable (and in the user's
    /// context, unless Redis failed) or refused with a reason. The whole group fails only if the
    /// hand-off cannot take it.
    pub async fn accept(&self, events: &[Event]) -> Result<Vec<Result<(), Refusal>>, HandoffError> {
        let lookups = self.lookup(events).await;
        let outcomes: Vec<Result<(), Refusal>> = events
            .iter()
            .zip(&lookups)
            .map(|(event, lookup)| match (self.unknown_items, lookup) {
                (UnknownItems::Reject, Lookup::Unknown) => {
                    Err(Refusal::UnknownItem(event.asin.clone()))
                }
                (UnknownItems::Reject, Lookup::Unavailable) => Err(Refusal::CatalogueUnavailable),
                _ => Ok(()),
            })
            .collect();
        let accepted: Vec<(&Event, &Lookup)> = events
            .iter()
            .zip(&lookups)
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(pair, _)| pair)
            .collect();
        if accepted.is_empty() {
            return Ok(outcomes);
        }

        let durable = self
            .handoff
            .submit(&accepted.iter().map(|(event, _)| *event).collect::<Vec<_>>())?;
        // An event older than the context's lifetime is not recent: it is stored, and the context
        // is left as it is.
        let ttl = TimeDelta::from_std(self.context.config().ttl).unwrap_or(TimeDelta::MAX);
        let recent_since = Utc::now().checked_sub_signed(ttl);
        let updates: Vec<ContextUpdate> = accepted
            .iter()
            .filter(|(event, _)| recent_since.is_none_or(|since| event.ts() >= since))
            .map(|(event, lookup)| ContextUpdate {
                event,
                category: lookup.category(),
            })
            .collect();
        let stale = accepted.len() - updates.len();
        if stale > 0 {
            metrics::counter!("context_stale_events_total").increment(stale as u64);
        }
        let (context, durable) = tokio::join!(self.context.record(&updates), durable);
        durable?;
        match context {
            Ok(applied) => {
                let repeated = applied.iter().filter(|applied| !**applied).count();
                if repeated > 0 {
                    metrics::counter!("events_repeated_total").increment(repeated as u64);
                }
            }
            Err(error) => {
                static WARNING: Throttle = Throttle::new();
                if let Some(suppressed) = WARNING.allow() {
                    tracing::warn!(%error, events = accepted.len(), suppressed, "Redis context not updated; the events are stored anyway");
                }
            }
        }
        for (event, _) in &accepted {
            self.accepted.of(event.event_type).increment(1);
        }
        Ok(outcomes)
    }

    /// A visitor logged in: merges their context into their owner's in Redis (the first user they
    /// were identified as, [`crate::context::Merged`]), then makes the identification durable,
    /// naming that owner, so that PostgreSQL attributes the visitor's events to the same user.
    /// Redis first: it decides the owner, atomically. Redis down refuses the identification
    /// (nothing made durable; the client retries); the hand-off down likewise, after the merge
    /// (a retry finds nothing left to merge, and makes it durable).
    pub async fn identify(&self, identity: &Identity) -> Result<Merged, IdentifyError> {
        let merged = self
            .context
            .merge_visitor(&identity.anonymous_id, identity.user_id)
            .await
            .map_err(IdentifyError::Context)?;
        let owned = Identity {
            user_id: merged.owner,
            ..identity.clone()
        };
        self.handoff.submit_identity(&owned)?.await?;
        metrics::counter!("visitors_identified_total").increment(1);
        Ok(merged)
    }

    async fn lookup(&self, events: &[Event]) -> Vec<Lookup> {
        if let [event] = events {
            return vec![self.catalogue.lookup(&event.asin).await];
        }
        let asins: Vec<Asin> = events.iter().map(|e| e.asin.clone()).collect();
        let found: HashMap<Asin, Lookup> = self.catalogue.lookup_many(&asins).await;
        events
            .iter()
            .map(|e| found.get(&e.asin).cloned().unwrap_or(Lookup::Unavailable))
            .collect()
    }
}

/// The request path's metrics, published at zero.
pub fn describe_metrics() {
    use metrics::{counter, describe_counter};

    describe_counter!(
        "events_accepted_total",
        "Events accepted (durable, answered 200), by event type"
    );
    describe_counter!(
        "events_repeated_total",
        "Events whose client event_id was seen before: stored once, counted once in Redis"
    );
    describe_counter!(
        "event_time_clamped_total",
        "Events whose time lay in the future (a client clock gone wrong): stored at receipt"
    );
    describe_counter!(
        "context_stale_events_total",
        "Events older than the context TTL: stored, but not recorded in Redis"
    );
    describe_counter!(
        "visitors_identified_total",
        "POST /api/identify calls that merged a visitor's context and handed off the identification"
    );

    for event_type in EventType::ALL {
        counter!("events_accepted_total", "event_type" => event_type.as_str()).increment(0);
    }
    for name in [
        "events_repeated_total",
        "event_time_clamped_total",
        "context_stale_events_total",
        "visitors_identified_total",
    ] {
        counter!(name).increment(0);
    }
}
