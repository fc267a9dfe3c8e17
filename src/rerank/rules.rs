//! The re-ranking rules. A rule looks at one candidate and the user's recent activity and says how
//! much its score should move; it knows nothing of the other rules. A new rule is a new type here
//! and one line in [`super::RerankConfig::rules`].

use std::collections::{HashMap, HashSet};

use crate::context::UserContext;

/// What the rules know of the user, prepared once per request from the Redis context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// ASIN → position in the recent-items list (0 for the newest); first occurrence wins.
    pub recency: HashMap<String, usize>,
    /// The length the recent-items list is capped at: recency is measured against it.
    pub window: usize,
    /// Category → its share of the recent interactions (the shares sum to 1).
    pub category_share: HashMap<String, f64>,
    /// ASINs the user bought within `--purchased-ttl`.
    pub purchased: HashSet<String>,
}

impl Signals {
    pub fn from_context(context: &UserContext, window: usize) -> Self {
        let mut recency = HashMap::new();
        for (position, asin) in context.recent_items.iter().enumerate() {
            recency.entry(asin.clone()).or_insert(position);
        }
        let total: i64 = context.recent_categories.values().filter(|n| **n > 0).sum();
        let category_share = context
            .recent_categories
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(category, n)| (category.clone(), *n as f64 / total as f64))
            .collect();
        Self {
            recency,
            window: window.max(1),
            category_share,
            purchased: context.purchased.iter().cloned().collect(),
        }
    }
}

/// A candidate as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub asin: &'a str,
    pub category: Option<&'a str>,
    pub score: f64,
}

pub trait Rule: Send + Sync {
    /// The name reported in an item's reasons and used in the configuration.
    fn name(&self) -> &'static str;
    /// How much the candidate's score moves; 0.0 when the rule does not apply.
    fn adjust(&self, candidate: &Candidate, signals: &Signals) -> f64;
    /// Whether the candidate leaves the list altogether (then its score does not matter).
    fn removes(&self, _candidate: &Candidate, _signals: &Signals) -> bool {
        false
    }
}

/// An item in a category the user is browsing gains `weight × share`, the share being the
/// category's part of the user's recent interactions.
#[derive(Debug, Clone, Copy)]
pub struct IntentBoost {
    pub weight: f64,
}

impl Rule for IntentBoost {
    fn name(&self) -> &'static str {
        "intent_boost"
    }

    fn adjust(&self, candidate: &Candidate, signals: &Signals) -> f64 {
        candidate
            .category
            .and_then(|category| signals.category_share.get(category))
            .map_or(0.0, |share| self.weight * share)
    }
}

/// An item the user has just interacted with loses `weight × (window − position) / window`:
/// the full weight for the newest, fading to `weight / window` for the oldest still in the list.
#[derive(Debug, Clone, Copy)]
pub struct RecentPenalty {
    pub weight: f64,
}

impl Rule for RecentPenalty {
    fn name(&self) -> &'static str {
        "recent_penalty"
    }

    fn adjust(&self, candidate: &Candidate, signals: &Signals) -> f64 {
        match signals.recency.get(candidate.asin) {
            Some(&position) => {
                let window = signals.window as f64;
                let freshness = (window - position as f64).max(1.0) / window;
                -self.weight * freshness
            }
            None => 0.0,
        }
    }
}

/// An item the user bought (within `--purchased-ttl`) loses `weight`: a shop should not keep
/// offering what was just bought. With `remove`, it leaves the list instead.
#[derive(Debug, Clone, Copy)]
pub struct Purchased {
    pub weight: f64,
    pub remove: bool,
}

impl Rule for Purchased {
    fn name(&self) -> &'static str {
        "purchased"
    }

    fn adjust(&self, candidate: &Candidate, signals: &Signals) -> f64 {
        if !self.remove && signals.purchased.contains(candidate.asin) {
            -self.weight
        } else {
            0.0
        }
    }

    fn removes(&self, candidate: &Candidate, signals: &Signals) -> bool {
        self.remove && signals.purchased.contains(candidate.asin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(recent: &[&str], categories: &[(&str, i64)]) -> UserContext {
        UserContext {
            recent_items: recent.iter().map(|s| s.to_string()).collect(),
            recent_categories: categories
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            last_active: None,
            purchased: Vec::new(),
        }
    }

    fn candidate<'a>(asin: &'a str, category: Option<&'a str>) -> Candidate<'a> {
        Candidate {
            asin,
            category,
            score: 1.0,
        }
    }

    #[test]
    fn intent_boost_follows_the_category_share() {
        let signals = Signals::from_context(&context(&[], &[("Books", 3), ("Toys", 1)]), 20);
        let rule = IntentBoost { weight: 0.4 };
        assert!((rule.adjust(&candidate("a", Some("Books")), &signals) - 0.3).abs() < 1e-12);
        assert!((rule.adjust(&candidate("b", Some("Toys")), &signals) - 0.1).abs() < 1e-12);
        assert_eq!(rule.adjust(&candidate("c", Some("Garden")), &signals), 0.0);
        assert_eq!(rule.adjust(&candidate("d", None), &signals), 0.0);
    }

    #[test]
    fn recent_penalty_is_larger_the_more_recent() {
        let signals = Signals::from_context(&context(&["new", "mid", "old", "new"], &[]), 4);
        let rule = RecentPenalty { weight: 0.8 };
        let penalty = |asin| rule.adjust(&candidate(asin, None), &signals);
        assert!((penalty("new") + 0.8).abs() < 1e-12);
        assert!((penalty("mid") + 0.6).abs() < 1e-12);
        assert!((penalty("old") + 0.4).abs() < 1e-12);
        assert_eq!(penalty("never"), 0.0);
    }

    #[test]
    fn zero_and_negative_counts_carry_no_share() {
        let signals =
            Signals::from_context(&context(&[], &[("Books", 2), ("Toys", 0), ("Odd", -3)]), 20);
        assert_eq!(signals.category_share.len(), 1);
        assert_eq!(signals.category_share["Books"], 1.0);
    }

    #[test]
    fn purchased_items_are_demoted_or_removed() {
        let signals = Signals::from_context(
            &UserContext {
                purchased: vec!["bought".to_owned()],
                ..context(&[], &[])
            },
            20,
        );
        let demote = Purchased {
            weight: 0.7,
            remove: false,
        };
        assert_eq!(demote.adjust(&candidate("bought", None), &signals), -0.7);
        assert_eq!(demote.adjust(&candidate("other", None), &signals), 0.0);
        assert!(!demote.removes(&candidate("bought", None), &signals));
        let remove = Purchased {
            weight: 0.7,
            remove: true,
        };
        assert_eq!(remove.adjust(&candidate("bought", None), &signals), 0.0);
        assert!(remove.removes(&candidate("bought", None), &signals));
        assert!(!remove.removes(&candidate("other", None), &signals));
    }
}
