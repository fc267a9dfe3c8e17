//! Recording events in Redis: the script that applies them, and the task that merges the updates
//! of concurrent requests into as few script calls as the keys allow.
//!
//! On a single Redis one call carries every waiting update. A Redis Cluster takes a script only if
//! all its keys are in one hash slot, so there the updates go in one call per slot (a user's keys
//! share a slot through their hash tag); the calls of one round are sent together, and each
//! node's multiplexed connection pipelines those that are its own.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::SecondsFormat;
use redis::{ErrorKind, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use futures::StreamExt as _;

use super::{ContextError, ContextUpdate, PURCHASED_CAP, Redis, slot_of};
use crate::event::{Actor, EventType};

/// An actor's five keys, after its stem (`user:42:`), in the script's order.
pub const KEY_NAMES: [&str; 5] = [
    "recent_items",
    "recent_categories",
    "last_active",
    "event_ids",
    "purchased",
];

/// Most event ids remembered per user for deduplication: enough for any client's retries, and
/// few enough that adding one stays cheap (Redis scans its compact encoding on every ZADD; ids
/// are stored as their 16 bytes, not 36 characters, for the same reason).
pub(super) const EVENT_IDS_CAP: usize = 64;

/// Most events in one round of script calls.
const MAX_EVENTS_PER_ROUND: usize = 512;

/// Applies a list of events. KEYS come five per event (recent_items, recent_categories,
/// last_active, event_ids, purchased); ARGV holds eight settings (the TTL; the last index of the
/// recent list; the rank up to which event ids are trimmed; the time in ms, which is the ids' and
/// purchases' score, so that the oldest are trimmed first; the purchases' TTL, trim rank and the
/// oldest purchase time kept; '1' for a distinct recent list), then five per event (asin,
/// category or '', last_active text, client event id or '', the category weight; a purchase's
/// weight carries a trailing 'p' for a user, 'v' for a visitor). Returns, per event, 1 if applied
/// and 0 if its event id was already seen.
///
/// A user's purchases live `--purchased-ttl` (30 days); a visitor's only as long as the rest of
/// their context, since a made-up visitor costs nothing to invent: their purchases join the
/// user's 30-day set when they are identified, and otherwise expire with their context.
///
/// Every number reaches `redis.call` as the text the service wrote: Redis 7.0 formats a Lua number
/// with `snprintf("%.17g")` on each call, which took 14% of its time when the settings were
/// passed as numbers (bench/README.md, "Redis's instructions per event"; later Redis versions
/// format numbers faster, so the saving there is smaller).
pub const RECORD_SCRIPT: &str = r"
local ttl, last_item, ids_trim, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local bought_ttl, bought_trim, bought_since, distinct = ARGV[5], ARGV[6], ARGV[7], ARGV[8] == '1'
local applied = {}
for i = 0, #KEYS / 5 - 1 do
  local k, a = i * 5, 8 + i * 5
  local fresh = 1
  if ARGV[a + 4] ~= '' then
    if redis.call('ZADD', KEYS[k + 4], 'NX', now, ARGV[a + 4]) == 0 then
      fresh = 0
    else
      redis.call('ZREMRANGEBYRANK', KEYS[k + 4], '0', ids_trim)
      redis.call('EXPIRE', KEYS[k + 4], ttl)
    end
  end
  if fresh == 1 then
    if distinct then
      redis.call('LREM', KEYS[k + 1], '0', ARGV[a + 1])
    end
    redis.call('LPUSH', KEYS[k + 1], ARGV[a + 1])
    redis.call('LTRIM', KEYS[k + 1], '0', last_item)
    redis.call('EXPIRE', KEYS[k + 1], ttl)
    local weight, purchase = string.match(ARGV[a + 5], '^(%d+)([pv]?)$')
    if ARGV[a + 2] ~= '' and weight ~= '0' then
      redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 2], weight)
      redis.call('EXPIRE', KEYS[k + 2], ttl)
    end
    -- last_active never moves back: a late event leaves a later time in place. The times are
    -- RFC 3339 in UTC with milliseconds, so their order is that of their text.
    local previous = redis.call('SET', KEYS[k + 3], ARGV[a + 3], 'EX', ttl, 'GET')
    if previous and previous > ARGV[a + 3] then
      redis.call('SET', KEYS[k + 3], previous, 'EX', ttl)
    end
    if purchase ~= '' then
      redis.call('ZADD', KEYS[k + 5], now, ARGV[a + 1])
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', bought_since)
      redis.call('ZREMRANGEBYRANK', KEYS[k + 5], '0', bought_trim)
      redis.call('EXPIRE', KEYS[k + 5], purchase == 'p' and bought_ttl or ttl)
    end
  end
  applied[i + 1] = fresh
