//! `--handoff jetstream`: events published to a NATS JetStream stream (each test's own
//! nats-server) and written from it, by the same process here (the multi-node tests are in
//! `nodes.rs`).

use event_ingest::config::{HandoffKind, Settings};
use event_ingest::secret::SecretUrl;
use futures::StreamExt as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ITEMS, NatsServer, TestApp, eventually};

/// Settings for the JetStream hand-off on `nats`.
pub fn through_jetstream(settings: &mut Settings, nats: &NatsServer) {
    settings.handoff = HandoffKind::Jetstream;
    settings.nats.nats_url = SecretUrl::new(nats.url());
    settings.nats.nats_ack_wait_secs = 3;
}

async fn jetstream(nats: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_travel_through_the_stream_with_their_id_and_are_stored_once() {
    let nats = NatsServer::start();
    let app = TestApp::spawn_with(|s| through_jetstream(s, &nats)).await;
    let id = Uuid::new_v4();
    let event = json!({"user_id": 3, "asin": ITEMS[0].0, "event_type": "click", "event_id": id});
    eventually("the stream to take events", || async {
        app.post("/api/event", &event).await.0 == 200
    })
    .await;
    assert_eq!(app.post("/api/event", &event).await.0, 200, "a retry");
    let batch = json!({"events": [
        {"user_id": 3, "asin": ITEMS[1].0, "event_type": "view"},
        {"user_id": 4, "asin": ITEMS[2].0, "event_type": "purchase"},
    ]});
    let (status, answer) = app.post("/api/events", &batch).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2)));
    app.wait_for_rows(3).await;
    assert_eq!(app.counted_in_redis(3).await, 2, "the retry counted once");

    // The stream holds the events as documented: subject events.<type>, Nats-Msg-Id the id.
    let stream = jetstream(&nats).await.get_stream("EVENTS").await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject("events.click")
        .await
        .unwrap();
    let headers = message.headers;
    assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), id.to_string());
    let body: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body["event_id"], id.to_string());
    assert_eq!(body["asin"], ITEMS[0].0);
    assert!(body["received_at"].is_string(), "{body}");
    let mut info = stream.clone();
    assert_eq!(
        info.info().await.unwrap().state.messages,
        3,
        "the retry was a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_at_start_up_the_service_starts_refuses_events_with_503_and_recovers() {
    let mut nats = NatsServer::start();
    nats.stop();
    let app = TestApp::spawn_with(|s| through_jetstream(s, &nats)).await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 503);
    assert_eq!(ready["handoff"]["kind"], "jetstream");
    assert_eq!(ready["handoff"]["ok"], false, "{ready}");
    let refused = app
        .post_json(
            "/api/event",
            &json!({"user_id": 5, "asin": ITEMS[0].0, "event_type": "view"}),
        )
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unavailable");

    nats.restart();
    eventually("the service to take events once NATS is up", || async {
        app.post_event(5, ITEMS[1].0, "view").await == 200
    })
    .await;
    app.wait_for_rows(1).await;
    assert_eq!(app.get("/health/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgres_refuses_or_cannot_read_goes_to_the_dead_letter_subject_with_the_reason() {
    let nats = NatsServer::start();
    let app = TestApp::spawn_with(|s| through_jetstream(s, &nats)).await;
    eventually("the stream to take events", || async {
        app.post_event(6, ITEMS[0].0, "view").await == 200
    })
    .await;
    // Published around the API, which would refuse both: bytes that are no event, and an event
    // whose metadata holds a NUL, which JSONB cannot store.
    let context = jetstream(&nats).await;
    context
        .publish("events.view", "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let refused = json!({"event_id": Uuid::new_v4(), "user_id": 6, "asin": ITEMS[1].0, "event_type": "view",
        "metadata": {"note": "a\u{0}b"}, "received_at": "2026-11-29T00:00:00Z"});
    context
        .publish("events.view", refused.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(app.post_event(6, ITEMS[2].0, "view").await, 200);
    app.wait_for_rows(2).await;

    let dead = context.get_stream("EVENTS_DEAD").await.unwrap();
    let consumer = dead
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut reasons = Vec::new();
    let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let reason = message.headers.as_ref().unwrap().get("Dead-Letter-Reason");
        reasons.push(reason.unwrap().as_str().to_owned());
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("PostgreSQL refused it"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("not an event"), "{reasons:?}");

    // Both were acknowledged (after being kept): nothing is left for the writers.
    let events = context.get_stream("EVENTS").await.unwrap();
    let writers = events
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("writers")
        .await
        .unwrap();
    eventually("the writers' consumer to have nothing pending", || {
        let mut writers = writers.clone();
        async move {
            let info = writers.info().await.unwrap();
            info.num_pending == 0 && info.num_ack_pending == 0
        }
    })
    .await;
}
