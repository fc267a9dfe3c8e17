//! The protocol (README.md, "Does the realtime context pay?"): the history and the evaluated
//! half, the input ranking, the context replayed with the Redis context's own rules
//! ([`Model`]), and the target's rank under each variant of the re-ranker's rules.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::input::Dataset;
use super::rank::{Point, Units, Weights, rank};
use crate::context::model::{ActorKeys, Model, Recorded};
use crate::event::{Event, EventType};
use crate::rerank::{Candidate, Signals};

/// The cut-off of the metrics: the top 20 of the re-ranked list.
pub const CUTOFF: usize = 20;

/// A variant of the rules, and what it is for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub group: Group,
    #[serde(skip)]
    pub weights: Weights,
    pub intent_boost: Option<f64>,
    pub recent_penalty: Option<f64>,
    pub purchased: Option<f64>,
    /// The rule a sweep moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swept: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The input ranking alone; one rule alone; the configured rules.
    Input,
    Alone,
    Configured,
    /// One rule's weight moved, the others as configured (`--plot`).
    Sweep,
    /// Every combination of the grid's weights (`--grid`).
    Grid,
}

impl Variant {
    pub fn new(name: impl Into<String>, group: Group, weights: Weights) -> Self {
        Self {
            name: name.into(),
            group,
            weights,
            intent_boost: weights.intent_boost,
            recent_penalty: weights.recent_penalty,
            purchased: weights.purchased,
            swept: None,
        }
    }

    /// A variant of a sweep of `rule`'s weight.
    pub fn sweep(rule: &'static str, weights: Weights) -> Self {
        Self {
            swept: Some(rule),
            ..Self::new(super::describe(&weights), Group::Sweep, weights)
        }
    }
}

/// Recall, MRR and NDCG at [`CUTOFF`] over a set of points.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Metrics {
    pub points: u64,
    pub recall: f64,
    pub mrr: f64,
    pub ndcg: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    points: u64,
    hits: u64,
    reciprocal: f64,
    gain: f64,
}

impl Sums {
    fn add(&mut self, rank: Option<usize>) {
        self.points += 1;
        if let Some(rank) = rank.filter(|r| *r <= CUTOFF) {
            self.hits += 1;
            self.reciprocal += 1.0 / rank as f64;
            self.gain += 1.0 / (rank as f64 + 1.0).log2();
        }
    }

    fn metrics(&self) -> Metrics {
        let n = self.points.max(1) as f64;
        Metrics {
            points: self.points,
            recall: self.hits as f64 / n,
            mrr: self.reciprocal / n,
            ndcg: self.gain / n,
        }
    }
}

/// A variant's result: over all points, and by the target's event type.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    #[serde(flatten)]
    pub variant: Variant,
    pub all: Metrics,
    pub by_type: HashMap<&'static str, Metrics>,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub events: usize,
    pub history_events: usize,
    pub evaluated_events: usize,
    pub split_at: DateTime<Utc>,
    pub candidates: usize,
    /// Evaluated events whose actor had a context just before them.
    pub points: u64,
    /// The share of the points' targets among the candidates.
    pub targets_in_candidates: f64,
    /// The share of the points' targets already in the actor's recent items.
    pub targets_in_recent_items: f64,
    pub points_by_type: HashMap<&'static str, u64>,
    pub variants: Vec<Scored>,
    pub seconds: f64,
}

/// The input ranking: the `n` most frequent items of the history (ties by ASIN), each scored
/// by its count over the top item's.
pub struct InputRanking {
    /// Item of each position.
    pub items: Vec<u32>,
    pub scores: Vec<f64>,
    /// Position of each item, if a candidate.
    position: Vec<Option<u32>>,
    /// Positions of each category's candidates.
    by_category: Vec<Vec<usize>>,
}

impl InputRanking {
    pub fn from_history(data: &Dataset, history: usize, n: usize) -> Self {
        let mut counts = vec![0u64; data.items.len()];
        for row in &data.rows[..history] {
            counts[row.item as usize] += 1;
        }
        let mut ranked: Vec<u32> = (0..data.items.len() as u32)
            .filter(|i| counts[*i as usize] > 0)
            .collect();
        ranked.sort_by(|a, b| {
            counts[*b as usize]
                .cmp(&counts[*a as usize])
                .then_with(|| data.items[*a as usize].cmp(&data.items[*b as usize]))
        });
        ranked.truncate(n);
        let top = ranked.first().map_or(1, |i| counts[*i as usize]) as f64;
        let mut position = vec![None; data.items.len()];
        let mut by_category = vec![Vec::new(); data.categories.len()];
        for (at, item) in ranked.iter().enumerate() {
            position[*item as usize] = Some(at as u32);
            if let Some(category) = data.item_category[*item as usize] {
                by_category[category as usize].push(at);
            }
        }
        Self {
            scores: ranked
                .iter()
                .map(|i| counts[*i as usize] as f64 / top)
                .collect(),
            items: ranked,
            position,
            by_category,
        }
    }
}

