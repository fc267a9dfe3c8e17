//! `POST /api/rerank` through the real service: the loop the seed describes.

use event_ingest::secret::SecretUrl;
use serde_json::{Value, json};

use crate::helpers::{DEAD_REDIS_URL, ITEMS, TestApp, eventually};

const PHONE: &str = ITEMS[0].0;
const CASE: &str = ITEMS[1].0;
const BOOK: &str = ITEMS[2].0;
const LEGO: &str = ITEMS[3].0;
const CHARGER: &str = ITEMS[4].0;

fn candidates() -> Value {
    json!({"user_id": 100, "items": [
        {"asin": BOOK, "score": 0.9},
        {"asin": CHARGER, "score": 0.85},
        {"asin": LEGO, "score": 0.8},
        {"asin": PHONE, "score": 0.75},
        {"asin": CASE, "score": 0.7},
    ]})
}

fn order(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["asin"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_lift_their_category_and_lower_the_clicked_items_until_the_context_expires() {
    let app = TestApp::spawn_with(|s| s.context.context_ttl_secs = 2).await;
    let (status, before) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(status, 200);
    assert_eq!(order(&before), [BOOK, CHARGER, LEGO, PHONE, CASE]);
    assert_eq!(before["context"]["available"], false);

    for asin in [PHONE, CASE] {
        assert_eq!(app.post_event(100, asin, "click").await, 200);
    }
    let (status, after) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(status, 200);
    // The charger (a phone accessory, not clicked) rises to the top; the clicked phone and case
    // are boosted by their category but penalised more, the newest most.
    assert_eq!(order(&after), [CHARGER, BOOK, LEGO, PHONE, CASE], "{after}");
    assert_eq!(after["context"]["available"], true);
    assert_eq!(
        after["context"]["category_shares"],
        json!({"Cell Phones & Accessories": 1.0})
    );
    let charger = &after["items"][0];
    assert_eq!(charger["original_rank"], 1);
    assert_eq!(charger["original_score"], 0.85);
    assert_eq!(
        charger["reasons"],
        json!([{"rule": "intent_boost", "delta": 0.3}])
    );
    let case = &after["items"][4];
    let rules: Vec<&str> = case["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["intent_boost", "recent_penalty"]);

    eventually("the context to expire", || async {
        let (_, answer) = app.post("/api/rerank", &candidates()).await;
        answer["context"]["available"] == false
    })
    .await;
    let (_, expired) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(order(&expired), [BOOK, CHARGER, LEGO, PHONE, CASE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_the_input_order_comes_back_flagged() {
    let app = TestApp::spawn_with(|s| s.redis.redis_url = SecretUrl::new(DEAD_REDIS_URL)).await;
    let mut request = candidates();
    request["items"].as_array_mut().unwrap().reverse();
    let (status, answer) = app.post("/api/rerank", &request).await;
    assert_eq!(status, 200);
    assert_eq!(order(&answer), [CASE, PHONE, LEGO, CHARGER, BOOK]);
    assert_eq!(answer["context"]["available"], false);
    assert_eq!(answer["context"]["unavailable_reason"], "redis_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rerank_requests_get_the_same_json_errors() {
    let app = TestApp::spawn().await;
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"asin": BOOK, "score": 1.0}))
        .collect();
    let cases = [
        (json!({"items": []}), "missing_field", "user_id"),
        (
            json!({"user_id": 0, "items": []}),
            "invalid_field",
            "user_id",
        ),
        (json!({"user_id": 1}), "missing_field", "items"),
        (
            json!({"user_id": 1, "items": {"asin": BOOK}}),
            "invalid_field",
            "items",
        ),
        (
            json!({"user_id": 1, "items": [{"asin": BOOK, "score": "high"}]}),
            "invalid_field",
            "items",
        ),
        (
            json!({"user_id": 1, "items": [{"asin": "", "score": 1}]}),
            "invalid_field",
            "items",
        ),
        (
            json!({"user_id": 1, "items": [{"score": 1}]}),
            "invalid_field",
            "items",
        ),
        (
            json!({"user_id": 1, "items": too_many}),
            "invalid_field",
            "items",
        ),
    ];
    for (body, code, field) in cases {
        let (status, answer) = app.post("/api/rerank", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = app
        .post("/api/rerank", &json!({"user_id": 1, "items": []}))
        .await;
    assert_eq!((status, answer["items"].clone()), (200, json!([])));
}

fn reasons_of<'a>(answer: &'a Value, asin: &str) -> &'a Value {
    let items = answer["items"].as_array().unwrap();
    &items.iter().find(|i| i["asin"] == asin).unwrap()["reasons"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bought_item_is_demoted_and_remembered_beyond_the_context() {
    let app = TestApp::spawn_with(|s| s.context.context_ttl_secs = 2).await;
    assert_eq!(app.post_event(100, LEGO, "purchase").await, 200);
    let (_, answer) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(
        order(&answer),
        [BOOK, CHARGER, PHONE, CASE, LEGO],
        "{answer}"
    );
    let reasons = reasons_of(&answer, LEGO);
    assert!(
        reasons
            .as_array()
            .unwrap()
            .contains(&json!({"rule": "purchased", "delta": -1.0})),
        "{reasons}"
    );
    assert_eq!(answer["removed"], json!([]));
    assert_eq!(answer["context"]["purchased_items"], 1);
    let (_, context) = app.get("/api/users/100/context").await;
    assert_eq!(context["purchased"], json!([LEGO]));

    // The recent context expires; what was bought is still known.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, later) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(later["context"]["recent_items"], 0, "{later}");
    assert_eq!(order(&later), [BOOK, CHARGER, PHONE, CASE, LEGO], "{later}");
    assert_eq!(
        reasons_of(&later, LEGO),
        &json!([{"rule": "purchased", "delta": -1.0}])
    );
    let mut redis = app.redis().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(app.key(100, "purchased"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 29 * 24 * 3600, "--purchased-ttl, 30 days: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_purchased_remove_a_bought_item_leaves_the_list() {
    let app = TestApp::spawn_with(|s| s.rerank.rerank_purchased_remove = true).await;
    assert_eq!(app.post_event(100, BOOK, "purchase").await, 200);
    let (_, answer) = app.post("/api/rerank", &candidates()).await;
    assert_eq!(order(&answer), [CHARGER, LEGO, PHONE, CASE], "{answer}");
    assert_eq!(
        answer["removed"],
        json!([{"asin": BOOK, "original_rank": 0, "rule": "purchased"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_weights_count_a_purchase_more_than_a_view() {
    let app = TestApp::spawn_with(|s| {
        s.context.category_weights = "view=1,purchase=5,click=0".parse().unwrap();
    })
    .await;
    assert_eq!(app.post_event(7, PHONE, "view").await, 200);
    assert_eq!(app.post_event(7, BOOK, "purchase").await, 200);
    assert_eq!(app.post_event(7, LEGO, "click").await, 200);
    let (_, context) = app.get("/api/users/7/context").await;
    assert_eq!(
        context["recent_categories"],
        json!({"Cell Phones & Accessories": 1, "Books": 5}),
        "{context}"
    );
    assert_eq!(context["recent_items"], json!([LEGO, BOOK, PHONE]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distinct_recent_list_moves_an_item_seen_again_to_the_front() {
    let seed = TestApp::spawn().await;
    let distinct = TestApp::spawn_with(|s| s.context.recent_items_distinct = true).await;
    for app in [&seed, &distinct] {
        for asin in [PHONE, BOOK, PHONE] {
            assert_eq!(app.post_event(8, asin, "view").await, 200);
        }
    }
    let (_, context) = seed.get("/api/users/8/context").await;
    assert_eq!(
        context["recent_items"],
        json!([PHONE, BOOK, PHONE]),
        "the seed's list"
    );
    let (_, context) = distinct.get("/api/users/8/context").await;
    assert_eq!(context["recent_items"], json!([PHONE, BOOK]));
    assert_eq!(
        context["recent_categories"]["Cell Phones & Accessories"], 2,
        "still counted"
    );
}
