//! Where an evaluation point's target lands when the re-ranker's rules move the candidates: the
//! rank [`rerank`](crate::rerank::rerank) would give it, without re-ranking the thousand
//! candidates for every point and every variant.
//!
//! Only the candidates the context touches (an item of a category the actor browsed, an item in
//! the recent list, an item bought) can move; the others keep their input score, and those ahead
//! of the target among them are counted with one binary search over the input ranking. Each
//! touched candidate's change under a rule is read from the rule itself at weight 1 (every rule
//! is linear in its weight), and a variant's score is added up as `rerank` adds it, so that the
//! ranks are exactly its ranks (`a_rank_is_the_rank_rerank_gives`).

use crate::rerank::{Candidate, IntentBoost, Purchased, RecentPenalty, Rule, Signals};

/// The rules of a variant: each one's weight, or `None` if it is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub intent_boost: Option<f64>,
    pub recent_penalty: Option<f64>,
    pub purchased: Option<f64>,
    /// The purchased rule removes bought items instead of demoting them.
    pub purchased_remove: bool,
}

impl Weights {
    pub const NONE: Weights = Weights {
        intent_boost: None,
        recent_penalty: None,
        purchased: None,
        purchased_remove: false,
    };

    /// The rules themselves, as the service builds them.
    pub fn rules(&self) -> Vec<Box<dyn Rule>> {
        let mut rules: Vec<Box<dyn Rule>> = Vec::new();
        if let Some(weight) = self.intent_boost {
            rules.push(Box::new(IntentBoost { weight }));
        }
        if let Some(weight) = self.recent_penalty {
            rules.push(Box::new(RecentPenalty { weight }));
        }
        if let Some(weight) = self.purchased {
            rules.push(Box::new(Purchased {
                weight,
                remove: self.purchased_remove,
            }));
        }
        rules
    }

    /// The score `rerank` gives a candidate of `base` score whose changes at weight 1 are
    /// `unit`: each enabled rule's delta, the non-zero ones summed in the rules' order, added.
    fn score(&self, base: f64, unit: &Units) -> f64 {
        let deltas = [
            self.intent_boost.map(|w| w * unit.intent_boost),
            self.recent_penalty.map(|w| w * unit.recent_penalty),
            self.purchased
                .filter(|_| !self.purchased_remove)
                .map(|w| w * unit.purchased),
        ];
        base + deltas
            .into_iter()
            .flatten()
            .filter(|d| *d != 0.0)
            .sum::<f64>()
    }

    fn removes(&self, unit: &Units) -> bool {
        self.purchased.is_some() && self.purchased_remove && unit.bought
    }
}

/// A candidate's change under each rule at weight 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    intent_boost: f64,
    recent_penalty: f64,
    purchased: f64,
    bought: bool,
}

impl Units {
    pub fn of(candidate: &Candidate, signals: &Signals) -> Self {
        let purchased = Purchased {
            weight: 1.0,
            remove: true,
        };
        Self {
            intent_boost: IntentBoost { weight: 1.0 }.adjust(candidate, signals),
            recent_penalty: RecentPenalty { weight: 1.0 }.adjust(candidate, signals),
            purchased: Purchased {
                weight: 1.0,
                remove: false,
            }
            .adjust(candidate, signals),
            bought: purchased.removes(candidate, signals),
        }
    }
}

/// A point: the target's place in the input ranking and its changes, and those of every other
/// candidate the context touches.
#[derive(Debug, Default)]
pub struct Point {
    pub target: usize,
    pub target_units: Units,
    /// Touched candidates other than the target: (position, changes).
    pub touched: Vec<(usize, Units)>,
}

/// The target's rank (1 for the first) under `weights`, among candidates of input `scores`
/// (descending; position breaks ties); `None` if a rule removed it.
pub fn rank(scores: &[f64], point: &Point, weights: &Weights) -> Option<usize> {
    if weights.removes(&point.target_units) {
        return None;
    }
    let target = point.target;
    let score = weights.score(scores[target], &point.target_units);
    let ahead = |other: f64, position: usize| match other.total_cmp(&score) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => position < target,
        std::cmp::Ordering::Less => false,
    };
    // The candidates ahead on their input scores: a prefix of the input ranking, found by
    // bisection (`ahead` holds, then does not).
    let mut low = 0;
    let mut high = scores.len();
    while low < high {
        let middle = (low + high) / 2;
        if ahead(scores[middle], middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let mut count = low - usize::from(target < low);
    for (position, units) in &point.touched {
        count -= usize::from(*position < low);
        if !weights.removes(units) && ahead(weights.score(scores[*position], units), *position) {
            count += 1;
        }
    }
    Some(count + 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::context::UserContext;
    use crate::event::Asin;
    use crate::rerank::{ScoredItem, rerank};

    fn weights() -> impl Strategy<Value = Weights> {
        let weight = || prop::option::of(prop_oneof![Just(0.0), Just(0.3), Just(1.0), 0.0..2.0f64]);
        (weight(), weight(), weight(), any::<bool>()).prop_map(|(i, r, p, remove)| Weights {
            intent_boost: i,
            recent_penalty: r,
            purchased: p,
            purchased_remove: remove,
        })
    }

    proptest! {
        #[test]
        fn a_rank_is_the_rank_rerank_gives(
            counts in prop::collection::vec(1..6u32, 1..40),
            categories in prop::collection::vec(prop::option::of(0..4usize), 40),
            shares in prop::collection::vec(0..4i64, 4),
            recent in prop::collection::vec(0..40usize, 0..8),
            bought in prop::collection::vec(0..40usize, 0..4),
            target in 0..40usize,
            weights in weights(),
        ) {
            // Candidates in input order: scores descending (ties, as counts tie, in order).
            let mut counts = counts;
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let n = counts.len();
            let target = target % n;
            let top = counts[0] as f64;
            let scores: Vec<f64> = counts.iter().map(|c| *c as f64 / top).collect();
            let asin = |i: usize| format!("I{i}");
            let category = |i: usize| categories[i].map(|c| format!("C{c}"));
            let context = UserContext {
                recent_items: recent.iter().filter(|i| **i < n).map(|i| asin(*i)).collect(),
                recent_categories: shares.iter().enumerate().map(|(c, s)| (format!("C{c}"), *s)).collect(),
                last_active: None,
                purchased: bought.iter().filter(|i| **i < n).map(|i| asin(*i)).collect(),
            };
            let signals = Signals::from_context(&context, 8);
            let units = |i: usize| {
                let category = category(i);
                Units::of(&Candidate { asin: &asin(i), category: category.as_deref(), score: scores[i] }, &signals)
            };
            let point = Point {
                target,
                target_units: units(target),
                touched: (0..n).filter(|i| *i != target && units(*i) != Units::default())
                    .map(|i| (i, units(i))).collect(),
            };
            let items: Vec<ScoredItem> = (0..n)
                .map(|i| ScoredItem { asin: Asin::new(asin(i)).unwrap(), score: scores[i] })
                .collect();
            let names: HashMap<String, Option<String>> = (0..n).map(|i| (asin(i), category(i))).collect();
            let ranking = rerank(&weights.rules(), &items, &signals, |a| names[a.as_str()].as_deref());
            let expected = ranking.items.iter().position(|item| item.asin == asin(target)).map(|at| at + 1);
            prop_assert_eq!(rank(&scores, &point, &weights), expected);
        }
    }
}
