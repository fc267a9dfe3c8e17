//! HTTP: the routes, the shared state, and the layers every request passes through.

pub mod access;
pub mod body;
mod demo;
pub mod error;
mod events;
mod health;
mod identify;
pub mod limits;
mod metrics;
pub mod openapi;
mod rerank;
pub mod segment;
mod users;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::context::ContextStore;
use crate::event::EventRules;
use crate::handoff::Handoff;
use crate::health::Health;
use crate::ingest::Ingest;
use crate::rerank::ReRankingService;
use crate::writer::WriterStatus;
use access::{AccessControl, ApiGuard, Scope};
use body::BodyPace;
pub use demo::SEGMENT_SDK_ENTRY;
pub use error::ApiError;
use limits::RequestLimits;
pub use metrics::describe_metrics;

/// Most events in one `POST /api/events`.
pub const MAX_BATCH_EVENTS: usize = 500;

/// Bounds on what a request may carry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How a body must arrive.
    pub pace: BodyPace,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub max_batch_events: usize,
    pub events: EventRules,
}

/// What the API's handlers share, behind one `Arc`: axum clones the state for every request, and
/// one reference count costs less than the dozen the parts hold.
pub type AppState = Arc<App>;

pub struct App {
    /// The cap and the deadline of the handlers' work, once their body is read.
    pub work: RequestLimits,
    /// Who may call: for the Segment routes' write keys, which may come in the body.
    pub access: Arc<AccessControl>,
    /// How Segment's messages become events.
    pub segment: segment::SegmentConfig,
    pub ingest: Ingest,
    pub rerank: Arc<ReRankingService>,
    pub vitals: Vitals,
    pub limits: Limits,
}

/// What the health endpoints and `/metrics` look at: shared by an API node and a writer on its
/// own.
#[derive(Clone)]
pub struct Vitals {
    pub pool: PgPool,
    pub health: Health,
    pub handoff: Arc<dyn Handoff>,
    /// The Redis context, on an API node.
    pub context: Option<ContextStore>,
    /// The writer's status, when this process runs one.
    pub writer: Option<WriterStatus>,
}

