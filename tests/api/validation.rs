//! Bad input: the right 4xx, our JSON error naming the field, and nothing written anywhere.

use serde_json::{Value, json};

use crate::helpers::{ITEMS, TestApp};

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn json_case(
    name: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        code,
        field,
    }
}

fn raw_case(
    name: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        content_type,
        body: body.to_vec(),
        status,
        code,
        field: None,
    }
}

/// A valid event with `key` set to `value` (or removed, for `Value::Null` with `remove`).
fn event_with(key: &str, value: Option<Value>) -> Value {
    let mut event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view"});
    match value {
        Some(value) => event[key] = value,
        None => {
            event.as_object_mut().unwrap().remove(key);
        }
    }
    event
}

fn deep(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

fn cases() -> Vec<Case> {
    let invalid = "invalid_field";
    vec![
        raw_case(
            "truncated JSON",
            Some("application/json"),
            br#"{"user_id": 1,"#,
            400,
            "invalid_json",
        ),
        raw_case(
            "not JSON at all",
            Some("application/json"),
            b"hello",
            400,
            "invalid_json",
        ),
        raw_case(
            "empty body",
            Some("application/json"),
            b"",
            400,
            "invalid_json",
        ),
        raw_case(
            "a JSON array",
            Some("application/json"),
            b"[1, 2]",
            422,
            "invalid_body",
        ),
        raw_case(
            "a JSON string",
            Some("application/json"),
            br#""event""#,
            422,
            "invalid_body",
        ),
        raw_case(
            "HTML content type",
            Some("text/html"),
            b"<p>hi</p>",
            415,
            "unsupported_media_type",
        ),
        raw_case(
            "oversized body",
            Some("application/json"),
            &vec![b' '; 70 * 1024],
            413,
            "body_too_large",
        ),
        json_case(
            "missing user_id",
            event_with("user_id", None),
            422,
            "missing_field",
            Some("user_id"),
        ),
        json_case(
            "missing asin",
            event_with("asin", None),
            422,
            "missing_field",
            Some("asin"),
        ),
        json_case(
            "missing event_type",
            event_with("event_type", None),
            422,
            "missing_field",
            Some("event_type"),
        ),
        json_case(
            "user_id as a string",
            event_with("user_id", Some(json!("1"))),
            422,
            invalid,
            Some("user_id"),
        ),
        json_case(
            "negative user_id",
            event_with("user_id", Some(json!(-1))),
            422,
            invalid,
            Some("user_id"),
        ),
        json_case(
            "zero user_id",
            event_with("user_id", Some(json!(0))),
            422,
            invalid,
            Some("user_id"),
        ),
        json_case(
            "user_id beyond BIGINT",
            event_with("user_id", Some(json!(9_223_372_036_854_775_808u64))),
            422,
            invalid,
            Some("user_id"),
        ),
        json_case(
            "fractional user_id",
            event_with("user_id", Some(json!(1.5))),
            422,
            invalid,
            Some("user_id"),
        ),
        json_case(
            "empty asin",
            event_with("asin", Some(json!(""))),
            422,
            invalid,
            Some("asin"),
        ),
        json_case(
            "oversized asin",
            event_with("asin", Some(json!("B".repeat(65)))),
            422,
            invalid,
            Some("asin"),
        ),
        json_case(
            "asin with a space",
            event_with("asin", Some(json!("B0 12"))),
            422,
            invalid,
            Some("asin"),
        ),
        json_case(
            "asin as a number",
            event_with("asin", Some(json!(12))),
            422,
            invalid,
            Some("asin"),
        ),
        json_case(
            "unknown event type",
            event_with("event_type", Some(json!("like"))),
            422,
            invalid,
            Some("event_type"),
        ),
        json_case(
            "event type in capitals",
            event_with("event_type", Some(json!("VIEW"))),
            422,
            invalid,
            Some("event_type"),
        ),
        json_case(
            "metadata as an array",
            event_with("metadata", Some(json!(["a"]))),
            422,
            invalid,
            Some("metadata"),
        ),
        json_case(
            "metadata as a string",
            event_with("metadata", Some(json!("page=1"))),
            422,
            invalid,
            Some("metadata"),
        ),
        json_case(
            "metadata too deep",
            event_with("metadata", Some(deep(9))),
            422,
            invalid,
            Some("metadata"),
        ),
        json_case(
            "metadata too large",
            event_with("metadata", Some(json!({"blob": "x".repeat(9000)}))),
            422,
            invalid,
            Some("metadata"),
        ),
        json_case(
            "metadata with NUL",
            event_with("metadata", Some(json!({"q": "a\u{0}b"}))),
            422,
            invalid,
            Some("metadata"),
        ),
        json_case(
            "event_id not a UUID",
            event_with("event_id", Some(json!("abc"))),
            422,
            invalid,
            Some("event_id"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_right_4xx_and_write_nothing() {
    let app = TestApp::spawn().await;
    let cases = cases();
    assert!(cases.len() >= 15);
    for case in &cases {
        let response = app
            .post_raw("/api/event", case.content_type, case.body.clone())
            .await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {answer}", case.name);
        assert_eq!(answer["success"], false, "{}", case.name);
        assert_eq!(
            answer["error"]["code"], case.code,
            "{}: {answer}",
            case.name
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            case.name
        );
        if let Some(field) = case.field {
            assert_eq!(answer["error"]["field"], field, "{}: {answer}", case.name);
            assert!(
                answer["error"]["message"].as_str().unwrap().contains(field),
                "{}: the message names the field",
                case.name
            );
        }
    }
    // A marker event: once it is stored, anything written before it would be too.
    assert_eq!(app.post_event(77, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;
    let users: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM interaction_logs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, [77]);
    assert_eq!(
        app.redis_keys().await,
        [
            app.key(77, "last_active"),
            app.key(77, "recent_categories"),
            app.key(77, "recent_items")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    let (status, answer) = app.get("/api/nowhere").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, answer) = app.get("/api/event").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_is_not_a_batch_is_rejected_whole() {
    let app = TestApp::spawn().await;
    let too_many: Vec<Value> = (0..501)
        .map(|_| event_with("user_id", Some(json!(1))))
        .collect();
    for (body, message) in [
        (json!({"events": []}), "events must hold 1 to 500 events"),
        (
            json!({"events": too_many}),
            "events must hold 1 to 500 events",
        ),
        (
            json!({"events": {"user_id": 1}}),
            "events must be an array of events",
        ),
        (json!({"events": "x"}), "events must be an array of events"),
        (json!({"events": null}), "events must be an array of events"),
        (
            json!([1]),
            r#"the body must be a JSON object {"events": [...]}"#,
        ),
        (
            json!({"sent_at": 1}),
            r#"the body must be a JSON object {"events": [...]}"#,
        ),
    ] {
        let (status, answer) = app.post("/api/events", &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("invalid_body")),
            "{answer}"
        );
        assert_eq!(answer["error"]["message"], message, "{body}");
    }
    assert!(app.redis_keys().await.is_empty());
}

#[tokio::test]
async fn each_element_of_a_batch_that_is_not_an_object_is_rejected_by_its_kind() {
    let app = TestApp::spawn().await;
    let elements = [
        (json!(1), "a number"),
        (json!(-1.5), "a number"),
        (json!("view"), "a string"),
        (json!(null), "null"),
        (json!(true), "a boolean"),
        (json!([{"user_id": 1}]), "an array"),
    ];
    let mut events: Vec<Value> = elements.iter().map(|(value, _)| value.clone()).collect();
    events.push(event_with("user_id", Some(json!(1))));
    let (status, answer) = app.post("/api/events", &json!({ "events": events })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(6))
    );
    for (index, (_, kind)) in elements.iter().enumerate() {
        let result = &answer["results"][index];
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["error"]["field"], "event", "{result}");
        assert_eq!(
            result["error"]["message"],
            format!("an event must be a JSON object, got {kind}"),
        );
    }
    assert_eq!(answer["results"][6]["status"], "accepted");
}
