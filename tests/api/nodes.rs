//! More than one machine, on this one: API nodes (`serve --handoff jetstream --writer off`) and
//! writers (`writer`) as real processes, over a NATS JetStream and a three-master Redis Cluster
//! that each test starts for itself (`scripts/cluster-up`), beside the local PostgreSQL. Each test
//! breaks one piece for real and checks that nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::deployment::{Deployment, USERS, stream, under_load};
use crate::helpers::{ITEMS, Proxy, eventually, postgres_address};
use crate::process::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_two_api_nodes_are_stored_once_by_two_writers() {
    let deployment = Deployment::start(2, 2).await;
    let load = under_load(&deployment, tokio::time::sleep(Duration::from_secs(3))).await;
    assert!(load.acked.len() > 100, "{:?}", load.statuses);
    assert_eq!(load.count(200), load.acked.len(), "{:?}", load.statuses);
    deployment
        .assert_every_acknowledged_event_stored(&load, true)
        .await;
    for writer in &deployment.writers {
        let rows = deployment.metric(writer, "writer_rows_total").await;
        assert!(rows > 0.0, "both writers share the work");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_in_the_middle_of_a_batch_leaves_its_messages_to_the_other() {
    let mut deployment = Deployment::start(2, 1).await;
    // The second writer reaches PostgreSQL through a proxy the test cuts: its batches then hang
    // in the middle, unacknowledged, until it is killed.
    let proxy = Proxy::start(postgres_address()).await;
    let through = deployment
        .database
        .url
        .replace("127.0.0.1:5432", &proxy.address.to_string());
    deployment.start_writer(through).await;
    let killed = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = deployment
            .metric(&deployment.writers[1], "writer_retries_total")
            .await;
        assert!(held > 0.0, "the writer was retrying a batch when killed");
    };
    let load = under_load(&deployment, killed).await;
    deployment.writers[1].kill().await;
    deployment
        .assert_every_acknowledged_event_stored(&load, true)
        .await;
    let redelivered = deployment
        .metric(&deployment.writers[0], "jetstream_redelivered_total")
        .await;
    assert!(
        redelivered > 0.0,
        "the killed writer's messages came to the other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_killed_under_load_loses_no_acknowledged_event() {
    let mut deployment = Deployment::start(2, 2).await;
    let mut victim = deployment.api.remove(0);
    let nodes = vec![victim.base.clone(), deployment.api[0].base.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(stream(nodes, 6, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    victim.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let load = load.await.unwrap();
    assert!(load.acked.len() > 100, "{:?}", load.statuses);
    deployment
        .assert_every_acknowledged_event_stored(&load, false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_10_seconds_gives_503s_loses_nothing_acknowledged_and_recovers() {
    let deployment = Deployment::start(2, 2).await;
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        deployment.cluster.stop_nats();
        tokio::time::sleep(Duration::from_secs(10)).await;
        deployment.cluster.start_nats();
        eventually("the API nodes to take events again", || async {
            let node = &deployment.api[0];
            let event = json!({"user_id": 99, "asin": ITEMS[0].0, "event_type": "view"});
            let response = node
                .http
                .post(format!("{}/api/event", node.base))
                .json(&event)
                .send()
                .await;
            response.is_ok_and(|r| r.status() == 200)
        })
        .await;
    };
    let load = under_load(&deployment, outage).await;
    assert!(
        load.count(503) > 0,
        "503 while NATS is down: {:?}",
        load.statuses
    );
    let others = load
        .statuses
        .keys()
        .filter(|s| **s != 200 && **s != 503)
        .count();
    assert_eq!(others, 0, "only 200 and 503: {:?}", load.statuses);
    deployment
        .assert_every_acknowledged_event_stored(&load, false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_master_gives_context_warnings_while_every_event_is_stored() {
    let deployment = Deployment::start(2, 1).await;
    let port = deployment.cluster.redis_ports[0];
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        deployment.cluster.stop_redis(port);
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let load = under_load(&deployment, outage).await;
    assert_eq!(
        load.statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "Redis is a warning, never a refusal: {:?}",
        load.statuses
    );
    deployment
        .assert_every_acknowledged_event_stored(&load, false)
        .await;
    let mut failures = 0.0;
    for node in &deployment.api {
        failures += deployment.metric(node, "redis_failures_total").await;
    }
    assert!(
        failures > 0.0,
        "the stopped master's users were not updated"
    );

    // Back, the master serves its users' contexts again.
    deployment.cluster.start_redis(port);
    let node = &deployment.api[0];
    let round = AtomicUsize::new(0);
    eventually("every user's context to be updated again", || async {
        let asin = format!("B0BACK{}", round.fetch_add(1, Ordering::Relaxed));
        let mut all = true;
        for user in 1..=USERS {
            let event = json!({"user_id": user, "asin": asin, "event_type": "view"});
            let url = format!("{}/api/event", node.base);
            let _ = node.http.post(&url).json(&event).send().await;
            let context: serde_json::Value = node
                .http
                .get(format!("{}/api/users/{user}/context", node.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            all &= context["recent_items"][0] == asin.as_str();
        }
        all
    })
    .await;
}

/// The p99 of `latencies`, in milliseconds.
fn p99(latencies: &mut [f64]) -> f64 {
    latencies.sort_by(f64::total_cmp);
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Posts events for `users` from 4 clients for `secs` seconds; returns each request's latency
/// (ms) with its user.
async fn timed_load(node: &Service, users: &[i64], secs: u64) -> Vec<(i64, f64)> {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    let clients = (0..4).map(|client| {
        let (http, url) = (node.http.clone(), format!("{}/api/event", node.base));
        let users = users.to_vec();
        tokio::spawn(async move {
            let mut timed = Vec::new();
            let mut i = client;
            while std::time::Instant::now() < until {
                let user = users[i % users.len()];
                i += 4;
                let event = json!({"user_id": user, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view"});
                let started = std::time::Instant::now();
                let response = http.post(&url).json(&event).send().await.unwrap();
                assert_eq!(response.status(), 200);
                timed.push((user, started.elapsed().as_secs_f64() * 1000.0));
            }
            timed
        })
    });
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_redis_master_hanging_the_other_masters_users_are_answered_as_fast_as_before() {
    let deployment = Deployment::start(1, 1).await;
    let node = &deployment.api[0];
    let dead = deployment.cluster.redis_ports[0];
    // Which master holds each user's keys (their hash tag is the user id).
    let client = redis::Client::open(format!("redis://127.0.0.1:{dead}")).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let ranges: Vec<(u16, u16, (String, u16))> = {
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut redis)
            .await
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("{slots:?}")
        };
        ranges
            .iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!()
                };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(n) => *n,
                    _ => panic!(),
                };
                let redis::Value::Array(master) = &parts[2] else {
                    panic!()
                };
                (
                    int(&parts[0]) as u16,
                    int(&parts[1]) as u16,
                    (String::new(), int(&master[1]) as u16),
                )
            })
            .collect()
    };
    let mut on_dead = Vec::new();
    let mut elsewhere = Vec::new();
    for user in 1..=60i64 {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(user.to_string())
            .query_async(&mut redis)
            .await
            .unwrap();
        let port = ranges
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .unwrap()
            .2
            .1;
        if port == dead {
            on_dead.push(user)
        } else {
            elsewhere.push(user)
        }
    }
    assert!(!on_dead.is_empty() && !elsewhere.is_empty());
    let users: Vec<i64> = (1..=60).collect();
    let of = |timed: &[(i64, f64)], set: &[i64]| -> Vec<f64> {
        timed
            .iter()
            .filter(|(u, _)| set.contains(u))
            .map(|(_, ms)| *ms)
            .collect()
    };

    let before = timed_load(node, &users, 3).await;
    deployment.cluster.freeze_redis(dead);
    let after = timed_load(node, &users, 5).await;
    deployment.cluster.thaw_redis(dead);

    let (p99_before, p99_after) = (
        p99(&mut of(&before, &elsewhere)),
        p99(&mut of(&after, &elsewhere)),
    );
    assert!(
        p99_after <= (3.0 * p99_before).max(p99_before + 50.0),
        "the other masters' users: p99 {p99_before:.1} ms before, {p99_after:.1} ms with one master down"
    );
    // The hanging master's users fail at once while its breaker is open, not after the timeout
    // (1 s here) each.
    let mut doomed = of(&after, &on_dead);
    doomed.sort_by(f64::total_cmp);
    let median = doomed[doomed.len() / 2];
    eprintln!(
        "other masters' users: p99 {p99_before:.1} ms before, {p99_after:.1} ms with one down; the down master's users: median {median:.1} ms of {}",
        doomed.len()
    );
    assert!(
        median < 100.0,
        "the hanging master's users: median {median:.1} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_writer_finishes_its_batches_acknowledges_them_and_exits() {
    let mut deployment = Deployment::start(1, 1).await;
    let mut writer = deployment.writers.remove(0);
    let stopped = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        writer.terminate();
        let status = tokio::time::timeout(Duration::from_secs(30), writer.child.wait())
            .await
            .expect("the writer exits in time")
            .unwrap();
        assert!(status.success(), "exit status {status}");
    };
    let load = under_load(&deployment, stopped).await;
    // A new writer takes the rest. Nothing the stopped writer stored comes to it again: it
    // acknowledged every batch it had stored before it exited. (Messages on their way to it when
    // it stopped do come again, after the ack wait; it had not stored them.)
    let database_url = deployment.database.url.clone();
    deployment.start_writer(database_url).await;
    deployment
        .assert_every_acknowledged_event_stored(&load, true)
        .await;
    let stored_again = deployment
        .metric(&deployment.writers[0], "writer_duplicates_total")
        .await;
    assert_eq!(
        stored_again, 0.0,
        "everything the stopped writer stored was acknowledged"
    );
}
