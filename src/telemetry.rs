//! Logs and metrics.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::health::Health;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global log subscriber. `RUST_LOG` filters (default: `info`).
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        // The Redis cluster client warns on every command while a node is down; the service's
        // own (throttled) warning says it once a second.
        .unwrap_or_else(|_| {
            EnvFilter::new("info,sqlx::postgres::notice=warn,redis::cluster_handling=error")
        });
    // Colours only for a person at a terminal who has not asked for none (`NO_COLOR`): a log
    // file or a collector would keep the escape codes.
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Latency buckets, in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The process-wide Prometheus recorder, installed on first use, with every metric described.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe_metrics();
        handle
    })
}

/// The process's own metrics (`process_resident_memory_bytes`, `process_open_fds`, CPU seconds,
/// threads...), as Prometheus clients conventionally export them; read at each scrape.
pub fn collect_process_metrics() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(metrics_process::Collector::default)
        .collect();
}

/// The name, in the health registry, of the task that keeps the metrics' memory bounded.
pub const METRICS_UPKEEP: &str = "metrics-upkeep";

/// Starts the task that drains the histograms' samples into their buckets every 5 seconds.
/// Without it the samples pile up between scrapes, all of them if nothing scrapes: about 30
/// bytes a request, for as long as the process runs.
pub fn spawn_metrics_upkeep(health: &Health) {
    health.spawn(METRICS_UPKEEP, async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            metrics_handle().run_upkeep();
        }
    });
}

/// Every metric the service exports, with its help text; the README's operations section says
/// what an alert on each means. Counters with known label values are published at zero, so that
/// a `rate()` has a series to read before the first event of its kind.
fn describe_metrics() {
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
        "events_accepted_total",
        "Events accepted (durable, answered 200), by event type"
    );
    describe_counter!(
        "events_rejected_total",
        "Events of a request rejected for their content, by reason"
    );
    describe_counter!(
        "requests_rejected_total",
        "Requests answered with an error, by reason (the error code)"
    );
    describe_counter!(
        "events_repeated_total",
        "Events whose client event_id was seen before: stored once, counted once in Redis"
    );
    describe_counter!(
        "event_time_clamped_total",
        "Events whose time lay in the future (a client clock gone wrong): stored at receipt"
    );
    describe_counter!(
        "context_stale_events_total",
        "Events older than the context TTL: stored, but not recorded in Redis"
    );
    describe_counter!(
        "visitors_identified_total",
        "POST /api/identify calls that merged a visitor's context and handed off the identification"
    );
    describe_counter!(
        "visitor_events_attributed_total",
        "Stored visitor events the writer attributed to a user after the visitor's identification"
    );
    describe_counter!(
        "redis_failures_total",
        "Redis calls that failed or were skipped, by operation and reason"
    );
    describe_histogram!(
        "redis_latency_seconds",
        Unit::Seconds,
        "Time of a Redis call, by operation"
    );
    describe_counter!(
        "catalogue_lookup_failures_total",
        "Catalogue lookups PostgreSQL did not answer in time"
    );
    describe_gauge!(
        "journal_bytes",
        Unit::Bytes,
        "Bytes of the journal not yet released: events not yet in PostgreSQL, and appends in flight"
    );
    describe_gauge!(
        "journal_oldest_unwritten_seconds",
        Unit::Seconds,
        "Age of the oldest event the writer is storing and has not stored yet"
    );
    describe_histogram!(
        "journal_write_seconds",
        Unit::Seconds,
        "Time of one journal write (a group of appends), before its flush"
    );
    describe_histogram!(
        "journal_flush_seconds",
        Unit::Seconds,
        "Time of one journal flush (fdatasync)"
    );
    describe_histogram!(
        "journal_rotation_seconds",
        Unit::Seconds,
        "Time to close a full journal segment and begin the next"
    );
    describe_counter!(
        "writer_batches_total",
        "Batches the writer committed to PostgreSQL"
    );
    describe_counter!(
        "writer_rows_total",
        "Rows the writer inserted into interaction_logs"
    );
    describe_counter!(
        "writer_duplicates_total",
        "Events the writer delivered again that PostgreSQL already held (a replay or a retry): skipped"
    );
    describe_histogram!(
        "writer_batch_seconds",
        Unit::Seconds,
        "Time to store one batch in PostgreSQL"
    );
    describe_counter!(
        "writer_retries_total",
        "Failed batch writes the writer retried"
    );
    describe_counter!(
        "writer_failures_total",
        "Batch writes that failed after every quick retry (retried until they land)"
    );
    describe_counter!(
        "events_refused_total",
        "Events PostgreSQL refused for their content, set aside in the journal's quarantine"
    );
    describe_gauge!("connections_open", "Open client connections");
    describe_gauge!(
        "dependency_up",
        "1 while a dependency answers (postgres, redis) or the hand-off takes events (handoff), 0 otherwise; asked every 5 s"
    );
    describe_counter!(
        "connections_refused_total",
        "Connections closed at once for want of a seat: the cap of open connections in all (reason total) or from one client address (per_address)"
    );
    describe_gauge!(
        "background_component_up",
        "1 while a background component runs, 0 once it has stopped or died, by component"
    );
    metrics_process::Collector::default().describe();

    for event_type in crate::event::EventType::ALL {
        counter!("events_accepted_total", "event_type" => event_type.as_str()).increment(0);
    }
    for reason in crate::api::error::EVENT_CODES {
        counter!("events_rejected_total", "reason" => reason).increment(0);
    }
    for reason in crate::api::error::CODES {
        counter!("requests_rejected_total", "reason" => reason).increment(0);
    }
    for reason in ["total", "per_address"] {
        counter!("connections_refused_total", "reason" => reason).increment(0);
    }
    for operation in ["record", "load", "identify", "ping"] {
        for reason in ["timeout", "error", "recently_failed"] {
            counter!("redis_failures_total", "operation" => operation, "reason" => reason)
                .increment(0);
        }
    }
    for name in [
        "events_repeated_total",
        "event_time_clamped_total",
        "context_stale_events_total",
        "visitors_identified_total",
        "visitor_events_attributed_total",
        "catalogue_lookup_failures_total",
        "writer_batches_total",
        "writer_rows_total",
        "writer_duplicates_total",
        "writer_retries_total",
        "writer_failures_total",
        "events_refused_total",
    ] {
        counter!(name).increment(0);
    }
}

/// An error and its causes, one after another (`outer: inner: innermost`): for a log field or
/// a status body, where the chain would otherwise stop at the outermost message.
pub fn chain(error: impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Milliseconds on a monotonic clock (Tokio's, so that tests can pause and advance it): what
/// every cool-down is measured on, since the wall clock can be stepped back.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now()
        .saturating_duration_since(start)
        .as_millis() as u64
}

/// Lets a log line through at most once per second; counts what it held back. For warnings that
/// an outage would otherwise repeat on every request.
pub struct Throttle {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Self {
        Self {
            // The first line is always let through (`next_ms` 0 is due at once).
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the last.
    pub fn allow(&self) -> Option<u64> {
        let now = monotonic_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    use std::time::Duration;

    /// On Tokio's paused clock: the throttle follows the monotonic clock, not the wall clock
    /// (which the paused clock does not move).
    #[tokio::test(start_paused = true)]
    async fn a_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(throttle.allow(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(throttle.allow(), Some(2));
        assert_eq!(throttle.allow(), None);
    }
}
