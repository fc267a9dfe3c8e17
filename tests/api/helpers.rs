//! The test harness: an isolated app per test, a cuttable TCP proxy, and waiting with deadlines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_ingest::config::Settings;
use event_ingest::secret::SecretUrl;
use event_ingest::startup::Application;
use redis::AsyncCommands;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// A port where nothing listens.
pub const DEAD_REDIS_URL: &str = "redis://127.0.0.1:9";

/// The server's address, without a database: tests add their own.
pub fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Items the test catalogue always holds: (asin, category, brand).
pub const ITEMS: [(&str, &str, &str); 5] = [
    ("B0TESTPHON", "Cell Phones & Accessories", "Apple"),
    ("B0TESTCASE", "Cell Phones & Accessories", "Spigen"),
    ("B0TESTBOOK", "Books", "Penguin"),
    ("B0TESTLEGO", "Toys & Games", "LEGO"),
    ("B0TESTCHRG", "Cell Phones & Accessories", "Anker"),
];
/// An item with no product row: no category, no brand.
pub const BARE_ITEM: &str = "B0TESTBARE";

/// A database of its own, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn new() -> Self {
        let name = format!("ei_test_{}", Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url());
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(pool) = event_ingest::db::connect(
                    &SecretUrl::new(format!("{}/postgres", server_url())),
                    1,
                )
                .await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// A unique Redis key prefix, whose keys are deleted when this is dropped.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(format!("test:{}:", Uuid::new_v4().simple()))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(REDIS_URL) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub prefix: String,
    pub settings: Settings,
    /// The app's run: it ends with the app, on shutdown or when a background component dies.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))] // read by the fail point tests
    pub running: JoinHandle<anyhow::Result<()>>,
    // Dropping the sender starts the app's graceful shutdown.
    _stop: oneshot::Sender<()>,
    // Dropped last, in this order: the journal directory, the Redis keys, the database.
    _journal: tempfile::TempDir,
    _redis: RedisPrefix,
    _database: TestDatabase,
}

/// Settings for a test: a free port, its own database, prefix and journal, short batching.
pub fn test_settings(
    database: &TestDatabase,
    prefix: &RedisPrefix,
    journal: &tempfile::TempDir,
) -> Settings {
    let mut settings = Settings::default();
    settings.database.database_url = SecretUrl::new(&database.url);
    settings.redis.redis_url = SecretUrl::new(REDIS_URL);
    settings.redis.redis_key_prefix = prefix.0.clone();
    settings.journal.journal_dir = journal.path().to_path_buf();
    settings.port = 0;
    settings.writer.batch_interval_ms = 10;
    // A debug build on a busy machine can miss the default 50 ms, and the context would then be
    // skipped (by design); tests that read it need it written. Fault tests set their own.
    settings.context.redis_timeout_ms = 1000;
    settings.writer.retry_base_ms = 20;
    settings.writer.retry_parked_ms = 200;
    settings.shutdown_timeout_secs = 10;
    settings
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The app reaching PostgreSQL through a proxy the test can cut.
    pub async fn behind_postgres_proxy(adjust: impl FnOnce(&mut Settings)) -> (Self, Proxy) {
        let proxy = Proxy::start(postgres_address()).await;
        let app = Self::spawn_with(|s| {
            s.database.database_url =
                SecretUrl::new(through(&proxy, s.database.database_url.expose()));
            adjust(s);
        })
        .await;
        (app, proxy)
    }

    /// The app reaching Redis through a proxy the test can cut.
    pub async fn behind_redis_proxy() -> (Self, Proxy) {
        let proxy = Proxy::start(redis_address()).await;
        let app = Self::spawn_with(|s| {
            s.redis.redis_url = SecretUrl::new(format!("redis://{}", proxy.address))
        })
        .await;
        (app, proxy)
    }

    /// Starts the app with the test settings, adjusted by `adjust`, and a small catalogue.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let database = TestDatabase::new();
        // Seed through a direct connection, whatever the app's own URL (a proxy, say).
        let pool = event_ingest::db::prepare(&SecretUrl::new(&database.url), 4)
            .await
            .expect("test database");
        seed_catalogue(&pool).await;
        Self::spawn_on(
            database,
            RedisPrefix::new(),
            tempfile::tempdir().unwrap(),
            adjust,
        )
        .await
    }

    /// Starts the app on a database made already (its catalogue in place), with the test
    /// settings adjusted by `adjust`.
    pub async fn spawn_on(
        database: TestDatabase,
        redis: RedisPrefix,
        journal: tempfile::TempDir,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(&database, &redis, &journal);
        adjust(&mut settings);
        let pool = event_ingest::db::connect(&SecretUrl::new(&database.url), 4)
            .await
            .expect("test database");
        let app = Application::build(settings.clone())
            .await
            .expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel();
        let running = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            http: reqwest::Client::new(),
            pool,
            prefix: redis.0.clone(),
            settings,
            running,
            _stop: stop,
            _journal: journal,
            _redis: redis,
            _database: database,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("the request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts JSON and returns the whole response, headers included.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.address)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("the request is sent")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_event(&self, user_id: i64, asin: &str, event_type: &str) -> u16 {
        let body = json!({"user_id": user_id, "asin": asin, "event_type": event_type});
        self.post("/api/event", &body).await.0
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub fn key(&self, user_id: i64, name: &str) -> String {
        format!("{}user:{user_id}:{name}", self.prefix)
    }

    /// Every key this test's app has written to Redis.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut redis = self.redis().await;
        let mut keys: Vec<String> = redis.keys(format!("{}*", self.prefix)).await.unwrap();
        keys.sort();
        keys
    }

    /// How many events Redis counted for the user (the sum of `recent_categories`; every test
    /// item but the bare one has a category).
    pub async fn counted_in_redis(&self, user_id: i64) -> i64 {
        let mut redis = self.redis().await;
        let counts: std::collections::HashMap<String, i64> = redis
            .hgetall(self.key(user_id, "recent_categories"))
            .await
            .unwrap();
        counts.values().sum()
    }

    /// Waits until `interaction_logs` holds `n` rows; panics after 20 s.
    pub async fn wait_for_rows(&self, n: i64) {
        let pool = self.pool.clone();
        eventually(format!("{n} rows in interaction_logs"), || {
            let pool = pool.clone();
            async move {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM interaction_logs")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1);
                count == n
            }
        })
        .await;
    }
}

