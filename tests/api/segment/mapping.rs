//! The mapping's details: the Spec's v1 names, which property names the item, a shop's own
//! names for a purchase, what the metadata keeps, and what is too large to use.

use event_ingest::api::segment::ItemId;
use serde_json::{Value, json};

use super::{BOOK, CASE, LEGO, PHONE, send, track};
use crate::helpers::{TestApp, metric, scrape};

/// Each stored row's event type and asin, sorted.
async fn stored(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT event_type::text, asin FROM interaction_logs ORDER BY 1, 2")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = expected
        .iter()
        .map(|(t, a)| ((*t).to_owned(), (*a).to_owned()))
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_s_v1_names_are_its_v2_names() {
    let app = TestApp::spawn().await;
    let user = json!({"userId": "21"});
    let batch = json!({"batch": [
        track("Viewed Product", user.clone(), json!({"product_id": PHONE}), "v1-1"),
        track("Clicked Product", user.clone(), json!({"product_id": CASE}), "v1-2"),
        track("Added Product", user.clone(), json!({"product_id": BOOK}), "v1-3"),
        track("Completed Order", user, json!({"products": [{"product_id": LEGO}]}), "v1-4"),
    ]});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    app.wait_for_rows(4).await;
    assert_eq!(
        stored(&app).await,
        pairs(&[
            ("view", PHONE),
            ("click", CASE),
            ("add_to_cart", BOOK),
            ("purchase", LEGO)
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_item_is_the_product_id_unless_the_sku_is_asked_for_and_a_number_is_its_digits() {
    let both = |id: &str| {
        json!({"batch": [
            track("Product Viewed", json!({"userId": "22"}), json!({"product_id": PHONE, "sku": CASE}), id),
            track("Product Clicked", json!({"userId": "22"}), json!({"product_id": 12345}), &format!("{id}-n")),
        ]})
    };
    let by_product_id = TestApp::spawn().await;
    assert_eq!(
        send(&by_product_id, "/v1/batch", None, &both("i-1"))
            .await
            .0,
        200
    );
    by_product_id.wait_for_rows(2).await;
    assert_eq!(
        stored(&by_product_id).await,
        pairs(&[("view", PHONE), ("click", "12345")])
    );

    let by_sku = TestApp::spawn_with(|s| s.segment.segment_item_id = ItemId::Sku).await;
    assert_eq!(send(&by_sku, "/v1/batch", None, &both("i-2")).await.0, 200);
    by_sku.wait_for_rows(2).await;
    assert_eq!(
        stored(&by_sku).await,
        pairs(&[("view", CASE), ("click", "12345")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_s_own_purchase_name_with_products_is_an_order() {
    let app = TestApp::spawn_with(|s| {
        s.segment.segment_events = "Reorder=purchase".parse().unwrap();
    })
    .await;
    let user = json!({"userId": "23"});
    let batch = json!({"batch": [
        track("Reorder", user.clone(), json!({"order_id": "r-1",
              "products": [{"product_id": BOOK}, {"product_id": LEGO}]}), "c-1"),
        track("Reorder", user, json!({"product_id": PHONE}), "c-2"),
    ]});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    app.wait_for_rows(3).await;
    assert_eq!(
        stored(&app).await,
        pairs(&[("purchase", BOOK), ("purchase", LEGO), ("purchase", PHONE)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_keeps_every_property_and_a_property_wins_over_the_context() {
    let app = TestApp::spawn().await;
    let user = json!({"userId": "24"});
    let mut viewed = track(
        "Product Viewed",
        user.clone(),
        json!({"product_id": PHONE, "page": "pdp", "rating": 4.5, "price": "PRICE"}),
        "md-1",
    );
    viewed["context"] = json!({"page": {"path": "/p/1"}, "campaign": {"name": "winter"}});
    let batch = json!({"batch": [
        viewed,
        track("Product Reviewed", user.clone(), json!({"product_id": CASE, "rating": "great"}), "md-2"),
        track("Product Reviewed", user, json!({"product_id": BOOK, "rating": " 4.50 "}), "md-3"),
    ]});
    // A number past what a double holds, as the client wrote it.
    let body = batch
        .to_string()
        .replace(r#""PRICE""#, "123456789012345678901234567890");
    let response = app
        .http
        .post(format!("{}/v1/batch", app.address))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.wait_for_rows(3).await;
    let metadata = |asin: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Value>("SELECT metadata FROM interaction_logs WHERE asin = $1")
                .bind(asin)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let viewed = metadata(PHONE).await;
    assert_eq!(viewed["page"], "pdp", "the property's page: {viewed}");
    assert_eq!(viewed["campaign"], json!({"name": "winter"}));
    assert_eq!(viewed["rating"], 4.5, "kept on any event: {viewed}");
    let price: String =
        sqlx::query_scalar("SELECT metadata->>'price' FROM interaction_logs WHERE asin = $1")
            .bind(PHONE)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        price, "123456789012345678901234567890",
        "numbers kept exactly"
    );
    assert_eq!(
        metadata(CASE).await["rating"],
        "great",
        "a rating that is no number is kept as written"
    );
    assert_eq!(metadata(BOOK).await["rating"], 4.5, "a number in a string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_or_an_order_past_their_bounds_are_unused_as_too_large_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let mut properties = serde_json::Map::new();
    properties.insert("product_id".into(), json!(PHONE));
    for i in 0..1_100 {
        properties.insert(format!("k{i}"), json!(1));
    }
    let products: Vec<Value> = (0..1_025).map(|_| json!({"product_id": CASE})).collect();
    let user = json!({"userId": "25"});
    let batch = json!({"batch": [
        track("Product Viewed", user.clone(), Value::Object(properties), "big-1"),
        track("Order Completed", user, json!({"products": products}), "big-2"),
    ]});
    assert_eq!(send(&app, "/v1/batch", None, &batch).await.0, 200);
    assert_eq!(app.post_event(1, BOOK, "view").await, 200);
    app.wait_for_rows(1).await;
    assert_eq!(stored(&app).await, pairs(&[("view", BOOK)]));
    let scraped = scrape(&app.http, &app.address).await;
    assert_eq!(
        metric(
            &scraped,
            r#"segment_messages_unused_total{reason="too_large"}"#
        ),
        2.0
    );
}
