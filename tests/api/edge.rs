//! The public edge: slow clients, caps, CORS, API keys, rate limits, metrics, logs.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use event_ingest::config::DemoMode;

use crate::helpers::{ITEMS, TestApp, scrape, with_own_redis};

fn event() -> Value {
    json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"})
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads what the server sends until it closes the connection (or 10 s pass).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A POST whose body never finishes: headers promise 100 bytes, 10 are sent.
async fn start_slow_post(app: &TestApp) -> TcpStream {
    let mut stream = connect(app).await;
    let head = "POST /api/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"user_id\"";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_headers_is_disconnected() {
    let app = TestApp::spawn_with(|s| s.edge.header_read_timeout_secs = 1).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /api/event HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    read_to_close(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the server, not by the test's deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_gets_408_in_our_format() {
    let app = TestApp::spawn_with(|s| s.edge.body_read_timeout_secs = 1).await;
    let mut stream = start_slow_post(&app).await;
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
}

/// Sends a whole request whose body is `body_bytes` long before reading anything (as a plain
/// HTTP client does), then reads the answer.
async fn send_whole_then_read(app: &TestApp, head: &str, body_bytes: usize) -> String {
    let mut stream = connect(app).await;
    let head = format!("{head}content-length: {body_bytes}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let metadata = format!("{{\"metadata\": {{\"x\": \"{}", "a".repeat(body_bytes));
    let sent = stream.write_all(&metadata.as_bytes()[..body_bytes]).await;
    assert!(sent.is_ok(), "the body could not be sent whole: {sent:?}");
    read_to_close(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sent_whole_before_reading_gets_the_413_not_a_reset() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let answer = send_whole_then_read(
            &app,
            "POST /api/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
            8 * 1024 * 1024,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
        assert!(
            answer.contains(r#""code":"body_too_large""#),
            "{answer:.400}"
        );
    }
    let answer = send_whole_then_read(
        &app,
        "POST /api/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/xml\r\n",
        1024 * 1024,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer:.200}");
}

/// A context read: it waits while Redis is paused.
async fn read_context(app: &TestApp) -> reqwest::Response {
    app.http
        .get(format!("{}/api/users/1/context", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_over_the_time_limit_gets_503() {
    let (app, redis) = with_own_redis(|s| {
        s.edge.request_timeout_secs = 2;
        s.edge.body_read_timeout_secs = 1;
        s.context.redis_timeout_ms = 10_000;
    })
    .await;
    redis.pause(5_000).await;
    let started = std::time::Instant::now();
    let response = read_context(&app).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "timeout", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_cap_are_shed_with_503() {
    let (app, redis) = with_own_redis(|s| {
        s.edge.max_concurrent_requests = 1;
        s.context.redis_timeout_ms = 10_000;
    })
    .await;
    let app = std::sync::Arc::new(app);
    redis.pause(3_000).await;
    let holder = tokio::spawn({
        let app = app.clone();
        async move { read_context(&app).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A request that needs no Redis: a 422, once it gets a place.
    let response = app.post_json("/api/event", &json!({"user_id": 0})).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "busy");
    assert_eq!(
        holder.await.unwrap(),
        200,
        "the slow one is answered once Redis is"
    );
    assert_eq!(app.post("/api/event", &json!({"user_id": 0})).await.0, 422);
    assert_eq!(
        app.get("/health/live").await.0,
        200,
        "health answers however busy the API is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_within_seconds_however_often_it_sends() {
    let app = TestApp::spawn().await;
    let mut stream = start_slow_post(&app).await;
    let started = std::time::Instant::now();
    // A byte every half second, for as long as the server keeps the connection.
    let answer = tokio::spawn(async move {
        let mut answer = Vec::new();
        loop {
            tokio::select! {
                read = stream.read_buf(&mut answer) => {
                    if read.unwrap_or(0) == 0 { break; }
                }
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stream.write_all(b" ").await.is_err() { break; }
                }
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut by the minimum rate after its first second: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_must_arrive_whole_within_its_deadline_however_fast_it_trickles() {
    let app = TestApp::spawn_with(|s| {
        s.edge.body_read_timeout_secs = 2;
        s.edge.body_min_bytes_per_sec = 0;
    })
    .await;
    let mut stream = start_slow_post(&app).await;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    loop {
        tokio::select! {
            read = stream.read_buf(&mut answer) => {
                if read.unwrap_or(0) == 0 { break; }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stream.write_all(b" ").await.is_err() { break; }
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/event", app.address),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-api-key")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_by_default_allows_local_development_origins_only() {
    let app = TestApp::spawn().await;
    let local = preflight(&app, "http://localhost:3000").await;
    assert_eq!(local.status(), 200);
    assert_eq!(
        local.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(
        local.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-api-key")
    );
    let foreign = preflight(&app, "https://evil.example").await;
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let lookalike = preflight(&app, "http://localhost.evil.example").await;
    assert!(
        lookalike
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_follows_the_configured_allow_list() {
    let app =
        TestApp::spawn_with(|s| s.edge.cors_origins = vec!["https://shop.example".to_owned()])
            .await;
    let allowed = preflight(&app, "https://shop.example").await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let local = preflight(&app, "http://localhost:3000").await;
    assert!(local.headers().get("access-control-allow-origin").is_none());
}

async fn post_with(app: &TestApp, key: Option<&str>, origin: Option<&str>) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}/api/event", app.address))
        .json(&event());
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_when_configured_and_may_be_bound_to_origins() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec![
            "any-origin".into(),
            "browser-key@https://shop.example".into(),
        ];
    })
    .await;
    let code = |answer: Value| answer["error"]["code"].as_str().map(str::to_owned);
    let (status, answer) = post_with(&app, None, None).await;
    assert_eq!(
        (status, code(answer)),
        (401, Some("missing_api_key".into()))
    );
    let (status, answer) = post_with(&app, Some("any-origim"), None).await;
    assert_eq!(
        (status, code(answer)),
        (401, Some("invalid_api_key".into()))
    );
    assert_eq!(post_with(&app, Some("any-origin"), None).await.0, 200);
    assert_eq!(
        post_with(&app, Some("browser-key"), Some("https://shop.example"))
            .await
            .0,
        200
    );
    let (status, answer) = post_with(&app, Some("browser-key"), Some("https://evil.example")).await;
    assert_eq!(
        (status, code(answer)),
        (403, Some("origin_not_allowed".into()))
    );
    assert_eq!(post_with(&app, Some("browser-key"), None).await.0, 403);
    assert_eq!(app.get("/health/live").await.0, 200, "health needs no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_per_key_and_per_address() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec!["a".into(), "b".into()];
        s.edge.rate_limit_per_key = 1;
        s.edge.rate_limit_burst = 2;
    })
    .await;
    let statuses: Vec<u16> =
        futures::future::join_all((0..3).map(|_| post_with(&app, Some("a"), None)))
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        post_with(&app, Some("b"), None).await.0,
        200,
        "another key has its own budget"
    );
    let response = app
        .http
        .post(format!("{}/api/event", app.address))
        .header("x-api-key", "a")
        .json(&event())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );

    let by_address = TestApp::spawn_with(|s| {
        s.edge.rate_limit_per_ip = 1;
        s.edge.rate_limit_burst = 1;
    })
    .await;
    assert_eq!(post_with(&by_address, None, None).await.0, 200);
    assert_eq!(post_with(&by_address, None, None).await.0, 429);

    // Behind a proxy: the address is the last X-Forwarded-For entry, the one the proxy wrote;
    // what the client put before it does not buy a new budget.
    let proxied = TestApp::spawn_with(|s| {
        s.edge.rate_limit_per_ip = 1;
        s.edge.rate_limit_burst = 1;
        s.edge.trust_forwarded_for = true;
    })
    .await;
    let from = |forwarded: &'static str| {
        let request = proxied
            .http
            .post(format!("{}/api/event", proxied.address))
            .json(&event());
        async move {
            request
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(from("1.1.1.1, 10.0.0.7").await, 200);
    assert_eq!(from("2.2.2.2, 10.0.0.7").await, 429);
    assert_eq!(from("1.1.1.1, 10.0.0.8").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_events_rejections_redis_journal_and_writer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(5, ITEMS[0].0, "click").await, 200);
    assert_eq!(app.post("/api/event", &json!({"user_id": 0})).await.0, 422);
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    app.http
        .request(odd, format!("{}/api/event", app.address))
        .send()
        .await
        .unwrap();
    app.wait_for_rows(1).await;
    let metrics = scrape(&app.http, &app.address).await;
    for expected in [
        r#"http_requests_total{route="/api/event",method="POST",status="200"} 1"#,
        r#"http_requests_total{route="/api/event",method="POST",status="422"} 1"#,
        r#"http_request_duration_seconds_bucket{route="/api/event",le="0.005"}"#,
        r#"events_accepted_total{event_type="click"} 1"#,
        r#"requests_rejected_total{reason="invalid_field"} 1"#,
        r#"events_rejected_total{reason="invalid_field"} 1"#,
        r#"http_requests_total{route="/api/event",method="other",status="405"} 1"#,
        "redis_latency_seconds_bucket",
        "journal_bytes",
        "journal_oldest_unwritten_seconds",
        "writer_batches_total",
        "writer_rows_total 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_served_unless_turned_off() {
    let app = TestApp::spawn().await;
    let page = app
        .http
        .get(format!("{}/demo/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Real-time personalisation")
    );
    let (status, products) = app.get("/demo/products").await;
    assert_eq!(status, 200);
    let categories: std::collections::HashSet<_> = products
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["category"].as_str().unwrap().to_owned())
        .collect();
    assert!(categories.len() >= 3, "{products}");

    let off = TestApp::spawn_with(|s| s.edge.demo = DemoMode::Off).await;
    assert_eq!(off.get("/demo/products").await.0, 404);
    let page = off
        .http
        .get(format!("{}/demo/", off.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
}
