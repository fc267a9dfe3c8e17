//! Re-ranking on the realtime context: the reason the Redis context exists.
//!
//! Given a user and items already ranked by a recommender, [`ReRankingService::rerank_items`] loads
//! the user's recent items and categories from Redis, looks the candidates' categories up in the
//! catalogue (one query for all cache misses), lets every enabled [`Rule`] move each score, and
//! sorts by the new score. Ties keep the input order, so the same input and context always give
//! the same output. Without a context (new user, expired keys, Redis down or slow) the input
//! comes back unchanged, flagged.

pub mod rules;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalogue::{Catalogue, Lookup};
use crate::context::{ContextStore, UserContext};
use crate::event::{Actor, Asin};
use crate::telemetry::Throttle;
pub use rules::{Candidate, IntentBoost, Purchased, RecentPenalty, Rule, Signals};

/// Most candidates in one request.
pub const MAX_CANDIDATES: usize = 1000;

/// One rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleConfig {
    pub enabled: bool,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankConfig {
    pub intent_boost: RuleConfig,
    pub recent_penalty: RuleConfig,
    pub purchased: RuleConfig,
    /// The purchased rule removes bought items instead of demoting them.
    pub purchased_remove: bool,
}

impl Default for RerankConfig {
    /// Every rule on: the intent boost at 0.3, the recent penalty at 0.5, purchases demoted by
    /// 1.0.
    fn default() -> Self {
        let on = |weight| RuleConfig {
            enabled: true,
            weight,
        };
        Self {
            intent_boost: on(0.3),
            recent_penalty: on(0.5),
            purchased: on(1.0),
            purchased_remove: false,
        }
    }
}

impl RerankConfig {
    /// The enabled rules, in the order they are applied (the order does not change the result:
    /// each rule's change is computed from the original score and summed).
    pub fn rules(&self) -> Vec<Box<dyn Rule>> {
        let mut rules: Vec<Box<dyn Rule>> = Vec::new();
        if self.intent_boost.enabled {
            rules.push(Box::new(IntentBoost {
                weight: self.intent_boost.weight,
            }));
        }
        if self.recent_penalty.enabled {
            rules.push(Box::new(RecentPenalty {
                weight: self.recent_penalty.weight,
            }));
        }
        if self.purchased.enabled {
            rules.push(Box::new(Purchased {
                weight: self.purchased.weight,
                remove: self.purchased_remove,
            }));
        }
        rules
    }
}

/// A candidate as the recommender ranked it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredItem {
    pub asin: Asin,
    /// Finite.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RerankedItem {
    pub asin: String,
    pub score: f64,
    pub original_score: f64,
    /// Position in the input, from 0.
    pub original_rank: usize,
    /// The rules that moved this item, and by how much.
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub rule: &'static str,
    pub delta: f64,
}

/// A candidate a rule left out of the list (`--rerank-purchased-remove`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RemovedItem {
    pub asin: String,
    /// Position in the input, from 0.
    pub original_rank: usize,
    /// The rule that removed it.
    pub rule: &'static str,
}

/// The candidates in their new order, and those left out: together, the input.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ranking {
    pub items: Vec<RerankedItem>,
    pub removed: Vec<RemovedItem>,
}

/// The context the ranking used.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ContextSummary {
    /// False when there was no context to use; the items are then in their input order.
    pub available: bool,
    /// Why not: `no_recent_activity` or `redis_unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<&'static str>,
    pub recent_items: usize,
    /// Category → share of the recent interactions.
    pub category_shares: BTreeMap<String, f64>,
    pub last_active: Option<String>,
    /// Items bought within `--purchased-ttl`.
    pub purchased_items: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reranked {
    pub ranking: Ranking,
    pub context: ContextSummary,
}

pub struct ReRankingService {
    context: ContextStore,
    catalogue: Catalogue,
    rules: Vec<Box<dyn Rule>>,
}

impl ReRankingService {
    pub fn new(context: ContextStore, catalogue: Catalogue, config: &RerankConfig) -> Self {
        Self {
            context,
            catalogue,
            rules: config.rules(),
        }
    }

    pub async fn rerank_items(&self, actor: &Actor, ranked_items: Vec<ScoredItem>) -> Reranked {
        let context = match self.context.load(actor).await {
            Ok(context) if !context.is_empty() => context,
            Ok(_) => return unchanged(ranked_items, "no_recent_activity"),
            Err(error) => {
                static WARNING: Throttle = Throttle::new();
                if let Some(suppressed) = WARNING.allow() {
                    tracing::warn!(%error, %actor, suppressed, "no context for re-ranking; the input order stands");
                }
                return unchanged(ranked_items, "redis_unavailable");
            }
        };
        let signals = Signals::from_context(&context, self.context.config().recent_items_cap);
        let asins: Vec<Asin> = ranked_items.iter().map(|i| i.asin.clone()).collect();
        let categories = self.catalogue.lookup_many(&asins).await;
        let ranking = rerank(&self.rules, &ranked_items, &signals, |asin| {
            categories.get(asin).and_then(Lookup::category)
        });
        Reranked {
            ranking,
            context: summary(&context, &signals),
        }
    }
}

