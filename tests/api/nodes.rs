//! More than one machine, on this one: API nodes (`serve --handoff jetstream --writer off`) and
//! writers (`writer`) as real processes, over a NATS JetStream and a three-master Redis Cluster
//! that each test starts for itself (`scripts/cluster-up`), beside the local PostgreSQL. Each test
//! breaks one piece for real and checks that nothing acknowledged is lost.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use event_ingest::context::Keys;
use event_ingest::event::{Actor, UserId};
use event_ingest::secret::SecretUrl;
use redis::AsyncCommands;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{
    ITEMS, Proxy, TestDatabase, eventually, metric, postgres_address, scrape, seed_catalogue,
};
use crate::process::Service;

/// The engines of `scripts/cluster-up`, in a directory of the test's own; stopped when dropped.
struct Cluster {
    dir: PathBuf,
    nats_url: String,
    redis_url: String,
    redis_ports: Vec<u16>,
}

impl Cluster {
    fn up() -> Self {
        let dir = std::env::temp_dir().join(format!("event-ingest-cluster-{}", Uuid::new_v4()));
        let output = std::process::Command::new(script("cluster-up"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/cluster-up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let env = String::from_utf8(output.stdout).unwrap();
        let value = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {env}"))
                .to_owned()
        };
        Self {
            nats_url: value("NATS_URL"),
            redis_url: value("REDIS_URL"),
            redis_ports: value("REDIS_PORTS")
                .trim_matches('"')
                .split(' ')
                .map(|p| p.parse().unwrap())
                .collect(),
            dir,
        }
    }

    /// Kills the NATS server (SIGKILL).
    fn stop_nats(&self) {
        let pid = std::fs::read_to_string(self.dir.join("nats.pid")).unwrap();
        run("kill", &["-KILL", pid.trim()]);
    }

    fn start_nats(&self) {
        run(self.dir.join("nats-start").to_str().unwrap(), &[]);
    }

    /// Stops one master of the Redis Cluster.
    fn stop_redis(&self, port: u16) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "shutdown", "nosave"])
            .output();
    }

    /// Freezes one master (SIGSTOP): its connections stay open and nothing answers, as when its
    /// machine hangs or the network drops its packets.
    fn freeze_redis(&self, port: u16) {
        self.signal_redis(port, "-STOP");
    }

    fn thaw_redis(&self, port: u16) {
        self.signal_redis(port, "-CONT");
    }

    fn signal_redis(&self, port: u16, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join(format!("redis-{port}.pid"))).unwrap();
        run("kill", &[signal, pid.trim()]);
    }

    fn start_redis(&self, port: u16) {
        let config = self.dir.join(format!("redis-{port}.conf"));
        run("redis-server", &[config.to_str().unwrap()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script("cluster-down"))
            .arg(&self.dir)
            .status();
    }
}

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// A deployment: a cluster, a database with the test catalogue, API nodes and writers.
struct Deployment {
    cluster: Cluster,
    database: TestDatabase,
    pool: sqlx::PgPool,
    prefix: String,
    api: Vec<Service>,
    writers: Vec<Service>,
}

impl Deployment {
    async fn start(api_nodes: usize, writers: usize) -> Self {
        let cluster = Cluster::up();
        let database = TestDatabase::new();
        let pool = event_ingest::db::prepare(&SecretUrl::new(&database.url), 4)
            .await
            .unwrap();
        seed_catalogue(&pool).await;
        let mut deployment = Self {
            prefix: format!("test:{}:", Uuid::new_v4().simple()),
            cluster,
            database,
            pool,
            api: Vec::new(),
            writers: Vec::new(),
        };
        for _ in 0..api_nodes {
            deployment.start_api_node().await;
        }
        for _ in 0..writers {
            let database_url = deployment.database.url.clone();
            deployment.start_writer(database_url).await;
        }
        for node in deployment.api.iter().chain(&deployment.writers) {
            eventually(
                "every node to be ready (NATS connected, streams in place)",
                || async {
                    let ready = node
                        .http
                        .get(format!("{}/health/ready", node.base))
                        .send()
                        .await;
                    ready.is_ok_and(|r| r.status() == 200)
                },
            )
            .await;
        }
        deployment
    }

