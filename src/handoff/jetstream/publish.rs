//! The request path's side: publish, and acknowledge the client only after JetStream has.

use std::time::Instant;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{JetStream, NotReady};
use crate::event::{Event, Identity};
use crate::handoff::json::{encode, encode_identity};
use crate::handoff::{Handoff, HandoffError, HandoffState, Pending};

/// Publishes accepted events to the stream.
#[derive(Clone)]
pub struct JetStreamHandoff {
    jetstream: JetStream,
}

impl JetStreamHandoff {
    pub fn new(jetstream: JetStream) -> Self {
        Self { jetstream }
    }
}

#[derive(Debug, thiserror::Error)]
enum NotPublished {
    #[error(transparent)]
    NotReady(NotReady),
    #[error("JetStream did not acknowledge within {0:?}")]
    Timeout(std::time::Duration),
    #[error("JetStream refused the publish: {0}")]
    Publish(#[source] PublishError),
}

impl JetStreamHandoff {
    /// Publishes every message before awaiting any acknowledgement, then awaits them all, within
    /// `--nats-ack-timeout-ms`. NATS down or not ready: refused at once, nothing published.
    fn publish(&self, messages: Vec<(String, PublishMessage)>) -> Result<Pending, HandoffError> {
        if let Err(why) = self.jetstream.ready() {
            metrics::counter!("jetstream_publish_failures_total", "reason" => "not_ready")
                .increment(1);
            return Err(HandoffError::unavailable(NotPublished::NotReady(why)));
        }
        let jetstream = self.jetstream.clone();
        let timeout = self.jetstream.config.ack_timeout;
        Ok(async move {
            let started = Instant::now();
            let publish = async {
                let mut acks = Vec::with_capacity(messages.len());
                for (subject, message) in messages {
                    acks.push(jetstream.context.send_publish(subject, message).await?);
                }
                for ack in acks {
                    if ack.await?.duplicate {
                        metrics::counter!("jetstream_duplicates_total").increment(1);
                    }
                }
                Ok::<(), PublishError>(())
            };
            let outcome = match tokio::time::timeout(timeout, publish).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => {
                    if error.kind() == PublishErrorKind::StreamNotFound {
                        jetstream.recheck_streams();
                    }
                    Err(NotPublished::Publish(error))
                }
                Err(_) => Err(NotPublished::Timeout(timeout)),
            };
            metrics::histogram!("jetstream_publish_seconds")
                .record(started.elapsed().as_secs_f64());
            outcome.map_err(|error| {
                let reason = match error {
                    NotPublished::Timeout(_) => "timeout",
                    _ => "error",
                };
                metrics::counter!("jetstream_publish_failures_total", "reason" => reason)
                    .increment(1);
                HandoffError::unavailable(error)
            })
        }
        .boxed())
    }
}

impl Handoff for JetStreamHandoff {
    /// Publishes every event: subject `<prefix>.<event_type>`, `Nats-Msg-Id` its `event_id`.
    fn submit(&self, events: &[&Event]) -> Result<Pending, HandoffError> {
        let config = &self.jetstream.config;
        let messages = events
            .iter()
            .map(|event| {
                let message = PublishMessage::build()
                    .payload(Bytes::from(encode(event)))
                    .message_id(event.event_id.to_string());
                (config.subject(event.event_type), message)
            })
            .collect();
        self.publish(messages)
    }

    /// Publishes the identification: subject `<prefix>.identify`, `Nats-Msg-Id`
    /// `identify:<anonymous_id>:<user_id>`, so that a repeated call within the duplicate window is
    /// stored once (a later one is attributed again, to no effect).
    fn submit_identity(&self, identity: &Identity) -> Result<Pending, HandoffError> {
        let message = PublishMessage::build()
            .payload(Bytes::from(encode_identity(identity)))
            .message_id(format!(
                "identify:{}:{}",
                identity.anonymous_id, identity.user_id
            ));
        let subject = format!("{}.identify", self.jetstream.config.subject_prefix);
        self.publish(vec![(subject, message)])
    }

    fn state(&self) -> HandoffState {
        let ready = self.jetstream.ready();
        HandoffState::Jetstream {
            stream: self.jetstream.config.stream.clone(),
            ok: ready.is_ok(),
            error: ready.err().map(crate::telemetry::chain),
        }
    }

    /// Waits until what was published has left for the server.
    fn close(&self) -> BoxFuture<'_, ()> {
        async {
            let _ = tokio::time::timeout(
                self.jetstream.config.ack_timeout,
                self.jetstream.client.flush(),
            )
            .await;
        }
        .boxed()
    }
}