end
return applied
";

/// One request's updates, waiting for the next round.
pub(super) struct Job {
    pub updates: Vec<Prepared>,
    pub reply: oneshot::Sender<Result<Vec<bool>, ContextError>>,
}

/// An event's five keys and five arguments for the script, end to end in one buffer: one
/// allocation per event, copied once more into the round's command.
pub(super) struct Prepared {
    bytes: Vec<u8>,
    /// Where each of the ten parts ends in `bytes`.
    ends: [usize; 10],
}

impl Prepared {
    pub(super) fn new(redis: &Redis, update: &ContextUpdate<'_>) -> Self {
        let event = update.event;
        let stem = redis.config.keys.stem(&event.actor);
        let mut bytes = Vec::with_capacity(6 * stem.len() + 128);
        let mut ends = [0; 10];
        for (end, name) in ends.iter_mut().zip(KEY_NAMES) {
            bytes.extend_from_slice(stem.as_bytes());
            bytes.extend_from_slice(name.as_bytes());
            *end = bytes.len();
        }
        let weight = redis.config.category_weights.of(event.event_type);
        let purchase = match (event.event_type, &event.actor) {
            (EventType::Purchase, Actor::User(_)) => "p",
            (EventType::Purchase, Actor::Visitor(_)) => "v",
            _ => "",
        };
        bytes.extend_from_slice(event.asin.as_str().as_bytes());
        ends[5] = bytes.len();
        bytes.extend_from_slice(update.category.unwrap_or_default().as_bytes());
        ends[6] = bytes.len();
        crate::rfc3339::append(event.ts(), SecondsFormat::Millis, &mut bytes);
        ends[7] = bytes.len();
        if event.client_event_id {
            bytes.extend_from_slice(event.event_id.as_bytes());
        }
        ends[8] = bytes.len();
        bytes.extend_from_slice(itoa::Buffer::new().format(weight).as_bytes());
        bytes.extend_from_slice(purchase.as_bytes());
        ends[9] = bytes.len();
        Prepared { bytes, ends }
    }

    /// The `n`th part: keys 0 to 4, arguments 5 to 9.
    fn part(&self, n: usize) -> &[u8] {
        let start = if n == 0 { 0 } else { self.ends[n - 1] };
        &self.bytes[start..self.ends[n]]
    }
}

