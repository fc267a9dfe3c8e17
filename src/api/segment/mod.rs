//! Segment's HTTP Tracking API, so that a shop's existing tracking (Segment's SDKs, and
//! RudderStack's and Jitsu's, which speak the same protocol) feeds the service unchanged:
//! `POST /v1/batch` (`/v1/b`), and one message a request at `/v1/track` (`/v1/t`),
//! `/v1/identify` (`/v1/i`), `/v1/alias` (`/v1/a`), `/v1/page` (`/v1/p`), `/v1/screen`
//! (`/v1/s`), `/v1/group` (`/v1/g`); `/v1/m`, the browser SDK's own metrics, is answered and
//! dropped.
//!
//! Every guarantee of our own routes holds: events are accepted through the same path (durable
//! before the answer, stored once, the clock error removed, the same limits and metrics). The
//! answers are the ones SDKs expect: `200 {"success": true}` once the request is taken, even if
//! some of its messages cannot be used (they are counted, by reason); 400 for a body that is no
//! JSON or no batch, 413 past the size limits, 429 and 503 with `Retry-After` (SDKs retry those,
//! with the same messageIds, which our event ids are derived from).

pub mod mapping;
pub(super) mod openapi;
mod wire;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::{BodyKey, Scope, provided_key};
use super::{ApiError, AppState, body};
use crate::event::{Event, Item};
use crate::ingest::{IdentifyError, Refusal};
use crate::telemetry::Throttle;
pub use mapping::{ItemId, Kind, SegmentConfig};
use mapping::{Outcome, Unused};
pub use wire::{MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES};

/// A request's answer: `{"success": true}`, or an error as Segment's API words it,
/// `{"success": false, "code", "message"}`, with our codes and statuses.
pub struct Answer(Result<(), ApiError>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let error = match self.0 {
            Ok(()) => return axum::Json(json!({"success": true})).into_response(),
            Err(error) => error,
        };
        let body = json!({"success": false, "code": error.code(), "message": error.to_string()});
        let mut response = error.into_response();
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut answer = (status, axum::Json(body)).into_response();
        if let Some(retry_after) = headers.get(header::RETRY_AFTER) {
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after.clone());
        }
        answer
    }
}

/// A refusal at the edge (a key, a rate limit), worded as Segment's API words it.
pub fn refusal(error: ApiError) -> Response {
    Answer(Err(error)).into_response()
}

/// `POST /v1/batch`, `/v1/b`.
pub async fn batch(State(app): State<AppState>, request: Request) -> Answer {
    Answer(take(&app, request, None).await)
}

/// A single message's route, of the path's type.
pub async fn single(app: AppState, request: Request, kind: Kind) -> Answer {
    Answer(take(&app, request, Some(kind)).await)
}

/// `POST /v1/m`: the browser SDK's own metrics, not ours to keep.
pub async fn sdk_metrics() -> Answer {
    Answer(Ok(()))
}

/// What the write key is for this request: checked already when it came in the headers; when
/// it is to come in the body ([`BodyKey`]), the origin to check it against.
struct Key {
    from_headers: Option<String>,
    in_body: Option<HeaderMap>,
}

impl Key {
    fn of(request: &Request) -> Self {
        let from_headers =
            provided_key(request.headers()).map(|key| String::from_utf8_lossy(&key).into_owned());
        let in_body = request.extensions().get::<BodyKey>().map(|_| {
            let mut origin = HeaderMap::new();
            if let Some(value) = request.headers().get(header::ORIGIN) {
                origin.insert(header::ORIGIN, value.clone());
            }
            origin
        });
        Key {
            from_headers,
            in_body,
        }
    }

    /// The write key the event ids derive from; authenticated here if it came in the body.
    fn settle(self, app: &AppState, in_body: Option<&Value>) -> Result<String, ApiError> {
        let body_key = match in_body {
            Some(Value::String(key)) if !key.is_empty() => Some(key.as_str()),
            _ => None,
        };
        if let Some(origin) = &self.in_body {
            app.access.admit_body_key(body_key, origin, Scope::Write)?;
        }
        Ok(self
            .from_headers
            .or(body_key.map(str::to_owned))
            .unwrap_or_default())
    }
}

