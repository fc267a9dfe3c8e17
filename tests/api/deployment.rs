//! A deployment of several machines on this one, for `nodes.rs`: NATS and a three-master Redis
//! Cluster of their own (`scripts/cluster-up`), API nodes and writers as processes, and a stream
//! of events at them.

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

use crate::helpers::{ITEMS, TestDatabase, eventually, metric, scrape, seed_catalogue};
use crate::process::Service;

/// The engines of `scripts/cluster-up`, in a directory of the test's own; stopped when dropped.
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    pub(crate) nats_url: String,
    pub(crate) redis_url: String,
    pub(crate) redis_ports: Vec<u16>,
}

impl Cluster {
    pub(crate) fn up() -> Self {
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
    pub(crate) fn stop_nats(&self) {
        let pid = std::fs::read_to_string(self.dir.join("nats.pid")).unwrap();
        run("kill", &["-KILL", pid.trim()]);
    }

    pub(crate) fn start_nats(&self) {
        run(self.dir.join("nats-start").to_str().unwrap(), &[]);
    }

    /// Stops one master of the Redis Cluster.
    pub(crate) fn stop_redis(&self, port: u16) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "shutdown", "nosave"])
            .output();
    }

    /// Freezes one master (SIGSTOP): its connections stay open and nothing answers, as when its
    /// machine hangs or the network drops its packets.
    pub(crate) fn freeze_redis(&self, port: u16) {
        self.signal_redis(port, "-STOP");
    }

    pub(crate) fn thaw_redis(&self, port: u16) {
        self.signal_redis(port, "-CONT");
    }

    pub(crate) fn signal_redis(&self, port: u16, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join(format!("redis-{port}.pid"))).unwrap();
        run("kill", &[signal, pid.trim()]);
    }

    pub(crate) fn start_redis(&self, port: u16) {
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

pub(crate) fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// A deployment: a cluster, a database with the test catalogue, API nodes and writers.
pub(crate) struct Deployment {
    pub(crate) cluster: Cluster,
    pub(crate) database: TestDatabase,
    pub(crate) pool: sqlx::PgPool,
    pub(crate) prefix: String,
    pub(crate) api: Vec<Service>,
    pub(crate) writers: Vec<Service>,
}

impl Deployment {
    pub(crate) async fn start(api_nodes: usize, writers: usize) -> Self {
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

    pub(crate) fn env(&self, database_url: String) -> Vec<(&'static str, String)> {
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

    pub(crate) async fn start_api_node(&mut self) {
        let mut env = self.env(self.database.url.clone());
        env.extend([
            ("HANDOFF", "jetstream".to_owned()),
            ("WRITER", "off".to_owned()),
        ]);
        let node = Service::start_command("serve", &env, Stdio::inherit()).await;
        self.api.push(node);
    }

    pub(crate) async fn start_writer(&mut self, database_url: String) {
        let env = self.env(database_url);
        let writer = Service::start_command("writer", &env, Stdio::inherit()).await;
        self.writers.push(writer);
    }

    /// The stored events of the load's users.
    pub(crate) async fn stored(&self) -> HashSet<Uuid> {
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
    pub(crate) async fn assert_every_acknowledged_event_stored(&self, load: &Load, context: bool) {
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

    pub(crate) async fn metric(&self, node: &Service, name: &str) -> f64 {
        metric(&scrape(&node.http, &node.base).await, name)
    }
}

/// What a stream of events saw.
#[derive(Default)]
pub(crate) struct Load {
    /// Events answered 200, with their user.
    pub(crate) acked: Vec<(Uuid, i64)>,
    pub(crate) statuses: BTreeMap<u16, usize>,
    /// Requests whose answer never came (the node was killed): their event may be stored.
    pub(crate) unanswered: usize,
}

impl Load {
    pub(crate) fn per_user(&self) -> BTreeMap<i64, i64> {
        let mut per_user = BTreeMap::new();
        for (_, user) in &self.acked {
            *per_user.entry(*user).or_default() += 1;
        }
        per_user
    }

    pub(crate) fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// The load's users are 1 to this.
pub(crate) const USERS: i64 = 40;

/// Streams events at the API nodes from `senders` clients until `stop`: each client sends to
/// the nodes in turn, as behind a load balancer. Users are 1 to [`USERS`]; every test item has a
/// category.
pub(crate) async fn stream(nodes: Vec<String>, senders: usize, stop: Arc<AtomicBool>) -> Load {
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
pub(crate) async fn under_load(deployment: &Deployment, during: impl Future<Output = ()>) -> Load {
    let nodes = deployment.api.iter().map(|n| n.base.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(stream(nodes, 6, stop.clone()));
    during.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap()
}
