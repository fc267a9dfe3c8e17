//! `POST /api/identify`: a visitor logged in. Their context joins the user's at once; their
//! stored events are attributed to the user by the writer, in the background.

use axum::Json;
use axum::extract::{Request, State};
use serde::Serialize;

use super::access::Scope;
use super::error::ErrorBody;
use super::openapi::{BodyErrors, EdgeErrors, IdentifyRequest};
use super::{ApiError, AppState, body};
use crate::context::UserContext;
use crate::event::{AnonymousId, Identity, UserId};
use crate::ingest::IdentifyError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Identified {
    #[schema(value_type = i64)]
    pub user_id: UserId,
    #[schema(value_type = String)]
    pub anonymous_id: AnonymousId,
    /// The user's context after the merge: only for a server key (or when the service has no
    /// keys). A write key is public, and must not read a user's history by naming them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<UserContext>,
}

/// Tells the service that a visitor is now a known user. The visitor's context is merged into
/// the user's (recent items newest first and capped, category counts added, purchases joined)
/// and the visitor's keys deleted; the identification is made durable like an event, and the
/// writer then attributes the visitor's stored events (and any that arrive later) to the user.
/// Safe to call again after a 503: what was merged once is not merged twice. The answer carries
/// the user's context after the merge only for a caller that may read contexts (a server key).
#[utoipa::path(
    post, path = "/api/identify", tag = "context",
    request_body = IdentifyRequest,
    responses(
        (status = 200, description = "Merged, and the attribution on its way", body = Identified),
        (status = 409, description = "The visitor was identified as another user first (`already_identified`): their context went to that user", body = ErrorBody),
        BodyErrors, EdgeErrors
    ),
    security((), ("api_key" = []))
)]
pub async fn identify(
    State(app): State<AppState>,
    request: Request,
) -> Result<Json<Identified>, ApiError> {
    let may_read = request.extensions().get::<Scope>() == Some(&Scope::Read);
    let body = body::read_json(request, app.limits.max_body_bytes, app.limits.pace).await?;
    let _work = app.work.admit()?;
    let identity = Identity::from_json(&body, chrono::Utc::now())?;
    let merged = app.ingest.identify(&identity).await.map_err(|error| {
        match error {
            IdentifyError::Handoff(error) => ApiError::from(error),
            IdentifyError::Context(cause) => {
                tracing::warn!(error = %cause, anonymous_id = %identity.anonymous_id, user_id = %identity.user_id, "could not merge the visitor's context");
                ApiError::ContextUnavailable
            }
        }
    })?;
    if merged.owner != identity.user_id {
        return Err(ApiError::AlreadyIdentified);
    }
    Ok(Json(Identified {
        user_id: identity.user_id,
        anonymous_id: identity.anonymous_id,
        context: may_read.then_some(merged.context),
    }))
}