impl axum::extract::FromRef<AppState> for Vitals {
    fn from_ref(state: &AppState) -> Self {
        state.vitals.clone()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What guards the API at its edge: limits, CORS, keys and rate limits.
pub struct Edge {
    pub access: Arc<AccessControl>,
    pub cors_origins: Vec<String>,
    /// Whether the demo page is served.
    pub demo: bool,
    /// Where the demo's Segment mode finds Segment's browser SDK, if anywhere.
    pub demo_segment_sdk: Option<std::path::PathBuf>,
}

/// What the server calls for each request.
pub type HttpService = BoxCloneSyncService<Request<Body>, Response, Infallible>;

pub fn router(state: AppState, edge: Edge) -> HttpService {
    let guarded = |needs, body_key, render| {
        middleware::from_fn_with_state(
            ApiGuard {
                limits: state.work.clone(),
                access: edge.access.clone(),
                needs,
                body_key,
                render,
            },
            access::guard,
        )
    };
    let ours: fn(ApiError) -> Response = IntoResponse::into_response;
    // What a write key (the one a page carries) may call, and what takes a server key: what
    // the service knows of a user.
    let writes = Router::new()
        .route("/api/event", post(events::log_event))
        .route("/api/events", post(events::log_events))
        .route("/api/identify", post(identify::identify))
        .route_layer(guarded(Scope::Write, false, ours));
    let reads = Router::new()
        .route("/api/rerank", post(rerank::rerank))
        .route("/api/users/{user_id}/context", get(users::context))
        .route(
            "/api/visitors/{anonymous_id}/context",
            get(users::visitor_context),
        )
        .route_layer(guarded(Scope::Read, false, ours));
    // Segment's tracking API: writes, whose key may come in the body (`writeKey`).
    let single = |kind| {
        post(move |State(app): State<AppState>, request: Request<Body>| {
            segment::single(app, request, kind)
        })
    };
    let mut tracking = Router::new()
        .route("/v1/batch", post(segment::batch))
        .route("/v1/b", post(segment::batch))
        .route("/v1/m", post(segment::sdk_metrics));
    for kind in segment::Kind::ALL {
        let name = kind.as_str();
        tracking = tracking
            .route(&format!("/v1/{name}"), single(kind))
            .route(&format!("/v1/{}", &name[..1]), single(kind));
    }
    let tracking = tracking.route_layer(guarded(Scope::Write, true, segment::refusal));
    let api = writes.merge(reads).merge(tracking);
    // Only the API and the demo are capped: health checks and metrics must answer when the
    // service is busy.
    let demo = if edge.demo {
        demo::routes(state.vitals.pool.clone(), edge.demo_segment_sdk).route_layer(
            middleware::from_fn_with_state(state.work.clone(), limits::enforce),
        )
    } else {
        Router::new()
    };
    let routes = Router::new()
        .merge(api)
        .merge(demo)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(cors(&edge.cors_origins));
    let routes = metrics::recorded(routes);
    // The layers that need no route go around the router, not into it: a layer added to a
    // `Router` wraps every route in a boxed service of its own, and each request clones the
    // boxes of its route, one per layer. Inside stay the request metrics, which need the
    // matched route, and CORS, whose answers to preflight requests they count.
    let service = ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(Body::new))
        .map_request(keep_safe_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                // A refusal is logged once, where it is decided, with its reason (throttled
                // during an outage): not again here for every 5xx.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .service(routes);
    HttpService::new(service)
}

/// Most characters of a client's `X-Request-Id` that the service keeps.
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// A client's `X-Request-Id` is kept only if it is short and safe to print in a log line: 1 to
/// [`MAX_REQUEST_ID_CHARS`] ASCII letters, digits, `-`, `_`, `.` or `:`, and one of them.
/// Otherwise it is dropped, and the service makes one (a UUID), as for a request without.
fn keep_safe_request_id(mut request: Request<Body>) -> Request<Body> {
    let headers = request.headers();
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let safe = match (ids.next(), ids.next()) {
        (None, _) => return request,
        (Some(id), None) => {
            (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        }
        (Some(_), Some(_)) => false,
    };
    if !safe {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Keeps `dependency_up{dependency}` current, as a background component: the dependencies are
/// asked every few seconds, as readiness asks them.
pub fn watch_dependencies(vitals: &Vitals) {
    vitals
        .health
        .spawn("dependency-probe", health::keep_probing(vitals.clone()));
}

/// The routes of a writer on its own: health and metrics.
pub fn vitals_router(vitals: Vitals) -> HttpService {
    HttpService::new(metrics::recorded(
        Router::new()
            .route("/health/live", get(health::live))
            .route("/health/ready", get(health::ready))
            .route("/metrics", get(metrics::render))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(vitals),
    ))
}

/// Browsers may call the API from the configured origins; with none configured, from
/// `http://localhost` and `http://127.0.0.1` on any port (local development).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    let allow_origin = match origins.as_slice() {
        [] => AllowOrigin::predicate(|origin: &HeaderValue, _| is_local_origin(origin.as_bytes())),
        ["*"] => AllowOrigin::any(),
        list => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            // Segment's browser SDK sends its write key as HTTP Basic authentication.
            header::AUTHORIZATION,
            HeaderName::from_static(access::API_KEY_HEADER),
            REQUEST_ID,
        ])
        .expose_headers([header::RETRY_AFTER, REQUEST_ID])
        .max_age(Duration::from_secs(600))
}

fn is_local_origin(origin: &[u8]) -> bool {
    ["http://localhost", "http://127.0.0.1"].iter().any(|host| {
        origin.strip_prefix(host.as_bytes()).is_some_and(|rest| {
            rest.is_empty() || (rest[0] == b':' && rest[1..].iter().all(u8::is_ascii_digit))
        })
    })
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// How long a readiness check waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
