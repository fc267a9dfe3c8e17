//! `interaction_logs` partitioned by time: partitions made ahead, behind and on demand, dropped
//! past retention; an event and its retry stored once across a partition's bound; a database
//! the previous release made, partitioned in place.

use std::time::Duration;

use chrono::{DateTime, DurationRound as _, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use event_ingest::config::{Human, Settings};
use event_ingest::secret::SecretUrl;
use event_ingest::writer::{PartitionConfig, Partitions};

use crate::helpers::{ITEMS, RedisPrefix, TestApp, TestDatabase, eventually, refused_start};

const HOUR: Duration = Duration::from_secs(3600);

/// Partitions of an hour, made three hours behind and two ahead.
fn hourly(s: &mut Settings) {
    s.writer.partition_interval = Human(HOUR);
    s.events.max_event_age = Human(3 * HOUR);
}

/// The partitions' ranges, from the catalogue.
async fn ranges(app: &TestApp) -> Vec<(Option<NaiveDateTime>, Option<NaiveDateTime>)> {
    let partitions = Partitions::new(app.pool.clone(), PartitionConfig::default());
    partitions.refresh().await.unwrap();
    partitions
        .known()
        .into_iter()
        .map(|range| (range.from, range.to))
        .collect()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn stored(app: &TestApp, event_id: &str) -> Vec<NaiveDateTime> {
    sqlx::query_scalar("SELECT ts FROM interaction_logs WHERE event_id = $1::uuid")
        .bind(event_id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_behind_and_ahead_and_on_demand_for_a_missing_one() {
    let app = TestApp::spawn_with(hourly).await;
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let wanted: Vec<_> = (-3..=2)
        .map(|h| {
            let from = (hour + TimeDelta::hours(h)).naive_utc();
            (Some(from), Some(from + TimeDelta::hours(1)))
        })
        .collect();
    eventually("the partitions from 3 h behind to 2 h ahead", || async {
        let ranges = ranges(&app).await;
        wanted.iter().all(|range| ranges.contains(range))
    })
    .await;
    // The current hour's partition gone (by hand): the next event makes it again.
    let name = format!("interaction_logs_p{}", hour.format("%Y%m%d_%H%M"));
    let name = if hour.format("%H%M").to_string() == "0000" {
        format!("interaction_logs_p{}", hour.format("%Y%m%d"))
    } else {
        name
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.post_event(5, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;
    assert!(ranges(&app).await.contains(&wanted[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_time_lands_in_the_next_partition_is_stored_once() {
    let app = TestApp::spawn_with(hourly).await;
    // The hour that began last: its bound lies in the past, as event times must.
    let bound = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let event_id = uuid::Uuid::now_v7().to_string();
    let event = |sent_at: DateTime<Utc>| {
        json!({"user_id": 6, "asin": ITEMS[1].0, "event_type": "add_to_cart", "event_id": event_id,
               "timestamp": rfc3339(bound - TimeDelta::milliseconds(50)), "sent_at": rfc3339(sent_at)})
    };
    // Sent now: stored some 50 ms before the bound.
    assert_eq!(app.post("/api/event", &event(Utc::now())).await.0, 200);
    eventually("the first stored", || async {
        !stored(&app, &event_id).await.is_empty()
    })
    .await;
    let first = stored(&app, &event_id).await[0];
    assert!(first < bound.naive_utc(), "{first}");
    // The retry says it was sent 200 ms ago (a slow network): its time, corrected, lies some
    // 150 ms past the bound, in the next partition.
    let retry = event(Utc::now() - TimeDelta::milliseconds(200));
    assert_eq!(app.post("/api/event", &retry).await.0, 200);
    // An event of ours after it: once stored, the retry has been written (or refused) too.
    assert_eq!(app.post_event(60, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(2).await;
    assert_eq!(stored(&app, &event_id).await, [first], "stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_in_one_batch_across_a_bound_is_stored_once() {
    let app = TestApp::spawn_with(hourly).await;
    let bound = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let event_id = uuid::Uuid::now_v7().to_string();
    let at = |ms: i64| {
        json!({"user_id": 9, "asin": ITEMS[0].0, "event_type": "view", "event_id": event_id,
               "timestamp": rfc3339(bound + TimeDelta::milliseconds(ms))})
    };
    // A client's first try and its retry, both still in the hand-off when the writer reads.
    let (status, answer) = app
        .post("/api/events", &json!({"events": [at(-50), at(50)]}))
        .await;
    assert_eq!(
        (status, answer["accepted"].as_i64()),
        (200, Some(2)),
        "{answer}"
    );
    assert_eq!(app.post_event(61, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(2).await;
    assert_eq!(stored(&app, &event_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_without_a_time_of_its_own_across_a_bound_is_stored_once() {
    // Minutes, so that a bound comes within the test: the event's time is its time of receipt,
    // and the retry is received after the bound.
    let app = TestApp::spawn_with(|s| {
        s.writer.partition_interval = Human(Duration::from_secs(60));
        s.events.max_event_age = Human(Duration::from_secs(600));
    })
    .await;
    let next_minute =
        Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() + TimeDelta::minutes(1);
    let wait = (next_minute - Utc::now() - TimeDelta::milliseconds(300))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let event_id = uuid::Uuid::now_v7().to_string();
    let event =
        json!({"user_id": 7, "asin": ITEMS[2].0, "event_type": "view", "event_id": event_id});
    assert_eq!(app.post("/api/event", &event).await.0, 200);
    let remaining = (next_minute - Utc::now() + TimeDelta::milliseconds(100))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(remaining).await;
    assert_eq!(app.post("/api/event", &event).await.0, 200);
    assert_eq!(app.post_event(70, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(2).await;
    let times = stored(&app, &event_id).await;
    assert_eq!(times.len(), 1, "{times:?}");
    assert!(
        times[0] < next_minute.naive_utc(),
        "the first kept: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_partitions_past_it() {
    // The maintenance of a writer, on a database of its own (no service's maintenance beside).
    let database = TestDatabase::new();
    let pool = event_ingest::db::prepare(&SecretUrl::new(&database.url), 2)
        .await
        .unwrap();
    crate::helpers::seed_catalogue(&pool).await;
    let config = PartitionConfig {
        interval: HOUR,
        retention: Some(5 * HOUR),
        max_event_age: 3 * HOUR,
        ..PartitionConfig::default()
    };
    let partitions = Partitions::new(pool.clone(), config);
    let now = Utc::now();
    let old = (now - TimeDelta::hours(8)).naive_utc();
    partitions.ensure(old, old).await.unwrap();
    sqlx::query(
        "WITH u AS (INSERT INTO users (id) VALUES (1)) \
         INSERT INTO interaction_logs (user_id, asin, event_type, ts) VALUES (1, $1, 'view', $2)",
    )
    .bind(ITEMS[0].0)
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();
    let done = partitions.maintain(now).await.unwrap();
    assert_eq!(done.dropped.len(), 1, "{done:?}");
    assert_eq!(
        done.created.len(),
        6,
        "3 h behind, the current hour, 2 ahead: {done:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM interaction_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(
        partitions
            .known()
            .iter()
            .all(|r| r.from.is_some_and(|f| f > old)),
        "nothing left that old"
    );
    // Within retention, nothing more to drop; made already, nothing more to make.
    let again = partitions.maintain(now).await.unwrap();
    assert!(
        again.dropped.is_empty() && again.created.is_empty(),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_event_age_beyond_retention_stops_the_start() {
    let message = refused_start(|s| s.writer.retention = Some(Human(24 * HOUR))).await;
    assert!(
        message.contains("--max-event-age") && message.contains("--retention"),
        "{message}"
    );
}

/// The migrations of the release before partitioning, from the repository's own files.
async fn previous_release_migrator() -> (sqlx::migrate::Migrator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "20261207" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (migrator, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_previous_release_made_is_partitioned_in_place() {
    let database = TestDatabase::new();
    let url = SecretUrl::new(&database.url);
    {
        use sqlx::migrate::MigrateDatabase as _;
        sqlx::Postgres::create_database(url.expose()).await.unwrap();
    }
    let pool = event_ingest::db::connect(&url, 2).await.unwrap();
    let (previous, _files) = previous_release_migrator().await;
    previous.run(&pool).await.unwrap();
    crate::helpers::seed_catalogue(&pool).await;
    sqlx::query("INSERT INTO users (id) VALUES (8)")
        .execute(&pool)
        .await
        .unwrap();
    // Rows as the previous release's writer stored them, a visitor's among them.
    let legacy_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO interaction_logs (event_id, user_id, asin, event_type, ts, metadata) \
         SELECT CASE WHEN g = 1 THEN $2 ELSE gen_random_uuid() END, 8, $1, 'view', now() - g * interval '1 minute', '{\"g\": 1}' \
         FROM generate_series(1, 500) g ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(ITEMS[0].0)
    .bind(legacy_id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO interaction_logs (anonymous_id, asin, event_type) VALUES ('v-old', $1, 'click')",
    )
    .bind(ITEMS[1].0)
    .execute(&pool)
    .await
    .unwrap();
    let file: i64 = sqlx::query_scalar("SELECT pg_relation_filenode('interaction_logs')::bigint")
        .fetch_one(&pool)
        .await
        .unwrap();

    event_ingest::db::MIGRATOR.run(&pool).await.unwrap();
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'interaction_logs'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "p", "partitioned");
    let legacy_file: i64 =
        sqlx::query_scalar("SELECT pg_relation_filenode('interaction_logs_legacy')::bigint")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(legacy_file, file, "the old table's rows, not rewritten");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM interaction_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 501);

    // The new release serves on it: a retry of an old event is not stored again, a new one
    // is, and the visitor's old row is attributed on identify.
    let redis = RedisPrefix::new();
    let journal = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_on(database, redis, journal, |_| {}).await;
    let retry = json!({"user_id": 8, "asin": ITEMS[0].0, "event_type": "view",
                       "event_id": legacy_id.to_string()});
    assert_eq!(app.post("/api/event", &retry).await.0, 200);
    assert_eq!(app.post_event(8, ITEMS[2].0, "purchase").await, 200);
    let (status, _) = app
        .post(
            "/api/identify",
            &json!({"anonymous_id": "v-old", "user_id": 9}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("the new event stored and the visitor attributed", || async {
        let (rows, attributed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE anonymous_id = 'v-old' AND user_id = 9) FROM interaction_logs",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        rows == 502 && attributed == 1
    })
    .await;
    // The seed's query, newest first, across the legacy partition and the new ones.
    let newest: Vec<(String, Value)> = sqlx::query_as(
        "SELECT asin, metadata FROM interaction_logs WHERE user_id = 8 ORDER BY ts DESC LIMIT 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(newest[0].0, ITEMS[2].0);
    assert_eq!(newest[1].1["g"], 1);
}
