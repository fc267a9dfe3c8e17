//! The happy paths of ingestion: what reaches Redis and PostgreSQL, and how.

use chrono::{NaiveDateTime, Utc};
use event_ingest::ingest::UnknownItems;
use redis::AsyncCommands;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{BARE_ITEM, ITEMS, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_stored_once_enriched_with_its_receive_time() {
    // A long batch interval: the writer stores the events well after the answers.
    let app = TestApp::spawn_with(|s| s.writer.batch_interval_ms = 400).await;
    let (asin, category, brand) = ITEMS[0];
    let before = Utc::now().naive_utc();
    for event_type in ["view", "click", "add_to_cart", "purchase", "rate"] {
        // The catalogue's brand wins over the client's, in the stored row.
        let body = json!({"user_id": 7, "asin": asin, "event_type": event_type,
                          "metadata": {"page": "pdp", "brand": "the client's"}});
        let (status, answer) = app.post("/api/event", &body).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"success": true, "message": format!("Event logged: {event_type}")})
        );
    }
    let answered = Utc::now().naive_utc();
    app.wait_for_rows(5).await;

    let rows: Vec<(String, NaiveDateTime, Value, Uuid)> = sqlx::query_as(
        "SELECT event_type::text, ts, metadata, event_id FROM interaction_logs WHERE user_id = 7 ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(types, ["view", "click", "add_to_cart", "purchase", "rate"]);
    for (_, ts, metadata, _) in &rows {
        assert!(
            *ts >= before && *ts <= answered,
            "ts {ts} is the receive time, not the write time"
        );
        assert_eq!(
            metadata,
            &json!({"page": "pdp", "category": category, "brand": brand})
        );
    }
    let distinct: std::collections::HashSet<_> = rows.iter().map(|r| r.3).collect();
    assert_eq!(distinct.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_items_are_newest_first_capped_and_expiring_and_categories_add_up() {
    let app = TestApp::spawn_with(|s| s.context.recent_items_cap = 3).await;
    let sequence = [
        ITEMS[0].0, ITEMS[1].0, ITEMS[2].0, BARE_ITEM, ITEMS[3].0, ITEMS[0].0,
    ];
    for asin in sequence {
        assert_eq!(app.post_event(42, asin, "click").await, 200);
    }
    let mut redis = app.redis().await;
    let recent: Vec<String> = redis
        .lrange(app.key(42, "recent_items"), 0, -1)
        .await
        .unwrap();
    assert_eq!(recent, [ITEMS[0].0, ITEMS[3].0, BARE_ITEM]);

    let categories: std::collections::HashMap<String, i64> = redis
        .hgetall(app.key(42, "recent_categories"))
        .await
        .unwrap();
    assert_eq!(categories["Cell Phones & Accessories"], 3);
    assert_eq!(categories["Books"], 1);
    assert_eq!(categories["Toys & Games"], 1);
    assert_eq!(
        categories.values().sum::<i64>(),
        5,
        "the bare item counts in no category"
    );

    for name in ["recent_items", "recent_categories", "last_active"] {
        let ttl: i64 = redis.ttl(app.key(42, name)).await.unwrap();
        assert!((890..=900).contains(&ttl), "{name} has TTL {ttl}");
    }
    let last_active: String = redis.get(app.key(42, "last_active")).await.unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&last_active).unwrap();
    assert!((Utc::now() - at.to_utc()).num_seconds() < 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_writes_exactly_the_three_keys_and_an_item_without_category_no_category_field() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(5, BARE_ITEM, "view").await, 200);
    assert_eq!(
        app.redis_keys().await,
        [app.key(5, "last_active"), app.key(5, "recent_items")]
    );

    assert_eq!(app.post_event(5, ITEMS[2].0, "view").await, 200);
    assert_eq!(
        app.redis_keys().await,
        [
            app.key(5, "last_active"),
            app.key(5, "recent_categories"),
            app.key(5, "recent_items")
        ]
    );
    app.wait_for_rows(2).await;
    let bare: Option<Value> =
        sqlx::query_scalar("SELECT metadata FROM interaction_logs WHERE asin = $1")
            .bind(BARE_ITEM)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(bare, None, "no metadata and nothing to enrich with");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_items_and_users_are_created_so_the_foreign_keys_hold() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(987_654, "B0BRANDNEW", "view").await, 200);
    app.wait_for_rows(1).await;
    let (items, users): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM items WHERE asin = 'B0BRANDNEW'), (SELECT count(*) FROM users WHERE id = 987654)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((items, users), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_items_are_rejected_with_422_when_so_configured() {
    let app = TestApp::spawn_with(|s| s.events.unknown_items = UnknownItems::Reject).await;
    let body = json!({"user_id": 3, "asin": "B0NOTINCAT", "event_type": "view"});
    let (status, answer) = app.post("/api/event", &body).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["code"], "unknown_item");
    assert_eq!(answer["error"]["field"], "asin");
    assert_eq!(app.post_event(3, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;
    assert_eq!(
        app.redis_keys().await.len(),
        3,
        "only the known item's event touched Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_twice_with_its_event_id_is_stored_and_counted_once() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    let body = json!({"user_id": 11, "asin": ITEMS[0].0, "event_type": "click", "event_id": id});
    for _ in 0..3 {
        assert_eq!(app.post("/api/event", &body).await.0, 200);
    }
    let mut redis = app.redis().await;
    let recent: Vec<String> = redis
        .lrange(app.key(11, "recent_items"), 0, -1)
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    let count: i64 = redis
        .hget(app.key(11, "recent_categories"), ITEMS[0].1)
        .await
        .unwrap();
    assert_eq!(count, 1);
    app.wait_for_rows(1).await;
    let stored: Uuid = sqlx::query_scalar("SELECT event_id FROM interaction_logs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_accepts_the_good_events_and_reports_the_bad_ones() {
    let app = TestApp::spawn().await;
    let body = json!({"events": [
        {"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"},
        {"user_id": 1, "asin": ITEMS[1].0, "event_type": "nope"},
        "not an event",
        {"user_id": 2, "asin": ITEMS[2].0, "event_type": "purchase", "metadata": {"qty": 2}},
    ]});
    let (status, answer) = app.post("/api/events", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 2);
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "rejected", "rejected", "accepted"]);
    assert_eq!(answer["results"][1]["error"]["field"], "event_type");
    app.wait_for_rows(2).await;
    let mut redis = app.redis().await;
    let recent: Vec<String> = redis
        .lrange(app.key(1, "recent_items"), 0, -1)
        .await
        .unwrap();
    assert_eq!(recent, [ITEMS[0].0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/health/live").await.0, 200);
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["postgres"]["ok"], true);
    assert_eq!(ready["redis"]["ok"], true);
}
