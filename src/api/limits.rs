//! Request-level limits: how many requests at once, and how long one may take.

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

    /// Answers with `work` within the limits: shed at once (503, `Retry-After`) when the cap of
    /// requests in flight is reached, and 503 when it takes longer than the timeout; both are safe
    /// to retry.
    pub async fn apply(&self, work: impl Future<Output = Response>) -> Response {
        let Ok(_permit) = self.permits.try_acquire() else {
            return ApiError::Busy.into_response();
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout(self.timeout).into_response(),
        }
    }
}

/// The middleware of [`RequestLimits::apply`].
pub async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    limits.apply(next.run(request)).await
}
