//! PostgreSQL: connecting, creating the database, applying the migrations.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// The migrations in `migrations/`, built into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// Creates the database if it is missing, then applies pending migrations, and returns a pool.
pub async fn prepare(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let shown = redact(url);
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("PostgreSQL at {shown} is unreachable"))?;
    if !exists {
        tracing::info!(database = %shown, "creating the database");
        Postgres::create_database(url)
            .await
            .with_context(|| format!("could not create the database {shown}"))?;
    }
    let pool = connect(url, max_connections).await?;
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("could not apply the migrations to {shown}"))?;
    Ok(pool)
}

/// Connects a pool, failing at once if PostgreSQL does not answer.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let shown = redact(url);
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
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/events"),
            "postgres://app:***@db:5432/events"
        );
        assert_eq!(
            redact("postgres://root@localhost/x"),
            "postgres://root@localhost/x"
        );
        assert_eq!(redact("::"), "<unparsable URL>");
    }
}