/// Applies `rules` and sorts by the new score, descending; ties keep the input order. A
/// candidate a rule removes is listed apart, in input order.
pub fn rerank<'c>(
    rules: &[Box<dyn Rule>],
    items: &[ScoredItem],
    signals: &Signals,
    category: impl Fn(&Asin) -> Option<&'c str>,
) -> Ranking {
    let mut removed = Vec::new();
    let mut reranked: Vec<RerankedItem> = items
        .iter()
        .enumerate()
        .filter_map(|(rank, item)| {
            let candidate = Candidate {
                asin: item.asin.as_str(),
                category: category(&item.asin),
                score: item.score,
            };
            if let Some(rule) = rules.iter().find(|r| r.removes(&candidate, signals)) {
                removed.push(RemovedItem {
                    asin: item.asin.to_string(),
                    original_rank: rank,
                    rule: rule.name(),
                });
                return None;
            }
            let reasons: Vec<Reason> = rules
                .iter()
                .map(|rule| Reason {
                    rule: rule.name(),
                    delta: rule.adjust(&candidate, signals),
                })
                .filter(|reason| reason.delta != 0.0)
                .collect();
            let score = item.score + reasons.iter().map(|r| r.delta).sum::<f64>();
            Some(RerankedItem {
                asin: item.asin.to_string(),
                score,
                original_score: item.score,
                original_rank: rank,
                reasons,
            })
        })
        .collect();
    // A stable sort: equal scores keep their input order.
    reranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ranking {
        items: reranked,
        removed,
    }
}

fn unchanged(items: Vec<ScoredItem>, reason: &'static str) -> Reranked {
    let items = items
        .into_iter()
        .enumerate()
        .map(|(rank, item)| RerankedItem {
            asin: item.asin.to_string(),
            score: item.score,
            original_score: item.score,
            original_rank: rank,
            reasons: Vec::new(),
        })
        .collect();
    Reranked {
        ranking: Ranking {
            items,
            removed: Vec::new(),
        },
        context: ContextSummary {
            available: false,
            unavailable_reason: Some(reason),
            recent_items: 0,
            category_shares: BTreeMap::new(),
            last_active: None,
            purchased_items: 0,
        },
    }
}

