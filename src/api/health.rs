//! Liveness and readiness.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::{AppState, READY_TIMEOUT};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: &'static str,
}

/// Answers while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` when PostgreSQL and Redis both answer, else `degraded`. Events are still accepted
    /// when degraded (the journal keeps them), as long as the journal has room.
    pub status: &'static str,
    pub postgres: Check,
    pub redis: Check,
    pub journal: JournalState,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JournalState {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// 200 when PostgreSQL and Redis answer, 503 otherwise; the body says which is down.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "PostgreSQL and Redis answer", body = Readiness),
    (status = 503, description = "PostgreSQL or Redis does not answer (events are still accepted)", body = Readiness),
))]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = check(async {
        let query = sqlx::query("SELECT 1").execute(&app.pool);
        match tokio::time::timeout(READY_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
        }
    });
    let redis = check(async { app.ingest.context.ping().await.map_err(|e| e.to_string()) });
    let (postgres, redis) = tokio::join!(postgres, redis);
    let ok = postgres.ok && redis.ok;
    let journal = &app.ingest.journal;
    let readiness = Readiness {
        status: if ok { "ready" } else { "degraded" },
        postgres,
        redis,
        journal: JournalState {
            used_bytes: journal.used_bytes(),
            limit_bytes: journal.limit_bytes(),
        },
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

async fn check(probe: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let outcome = probe.await;
    Check {
        ok: outcome.is_ok(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: outcome.err(),
    }
}
