//! `event-ingest evaluate`: what the realtime context is worth, offline. Sessions from a CSV file
//! or from `interaction_logs` are replayed in time order through the Redis context's own rules
//! ([`crate::context::model`]); every later event whose actor has a context is a point, whose
//! target is its item; a popularity ranking of the history stands for the shop's recommender, and
//! the target's rank in it, re-ranked by each variant of the rules, gives Recall, MRR and NDCG at
//! 20. The protocol is stated in README.md, "Does the realtime context pay?".

mod input;
mod rank;
mod replay;
mod report;

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::{ContextArgs, DatabaseArgs, RerankArgs};
use crate::context::Keys;
use crate::context::model::Model;
use crate::rerank::{MAX_CANDIDATES, RerankConfig};
pub use input::{Dataset, TypeMap, parse_time};
pub use rank::Weights;
pub use replay::{CUTOFF, Group, Metrics, Outcome, Protocol, Variant};

/// The settings of `evaluate`: the input, the protocol, and the service's own context and
/// re-ranking settings (the same flags and environment as `serve`), whose weights are the
/// configured ones.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// A CSV file whose header names the columns actor, asin, category, event_type and ts (RFC
    /// 3339, or seconds since 1970); `-` for standard input.
    #[arg(
        required_unless_present = "from_database",
        conflicts_with = "from_database"
    )]
    pub file: Option<PathBuf>,

    /// Read `interaction_logs`, with the catalogue's categories, instead of a file.
    #[arg(long)]
    pub from_database: bool,

    /// With --from-database: the first event time read (RFC 3339).
    #[arg(long, requires = "from_database", value_parser = time)]
    pub since: Option<DateTime<Utc>>,

    /// With --from-database: the event time read up to, not included.
    #[arg(long, requires = "from_database", value_parser = time)]
    pub until: Option<DateTime<Utc>>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Other vocabularies' event types and ours: `clicks=click,carts=add_to_cart,orders=purchase`.
    #[arg(long, default_value = "")]
    pub type_map: TypeMap,

    /// Where the time span is cut: the history before it, the evaluated events after.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    pub split: f64,

    /// How many of the history's most frequent items the input ranking holds.
    #[arg(long, default_value_t = MAX_CANDIDATES as u64, value_parser = clap::value_parser!(u64).range(1..=MAX_CANDIDATES as u64))]
    pub candidates: u64,

    /// Also every combination of a grid of weights: the best, and where the configured stand.
    #[arg(long)]
    pub grid: bool,

    /// The result as JSON, for machines, instead of the table.
    #[arg(long)]
    pub json: bool,

    /// A PNG of Recall@20 against each rule's weight (the others as configured).
    #[arg(long)]
    pub plot: Option<PathBuf>,

    #[command(flatten)]
    pub context: ContextArgs,

    #[command(flatten)]
    pub rerank: RerankArgs,
}

fn time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text).map_err(|error| error.to_string())
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

/// The weights a sweep and the grid try for each rule.
pub const INTENT_BOOST_GRID: [f64; 9] = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0];
pub const RECENT_PENALTY_GRID: [f64; 8] = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0];
pub const PURCHASED_GRID: [f64; 4] = [0.0, 0.5, 1.0, 2.0];

