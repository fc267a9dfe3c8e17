//! Broken dependencies: each test breaks one for real and checks what survived.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{DEAD_REDIS_URL, ITEMS, Proxy, TestApp, postgres_address, through};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_events_still_get_200_and_reach_postgres() {
    let app = TestApp::spawn_with(|s| s.redis_url = DEAD_REDIS_URL.to_owned()).await;
    for event_type in ["view", "click", "purchase"] {
        assert_eq!(app.post_event(21, ITEMS[0].0, event_type).await, 200);
    }
    app.wait_for_rows(3).await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 503);
    assert_eq!(ready["redis"]["ok"], false);
    assert_eq!(ready["postgres"]["ok"], true);
    let (status, answer) = app.get("/api/users/21/context").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("context_unavailable"))
    );
}

/// Posts `n` events with client event ids, asserting each gets a 200; returns the ids.
async fn post_stream(app: &TestApp, user_id: i64, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::new_v4();
        let body = json!({"user_id": user_id, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view", "event_id": id});
        let (status, answer) = app.post("/api/event", &body).await;
        assert_eq!(status, 200, "event {i}: {answer}");
        ids.push(id);
    }
    ids
}

async fn stored_ids(app: &TestApp) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM interaction_logs")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_under_a_stream_loses_nothing_and_duplicates_nothing() {
    let proxy = Proxy::start(postgres_address()).await;
    let app = TestApp::spawn_with(|s| {
        s.database.database_url = through(&proxy, &s.database.database_url)
    })
    .await;
    let mut sent = post_stream(&app, 31, 60).await;
    proxy.cut();
    sent.extend(post_stream(&app, 31, 120).await);
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(
        (status, ready["postgres"]["ok"].as_bool()),
        (503, Some(false))
    );
    proxy.restore();
    sent.extend(post_stream(&app, 31, 60).await);

    app.wait_for_rows(sent.len() as i64).await;
    let stored = stored_ids(&app).await;
    assert_eq!(stored.len(), sent.len(), "each event exactly once");
    assert_eq!(
        stored.into_iter().collect::<HashSet<_>>(),
        sent.into_iter().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalogue_lookup_still_gives_an_enriched_row() {
    let proxy = Proxy::start(postgres_address()).await;
    let app = TestApp::spawn_with(|s| {
        s.database.database_url = through(&proxy, &s.database.database_url)
    })
    .await;
    proxy.cut();
    let (asin, category, brand) = ITEMS[2];
    assert_eq!(app.post_event(41, asin, "view").await, 200);
    let context = app.get("/api/users/41/context").await.1;
    assert_eq!(
        context["recent_categories"],
        json!({}),
        "no category was known at request time"
    );
    proxy.restore();
    app.wait_for_rows(1).await;
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM interaction_logs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(metadata, json!({"category": category, "brand": brand}));
}