/// Fills the test catalogue: [`ITEMS`] and [`BARE_ITEM`].
pub async fn seed_catalogue(pool: &PgPool) {
    for (asin, category, brand) in ITEMS {
        sqlx::query("INSERT INTO items (asin) VALUES ($1)")
            .bind(asin)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO products (asin, title, main_category, raw_metadata) VALUES ($1, $1, $2, $3)")
            .bind(asin)
            .bind(category)
            .bind(json!({"brand": brand}))
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO items (asin) VALUES ($1)")
        .bind(BARE_ITEM)
        .execute(pool)
        .await
        .unwrap();
}

/// Polls `condition` every 20 ms until it holds; panics after 20 s, naming what it waited for.
pub async fn eventually<F, Fut>(what: impl std::fmt::Display, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a real server that a test can cut and restore, to break one
/// dependency without disturbing the server other tests share.
pub struct Proxy {
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    cut_now: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cut_now = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (cut, cut_now) = (cut.clone(), cut_now.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let cut_now = cut_now.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = cut_now.notified() => {}
                        }
                    });
                }
            }
        });
        Self {
            address,
            cut,
            cut_now,
            task,
        }
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cut_now.notify_waiters();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `redis-server` of the test's own, on a free port, keeping nothing; killed when dropped. For
/// faults that would disturb the shared one (`CLIENT PAUSE`).
pub struct RedisServer {
    pub port: u16,
    process: std::process::Child,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let process = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, process }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Holds every client's commands for `millis`: Redis answers, late.
    pub async fn pause(&self, millis: u64) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(millis)
            .arg("ALL")
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The error that stops the start of an app with the test settings adjusted by `adjust`, with
/// its causes (`{:#}`); panics if it starts.
pub async fn refused_start(adjust: impl FnOnce(&mut Settings)) -> String {
    let (database, redis, journal) = (
        TestDatabase::new(),
        RedisPrefix::new(),
        tempfile::tempdir().unwrap(),
    );
    let mut settings = test_settings(&database, &redis, &journal);
    adjust(&mut settings);
    let error = Application::build(settings)
        .await
        .err()
        .expect("the start is refused");
    format!("{error:#}")
}

/// An app on a Redis of its own (to pause it without disturbing other tests), with `adjust`
/// applied.
pub async fn with_own_redis(adjust: impl FnOnce(&mut Settings)) -> (TestApp, RedisServer) {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|s| {
        s.redis.redis_url = SecretUrl::new(url);
        adjust(s);
    })
    .await;
    (app, redis)
}

/// The local PostgreSQL server's address.
pub fn postgres_address() -> SocketAddr {
    "127.0.0.1:5432".parse().unwrap()
}

/// The local Redis server's address.
pub fn redis_address() -> SocketAddr {
    "127.0.0.1:6379".parse().unwrap()
}

/// `url` (of the local PostgreSQL server) rewritten to go through `proxy`.
pub fn through(proxy: &Proxy, url: &str) -> String {
    url.replace("127.0.0.1:5432", &proxy.address.to_string())
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server` with JetStream of the test's own, on a free port, with its store in a
/// directory of its own; killed when dropped. It can be stopped and started again on the same
/// port and store.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
            process: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the server (again), and waits until it takes connections.
    pub fn restart(&mut self) {
        self.stop();
        let process = std::process::Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package) runs");
        self.process = Some(process);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus scrape of the service at `base`.
pub async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The sum of a metric's series in a scrape (0 if it has none).
pub fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
