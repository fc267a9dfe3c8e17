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

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe_process_metrics();
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

/// The process's own metrics, described; each component describes its own
/// (`startup::install_metrics` calls them all).
pub fn describe_process_metrics() {
    metrics_process::Collector::default().describe();
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
