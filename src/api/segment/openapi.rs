//! The Segment routes in the OpenAPI document: `/v1/batch` and `/v1/track` are described from
//! these declarations, and the other single-message routes and the short forms copied from
//! `/v1/track` ([`SegmentRoutes`]).
//!
//! The messages' fields carry no types: the service takes any JSON object as a message, and
//! answers 200 for one it cannot use (counting it), as Segment does; what each field should
//! hold is said in words.

use serde::Deserialize;
use utoipa::openapi::OpenApi;
use utoipa::{IntoResponses, Modify, ToSchema};

/// One message of Segment's tracking API.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SegmentMessage {
    /// `track`, `identify`, `alias`, `page`, `screen` or `group` (a single-message route takes
    /// its path's).
    #[schema(value_type = Object)]
    r#type: Option<serde_json::Value>,
    /// A track's name: `Product Viewed`, `Product Clicked`, `Product Added`, `Order Completed`,
    /// `Product Reviewed` (and the v1 names), or one of `--segment-events`.
    #[schema(value_type = Object)]
    event: Option<serde_json::Value>,
    /// The shop's numeric user id, as a string or a number.
    #[serde(rename = "userId")]
    #[schema(value_type = Object)]
    user_id: Option<serde_json::Value>,
    /// The visitor's id.
    #[serde(rename = "anonymousId")]
    #[schema(value_type = Object)]
    anonymous_id: Option<serde_json::Value>,
    /// An alias's former id: the visitor who becomes `userId`.
    #[serde(rename = "previousId")]
    #[schema(value_type = Object)]
    previous_id: Option<serde_json::Value>,
    /// The SDK's id of the message: our event ids derive from it, so that a retry is stored once.
    #[serde(rename = "messageId")]
    #[schema(value_type = Object)]
    message_id: Option<serde_json::Value>,
    /// When it happened, by the client's clock (RFC 3339), corrected by `sentAt`.
    #[serde(rename = "originalTimestamp")]
    #[schema(value_type = Object)]
    original_timestamp: Option<serde_json::Value>,
    /// When it happened (RFC 3339), taken as it is when `originalTimestamp` is absent.
    #[schema(value_type = Object)]
    timestamp: Option<serde_json::Value>,
    /// When the client sent it, by the same clock as `originalTimestamp`.
    #[serde(rename = "sentAt")]
    #[schema(value_type = Object)]
    sent_at: Option<serde_json::Value>,
    /// `product_id` or `sku` names the item; an order's `products`, one purchase each; the rest
    /// goes to the event's metadata, as written.
    #[schema(value_type = Object)]
    properties: Option<serde_json::Value>,
    /// `page` and `campaign` go to the metadata; the rest is dropped.
    #[schema(value_type = Object)]
    context: Option<serde_json::Value>,
    /// The write key, when it does not come as HTTP Basic authentication.
    #[serde(rename = "writeKey")]
    #[schema(value_type = Object)]
    write_key: Option<serde_json::Value>,
}

/// Up to 2,500 messages (500 KiB, each at most 32 KiB); the batch's `sentAt` and `context`
/// apply to the messages without their own.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SegmentBatch {
    #[schema(max_items = 2500)]
    batch: Vec<SegmentMessage>,
    #[serde(rename = "sentAt")]
    #[schema(value_type = Object)]
    sent_at: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    context: Option<serde_json::Value>,
    #[serde(rename = "writeKey")]
    #[schema(value_type = Object)]
    write_key: Option<serde_json::Value>,
}

/// `{"success": true}`: taken.
#[derive(ToSchema)]
#[schema(example = json!({"success": true}))]
#[allow(dead_code)]
pub struct SegmentTaken {
    success: bool,
}

/// A refusal, in Segment's words: `{"success": false, "code", "message"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SegmentError {
    success: bool,
    code: String,
    message: String,
}

/// What the Segment routes answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SegmentAnswers {
    /// Taken: its usable messages are durable (those it could not use are counted, by reason).
    #[response(status = 200)]
    Taken(SegmentTaken),
    /// Not JSON, or not a batch (or a message).
    #[response(status = 400)]
    BadRequest(SegmentError),
    /// No write key, or a wrong one (when keys are configured).
    #[response(status = 401)]
    Unauthorized(SegmentError),
    /// The key may not be used from this origin.
    #[response(status = 403)]
    Forbidden(SegmentError),
    /// The body did not arrive in time.
    #[response(status = 408)]
    Slow(SegmentError),
    /// Over 500 KiB, a message over 32 KiB, or more than 2,500 messages.
    #[response(status = 413)]
    TooLarge(SegmentError),
    /// Content-Type or Content-Encoding not taken.
    #[response(status = 415)]
    Unsupported(SegmentError),
    /// Over a rate limit: retry after `Retry-After`.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(SegmentError),
    /// Busy, or the hand-off or Redis unavailable: retry after `Retry-After`, with the same
    /// messageIds.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(SegmentError),
}

/// Takes a batch of Segment messages (Segment's `/v1/batch`; `/v1/b` too).
///
/// The body may come as `application/json` or as `text/plain` (what the browser SDK sends), and
/// compressed (`Content-Encoding: gzip` or `deflate`); the limits apply to the inflated bytes.
#[utoipa::path(
    post, path = "/v1/batch", tag = "segment", operation_id = "segment_batch",
    request_body(content = SegmentBatch, content_type = "application/json"),
    responses(SegmentAnswers),
    security((), ("write_key" = []), ("api_key" = []))
)]
#[allow(dead_code)]
pub fn batch() {}

/// Takes one Segment message, of the path's type.
///
/// The body may come as `application/json` or as `text/plain` (what the browser SDK sends), and
/// compressed (`Content-Encoding: gzip` or `deflate`); the limits apply to the inflated bytes.
#[utoipa::path(
    post, path = "/v1/track", tag = "segment", operation_id = "segment_track",
    request_body(content = SegmentMessage, content_type = "application/json"),
    responses(SegmentAnswers),
    security((), ("write_key" = []), ("api_key" = []))
)]
#[allow(dead_code)]
pub fn single() {}

/// Adds the other single-message routes and the short forms, as copies.
pub struct SegmentRoutes;

impl Modify for SegmentRoutes {
    fn modify(&self, openapi: &mut OpenApi) {
        let paths = &mut openapi.paths.paths;
        let (Some(batch), Some(track)) = (
            paths.get("/v1/batch").cloned(),
            paths.get("/v1/track").cloned(),
        ) else {
            return;
        };
        let renamed = |item: &utoipa::openapi::PathItem, id: &str| {
            let mut item = item.clone();
            if let Some(post) = item.post.as_mut() {
                post.operation_id = Some(id.to_owned());
            }
            item
        };
        paths.insert("/v1/b".to_owned(), renamed(&batch, "segment_b"));
        for name in ["track", "identify", "alias", "page", "screen", "group"] {
            let short = &name[..1];
            if name != "track" {
                paths.insert(
                    format!("/v1/{name}"),
                    renamed(&track, &format!("segment_{name}")),
                );
            }
            paths.insert(
                format!("/v1/{short}"),
                renamed(&track, &format!("segment_{short}")),
            );
        }
        paths.insert("/v1/m".to_owned(), renamed(&track, "segment_m"));
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "write_key",
            utoipa::openapi::security::SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Basic)
                    .description(Some(
                        "Segment's write key as the user name, the password empty: one of API_KEYS or SERVER_KEYS, when keys are configured",
                    ))
                    .build(),
            ),
        );
    }
}
