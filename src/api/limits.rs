//! Request-level limits: how many requests may be worked on at once, and for how long.
//!
//! Both count work only, not waiting for a client: a handler reads its body first (under the
//! body's own deadline and minimum rate, [`super::body`]), then does its work through
//! [`RequestLimits::run`]. So a thousand clients trickling their bodies hold no place of the cap,
//! and cannot shut out the requests that are ready.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::ApiError;

#[derive(Clone)]
pub struct RequestLimits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl RequestLimits {
    pub fn new(max_concurrent: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            timeout,
        }
    }

    /// Does `work` within the limits: refused at once (503 `busy`, `Retry-After`) when the cap
    /// of requests being worked on is reached, and 503 `timeout` when it takes longer than the
    /// timeout; both are safe to retry.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(ApiError::Busy);
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(ApiError::Timeout(self.timeout)))
    }
}

/// [`RequestLimits::run`] around a whole request, for routes that read no body (the demo's).
pub async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    limits
        .run(async { Ok(next.run(request).await) })
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
