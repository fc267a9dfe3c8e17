//! `POST /api/rerank`: reorder a recommender's list with the user's realtime context.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{ApiError, AppState, body};
use crate::event::{Asin, InvalidEvent, ParseError, UserId, json_type};
use crate::rerank::{ContextSummary, MAX_CANDIDATES, RerankedItem, ScoredItem};

#[derive(Debug, Serialize)]
pub struct RerankResponse {
    pub user_id: UserId,
    pub items: Vec<RerankedItem>,
    pub context: ContextSummary,
}

/// `{"user_id": 1, "items": [{"asin": "...", "score": 0.93}, ...]}`, up to 1,000 items.
pub async fn rerank(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RerankResponse>, ApiError> {
    let body = body::read_json(&headers, body, app.limits.max_batch_body_bytes).await?;
    let request: Map<String, Value> = serde_json::from_slice(&body).map_err(ParseError::from)?;
    let user_id = UserId::from_json(request.get("user_id"))?;
    let items = parse_items(request.get("items"))?;
    let reranked = app.rerank.rerank_items(user_id, items).await;
    Ok(Json(RerankResponse {
        user_id,
        items: reranked.items,
        context: reranked.context,
    }))
}

fn parse_items(value: Option<&Value>) -> Result<Vec<ScoredItem>, InvalidEvent> {
    let items = match value {
        None | Some(Value::Null) => return Err(InvalidEvent::missing("items")),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(InvalidEvent::invalid(
                "items",
                format!(
                    "items must be an array of {{asin, score}}, got {}",
                    json_type(other)
                ),
            ));
        }
    };
    if items.len() > MAX_CANDIDATES {
        return Err(InvalidEvent::invalid(
            "items",
            format!("items must hold at most {MAX_CANDIDATES} items"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at =
                |message: String| InvalidEvent::invalid("items", format!("items[{i}]: {message}"));
            let Value::Object(item) = item else {
                return Err(at(format!(
                    "an item must be an object, got {}",
                    json_type(item)
                )));
            };
            let asin = Asin::from_json(item.get("asin")).map_err(|e| at(e.message))?;
            let score = match item.get("score") {
                Some(Value::Number(n)) => n.as_f64().filter(|s| s.is_finite()),
                _ => None,
            }
            .ok_or_else(|| at("score must be a finite number".to_owned()))?;
            Ok(ScoredItem { asin, score })
        })
        .collect()
}
