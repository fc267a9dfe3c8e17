//! `POST /api/event` (one event, the seed's endpoint) and `POST /api/events` (a batch).

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ErrorDetail;
use super::openapi::{BatchRequest, BodyErrors, EdgeErrors, EventRequest};
use super::{ApiError, AppState, body};
use crate::event::{
    Arrival, Batch, BatchError, Elements, Event, EventType, ParseError, optional_time,
};

/// The seed's answer, exactly: `{"success": true, "message": "Event logged: view"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"success": true, "message": "Event logged: view"}))]
pub struct EventLogged {
    pub success: bool,
    pub message: String,
}

/// Logs one interaction: the seed's endpoint.
#[utoipa::path(
    post, path = "/api/event", tag = "events",
    request_body = EventRequest,
    responses((status = 200, description = "Stored in the journal; the context updated", body = EventLogged), BodyErrors, EdgeErrors),
    params(("Content-Encoding" = Option<String>, Header, description = "`gzip` or `deflate` (zlib) for a compressed body; the size limits apply to the inflated body")),
    security((), ("api_key" = []))
)]
pub async fn log_event(
    State(app): State<AppState>,
    request: Request,
) -> Result<Json<EventLogged>, ApiError> {
    let body = body::read_json(request, app.limits.max_body_bytes, app.limits.pace).await?;
    let _work = app.work.admit()?;
    let event = match Event::from_json(&body, &app.limits.events, Arrival::now()) {
        Ok(event) => event,
        Err(ParseError::Invalid(invalid)) => return Err(rejected_event(invalid.into())),
        Err(error) => return Err(error.into()),
    };
    let outcome = app.ingest.accept(std::slice::from_ref(&event)).await?;
    if let Some(Err(refusal)) = outcome.into_iter().next() {
        return Err(rejected_event(refusal.into()));
    }
    Ok(Json(logged(event.event_type)))
}

/// Counts an event rejected for its content (`events_rejected_total`), in either endpoint.
fn rejected_event(error: ApiError) -> ApiError {
    metrics::counter!("events_rejected_total", "reason" => error.code()).increment(1);
    error
}

fn logged(event_type: EventType) -> EventLogged {
    EventLogged {
        success: true,
        message: format!("Event logged: {event_type}"),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchLogged {
    pub success: bool,
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<EventResult>,
}

/// The fate of one event of a batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    pub index: usize,
    pub status: EventStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail<'static>>,
}

#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Accepted,
    Rejected,
}

/// Accepts up to `max_batch_events` events; each is accepted or rejected on its own.
#[utoipa::path(
    post, path = "/api/events", tag = "events",
    request_body = BatchRequest,
    responses((status = 200, description = "Each event accepted or rejected", body = BatchLogged), BodyErrors, EdgeErrors),
    params(("Content-Encoding" = Option<String>, Header, description = "`gzip` or `deflate` (zlib) for a compressed body; the size limits apply to the inflated body")),
    security((), ("api_key" = []))
)]
pub async fn log_events(
    State(app): State<AppState>,
    request: Request,
) -> Result<Json<BatchLogged>, ApiError> {
    let body = body::read_json(request, app.limits.max_batch_body_bytes, app.limits.pace).await?;
    let _work = app.work.admit()?;
    let max = app.limits.max_batch_events;
    let request = Batch::from_json(&body, max).map_err(|error| match error {
        BatchError::Syntax(message) => ApiError::InvalidJson(message),
        BatchError::NotAnEnvelope => ApiError::InvalidBody(error.to_string()),
    })?;
    let items = match request.events {
        Elements::Items(items) if !items.is_empty() => items,
        Elements::Items(_) | Elements::TooMany => {
            return Err(ApiError::InvalidBody(format!(
                "events must hold 1 to {max} events"
            )));
        }
        Elements::Not(_) => {
            return Err(ApiError::InvalidBody(
                "events must be an array of events".to_owned(),
            ));
        }
    };

    let arrival = Arrival {
        sent_at: optional_time("sent_at", request.sent_at.as_ref())?,
        ..Arrival::now()
    };
    let mut results: Vec<EventResult> = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match Event::from_item(item, &app.limits.events, arrival) {
            Ok(event) => {
                positions.push(index);
                events.push(event);
            }
            Err(invalid) => results.push(rejected(index, ApiError::from(invalid))),
        }
    }
    let outcomes = app.ingest.accept(&events).await?;
    for ((index, event), outcome) in positions.into_iter().zip(&events).zip(outcomes) {
        results.push(match outcome {
            Ok(()) => EventResult {
                index,
                status: EventStatus::Accepted,
                event_id: Some(event.event_id),
                error: None,
            },
            Err(refusal) => rejected(index, refusal.into()),
        });
    }
    results.sort_by_key(|r| r.index);
    let accepted = results
        .iter()
        .filter(|r| r.status == EventStatus::Accepted)
        .count();
    Ok(Json(BatchLogged {
        success: true,
        accepted,
        rejected: results.len() - accepted,
        results,
    }))
}

fn rejected(index: usize, error: ApiError) -> EventResult {
    let error = rejected_event(error);
    EventResult {
        index,
        status: EventStatus::Rejected,
        event_id: None,
        error: Some(error.detail()),
    }
}
