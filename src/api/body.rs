//! Reading a JSON request body within a size limit, with our error format for every failure.
//!
//! A body refused before its end (too large, or of a type we do not take) is read on and thrown
//! away, within bounds, before the answer goes out: a client that sends its whole body before it
//! reads (most do) would otherwise meet a connection reset instead of our JSON error
//! (RFC 9112, section 9.6).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tower_http::timeout::TimeoutError;

use super::ApiError;

/// Most bytes of a refused body read and thrown away; past it the connection is closed.
const DISCARD_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Longest time spent throwing a refused body away.
const DISCARD_MAX_TIME: Duration = Duration::from_secs(5);

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
            discard(body).await;
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    read_within(body, limit).await
}

/// The whole body, or 413 once it passes `limit` bytes (the rest thrown away).
async fn read_within(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(read_error)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if collected.len() + data.len() > limit {
            discard(body).await;
            return Err(ApiError::BodyTooLarge(limit));
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Reads what is left of a refused body and drops it, for at most [`DISCARD_MAX_BYTES`] and
/// [`DISCARD_MAX_TIME`]; a body beyond either is left unread, and the server closes the
/// connection after the answer.
async fn discard(mut body: Body) {
    let mut left = DISCARD_MAX_BYTES;
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let read = frame.data_ref().map_or(0, Bytes::len);
            match left.checked_sub(read) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    })
    .await;
}

fn read_error(error: axum::Error) -> ApiError {
    let inner = error.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(error) = source {
        if error.is::<TimeoutError>() {
            return ApiError::BodyTimeout;
        }
        source = error.source();
    }
    ApiError::InvalidBody(format!("the body could not be read: {inner}"))
}
