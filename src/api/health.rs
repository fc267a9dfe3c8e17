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
    /// `ready`: this node takes events and every dependency answers. `degraded`: it takes
    /// events, but PostgreSQL or Redis does not answer (events wait in the hand-off; the
    /// context is skipped). `not_ready`: it cannot take events now (the journal full or
    /// failing, NATS unreachable). `dead`: a background component died.
    pub status: &'static str,
    pub postgres: Check,
    /// On an API node; a writer on its own has no Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Check>,
    pub handoff: HandoffState,
    /// The background components: `journal-appender`, `writer`, `redis-context`, ...
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

/// 200 while this node can take events: its hand-off is writable and not full (on a writer
/// node: NATS answers) and every background component runs; the body says `degraded` when
/// PostgreSQL or Redis does not answer, which the hand-off rides out. 503 when it cannot take
/// events, or a component died. For a load balancer's or an orchestrator's readiness probe: a
/// PostgreSQL outage keeps every node in rotation.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Taking events (`ready`, or `degraded` with PostgreSQL or Redis down)", body = Readiness),
    (status = 503, description = "Not taking events: the journal full or failing, NATS unreachable (`not_ready`), or a component died (`dead`)", body = Readiness),
))]
pub async fn ready(State(vitals): State<Vitals>) -> (StatusCode, Json<Readiness>) {
    let readiness = probe(&vitals).await;
    let status = match readiness.status {
        "ready" | "degraded" => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(readiness))
}

/// Asks each dependency, and sets `dependency_up{dependency}` from the answers.
pub async fn probe(vitals: &Vitals) -> Readiness {
    let postgres = check(async {
        let query = sqlx::query("SELECT 1").execute(&vitals.pool);
        match tokio::time::timeout(READY_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(crate::telemetry::chain(error)),
            Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
        }
    });
    let redis = async {
        match &vitals.context {
            Some(context) => {
                Some(check(async { context.ping().await.map_err(crate::telemetry::chain) }).await)
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
    for (dependency, up) in [
        ("postgres", postgres.ok),
        ("redis", redis_ok),
        ("handoff", handoff.is_ok()),
    ] {
        metrics::gauge!("dependency_up", "dependency" => dependency).set(f64::from(u8::from(up)));
    }
    Readiness {
        status: if dead {
            "dead"
        } else if !handoff.is_ok() {
            "not_ready"
        } else if !(postgres.ok && redis_ok) {
            "degraded"
        } else {
            "ready"
        },
        postgres,
        redis,
        handoff,
        components,
    }
}

/// How often the dependencies are asked, for `dependency_up`, when nobody asks for readiness.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The background component that keeps `dependency_up` current.
pub async fn keep_probing(vitals: Vitals) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    loop {
        every.tick().await;
        probe(&vitals).await;
    }
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
