//! The HTTP/1.1 server loop: hyper directly, for the limits `axum::serve` does not offer (a
//! deadline for reading the request head, caps on connections in all and per client address),
//! with graceful shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::HttpService;
use crate::api::access::address_key;
use crate::telemetry::Throttle;

/// Limits enforced below the router, on the connection itself.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send its request line and headers within this, or the connection is closed.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Open connections at most; past it a new one is closed at once.
    pub max_connections: usize,
    /// Open connections at most from one client address (an IPv6 client by its /64); none
    /// behind a proxy, whose address all connections share.
    pub max_per_address: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_per_address: Some(256),
        }
    }
}

/// Open connections by client address.
type OpenByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The seats of open connections: in all, and per client address.
struct Seats {
    total: Arc<Semaphore>,
    per_address: Option<(usize, OpenByAddress)>,
}

/// A connection's seats, given back when it closes.
struct Seat {
    _total: OwnedSemaphorePermit,
    address: Option<(IpAddr, OpenByAddress)>,
}

impl Seats {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: limits.max_per_address.map(|cap| (cap, Arc::default())),
        }
    }

    /// A seat for a connection from `peer`, or why there is none.
    fn take(&self, peer: IpAddr) -> Result<Seat, &'static str> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "total")?;
        let address = match &self.per_address {
            None => None,
            Some((cap, open)) => {
                let key = address_key(peer);
                let mut open_now = open.lock();
                let count = open_now.entry(key).or_default();
                if *count >= *cap {
                    return Err("per_address");
                }
                *count += 1;
                Some((key, open.clone()))
            }
        };
        Ok(Seat {
            _total: total,
            address,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some((key, open)) = &self.address {
            let mut open = open.lock();
            if let Some(count) = open.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(key);
                }
            }
        }
        metrics::gauge!("connections_open").decrement(1);
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and waits (at
/// most `drain_timeout`) for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let graceful = GracefulShutdown::new();
    let seats = Seats::new(&limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let seat = match seats.take(peer.ip()) {
            Ok(seat) => seat,
            Err(reason) => {
                refused(reason, &limits);
                continue; // the stream is dropped: closed
            }
        };
        metrics::gauge!("connections_open").increment(1);
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_request =
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                service.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = http.serve_connection(TokioIo::new(stream), per_request);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection closed with an error");
            }
            drop(seat);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain_timeout,
            "requests still in flight after the shutdown timeout; closing anyway"
        );
    }
}

/// Counts a connection closed at once for want of a seat, and says so (at most once a second).
fn refused(reason: &'static str, limits: &ConnectionLimits) {
    metrics::counter!("connections_refused_total", "reason" => reason).increment(1);
    static WARNING: Throttle = Throttle::new();
    if let Some(suppressed) = WARNING.allow() {
        tracing::warn!(
            reason,
            max_connections = limits.max_connections,
            max_per_address = limits.max_per_address,
            suppressed,
            "a connection was closed at once: the cap of open connections is reached (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS)"
        );
    }
}

/// The connections' metrics, the refusals published at zero.
pub fn describe_metrics() {
    use metrics::{counter, describe_counter, describe_gauge};

    describe_gauge!("connections_open", "Open client connections");
    describe_counter!(
        "connections_refused_total",
        "Connections closed at once for want of a seat: the cap of open connections in all (reason total) or from one client address (per_address)"
    );

    for reason in ["total", "per_address"] {
        counter!("connections_refused_total", "reason" => reason).increment(0);
    }
}
