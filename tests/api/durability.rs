//! Nothing acknowledged is lost while a dependency is down under a stream of events.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{ITEMS, TestApp};

/// What a stream of events saw: the ids that got a 200 (and their user), and every status.
#[derive(Default)]
struct Stream {
    acked: Vec<Uuid>,
    acked_per_user: BTreeMap<i64, i64>,
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
                    let user = 1 + sender as i64;
                    let body = json!({"user_id": user, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view", "event_id": id});
                    i += 1;
                    let status = http.post(&url).json(&body).send().await.unwrap().status().as_u16();
                    *seen.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        seen.acked.push(id);
                        *seen.acked_per_user.entry(user).or_default() += 1;
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
        all.acked_per_user.extend(seen.acked_per_user);
        for (status, n) in seen.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
    }
    all
}

/// Every acknowledged event is in PostgreSQL (`UNIQUE (event_id)` rules out duplicates there),
/// and nothing else is.
async fn assert_every_acknowledged_event_stored(app: &TestApp, acked: &[Uuid]) {
    app.wait_for_rows(acked.len() as i64).await;
    let stored: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM interaction_logs")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored, acked.iter().copied().collect::<HashSet<_>>());
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
    assert_every_acknowledged_event_stored(&app, &seen.acked).await;
    // Events during the outage skipped Redis; none was counted twice.
    for (user, acked) in &seen.acked_per_user {
        let counted = app.counted_in_redis(*user).await;
        assert!(
            counted > 0 && counted < *acked,
            "user {user}: {counted} of {acked}"
        );
    }
}

/// Events journaled as JSON by a build before the journal's binary form are stored after an
/// upgrade, beside the events the new build journals.
#[tokio::test]
async fn json_records_left_in_the_journal_by_an_older_build_are_stored() {
    let old = [
        // As written before visitors and event times existed, and after.
        json!({"event_id": Uuid::now_v7(), "user_id": 1, "asin": ITEMS[0].0, "event_type": "view",
               "metadata": {"page": "old"}, "received_at": "2026-11-29T07:12:01.123456Z"}),
        json!({"event_id": Uuid::now_v7(), "user_id": 2, "asin": ITEMS[1].0, "event_type": "purchase",
               "metadata": null, "received_at": "2026-11-29T07:12:01Z", "ts": "2026-11-29T07:11:58.412Z"}),
    ];
    let app = TestApp::spawn_with(|settings| {
        let mut segment = Vec::new();
        for record in &old {
            let payload = serde_json::to_vec(record).unwrap();
            event_ingest::handoff::journal::record::encode(&payload, &mut segment).unwrap();
        }
        std::fs::write(
            settings.journal.journal_dir.join(format!("{:020}.log", 0)),
            segment,
        )
        .unwrap();
    })
    .await;
    assert_eq!(app.post_event(3, ITEMS[2].0, "click").await, 200);
    app.wait_for_rows(3).await;
    for record in &old {
        let ts: chrono::NaiveDateTime =
            sqlx::query_scalar("SELECT ts FROM interaction_logs WHERE event_id = $1")
                .bind(Uuid::parse_str(record["event_id"].as_str().unwrap()).unwrap())
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let expected = record.get("ts").unwrap_or(&record["received_at"]);
        assert_eq!(
            ts.and_utc(),
            expected
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        );
    }
}
