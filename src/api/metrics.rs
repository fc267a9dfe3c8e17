//! `GET /metrics`, and the request metrics: counts by route, method and status, and latency by
//! route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

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

pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // The methods the API has; any other is "other", so a client cannot create new series.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
