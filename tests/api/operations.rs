//! What an operator meets: readiness that keeps a node in rotation while it can take events,
//! re-deliveries after a crash bounded by what was in flight, background work watched, and
//! start-up errors that say what to do.

use std::process::Stdio;
use std::time::Duration;

use event_ingest::config::WriterSettings;
use event_ingest::secret::SecretUrl;
use event_ingest::startup::WriterNode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::helpers::{
    ITEMS, NatsServer, REDIS_URL, TestApp, TestDatabase, eventually, metric, scrape, seed_catalogue,
};
use crate::process::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_takes_the_node_out_of_rotation_until_postgres_drains_it() {
    let (app, proxy) =
        TestApp::behind_postgres_proxy(|s| s.journal.journal_max_bytes = 64 * 1024).await;
    proxy.cut();
    let mut accepted = 0;
    loop {
        let event = json!({"user_id": 1, "asin": ITEMS[0].0, "event_type": "view",
                           "metadata": {"pad": "x".repeat(500)}});
        let (status, answer) = app.post("/api/event", &event).await;
        if status == 503 {
            assert_eq!(answer["error"]["code"], "overloaded");
            break;
        }
        assert_eq!(status, 200, "{answer}");
        accepted += 1;
        assert!(accepted < 1000, "the journal never filled");
    }
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (503, &json!("not_ready")),
        "{ready}"
    );
    assert!(
        ready["handoff"]["error"].as_str().unwrap().contains("full"),
        "{ready}"
    );
    proxy.restore();
    eventually(
        "the node back in rotation once the journal drains",
        || async { app.get("/health/ready").await.0 == 200 },
    )
    .await;
    app.wait_for_rows(accepted).await;
}

fn writer_settings(database: &TestDatabase, nats: &NatsServer) -> WriterSettings {
    let mut settings = WriterSettings::default();
    settings.database.database_url = SecretUrl::new(&database.url);
    settings.nats.nats_url = SecretUrl::new(nats.url());
    settings.nats.nats_ack_wait_secs = 3;
    settings.port = 0;
    settings.shutdown_timeout_secs = 5;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_node_is_ready_while_it_reaches_nats_and_an_api_node_while_it_can_publish() {
    let mut nats = NatsServer::start();
    let database = TestDatabase::new();
    let pool = event_ingest::db::prepare(&SecretUrl::new(&database.url), 2)
        .await
        .unwrap();
    seed_catalogue(&pool).await;
    let writer = WriterNode::build(writer_settings(&database, &nats))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", writer.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(writer.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let api = TestApp::spawn_with(|s| crate::jetstream::through_jetstream(s, &nats)).await;
    let http = reqwest::Client::new();
    let ready = |base: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("{base}/health/ready"))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    eventually("both nodes ready", || async {
        ready(base.clone()).await.0 == 200 && ready(api.address.clone()).await.0 == 200
    })
    .await;
    nats.stop();
    eventually("both nodes out of rotation with NATS gone", || async {
        let (writer_status, writer_ready) = ready(base.clone()).await;
        let (api_status, api_ready) = ready(api.address.clone()).await;
        writer_status == 503
            && writer_ready["status"] == "not_ready"
            && api_status == 503
            && api_ready["handoff"]["ok"] == false
    })
    .await;
    nats.restart();
    eventually("both nodes back", || async {
        ready(base.clone()).await.0 == 200 && ready(api.address.clone()).await.0 == 200
    })
    .await;
    drop(stop);
    running.await.unwrap().unwrap();
}

