//! `GET /metrics`, and the request metrics: counts by route, method and status, and latency by
//! route.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::response::Response;
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use tower::Service;

use super::Vitals;
use crate::handoff::HandoffState;
use crate::telemetry;

/// `GET /metrics`, in Prometheus' text format. The gauges of state (the journal's backlog) are
/// read at the scrape, so they move while nothing else happens, during an outage say.
pub async fn render(State(vitals): State<Vitals>) -> String {
    if let HandoffState::Journal { used_bytes, .. } = vitals.handoff.state() {
        metrics::gauge!("journal_bytes").set(used_bytes as f64);
        // The journal's writer reads it in order: the oldest event it is storing is the
        // journal's oldest unwritten one.
        let age = vitals.writer.as_ref().map(|w| w.oldest_unwritten_age());
        metrics::gauge!("journal_oldest_unwritten_seconds")
            .set(age.unwrap_or_default().as_secs_f64());
    }
    telemetry::collect_process_metrics();
    telemetry::metrics_handle().render()
}

/// The request metrics' handles, found in the metrics registry once per route, method and
/// status and then reused: a request counts itself without building labels or looking them up.
/// Bounded: routes are the router's templates, methods five names, statuses three digits.
#[derive(Default)]
struct RequestMetrics {
    routes: RwLock<HashMap<String, RouteMetrics>>,
}

struct RouteMetrics {
    duration: Histogram,
    requests: HashMap<(&'static str, u16), Counter>,
}

impl RequestMetrics {
    fn record(&self, route: &str, method: &'static str, status: u16, elapsed: f64) {
        if let Some(metrics) = self.routes.read().get(route)
            && let Some(requests) = metrics.requests.get(&(method, status))
        {
            requests.increment(1);
            metrics.duration.record(elapsed);
            return;
        }
        let mut routes = self.routes.write();
        let metrics = routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteMetrics {
                duration: metrics::histogram!("http_request_duration_seconds", "route" => route.to_owned()),
                requests: HashMap::new(),
            });
        let requests = metrics.requests.entry((method, status)).or_insert_with(|| {
            metrics::counter!("http_requests_total", "route" => route.to_owned(), "method" => method, "status" => status.to_string())
        });
        requests.increment(1);
        metrics.duration.record(elapsed);
    }
}

/// `router` with its requests counted by route, method and status (`http_requests_total`) and
/// timed by route (`http_request_duration_seconds`). A layer of the router, not around it: it
/// needs the route each request matched.
///
/// A service of its own rather than `middleware::from_fn`: that clones the service it wraps, and
/// with it every layer inside, for each request; this one calls it in place.
pub fn recorded(router: Router) -> Router {
    let metrics = Arc::new(RequestMetrics::default());
    router.layer(tower::layer::layer_fn(move |inner| Recorded {
        inner,
        metrics: metrics.clone(),
    }))
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

impl<S> Service<Request> for Recorded<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RecordedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        // The methods the API has; any other is "other", so a client cannot create new series.
        let method: &'static str = match request.method().as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "OPTIONS" => "OPTIONS",
            "HEAD" => "HEAD",
            _ => "other",
        };
        RecordedFuture {
            answer: self.inner.call(request),
            metrics: self.metrics.clone(),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way; counted and timed when it comes.
    struct RecordedFuture<F> {
        #[pin]
        answer: F,
        metrics: Arc<RequestMetrics>,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for RecordedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.answer.poll(cx));
        if let Ok(response) = &outcome {
            let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
            this.metrics.record(
                route,
                this.method,
                response.status().as_u16(),
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(outcome)
    }
}

/// The HTTP metrics, and what the answers say; error codes and event rejections published at zero, so that a `rate()` has a series before the first of each.
pub fn describe_metrics() {
    super::segment::describe_metrics();
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route"
    );
    describe_counter!(
        "requests_rejected_total",
        "Requests answered with an error, by reason (the error code)"
    );
    describe_counter!(
        "events_rejected_total",
        "Events of a request rejected for their content, by reason"
    );
    describe_gauge!(
        "dependency_up",
        "1 while a dependency answers (postgres, redis) or the hand-off takes events (handoff), 0 otherwise; asked every 5 s"
    );

    for reason in super::error::EVENT_CODES {
        counter!("events_rejected_total", "reason" => reason).increment(0);
    }
    for reason in super::error::CODES {
        counter!("requests_rejected_total", "reason" => reason).increment(0);
    }
}