/// The task behind [`super::ContextStore::record`]: one round of script calls at a time, each
/// carrying every update waiting when it starts. Ends when the last handle is dropped.
///
/// On a cluster the rounds run side by side, as tasks of this one's own (a [`JoinSet`]): a
/// round that panics takes this task down with it, so the health registry sees it.
pub(super) async fn merge_updates(redis: Arc<Redis>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut rounds = JoinSet::new();
    loop {
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
            Some(ended) = rounds.join_next(), if !rounds.is_empty() => {
                if let Err(error) = ended
                    && error.is_panic()
                {
                    std::panic::resume_unwind(error.into_panic());
                }
                continue;
            }
        };
        fail::fail_point!("redis-context");
        let mut events = first.updates.len();
        let mut round = vec![first];
        while events < MAX_EVENTS_PER_ROUND {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.updates.len();
                    round.push(job);
                }
                Err(_) => break,
            }
        }
        // Requests that gave up waiting (their deadline passed) are not sent late.
        round.retain(|job| !job.reply.is_closed());
        if round.is_empty() {
            continue;
        }
        if redis.backend.is_cluster() {
            // One node down must not hold the others' users back: the next round starts without
            // waiting for this one's slowest call.
            rounds.spawn(apply_owned(redis.clone(), round));
        } else {
            apply(&redis, round).await;
        }
    }
    while let Some(ended) = rounds.join_next().await {
        if let Err(error) = ended
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

async fn apply_owned(redis: Arc<Redis>, round: Vec<Job>) {
    apply(&redis, round).await;
}

/// Makes the round's script calls (one, or one per slot on a cluster), and answers each job as
/// soon as its own calls are done: a job of users on a healthy master does not wait for a call
/// to one that is down. A slot whose master's breaker is open is not called.
async fn apply(redis: &Redis, round: Vec<Job>) {
    let mut replies = Vec::with_capacity(round.len());
    let mut sizes = Vec::with_capacity(round.len());
    let mut prepared = Vec::new();
    for job in round {
        sizes.push(job.updates.len());
        prepared.extend(job.updates);
        replies.push(Some(job.reply));
    }
    let updates: Vec<&Prepared> = prepared.iter().collect();
    let groups: Vec<(Option<u16>, Vec<usize>)> = if redis.backend.is_cluster() {
        let mut by_slot: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, update) in updates.iter().enumerate() {
            by_slot.entry(slot_of(update.part(0))).or_default().push(i);
        }
        by_slot
            .into_iter()
            .map(|(slot, group)| (Some(slot), group))
            .collect()
    } else {
        vec![(None, (0..updates.len()).collect())]
    };
    let now = chrono::Utc::now().timestamp_millis();
    let updates = &updates;
    let calls = groups
        .iter()
        .enumerate()
        .map(|(g, (slot, group))| async move {
            // EVALSHA built as one command: a `ScriptInvocation` would hold each key and argument
            // in an allocation of its own before copying them into the command. Sized at once for
            // every part (the name, the hash, the key count, eight settings of at most 20 digits).
            let parts: usize = group.iter().map(|&i| updates[i].bytes.len()).sum();
            let mut command =
                redis::Cmd::with_capacity(3 + 10 * group.len() + 8, 64 + 8 * 20 + parts);
            command
                .arg("EVALSHA")
                .arg(redis.script.get_hash())
                .arg(group.len() * 5);
            for &i in group {
                for n in 0..5 {
                    command.arg(updates[i].part(n));
                }
            }
            command
                .arg(redis.config.ttl.as_secs().max(1))
                .arg(redis.config.recent_items_cap as i64 - 1)
                .arg(-(EVENT_IDS_CAP as i64) - 1)
                .arg(now)
                .arg(redis.config.purchased_ttl.as_secs().max(1))
                .arg(-(PURCHASED_CAP as i64) - 1)
                .arg(redis.config.bought_since_ms_at(now))
                .arg(redis.config.distinct_flag());
            for &i in group {
                for n in 5..10 {
                    command.arg(updates[i].part(n));
                }
            }
            let flags: Result<Vec<i64>, ContextError> = redis
                .call("record", *slot, async {
                    let mut connection = redis.backend.connection().await?;
                    match command.query_async(&mut connection).await {
                        Err(error)
                            if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                        {
                            // A Redis restarted, or failed over, has forgotten the script.
                            redis.script.load_async(&mut connection).await?;
                            command.query_async(&mut connection).await
                        }
                        outcome => outcome,
                    }
                })
                .await;
            (g, flags)
        });

    // Which job each update belongs to, where each job's updates begin, and how many calls each
    // job still waits for.
    let mut job_of = Vec::with_capacity(updates.len());
    let mut first_update = Vec::with_capacity(sizes.len());
    for (j, &size) in sizes.iter().enumerate() {
        first_update.push(job_of.len());
        job_of.extend(std::iter::repeat_n(j, size));
    }
    let jobs_of = |group: &[usize]| {
        let mut jobs: Vec<usize> = group.iter().map(|&i| job_of[i]).collect();
        jobs.dedup(); // the group's updates are in order, so are their jobs
        jobs
    };
    let mut waiting = vec![0usize; sizes.len()];
    for (_, group) in &groups {
        for j in jobs_of(group) {
            waiting[j] += 1;
        }
    }
    let mut applied: Vec<Result<bool, ContextError>> = Vec::with_capacity(updates.len());
    applied.resize_with(updates.len(), || Err(ContextError::Closed));
    let mut settle = |g: usize, outcome: Result<Vec<i64>, ContextError>| {
        let group = &groups[g].1;
        for (n, &i) in group.iter().enumerate() {
            applied[i] = match &outcome {
                Ok(flags) => Ok(flags.get(n) == Some(&1)),
                Err(error) => Err(error.clone()),
            };
        }
        for j in jobs_of(group) {
            waiting[j] -= 1;
            if waiting[j] == 0
                && let Some(reply) = replies[j].take()
            {
                let answer = (first_update[j]..first_update[j] + sizes[j])
                    .map(|i| std::mem::replace(&mut applied[i], Err(ContextError::Closed)))
                    .collect();
                let _ = reply.send(answer);
            }
        }
    };
    if groups.len() == 1 {
        // A single Redis: one call, no set of futures to poll.
        let mut calls = calls;
        let (g, outcome) = calls.next().expect("one group").await;
        settle(g, outcome);
    } else {
        let mut calls: futures::stream::FuturesUnordered<_> = calls.collect();
        while let Some((g, outcome)) = calls.next().await {
            settle(g, outcome);
        }
    }
}
