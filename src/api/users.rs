//! `GET /api/users/{user_id}/context` and `GET /api/visitors/{anonymous_id}/context`: an actor's
//! realtime context, as the re-ranker sees it.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Serialize;

use super::error::ErrorBody;
use super::openapi::EdgeErrors;
use super::{ApiError, AppState};
use crate::context::UserContext;
use crate::event::{Actor, AnonymousId, UserId};

/// An actor as the API names it: `"user_id": 42` or `"anonymous_id": "..."`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActorName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
}

impl From<&Actor> for ActorName {
    fn from(actor: &Actor) -> Self {
        Self {
            user_id: actor.user().map(UserId::get),
            anonymous_id: actor.visitor().map(|id| id.as_str().to_owned()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContextResponse {
    #[serde(flatten)]
    pub actor: ActorName,
    #[serde(flatten)]
    pub context: UserContext,
}

/// The user's realtime context; an unknown user, or one whose keys expired, gets empty values.
#[utoipa::path(
    get, path = "/api/users/{user_id}/context", tag = "context",
    params(("user_id" = String, Path, pattern = r"^[1-9][0-9]{0,18}$", description = "The user: decimal digits, no sign or leading zero (`42`), from 1 to 9223372036854775807")),
    responses(
        (status = 200, description = "The user's keys", body = ContextResponse),
        (status = 422, description = "The user id is not a positive 64-bit integer written in plain digits", body = ErrorBody),
        EdgeErrors
    ),
    security((), ("api_key" = []))
)]
pub async fn context(
    State(app): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<ContextResponse>, ApiError> {
    let actor = Actor::User(segment(user_id).parse()?);
    load(&app, actor).await
}

/// A visitor's realtime context, under their anonymous id; empty when unknown or expired (and
/// once the visitor was identified: their context moved to the user).
#[utoipa::path(
    get, path = "/api/visitors/{anonymous_id}/context", tag = "context",
    params(("anonymous_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$", description = "The visitor")),
    responses(
        (status = 200, description = "The visitor's keys", body = ContextResponse),
        (status = 422, description = "Not an anonymous id: 1 to 64 letters, digits, '-', '_' or '.'", body = ErrorBody),
        EdgeErrors
    ),
    security((), ("api_key" = []))
)]
pub async fn visitor_context(
    State(app): State<AppState>,
    anonymous_id: Result<Path<String>, PathRejection>,
) -> Result<Json<ContextResponse>, ApiError> {
    let actor = Actor::Visitor(segment(anonymous_id).parse::<AnonymousId>()?);
    load(&app, actor).await
}

/// A path segment as text; one that is not UTF-8 once percent-decoded (`%ff`) is the empty
/// text, which no id is, so that it fails with the id's own rule, in our error format.
fn segment(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(segment)| segment).unwrap_or_default()
}

async fn load(app: &AppState, actor: Actor) -> Result<Json<ContextResponse>, ApiError> {
    let _work = app.work.admit()?;
    let context = app.ingest.context.load(&actor).await.map_err(|error| {
        tracing::warn!(%error, %actor, "could not read the context");
        ApiError::ContextUnavailable
    })?;
    Ok(Json(ContextResponse {
        actor: ActorName::from(&actor),
        context,
    }))
}
