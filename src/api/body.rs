//! Reading a JSON request body within a size limit, with our error format for every failure.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::LengthLimitError;
use tower_http::timeout::TimeoutError;

use super::ApiError;

/// Reads the body of a JSON request. `Content-Type` may be absent, `application/json`, or
/// `text/plain` (what `navigator.sendBeacon` sends without a CORS preflight); anything else is 415.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && essence != "text/plain" {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let inner = error.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(error) = source {
            if error.is::<LengthLimitError>() {
                return ApiError::BodyTooLarge(limit);
            }
            if error.is::<TimeoutError>() {
                return ApiError::BodyTimeout;
            }
            source = error.source();
        }
        ApiError::InvalidBody(format!("the body could not be read: {inner}"))
    })
}
