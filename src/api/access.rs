//! Who may call the API, and how often: optional API keys (a key may be limited to origins) and
//! rate limits per key and per client address. All off by default, for local use.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ApiError;
use super::limits::RequestLimits;
use crate::telemetry::Throttle;

pub const API_KEY_HEADER: &str = "x-api-key";

/// A configured key: its secret, and the origins it may be used from (any, if none).
struct ApiKey {
    secret: SecretString,
    /// A name for logs and limits that does not reveal the key: its position in the list.
    name: String,
    origins: Vec<String>,
}

pub struct AccessControl {
    keys: Vec<ApiKey>,
    /// Keyed by the configured keys' names: as many entries as keys at most.
    per_key: Option<Limiter<String>>,
    /// Keyed by client address (an IPv6 client by its /64), at most `max_addresses` entries.
    per_address: Option<Limiter<IpAddr>>,
    trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// `KEY` or `KEY@ORIGIN|ORIGIN`.
    pub api_keys: Vec<SecretString>,
    pub per_key_per_second: u32,
    pub per_address_per_second: u32,
    pub burst: u32,
    pub trust_forwarded_for: bool,
    /// Most client addresses the per-address limiter remembers.
    pub max_addresses: usize,
}

impl AccessControl {
    pub fn new(config: &AccessConfig) -> Self {
        let keys = config
            .api_keys
            .iter()
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, spec)| {
                let (secret, origins) = spec.split_once('@').unwrap_or((spec, ""));
                ApiKey {
                    secret: SecretString::from(secret),
                    name: format!("key-{}", i + 1),
                    origins: origins
                        .split('|')
                        .filter(|o| !o.is_empty())
                        .map(|o| o.trim_end_matches('/').to_owned())
                        .collect(),
                }
            })
            .collect();
        Self {
            keys,
            per_key: Limiter::new(config.per_key_per_second, config.burst, usize::MAX),
            per_address: Limiter::new(
                config.per_address_per_second,
                config.burst,
                config.max_addresses,
            ),
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }

    /// Forgets idle keys and addresses, so the limiters' memory stays small.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_key {
            limiter.current().retain_recent();
        }
        if let Some(limiter) = &self.per_address {
            limiter.current().retain_recent();
        }
    }

    /// The key the request carries, checked in constant time against every configured key.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<&ApiKey>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let provided = headers
            .get(API_KEY_HEADER)
            .ok_or(ApiError::MissingApiKey)?
            .as_bytes();
        let mut found = None;
        for key in &self.keys {
            let secret = key.secret.expose_secret().as_bytes();
            if bool::from(secret.ct_eq(provided)) && found.is_none() {
                found = Some(key);
            }
        }
        let key = found.ok_or(ApiError::InvalidApiKey)?;
        if !key.origins.is_empty() {
            let origin = headers
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("");
            if !key.origins.iter().any(|allowed| allowed == origin) {
                return Err(ApiError::OriginNotAllowed);
            }
        }
        Ok(Some(key))
    }

    /// The client's address, as the rate limit counts it: the peer's, or behind a trusted proxy,
    /// the last `X-Forwarded-For` entry, the one that proxy added (the entries before it are the
    /// client's own word). An IPv6 client counts by its /64, the block one subscriber holds, so
    /// that it cannot take a new budget with every address of its block.
    fn client_address(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let forwarded = self
            .trust_forwarded_for
            .then(|| {
                headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .next_back()
                    .and_then(|v| v.trim().parse().ok())
            })
            .flatten();
        match forwarded.unwrap_or(peer.ip()) {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            },
            v4 => v4,
        }
    }
}

/// A keyed rate limiter whose memory is bounded: past `max_keys` entries it forgets the idle ones,
/// and if every one is active (a flood of new addresses), it starts afresh, more lenient for a
/// moment rather than unbounded.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    current: RwLock<Arc<DefaultKeyedRateLimiter<K>>>,
    quota: Quota,
    max_keys: usize,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// A limiter of `per_second` requests per key with bursts of `burst`; none for a rate of 0.
    fn new(per_second: u32, burst: u32, max_keys: usize) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            current: RwLock::new(Arc::new(RateLimiter::keyed(quota))),
            quota,
            max_keys,
            checks: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<DefaultKeyedRateLimiter<K>> {
        self.current.read().clone()
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        let limiter = self.current();
        // Counting the entries costs a pass over the map's shards: not on every request.
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
            && limiter.len() >= self.max_keys
        {
            limiter.retain_recent();
            if limiter.len() >= self.max_keys {
                static WARNING: Throttle = Throttle::new();
                if let Some(suppressed) = WARNING.allow() {
                    tracing::warn!(
                        max = self.max_keys,
                        suppressed,
                        "more active clients than the rate limiter may remember; it starts afresh"
                    );
                }
                *self.current.write() = Arc::new(RateLimiter::keyed(self.quota));
            }
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited(wait.max(Duration::from_secs(1)))
        })
    }
}

fn over_limit<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<Limiter<K>>,
    key: &K,
) -> Result<(), ApiError> {
    limiter
        .as_ref()
        .map_or(Ok(()), |limiter| limiter.check(key))
}

/// What guards every `/api` route: the request limits, and within them the API keys and rate
/// limits. One layer, not one for each: each layer inside a router is a boxed service, which is
/// cloned for every request with the layers inside it.
#[derive(Clone)]
pub struct ApiGuard {
    pub limits: RequestLimits,
    pub access: Arc<AccessControl>,
}

/// The middleware in front of every `/api` route.
pub async fn guard(
    State(guard): State<ApiGuard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    guard
        .limits
        .apply(async {
            match guard.access.admit(request.headers(), peer) {
                Ok(()) => next.run(request).await,
                Err(error) => error.into_response(),
            }
        })
        .await
}

impl AccessControl {
    /// Whether a request from `peer` may pass: its API key where keys are required, and the
    /// rate limits of its key and of its address.
    pub fn admit(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
        let key = self.authenticate(headers)?;
        if let Some(key) = key {
            over_limit(&self.per_key, &key.name)?;
        }
        over_limit(&self.per_address, &self.client_address(headers, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(max_addresses: usize) -> AccessControl {
        AccessControl::new(&AccessConfig {
            per_address_per_second: 1,
            burst: 1,
            max_addresses,
            ..AccessConfig::default()
        })
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let access = access(10);
        let at = |ip: &str| {
            access.client_address(&HeaderMap::new(), SocketAddr::new(ip.parse().unwrap(), 1))
        };
        assert_eq!(at("2001:db8:1:2:aaaa::1"), at("2001:db8:1:2:bbbb::9"));
        assert_ne!(at("2001:db8:1:2::1"), at("2001:db8:1:3::1"));
        assert_eq!(
            at("::ffff:192.0.2.7"),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(at("192.0.2.7"), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_address_limiter_remembers_a_bounded_number_of_clients() {
        let access = access(100);
        let limiter = access.per_address.as_ref().unwrap();
        for i in 0..100_000u32 {
            let _ = limiter.check(&IpAddr::from(i.to_be_bytes()));
        }
        // Checked every 256 requests: at most that many past the bound.
        assert!(
            limiter.current().len() <= 100 + 256,
            "{}",
            limiter.current().len()
        );
    }
}