/// `serve` on `journal`, against `database`, until it answers.
async fn serve(database: &TestDatabase, journal: &std::path::Path) -> Service {
    Service::start(
        &[
            ("DATABASE_URL", database.url.clone()),
            ("REDIS_URL", REDIS_URL.to_owned()),
            ("REDIS_KEY_PREFIX", format!("test:{}:", database.name)),
            ("JOURNAL_DIR", journal.display().to_string()),
            ("BATCH_INTERVAL_MS", "10".to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ],
        Stdio::null(),
    )
    .await
}

async fn post_events(service: &Service, n: usize) {
    for i in 0..n {
        let body = json!({"user_id": 1 + i % 5, "asin": ITEMS[i % ITEMS.len()].0,
                          "event_type": "view", "event_id": Uuid::new_v4()});
        let response = service
            .http
            .post(format!("{}/api/event", service.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

async fn journal_drained(service: &Service) -> bool {
    let ready: Value = match service
        .http
        .get(format!("{}/health/ready", service.base))
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => return false,
    };
    ready["handoff"]["used_bytes"] == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_drain_re_delivers_nothing_and_one_under_load_only_what_was_in_flight() {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let mut service = serve(&database, journal.path()).await;
    post_events(&service, 300).await;
    eventually("the 300 events stored and released", || {
        journal_drained(&service)
    })
    .await;
    service.kill().await;

    // Restarted: the released position was kept, so nothing stored comes back.
    let mut service = serve(&database, journal.path()).await;
    post_events(&service, 50).await;
    eventually("the 50 more stored", || journal_drained(&service)).await;
    let scraped = scrape(&service.http, &service.base).await;
    assert_eq!(
        metric(&scraped, "writer_duplicates_total"),
        0.0,
        "re-delivered after a drain"
    );
    assert_eq!(metric(&scraped, "writer_rows_total"), 50.0);

    // Killed under load: at most what the writer held (two batches of up to 5,000) comes back.
    let load = {
        let (http, base) = (service.http.clone(), service.base.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"user_id": 1 + i % 5, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view"});
                if http
                    .post(format!("{base}/api/event"))
                    .json(&body)
                    .send()
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    service.kill().await;
    let _ = load.await;
    let service = serve(&database, journal.path()).await;
    eventually("the backlog stored", || journal_drained(&service)).await;
    let scraped = scrape(&service.http, &service.base).await;
    let duplicates = metric(&scraped, "writer_duplicates_total");
    assert!(duplicates <= 10_000.0, "{duplicates} re-delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_background_task_is_a_component_the_registry_watches() {
    let app = TestApp::spawn_with(|s| s.edge.rate_limit_per_ip = 100).await;
    let (_, ready) = app.get("/health/ready").await;
    for component in [
        "journal-appender",
        "writer",
        "redis-context",
        "metrics-upkeep",
        "dependency-probe",
        "rate-limiter-upkeep",
        "partitions",
    ] {
        assert_eq!(
            ready["components"][component]["status"], "running",
            "{component}: {ready}"
        );
    }
    let nats = NatsServer::start();
    let streamed = TestApp::spawn_with(|s| crate::jetstream::through_jetstream(s, &nats)).await;
    let (_, ready) = streamed.get("/health/ready").await;
    assert_eq!(
        ready["components"]["jetstream-streams"]["status"], "running",
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_writes_are_timed_from_their_start() {
    let app = TestApp::spawn().await;
    // PostgreSQL refuses one item: its batch is written one event at a time.
    sqlx::query(
        "ALTER TABLE interaction_logs ADD CONSTRAINT no_books CHECK (asin <> 'B0TESTBOOK')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"user_id": 1, "asin": ITEMS[i % 5].0, "event_type": "view"}))
        .collect();
    let (status, answer) = app.post("/api/events", &json!({"events": events})).await;
    assert_eq!(status, 200, "{answer}");
    app.wait_for_rows(16).await;
    let scraped = scrape(&app.http, &app.address).await;
    let (sum, count) = (
        metric(&scraped, "writer_batch_seconds_sum"),
        metric(&scraped, "writer_batch_seconds_count"),
    );
    assert!(count >= 16.0, "{count} writes timed");
    // A write is a PostgreSQL transaction: well over 50 microseconds; a clock read twice in a
    // row (the bug) is far under.
    assert!(sum / count > 50e-6, "{} s a write", sum / count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_redis_urls_without_redis_cluster_is_an_error_that_says_so() {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-ingest"))
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env(
            "REDIS_URL",
            "redis://127.0.0.1:7001,redis://:sesame@127.0.0.1:7002",
        )
        .env("JOURNAL_DIR", journal.path())
        .env("PORT", crate::helpers::free_port().to_string())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(1));
    assert!(stderr.contains("REDIS_CLUSTER=true"), "{stderr}");
    assert!(!stderr.contains("sesame"), "{stderr}");
}