/// The protocol's settings.
#[derive(Debug, Clone, Copy)]
pub struct Protocol {
    /// Where the time span is cut: the history before, the evaluated events after.
    pub split: f64,
    pub candidates: usize,
}

/// Runs the protocol over `data`, the context replayed by `model`, each point ranked under
/// every variant; `progress` hears of every tenth of the events.
pub fn run(
    data: &Dataset,
    model: &Model,
    variants: &[Variant],
    protocol: Protocol,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (Some(first), Some(last)) = (data.rows.first(), data.rows.last()) else {
        anyhow::bail!("no events to evaluate on");
    };
    let span = (last.ts - first.ts).num_milliseconds() as f64;
    let split_at = first.ts + chrono::TimeDelta::milliseconds((span * protocol.split) as i64);
    let history = data.rows.partition_point(|row| row.ts < split_at);
    if history == 0 || history == data.rows.len() {
        anyhow::bail!(
            "--split {} leaves no events on one side (the events span {} to {}): nothing to learn from or nothing to evaluate",
            protocol.split,
            first.ts,
            last.ts
        );
    }
    let ranking = InputRanking::from_history(data, history, protocol.candidates);
    let window = model.config().recent_items_cap;
    let names: HashMap<&str, u32> = data
        .items
        .iter()
        .enumerate()
        .map(|(i, asin)| (asin.as_str(), i as u32))
        .collect();

    let mut keys: Vec<ActorKeys> = vec![ActorKeys::default(); data.actors.len()];
    let mut sums = vec![[Sums::default(); EventType::ALL.len() + 1]; variants.len()];
    let (mut points, mut in_candidates, mut in_recent) = (0u64, 0u64, 0u64);
    let mut points_by_type = [0u64; EventType::ALL.len()];
    let mut touched_stamp = vec![usize::MAX; ranking.items.len()];
    let mut last_report = Instant::now();
    for (index, row) in data.rows.iter().enumerate() {
        if last_report.elapsed() >= Duration::from_secs(2) {
            progress(index, data.rows.len());
            last_report = Instant::now();
        }
        let now = row.ts.timestamp_millis();
        let actor = row.actor as usize;
        if index >= history {
            let context = model.load(&keys[actor], now);
            if !context.is_empty() {
                points += 1;
                let kind = row.event_type as usize;
                points_by_type[kind] += 1;
                let asin = data.items[row.item as usize].as_str();
                in_recent += u64::from(context.recent_items.iter().any(|i| i == asin));
                let signals = Signals::from_context(&context, window);
                let point = ranking.position[row.item as usize].map(|target| {
                    in_candidates += 1;
                    point(
                        data,
                        &ranking,
                        &signals,
                        &names,
                        target as usize,
                        index,
                        &mut touched_stamp,
                    )
                });
                for (variant, sums) in variants.iter().zip(sums.iter_mut()) {
                    let rank = point
                        .as_ref()
                        .and_then(|p| rank(&ranking.scores, p, &variant.weights));
                    sums[kind].add(rank);
                    sums[EventType::ALL.len()].add(rank);
                }
            }
        }
        let event = Event {
            event_id: uuid::Uuid::nil(),
            actor: data.actors[actor].clone(),
            asin: data.items[row.item as usize].clone(),
            event_type: row.event_type,
            metadata: None,
            received_at: row.ts,
            ts: Some(row.ts),
            client_event_id: false,
        };
        let category = row.category.map(|c| data.categories[c as usize].as_str());
        model.record(
            &mut keys[actor],
            Recorded {
                event: &event,
                category,
            },
            now,
        );
    }
    progress(data.rows.len(), data.rows.len());
    let share = |n: u64| n as f64 / points.max(1) as f64;
    Ok(Outcome {
        events: data.rows.len(),
        history_events: history,
        evaluated_events: data.rows.len() - history,
        split_at,
        candidates: ranking.items.len(),
        points,
        targets_in_candidates: share(in_candidates),
        targets_in_recent_items: share(in_recent),
        points_by_type: EventType::ALL
            .iter()
            .map(|t| (t.as_str(), points_by_type[*t as usize]))
            .collect(),
        variants: variants
            .iter()
            .zip(&sums)
            .map(|(variant, sums)| Scored {
                variant: variant.clone(),
                all: sums[EventType::ALL.len()].metrics(),
                by_type: EventType::ALL
                    .iter()
                    .map(|t| (t.as_str(), sums[*t as usize].metrics()))
                    .collect(),
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The point of the target at `target` (a candidate's position): its changes, and those of
/// every candidate the context touches (of a category with a share, recent, or bought).
fn point(
    data: &Dataset,
    ranking: &InputRanking,
    signals: &Signals,
    names: &HashMap<&str, u32>,
    target: usize,
    stamp: usize,
    touched_stamp: &mut [usize],
) -> Point {
    let units = |at: usize| {
        let item = ranking.items[at] as usize;
        let category = data.item_category[item].map(|c| data.categories[c as usize].as_str());
        let candidate = Candidate {
            asin: data.items[item].as_str(),
            category,
            score: ranking.scores[at],
        };
        Units::of(&candidate, signals)
    };
    let mut touched = Vec::new();
    let mut touch = |at: usize, touched: &mut Vec<(usize, Units)>| {
        if at != target && touched_stamp[at] != stamp {
            touched_stamp[at] = stamp;
            touched.push((at, units(at)));
        }
    };
    for category in signals.category_share.keys() {
        if let Some(c) = data.category_index(category) {
            for &at in &ranking.by_category[c] {
                touch(at, &mut touched);
            }
        }
    }
    for asin in signals.recency.keys().chain(signals.purchased.iter()) {
        if let Some(at) = names
            .get(asin.as_str())
            .and_then(|item| ranking.position[*item as usize])
        {
            touch(at as usize, &mut touched);
        }
    }
    Point {
        target,
        target_units: units(target),
        touched,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::context::ContextConfig;
    use crate::rerank::RerankConfig;

    /// Popularity in the history: P1 four times (category A), P2 three (B), P3 twice (B), P4
    /// once (A). Then u9 views P4 and views it again; u8 views P1, then P2.
    fn by_hand() -> Dataset {
        let mut data = Dataset::default();
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let history = [
            ("P1", "A", 4),
            ("P2", "B", 3),
            ("P3", "B", 2),
            ("P4", "A", 1),
        ];
        let mut t = 0;
        for (item, category, times) in history {
            for _ in 0..times {
                data.push(&format!("h{t}"), item, category, EventType::View, at(t))
                    .unwrap();
                t += 1;
            }
        }
        for (actor, item, category, s) in [
            ("u9", "P4", "A", 100),
            ("u9", "P4", "A", 101),
            ("u8", "P1", "A", 102),
            ("u8", "P2", "B", 103),
        ] {
            data.push(actor, item, category, EventType::View, at(s))
                .unwrap();
        }
        data.sort();
        data
    }

    #[test]
    fn the_ranks_of_two_points_worked_out_by_hand() {
        let data = by_hand();
        let variants = super::super::variants(&RerankConfig::default(), false, false);
        let protocol = Protocol {
            split: 0.5,
            candidates: 1000,
        };
        let model = Model::new(ContextConfig::default());
        let outcome = run(&data, &model, &variants, protocol, |_, _| {}).unwrap();
        assert_eq!((outcome.history_events, outcome.points), (10, 2));
        assert_eq!(outcome.targets_in_recent_items, 0.5, "u9's P4, not u8's P2");
        // Input: P1 1.0, P2 0.75, P3 0.5, P4 0.25. u9's target P4 (recent, category A's share
        // 1): 4th; with the intent boost (A +0.3: P1 1.3, P4 0.55) 3rd; with the recent
        // penalty (-0.5) last. u8's target P2 (recent P1, A's share 1): 2nd; with the recent
        // penalty P1 falls to 0.5, P2 1st; with the intent boost P1 rises, P2 2nd; configured
        // P1 0.8, P2 2nd.
        let mrr: Vec<(String, f64)> = outcome
            .variants
            .iter()
            .map(|v| (v.variant.name.clone(), v.all.mrr))
            .collect();
        let expected = [
            (1.0 / 4.0 + 1.0 / 2.0) / 2.0,
            (1.0 / 3.0 + 1.0 / 2.0) / 2.0,
            (1.0 / 4.0 + 1.0) / 2.0,
            (1.0 / 4.0 + 1.0 / 2.0) / 2.0,
            (1.0 / 4.0 + 1.0 / 2.0) / 2.0,
        ];
        for ((name, got), want) in mrr.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{name}: {got} against {want}");
        }
        assert!(outcome.variants.iter().all(|v| v.all.recall == 1.0));
    }
}
