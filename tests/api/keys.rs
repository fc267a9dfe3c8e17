//! Key scopes: the write key a page carries may only write; reading what the service knows of a
//! user takes a server key.

use std::process::Stdio;

use event_ingest::config::DemoMode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::helpers::{ITEMS, REDIS_URL, TestApp, TestDatabase};
use crate::process::Service;

const WRITE_KEY: &str = "pk_public_page_key";
const SERVER_KEY: &str = "sk_secret_server_key";
const SHOP: &str = "https://shop.example";

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.address))
        // Any client that is not a browser sends the Origin it likes.
        .header("origin", SHOP);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST path` with `key`, from a forged origin.
async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    call(app, reqwest::Method::POST, path, Some(key), Some(body)).await
}

fn rerank_body() -> Value {
    json!({"user_id": 42, "items": [{"asin": ITEMS[2].0, "score": 0.9}, {"asin": ITEMS[0].0, "score": 0.8}]})
}

/// Every route that reads a user's data, as (method, path, body).
fn reads() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    vec![
        (reqwest::Method::GET, "/api/users/42/context", None),
        (reqwest::Method::GET, "/api/visitors/v-42/context", None),
        (reqwest::Method::POST, "/api/rerank", Some(rerank_body())),
    ]
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_key_with_a_forged_origin_cannot_read_a_context_or_rerank_and_a_server_key_can() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec![format!("{WRITE_KEY}@{SHOP}").into()];
        s.edge.server_keys = vec![SERVER_KEY.into()];
    })
    .await;
    let event = json!({"user_id": 42, "asin": ITEMS[0].0, "event_type": "purchase"});
    let (status, _) = post(&app, "/api/event", WRITE_KEY, event).await;
    assert_eq!(status, 200, "the write key writes");

    for (method, path, body) in reads() {
        let (status, answer) =
            call(&app, method.clone(), path, Some(WRITE_KEY), body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (403, "server_key_required"),
            "{path}: {answer}"
        );
        assert!(answer.get("recent_items").is_none() && answer.get("items").is_none());
        let (status, answer) = call(&app, method.clone(), path, None, body.clone()).await;
        assert_eq!((status, code(&answer)), (401, "missing_api_key"), "{path}");
        let (status, answer) = call(&app, method, path, Some(SERVER_KEY), body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (_, context) = call(
        &app,
        reqwest::Method::GET,
        "/api/users/42/context",
        Some(SERVER_KEY),
        None,
    )
    .await;
    assert_eq!(context["purchased"], json!([ITEMS[0].0]), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_key_identifies_without_seeing_the_users_context_and_a_server_key_sees_it() {
    let app = TestApp::spawn_with(|s| {
        s.edge.api_keys = vec![WRITE_KEY.into()];
        s.edge.server_keys = vec![SERVER_KEY.into()];
    })
    .await;
    // User 1's history, which the holder of the public key wants to read.
    let bought = json!({"user_id": 1, "asin": ITEMS[3].0, "event_type": "purchase"});
    assert_eq!(post(&app, "/api/event", SERVER_KEY, bought).await.0, 200);
    let visit = json!({"anonymous_id": "fresh", "asin": ITEMS[0].0, "event_type": "view"});
    assert_eq!(post(&app, "/api/event", WRITE_KEY, visit).await.0, 200);

    let identify = json!({"anonymous_id": "fresh", "user_id": 1});
    let (status, answer) = post(&app, "/api/identify", WRITE_KEY, identify.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"user_id": 1, "anonymous_id": "fresh"}),
        "no context for a write key"
    );

    let (status, answer) = post(&app, "/api/identify", SERVER_KEY, identify).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["context"]["purchased"],
        json!([ITEMS[3].0]),
        "{answer}"
    );
    assert_eq!(
        answer["context"]["recent_items"][0], ITEMS[0].0,
        "the merge happened: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_keys_without_a_server_key_refuse_every_read() {
    // The configuration the README recommended before server keys existed.
    let app =
        TestApp::spawn_with(|s| s.edge.api_keys = vec![format!("{WRITE_KEY}@{SHOP}").into()]).await;
    for (method, path, body) in reads() {
        let (status, answer) = call(&app, method, path, Some(WRITE_KEY), body).await;
        assert_eq!(
            (status, code(&answer)),
            (403, "server_key_required"),
            "{path}"
        );
    }
    let event = json!({"user_id": 42, "asin": ITEMS[0].0, "event_type": "view"});
    assert_eq!(post(&app, "/api/event", WRITE_KEY, event).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_the_demo_is_off_unless_asked_for() {
    let keyed = |demo| {
        move |s: &mut event_ingest::config::Settings| {
            s.edge.api_keys = vec![WRITE_KEY.into()];
            s.edge.server_keys = vec![SERVER_KEY.into()];
            s.edge.demo = demo;
        }
    };
    let auto = TestApp::spawn_with(keyed(DemoMode::Auto)).await;
    assert_eq!(auto.get("/demo/products").await.0, 404);
    let asked = TestApp::spawn_with(keyed(DemoMode::On)).await;
    assert_eq!(asked.get("/demo/products").await.0, 200);
    // The page itself reads nothing: its context panel needs the server key, as any caller.
    let (status, _) = call(
        &asked,
        reqwest::Method::GET,
        "/api/users/1/context",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
}

/// What `serve` logs while it starts with `env`, until it listens.
async fn start_up_log(env: &[(&str, String)]) -> String {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let mut all = vec![
        ("DATABASE_URL", database.url.clone()),
        ("REDIS_URL", REDIS_URL.to_owned()),
        ("JOURNAL_DIR", journal.path().display().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    all.extend(env.iter().cloned());
    let mut service = Service::start(&all, Stdio::piped()).await;
    service.terminate();
    let mut log = String::new();
    let mut stderr = service.child.stderr.take().unwrap();
    stderr.read_to_string(&mut log).await.unwrap();
    let _ = service.child.wait().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_where_the_keys_leave_reads_closed_or_everything_open() {
    let log = start_up_log(&[("API_KEYS", WRITE_KEY.to_owned())]).await;
    assert!(log.contains("SERVER_KEYS is not"), "{log}");
    assert!(!log.contains(WRITE_KEY), "{log}");

    let log = start_up_log(&[("HOST", "0.0.0.0".to_owned())]).await;
    assert!(log.contains("with no API key"), "{log}");
    assert!(log.contains("context and purchases"), "{log}");

    let log = start_up_log(&[]).await;
    assert!(
        !log.contains("no API key"),
        "loopback without keys is local use: {log}"
    );
}
