//! Who may call the API, and how often: optional API keys and rate limits per key and per client
//! address. All off by default, for local use.
//!
//! Two kinds of key, as every tracking API has them. A *write key* (`API_KEYS`) is public by
//! nature: it sits in a page's JavaScript, and any client can send it with any `Origin`. It may
//! only write (events, batches, identifications), optionally from listed origins. A *server key*
//! (`SERVER_KEYS`) is a secret kept on a server: it may write, and also read what the service
//! knows of a user (the context routes, `/api/rerank`, the context `POST /api/identify` answers).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ApiError;
use super::limits::RequestLimits;
use crate::telemetry::Throttle;

pub const API_KEY_HEADER: &str = "x-api-key";

/// What a key may do, and what a route asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Send events, batches and identifications: a write key's scope.
    Write,
    /// Write, and read contexts (the context routes, re-ranking): a server key's scope, and
    /// everyone's when no key is configured.
    Read,
}

/// A configured key: its secret, its scope, and the origins it may be used from (any, if none).
struct ApiKey {
    secret: SecretString,
    /// A name for logs and limits that does not reveal the key: its list and its position.
    name: String,
    scope: Scope,
    origins: Vec<String>,
}

/// A key list that cannot be right; the message names the key by its position, never by itself.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "server key {0} of SERVER_KEYS holds '@': a server key is never bound to an origin (it is used from servers, which send any Origin they like); give the key alone"
    )]
    ServerKeyWithOrigin(usize),
    #[error(
        "write key {write} of API_KEYS is also server key {server} of SERVER_KEYS: the key a page carries is public, so it must not be one that reads users' contexts"
    )]
    InBothLists { write: usize, server: usize },
}

pub struct AccessControl {
    keys: Vec<ApiKey>,
    /// Keyed by the configured keys' names: as many entries as keys at most.
    per_key: Option<Limiter<String>>,
    /// Keyed by client address (an IPv6 client by its /64), at most `max_addresses` entries.
    per_address: Option<Limiter<IpAddr>>,
    trust_forwarded_for: bool,
}

#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Write keys: `KEY` or `KEY@ORIGIN|ORIGIN`.
    pub api_keys: Vec<SecretString>,
    /// Server keys: `KEY` alone.
    pub server_keys: Vec<SecretString>,
    pub per_key_per_second: u32,
    pub per_address_per_second: u32,
    pub burst: u32,
    pub trust_forwarded_for: bool,
    /// Most client addresses the per-address limiter remembers.
    pub max_addresses: usize,
}

impl Default for AccessConfig {
    /// No keys, no rate limits; bursts of 100 once limits are set; 100,000 addresses remembered.
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            server_keys: Vec::new(),
            per_key_per_second: 0,
            per_address_per_second: 0,
            burst: 100,
            trust_forwarded_for: false,
            max_addresses: 100_000,
        }
    }
}

