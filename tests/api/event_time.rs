//! When an event happened: `timestamp` and `sent_at`, the client's clock corrected, future times
//! clamped, old ones refused, stale ones kept out of the context, and the time kept across a
//! crash.

use std::process::Stdio;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use event_ingest::secret::SecretUrl;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ITEMS, REDIS_URL, TestApp, TestDatabase, eventually};
use crate::process::Service;

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The stored `ts` of an event, once it is stored.
async fn stored_ts(pool: &sqlx::PgPool, event_id: Uuid) -> DateTime<Utc> {
    let query = "SELECT ts FROM interaction_logs WHERE event_id = $1";
    let fetch = || async {
        sqlx::query_scalar::<_, chrono::NaiveDateTime>(query)
            .bind(event_id)
            .fetch_optional(pool)
            .await
            .unwrap()
    };
    eventually(format!("event {event_id} stored"), || async {
        fetch().await.is_some()
    })
    .await;
    fetch().await.unwrap().and_utc()
}

fn assert_near(actual: DateTime<Utc>, expected: DateTime<Utc>, within: TimeDelta) {
    let off = (actual - expected).abs();
    assert!(off <= within, "{actual} is {off} away from {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_clock_an_hour_fast_stores_the_true_time() {
    let app = TestApp::spawn().await;
    let hour = TimeDelta::hours(1);
    let happened = Utc::now() - TimeDelta::minutes(2);
    let event_id = Uuid::new_v4();
    // The client's clock reads an hour ahead, both when the event happened and when it sends.
    let body = json!({
        "user_id": 1, "asin": ITEMS[0].0, "event_type": "view", "event_id": event_id,
        "timestamp": rfc3339(happened + hour), "sent_at": rfc3339(Utc::now() + hour),
    });
    assert_eq!(app.post("/api/event", &body).await.0, 200);
    assert_near(
        stored_ts(&app.pool, event_id).await,
        happened,
        TimeDelta::seconds(1),
    );

    // On a batch, the envelope's `sent_at` corrects every event; an event's own takes precedence.
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let body = json!({
        "sent_at": rfc3339(Utc::now() + hour),
        "events": [
            {"user_id": 1, "asin": ITEMS[1].0, "event_type": "click", "event_id": first,
             "timestamp": rfc3339(happened + hour)},
            {"user_id": 1, "asin": ITEMS[1].0, "event_type": "click", "event_id": second,
             "timestamp": rfc3339(happened), "sent_at": rfc3339(Utc::now())},
        ],
    });
    let (status, answer) = app.post("/api/events", &body).await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(2)), "{answer}");
    for event_id in [first, second] {
        let ts = stored_ts(&app.pool, event_id).await;
        assert_near(ts, happened, TimeDelta::seconds(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_in_the_future_is_clamped_and_one_too_old_refused_naming_timestamp() {
    let app = TestApp::spawn_with(|s| {
        s.events.max_event_age = event_ingest::config::Human(std::time::Duration::from_secs(3600))
    })
    .await;
    let event_id = Uuid::new_v4();
    let body = json!({
        "user_id": 2, "asin": ITEMS[0].0, "event_type": "view", "event_id": event_id,
        "timestamp": rfc3339(Utc::now() + TimeDelta::days(1)),
    });
    let before = Utc::now();
    assert_eq!(app.post("/api/event", &body).await.0, 200);
    let ts = stored_ts(&app.pool, event_id).await;
    assert!(
        ts >= before - TimeDelta::milliseconds(1) && ts <= Utc::now(),
        "{ts}"
    );

    let too_old = rfc3339(Utc::now() - TimeDelta::minutes(61));
    let body =
        json!({"user_id": 2, "asin": ITEMS[0].0, "event_type": "view", "timestamp": too_old});
    let (status, error) = app.post("/api/event", &body).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_field");
    assert_eq!(error["error"]["field"], "timestamp");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1h (--max-event-age)"),
        "{error}"
    );

    // In a batch, only that event is refused; a bad envelope `sent_at` refuses the request.
    let batch = json!({"events": [
        {"user_id": 2, "asin": ITEMS[0].0, "event_type": "view", "timestamp": too_old},
        {"user_id": 2, "asin": ITEMS[0].0, "event_type": "view"},
    ]});
    let (status, answer) = app.post("/api/events", &batch).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["results"][0]["error"]["field"], "timestamp",
        "{answer}"
    );
    assert_eq!(answer["accepted"], 1);
    let bad_envelope = json!({"sent_at": "yesterday", "events": [{"user_id": 2, "asin": ITEMS[0].0, "event_type": "view"}]});
    let (status, error) = app.post("/api/events", &bad_envelope).await;
    assert_eq!((status, &error["error"]["field"]), (422, &json!("sent_at")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_event_is_stored_but_leaves_the_context_alone() {
    let app = TestApp::spawn().await;
    let user = 3;
    // Older than the context's 15 minutes: stored, not recent.
    let stale = Uuid::new_v4();
    let an_hour_ago = Utc::now() - TimeDelta::hours(1);
    let body = json!({"user_id": user, "asin": ITEMS[0].0, "event_type": "purchase",
                      "event_id": stale, "timestamp": rfc3339(an_hour_ago)});
    assert_eq!(app.post("/api/event", &body).await.0, 200);
    assert_near(
        stored_ts(&app.pool, stale).await,
        an_hour_ago,
        TimeDelta::milliseconds(1),
    );
    assert_eq!(app.redis_keys().await, Vec::<String>::new());

    // A late event within the TTL enters the context but does not move last_active back.
    assert_eq!(app.post_event(user, ITEMS[1].0, "view").await, 200);
    let (_, context) = app.get(&format!("/api/users/{user}/context")).await;
    let last_active = context["last_active"].as_str().unwrap().to_owned();
    let late = json!({"user_id": user, "asin": ITEMS[2].0, "event_type": "view",
                      "timestamp": rfc3339(Utc::now() - TimeDelta::minutes(5))});
    assert_eq!(app.post("/api/event", &late).await.0, 200);
    let (_, context) = app.get(&format!("/api/users/{user}/context")).await;
    assert_eq!(context["last_active"], Value::from(last_active));
    assert_eq!(context["recent_items"], json!([ITEMS[2].0, ITEMS[1].0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_kill_stores_the_time_settled_at_acceptance() {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let env = |interval_ms: &str| {
        vec![
            ("DATABASE_URL", database.url.clone()),
            ("REDIS_URL", REDIS_URL.to_owned()),
            ("REDIS_KEY_PREFIX", format!("test:{}:", database.name)),
            ("JOURNAL_DIR", journal.path().display().to_string()),
            ("BATCH_SIZE", "50000".to_owned()),
            ("BATCH_INTERVAL_MS", interval_ms.to_owned()),
        ]
    };
    // Batches that wait a minute: the events are only in the journal when the process dies.
    let mut service = Service::start(&env("60000"), Stdio::inherit()).await;
    let hour = TimeDelta::hours(1);
    let happened = Utc::now() - TimeDelta::minutes(3);
    let (corrected, plain) = (Uuid::new_v4(), Uuid::new_v4());
    let body = json!({"sent_at": rfc3339(Utc::now() + hour), "events": [
        {"user_id": 4, "asin": ITEMS[0].0, "event_type": "view", "event_id": corrected,
         "timestamp": rfc3339(happened + hour)},
        {"user_id": 4, "asin": ITEMS[0].0, "event_type": "view", "event_id": plain},
    ]});
    let sent = Utc::now();
    let answer: Value = service
        .http
        .post(format!("{}/api/events", service.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let received = Utc::now();
    assert_eq!(answer["accepted"], 2, "{answer}");
    let pool = event_ingest::db::connect(&SecretUrl::new(&database.url), 1)
        .await
        .unwrap();
    let rows = "SELECT count(*) FROM interaction_logs";
    let stored: i64 = sqlx::query_scalar(rows).fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 0, "the events are only in the journal");
    service.kill().await;

    // After the restart, the replay stores the times fixed at acceptance.
    let _service = Service::start(&env("10"), Stdio::inherit()).await;
    assert_near(
        stored_ts(&pool, corrected).await,
        happened,
        TimeDelta::seconds(1),
    );
    let ts = stored_ts(&pool, plain).await;
    assert!(
        sent <= ts && ts <= received,
        "the time of receipt, not of the replay: {ts}"
    );
}
