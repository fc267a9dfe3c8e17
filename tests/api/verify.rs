//! The `verify` command (the seed's test script) against a live service.

use std::process::ExitCode;

use event_ingest::config::DatabaseArgs;
use event_ingest::verify::{self, VerifyArgs};

use crate::helpers::{REDIS_URL, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_against_a_healthy_service() {
    let app = TestApp::spawn().await;
    event_ingest::seed_catalog::seed(&app.pool, 50, 10, 7)
        .await
        .unwrap();
    let args = VerifyArgs {
        url: app.address.clone(),
        database: DatabaseArgs {
            database_url: app.settings.database.database_url.clone(),
            database_max_connections: 2,
        },
        redis: event_ingest::config::RedisArgs {
            redis_url: event_ingest::secret::SecretUrl::new(REDIS_URL),
            redis_cluster: false,
            redis_hash_tags: false,
            redis_key_prefix: app.prefix.clone(),
        },
        context_ttl_secs: 900,
        timeout_secs: 20,
    };
    assert_eq!(verify::run(&args).await.unwrap(), ExitCode::SUCCESS);
}
