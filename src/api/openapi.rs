//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types, served
//! at `GET /openapi.json`.
//!
//! The request bodies are parsed by hand (for errors that name the field and the rule), so their
//! schemas are described by the types below; `the_document_states_the_rules_the_parser_enforces`
//! checks the numbers against the parser's own constants.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Json;
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use uuid::Uuid;

use super::error::{ErrorBody, ErrorDetail};
use super::segment::openapi::SegmentRoutes;
use crate::event::EventType;

/// One interaction, as the frontend sends it. Exactly one of `user_id` and `anonymous_id`
/// names who did it.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"user_id": 123, "asin": "B08XXXX", "event_type": "view",
    "metadata": {"page": "product_detail", "timestamp": "2024-01-01T00:00:00Z"}}))]
pub struct EventRequest {
    /// A logged-in user.
    #[schema(minimum = 1, maximum = 9223372036854775807_i64, nullable)]
    pub user_id: Option<i64>,
    /// A visitor who has not logged in: an id the client generated and keeps (a UUID, say).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9._-]+$",
        nullable
    )]
    pub anonymous_id: Option<String>,
    /// 1 to 64 characters, no whitespace, control or format (invisible) characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]+$"
    )]
    pub asin: String,
    pub event_type: EventType,
    /// Free-form fields: at most 8 KiB as JSON, 8 levels deep, 128 keys in all, no NUL character.
    #[schema(nullable)]
    pub metadata: Option<HashMap<String, serde_json::Value>>,
    /// The idempotency key: a retry with the same id is stored and counted once. Assigned by the
    /// service when absent.
    #[schema(nullable)]
    pub event_id: Option<Uuid>,
    /// When the event happened, by the client's clock (RFC 3339). Stored as the event's time,
    /// corrected by `sent_at`; a time in the future is replaced by the time of receipt, one older
    /// than `--max-event-age` (7 days) is refused. The time of receipt when absent.
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub timestamp: Option<String>,
    /// When the client sent this event, by the same clock as `timestamp`: the difference from
    /// the service's clock is removed from `timestamp`. Takes precedence over the batch's.
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub sent_at: Option<String>,
}

/// Up to 500 events (and 1 MiB); each is accepted or rejected on its own.
#[derive(Deserialize, ToSchema)]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 500)]
    pub events: Vec<EventRequest>,
    /// When the client sent the batch (RFC 3339), by the clock of the events' `timestamp`s.
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub sent_at: Option<String>,
}

/// A list a recommender has ranked, to reorder with the context of a user (`user_id`) or of a
/// visitor (`anonymous_id`): exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"user_id": 1, "items": [{"asin": "B0BOOK0001", "score": 0.93}, {"asin": "B08XXXX", "score": 0.9}]}))]
pub struct RerankRequest {
    #[schema(minimum = 1, maximum = 9223372036854775807_i64, nullable)]
    pub user_id: Option<i64>,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9._-]+$",
        nullable
    )]
    pub anonymous_id: Option<String>,
    #[schema(max_items = 1000)]
    pub items: Vec<RerankCandidate>,
}

/// A visitor who logged in: whose anonymous id becomes which user.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"anonymous_id": "0193a5c4-7d1e-7b3a-9c2f-5e8d1a2b3c4d", "user_id": 42}))]
pub struct IdentifyRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub anonymous_id: String,
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub user_id: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct RerankCandidate {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]+$"
    )]
    pub asin: String,
    pub score: f64,
}

