//! Nothing acknowledged is lost while a dependency is down under a stream of events.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{ITEMS, TestApp};

/// What a stream of events saw: the ids that got a 200, and every status.
#[derive(Default)]
struct Stream {
    acked: Vec<Uuid>,
    statuses: BTreeMap<u16, usize>,
}

/// Posts events from `senders` concurrent clients until `stop` is set.
async fn stream_until(app: &TestApp, senders: usize, stop: Arc<AtomicBool>) -> Stream {
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let (http, url, stop) = (app.http.clone(), format!("{}/api/event", app.address), stop.clone());
            tokio::spawn(async move {
                let mut seen = Stream::default();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = Uuid::new_v4();
                    let body = json!({"user_id": 1 + sender, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view", "event_id": id});
                    i += 1;
                    let status = http.post(&url).json(&body).send().await.unwrap().status().as_u16();
                    *seen.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        seen.acked.push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Stream::default();
    for task in tasks {
        let seen = task.await.unwrap();
        all.acked.extend(seen.acked);
        for (status, n) in seen.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
    }
    all
}

async fn assert_stored_exactly_once(app: &TestApp, acked: &[Uuid]) {
    app.wait_for_rows(acked.len() as i64).await;
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM interaction_logs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), acked.len());
    assert_eq!(
        stored.into_iter().collect::<HashSet<_>>(),
        acked.iter().copied().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_30_seconds_under_load_loses_nothing() {
    let (app, proxy) = TestApp::behind_postgres_proxy(|_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = stream_until(&app, 8, stop.clone());
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(30)).await;
        proxy.restore();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (seen, ()) = tokio::join!(load, outage);
    let failures: usize = seen
        .statuses
        .iter()
        .filter(|(s, _)| **s != 200 && **s != 503)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        failures, 0,
        "only 200 and the documented 503: {:?}",
        seen.statuses
    );
    assert!(
        seen.acked.len() > 1000,
        "a real stream: {:?}",
        seen.statuses
    );
    assert_stored_exactly_once(&app, &seen.acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_under_load_still_answers_200_and_postgres_gets_everything() {
    let (app, proxy) = TestApp::behind_redis_proxy().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = stream_until(&app, 8, stop.clone());
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.restore();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (seen, ()) = tokio::join!(load, outage);
    assert_eq!(
        seen.statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{:?}",
        seen.statuses
    );
    assert_stored_exactly_once(&app, &seen.acked).await;
}
