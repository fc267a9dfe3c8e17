//! Broken dependencies: each test breaks one for real and checks what survived.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use event_ingest::context::BREAKER_COOLDOWN;
use event_ingest::secret::SecretUrl;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{DEAD_REDIS_URL, ITEMS, TestApp, eventually, metric, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_events_still_get_200_and_reach_postgres() {
    let app = TestApp::spawn_with(|s| s.redis.redis_url = SecretUrl::new(DEAD_REDIS_URL)).await;
    for event_type in ["view", "click", "purchase"] {
        assert_eq!(app.post_event(21, ITEMS[0].0, event_type).await, 200);
    }
    app.wait_for_rows(3).await;
    // Still taking events: in rotation, and saying why it is degraded.
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    assert_eq!(ready["redis"]["ok"], false);
    assert_eq!(ready["postgres"]["ok"], true);
    let metrics = scrape(&app.http, &app.address).await;
    assert!(
        metrics.contains(r#"dependency_up{dependency="redis"} 0"#),
        "{metrics}"
    );
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
async fn postgres_cut_under_a_stream_loses_nothing_and_counts_each_event_once() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
    let mut sent = post_stream(&app, 31, 60).await;
    proxy.cut();
    sent.extend(post_stream(&app, 31, 120).await);
    // A PostgreSQL outage keeps the node in rotation: the journal rides it out.
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(
        (
            status,
            ready["status"].as_str(),
            ready["postgres"]["ok"].as_bool()
        ),
        (200, Some("degraded"), Some(false)),
        "{ready}"
    );
    let metrics = scrape(&app.http, &app.address).await;
    assert!(
        metrics.contains(r#"dependency_up{dependency="postgres"} 0"#),
        "{metrics}"
    );
    proxy.restore();
    sent.extend(post_stream(&app, 31, 60).await);

    app.wait_for_rows(sent.len() as i64).await;
    assert_eq!(
        stored_ids(&app).await.into_iter().collect::<HashSet<_>>(),
        sent.iter().copied().collect::<HashSet<_>>()
    );
    // `UNIQUE (event_id)` keeps PostgreSQL free of duplicates; Redis is where one could show.
    assert_eq!(app.counted_in_redis(31).await, sent.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalogue_lookup_still_gives_an_enriched_row() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|s| s.journal.journal_max_bytes = 4096).await;
    // Warm the catalogue cache, then stop the writer's progress.
    assert_eq!(app.post_event(51, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;
    proxy.cut();

    let mut accepted = 1;
    let mut refused = None;
    for i in 0..200 {
        let body =
            json!({"user_id": 51, "asin": ITEMS[0].0, "event_type": "click", "metadata": {"i": i}});
        let response = app.post_json("/api/event", &body).await;
        match response.status().as_u16() {
            200 => accepted += 1,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("the journal filled up");
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "overloaded");
    assert!(
        accepted > 5,
        "a 4 KiB journal holds more than a few events ({accepted})"
    );

    proxy.restore();
    app.wait_for_rows(accepted).await;
    eventually("the journal to have room again", || async {
        app.post_event(51, ITEMS[0].0, "purchase").await == 200
    })
    .await;
    app.wait_for_rows(accepted + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_item_comes_from_the_cache_while_postgres_is_down() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
    let (asin, category, _) = ITEMS[3];
    assert_eq!(app.post_event(61, asin, "view").await, 200);
    proxy.cut();
    assert_eq!(app.post_event(61, asin, "click").await, 200);
    let context = app.get("/api/users/61/context").await.1;
    assert_eq!(
        context["recent_categories"],
        json!({ category: 2 }),
        "the category came from the cache"
    );
    proxy.restore();
    app.wait_for_rows(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_after_an_outage_is_used_again_without_a_restart() {
    let (app, proxy) = TestApp::behind_redis_proxy().await;
    assert_eq!(app.post_event(71, ITEMS[0].0, "view").await, 200);
    proxy.cut();
    assert_eq!(app.post_event(71, ITEMS[1].0, "view").await, 200);
    proxy.restore();
    let posted = std::sync::atomic::AtomicI64::new(2);
    eventually("the context to be updated again", || async {
        assert_eq!(app.post_event(71, ITEMS[2].0, "view").await, 200);
        posted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let context = app.get("/api/users/71/context").await.1;
        context["recent_items"][0] == ITEMS[2].0
    })
    .await;
    let context = app.get("/api/users/71/context").await.1;
    let recent = context["recent_items"].as_array().unwrap();
    assert!(
        !recent.contains(&json!(ITEMS[1].0)),
        "the event during the outage skipped Redis"
    );
    assert_eq!(
        recent.last().unwrap(),
        ITEMS[0].0,
        "the context from before the outage is kept"
    );
    app.wait_for_rows(posted.load(std::sync::atomic::Ordering::SeqCst))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_but_never_answers_costs_only_the_timeout() {
    // A listener that takes connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let app = TestApp::spawn_with(|s| {
        s.redis.redis_url = SecretUrl::new(format!("redis://{address}"));
        s.context.redis_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    // The catalogue cache warmed first, so that only Redis is timed.
    assert_eq!(app.post_event(81, ITEMS[0].0, "view").await, 200);
    tokio::time::sleep(BREAKER_COOLDOWN).await;

    let started = Instant::now();
    assert_eq!(app.post_event(81, ITEMS[0].0, "click").await, 200);
    let first = started.elapsed();
    assert!(
        first >= timeout && first < timeout + Duration::from_millis(500),
        "the deadline, plus little: {first:?}"
    );
    // The breaker is now open: the next request does not wait for Redis at all.
    let started = Instant::now();
    assert_eq!(app.post_event(81, ITEMS[0].0, "purchase").await, 200);
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    app.wait_for_rows(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_unknown_items_answers_503_when_the_catalogue_cannot_tell() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|s| {
        s.events.unknown_items = event_ingest::ingest::UnknownItems::Reject
    })
    .await;
    let body = json!({"user_id": 4, "asin": "B0NEVERSEEN", "event_type": "view"});
    proxy.cut();
    let response = app.post_json("/api/event", &body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    proxy.restore();
    // Once the catalogue answers again (its pool reconnects within the lookup's 100 ms, or a
    // little later on a busy machine), the item is known to be unknown.
    eventually("422 unknown_item once PostgreSQL answers", || async {
        let (status, answer) = app.post("/api/event", &body).await;
        assert!(
            status == 422 || status == 503,
            "{status} {answer}: only 503 (cannot tell yet) or 422"
        );
        (status, answer["error"]["code"].as_str()) == (422, Some("unknown_item"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_gauges_rise_during_a_postgres_outage_and_fall_back_after_it() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
    assert_eq!(app.post_event(91, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;
    proxy.cut();
    for _ in 0..20 {
        assert_eq!(app.post_event(91, ITEMS[0].0, "click").await, 200);
    }
    let during = scrape(&app.http, &app.address).await;
    assert!(metric(&during, "journal_bytes") > 0.0, "{during}");
    let age = metric(&during, "journal_oldest_unwritten_seconds");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = scrape(&app.http, &app.address).await;
    assert!(
        metric(&later, "journal_oldest_unwritten_seconds") >= age + 1.0,
        "the age grows while nothing is written: {age} then {later}"
    );
    assert!(metric(&later, "journal_bytes") >= metric(&during, "journal_bytes"));

    proxy.restore();
    app.wait_for_rows(21).await;
    eventually("the gauges to fall back to zero", || async {
        let after = scrape(&app.http, &app.address).await;
        metric(&after, "journal_bytes") == 0.0
            && metric(&after, "journal_oldest_unwritten_seconds") == 0.0
    })
    .await;
}
