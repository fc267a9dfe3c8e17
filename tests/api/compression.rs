//! Compressed request bodies: gzip and deflate inflated within the limits, every bad stream a 4xx.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use serde_json::{Value, json};

use crate::helpers::{ITEMS, TestApp};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Posts `body` with `Content-Encoding: encoding`; the status and the JSON answer.
async fn post_encoded(app: &TestApp, path: &str, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("the request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_inflated_and_accepted() {
    let app = TestApp::spawn().await;
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let (status, answer) = post_encoded(
        &app,
        "/api/event",
        "gzip",
        gzip(event.to_string().as_bytes()),
    )
    .await;
    assert_eq!(
        (status, answer["success"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );

    let batch = json!({"events": (0..50).map(|i| json!({"user_id": 2, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "click"})).collect::<Vec<_>>()});
    let (status, answer) = post_encoded(
        &app,
        "/api/events",
        "deflate",
        zlib(batch.to_string().as_bytes()),
    )
    .await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(50)),
        "{answer}"
    );

    app.wait_for_rows(51).await;
    assert_eq!(app.counted_in_redis(1).await, 1);
    assert_eq!(app.counted_in_redis(2).await, 50);
}

#[tokio::test]
async fn an_unknown_encoding_is_415() {
    let app = TestApp::spawn().await;
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let (status, answer) =
        post_encoded(&app, "/api/event", "br", event.to_string().into_bytes()).await;
    assert_eq!(
        (status, code(&answer)),
        (415, "unsupported_encoding"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_corrupt_or_truncated_stream_is_400_invalid_body() {
    let app = TestApp::spawn().await;
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    let (status, answer) =
        post_encoded(&app, "/api/event", "gzip", b"not gzip at all".to_vec()).await;
    assert_eq!((status, code(&answer)), (400, "invalid_body"), "{answer}");

    let whole = zlib(event.to_string().as_bytes());
    let cut = whole[..whole.len() / 2].to_vec();
    let (status, answer) = post_encoded(&app, "/api/event", "deflate", cut).await;
    assert_eq!((status, code(&answer)), (400, "invalid_body"), "{answer}");
    assert_eq!(app.counted_in_redis(1).await, 0);
}

#[tokio::test]
async fn the_size_limit_applies_to_the_inflated_body() {
    let app = TestApp::spawn().await;
    // 70 KiB of hex inflates from about 35 KiB: within the ratio, past the 64 KiB limit.
    let mut state: u64 = 42;
    let noise: String = (0..70 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from_digit((state >> 60) as u32, 16).unwrap()
        })
        .collect();
    let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view", "metadata": {"noise": noise}});
    let compressed = gzip(event.to_string().as_bytes());
    assert!(compressed.len() < 64 * 1024);
    let (status, answer) = post_encoded(&app, "/api/event", "gzip", compressed).await;
    assert_eq!((status, code(&answer)), (413, "body_too_large"), "{answer}");
}

#[tokio::test]
async fn a_50_mb_bomb_is_refused_before_it_inflates() {
    let app = TestApp::spawn().await;
    let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024, "the bomb is {} bytes", bomb.len());
    let started = std::time::Instant::now();
    let (status, answer) = post_encoded(&app, "/api/events", "gzip", bomb).await;
    assert_eq!(
        (status, code(&answer)),
        (413, "compression_bomb"),
        "{answer}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (status, _) = app.get("/health/live").await;
    assert_eq!(status, 200);
}
