//! The real binary as a process: SIGTERM with a backlog, start-up errors, its logs.

use std::process::{Command, Stdio};
use std::time::Duration;

use event_ingest::secret::SecretUrl;
use serde_json::json;
use tokio::process::Child;

use crate::helpers::{ITEMS, REDIS_URL, TestDatabase, eventually, free_port};

/// `event-ingest serve` (or another command) with `env`, listening (this waits until it
/// answers).
pub struct Service {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Service {
    pub async fn start(env: &[(&str, String)], stderr: Stdio) -> Self {
        Self::start_command("serve", env, stderr).await
    }

    pub async fn start_command(command: &str, env: &[(&str, String)], stderr: Stdio) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-ingest"))
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually("the service to listen", || async {
            let health = format!("{}/health/live", service.base);
            service.http.get(health).send().await.is_ok()
        })
        .await;
        service
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub async fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait().await;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_backlog_exits_only_after_storing_every_accepted_event() {
    let database = TestDatabase::new();
    let journal = tempfile::tempdir().unwrap();
    let mut service = Service::start(
        &[
            ("DATABASE_URL", database.url.clone()),
            ("REDIS_URL", REDIS_URL.to_owned()),
            ("REDIS_KEY_PREFIX", format!("test:{}:", database.name)),
            ("JOURNAL_DIR", journal.path().display().to_string()),
            // Batches that would wait a minute to fill: the events sit in the journal until SIGTERM.
            ("BATCH_SIZE", "50000".to_owned()),
            ("BATCH_INTERVAL_MS", "60000".to_owned()),
        ],
        Stdio::inherit(),
    )
    .await;
    let (http, base) = (service.http.clone(), service.base.clone());

    let posts = (0..200).map(|i| {
        let http = http.clone();
        let url = format!("{base}/api/event");
        async move {
            let body = json!({"user_id": 1 + i % 7, "asin": ITEMS[i as usize % ITEMS.len()].0, "event_type": "view"});
            http.post(url).json(&body).send().await.unwrap().status().as_u16()
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 200));

    let pool = event_ingest::db::connect(&SecretUrl::new(&database.url), 1)
        .await
        .unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM interaction_logs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        count().await,
        0,
        "the backlog is still waiting when SIGTERM comes"
    );

    service.terminate();
    let status = tokio::time::timeout(Duration::from_secs(30), service.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(count().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_at_start_up_is_one_clear_error_line_and_exit_code_1() {
    let journal = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-ingest"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://app:secret@127.0.0.1:9/events")
        .env("JOURNAL_DIR", journal.path())
        .env("PORT", free_port().to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    // Besides the settings, logged at start-up.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("INFO")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "error: PostgreSQL at postgres://app:***@127.0.0.1:9/events is unreachable"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password is never shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_the_settings_and_never_a_secret() {
    let database = TestDatabase::new();
    // The same database through a URL with a password (trust authentication ignores it).
    let with_password = database.url.replace("postgres@", "postgres:hunter2@");
    let journal = tempfile::tempdir().unwrap();
    let service = Service::start(
        &[
            ("DATABASE_URL", with_password),
            ("REDIS_URL", "redis://:sesame@127.0.0.1:9".to_owned()),
            ("JOURNAL_DIR", journal.path().display().to_string()),
            ("API_KEYS", "k3y-for-the-test@http://localhost".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
        Stdio::piped(),
    )
    .await;
    let (http, base) = (service.http.clone(), service.base.clone());
    // Redis is down: the request logs a warning inside its span.
    let body = json!({"user_id": 3, "asin": ITEMS[0].0, "event_type": "view"});
    let response = http
        .post(format!("{base}/api/event"))
        .header("x-api-key", "k3y-for-the-test")
        .header("origin", "http://localhost")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    service.terminate();
    let output = tokio::time::timeout(Duration::from_secs(30), service.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("Redis context not updated"))
        })
        .unwrap_or_else(|| panic!("no Redis warning in\n{logs}"));
    assert_eq!(
        warning["span"]["request_id"],
        request_id.as_str(),
        "{warning}"
    );
    let settings = lines
        .iter()
        .find(|l| l["message"] == "starting")
        .unwrap_or_else(|| panic!("no settings logged at start-up in\n{logs}"));
    let settings = settings["settings"].as_str().unwrap();
    assert!(settings.contains("postgres:***@"), "{settings}");
    for secret in ["hunter2", "sesame", "k3y-for-the-test"] {
        assert!(!logs.contains(secret), "{secret} reached the logs:\n{logs}");
    }
}
