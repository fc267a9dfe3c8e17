//! The context's model (`src/context/model.rs`) against the real Redis script: random sequences of
//! events (types, repeated items and ids, late events, purchases, the cap, the distinct list, the
//! weights) through both, and what a load reads and each key's lifetime compared after every
//! event; and, with a TTL of a second, keys expiring and purchases ageing out.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::json;

use event_ingest::context::model::{ActorKeys, Model, Recorded};
use event_ingest::context::{
    CategoryWeights, ContextConfig, ContextStore, ContextUpdate, KEY_NAMES, Keys,
};
use event_ingest::event::{Actor, Arrival, Event, EventRules};
use event_ingest::health::Health;
use event_ingest::secret::SecretUrl;

use crate::helpers::{REDIS_URL, RedisPrefix};

const TYPES: [&str; 5] = ["view", "click", "add_to_cart", "purchase", "rate"];
const IDS: [&str; 4] = [
    "019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b10",
    "019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b11",
    "019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b12",
    "019ac9a2-5bd4-7c51-a2f0-5d6a3f1c2b13",
];

/// One event of a sequence.
#[derive(Debug, Clone)]
struct Step {
    item: usize,
    category: Option<usize>,
    kind: usize,
    /// How long before now it happened (a late event).
    late_ms: i64,
    /// A client id from a small pool (so that some repeat), or none.
    id: Option<usize>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..5usize,
        prop::option::of(0..3usize),
        0..5usize,
        prop_oneof![Just(0i64), 0..600_000i64],
        prop::option::weighted(0.3, 0..IDS.len()),
    )
        .prop_map(|(item, category, kind, late_ms, id)| Step {
            item,
            category,
            kind,
            late_ms,
            id,
        })
}

/// The config of a case: the cap, the distinct list, the weights; a TTL and a purchase TTL.
fn config(
    cap: usize,
    distinct: bool,
    weights: [u32; 5],
    ttl: Duration,
    bought: Duration,
) -> ContextConfig {
    let text = TYPES
        .iter()
        .zip(weights)
        .map(|(t, w)| format!("{t}={w}"))
        .collect::<Vec<_>>()
        .join(",");
    ContextConfig {
        ttl,
        recent_items_cap: cap,
        distinct_recent_items: distinct,
        category_weights: text.parse::<CategoryWeights>().unwrap(),
        purchased_ttl: bought,
        timeout: Duration::from_secs(5),
        keys: Keys {
            prefix: String::new(),
            hash_tags: false,
        },
    }
}

/// Both sides of a comparison: the real store, the model, and the actor.
struct Pair {
    store: ContextStore,
    model: Model,
    keys: ActorKeys,
    actor: Actor,
    names: Vec<String>,
    redis: redis::aio::MultiplexedConnection,
}