/// The errors every `/api` call can meet at the edge, besides its own.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum EdgeErrors<'a> {
    /// No API key, or a wrong one (only when keys are configured).
    #[response(status = 401)]
    Unauthorized(ErrorBody<'a>),
    /// The API key may not be used from this origin (`origin_not_allowed`), or a write key
    /// called a route that reads a user's data (`server_key_required`).
    #[response(status = 403)]
    Forbidden(ErrorBody<'a>),
    /// The body did not arrive in time.
    #[response(status = 408)]
    BodyTimeout(ErrorBody<'a>),
    /// Over the rate limit of the key or the client address.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(ErrorBody<'a>),
    /// Busy, too slow, or the journal is full or failing: retry later, with the same event ids.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ErrorBody<'a>),
}

/// The errors of a request body.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors<'a> {
    /// The body is not JSON (`invalid_json`), or a compressed body is corrupt (`invalid_body`).
    #[response(status = 400)]
    InvalidJson(ErrorBody<'a>),
    /// The body, inflated if compressed, is too large (`body_too_large`), or it inflates more than
    /// 100 times its compressed size (`compression_bomb`).
    #[response(status = 413)]
    TooLarge(ErrorBody<'a>),
    /// Content-Type other than application/json or text/plain (`unsupported_media_type`), or
    /// Content-Encoding other than gzip or deflate (`unsupported_encoding`).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody<'a>),
    /// A field is missing or breaks its rule; `field` names it.
    #[response(status = 422)]
    Invalid(ErrorBody<'a>),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "event-ingest",
        description = "Event ingestion for a real-time recommender: Redis context at once, PostgreSQL for good."
    ),
    paths(
        super::events::log_event,
        super::events::log_events,
        super::rerank::rerank,
        super::identify::identify,
        super::users::context,
        super::users::visitor_context,
        super::health::live,
        super::health::ready,
        super::segment::openapi::batch,
        super::segment::openapi::single,
    ),
    components(schemas(ErrorBody, ErrorDetail, super::segment::openapi::SegmentTaken, super::segment::openapi::SegmentError)),
    modifiers(&ApiKeySecurity, &OneActor, &SegmentRoutes),
    tags(
        (name = "events", description = "Logging interactions"),
        (name = "context", description = "The realtime context and re-ranking"),
        (name = "health", description = "Liveness and readiness"),
        (name = "segment", description = "Segment's tracking API, for the SDKs a shop already has"),
    )
)]
pub struct ApiDoc;

struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "Required only when the service is configured with keys: a write key (API_KEYS) for sending events and identifying, a server key (SERVER_KEYS) for everything, including re-ranking and reading contexts",
            ))),
        );
    }
}

/// States that a request naming an actor names exactly one: `user_id` or `anonymous_id`, not
/// null (a null counts as absent).
struct OneActor;

impl Modify for OneActor {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Type};
        let present = |name: &str, kind: Type| {
            ObjectBuilder::new()
                .property(name, ObjectBuilder::new().schema_type(kind))
                .required(name)
        };
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["EventRequest", "RerankRequest"] {
            if let Some(schema) = components.schemas.remove(name) {
                let one = OneOfBuilder::new()
                    .item(present("user_id", Type::Integer))
                    .item(present("anonymous_id", Type::String));
                let both = AllOfBuilder::new().item(schema).item(one);
                components.schemas.insert(name.to_owned(), both.into());
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOCUMENT.get_or_init(ApiDoc::openapi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MAX_BATCH_EVENTS;
    use crate::event::MAX_ASIN_CHARS;
    use crate::rerank::MAX_CANDIDATES;

    fn schema(name: &str) -> serde_json::Value {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        document["components"]["schemas"][name].clone()
    }

    #[test]
    fn the_document_states_the_rules_the_parser_enforces() {
        let event = schema("EventRequest")["allOf"][0].clone();
        assert_eq!(event["properties"]["asin"]["maxLength"], MAX_ASIN_CHARS);
        assert_eq!(event["properties"]["user_id"]["minimum"], 1);
        assert_eq!(event["properties"]["user_id"]["maximum"], i64::MAX);
        assert_eq!(
            event["properties"]["anonymous_id"]["maxLength"],
            crate::event::MAX_ANONYMOUS_ID_CHARS
        );
        let one_of = &schema("EventRequest")["allOf"][1]["oneOf"];
        assert_eq!(one_of[0]["required"], serde_json::json!(["user_id"]));
        assert_eq!(one_of[1]["required"], serde_json::json!(["anonymous_id"]));
        let types: Vec<String> = EventType::ALL
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(schema("EventType")["enum"], serde_json::json!(types));
        assert_eq!(
            schema("BatchRequest")["properties"]["events"]["maxItems"],
            MAX_BATCH_EVENTS
        );
        assert_eq!(
            schema("RerankRequest")["allOf"][0]["properties"]["items"]["maxItems"],
            MAX_CANDIDATES
        );
    }

    #[test]
    fn the_asin_pattern_agrees_with_the_parser() {
        let accepted = |asin: &str| crate::event::Asin::new(asin.to_owned()).is_ok();
        for asin in ["B08XXXX", "é", "a-b_c.d"] {
            assert!(accepted(asin), "{asin}");
        }
        for asin in [
            "a b",
            "a\u{7}",
            "a\u{85}",
            "\u{feff}a",
            "a\u{a0}",
            "a\u{202e}",
            "a\u{200b}",
            "\u{2066}a",
            "a\u{ad}b",
        ] {
            assert!(!accepted(asin), "{asin:?}");
        }
    }
}
