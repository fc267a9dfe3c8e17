//! PostgreSQL: connecting, creating the database, applying the migrations.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::secret::SecretUrl;

/// Where PostgreSQL is unless told otherwise; the database is created if missing.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/event_ingest";

/// PostgreSQL connections unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// The migrations in `migrations/`, built into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database if it is missing, then applies pending migrations, and returns a pool.
pub async fn prepare(url: &SecretUrl, max_connections: u32) -> anyhow::Result<PgPool> {
    let (shown, url) = (url.redacted(), url.expose());
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("PostgreSQL at {shown} is unreachable"))?;
    if !exists {
        tracing::info!(database = %shown, "creating the database");
        Postgres::create_database(url)
            .await
            .with_context(|| format!("could not create the database {shown}"))?;
    }
    let pool = connect_to(url, &shown, max_connections).await?;
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("could not apply the migrations to {shown}"))?;
    Ok(pool)
}

/// Connects a pool, failing at once if PostgreSQL does not answer.
pub async fn connect(url: &SecretUrl, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_to(url.expose(), &url.redacted(), max_connections).await
}

async fn connect_to(url: &str, shown: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("DATABASE_URL {shown} is not a valid PostgreSQL URL"))?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("event-ingest"))
        .await
        .with_context(|| format!("PostgreSQL at {shown} is unreachable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        let shown = |url: &str| SecretUrl::new(url).to_string();
        assert_eq!(
            shown("postgres://app:s3cret@db:5432/events"),
            "postgres://app:***@db:5432/events"
        );
        assert_eq!(
            shown("postgres://root@localhost/x"),
            "postgres://root@localhost/x"
        );
        assert_eq!(shown("::"), "<unparsable URL>");
        assert_eq!(
            format!("{:?}", SecretUrl::new("redis://:pw@a:1,redis://:pw@b:2")),
            r#""redis://:***@a:1,redis://:***@b:2""#
        );
    }
}
