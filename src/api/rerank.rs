//! `POST /api/rerank`: reorder a recommender's list with a user's (or visitor's) realtime context.

use axum::Json;
use axum::extract::{Request, State};
use serde::Serialize;
use serde_json::{Map, Value};

use super::openapi::{BodyErrors, EdgeErrors, RerankRequest};
use super::users::ActorName;
use super::{ApiError, AppState, body};
use crate::event::{Actor, Asin, InvalidEvent, ParseError, json_type};
use crate::rerank::{ContextSummary, MAX_CANDIDATES, RemovedItem, RerankedItem, ScoredItem};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RerankResponse {
    /// The user or visitor, as the request named them.
    #[serde(flatten)]
    pub actor: ActorName,
    pub items: Vec<RerankedItem>,
    /// Candidates a rule left out (`--rerank-purchased-remove`); empty otherwise.
    pub removed: Vec<RemovedItem>,
    pub context: ContextSummary,
}

/// Reorders a recommender's list with the user's realtime context; with no context, the input
/// order comes back flagged.
#[utoipa::path(
    post, path = "/api/rerank", tag = "context",
    request_body = RerankRequest,
    responses((status = 200, description = "The items, reordered", body = RerankResponse), BodyErrors, EdgeErrors),
    security((), ("api_key" = []))
)]
pub async fn rerank(
    State(app): State<AppState>,
    request: Request,
) -> Result<Json<RerankResponse>, ApiError> {
    let body = body::read_json(request, app.limits.max_batch_body_bytes).await?;
    let request: Map<String, Value> = serde_json::from_slice(&body).map_err(ParseError::from)?;
    let actor = Actor::from_object(&request)?;
    let items = parse_items(request.get("items"))?;
    let reranked = app.rerank.rerank_items(&actor, items).await;
    Ok(Json(RerankResponse {
        actor: ActorName::from(&actor),
        items: reranked.ranking.items,
        removed: reranked.ranking.removed,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn any_item() -> impl Strategy<Value = Value> {
        let asin = prop_oneof![
            Just(Value::Null),
            ".{0,70}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from)
        ];
        let score = prop_oneof![
            Just(Value::Null),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        prop_oneof![
            (asin, score).prop_map(|(asin, score)| json!({"asin": asin, "score": score})),
            any::<bool>().prop_map(Value::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_candidate_list_parses_or_fails_naming_items(items in prop::collection::vec(any_item(), 0..20)) {
            match parse_items(Some(&Value::Array(items.clone()))) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.len(), items.len());
                    prop_assert!(parsed.iter().all(|i| i.score.is_finite()));
                }
                Err(invalid) => prop_assert_eq!(invalid.field, "items"),
            }
        }
    }
}
