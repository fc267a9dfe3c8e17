//! `GET /api/users/{user_id}/context`: the user's realtime context, as the re-ranker sees it.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState};
use crate::context::UserContext;
use crate::event::UserId;

#[derive(Debug, serde::Serialize)]
pub struct ContextResponse {
    pub user_id: UserId,
    #[serde(flatten)]
    pub context: UserContext,
}

/// An unknown user, or one whose keys expired, gets empty values.
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
