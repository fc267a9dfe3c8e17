//! Who may call the API, and how often: optional API keys (a key may be limited to origins) and
//! rate limits per key and per client address. All off by default, for local use.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ApiError;

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
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
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
            per_key: limiter(config.per_key_per_second, config.burst),
            per_address: limiter(config.per_address_per_second, config.burst),
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }

    /// Forgets idle keys and addresses, so the limiters' memory stays bounded.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
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

    /// The client's address: the peer's, or behind a trusted proxy, the last `X-Forwarded-For`
    /// entry, the one that proxy added (the entries before it are the client's own word).
    fn client_address(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        if self.trust_forwarded_for
            && let Some(last) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|v| v.trim().parse().ok())
        {
            return last;
        }
        peer.ip()
    }
}

/// A limiter of `per_second` requests per key with bursts of `burst`; none for a rate of 0.
fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

fn over_limit<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited(wait.max(Duration::from_secs(1)))
    })
}

/// The middleware in front of every `/api` route.
pub async fn check(
    State(access): State<Arc<AccessControl>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let outcome = access.authenticate(headers).and_then(|key| {
        if let Some(key) = key {
            over_limit(&access.per_key, &key.name)?;
        }
        over_limit(&access.per_address, &access.client_address(headers, peer))
    });
    match outcome {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}
