//! HTTP load: closed loop (as fast as answered) or open loop (a fixed rate, wrk2-style).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::{merge, percentiles, random_event};

#[derive(clap::Args, Clone)]
pub struct HttpArgs {
    /// host:port of the service.
    #[arg(long, default_value = "127.0.0.1:8000")]
    address: String,
    /// What to send: `event` (POST /api/event), `batch` (POST /api/events) or `rerank`.
    #[arg(long, default_value = "event")]
    body: String,
    /// Events per batch, for `batch`.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Candidates per request, for `rerank`.
    #[arg(long, default_value_t = 100)]
    candidates: usize,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Requests per second, open loop; without it, closed loop.
    #[arg(long)]
    rate: Option<u64>,
    /// Most requests in all (a bound besides the duration).
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    #[arg(long, default_value_t = 1000)]
    users: i64,
    /// PostgreSQL URL to read the catalogue's ASINs from.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

struct Plan {
    args: HttpArgs,
    asins: Vec<String>,
    start: Instant,
    deadline: Instant,
    next: AtomicU64,
}

impl Plan {
    /// The next request to send and, open loop, when it is due; None when the run is over.
    fn next(&self) -> Option<Option<Instant>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.args.max_requests {
            return None;
        }
        match self.args.rate {
            Some(rate) => {
                let due = self.start + Duration::from_nanos(i * 1_000_000_000 / rate);
                (due < self.deadline).then_some(Some(due))
            }
            None => (Instant::now() < self.deadline).then_some(None),
        }
    }

    fn request(&self, rng: &mut SmallRng) -> Request<Full<Bytes>> {
        let (path, body) = match self.args.body.as_str() {
            "event" => (
                "/api/event",
                random_event(rng, self.args.users, &self.asins),
            ),
            "batch" => {
                let events: Vec<_> = (0..self.args.batch_size)
                    .map(|_| random_event(rng, self.args.users, &self.asins))
                    .collect();
                ("/api/events", json!({ "events": events }))
            }
            "rerank" => {
                let n = self.args.candidates;
                let items: Vec<_> = (0..n)
                    .map(|i| {
                        let asin = &self.asins[rng.random_range(0..self.asins.len())];
                        json!({"asin": asin, "score": 1.0 - i as f64 / n as f64})
                    })
                    .collect();
                let user = rng.random_range(1..=self.args.users);
                ("/api/rerank", json!({"user_id": user, "items": items}))
            }
            other => panic!("unknown body kind {other}"),
        };
        Request::post(path)
            .header("host", &self.args.address)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    fn events_per_request(&self) -> u64 {
        if self.args.body == "batch" {
            self.args.batch_size as u64
        } else {
            1
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    failures: u64,
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let pool = event_ingest::db::connect(&args.database_url, 1).await?;
    let asins: Vec<String> = sqlx::query_scalar("SELECT asin FROM items ORDER BY asin LIMIT 20000")
        .fetch_all(&pool)
        .await?;
    anyhow::ensure!(
        !asins.is_empty(),
        "the catalogue is empty: run seed-catalog"
    );
    let start = Instant::now();
    let plan = Arc::new(Plan {
        deadline: start + Duration::from_secs(args.duration_secs),
        args: args.clone(),
        asins,
        start,
        next: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..args.connections)
        .map(|worker| tokio::spawn(work(plan.clone(), worker as u64)))
        .collect();
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut tally = Tally::default();
    for worker in workers {
        let (h, t) = worker.await??;
        histogram.add(h)?;
        tally.ok += t.ok;
        tally.failures += t.failures;
        for (status, n) in t.statuses {
            *tally.statuses.entry(status).or_default() += n;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let requests: u64 = tally.statuses.values().sum();
    let mut out = json!({
        "mode": "http",
        "body": args.body,
        "rate": args.rate,
        "connections": args.connections,
        "seconds": seconds,
        "requests": requests,
        "ok": tally.ok,
        "events_ok": tally.ok * plan.events_per_request(),
        "statuses": tally.statuses,
        "connection_failures": tally.failures,
        "requests_per_sec": requests as f64 / seconds,
        "events_per_sec": (tally.ok * plan.events_per_request()) as f64 / seconds,
    });
    merge(&mut out, percentiles(&histogram));
    println!("{out}");
    Ok(())
}

async fn connect(address: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn work(plan: Arc<Plan>, worker: u64) -> anyhow::Result<(Histogram<u64>, Tally)> {
    // A fresh seed per run: event ids must not repeat across runs.
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ worker);
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut tally = Tally::default();
    let mut sender = connect(&plan.args.address).await?;
    while let Some(due) = plan.next() {
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let request = plan.request(&mut rng);
        let sent = due.unwrap_or_else(Instant::now);
        if sender.ready().await.is_err() {
            sender = connect(&plan.args.address).await?;
        }
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                histogram.record(sent.elapsed().as_micros() as u64)?;
                *tally.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    tally.ok += 1;
                }
            }
            Err(_) => {
                tally.failures += 1;
                sender = connect(&plan.args.address).await?;
            }
        }
    }
    Ok((histogram, tally))
}
