//! `POST /api/rerank`: reorder a recommender's list with a user's (or visitor's) realtime context.

use axum::Json;
use axum::extract::{Request, State};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::openapi::{BodyErrors, EdgeErrors, RerankRequest};
use super::users::ActorName;
use super::{ApiError, AppState, body};
use crate::event::{
    Actor, Asin, Dropped, Elements, ElementsSeed, FieldName, Id, InvalidEvent, Item, ObjectFields,
    ParseError, Shallow,
};
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
    let body = body::read_json(request, app.limits.max_batch_body_bytes, app.limits.pace).await?;
    let _work = app.work.admit()?;
    let request = RerankFields::from_json(&body)?;
    let actor = Actor::from_fields(request.user_id.as_ref(), request.anonymous_id.as_ref())?;
    let items = parse_items(request.items)?;
    let reranked = app.rerank.rerank_items(&actor, items).await;
    Ok(Json(RerankResponse {
        actor: ActorName::from(&actor),
        items: reranked.ranking.items,
        removed: reranked.ranking.removed,
        context: reranked.context,
    }))
}

type Candidates = Elements<Item<CandidateFields>>;

/// A re-ranking request as the body has it, read as it is parsed: at most [`MAX_CANDIDATES`]
/// candidates are built, other fields are checked for syntax and dropped.
#[derive(Default)]
struct RerankFields {
    user_id: Option<Value>,
    anonymous_id: Option<Value>,
    items: Option<Candidates>,
}

/// One candidate's fields.
#[derive(Default)]
struct CandidateFields {
    asin: Option<Value>,
    score: Option<Value>,
}

impl RerankFields {
    fn from_json(body: &[u8]) -> Result<Self, ParseError> {
        Ok(serde_json::from_slice(body)?)
    }
}

impl<'de> Deserialize<'de> for RerankFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = RerankFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RerankFields, M::Error> {
                let mut fields = RerankFields::default();
                while let Some(FieldName(name)) = map.next_key()? {
                    match name.as_ref() {
                        "user_id" => fields.user_id = Some(map.next_value::<Id>()?.0),
                        "anonymous_id" => {
                            fields.anonymous_id = Some(map.next_value::<Shallow>()?.0);
                        }
                        "items" => {
                            fields.items =
                                Some(map.next_value_seed(ElementsSeed::new(MAX_CANDIDATES))?);
                        }
                        _ => {
                            map.next_value::<Dropped>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl<'de> ObjectFields<'de> for CandidateFields {
    fn from_map<M: MapAccess<'de>>(mut map: M) -> Result<Self, M::Error> {
        let mut fields = CandidateFields::default();
        while let Some(FieldName(name)) = map.next_key()? {
            match name.as_ref() {
                "asin" => fields.asin = Some(map.next_value::<Shallow>()?.0),
                "score" => fields.score = Some(map.next_value::<Shallow>()?.0),
                _ => {
                    map.next_value::<Dropped>()?;
                }
            }
        }
        Ok(fields)
    }
}

fn parse_items(items: Option<Candidates>) -> Result<Vec<ScoredItem>, InvalidEvent> {
    let items = match items {
        None => return Err(InvalidEvent::missing("items")),
        Some(Elements::Not("null")) => return Err(InvalidEvent::missing("items")),
        Some(Elements::Items(items)) => items,
        Some(Elements::TooMany) => {
            return Err(InvalidEvent::invalid(
                "items",
                format!("items must hold at most {MAX_CANDIDATES} items"),
            ));
        }
        Some(Elements::Not(kind)) => {
            return Err(InvalidEvent::invalid(
                "items",
                format!("items must be an array of {{asin, score}}, got {kind}"),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at =
                |message: String| InvalidEvent::invalid("items", format!("items[{i}]: {message}"));
            let item = match item {
                Item::Object(item) => item,
                Item::Other(kind) => {
                    return Err(at(format!("an item must be an object, got {kind}")));
                }
            };
            let asin = Asin::from_json(item.asin.as_ref()).map_err(|e| at(e.message))?;
            let score = match &item.score {
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
            let body = json!({"user_id": 1, "items": items.clone()}).to_string();
            match parse_items(RerankFields::from_json(body.as_bytes()).unwrap().items) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.len(), items.len());
                    prop_assert!(parsed.iter().all(|i| i.score.is_finite()));
                }
                Err(invalid) => prop_assert_eq!(invalid.field, "items"),
            }
        }
    }
}
