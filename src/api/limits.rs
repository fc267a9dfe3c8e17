//! Request-level limits: how many requests may be worked on at once, and how long one may take.
//!
//! The cap counts work only, not waiting for a client: a handler reads its body first (under the
//! body's own deadline and minimum rate, [`super::body`]), then takes its place
//! ([`RequestLimits::admit`]). So a thousand clients trickling their bodies hold no place, and
//! cannot shut out the requests that are ready. The timeout covers the whole request; the
//! body's deadline is shorter (checked at start-up), so a slow body is a 408, not a 503.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ApiError;

/// Requests worked on at once unless told otherwise.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;

/// How long a request may take, its body included, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

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

    /// A place among the requests worked on at once, held until dropped; 503 `busy` (with
    /// `Retry-After`) at once when none is free. Safe to retry.
    pub fn admit(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.permits.try_acquire().map_err(|_| ApiError::Busy)
    }

    /// Answers with `request`, or with 503 `timeout` when it takes longer than the timeout,
    /// worded by `render` (the route's own error form). Safe to retry.
    pub async fn within_time(
        &self,
        request: impl Future<Output = Response>,
        render: fn(ApiError) -> Response,
    ) -> Response {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(response) => response,
            Err(_) => render(ApiError::Timeout(self.timeout)),
        }
    }
}

/// A place and the timeout around a whole request, for routes that read no body (the demo's).
pub async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let _work = match limits.admit() {
        Ok(permit) => permit,
        Err(error) => return error.into_response(),
    };
    limits
        .within_time(next.run(request), IntoResponse::into_response)
        .await
}