/// The variants of a run: the input ranking alone, each rule alone at its configured weight,
/// the configured rules; with `sweeps`, each rule's weight moved over its grid; with `grid`,
/// every combination.
pub fn variants(config: &RerankConfig, sweeps: bool, grid: bool) -> Vec<Variant> {
    let remove = config.purchased_remove;
    let configured = Weights {
        intent_boost: config
            .intent_boost
            .enabled
            .then_some(config.intent_boost.weight),
        recent_penalty: config
            .recent_penalty
            .enabled
            .then_some(config.recent_penalty.weight),
        purchased: config.purchased.enabled.then_some(config.purchased.weight),
        purchased_remove: remove,
    };
    let alone = |weights: Weights, name: &str, weight: f64| {
        Variant::new(format!("{name} {weight} alone"), Group::Alone, weights)
    };
    let mut variants = vec![
        Variant::new("input ranking", Group::Input, Weights::NONE),
        alone(
            Weights {
                intent_boost: Some(config.intent_boost.weight),
                ..Weights::NONE
            },
            "intent_boost",
            config.intent_boost.weight,
        ),
        alone(
            Weights {
                recent_penalty: Some(config.recent_penalty.weight),
                ..Weights::NONE
            },
            "recent_penalty",
            config.recent_penalty.weight,
        ),
        alone(
            Weights {
                purchased: Some(config.purchased.weight),
                purchased_remove: remove,
                ..Weights::NONE
            },
            "purchased",
            config.purchased.weight,
        ),
        Variant::new(
            format!("configured ({})", describe(&configured)),
            Group::Configured,
            configured,
        ),
    ];
    if sweeps {
        for w in INTENT_BOOST_GRID {
            let weights = Weights {
                intent_boost: Some(w),
                ..configured
            };
            variants.push(Variant::sweep("intent_boost", weights));
        }
        for w in RECENT_PENALTY_GRID {
            let weights = Weights {
                recent_penalty: Some(w),
                ..configured
            };
            variants.push(Variant::sweep("recent_penalty", weights));
        }
        for w in PURCHASED_GRID {
            let weights = Weights {
                purchased: Some(w),
                ..configured
            };
            variants.push(Variant::sweep("purchased", weights));
        }
    }
    if grid {
        for i in INTENT_BOOST_GRID {
            for r in RECENT_PENALTY_GRID {
                for p in PURCHASED_GRID {
                    let weights = Weights {
                        intent_boost: Some(i),
                        recent_penalty: Some(r),
                        purchased: Some(p),
                        purchased_remove: remove,
                    };
                    variants.push(Variant::new(describe(&weights), Group::Grid, weights));
                }
            }
        }
    }
    variants
}

/// `intent_boost 0.3, recent_penalty 0.5, purchased 1` (the rules that are on).
pub fn describe(weights: &Weights) -> String {
    let parts: Vec<String> = [
        ("intent_boost", weights.intent_boost),
        ("recent_penalty", weights.recent_penalty),
        ("purchased", weights.purchased),
    ]
    .into_iter()
    .filter_map(|(name, weight)| weight.map(|w| format!("{name} {w}")))
    .collect();
    if parts.is_empty() {
        "no rule".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Runs `evaluate`: reads the events, replays them, prints the table or the JSON, draws the
/// plot.
pub async fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let data = match &args.file {
        Some(path) if path.as_os_str() == "-" => {
            Dataset::from_csv(std::io::stdin().lock(), &args.type_map)?
        }
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("could not open {}", path.display()))?;
            Dataset::from_csv(std::io::BufReader::new(file), &args.type_map)
                .with_context(|| format!("reading {}", path.display()))?
        }
        None => {
            let pool = crate::db::connect(&args.database.database_url, 1).await?;
            Dataset::from_database(&pool, args.since, args.until).await?
        }
    };
    eprintln!(
        "read {} events of {} actors and {} items in {:.1} s",
        data.rows.len(),
        data.actors.len(),
        data.items.len(),
        started.elapsed().as_secs_f64()
    );
    let model = Model::new(args.context.config(Keys::default()));
    let config = args.rerank.config();
    let variants = variants(&config, args.plot.is_some() || args.grid, args.grid);
    let protocol = Protocol {
        split: args.split,
        candidates: args.candidates as usize,
    };
    let outcome = replay::run(&data, &model, &variants, protocol, |done, total| {
        eprintln!(
            "replayed {done} of {total} events ({:.0}%)",
            done as f64 * 100.0 / total.max(1) as f64
        );
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", report::table(&outcome));
    }
    if let Some(path) = &args.plot {
        report::plot(&outcome, path)?;
        eprintln!("drew {}", path.display());
    }
    Ok(())
}