fn summary(context: &UserContext, signals: &Signals) -> ContextSummary {
    ContextSummary {
        available: true,
        unavailable_reason: None,
        recent_items: context.recent_items.len(),
        category_shares: signals
            .category_share
            .iter()
            .map(|(c, s)| (c.clone(), *s))
            .collect(),
        last_active: context.last_active.clone(),
        purchased_items: context.purchased.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use proptest::prelude::*;

    type Categories = HashMap<Asin, String>;

    fn item(asin: &str, score: f64) -> ScoredItem {
        ScoredItem {
            asin: Asin::new(asin.to_owned()).unwrap(),
            score,
        }
    }

    fn config() -> RerankConfig {
        RerankConfig {
            intent_boost: RuleConfig {
                enabled: true,
                weight: 0.3,
            },
            recent_penalty: RuleConfig {
                enabled: true,
                weight: 0.5,
            },
            purchased: RuleConfig {
                enabled: true,
                weight: 1.0,
            },
            purchased_remove: false,
        }
    }

    fn signals(recent: &[&str], shares: &[(&str, f64)]) -> Signals {
        Signals {
            recency: recent
                .iter()
                .enumerate()
                .map(|(i, a)| (a.to_string(), i))
                .collect(),
            window: 20,
            category_share: shares.iter().map(|(c, s)| (c.to_string(), *s)).collect(),
            purchased: Default::default(),
        }
    }

    fn order(reranked: &[RerankedItem]) -> Vec<&str> {
        reranked.iter().map(|i| i.asin.as_str()).collect()
    }

    fn categories(pairs: &[(&str, &str)]) -> Categories {
        pairs
            .iter()
            .map(|(a, c)| (Asin::new(a.to_string()).unwrap(), c.to_string()))
            .collect()
    }

    #[test]
    fn intent_boost_alone_lifts_the_browsed_category() {
        let rules = RerankConfig {
            recent_penalty: RuleConfig {
                enabled: false,
                weight: 0.5,
            },
            ..config()
        }
        .rules();
        let items = [item("a", 0.9), item("b", 0.8), item("c", 0.7)];
        let cats = categories(&[("a", "Garden"), ("c", "Books")]);
        let out = rerank(&rules, &items, &signals(&["c"], &[("Books", 1.0)]), |a| {
            cats.get(a).map(String::as_str)
        })
        .items;
        assert_eq!(order(&out), ["c", "a", "b"]);
        assert_eq!(
            out[0].reasons,
            [Reason {
                rule: "intent_boost",
                delta: 0.3
            }]
        );
        assert!((out[0].score - 1.0).abs() < 1e-12);
    }

    #[test]
    fn recent_penalty_alone_lowers_what_was_just_seen() {
        let rules = RerankConfig {
            intent_boost: RuleConfig {
                enabled: false,
                weight: 0.3,
            },
            ..config()
        }
        .rules();
        let items = [item("a", 0.9), item("b", 0.8), item("c", 0.7)];
        let out = rerank(&rules, &items, &signals(&["a"], &[]), |_| None).items;
        assert_eq!(order(&out), ["b", "c", "a"]);
        assert_eq!(out[2].reasons[0].rule, "recent_penalty");
    }

    #[test]
    fn both_rules_together_and_ties_keep_input_order() {
        let rules = config().rules();
        let items = [item("x", 0.5), item("y", 0.5), item("z", 0.5)];
        let out = rerank(&rules, &items, &signals(&[], &[]), |_| None).items;
        assert_eq!(order(&out), ["x", "y", "z"]);
        assert!(out.iter().all(|i| i.reasons.is_empty()));
    }

    #[test]
    fn no_context_returns_the_input_unchanged_and_flagged() {
        let items = vec![item("b", 0.1), item("a", 0.9)];
        let out = unchanged(items, "redis_unavailable");
        assert_eq!(order(&out.ranking.items), ["b", "a"]);
        assert!(!out.context.available);
        assert_eq!(out.context.unavailable_reason, Some("redis_unavailable"));
    }

    fn arb_items() -> impl Strategy<Value = Vec<ScoredItem>> {
        let asin = "[a-f]{1,2}";
        let score = prop_oneof![
            any::<f64>().prop_filter("finite", |s| s.is_finite()),
            -1.0..1.0f64
        ];
        prop::collection::vec((asin, score), 0..40)
            .prop_map(|pairs| pairs.into_iter().map(|(a, s)| item(&a, s)).collect())
    }

    fn arb_signals() -> impl Strategy<Value = Signals> {
        (
            prop::collection::vec("[a-f]{1,2}", 0..20),
            prop::collection::hash_map("[A-C]", 1i64..10, 0..3),
            prop::collection::vec("[a-f]{1,2}", 0..6),
        )
            .prop_map(|(recent, counts, purchased)| {
                let context = UserContext {
                    recent_items: recent,
                    recent_categories: counts.into_iter().collect(),
                    last_active: None,
                    purchased,
                };
                Signals::from_context(&context, 20)
            })
    }

    /// Every rule on, bought items demoted or (with `remove`) removed.
    fn all_rules(remove: bool) -> Vec<Box<dyn Rule>> {
        RerankConfig {
            purchased_remove: remove,
            ..config()
        }
        .rules()
    }

    fn category_of(asin: &Asin) -> Option<&'static str> {
        match asin.as_str().as_bytes()[0] {
            b'a' | b'b' => Some("A"),
            b'c' => Some("B"),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn the_output_and_the_removed_are_a_permutation_of_the_input(items in arb_items(), signals in arb_signals(), remove in any::<bool>()) {
            let out = rerank(&all_rules(remove), &items, &signals, category_of);
            let mut ranks: Vec<usize> = out.items.iter().map(|i| i.original_rank)
                .chain(out.removed.iter().map(|r| r.original_rank))
                .collect();
            ranks.sort_unstable();
            prop_assert_eq!(ranks, (0..items.len()).collect::<Vec<_>>());
            for reranked in &out.items {
                prop_assert_eq!(&reranked.asin, items[reranked.original_rank].asin.as_str());
            }
            for removed in &out.removed {
                prop_assert_eq!(&removed.asin, items[removed.original_rank].asin.as_str());
                prop_assert!(signals.purchased.contains(&removed.asin));
            }
        }

        #[test]
        fn scores_stay_finite_and_sorted(items in arb_items(), signals in arb_signals(), remove in any::<bool>()) {
            let out = rerank(&all_rules(remove), &items, &signals, category_of).items;
            prop_assert!(out.iter().all(|i| i.score.is_finite()));
            prop_assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
        }

        #[test]
        fn an_empty_context_keeps_a_ranked_input_as_it_is(mut items in arb_items()) {
            items.sort_by(|a, b| b.score.total_cmp(&a.score));
            let out = rerank(&config().rules(), &items, &Signals::default(), category_of).items;
            prop_assert_eq!(out.iter().map(|i| i.original_rank).collect::<Vec<_>>(), (0..items.len()).collect::<Vec<_>>());
        }

        #[test]
        fn without_context_the_output_is_the_identity(items in arb_items()) {
            let out = unchanged(items.clone(), "no_recent_activity");
            prop_assert_eq!(out.ranking.items.iter().map(|i| i.original_rank).collect::<Vec<_>>(), (0..items.len()).collect::<Vec<_>>());
            prop_assert!(out.ranking.items.iter().zip(&items).all(|(o, i)| o.score == i.score));
        }

        #[test]
        fn the_same_input_gives_the_same_output(items in arb_items(), signals in arb_signals(), remove in any::<bool>()) {
            let rules = all_rules(remove);
            let first = rerank(&rules, &items, &signals, category_of);
            let second = rerank(&rules, &items, &signals, category_of);
            prop_assert_eq!(first, second);
        }
    }
}