impl Pair {
    async fn new(mut config: ContextConfig, prefix: &RedisPrefix, visitor: bool) -> Self {
        config.keys.prefix = prefix.0.clone();
        let actor: Actor = if visitor {
            Actor::Visitor(event_ingest::event::AnonymousId::new("v-model".to_owned()).unwrap())
        } else {
            Actor::User(event_ingest::event::UserId::new(77).unwrap())
        };
        let names = KEY_NAMES
            .iter()
            .map(|name| config.keys.key(&actor, name))
            .collect();
        let store = ContextStore::new(
            &SecretUrl::new(REDIS_URL),
            false,
            config.clone(),
            &Health::default(),
        )
        .unwrap();
        let redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            store,
            model: Model::new(config),
            keys: ActorKeys::default(),
            actor,
            names,
            redis,
        }
    }

    fn event(&self, step: &Step) -> Event {
        let now = Utc::now();
        let mut body = json!({
            "asin": format!("I{}", step.item),
            "event_type": TYPES[step.kind],
            "timestamp": (now - TimeDelta::milliseconds(step.late_ms)).to_rfc3339(),
        });
        match &self.actor {
            Actor::User(user) => body["user_id"] = json!(user.get()),
            Actor::Visitor(visitor) => body["anonymous_id"] = json!(visitor.as_str()),
        }
        if let Some(id) = step.id {
            body["event_id"] = json!(IDS[id]);
        }
        Event::from_value(body, &EventRules::default(), Arrival::at(now)).unwrap()
    }

    /// Records `step` on both sides; whether each counted it.
    async fn record(&mut self, step: &Step) -> (bool, bool) {
        let event = self.event(step);
        let category = step.category.map(|c| format!("C{c}"));
        let now = Utc::now().timestamp_millis();
        let by_model = self.model.record(
            &mut self.keys,
            Recorded {
                event: &event,
                category: category.as_deref(),
            },
            now,
        );
        let by_redis = self
            .store
            .record(&[ContextUpdate {
                event: &event,
                category: category.as_deref(),
            }])
            .await
            .unwrap()[0];
        (by_model, by_redis)
    }

    /// The two loads, and each key's remaining lifetime (ms; -2 for no key) on both sides.
    async fn compare(&mut self) -> Result<(), TestCaseError> {
        let now = Utc::now().timestamp_millis();
        let real = self.store.load(&self.actor).await.unwrap();
        let modelled = self.model.load(&self.keys, now);
        prop_assert_eq!(&real.recent_items, &modelled.recent_items);
        prop_assert_eq!(&real.recent_categories, &modelled.recent_categories);
        prop_assert_eq!(&real.last_active, &modelled.last_active);
        prop_assert_eq!(&real.purchased, &modelled.purchased);
        for (name, expiry) in self.names.iter().zip(self.model.expiries(&self.keys, now)) {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(name)
                .query_async(&mut self.redis)
                .await
                .unwrap();
            match expiry {
                None => prop_assert_eq!(pttl, -2, "{} exists in Redis only", name),
                Some(at) => prop_assert!(
                    (pttl - (at - now)).abs() < 1_500,
                    "{name}: Redis {pttl} ms, the model {} ms",
                    at - now
                ),
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_model_and_the_script_agree_event_by_event(
        steps in prop::collection::vec(step(), 1..24),
        cap in 1..5usize,
        distinct in any::<bool>(),
        weights in prop::array::uniform5(0..3u32),
        visitor in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let prefix = RedisPrefix::new();
            let config = config(cap, distinct, weights, Duration::from_secs(900), Duration::from_secs(30 * 86_400));
            let mut pair = Pair::new(config, &prefix, visitor).await;
            for step in &steps {
                let (model, real) = pair.record(step).await;
                prop_assert_eq!(model, real, "counted: {:?}", step);
                pair.compare().await?;
                // Purchases' and ids' scores are the time in ms: a step each.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_and_purchases_age_out_alike() {
    let prefix = RedisPrefix::new();
    // A second of context, two of purchases.
    let config = config(
        3,
        true,
        [1, 2, 3, 5, 2],
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
    let mut pair = Pair::new(config, &prefix, false).await;
    let step = |item, kind, id| Step {
        item,
        category: Some(item % 2),
        kind,
        late_ms: 0,
        id,
    };
    for s in [step(0, 3, Some(0)), step(1, 0, None), step(0, 1, None)] {
        let (model, real) = pair.record(&s).await;
        assert_eq!(model, real);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    pair.compare().await.unwrap();
    // Past the context's second, only the purchases are left (the ids' set lives as long as the
    // context).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    pair.compare().await.unwrap();
    assert!(
        pair.store
            .load(&pair.actor)
            .await
            .unwrap()
            .recent_items
            .is_empty()
    );
    // A purchase now, and past the two seconds of the first: the first is gone, as it is from
    // the model; the id seen before has expired, so it counts again.
    let (model, real) = pair.record(&step(1, 3, Some(0))).await;
    assert_eq!((model, real), (true, true));
    tokio::time::sleep(Duration::from_millis(900)).await;
    pair.compare().await.unwrap();
    assert_eq!(
        pair.store.load(&pair.actor).await.unwrap().purchased,
        ["I1"]
    );
}
