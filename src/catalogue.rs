//! Category and brand of an item, cached in process so the request path rarely asks PostgreSQL.
//!
//! The cache is bounded in entries, each entry expires, and misses (items the catalogue does not
//! know) are cached too, for a shorter time. A lookup that fails or is slow is reported as
//! [`Lookup::Unavailable`] and not cached: the caller goes on without a category (the seed's rule)
//! and the background writer enriches the stored row itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use sqlx::PgPool;

use crate::event::Asin;
use crate::telemetry::Throttle;

/// What the catalogue says about an item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemInfo {
    pub category: Option<String>,
    pub brand: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The item is in `items`; its product details, where there are any.
    Known(Arc<ItemInfo>),
    /// The catalogue has no such item.
    Unknown,
    /// The catalogue did not answer in time.
    Unavailable,
}

impl Lookup {
    pub fn category(&self) -> Option<&str> {
        match self {
            Lookup::Known(info) => info.category.as_deref(),
            Lookup::Unknown | Lookup::Unavailable => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogueConfig {
    pub capacity: u64,
    pub ttl: Duration,
    pub miss_ttl: Duration,
    pub timeout: Duration,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(300),
            miss_ttl: Duration::from_secs(30),
            timeout: Duration::from_millis(100),
        }
    }
}

type Entry = Option<Arc<ItemInfo>>;

/// Why the catalogue could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("the catalogue did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the catalogue query failed: {0}")]
    Query(#[source] sqlx::Error),
}

#[derive(Clone)]
pub struct Catalogue {
    pool: PgPool,
    cache: Cache<Asin, Entry>,
    timeout: Duration,
}

/// Known items live for `ttl`, unknown ones for `miss_ttl`.
struct EntryExpiry {
    ttl: Duration,
    miss_ttl: Duration,
}

impl Expiry<Asin, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &Asin, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.ttl
        } else {
            self.miss_ttl
        })
    }
}

/// Lookups fail together when PostgreSQL is down: one warning a second is enough.
static WARNING: Throttle = Throttle::new();

const LOOKUP_SQL: &str = "SELECT asin, category, brand FROM item_catalogue WHERE asin = ANY($1)";

impl Catalogue {
    pub fn new(pool: PgPool, config: CatalogueConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.capacity)
            .expire_after(EntryExpiry {
                ttl: config.ttl,
                miss_ttl: config.miss_ttl,
            })
            .build();
        Self {
            pool,
            cache,
            timeout: config.timeout,
        }
    }

    /// Looks one item up; concurrent lookups of the same missing item share one query.
    pub async fn lookup(&self, asin: &Asin) -> Lookup {
        let fetch = async {
            let found = self.fetch(std::slice::from_ref(asin), self.timeout).await?;
            Ok::<_, CatalogueError>(found.into_values().next())
        };
        match self.cache.try_get_with_by_ref(asin, fetch).await {
            Ok(Some(info)) => Lookup::Known(info),
            Ok(None) => Lookup::Unknown,
            Err(error) => {
                if let Some(suppressed) = WARNING.allow() {
                    tracing::warn!(%asin, %error, suppressed, "catalogue lookup failed; going on without a category");
                }
                metrics::counter!("catalogue_lookup_failures_total").increment(1);
                Lookup::Unavailable
            }
        }
    }

    /// Looks many items up with at most one query, for the cache misses among them.
    pub async fn lookup_many(&self, asins: &[Asin]) -> HashMap<Asin, Lookup> {
        self.lookup_many_within(asins, self.timeout).await
    }

    /// [`Catalogue::lookup_many`] with a deadline of the caller's (the background writer waits
    /// longer than a request may).
    pub async fn lookup_many_within(
        &self,
        asins: &[Asin],
        timeout: Duration,
    ) -> HashMap<Asin, Lookup> {
        let mut found = HashMap::with_capacity(asins.len());
        let mut missing = Vec::new();
        for asin in asins {
            match self.cache.get(asin).await {
                Some(Some(info)) => found.insert(asin.clone(), Lookup::Known(info)),
                Some(None) => found.insert(asin.clone(), Lookup::Unknown),
                None => {
                    missing.push(asin.clone());
                    None
                }
            };
        }
        if missing.is_empty() {
            return found;
        }
        missing.sort_unstable();
        missing.dedup();
        match self.fetch(&missing, timeout).await {
            Ok(mut fetched) => {
                for asin in missing {
                    let entry = fetched.remove(&asin);
                    self.cache.insert(asin.clone(), entry.clone()).await;
                    found.insert(asin, entry.map_or(Lookup::Unknown, Lookup::Known));
                }
            }
            Err(error) => {
                if let Some(suppressed) = WARNING.allow() {
                    tracing::warn!(%error, items = missing.len(), suppressed, "catalogue lookup failed");
                }
                metrics::counter!("catalogue_lookup_failures_total").increment(1);
                for asin in missing {
                    found.insert(asin, Lookup::Unavailable);
                }
            }
        }
        found
    }

    async fn fetch(
        &self,
        asins: &[Asin],
        timeout: Duration,
    ) -> Result<HashMap<Asin, Arc<ItemInfo>>, CatalogueError> {
        let keys: Vec<&str> = asins.iter().map(Asin::as_str).collect();
        let query = sqlx::query_as::<_, (String, Option<String>, Option<String>)>(LOOKUP_SQL)
            .bind(&keys)
            .fetch_all(&self.pool);
        let rows = tokio::time::timeout(timeout, query)
            .await
            .map_err(|_| CatalogueError::Timeout(timeout))?
            .map_err(CatalogueError::Query)?;
        Ok(rows
            .into_iter()
            .filter_map(|(asin, category, brand)| {
                let asin = Asin::new(asin).ok()?;
                Some((asin, Arc::new(ItemInfo { category, brand })))
            })
            .collect())
    }
}

/// The catalogue's metric, published at zero.
pub fn describe_metrics() {
    use metrics::{counter, describe_counter};

    describe_counter!(
        "catalogue_lookup_failures_total",
        "Catalogue lookups PostgreSQL did not answer in time"
    );

    counter!("catalogue_lookup_failures_total").increment(0);
}
