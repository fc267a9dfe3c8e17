//! The one place where failures become HTTP answers.
//!
//! Every error body has the same shape:
//! `{"success": false, "error": {"code": "...", "message": "...", "field": "..."}}`
//! (`field` only where one field is at fault). 4xx codes mean the client must change the request;
//! 503 means try again later (with `Retry-After`). Internal details go to the log, not the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::event::{InvalidEvent, ParseError};
use crate::handoff::HandoffError;
use crate::ingest::Refusal;

/// Seconds a client is asked to wait when the service is overloaded.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidBody(String),
    /// A compressed body that does not inflate: the same code as [`ApiError::InvalidBody`], but
    /// 400, as it is the transport that is broken, not the content.
    #[error("the body could not be decompressed: {0}")]
    Undecodable(String),
    /// A body that is JSON but not what the route takes, where the route's protocol says 400
    /// (Segment's): `invalid_body`.
    #[error("{0}")]
    BadRequest(String),
    /// A body whose framing is broken (a chunked encoding gone wrong): 400 `invalid_body`.
    #[error("the body could not be read: {0}")]
    BrokenBody(String),
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    #[error("item {0} is not in the catalogue")]
    UnknownItem(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("Content-Encoding {0} is not supported: send gzip, deflate or no encoding")]
    UnsupportedEncoding(String),
    #[error(
        "the compressed body inflates more than {0} times its size; refused as a compression bomb"
    )]
    CompressionBomb(usize),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("the service is busy: its hand-off is full; retry later")]
    Overloaded,
    #[error("the service cannot take events right now; retry later")]
    Unavailable,
    #[error("the user context is unavailable right now; retry later")]
    ContextUnavailable,
    #[error(
        "this visitor was identified as another user first, and belongs to that user (their context and events went there); start a new visitor (a new anonymous_id) for this user"
    )]
    AlreadyIdentified,
    #[error("the service is handling as many requests as it may; retry later")]
    Busy,
    #[error("the request took longer than {0:?}; retry later (with the same event_id)")]
    Timeout(std::time::Duration),
    #[error(
        "the body did not arrive in time: it must come whole within --body-read-timeout-secs, and after its first second at no less than --body-min-bytes-per-sec"
    )]
    BodyTimeout,
    #[error("an API key is required in the X-API-Key header")]
    MissingApiKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("this API key may not be used from this origin")]
    OriginNotAllowed,
    #[error(
        "this route reads what the service knows of a user and needs a server key; a write key (the kind a page carries) may only send events and identifications"
    )]
    ServerKeyRequired,
    #[error("too many requests; retry after {} s", retry_after_secs(.0))]
    RateLimited(std::time::Duration),
}

/// Every code [`ApiError::code`] gives, for the metrics published at zero.
pub const CODES: [&str; 23] = [
    "invalid_json",
    "invalid_body",
    "missing_field",
    "invalid_field",
    "unknown_item",
    "body_too_large",
    "unsupported_media_type",
    "unsupported_encoding",
    "compression_bomb",
    "not_found",
    "method_not_allowed",
    "overloaded",
    "unavailable",
    "context_unavailable",
    "already_identified",
    "busy",
    "timeout",
    "body_timeout",
    "missing_api_key",
    "invalid_api_key",
    "origin_not_allowed",
    "server_key_required",
    "rate_limited",
];

/// The codes an event of a batch may be rejected with.
pub const EVENT_CODES: [&str; 4] = [
    "missing_field",
    "invalid_field",
    "unknown_item",
    "unavailable",
];

fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Every error answer: `{"success": false, "error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// Always false.
    success: bool,
    error: ErrorDetail<'a>,
}

/// The `error` object of a failed request, and of a rejected event in a batch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Machine-readable: `invalid_json`, `invalid_body`, `missing_field`, `invalid_field`,
    /// `unknown_item`, `body_too_large`, `unsupported_media_type`, `not_found`,
    /// `method_not_allowed`, `body_timeout`, `already_identified`, `missing_api_key`, `invalid_api_key`,
    /// `origin_not_allowed`, `server_key_required`, `rate_limited`, `overloaded`, `busy`, `timeout`, `unavailable`,
    /// `context_unavailable`.
    pub code: &'a str,
    /// For people: names the field and the rule.
    pub message: String,
    /// The request field at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::Undecodable(_)
            | ApiError::BrokenBody(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody(_) | ApiError::InvalidEvent(_) | ApiError::UnknownItem(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::CompressionBomb(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded
            | ApiError::Unavailable
            | ApiError::ContextUnavailable
            | ApiError::Busy
            | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::AlreadyIdentified => StatusCode::CONFLICT,
            ApiError::MissingApiKey | ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::OriginNotAllowed | ApiError::ServerKeyRequired => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_)
            | ApiError::Undecodable(_)
            | ApiError::BrokenBody(_)
            | ApiError::BadRequest(_) => "invalid_body",
            ApiError::InvalidEvent(invalid) => invalid.code,
            ApiError::UnknownItem(_) => "unknown_item",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedEncoding(_) => "unsupported_encoding",
            ApiError::CompressionBomb(_) => "compression_bomb",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable => "unavailable",
            ApiError::ContextUnavailable => "context_unavailable",
            ApiError::AlreadyIdentified => "already_identified",
            ApiError::Busy => "busy",
            ApiError::Timeout(_) => "timeout",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::MissingApiKey => "missing_api_key",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::ServerKeyRequired => "server_key_required",
            ApiError::RateLimited(_) => "rate_limited",
        }
    }

    pub fn detail(&self) -> ErrorDetail<'static> {
        let field = match self {
            ApiError::InvalidEvent(invalid) => Some(invalid.field),
            ApiError::UnknownItem(_) => Some("asin"),
            _ => None,
        };
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        metrics::counter!("requests_rejected_total", "reason" => self.code()).increment(1);
        if status.is_server_error() {
            static WARNING: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
            if let Some(suppressed) = WARNING.allow() {
                tracing::warn!(error = %self, suppressed, "request refused");
            }
        }
        let body = ErrorBody {
            success: false,
            error: self.detail(),
        };
        let retry_after = match &self {
            ApiError::RateLimited(wait) => Some(retry_after_secs(wait)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ParseError> for ApiError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::Syntax(message) => ApiError::InvalidJson(message),
            ParseError::NotAnObject => ApiError::InvalidBody(error.to_string()),
            ParseError::Invalid(invalid) => ApiError::InvalidEvent(invalid),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownItem(asin) => ApiError::UnknownItem(asin.to_string()),
            Refusal::CatalogueUnavailable => ApiError::Unavailable,
        }
    }
}

impl From<HandoffError> for ApiError {
    fn from(error: HandoffError) -> Self {
        match error {
            HandoffError::Full { .. } => ApiError::Overloaded,
            error => {
                static WARNING: crate::telemetry::Throttle = crate::telemetry::Throttle::new();
                if let Some(suppressed) = WARNING.allow() {
                    tracing::error!(%error, suppressed, "events could not be made durable; refused with 503");
                }
                ApiError::Unavailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InvalidEvent;
    use std::time::Duration;

    #[test]
    fn the_list_of_codes_is_every_code() {
        let every = [
            ApiError::InvalidJson(String::new()),
            ApiError::InvalidBody(String::new()),
            ApiError::Undecodable(String::new()),
            ApiError::BrokenBody(String::new()),
            ApiError::BadRequest(String::new()),
            ApiError::InvalidEvent(InvalidEvent::missing("user_id")),
            ApiError::InvalidEvent(InvalidEvent::invalid("user_id", "")),
            ApiError::UnknownItem(String::new()),
            ApiError::BodyTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::UnsupportedEncoding(String::new()),
            ApiError::CompressionBomb(1),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::Overloaded,
            ApiError::Unavailable,
            ApiError::ContextUnavailable,
            ApiError::AlreadyIdentified,
            ApiError::Busy,
            ApiError::Timeout(Duration::ZERO),
            ApiError::BodyTimeout,
            ApiError::MissingApiKey,
            ApiError::InvalidApiKey,
            ApiError::OriginNotAllowed,
            ApiError::ServerKeyRequired,
            ApiError::RateLimited(Duration::ZERO),
        ];
        let mut codes: Vec<&str> = every.iter().map(ApiError::code).collect();
        codes.dedup();
        assert_eq!(codes, CODES);
        for code in EVENT_CODES {
            assert!(CODES.contains(&code));
        }
    }
}
