//! An attacker with nothing but the public API: requests that would take the service down or
//! fill its stores, and answers that would not tell the truth.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ITEMS, REDIS_URL, TestApp, TestDatabase, eventually};
use crate::process::Service;

/// Peak and current resident memory of a process, in bytes (`VmHWM`, `VmRSS`).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the process's peak resident memory to its current one.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_costs_a_small_multiple_of_its_body_whatever_it_holds() {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let service = Service::start(
        &[
            ("DATABASE_URL", database.url.clone()),
            ("REDIS_URL", REDIS_URL.to_owned()),
            ("REDIS_KEY_PREFIX", format!("test:{}:", database.name)),
            ("JOURNAL_DIR", journal.path().display().to_string()),
            ("RUST_LOG", "error".to_owned()),
        ],
        Stdio::null(),
    )
    .await;
    let pid = service.child.id().unwrap();
    let post = |path: &'static str, body: String| {
        let request = service
            .http
            .post(format!("{}{path}", service.base))
            .header("content-type", "application/json")
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mib = 1024 * 1024;
    // Every body just under 1 MiB (the batch limit).
    let fill = |open: &str, item: &str, close: &str| {
        let n = (mib - open.len() - close.len() - 16) / (item.len() + 1);
        format!("{open}{}{item}{close}", format!("{item},").repeat(n - 1))
    };
    let attacks = [
        ("/api/events", fill(r#"{"events": ["#, "0", "]}")),
        ("/api/events", fill(r#"{"events": [["#, "{}", "]]}")),
        (
            "/api/events",
            fill(r#"{"events": [{"user_id": 1, "x": ["#, "0", "]}]}"),
        ),
        (
            "/api/events",
            fill(r#"{"events": [{"asin": ["#, "[]", "]}]}"),
        ),
        (
            "/api/rerank",
            fill(r#"{"user_id": 1, "items": ["#, "0", "]}"),
        ),
        (
            "/api/rerank",
            fill(r#"{"user_id": 1, "x": {"a": ["#, "{}", "]}}"),
        ),
    ];
    // Warm up: the allocator's and the runtime's first allocations are not the attack's.
    for (path, body) in &attacks {
        post(path, body.clone()).await;
    }
    for (path, body) in &attacks {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reset_peak(pid);
        let (_, before) = memory(pid);
        let status = post(path, body.clone()).await;
        let (peak, _) = memory(pid);
        let grew = peak.saturating_sub(before);
        assert!(status == 422 || status == 200, "{path}: {status}");
        assert!(
            grew < 6 * mib as u64,
            "{path} {:.40}…: peak {:.1} MB over the {:.1} MB before",
            body,
            grew as f64 / 1e6,
            before as f64 / 1e6
        );
    }
    // Eight of the worst at once.
    reset_peak(pid);
    let (_, before) = memory(pid);
    let statuses =
        futures::future::join_all((0..8).map(|i| post(attacks[i % 2].0, attacks[i % 2].1.clone())))
            .await;
    let (peak, _) = memory(pid);
    assert!(
        statuses.iter().all(|s| *s == 422 || *s == 200),
        "{statuses:?}"
    );
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 40 * mib as u64,
        "eight at once: peak {:.1} MB over the {:.1} MB before",
        grew as f64 / 1e6,
        before as f64 / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_limit_is_refused_and_one_nested_array_is_one_rejected_event() {
    let app = TestApp::spawn().await;
    let zeros = format!(r#"{{"events": [{}0]}}"#, "0,".repeat(100_000));
    let response = app
        .post_raw("/api/events", Some("application/json"), zeros.into_bytes())
        .await;
    assert_eq!(response.status(), 422);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["error"]["message"],
        "events must hold 1 to 500 events"
    );
    let nested = format!(r#"{{"events": [[{}{{}}]]}}"#, "{},".repeat(10_000));
    let response = app
        .post_raw("/api/events", Some("application/json"), nested.into_bytes())
        .await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 0, "{answer}");
    assert_eq!(answer["results"][0]["error"]["code"], "invalid_field");
}

/// A POST to `path` that promises a body of 1,000 bytes and sends 10, from a connection the
/// caller keeps.
async fn trickle(address: &str, path: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"user_id\""
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(stream)
}

/// Keeps every stream trickling, a byte each every half second, until dropped.
fn keep_trickling(streams: Vec<TcpStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut streams = streams;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for stream in &mut streams {
                let _ = stream.write_all(b" ").await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_clients_hold_no_place_of_the_cap() {
    // Slow bodies kept open for as long as the deadline allows (no minimum rate), and no cap
    // per address: every one of them is a connection reading a body.
    let app = TestApp::spawn_with(|s| {
        s.edge.body_min_bytes_per_sec = 0;
        s.edge.body_read_timeout_secs = 60;
        s.edge.request_timeout_secs = 120;
        s.edge.max_connections_per_address = 0;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut streams = Vec::new();
    for _ in 0..1_100 {
        streams.push(trickle(&address, "/api/event").await.expect("connected"));
    }
    let trickling = keep_trickling(streams);
    eventually("the 1,100 connections to be open", || async {
        let scrape = crate::helpers::scrape(&app.http, &app.address).await;
        crate::helpers::metric(&scrape, "connections_open") >= 1_100.0
    })
    .await;
    for i in 0..20 {
        let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
        let (status, answer) = app.post("/api/event", &event).await;
        assert_eq!(status, 200, "request {i}: {answer}");
    }
    trickling.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_may_hold_only_so_many_connections_and_others_still_get_in() {
    let app = TestApp::spawn_with(|s| {
        s.edge.body_min_bytes_per_sec = 0;
        s.edge.body_read_timeout_secs = 60;
        s.edge.request_timeout_secs = 120;
        s.edge.max_connections_per_address = 100;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut open = Vec::new();
    let mut closed = 0;
    for _ in 0..1_100 {
        let Some(mut stream) = trickle(&address, "/api/event").await else {
            closed += 1;
            continue;
        };
        // A connection past the cap is closed at once: reading finds its end.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => open.push(stream),
        }
    }
    assert_eq!(open.len(), 100, "{closed} closed");
    let trickling = keep_trickling(open);
    // Another client (another loopback address) gets in.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let response = other
        .post(format!("{}/api/event", app.address))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let scrape = crate::helpers::scrape(&other, &app.address).await;
    assert!(
        crate::helpers::metric(&scrape, "connections_refused_total") >= 1_000.0,
        "{scrape}"
    );
    trickling.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_of_connections_in_all_closes_the_next_at_once_until_one_ends() {
    let app = TestApp::spawn_with(|s| {
        s.edge.body_min_bytes_per_sec = 0;
        s.edge.body_read_timeout_secs = 60;
        s.edge.request_timeout_secs = 120;
        s.edge.max_connections_per_address = 0;
        s.edge.max_connections = 20;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(trickle(&address, "/api/event").await.expect("a seat"));
    }
    // Any client, from any address, past the cap: closed at once.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let refused = other
        .post(format!("{}/api/event", app.address))
        .json(&event)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // One trickler gone, its seat is free again.
    drop(open.pop());
    crate::helpers::eventually("a seat again", || async {
        other
            .post(format!("{}/api/event", app.address))
            .json(&event)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let scrape = crate::helpers::scrape(&other, &app.address).await;
    assert!(
        crate::helpers::metric(&scrape, r#"connections_refused_total{reason="total"}"#) >= 1.0,
        "{scrape}"
    );
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_visitors_purchases_live_as_long_as_their_context() {
    let app = TestApp::spawn_with(|s| s.context.context_ttl_secs = 600).await;
    let event = json!({"anonymous_id": "made-up-1", "asin": ITEMS[3].0, "event_type": "purchase"});
    assert_eq!(app.post("/api/event", &event).await.0, 200);
    let mut redis = app.redis().await;
    let key = |actor: &str| format!("{}{actor}:purchased", app.prefix);
    let ttl: i64 = redis.ttl(key("visitor:made-up-1")).await.unwrap();
    assert!(ttl > 0 && ttl <= 600, "the visitor's purchases: {ttl} s");
    // Identified: the purchase joins the user's, for the purchase TTL.
    let identify = json!({"anonymous_id": "made-up-1", "user_id": 5});
    assert_eq!(app.post("/api/identify", &identify).await.0, 200);
    let ttl: i64 = redis.ttl(key("user:5")).await.unwrap();
    assert!(ttl > 29 * 24 * 3600, "the user's purchases: {ttl} s");
    let bought: Vec<String> = redis.zrange(key("user:5"), 0, -1).await.unwrap();
    assert_eq!(bought, [ITEMS[3].0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_spend_the_addresss_rate_limit() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec!["the-key".into()];
        s.edge.rate_limit_per_ip = 5;
        s.edge.rate_limit_burst = 5;
    })
    .await;
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let send = |key: &'static str| {
        let request = app
            .http
            .post(format!("{}/api/event", app.address))
            .header("x-api-key", key)
            .json(&event);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(send("a-guess").await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 25);
    assert_eq!(send("the-key").await, 429, "the address's budget is spent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_kept_exactly_or_refused() {
    let app = TestApp::spawn().await;
    for user_id in [
        "12345678901234567.5",
        "1e-3",
        "9223372036854775808.0",
        "\"42\"",
    ] {
        let body = format!(
            r#"{{"user_id": {user_id}, "asin": "{}", "event_type": "view"}}"#,
            ITEMS[0].0
        );
        let response = app
            .post_raw("/api/event", Some("application/json"), body.into_bytes())
            .await;
        assert_eq!(response.status(), 422, "{user_id}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "user_id");
    }
    for path in ["1e3", "+5", "05", "%ff"] {
        let (status, answer) = app.get(&format!("/api/users/{path}/context")).await;
        assert_eq!(
            (status, &answer["error"]["field"]),
            (422, &json!("user_id")),
            "{path}"
        );
    }
    // An integer however it is written, exactly: a float would make ...992 of this one.
    let body = format!(
        r#"{{"user_id": 9007199254740993.0, "asin": "{}", "event_type": "view", "metadata": {{"big": 123456789012345678901234567890, "tiny": 1e-400, "price": 19.90}}}}"#,
        ITEMS[0].0
    );
    let response = app
        .post_raw("/api/event", Some("application/json"), body.into_bytes())
        .await;
    assert_eq!(response.status(), 200);
    app.wait_for_rows(1).await;
    let (user_id, big, tiny, price): (i64, String, String, String) = sqlx::query_as(
        "SELECT user_id, (metadata->'big')::text, (metadata->'tiny')::text, (metadata->'price')::text FROM interaction_logs",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(user_id, 9_007_199_254_740_993);
    assert_eq!(big, "123456789012345678901234567890");
    assert_eq!(tiny, format!("0.{}1", "0".repeat(399)));
    assert_eq!(price, "19.90");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept_only_when_short_and_safe() {
    let app = TestApp::spawn().await;
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let id_for = |sent: &str| {
        let request = app
            .http
            .post(format!("{}/api/event", app.address))
            .header("x-request-id", sent)
            .json(&event);
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(id_for("req-42_a.b:c").await, "req-42_a.b:c");
    for forged in [
        "abc}: event_ingest::api: FAKE ERROR admin=1 {x".to_owned(),
        "a".repeat(1024),
        "tab\tinside".to_owned(),
    ] {
        let given = id_for(&forged).await;
        assert_ne!(given, forged);
        assert!(uuid::Uuid::parse_str(&given).is_ok(), "{given}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asin_with_invisible_format_characters_is_refused() {
    let app = TestApp::spawn().await;
    for asin in ["B0\u{202e}TTAB", "B0\u{200b}X", "\u{2066}B0X", "B0\u{ad}X"] {
        let event = json!({"user_id": 1, "asin": asin, "event_type": "view"});
        let (status, answer) = app.post("/api/event", &event).await;
        assert_eq!(
            (status, &answer["error"]["field"]),
            (422, &json!("asin")),
            "{asin:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_our_json_and_broken_framing_is_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/users/%ff/context",
        "/api/visitors/%ff/context",
        "/demo/%ff",
        "/demo/client/%ff",
        "/demo/products?categories=abc",
        "/demo/products?per_category=99999999999999999999999",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers()["content-type"] == "application/json",
            "{path}: {:?}",
            response.headers()
        );
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"]["code"].is_string(),
            "{path}: {status} {answer}"
        );
        assert!([404, 422].contains(&status), "{path}: {status}");
    }
    // A chunk that claims more bytes than it brings, then a bad size line.
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"POST /api/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"invalid_body""#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identifications_at_once_agree_in_redis_and_postgresql_on_the_first() {
    let app = TestApp::spawn().await;
    let trials = 40;
    for trial in 0..trials {
        let visitor = format!("race-{trial}");
        let event =
            json!({"anonymous_id": visitor, "asin": ITEMS[trial % 5].0, "event_type": "view"});
        assert_eq!(app.post("/api/event", &event).await.0, 200);
        let (a, b) = (1000 + 2 * trial as i64, 1001 + 2 * trial as i64);
        let (as_a, as_b) = (
            json!({"anonymous_id": visitor, "user_id": a}),
            json!({"anonymous_id": visitor, "user_id": b}),
        );
        let (first, second) = tokio::join!(
            app.post("/api/identify", &as_a),
            app.post("/api/identify", &as_b),
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "trial {trial}: {first:?} {second:?}");
    }
    // An event after them all in the journal: once stored, so are the identifications.
    assert_eq!(app.post_event(1, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(trials as i64 + 1).await;
    let pool = app.pool.clone();
    eventually("every visitor's rows attributed", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM interaction_logs WHERE user_id IS NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 0
        }
    })
    .await;
    let mut redis = app.redis().await;
    for trial in 0..trials {
        let visitor = format!("race-{trial}");
        let owner: i64 =
            sqlx::query_scalar("SELECT user_id FROM visitor_identities WHERE anonymous_id = $1")
                .bind(&visitor)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let rows: i64 =
            sqlx::query_scalar("SELECT user_id FROM interaction_logs WHERE anonymous_id = $1")
                .bind(&visitor)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(rows, owner, "trial {trial}");
        let (a, b) = (1000 + 2 * trial as i64, 1001 + 2 * trial as i64);
        let other = if owner == a { b } else { a };
        let items = |user: i64| format!("{}user:{user}:recent_items", app.prefix);
        let owned: Vec<String> = redis.lrange(items(owner), 0, -1).await.unwrap();
        let others: Vec<String> = redis.lrange(items(other), 0, -1).await.unwrap();
        assert_eq!(
            owned,
            [ITEMS[trial % 5].0],
            "trial {trial}: the owner {owner} has the context"
        );
        assert!(
            others.is_empty(),
            "trial {trial}: user {other} has {others:?}"
        );
    }
}