    fn env(&self, database_url: String) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", database_url),
            ("NATS_URL", self.cluster.nats_url.clone()),
            ("NATS_ACK_WAIT_SECS", "3".to_owned()),
            ("REDIS_URL", self.cluster.redis_url.clone()),
            ("REDIS_CLUSTER", "true".to_owned()),
            ("REDIS_KEY_PREFIX", self.prefix.clone()),
            // A debug build on a busy machine; the context is checked.
            ("REDIS_TIMEOUT_MS", "1000".to_owned()),
            ("BATCH_INTERVAL_MS", "20".to_owned()),
            ("RETRY_PARKED_MS", "500".to_owned()),
            ("RUST_LOG", "warn,redis::cluster_handling=error".to_owned()),
        ]
    }

    async fn start_api_node(&mut self) {
        let mut env = self.env(self.database.url.clone());
        env.extend([
            ("HANDOFF", "jetstream".to_owned()),
            ("WRITER", "off".to_owned()),
        ]);
        let node = Service::start_command("serve", &env, Stdio::inherit()).await;
        self.api.push(node);
    }

    async fn start_writer(&mut self, database_url: String) {
        let env = self.env(database_url);
        let writer = Service::start_command("writer", &env, Stdio::inherit()).await;
        self.writers.push(writer);
    }

    /// The stored events of the load's users.
    async fn stored(&self) -> HashSet<Uuid> {
        sqlx::query_scalar("SELECT event_id FROM interaction_logs WHERE user_id <= $1")
            .bind(USERS)
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// Waits until PostgreSQL holds every acknowledged event; then checks it holds no other event
    /// but those whose answer was unclear (lost with a killed node, or a 503 after JetStream did
    /// not acknowledge in time: the message may have been stored meanwhile, which a client's
    /// retry with the same event id makes harmless), and that Redis counted each acknowledged
    /// event once (when `context` is whole: no Redis node was stopped).
    async fn assert_every_acknowledged_event_stored(&self, load: &Load, context: bool) {
        let acked: HashSet<Uuid> = load.acked.iter().map(|(id, _)| *id).collect();
        eventually(
            format!("{} acknowledged events stored", acked.len()),
            || async { self.stored().await.is_superset(&acked) },
        )
        .await;
        let stored = self.stored().await;
        assert!(
            stored.difference(&acked).count() <= load.unanswered + load.count(503),
            "only events whose answer was unclear may be stored unacknowledged"
        );
        if context {
            let mut redis =
                event_ingest::context::connect(&SecretUrl::new(&self.cluster.redis_url), true)
                    .await
                    .unwrap();
            let keys = Keys {
                prefix: self.prefix.clone(),
                hash_tags: true,
            };
            for (user, events) in load.per_user() {
                let key = keys.key(
                    &Actor::User(UserId::new(user).unwrap()),
                    "recent_categories",
                );
                let counts: BTreeMap<String, i64> = redis.hgetall(&key).await.unwrap();
                assert_eq!(counts.values().sum::<i64>(), events, "{key}");
            }
        }
    }

    async fn metric(&self, node: &Service, name: &str) -> f64 {
        metric(&scrape(&node.http, &node.base).await, name)
    }
}

/// What a stream of events saw.
#[derive(Default)]
struct Load {
    /// Events answered 200, with their user.
    acked: Vec<(Uuid, i64)>,
    statuses: BTreeMap<u16, usize>,
    /// Requests whose answer never came (the node was killed): their event may be stored.
    unanswered: usize,
}

impl Load {
    fn per_user(&self) -> BTreeMap<i64, i64> {
        let mut per_user = BTreeMap::new();
        for (_, user) in &self.acked {
            *per_user.entry(*user).or_default() += 1;
        }
        per_user
    }

    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// The load's users are 1 to this.
const USERS: i64 = 40;

/// Streams events at the API nodes from `senders` clients until `stop`: each client sends to
/// the nodes in turn, as behind a load balancer. Users are 1 to [`USERS`]; every test item has a
/// category.
async fn stream(nodes: Vec<String>, senders: usize, stop: Arc<AtomicBool>) -> Load {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let turn = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let (http, nodes, stop, turn) = (http.clone(), nodes.clone(), stop.clone(), turn.clone());
            tokio::spawn(async move {
                let mut seen = Load::default();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = Uuid::new_v4();
                    let user = 1 + (sender as i64 * 7 + i as i64) % USERS;
                    let body = json!({"user_id": user, "asin": ITEMS[i % ITEMS.len()].0, "event_type": "view", "event_id": id});
                    i += 1;
                    let node = &nodes[turn.fetch_add(1, Ordering::Relaxed) % nodes.len()];
                    match http.post(format!("{node}/api/event")).json(&body).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            *seen.statuses.entry(status).or_default() += 1;
                            if status == 200 {
                                seen.acked.push((id, user));
                            } else {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                        Err(error) => {
                            // Refused at once: nothing was sent. Otherwise the answer is lost.
                            if !error.is_connect() {
                                seen.unanswered += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Load::default();
    for task in tasks {
        let seen = task.await.unwrap();
        all.acked.extend(seen.acked);
        all.unanswered += seen.unanswered;
        for (status, n) in seen.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
    }
    all
}

/// Streams while `during` runs, then a second more.
async fn under_load(deployment: &Deployment, during: impl Future<Output = ()>) -> Load {
    let nodes = deployment.api.iter().map(|n| n.base.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(stream(nodes, 6, stop.clone()));
    during.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap()
}

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
