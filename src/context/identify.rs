//! Merging a visitor's context into the user's when the visitor logs in (`POST /api/identify`).
//!
//! Two steps, each one script call: take the visitor's keys (read and delete them at once), then
//! merge what was taken into the user's (atomic on the user's side, where concurrent events land).
//! The visitor's and the user's keys lie in different slots of a Redis Cluster, so the steps
//! cannot be one script.
//!
//! Taking first makes a repeated identification harmless: a retry, or a second tab identifying
//! at the same moment, finds nothing left to merge, so nothing is counted twice. The price: if
//! Redis fails between the two steps, the visitor's short-term context is lost (their events are
//! in PostgreSQL all the same). The visitor's `event_ids` stay until they expire, so that a
//! retried visitor event is still counted once.
//!
//! A visitor belongs to the first user they are identified as, in Redis as in PostgreSQL. The
//! take records that owner (`visitor:…:owner`, set only if absent, in the same script that takes
//! the keys), and the merge goes to the owner whoever asked: two identifications of one visitor
//! as different users at the same moment cannot send the context to one user and the stored
//! events to the other. The identification made durable names the owner too. The owner is
//! remembered as long as the visitor's context (the context TTL, refreshed by each
//! identification); a made-up visitor leaves nothing longer.

use std::sync::LazyLock;

use redis::Script;

use super::{ContextError, ContextStore, PURCHASED_CAP, UserContext};
use crate::event::{Actor, AnonymousId, UserId};

/// Takes a visitor's context: records their owner if they have none yet, reads the four keys
/// and deletes them. KEYS: the visitor's recent_items, recent_categories, last_active,
/// purchased, owner. ARGV: the oldest purchase time kept (ms), the user id asked for, the TTL.
/// Returns the items, the categories as (name, count) pairs, last_active (or ''), the purchases
/// as (asin, time) pairs, and the owner's user id.
pub const TAKE_SCRIPT: &str = r"
local owner = redis.call('SET', KEYS[5], ARGV[2], 'NX', 'GET') or ARGV[2]
redis.call('EXPIRE', KEYS[5], ARGV[3])
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local categories = redis.call('HGETALL', KEYS[2])
local last = redis.call('GET', KEYS[3]) or ''
local purchased = redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[1], '+inf', 'WITHSCORES')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {items, categories, last, purchased, owner}
";

/// Merges a visitor's context (passed in ARGV) into a user's. KEYS: the user's recent_items,
/// recent_categories, last_active, purchased. ARGV: the TTL, the list cap, '1' for a distinct
/// list, the purchases' TTL and cap, the time in ms, the visitor's last_active (or ''), then the
/// count of the visitor's recent items and the items (newest first), the count of categories and
/// (category, count) pairs, and last (time in ms, asin) pairs of purchases.
///
/// The recent items are merged newest first: the list of whoever was active last goes first
/// (the visitor's, unless the user was active later), and the merged list is capped. Category
/// counts are added; `last_active` is the later of the two; purchases keep their later time.
pub const MERGE_SCRIPT: &str = r"
local ttl, cap, distinct = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local bought_ttl, bought_cap, now, last = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local n = tonumber(ARGV[8])
local visitor = {}
for j = 1, n do visitor[j] = ARGV[8 + j] end
local a = 9 + n
local categories = tonumber(ARGV[a])
for j = 1, categories do
  redis.call('HINCRBY', KEYS[2], ARGV[a + 2 * j - 1], ARGV[a + 2 * j])
end
if categories > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
local bought = false
for j = a + 2 * categories + 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[4], 'GT', ARGV[j], ARGV[j + 1])
  bought = true
end
if bought then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - bought_ttl * 1000)
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -bought_cap - 1)
  redis.call('EXPIRE', KEYS[4], bought_ttl)
end
local previous = redis.call('GET', KEYS[3])
if n > 0 then
  local first, second = visitor, redis.call('LRANGE', KEYS[1], 0, -1)
  if previous and previous > last then first, second = second, first end
  local merged, seen = {}, {}
  for _, list in ipairs({first, second}) do
    for _, item in ipairs(list) do
      if #merged < cap and not (distinct and seen[item]) then
        merged[#merged + 1] = item
        seen[item] = true
      end
    end
  end
  redis.call('DEL', KEYS[1])
  -- In steps: Lua's unpack gives at most a few thousand values at once, and the cap allows more.
  for j = 1, #merged, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(merged, j, math.min(j + 999, #merged)))
  end
  redis.call('EXPIRE', KEYS[1], ttl)
end
if last ~= '' and not (previous and previous > last) then
  redis.call('SET', KEYS[3], last, 'EX', ttl)
end
return 1
";

/// The keys that move from the visitor to the user (`event_ids` stays; see the module's note).
const MOVED: [&str; 4] = [
    "recent_items",
    "recent_categories",
    "last_active",
    "purchased",
];

/// What an identification did in Redis.
#[derive(Debug)]
pub struct Merged {
    /// The user the visitor belongs to: the one asked for, unless another was first.
    pub owner: UserId,
    /// The owner's context after the merge.
    pub context: UserContext,
}

impl ContextStore {
    /// Merges the visitor's context into their owner's (the first user they were identified
    /// as: `user`, unless another was first) and deletes the visitor's; returns the owner and
    /// their context afterwards.
    pub async fn merge_visitor(
        &self,
        visitor: &AnonymousId,
        user: UserId,
    ) -> Result<Merged, ContextError> {
        static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_SCRIPT));
        static MERGE: LazyLock<Script> = LazyLock::new(|| Script::new(MERGE_SCRIPT));
        let redis = &self.redis;
        let visitor = Actor::Visitor(visitor.clone());
        let bought_since = redis.config.bought_since_ms();
        let mut take = TAKE.prepare_invoke();
        for name in MOVED {
            take.key(self.key(&visitor, name));
        }
        take.key(self.key(&visitor, "owner"))
            .arg(bought_since)
            .arg(user.get())
            .arg(redis.config.ttl.as_secs().max(1));
        // Flat (name, count) and (asin, time) pairs, as HGETALL and WITHSCORES give them.
        type Taken = (Vec<String>, Vec<String>, String, Vec<String>, i64);
        let (items, categories, last_active, purchased, owner): Taken = redis
            .call("identify", self.slot(&visitor), async {
                let mut connection = redis.backend.connection().await?;
                take.invoke_async(&mut connection).await
            })
            .await?;
        // The key holds an id this service wrote; were it anything else, the one asked for wins.
        let owner = UserId::new(owner).unwrap_or(user);
        let user = Actor::User(owner);

        let mut merge = MERGE.prepare_invoke();
        for name in MOVED {
            merge.key(self.key(&user, name));
        }
        merge
            .arg(redis.config.ttl.as_secs().max(1))
            .arg(redis.config.recent_items_cap)
            .arg(redis.config.distinct_flag())
            .arg(redis.config.purchased_ttl.as_secs().max(1))
            .arg(PURCHASED_CAP)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(last_active)
            .arg(items.len())
            .arg(&items)
            .arg(categories.len() / 2)
            .arg(&categories);
        for pair in purchased.chunks_exact(2) {
            merge.arg(&pair[1]).arg(&pair[0]);
        }
        redis
            .call("identify", self.slot(&user), async {
                let mut connection = redis.backend.connection().await?;
                merge.invoke_async::<()>(&mut connection).await
            })
            .await?;
        let context = self.load(&user).await?;
        Ok(Merged { owner, context })
    }
}
