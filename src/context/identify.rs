//! Merging a visitor's context into the user's when the visitor logs in (`POST /api/identify`).
//!
//! Three steps, each one call: read the visitor's keys, merge them into the user's with a script
//! (atomic on the user's side, where concurrent events land), then delete the visitor's keys. The
//! visitor's and the user's keys lie in different slots of a Redis Cluster, so the steps cannot be
//! one script; a visitor's event arriving between the first and the last step is missed by the
//! context (never by PostgreSQL). The visitor's `event_ids` stay until they expire, so that a
//! retried visitor event is still counted once.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::{ContextError, ContextStore, PURCHASED_CAP, UserContext};
use crate::event::{Actor, AnonymousId, UserId};

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
  redis.call('RPUSH', KEYS[1], unpack(merged))
  redis.call('EXPIRE', KEYS[1], ttl)
end
if last ~= '' and not (previous and previous > last) then
  redis.call('SET', KEYS[3], last, 'EX', ttl)
end
return 1
";

/// The visitor's keys that move to the user (`event_ids` stays; see the module's note).
const MOVED: [&str; 4] = [
    "recent_items",
    "recent_categories",
    "last_active",
    "purchased",
];

impl ContextStore {
    /// Merges the visitor's context into the user's and deletes the visitor's; returns the
    /// user's context afterwards.
    pub async fn merge_visitor(
        &self,
        visitor: &AnonymousId,
        user: UserId,
    ) -> Result<UserContext, ContextError> {
        let redis = &self.redis;
        let (visitor, user) = (Actor::Visitor(visitor.clone()), Actor::User(user));
        let bought_since = chrono::Utc::now().timestamp_millis()
            - redis.config.purchased_ttl.as_millis().min(i64::MAX as u128) as i64;
        let mut read = redis::pipe();
        read.lrange(self.key(&visitor, "recent_items"), 0, -1)
            .hgetall(self.key(&visitor, "recent_categories"))
            .get(self.key(&visitor, "last_active"))
            .zrangebyscore_withscores(self.key(&visitor, "purchased"), bought_since, "+inf");
        type Read = (
            Vec<String>,
            HashMap<String, i64>,
            Option<String>,
            Vec<(String, i64)>,
        );
        let (items, categories, last_active, purchased): Read = redis
            .call("identify", async {
                let mut connection = redis.backend.connection().await?;
                read.query_async(&mut connection).await
            })
            .await?;

        let now = chrono::Utc::now();
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MERGE_SCRIPT));
        let mut merge = SCRIPT.prepare_invoke();
        for name in MOVED {
            merge.key(self.key(&user, name));
        }
        merge
            .arg(redis.config.ttl.as_secs().max(1))
            .arg(redis.config.recent_items_cap)
            .arg(if redis.config.distinct_recent_items {
                "1"
            } else {
                "0"
            })
            .arg(redis.config.purchased_ttl.as_secs().max(1))
            .arg(PURCHASED_CAP)
            .arg(now.timestamp_millis())
            .arg(last_active.unwrap_or_default())
            .arg(items.len())
            .arg(&items)
            .arg(categories.len());
        for (category, count) in &categories {
            merge.arg(category).arg(count);
        }
        for (asin, ms) in &purchased {
            merge.arg(ms).arg(asin);
        }
        let mut delete = redis::cmd("DEL");
        for name in MOVED {
            delete.arg(self.key(&visitor, name));
        }
        redis
            .call("identify", async {
                let mut connection = redis.backend.connection().await?;
                merge.invoke_async::<()>(&mut connection).await?;
                delete.query_async::<()>(&mut connection).await
            })
            .await?;
        self.load(&user).await
    }
}