impl AccessControl {
    pub fn new(config: &AccessConfig) -> Result<Self, KeyError> {
        let listed = |keys: &[SecretString]| -> Vec<String> {
            keys.iter()
                .map(|k| k.expose_secret().trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        };
        let mut keys = Vec::new();
        for (i, spec) in listed(&config.api_keys).iter().enumerate() {
            let (secret, origins) = spec.split_once('@').unwrap_or((spec, ""));
            keys.push(ApiKey {
                secret: SecretString::from(secret),
                name: format!("key-{}", i + 1),
                scope: Scope::Write,
                origins: origins
                    .split('|')
                    .filter(|o| !o.is_empty())
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
            });
        }
        let writers = keys.len();
        for (i, secret) in listed(&config.server_keys).into_iter().enumerate() {
            if secret.contains('@') {
                return Err(KeyError::ServerKeyWithOrigin(i + 1));
            }
            if let Some(write) = keys[..writers]
                .iter()
                .position(|k| k.secret.expose_secret() == secret)
            {
                return Err(KeyError::InBothLists {
                    write: write + 1,
                    server: i + 1,
                });
            }
            keys.push(ApiKey {
                secret: SecretString::from(secret),
                name: format!("server-key-{}", i + 1),
                scope: Scope::Read,
                origins: Vec::new(),
            });
        }
        Ok(Self {
            keys,
            per_key: Limiter::new(config.per_key_per_second, config.burst, usize::MAX),
            per_address: Limiter::new(
                config.per_address_per_second,
                config.burst,
                config.max_addresses,
            ),
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// No key is configured: anyone may write and read (local use).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Write keys are configured but no server key: the read routes refuse every request.
    pub fn reads_closed(&self) -> bool {
        !self.is_open() && self.keys.iter().all(|k| k.scope == Scope::Write)
    }

    /// Whether a rate limit is set (and [`AccessControl::forget_idle`] has work to do).
    pub fn limits_rates(&self) -> bool {
        self.per_key.is_some() || self.per_address.is_some()
    }

    /// Forgets idle keys and addresses, so the limiters' memory stays small: every minute, from
    /// a background component.
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
        let provided = provided_key(headers).ok_or(ApiError::MissingApiKey)?;
        self.authenticate_key(&provided, headers)
    }

    /// The configured key `provided` is (compared in constant time with every one), if it may
    /// be used from the request's origin; none when no key is configured.
    fn authenticate_key(
        &self,
        provided: &[u8],
        headers: &HeaderMap,
    ) -> Result<Option<&ApiKey>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
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

    /// The client's address, as the rate limit counts it ([`address_key`]): the peer's, or
    /// behind a trusted proxy, the last `X-Forwarded-For` entry, the one that proxy added (the
    /// entries before it are the client's own word).
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
        address_key(forwarded.unwrap_or(peer.ip()))
    }
}

/// The key a request carries: in `X-API-Key`, or as the user name of HTTP Basic authentication
/// (`Authorization: Basic base64(key:)`, the way Segment's SDKs send their write key; the colon
/// and an empty password optional).
pub fn provided_key(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(key) = headers.get(API_KEY_HEADER) {
        return Some(key.as_bytes().to_vec());
    }
    let basic = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let user = decoded.split(|b| *b == b':').next().unwrap_or(&[]);
    Some(user.to_vec())
}

/// A client address as limits count it: an IPv6 client by its /64, the block one subscriber
/// holds, so that it cannot take a new budget with every address of its block; an IPv4 address
/// mapped into IPv6 as that IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
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

/// What guards every `/api` route: the request timeout, and within it the API keys and rate
/// limits. One layer, not one for each: each layer inside a router is a boxed service, which is
/// cloned for every request with the layers inside it. (The cap of requests at once counts work,
/// not waiting for a body: the handlers take their place once the body is read,
/// [`super::limits`].)
#[derive(Clone)]
pub struct ApiGuard {
    pub limits: RequestLimits,
    pub access: Arc<AccessControl>,
    /// What the guarded routes ask of a key.
    pub needs: Scope,
    /// The key may come in the body instead (Segment's `writeKey`): a request without one in
    /// its headers passes, and its handler checks the body's ([`BodyKey`]).
    pub body_key: bool,
    /// How a refusal is worded (Segment's routes word errors their way).
    pub render: fn(ApiError) -> Response,
}

/// A request whose key is to be read from its body: its handler must authenticate it with
/// [`AccessControl::admit_body_key`] before doing anything.
#[derive(Debug, Clone, Copy)]
pub struct BodyKey;

/// The middleware in front of every `/api` route. The handlers find the caller's [`Scope`] in
/// the request's extensions.
pub async fn guard(
    State(guard): State<ApiGuard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if guard.body_key && !guard.access.is_open() && provided_key(headers).is_none() {
        if let Err(error) = guard.access.count_address(headers, peer) {
            return (guard.render)(error);
        }
        request.extensions_mut().insert(BodyKey);
        return guard
            .limits
            .within_time(next.run(request), guard.render)
            .await;
    }
    match guard.access.admit(request.headers(), peer, guard.needs) {
        Ok(scope) => {
            request.extensions_mut().insert(scope);
            guard
                .limits
                .within_time(next.run(request), guard.render)
                .await
        }
        Err(error) => (guard.render)(error),
    }
}

impl AccessControl {
    /// Spends one request of the client address's rate limit; 429 past it.
    fn count_address(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
        over_limit(&self.per_address, &self.client_address(headers, peer))
    }

    /// Authenticates the key a request's body carried (its address was counted by the guard),
    /// for a route that `needs` a scope: 401 without one, or with a wrong one; then the key's
    /// rate limit.
    pub fn admit_body_key(
        &self,
        provided: Option<&str>,
        headers: &HeaderMap,
        needs: Scope,
    ) -> Result<Scope, ApiError> {
        let provided = provided.ok_or(ApiError::MissingApiKey)?;
        let key = self.authenticate_key(provided.as_bytes(), headers)?;
        let scope = key.map_or(Scope::Read, |key| key.scope);
        if scope < needs {
            return Err(ApiError::ServerKeyRequired);
        }
        if let Some(key) = key {
            over_limit(&self.per_key, &key.name)?;
        }
        Ok(scope)
    }

    /// Whether a request from `peer` to a route that `needs` a scope may pass: the rate limit of
    /// its address, its API key where keys are required, the key's scope, and the key's rate
    /// limit. Gives the caller's scope. The address is counted first, so that every request
    /// with a wrong key or none spends its address's budget: guessing keys is rate-limited.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        needs: Scope,
    ) -> Result<Scope, ApiError> {
        self.count_address(headers, peer)?;
        let key = self.authenticate(headers)?;
        let scope = key.map_or(Scope::Read, |key| key.scope);
        if scope < needs {
            return Err(ApiError::ServerKeyRequired);
        }
        if let Some(key) = key {
            over_limit(&self.per_key, &key.name)?;
        }
        Ok(scope)
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
        .unwrap()
    }

    fn keys(write: &[&str], server: &[&str]) -> Result<AccessControl, KeyError> {
        let secrets = |keys: &[&str]| keys.iter().map(|&k| SecretString::from(k)).collect();
        AccessControl::new(&AccessConfig {
            api_keys: secrets(write),
            server_keys: secrets(server),
            ..AccessConfig::default()
        })
    }

    fn call(
        access: &AccessControl,
        key: Option<&str>,
        needs: Scope,
    ) -> Result<Scope, &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(API_KEY_HEADER, key.parse().unwrap());
        }
        headers.insert(header::ORIGIN, "https://shop.example".parse().unwrap());
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        access.admit(&headers, peer, needs).map_err(|e| e.code())
    }

    #[test]
    fn a_write_key_writes_and_a_server_key_also_reads() {
        let access = keys(&["pub@https://shop.example"], &["secret"]).unwrap();
        assert_eq!(call(&access, Some("pub"), Scope::Write), Ok(Scope::Write));
        assert_eq!(
            call(&access, Some("pub"), Scope::Read),
            Err("server_key_required")
        );
        assert_eq!(call(&access, Some("secret"), Scope::Write), Ok(Scope::Read));
        assert_eq!(call(&access, Some("secret"), Scope::Read), Ok(Scope::Read));
        assert_eq!(
            call(&access, Some("secre"), Scope::Read),
            Err("invalid_api_key")
        );
        assert_eq!(call(&access, None, Scope::Read), Err("missing_api_key"));
        assert!(!access.is_open() && !access.reads_closed());
    }

    #[test]
    fn write_keys_without_a_server_key_close_the_read_routes() {
        let access = keys(&["pub"], &[]).unwrap();
        assert!(access.reads_closed());
        assert_eq!(
            call(&access, Some("pub"), Scope::Read),
            Err("server_key_required")
        );
        let open = keys(&[], &[]).unwrap();
        assert!(open.is_open() && !open.reads_closed());
        assert_eq!(call(&open, None, Scope::Read), Ok(Scope::Read));
        let servers_only = keys(&[], &["secret"]).unwrap();
        assert_eq!(
            call(&servers_only, Some("secret"), Scope::Write),
            Ok(Scope::Read)
        );
    }

    #[test]
    fn key_lists_that_cannot_be_right_are_refused_without_showing_the_key() {
        let error = keys(&[], &["a", "secret@https://shop.example"])
            .err()
            .unwrap();
        assert!(matches!(error, KeyError::ServerKeyWithOrigin(2)));
        let error = keys(&["x", "same@https://shop.example"], &["same"])
            .err()
            .unwrap();
        assert!(matches!(
            error,
            KeyError::InBothLists {
                write: 2,
                server: 1
            }
        ));
        assert!(!error.to_string().contains("same"), "{error}");
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
