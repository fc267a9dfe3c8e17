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

use crate::{EventIds, merge, percentiles, random_event};

#[derive(clap::Args, Clone)]
pub struct HttpArgs {
    /// host:port of the service.
    #[arg(long, default_value = "127.0.0.1:8000")]
    address: String,
    /// What to send: `event` (POST /api/event), `batch` (POST /api/events), `segment` (POST
    /// /v1/batch: Segment's E-commerce Spec messages, as Segment's Node SDK sends them) or
    /// `rerank`.
    #[arg(long, default_value = "event")]
    body: String,
    /// Events per batch, for `batch` and `segment`.
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
    /// Catalogue items the events name (the first this many, by ASIN), at most 20,000.
    #[arg(long, default_value_t = 20_000)]
    items: i64,
    /// PostgreSQL URL to read the catalogue's ASINs from.
    #[arg(long, env = "DATABASE_URL")]
    database_url: event_ingest::secret::SecretUrl,
    /// Append `event_id,user_id` of every event answered 200 to this file.
    #[arg(long)]
    acked_file: Option<std::path::PathBuf>,
    /// Send a request again, with the same events (the same ids), after a broken connection, a
    /// 503 or a 429, until it is answered 200 or the run ends: as a careful client does.
    #[arg(long)]
    retry: bool,
    /// With --retry: append `event_id,user_id` of every event still unanswered at the end.
    #[arg(long)]
    unresolved_file: Option<std::path::PathBuf>,
    /// Also report the latency of every interval of this many seconds (`intervals` in the
    /// output), to see a tail that comes and goes over a long run.
    #[arg(long)]
    interval_secs: Option<u64>,
    /// Send every body gzip-compressed (`Content-Encoding: gzip`), as the TypeScript client
    /// sends its larger batches.
    #[arg(long)]
    gzip: bool,
    /// The events' client ids: time-ordered UUIDv7s (as the TypeScript client sends), random
    /// ones (as clients that use UUIDv4 send), or none (the seed's event shape).
    #[arg(long, value_enum, default_value_t = EventIds::TimeOrdered)]
    event_ids: EventIds,
}

/// An event's id and its user.
type Sent = (String, i64);

/// A request ready to send, again if need be.
struct Prepared {
    path: &'static str,
    body: Bytes,
    events: Vec<Sent>,
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

