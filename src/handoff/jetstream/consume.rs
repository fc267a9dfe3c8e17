//! The writers' side: a durable pull consumer shared by every writer process.
//!
//! Messages are acknowledged only after PostgreSQL has committed their batch; a writer that dies
//! (SIGKILL) leaves its unacknowledged messages to the others after `--nats-ack-wait-secs`.
//! While a batch is being retried (PostgreSQL down), its messages are kept ours with progress
//! acknowledgements, so that no other writer takes them meanwhile.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, StreamError, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::ConsumerError;
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::JetStream;
use crate::handoff::{Fetched, SetAside, Source};

/// Wait before trying again after NATS failed us.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Why the writer cannot read the stream now.
#[derive(Debug, thiserror::Error)]
enum NotReading {
    #[error("could not make the consumer {consumer}")]
    Consumer {
        consumer: String,
        #[source]
        cause: ConsumerError,
    },
    #[error("could not open the messages of the consumer {consumer}")]
    Messages {
        consumer: String,
        #[source]
        cause: StreamError,
    },
    #[error("the consumer's messages failed")]
    Next(#[source] pull::MessagesError),
}

/// The writer's source of events: the stream, through the durable consumer.
pub struct JetStreamSource {
    jetstream: JetStream,
    /// The consumer's message stream, once made.
    messages: Option<pull::Stream>,
    /// A message taken while waiting for one ([`Source::ready`]), not yet in a batch.
    waiting: Option<Message>,
}

/// The messages of a batch, acknowledged once it is stored; until then a task keeps them ours.
pub struct Receipt {
    messages: Vec<Message>,
    _keep_alive: AbortOnDropHandle<()>,
}

impl JetStreamSource {
    pub fn new(jetstream: JetStream) -> Self {
        Self {
            jetstream,
            messages: None,
            waiting: None,
        }
    }

    /// The consumer's message stream, made (with the consumer) if need be.
    async fn messages(&mut self) -> Result<&mut pull::Stream, NotReading> {
        if self.messages.is_none() {
            let config = &self.jetstream.config;
            let consumer: PullConsumer = self
                .jetstream
                .context
                .create_consumer_on_stream(
                    pull::Config {
                        durable_name: Some(config.consumer.clone()),
                        filter_subject: format!("{}.>", config.subject_prefix),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.ack_wait,
                        max_ack_pending: config.max_ack_pending,
                        ..Default::default()
                    },
                    &config.stream,
                )
                .await
                .map_err(|cause| NotReading::Consumer {
                    consumer: config.consumer.clone(),
                    cause,
                })?;
            let messages = consumer
                .stream()
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|cause| NotReading::Messages {
                    consumer: config.consumer.clone(),
                    cause,
                })?;
            self.messages = Some(messages);
        }
        Ok(self.messages.as_mut().expect("made above"))
    }

    /// The next message, waiting as long as it takes (and through NATS outages). Cancel-safe.
    async fn next_message(&mut self) -> Message {
        loop {
            let next = match self.messages().await {
                Ok(messages) => messages.next().await,
                Err(error) => {
                    warn(&error);
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            match next {
                Some(Ok(message)) => return message,
                Some(Err(error)) => {
                    warn(&NotReading::Next(error));
                    self.messages = None;
                }
                None => self.messages = None,
            }
        }
    }

    /// A message that arrived already, without waiting.
    fn arrived(&mut self) -> Option<Message> {
        match self.messages.as_mut()?.next().now_or_never() {
            Some(Some(Ok(message))) => Some(message),
            _ => None,
        }
    }
}

fn warn(error: &NotReading) {
    static WARNING: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
    if let Some(suppressed) = WARNING.allow() {
        let error = crate::telemetry::chain(error);
        tracing::warn!(%error, suppressed, "could not read from JetStream; trying again");
    }
}

impl Source for JetStreamSource {
    type Receipt = Receipt;

    async fn ready(&mut self) {
        if self.waiting.is_none() {
            self.waiting = Some(self.next_message().await);
        }
    }

    async fn next(
        &mut self,
        max: usize,
        linger: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> Option<Fetched<Receipt>> {
        let mut messages: Vec<Message> = self.waiting.take().into_iter().collect();
        let deadline = tokio::time::Instant::now() + linger;
        while messages.len() < max {
            if let Some(message) = self.arrived() {
                messages.push(message);
                continue;
            }
            if *stopping.borrow() {
                break;
            }
            tokio::select! {
                message = self.next_message() => messages.push(message),
                () = tokio::time::sleep_until(deadline) => break,
                _ = stopping.changed() => break,
            }
        }
        if messages.is_empty() {
            return None;
        }
        let redelivered = messages
            .iter()
            .filter(|m| m.info().is_ok_and(|info| info.delivered > 1))
            .count();
        if redelivered > 0 {
            metrics::counter!("jetstream_redelivered_total").increment(redelivered as u64);
        }
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
        let receipt = Receipt {
            _keep_alive: keep_alive(messages.clone(), self.jetstream.config.ack_wait),
            messages: messages.clone(),
        };
        Some(Fetched::decode(
            payloads,
            crate::handoff::json::decode,
            receipt,
        ))
    }

    /// What this writer holds already: a message taken while waiting, or delivered and not yet
    /// read. A stopping writer stores them before it exits.
    fn has_backlog(&mut self) -> bool {
        if self.waiting.is_none() {
            self.waiting = self.arrived();
        }
        self.waiting.is_some()
    }

    /// Acknowledges the batch's messages, and waits until the acknowledgements have left.
    async fn commit(&mut self, receipt: Receipt) {
        for message in &receipt.messages {
            if let Err(error) = message.ack().await {
                // The message comes back after the ack wait; stored already, it is skipped then.
                tracing::warn!(%error, "could not acknowledge a message; it will be delivered again");
            }
        }
        if let Err(error) = self.jetstream.client.flush().await {
            tracing::warn!(%error, "could not flush the acknowledgements");
        }
    }

    /// Publishes the item to the dead-letter subject, with its reason in the header
    /// `Dead-Letter-Reason`, retrying until JetStream has it.
    async fn set_aside(&self, item: SetAside) {
        let subject = self.jetstream.config.dead_letter_subject();
        loop {
            let message = PublishMessage::build()
                .payload(item.item.to_bytes().into())
                .message_id(format!("dead-{}", item.name))
                .header("Dead-Letter-Reason", one_line(&item.reason).as_str());
            let published = match self
                .jetstream
                .context
                .send_publish(subject.clone(), message)
                .await
            {
                Ok(ack) => ack.await.map(drop),
                Err(error) => Err(error),
            };
            match published {
                Ok(()) => {
                    metrics::counter!("jetstream_dead_letters_total").increment(1);
                    tracing::warn!(%subject, name = %item.name, reason = %item.reason, "sent to the dead-letter subject");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "could not publish to the dead-letter subject; trying again");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }
}

/// A header value is one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Tells JetStream every third of the ack wait that the messages are still being worked on.
fn keep_alive(messages: Vec<Message>, ack_wait: Duration) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut every = tokio::time::interval(ack_wait / 3);
        every.tick().await;
        loop {
            every.tick().await;
            for message in &messages {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }))
}
