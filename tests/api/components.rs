//! A background component that dies is noticed: readiness names it, liveness turns red, and the
//! service stops with an error (a non-zero exit) within seconds. The deaths are injected with
//! fail points, so these tests exist only with `--features failpoints` (`--all-features`); fail
//! points are process-wide, which nextest's process per test keeps apart.

use std::time::Duration;

use event_ingest::context;
use event_ingest::handoff::journal::APPENDER;
use event_ingest::writer;

use crate::helpers::{ITEMS, TestApp, eventually};

/// Makes the fail point `component` panic, wakes every component with one event, and checks
/// what an operator sees. Returns the event's status.
async fn kill(component: &str) -> u16 {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.post_event(1, ITEMS[0].0, "view").await, 200);
    app.wait_for_rows(1).await;

    fail::cfg(component, "panic(injected for a test)").unwrap();
    let status = app.post_event(1, ITEMS[1].0, "view").await;

    eventually(
        format!("readiness to name the dead {component}"),
        || async {
            let (status, ready) = app.get("/health/ready").await;
            status == 503
                && ready["status"] == "dead"
                && ready["components"][component]["status"] == "dead"
                && ready["components"][component]["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("injected for a test"))
        },
    )
    .await;
    let (live, body) = app.get("/health/live").await;
    assert_eq!(live, 503, "{body}");
    assert!(body["dead"].as_str().unwrap().contains(component), "{body}");

    let stopped = tokio::time::timeout(Duration::from_secs(15), &mut app.running)
        .await
        .expect("the service stops within seconds")
        .unwrap();
    let error = stopped.expect_err("the run ends in an error, for a non-zero exit");
    assert!(error.to_string().contains(component), "{error}");
    fail::remove(component);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_journal_appender_refuses_events_and_stops_the_service() {
    assert_eq!(kill(APPENDER).await, 503, "an event it cannot make durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writer_is_named_and_stops_the_service() {
    assert_eq!(
        kill(writer::COMPONENT).await,
        200,
        "the journal still takes events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_context_task_is_named_and_stops_the_service() {
    assert_eq!(
        kill(context::COMPONENT).await,
        200,
        "Redis is a warning, not a refusal"
    );
}