async fn take(app: &AppState, request: Request, kind: Option<Kind>) -> Result<(), ApiError> {
    let key = Key::of(&request);
    let limit = if kind.is_some() {
        MAX_MESSAGE_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    let body = body::read_json(request, limit, app.limits.pace).await?;
    let _work = app.work.admit()?;
    let received_at = chrono::Utc::now();
    let invalid = |error: wire::WireError| match error {
        wire::WireError::Syntax(message) => ApiError::InvalidJson(message),
        wire::WireError::Shape(message) => ApiError::BadRequest(message.to_owned()),
    };
    let messages: Vec<Item<wire::Message>>;
    let (sent_at, context, write_key) = match kind {
        Some(_) => {
            let message =
                wire::message(std::str::from_utf8(&body).unwrap_or("")).map_err(invalid)?;
            let write_key = match &message {
                Item::Object(message) => message.write_key.clone(),
                Item::Other(_) => {
                    return Err(ApiError::BadRequest(
                        "a message must be a JSON object".to_owned(),
                    ));
                }
            };
            messages = vec![message];
            (None, None, write_key)
        }
        None => {
            let batch = wire::Batch::from_json(&body).map_err(invalid)?;
            messages = match batch.messages {
                wire::Messages::Read(read) => read,
                wire::Messages::TooMany => return Err(ApiError::BodyTooLarge(MAX_BATCH_MESSAGES)),
                wire::Messages::TooLarge => return Err(ApiError::BodyTooLarge(MAX_MESSAGE_BYTES)),
                wire::Messages::Not(kind) => {
                    return Err(ApiError::BadRequest(format!(
                        "batch must be an array, got {kind}"
                    )));
                }
            };
            (batch.sent_at, batch.context, batch.write_key)
        }
    };
    let write_key = key.settle(app, write_key.as_ref())?;
    let context = match &context {
        Some(Item::Object(context)) => Some(context),
        _ => None,
    };
    let translation = mapping::Request {
        config: &app.segment,
        rules: &app.limits.events,
        write_key: &write_key,
        received_at,
        sent_at: sent_at.as_ref(),
        context,
    };
    // A single message's type is its route's; a batch's message says its own.
    let kind_of = |message: &Item<wire::Message>| match message {
        Item::Object(message) => kind.or_else(|| Kind::of(message)),
        Item::Other(_) => kind,
    };
    count_received(messages.iter().map(kind_of));
    // In order: a visitor's events go before the identification that merges them.
    let mut pending: Vec<Event> = Vec::with_capacity(messages.len());
    for message in &messages {
        let kind = &kind_of(message);
        let kind_name = kind.map_or("unknown", Kind::as_str);
        let outcome = match (kind, message) {
            (_, Item::Other(_)) => Outcome::Unused(Unused::NotAnObject),
            (None, Item::Object(_)) => Outcome::Unused(Unused::UnknownType),
            (Some(kind), Item::Object(message)) => translation.translate(*kind, message),
        };
        match outcome {
            Outcome::Events(events, unused) => {
                pending.extend(events);
                unused
                    .into_iter()
                    .for_each(|reason| count(reason, kind_name));
            }
            Outcome::Identify(identity) => {
                accept(app, &mut pending).await?;
                match app.ingest.identify(&identity).await {
                    Ok(merged) if merged.owner != identity.user_id => {
                        count(Unused::AlreadyIdentified, kind_name);
                    }
                    Ok(_) => {}
                    Err(IdentifyError::Handoff(error)) => return Err(error.into()),
                    Err(IdentifyError::Context(cause)) => {
                        tracing::warn!(error = %cause, "could not merge a Segment identification");
                        return Err(ApiError::ContextUnavailable);
                    }
                }
            }
            Outcome::Unused(reason) => count(reason, kind_name),
        }
    }
    accept(app, &mut pending).await
}

/// Counts the request's messages by type, one counter update a type.
fn count_received(kinds: impl Iterator<Item = Option<Kind>>) {
    let mut by_kind = [0u64; Kind::ALL.len() + 1];
    for kind in kinds {
        let slot = kind.map_or(Kind::ALL.len(), |kind| {
            Kind::ALL
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(Kind::ALL.len())
        });
        by_kind[slot] += 1;
    }
    for (slot, &n) in by_kind.iter().enumerate().filter(|(_, n)| **n > 0) {
        let name = Kind::ALL.get(slot).map_or("unknown", |kind| kind.as_str());
        metrics::counter!("segment_messages_total", "type" => name).increment(n);
    }
}

/// Accepts the events gathered so far, as one group.
async fn accept(app: &AppState, pending: &mut Vec<Event>) -> Result<(), ApiError> {
    if pending.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(pending);
    let outcomes = app.ingest.accept(&events).await?;
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(Refusal::UnknownItem(_)) => count(Unused::UnknownItem, "track"),
            // The catalogue cannot tell now: the SDK retries, and what was taken is stored once.
            Err(Refusal::CatalogueUnavailable) => return Err(ApiError::Unavailable),
        }
    }
    Ok(())
}

/// Counts a message that was not used, and says so (at most once a second).
fn count(reason: Unused, kind: &'static str) {
    metrics::counter!("segment_messages_unused_total", "reason" => reason.as_str()).increment(1);
    static WARNING: Throttle = Throttle::new();
    if let Some(suppressed) = WARNING.allow() {
        tracing::info!(
            reason = reason.as_str(),
            r#type = kind,
            suppressed,
            "a Segment message was taken but not used (segment_messages_unused_total)"
        );
    }
}

/// The Segment routes' metrics, published at zero.
pub fn describe_metrics() {
    use metrics::{counter, describe_counter};
    describe_counter!(
        "segment_messages_total",
        "Segment messages received, by type (unknown: none of Segment's)"
    );
    describe_counter!(
        "segment_messages_unused_total",
        "Segment messages taken (the request answered 200) but not used, by reason"
    );
    for kind in Kind::ALL {
        counter!("segment_messages_total", "type" => kind.as_str()).increment(0);
    }
    counter!("segment_messages_total", "type" => "unknown").increment(0);
    for reason in Unused::ALL {
        counter!("segment_messages_unused_total", "reason" => reason.as_str()).increment(0);
    }
}