    /// The next request, and the events it carries.
    fn prepare(&self, rng: &mut SmallRng) -> Prepared {
        let mut events = Vec::new();
        let mut event = |rng: &mut SmallRng| {
            let event = random_event(rng, self.args.users, &self.asins, self.args.event_ids);
            let id = event["event_id"].as_str().unwrap_or_default().to_owned();
            events.push((id, event["user_id"].as_i64().unwrap_or_default()));
            event
        };
        let (path, body) = match self.args.body.as_str() {
            "event" => ("/api/event", event(rng)),
            "batch" => {
                let events: Vec<_> = (0..self.args.batch_size).map(|_| event(rng)).collect();
                ("/api/events", json!({ "events": events }))
            }
            "segment" => {
                let sent_at = now_rfc3339();
                let mut text = String::with_capacity(self.args.batch_size * 420 + 64);
                text.push_str(r#"{"batch":["#);
                for i in 0..self.args.batch_size {
                    if i > 0 {
                        text.push(',');
                    }
                    segment_message(&mut text, &event(rng), &sent_at);
                }
                text.push_str(&format!(r#"],"sentAt":"{sent_at}"}}"#));
                return self.finish("/v1/batch", text.into_bytes(), events);
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
        self.finish(path, body.to_string().into_bytes(), events)
    }

    fn finish(&self, path: &'static str, body: Vec<u8>, events: Vec<Sent>) -> Prepared {
        Prepared {
            path,
            body: Bytes::from(if self.args.gzip { gzip(&body) } else { body }),
            events,
        }
    }

    fn request(&self, prepared: &Prepared) -> Request<Full<Bytes>> {
        let mut request = Request::post(prepared.path)
            .header("host", &self.args.address)
            .header("content-type", "application/json");
        if self.args.gzip {
            request = request.header("content-encoding", "gzip");
        }
        if self.args.body == "segment" {
            // The SDKs' write key, as HTTP Basic (the service without keys takes any).
            request = request.header("authorization", "Basic YmVuY2gtd3JpdGUta2V5Og==");
        }
        request.body(Full::new(prepared.body.clone())).unwrap()
    }

    fn events_per_request(&self) -> u64 {
        if matches!(self.args.body.as_str(), "batch" | "segment") {
            self.args.batch_size as u64
        } else {
            1
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Latency of each interval (`--interval-secs`), by its index from the start.
    intervals: Vec<Histogram<u64>>,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    failures: u64,
    retries: u64,
    acked: Vec<Sent>,
    unresolved: Vec<Sent>,
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.event_ids != EventIds::None || (args.acked_file.is_none() && !args.retry),
        "--acked-file and --retry need client event ids: not --event-ids none"
    );
    anyhow::ensure!(
        args.event_ids != EventIds::None || args.body != "segment",
        "--body segment derives each messageId from the event's id: not --event-ids none"
    );
    let pool = event_ingest::db::connect(&args.database_url, 1).await?;
    let asins: Vec<String> = sqlx::query_scalar("SELECT asin FROM items ORDER BY asin LIMIT $1")
        .bind(args.items.clamp(1, 20_000))
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
        for (i, interval) in t.intervals.iter().enumerate() {
            if tally.intervals.len() <= i {
                tally
                    .intervals
                    .resize_with(i + 1, || Histogram::new(3).unwrap());
            }
            tally.intervals[i].add(interval)?;
        }
        tally.ok += t.ok;
        tally.failures += t.failures;
        tally.retries += t.retries;
        tally.acked.extend(t.acked);
        tally.unresolved.extend(t.unresolved);
        for (status, n) in t.statuses {
            *tally.statuses.entry(status).or_default() += n;
        }
    }
    if let Some(path) = &args.acked_file {
        append_events(path, &tally.acked)?;
    }
    if let Some(path) = &args.unresolved_file {
        append_events(path, &tally.unresolved)?;
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
        "retries": tally.retries,
        "unresolved_events": tally.unresolved.len(),
        "requests_per_sec": requests as f64 / seconds,
        "cpu_seconds": crate::own_cpu_seconds(),
        "events_per_sec": (tally.ok * plan.events_per_request()) as f64 / seconds,
    });
    merge(&mut out, percentiles(&histogram));
    if let Some(every) = args.interval_secs {
        let intervals: Vec<_> = tally
            .intervals
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut row = json!({"start_secs": i as u64 * every, "requests": h.len()});
                merge(&mut row, percentiles(h));
                row
            })
            .collect();
        out["intervals"] = json!(intervals);
    }
    println!("{out}");
    Ok(())
}

fn append_events(path: &std::path::Path, events: &[Sent]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for (id, user) in events {
        writeln!(file, "{id},{user}")?;
    }
    Ok(())
}

/// Connects, retrying until the run's deadline (the service may be restarting).
async fn connect(plan: &Plan) -> Option<SendRequest<Full<Bytes>>> {
    while Instant::now() < plan.deadline {
        if let Ok(stream) = tokio::net::TcpStream::connect(&plan.args.address).await {
            let _ = stream.set_nodelay(true);
            if let Ok((sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(connection);
                return Some(sender);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn work(plan: Arc<Plan>, worker: u64) -> anyhow::Result<(Histogram<u64>, Tally)> {
    // A fresh seed per run: event ids must not repeat across runs.
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ worker);
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut tally = Tally::default();
    let Some(mut sender) = connect(&plan).await else {
        return Ok((histogram, tally));
    };
    'requests: while let Some(due) = plan.next() {
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let prepared = plan.prepare(&mut rng);
        let sent = due.unwrap_or_else(Instant::now);
        loop {
            let answer = match sender.ready().await {
                Ok(()) => sender.send_request(plan.request(&prepared)).await.ok(),
                Err(_) => None,
            };
            let retry = plan.args.retry && Instant::now() < plan.deadline;
            let Some(response) = answer else {
                tally.failures += 1;
                let Some(fresh) = connect(&plan).await else {
                    tally.unresolved.extend(prepared.events);
                    break 'requests;
                };
                sender = fresh;
                if retry {
                    tally.retries += 1;
                    continue;
                }
                tally.unresolved.extend(prepared.events);
                continue 'requests;
            };
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            let micros = sent.elapsed().as_micros() as u64;
            histogram.record(micros)?;
            if let Some(every) = plan.args.interval_secs {
                let i =
                    (sent.saturating_duration_since(plan.start).as_secs() / every.max(1)) as usize;
                if tally.intervals.len() <= i {
                    tally
                        .intervals
                        .resize_with(i + 1, || Histogram::new(3).unwrap());
                }
                tally.intervals[i].record(micros)?;
            }
            *tally.statuses.entry(status).or_default() += 1;
            if status == 200 {
                tally.ok += 1;
                if plan.args.acked_file.is_some() {
                    let (acked, refused) = accepted(prepared.events, body.ok().as_deref());
                    tally.acked.extend(acked);
                    tally.unresolved.extend(refused);
                }
            } else if retry && (status == 503 || status == 429) {
                tally.retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            } else {
                tally.unresolved.extend(prepared.events);
            }
            break;
        }
    }
    Ok((histogram, tally))
}

/// The events a 200 accepted (all of a single event, the accepted ones of a batch), and those it
/// did not.
fn accepted(events: Vec<Sent>, body: Option<&[u8]>) -> (Vec<Sent>, Vec<Sent>) {
    let Some(results) = body
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["results"].as_array().cloned())
    else {
        return (events, Vec::new());
    };
    let accepted: std::collections::HashSet<u64> = results
        .iter()
        .filter(|r| r["status"] == "accepted")
        .filter_map(|r| r["index"].as_u64())
        .collect();
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for (i, event) in events.into_iter().enumerate() {
        if accepted.contains(&(i as u64)) {
            acked.push(event);
        } else {
            refused.push(event);
        }
    }
    (acked, refused)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One of our random events as Segment's Node SDK sends the E-commerce Spec's call for it: the
/// Spec's name, the product id in the properties (an order of one product for a purchase, a
/// review's rating as the string the Spec has), the SDK's messageId, context and metadata.
/// Written as text, not built as a tree: the generator shares the machine with the service.
fn segment_message(out: &mut String, event: &serde_json::Value, sent_at: &str) {
    use std::fmt::Write as _;
    let asin = event["asin"].as_str().unwrap_or_default();
    let id = event["event_id"].as_str().unwrap_or_default();
    let (name, properties) = match event["event_type"].as_str().unwrap_or_default() {
        "view" => (
            "Product Viewed",
            format!(r#"{{"product_id":"{asin}","page":"bench","price":19.99}}"#),
        ),
        "click" => (
            "Product Clicked",
            format!(r#"{{"product_id":"{asin}","page":"bench","position":3}}"#),
        ),
        "add_to_cart" => (
            "Product Added",
            format!(r#"{{"product_id":"{asin}","page":"bench","quantity":1}}"#),
        ),
        "purchase" => (
            "Order Completed",
            format!(
                r#"{{"order_id":"{id}","total":19.99,"currency":"USD","products":[{{"product_id":"{asin}","price":19.99,"quantity":1}}]}}"#
            ),
        ),
        _ => (
            "Product Reviewed",
            format!(r#"{{"product_id":"{asin}","rating":"4"}}"#),
        ),
    };
    let millis = chrono::Utc::now().timestamp_millis();
    let user = &event["user_id"];
    write!(
        out,
        r#"{{"type":"track","event":"{name}","userId":"{user}","properties":{properties},"messageId":"node-next-{millis}-{id}","timestamp":"{sent_at}","context":{{"library":{{"name":"@segment/analytics-node","version":"3.1.0"}}}},"integrations":{{}},"_metadata":{{"jsRuntime":"node"}}}}"#
    )
    .expect("writes to memory");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writes to memory");
    encoder.finish().expect("writes to memory")
}
