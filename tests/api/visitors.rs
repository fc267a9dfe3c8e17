//! Visitors before they log in: their own context under `anonymous_id`, re-ranking with it, and
//! `POST /api/identify`, which merges it into the user's and attributes their stored events.

use redis::AsyncCommands as _;
use serde_json::{Value, json};

use crate::helpers::{ITEMS, TestApp, eventually};
use crate::jetstream::through_jetstream;

const PHONE: &str = ITEMS[0].0;
const BOOK: &str = ITEMS[2].0;
const LEGO: &str = ITEMS[3].0;
const CHARGER: &str = ITEMS[4].0;

async fn visit(app: &TestApp, visitor: &str, asin: &str, event_type: &str) {
    let event = json!({"anonymous_id": visitor, "asin": asin, "event_type": event_type});
    let (status, answer) = app.post("/api/event", &event).await;
    assert_eq!(status, 200, "{answer}");
}

/// Each stored row's asin, user_id and anonymous_id, oldest first.
async fn rows(app: &TestApp) -> Vec<(String, Option<i64>, Option<String>)> {
    sqlx::query_as("SELECT asin, user_id, anonymous_id FROM interaction_logs ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn wait_until_attributed(app: &TestApp, rows: i64) {
    let pool = app.pool.clone();
    eventually(format!("{rows} rows, all attributed"), || {
        let pool = pool.clone();
        async move {
            let (total, attributed): (i64, i64) =
                sqlx::query_as("SELECT count(*), count(user_id) FROM interaction_logs")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or((-1, -1));
            total == rows && attributed == rows
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_has_a_context_of_their_own_and_a_reranking_with_it() {
    let app = TestApp::spawn().await;
    visit(&app, "v-1", PHONE, "view").await;
    visit(&app, "v-1", PHONE, "click").await;

    let (status, context) = app.get("/api/visitors/v-1/context").await;
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["anonymous_id"], "v-1");
    assert!(context.get("user_id").is_none(), "{context}");
    assert_eq!(context["recent_items"], json!([PHONE, PHONE]));
    assert_eq!(
        context["recent_categories"],
        json!({"Cell Phones & Accessories": 2})
    );
    // Under the visitor's own keys, beside the users'.
    let mut redis = app.redis().await;
    let items: Vec<String> = redis
        .lrange(format!("{}visitor:v-1:recent_items", app.prefix), 0, -1)
        .await
        .unwrap();
    assert_eq!(items, [PHONE, PHONE]);
    let ttl: i64 = redis
        .ttl(format!("{}visitor:v-1:recent_items", app.prefix))
        .await
        .unwrap();
    assert!((1..=900).contains(&ttl), "the context's TTL: {ttl}");

    let request = json!({"anonymous_id": "v-1", "items": [
        {"asin": BOOK, "score": 0.9}, {"asin": CHARGER, "score": 0.85}
    ]});
    let (status, reranked) = app.post("/api/rerank", &request).await;
    assert_eq!(status, 200, "{reranked}");
    assert_eq!(reranked["anonymous_id"], "v-1");
    assert_eq!(reranked["items"][0]["asin"], CHARGER, "{reranked}");
    assert_eq!(reranked["context"]["available"], true);

    app.wait_for_rows(2).await;
    assert_eq!(
        rows(&app).await,
        vec![
            (PHONE.to_owned(), None, Some("v-1".to_owned())),
            (PHONE.to_owned(), None, Some("v-1".to_owned())),
        ]
    );
    // The seed's users table holds users only.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_merges_the_context_and_attributes_the_visitors_rows() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_event(7, PHONE, "click").await, 200);
    visit(&app, "v-2", BOOK, "view").await;
    visit(&app, "v-2", LEGO, "view").await;
    visit(&app, "v-2", LEGO, "purchase").await;
    app.wait_for_rows(4).await;

    let identify = json!({"anonymous_id": "v-2", "user_id": 7});
    let (status, answer) = app.post("/api/identify", &identify).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], 7);
    assert_eq!(answer["anonymous_id"], "v-2");
    // The visitor was active last, so their items come first.
    let context = &answer["context"];
    assert_eq!(context["recent_items"], json!([LEGO, LEGO, BOOK, PHONE]));
    assert_eq!(
        context["recent_categories"],
        json!({"Cell Phones & Accessories": 1, "Books": 1, "Toys & Games": 2})
    );
    assert_eq!(context["purchased"], json!([LEGO]));
    let (_, user) = app.get("/api/users/7/context").await;
    assert_eq!(&user["recent_items"], &context["recent_items"]);
    let (_, visitor) = app.get("/api/visitors/v-2/context").await;
    assert_eq!(
        visitor["recent_items"],
        json!([]),
        "the visitor's keys are gone"
    );
    assert_eq!(visitor["purchased"], json!([]));

    wait_until_attributed(&app, 4).await;
    let stored = rows(&app).await;
    assert!(
        stored.iter().all(|(_, user, _)| *user == Some(7)),
        "{stored:?}"
    );
    assert_eq!(
        stored
            .iter()
            .filter(|(_, _, v)| v.as_deref() == Some("v-2"))
            .count(),
        3,
        "the anonymous id stays, as the visit's history"
    );

    // A visitor event that arrives late (a client's queue, say) goes to the user too.
    visit(&app, "v-2", CHARGER, "view").await;
    wait_until_attributed(&app, 5).await;

    // Again (a retry, say): only what the visitor did since is merged, nothing twice.
    let (status, again) = app.post("/api/identify", &identify).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["context"]["recent_categories"],
        json!({"Cell Phones & Accessories": 2, "Books": 1, "Toys & Games": 2})
    );
    // As another user: the visitor belongs to the first, in Redis as in PostgreSQL.
    visit(&app, "v-2", BOOK, "click").await;
    let other = json!({"anonymous_id": "v-2", "user_id": 8});
    let (status, answer) = app.post("/api/identify", &other).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "already_identified");
    let (_, first) = app.get("/api/users/7/context").await;
    assert_eq!(
        first["recent_items"][0], BOOK,
        "merged into the first user: {first}"
    );
    let (_, second) = app.get("/api/users/8/context").await;
    assert_eq!(second["recent_items"], json!([]));
    // An event after them in the journal: once it is stored, so are they.
    assert_eq!(app.post_event(9, PHONE, "view").await, 200);
    eventually("the identifications to be written", || async {
        let users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        users == [7, 9]
    })
    .await;
    let identities: Vec<(String, i64)> =
        sqlx::query_as("SELECT anonymous_id, user_id FROM visitor_identities")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(identities, [("v-2".to_owned(), 7)]);
    wait_until_attributed(&app, 7).await;
    let stored = rows(&app).await;
    assert!(
        stored
            .iter()
            .filter(|(_, _, visitor)| visitor.as_deref() == Some("v-2"))
            .all(|(_, user, _)| *user == Some(7)),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_of_lists_at_the_largest_cap_keeps_them_whole() {
    let app = TestApp::spawn_with(|s| s.context.recent_items_cap = 10_000).await;
    let mut redis = app.redis().await;
    let visitor: Vec<String> = (0..9_000).map(|i| format!("V{i}")).collect();
    let user: Vec<String> = (0..2_000).map(|i| format!("U{i}")).collect();
    let _: () = redis
        .rpush(format!("{}visitor:v-5:recent_items", app.prefix), &visitor)
        .await
        .unwrap();
    let _: () = redis
        .rpush(app.key(5, "recent_items"), &user)
        .await
        .unwrap();
    let identify = json!({"anonymous_id": "v-5", "user_id": 5});
    let (status, answer) = app.post("/api/identify", &identify).await;
    assert_eq!(status, 200, "{answer}");
    let merged: Vec<String> = redis
        .lrange(app.key(5, "recent_items"), 0, -1)
        .await
        .unwrap();
    let expected: Vec<String> = visitor.iter().chain(&user).take(10_000).cloned().collect();
    assert_eq!(merged, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identification_accepted_while_postgres_is_down_is_applied_when_it_returns() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
    proxy.cut();
    visit(&app, "v-3", BOOK, "view").await;
    visit(&app, "v-3", LEGO, "add_to_cart").await;
    let identify = json!({"anonymous_id": "v-3", "user_id": 11});
    let (status, answer) = app.post("/api/identify", &identify).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["context"]["recent_items"], json!([LEGO, BOOK]));
    proxy.restore();
    wait_until_attributed(&app, 2).await;
    let mut stored = rows(&app).await;
    stored.sort();
    assert_eq!(
        stored,
        vec![
            (BOOK.to_owned(), Some(11), Some("v-3".to_owned())),
            (LEGO.to_owned(), Some(11), Some("v-3".to_owned())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_travels_through_jetstream_too() {
    let nats = crate::helpers::NatsServer::start();
    let app = TestApp::spawn_with(|s| through_jetstream(s, &nats)).await;
    let event = json!({"anonymous_id": "v-4", "asin": BOOK, "event_type": "view"});
    eventually("the stream to take events", || async {
        app.post("/api/event", &event).await.0 == 200
    })
    .await;
    let identify = json!({"anonymous_id": "v-4", "user_id": 12});
    assert_eq!(app.post("/api/identify", &identify).await.0, 200);
    wait_until_attributed(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_no_actor_or_both_or_a_bad_id_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Value, &str); 6] = [
        (
            "/api/event",
            json!({"asin": BOOK, "event_type": "view"}),
            "user_id",
        ),
        (
            "/api/event",
            json!({"user_id": 1, "anonymous_id": "v", "asin": BOOK, "event_type": "view"}),
            "anonymous_id",
        ),
        (
            "/api/event",
            json!({"anonymous_id": "not safe!", "asin": BOOK, "event_type": "view"}),
            "anonymous_id",
        ),
        (
            "/api/rerank",
            json!({"anonymous_id": "", "items": []}),
            "anonymous_id",
        ),
        ("/api/identify", json!({"user_id": 1}), "anonymous_id"),
        (
            "/api/identify",
            json!({"anonymous_id": "v", "user_id": 0}),
            "user_id",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = app.post(path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{path} {body}: {answer}");
    }
    let (status, answer) = app.get("/api/visitors/a%20b/context").await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (422, &json!("anonymous_id"))
    );
    assert!(rows(&app).await.is_empty());
}
