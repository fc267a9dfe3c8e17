//! What the SDKs are told when the service cannot take a request now, or not from this key:
//! Segment's `{"success": false, "code", "message"}`, with `Retry-After` where a retry helps.

use serde_json::{Value, json};

use super::{PHONE, track};
use crate::helpers::{TestApp, with_own_redis};

/// Posts one message, in a batch, with `headers`; the status, `Retry-After` and the answer.
async fn post(
    app: &TestApp,
    message_id: &str,
    headers: &[(&str, &str)],
    write_key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut batch = json!({"batch": [track("Product Viewed", json!({"userId": "31"}),
                                           json!({"product_id": PHONE}), message_id)]});
    if let Some(key) = write_key {
        batch["writeKey"] = json!(key);
    }
    let mut request = app
        .http
        .post(format!("{}/v1/batch", app.address))
        .header("content-type", "text/plain")
        .body(batch.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

fn refused(answer: &Value, code: &str) {
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_the_answer_is_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.edge.rate_limit_per_ip = 1;
        s.edge.rate_limit_burst = 1;
    })
    .await;
    assert_eq!(post(&app, "r-1", &[], None).await.0, 200);
    let (status, retry_after, answer) = post(&app, "r-2", &[], None).await;
    assert_eq!(status, 429);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    refused(&answer, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_answers_503_with_retry_after_and_keeps_what_it_took() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|s| s.journal.journal_max_bytes = 4096).await;
    assert_eq!(app.post_event(31, PHONE, "view").await, 200);
    app.wait_for_rows(1).await;
    proxy.cut();
    let mut taken = 1;
    let mut answer = None;
    for i in 0..200 {
        let (status, retry_after, body) = post(&app, &format!("full-{i}"), &[], None).await;
        match status {
            200 => taken += 1,
            503 => {
                answer = Some((retry_after, body));
                break;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let (retry_after, answer) = answer.expect("the journal filled up");
    assert_eq!(retry_after.as_deref(), Some("1"));
    refused(&answer, "overloaded");
    proxy.restore();
    app.wait_for_rows(taken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_time_is_503_timeout_in_segments_words() {
    let (app, redis) = with_own_redis(|s| {
        s.edge.request_timeout_secs = 2;
        s.edge.body_read_timeout_secs = 1;
        s.context.redis_timeout_ms = 10_000;
    })
    .await;
    redis.pause(5_000).await;
    let (status, retry_after, answer) = post(&app, "slow-1", &[], None).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    refused(&answer, "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_key_may_send_too_and_a_write_key_in_the_body_keeps_its_origins() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec!["pk@https://shop.example".into()];
        s.edge.server_keys = vec!["sk".into()];
    })
    .await;
    let basic_sk = [("authorization", "Basic c2s6")];
    assert_eq!(post(&app, "o-1", &basic_sk, None).await.0, 200);
    let shop = [("origin", "https://shop.example")];
    assert_eq!(post(&app, "o-2", &shop, Some("pk")).await.0, 200);
    let (status, _, answer) = post(
        &app,
        "o-3",
        &[("origin", "https://evil.example")],
        Some("pk"),
    )
    .await;
    assert_eq!(status, 403);
    refused(&answer, "origin_not_allowed");
    app.wait_for_rows(2).await;
}
