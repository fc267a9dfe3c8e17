//! Segment's tracking API, as its SDKs speak it (the SDKs themselves drive the service in
//! `tests/segment/`): the routes, the write key, the bodies, the limits, the mapping to our
//! events and identifications, and what is counted rather than stored.

mod answers;
mod mapping;

use std::io::Write as _;

use redis::AsyncCommands as _;
use serde_json::{Value, json};

use crate::helpers::{ITEMS, TestApp, eventually, metric, refused_start, scrape};

const PHONE: &str = ITEMS[0].0;
const CASE: &str = ITEMS[1].0;
const BOOK: &str = ITEMS[2].0;
const LEGO: &str = ITEMS[3].0;

/// Posts `body` to `path` with the write key as HTTP Basic authentication (as the SDKs do).
async fn send(app: &TestApp, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.basic_auth(key, Some(""));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Each stored row's event type, asin, user and visitor, oldest first.
async fn rows(app: &TestApp) -> Vec<(String, String, Option<i64>, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type::text, asin, user_id, anonymous_id FROM interaction_logs ORDER BY ts, id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Posts an event of our own, for user 1, and waits for its row: what an earlier request left
/// in the journal is stored by then (the writer takes the journal in order). Then checks that
/// `interaction_logs` holds `earlier` rows besides it.
async fn nothing_else_stored(app: &TestApp, earlier: i64) {
    assert_eq!(app.post_event(1, PHONE, "view").await, 200);
    eventually("our own event stored", || async {
        rows(app).await.iter().any(|r| r.2 == Some(1))
    })
    .await;
    assert_eq!(
        rows(app).await.len() as i64,
        earlier + 1,
        "{:?}",
        rows(app).await
    );
}

fn track(event: &str, actor: Value, properties: Value, message_id: &str) -> Value {
    let mut message = json!({"type": "track", "event": event, "properties": properties,
                             "messageId": message_id});
    message
        .as_object_mut()
        .unwrap()
        .extend(actor.as_object().unwrap().clone());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e_commerce_spec_becomes_our_events_and_the_identify_merges_the_visitor() {
    let app = TestApp::spawn().await;
    let visitor = json!({"anonymousId": "anon-1"});
    let user = json!({"userId": "7", "anonymousId": "anon-1"});
    let batch = json!({"batch": [
        track("Product Viewed", visitor.clone(), json!({"product_id": PHONE, "price": 19.9}), "m1"),
        track("Product Clicked", visitor.clone(), json!({"product_id": CASE}), "m2"),
        track("Product Added", visitor.clone(), json!({"sku": CASE}), "m3"),
        {"type": "identify", "userId": "7", "anonymousId": "anon-1", "messageId": "m4",
         "traits": {"email": "someone@shop.example"}},
        track("Order Completed", user.clone(), json!({"order_id": "o-1", "total": 30,
            "products": [{"product_id": BOOK, "price": 10}, {"product_id": LEGO, "price": 20}]}), "m5"),
        track("Product Reviewed", user.clone(), json!({"product_id": BOOK, "rating": "5"}), "m6"),
        {"type": "page", "anonymousId": "anon-1", "messageId": "m7", "name": "Home"},
        track("Checkout Started", user, json!({}), "m8"),
    ]});
    let (status, answer) = send(&app, "/v1/batch", None, &batch).await;
    assert_eq!((status, answer), (200, json!({"success": true})));
    eventually("the six events stored and attributed", || async {
        let rows = rows(&app).await;
        rows.len() == 6 && rows.iter().all(|r| r.2 == Some(7))
    })
    .await;
    let mut stored: Vec<(String, String)> =
        rows(&app).await.into_iter().map(|r| (r.0, r.1)).collect();
    stored.sort();
    let mut expected = [
        ("view", PHONE),
        ("click", CASE),
        ("add_to_cart", CASE),
        ("purchase", BOOK),
        ("purchase", LEGO),
        ("rate", BOOK),
    ]
    .map(|(t, a)| (t.to_owned(), a.to_owned()));
    expected.sort();
    assert_eq!(stored, expected);
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM interaction_logs WHERE event_type = 'rate'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(metadata["rating"], 5, "a number: {metadata}");
    let order: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM interaction_logs WHERE event_type = 'purchase' ORDER BY asin",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(order[0]["order_id"], "o-1");
    assert_eq!(
        order[0]["price"], 10,
        "the product's own properties: {}",
        order[0]
    );
    // The visitor's context went to the user, with the purchases.
    let (_, context) = app.get("/api/users/7/context").await;
    assert_eq!(context["recent_items"][0], BOOK, "{context}");
    assert_eq!(
        context["purchased"].as_array().unwrap().len(),
        2,
        "{context}"
    );
    let scraped = scrape(&app.http, &app.address).await;
    assert_eq!(
        metric(
            &scraped,
            r#"segment_messages_unused_total{reason="unmapped_type"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scraped,
            r#"segment_messages_unused_total{reason="unmapped_event"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_and_counted_once_in_redis() {
    let app = TestApp::spawn().await;
    let batch = json!({"batch": [
        track("Product Viewed", json!({"userId": "3"}), json!({"product_id": PHONE}), "retry-1"),
        track("Order Completed", json!({"userId": "3"}),
              json!({"products": [{"product_id": BOOK}, {"product_id": LEGO}]}), "retry-2"),
    ]});
    for _ in 0..3 {
        assert_eq!(send(&app, "/v1/b", Some("wk"), &batch).await.0, 200);
    }
    app.wait_for_rows(3).await;
    assert_eq!(app.counted_in_redis(3).await, 3);
    // Another write key is another source: its messageIds are its own.
    assert_eq!(send(&app, "/v1/b", Some("other"), &batch).await.0, 200);
    app.wait_for_rows(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_message_route_and_its_short_form_takes_its_type_from_the_path() {
    let app = TestApp::spawn().await;
    let message = |n: usize| {
        json!({"event": "Product Viewed", "userId": "4", "messageId": format!("s-{n}"),
               "properties": {"product_id": PHONE}, "anonymousId": "anon-4", "previousId": "prev-4"})
    };
    for (n, path) in ["/v1/track", "/v1/t"].iter().enumerate() {
        assert_eq!(
            send(&app, path, None, &message(n)).await,
            (200, json!({"success": true}))
        );
    }
    app.wait_for_rows(2).await;
    for path in [
        "/v1/page",
        "/v1/p",
        "/v1/screen",
        "/v1/s",
        "/v1/group",
        "/v1/g",
        "/v1/m",
    ] {
        assert_eq!(send(&app, path, None, &message(9)).await.0, 200, "{path}");
    }
    for path in ["/v1/identify", "/v1/i", "/v1/alias", "/v1/a"] {
        assert_eq!(send(&app, path, None, &message(9)).await.0, 200, "{path}");
    }
    let scraped = scrape(&app.http, &app.address).await;
    assert_eq!(
        metric(&scraped, r#"segment_messages_total{type="page"}"#),
        2.0
    );
    assert_eq!(
        metric(&scraped, r#"segment_messages_total{type="alias"}"#),
        2.0
    );
    assert_eq!(app.post_event(1, PHONE, "view").await, 200);
    app.wait_for_rows(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_key_comes_as_basic_authentication_or_in_the_body_and_must_be_a_configured_one() {
    let app = TestApp::spawn_with(|s| s.edge.api_keys = vec!["pk_shop".into()]).await;
    let batch = |key: Option<&str>| {
        let mut batch = json!({"batch": [track("Product Viewed", json!({"userId": "5"}),
                                               json!({"product_id": PHONE}), "k-1")]});
        if let Some(key) = key {
            batch["writeKey"] = json!(key);
        }
        batch
    };
    assert_eq!(
        send(&app, "/v1/batch", Some("pk_shop"), &batch(None))
            .await
            .0,
        200
    );
    assert_eq!(
        send(&app, "/v1/batch", None, &batch(Some("pk_shop")))
            .await
            .0,
        200
    );
    let (status, answer) = send(&app, "/v1/batch", Some("nope"), &batch(None)).await;
    assert_eq!(
        (status, &answer["code"]),
        (401, &json!("invalid_api_key")),
        "{answer}"
    );
    let (status, answer) = send(&app, "/v1/batch", None, &batch(Some("nope"))).await;
    assert_eq!((status, &answer["code"]), (401, &json!("invalid_api_key")));
    let (status, answer) = send(&app, "/v1/batch", None, &batch(None)).await;
    assert_eq!((status, &answer["code"]), (401, &json!("missing_api_key")));
    // The key with the colon left off, as some clients send it.
    let response = app
        .http
        .post(format!("{}/v1/batch", app.address))
        .header("authorization", "Basic cGtfc2hvcA==")
        .body(batch(None).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.wait_for_rows(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_sdk_s_preflight_with_authorization_succeeds() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", app.address))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_plain_and_gzip_bodies_are_taken_and_the_limits_are_segments() {
    let app = TestApp::spawn().await;
    let batch = json!({"batch": [track("Product Viewed", json!({"userId": "6"}),
                                       json!({"product_id": PHONE}), "g-1")]});
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(batch.to_string().as_bytes()).unwrap();
    let response = app
        .http
        .post(format!("{}/v1/batch", app.address))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(gzip.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.wait_for_rows(1).await;

    let big = "x".repeat(33 * 1024);
    let too_big = json!({"batch": [track("Product Viewed", json!({"userId": "6"}),
                                         json!({"product_id": PHONE, "note": big}), "g-2")]});
    assert_eq!(
        send(&app, "/v1/batch", None, &too_big).await.0,
        413,
        "a message over 32 KiB"
    );
    let many: Vec<Value> = (0..2_501).map(|_| json!({})).collect();
    assert_eq!(
        send(&app, "/v1/batch", None, &json!({"batch": many}))
            .await
            .0,
        413
    );
    let huge: Vec<Value> = (0..40)
        .map(|_| json!({"note": "y".repeat(16 * 1024)}))
        .collect();
    assert_eq!(
        send(&app, "/v1/batch", None, &json!({"batch": huge}))
            .await
            .0,
        413,
        "over 500 KiB"
    );
    let single = json!({"event": "Product Viewed", "userId": "6", "properties": {"note": big}});
    assert_eq!(send(&app, "/v1/track", None, &single).await.0, 413);
    nothing_else_stored(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_no_json_or_no_batch_is_400_in_segments_words() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(format!("{}/v1/batch", app.address))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["success"], false);
    assert_eq!(answer["code"], "invalid_json");
    assert!(answer["message"].is_string());
    for body in [json!([1]), json!({"events": []}), json!({"batch": 3})] {
        let (status, answer) = send(&app, "/v1/batch", None, &body).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("invalid_body")),
            "{body}"
        );
    }
    let (status, answer) = send(&app, "/v1/track", None, &json!([1])).await;
    assert_eq!(
        (status, &answer["code"]),
        (400, &json!("invalid_body")),
        "not a message"
    );
    nothing_else_stored(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_cannot_be_used_are_counted_and_nothing_of_them_stored() {
    let app = TestApp::spawn().await;
    let big = "z".repeat(9 * 1024);
    let batch = json!({"batch": [
        track("Product Viewed", json!({"userId": "alice@shop.example"}), json!({"product_id": PHONE}), "u-1"),
        track("Product Viewed", json!({}), json!({"product_id": PHONE}), "u-2"),
        track("Product Viewed", json!({"userId": "8"}), json!({}), "u-3"),
        track("Product Viewed", json!({"userId": "8"}), json!({"product_id": "a b"}), "u-4"),
        track("Product Viewed", json!({"userId": "8"}), json!({"product_id": PHONE, "note": big}), "u-5"),
        {"type": "track", "event": "Product Viewed", "userId": "8", "messageId": "u-6",
         "properties": {"product_id": PHONE}, "originalTimestamp": "yesterday"},
        {"type": "identify", "userId": "8", "messageId": "u-7"},
        {"type": "selfie", "userId": "8", "messageId": "u-8"},
        7,
    ]});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    nothing_else_stored(&app, 0).await;
    let scraped = scrape(&app.http, &app.address).await;
    for (reason, n) in [
        ("non_numeric_user_id", 1.0),
        ("no_actor", 1.0),
        ("no_item", 2.0),
        ("metadata", 1.0),
        ("time", 1.0),
        ("identify_without_anonymous_id", 1.0),
        ("unknown_type", 1.0),
        ("not_an_object", 1.0),
    ] {
        let name = format!(r#"segment_messages_unused_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&scraped, &name), n, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_error_is_removed_by_sent_at_and_the_batch_s_context_applies_to_every_message() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    // The client's clock is an hour fast.
    let fast = |t: chrono::DateTime<chrono::Utc>| {
        (t + chrono::TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut message = track(
        "Product Viewed",
        json!({"userId": "9"}),
        json!({"product_id": PHONE}),
        "t-1",
    );
    message["originalTimestamp"] = json!(fast(now - chrono::TimeDelta::seconds(30)));
    let batch = json!({"batch": [message], "sentAt": fast(now),
                       "context": {"page": {"path": "/p/1"}, "campaign": {"name": "winter"}, "ip": "1.2.3.4"}});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    app.wait_for_rows(1).await;
    let (ts, metadata): (chrono::NaiveDateTime, Value) =
        sqlx::query_as("SELECT ts, metadata FROM interaction_logs")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let off = (ts.and_utc() - (now - chrono::TimeDelta::seconds(30)))
        .num_milliseconds()
        .abs();
    assert!(off < 2_000, "stored {off} ms off the true time");
    assert_eq!(metadata["page"], json!({"path": "/p/1"}));
    assert_eq!(metadata["campaign"], json!({"name": "winter"}));
    assert!(metadata.get("ip").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_merges_the_previous_id_into_the_user_and_custom_names_map_to_our_types() {
    let app = TestApp::spawn_with(|s| {
        s.segment.segment_events = "Add to Wishlist=add_to_cart".parse().unwrap();
    })
    .await;
    let batch = json!({"batch": [
        track("Add to Wishlist", json!({"anonymousId": "anon-9"}), json!({"product_id": LEGO}), "a-1"),
        {"type": "alias", "previousId": "anon-9", "userId": "11", "messageId": "a-2"},
    ]});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    let mut redis = app.redis().await;
    let items: Vec<String> = redis
        .lrange(app.key(11, "recent_items"), 0, -1)
        .await
        .unwrap();
    assert_eq!(items, [LEGO]);
    app.wait_for_rows(1).await;
    eventually("the visitor's row attributed", || async {
        rows(&app)
            .await
            .first()
            .is_some_and(|r| r.0 == "add_to_cart" && r.2 == Some(11))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_segments_sdk_from_its_directory_and_nothing_else() {
    let outside = tempfile::tempdir().unwrap();
    let sdk = outside.path().join("umd");
    std::fs::create_dir_all(sdk.join("nested")).unwrap();
    std::fs::write(sdk.join("index.js"), "window.AnalyticsNext = {};").unwrap();
    std::fs::write(sdk.join("407.bundle.61ef.js"), "/* a chunk */").unwrap();
    std::fs::write(sdk.join("index.js.map"), "{}").unwrap();
    std::fs::write(sdk.join(".hidden.js"), "").unwrap();
    std::fs::write(sdk.join("nested/inner.js"), "").unwrap();
    std::fs::write(outside.path().join("secret.js"), "TOP-SECRET-CONTENT").unwrap();
    let app = TestApp::spawn_with(|s| s.edge.demo_segment_sdk = Some(sdk.clone())).await;
    let get = |name: &'static str| {
        let url = format!("{}/demo/segment/analytics-next/bundles/{name}", app.address);
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let kind = response.headers().get("content-type").cloned();
            (status, kind, response.text().await.unwrap())
        }
    };
    let (status, kind, body) = get("index.js").await;
    assert_eq!((status, body.as_str()), (200, "window.AnalyticsNext = {};"));
    assert_eq!(kind.unwrap(), "text/javascript; charset=utf-8");
    assert_eq!(get("407.bundle.61ef.js").await.0, 200);
    for name in [
        "index.js.map",
        ".hidden.js",
        "nested%2Finner.js",
        "..%2Fsecret.js",
        "%2E%2E%2Fsecret.js",
        "absent.js",
    ] {
        let (status, _, body) = get(name).await;
        assert_eq!(status, 404, "{name}");
        assert!(!body.contains("TOP-SECRET"), "{name}: {body}");
    }

    let without = TestApp::spawn().await;
    let (status, answer) = without
        .get("/demo/segment/analytics-next/bundles/index.js")
        .await;
    assert_eq!(status, 404);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DEMO_SEGMENT_SDK"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_sdk_directory_without_the_sdk_stops_the_start() {
    let empty = tempfile::tempdir().unwrap();
    let message = refused_start(|s| s.edge.demo_segment_sdk = Some(empty.path().to_owned())).await;
    assert!(
        message.contains("DEMO_SEGMENT_SDK") && message.contains("index.js"),
        "{message}"
    );
}
