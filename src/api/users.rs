//! `GET /api/users/{user_id}/context`: the user's realtime context, as the re-ranker sees it.

use axum::Json;
use axum::extract::{Path, State};

use super::error::ErrorBody;
use super::openapi::EdgeErrors;
use super::{ApiError, AppState};
use crate::context::UserContext;
use crate::event::UserId;

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ContextResponse {
    #[schema(value_type = i64)]
    pub user_id: UserId,
    #[serde(flatten)]
    pub context: UserContext,
}

/// The user's realtime context; an unknown user, or one whose keys expired, gets empty values.
#[utoipa::path(
    get, path = "/api/users/{user_id}/context", tag = "context",
    params(("user_id" = i64, Path, minimum = 1, description = "The user")),
    responses(
        (status = 200, description = "The three keys", body = ContextResponse),
        (status = 422, description = "The user id is not a positive 64-bit integer", body = ErrorBody),
        EdgeErrors
    ),
    security((), ("api_key" = []))
)]
pub async fn context(
    State(app): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<ContextResponse>, ApiError> {
    let user_id: UserId = user_id.parse()?;
    let context = app.ingest.context.load(user_id).await.map_err(|error| {
        tracing::warn!(%error, %user_id, "could not read the user's context");
        ApiError::ContextUnavailable
    })?;
    Ok(Json(ContextResponse { user_id, context }))
}
