//! `GET /api/users/{user_id}/context`.

use serde_json::json;

use crate::helpers::{ITEMS, TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_endpoint_shows_the_three_keys() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(8, ITEMS[2].0, "view").await, 200);
    assert_eq!(app.post_event(8, ITEMS[3].0, "click").await, 200);
    let (status, context) = app.get("/api/users/8/context").await;
    assert_eq!(status, 200);
    assert_eq!(context["user_id"], 8);
    assert_eq!(context["recent_items"], json!([ITEMS[3].0, ITEMS[2].0]));
    assert_eq!(
        context["recent_categories"],
        json!({"Books": 1, "Toys & Games": 1})
    );
    assert!(context["last_active"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_has_an_empty_context_and_a_bad_id_is_422() {
    let app = TestApp::spawn().await;
    let (status, context) = app.get("/api/users/123456/context").await;
    assert_eq!(status, 200);
    assert_eq!(
        context,
        json!({"user_id": 123456, "recent_items": [], "recent_categories": {}, "last_active": null, "purchased": []})
    );
    let (status, error) = app.get("/api/users/-4/context").await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["field"], "user_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_expires_after_its_ttl() {
    let app = TestApp::spawn_with(|s| s.context.context_ttl_secs = 1).await;
    assert_eq!(app.post_event(9, ITEMS[0].0, "view").await, 200);
    assert_eq!(
        app.get("/api/users/9/context").await.1["recent_items"],
        json!([ITEMS[0].0])
    );
    eventually("the context to expire", || async {
        app.get("/api/users/9/context").await.1["recent_items"] == json!([])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_forgot_the_script_is_given_it_again() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(10, ITEMS[0].0, "view").await, 200);
    // As after a restart or a failover: Redis no longer knows the script's hash. (Other tests'
    // calls meanwhile take the same path, which is the one under test.)
    let mut redis = app.redis().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(app.post_event(10, ITEMS[1].0, "view").await, 200);
    assert_eq!(
        app.get("/api/users/10/context").await.1["recent_items"],
        json!([ITEMS[1].0, ITEMS[0].0])
    );
}
