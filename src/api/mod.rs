//! HTTP: the routes, the shared state, and the layers every request passes through.

mod body;
pub mod error;
mod events;
mod health;
mod rerank;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, Uri};
use axum::routing::{get, post};
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::event::MetadataLimits;
use crate::ingest::Ingest;
use crate::rerank::ReRankingService;
use crate::telemetry;
pub use error::ApiError;

/// Bounds on what a request may carry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub max_batch_events: usize,
    pub metadata: MetadataLimits,
}

#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub rerank: Arc<ReRankingService>,
    pub pool: PgPool,
    pub limits: Limits,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/event", post(events::log_event))
        .route("/api/events", post(events::log_events))
        .route("/api/rerank", post(rerank::rerank))
        .route("/api/users/{user_id}/context", get(users::context))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(telemetry::render_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// How long a readiness check waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
