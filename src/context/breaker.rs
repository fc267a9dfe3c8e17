//! Breakers: after a Redis fails a call, calls to that Redis fail at once for
//! [`BREAKER_COOLDOWN`], so that an outage costs a request nothing instead of the timeout; then
//! calls try again.
//!
//! A single Redis has one breaker. A Redis Cluster has one per master: a call's keys give its
//! slot, and the cluster's slot map (`CLUSTER SLOTS`, kept by a background component) gives the
//! slot's master. So with one master down, its users' calls fail at once while the other
//! masters' users are not skipped. Until the map is first read, cluster calls have no breaker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::Value;

use crate::telemetry::monotonic_ms;

/// How long calls to a Redis that failed fail at once.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// A Redis Cluster's slots.
pub const SLOTS: usize = 16384;

/// After a failure, open for [`BREAKER_COOLDOWN`]. Measured on the monotonic clock: a wall clock
/// stepped back must not keep Redis skipped.
#[derive(Debug, Default)]
pub struct Breaker {
    /// Until when ([`monotonic_ms`]) calls fail without trying.
    open_until_ms: AtomicU64,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        monotonic_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    pub fn trip(&self) {
        let until = monotonic_ms() + BREAKER_COOLDOWN.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Relaxed);
    }
}

/// The breakers of one Redis, or of each master of a cluster.
pub enum Breakers {
    Single(Arc<Breaker>),
    Cluster(SlotMap),
}

/// Each slot's master's breaker, from the cluster's slot map.
#[derive(Default)]
pub struct SlotMap {
    /// By slot; empty until the map is first read.
    by_slot: RwLock<Arc<Vec<Arc<Breaker>>>>,
    /// By master address, so that a master keeps its breaker when the map is read again.
    by_master: Mutex<HashMap<String, Arc<Breaker>>>,
}

impl Breakers {
    /// The breaker of the Redis that `slot` lives on (any on a single Redis); none for a call
    /// of no slot on a cluster, or before its map is read.
    pub fn of(&self, slot: Option<u16>) -> Option<Arc<Breaker>> {
        match (self, slot) {
            (Breakers::Single(breaker), _) => Some(breaker.clone()),
            (Breakers::Cluster(map), Some(slot)) => map.by_slot.read().get(slot as usize).cloned(),
            (Breakers::Cluster(_), None) => None,
        }
    }
}

impl SlotMap {
    /// Takes a `CLUSTER SLOTS` answer; returns how many masters it names.
    pub fn update(&self, slots: &Value) -> Result<usize, &'static str> {
        let ranges = parse_slots(slots)?;
        let mut by_master = self.by_master.lock();
        // Slots no master serves share one breaker of their own.
        let unserved = Arc::new(Breaker::default());
        let mut by_slot: Vec<Arc<Breaker>> = std::iter::repeat_n(unserved, SLOTS).collect();
        for (start, end, master) in &ranges {
            let breaker = by_master.entry(master.clone()).or_default().clone();
            for slot in *start..=*end {
                by_slot[slot as usize] = breaker.clone();
            }
        }
        let masters: std::collections::HashSet<&String> = ranges.iter().map(|r| &r.2).collect();
        by_master.retain(|address, _| masters.contains(address));
        *self.by_slot.write() = Arc::new(by_slot);
        Ok(masters.len())
    }
}

/// `CLUSTER SLOTS`: an array of `[start, end, [host, port, id?], replicas...]`.
fn parse_slots(slots: &Value) -> Result<Vec<(u16, u16, String)>, &'static str> {
    let Value::Array(ranges) = slots else {
        return Err("CLUSTER SLOTS did not answer an array");
    };
    let int = |value: &Value| match value {
        Value::Int(n) if (0..SLOTS as i64).contains(n) => Some(*n as u16),
        _ => None,
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(parts) = range else {
                return Err("a CLUSTER SLOTS range is not an array");
            };
            let (Some(start), Some(end)) =
                (parts.first().and_then(int), parts.get(1).and_then(int))
            else {
                return Err("a CLUSTER SLOTS range has no bounds");
            };
            let Some(Value::Array(master)) = parts.get(2) else {
                return Err("a CLUSTER SLOTS range has no master");
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err("a CLUSTER SLOTS master has no host"),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err("a CLUSTER SLOTS master has no port");
            };
            Ok((start.min(end), end, format!("{host}:{port}")))
        })
        .collect()
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key without one,
/// modulo 16384, as Redis Cluster's specification defines it.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &key[open + 1..open + 1 + close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Tokio's paused clock, which moves the monotonic clock and not the wall clock.
    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_a_failure_and_closes_after_the_cooldown() {
        let breaker = Breaker::default();
        assert!(!breaker.is_open());
        breaker.trip();
        assert!(breaker.is_open());
        tokio::time::advance(BREAKER_COOLDOWN - Duration::from_millis(1)).await;
        assert!(breaker.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!breaker.is_open());
    }

    #[test]
    fn slots_follow_the_specification() {
        // Redis Cluster's specification: "123456789" hashes to 0x31C3 (12739).
        assert_eq!(slot_of(b"123456789"), 12739);
        assert_eq!(slot_of(b"user:{42}:recent_items"), slot_of(b"42"));
        assert_eq!(
            slot_of(b"a{}b"),
            slot_of(b"a{}b"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1001}.following")
        );
    }

    fn master(host: &str, port: i64) -> Value {
        Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)])
    }

    #[test]
    fn each_masters_slots_share_its_breaker_across_updates_of_the_map() {
        let map = SlotMap::default();
        let breakers = Breakers::Cluster(map);
        assert!(breakers.of(Some(7)).is_none(), "no map yet");
        let Breakers::Cluster(map) = &breakers else {
            unreachable!()
        };
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                master("127.0.0.1", 7001),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                master("127.0.0.1", 7002),
            ]),
        ]);
        assert_eq!(map.update(&slots), Ok(2));
        breakers.of(Some(10)).unwrap().trip();
        assert!(
            breakers.of(Some(8000)).unwrap().is_open(),
            "the same master"
        );
        assert!(
            !breakers.of(Some(9000)).unwrap().is_open(),
            "another master"
        );
        assert_eq!(map.update(&slots), Ok(2));
        assert!(
            breakers.of(Some(0)).unwrap().is_open(),
            "kept across updates"
        );
    }
}
