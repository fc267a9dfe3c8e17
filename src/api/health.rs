//! Liveness and readiness.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::{READY_TIMEOUT, Vitals};
use crate::handoff::HandoffState;
use crate::health::ComponentState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// `ok`, or `dead` when a background component died (the process is about to exit).
    pub status: &'static str,
    /// The component that died, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
}

/// 200 while the process runs and its background components live; 503 once one has died (the
/// process then exits within seconds, for its supervisor to restart it).
#[utoipa::path(get, path = "/health/live", tag = "health", responses(
    (status = 200, body = Liveness),
    (status = 503, description = "A background component died", body = Liveness),
))]
pub async fn live(State(vitals): State<Vitals>) -> (StatusCode, Json<Liveness>) {
    match vitals.health.death() {
        None => (
            StatusCode::OK,
            Json(Liveness {
                status: "ok",
                dead: None,
            }),
        ),
        Some(death) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Liveness {
                status: "dead",
                dead: Some(death.to_string()),
            }),
        ),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` when PostgreSQL, Redis and the hand-off all answer and every background component
    /// runs; `degraded` when one does not answer (with the journal, events are still accepted
    /// while PostgreSQL or Redis is down, as long as the journal has room; with JetStream, while
    /// PostgreSQL or Redis is down, not while NATS is); `dead` when a component died.
    pub status: &'static str,
    pub postgres: Check,
    /// On an API node; a writer on its own has no Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Check>,
    pub handoff: HandoffState,
    /// The background components: `journal-appender`, `writer`, `redis-context`.
    #[schema(value_type = BTreeMap<String, ComponentState>)]
    pub components: BTreeMap<&'static str, ComponentState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// 200 when PostgreSQL and Redis answer and every component runs, 503 otherwise; the body says
/// which is down.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "PostgreSQL and Redis answer; every component runs", body = Readiness),
    (status = 503, description = "PostgreSQL or Redis does not answer (events are still accepted), or a component died", body = Readiness),
))]
pub async fn ready(State(vitals): State<Vitals>) -> (StatusCode, Json<Readiness>) {
    let postgres = check(async {
        let query = sqlx::query("SELECT 1").execute(&vitals.pool);
        match tokio::time::timeout(READY_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
        }
    });
    let redis = async {
        match &vitals.context {
            Some(context) => {
                Some(check(async { context.ping().await.map_err(|e| e.to_string()) }).await)
            }
            None => None,
        }
    };
    let (postgres, redis) = tokio::join!(postgres, redis);
    let components = vitals.health.components();
    let dead = components
        .values()
        .any(|state| matches!(state, ComponentState::Dead { .. }));
    let handoff = vitals.handoff.state();
    let redis_ok = redis.as_ref().is_none_or(|redis| redis.ok);
    let ok = postgres.ok && redis_ok && handoff.is_ok() && !dead;
    let readiness = Readiness {
        status: match (dead, ok) {
            (true, _) => "dead",
            (false, true) => "ready",
            (false, false) => "degraded",
        },
        postgres,
        redis,
        handoff,
        components,
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
