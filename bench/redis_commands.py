"""Redis protocol for `redis-cli --pipe`: the context updates of EVENTS random events, written as
the service's script calls (PER_CALL events a call, as a merged round carries them) or as the
floor's six commands per event (benches/floor.rs). For bench/run redis-instructions.

    python3 bench/redis_commands.py service|floor EVENTS PER_CALL SCRIPT_SHA SEED PREFIX USERS IDS

The script's keys and arguments follow src/context/record.rs: five keys and five arguments per
event, after eight settings. Events are views by USERS users of 10,000 items in 30 categories,
each with a client event id (16 bytes, as the service stores them) when IDS is 1, without one
(the seed's event shape: the script then leaves the id set alone) when it is 0.
"""

import random
import sys

side, events, per_call, sha, seed, prefix, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
with_ids = sys.argv[8] == "1"
rng = random.Random(seed)
out = sys.stdout.buffer
TTL, NOW_MS = 900, 1764453600000
# The service's settings: TTL, last index of the recent list (20 items), the ids' trim rank (64
# kept), now, the purchases' TTL (30 days), trim rank (500 kept) and oldest time kept, distinct.
SETTINGS = [TTL, 19, -65, NOW_MS, 2592000, -501, NOW_MS - 2592000 * 1000, 0]


def command(*args):
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    out.write(b"*%d\r\n" % len(parts))
    for part in parts:
        out.write(b"$%d\r\n%s\r\n" % (len(part), part))


def event():
    stem = f"{prefix}user:{rng.randrange(1, users + 1)}:"
    time = "2026-11-29T22:00:00.%03dZ" % rng.randrange(1000)
    event_id = rng.randbytes(16) if with_ids else b""
    return stem, f"B{rng.randrange(10000):09d}", f"Category {rng.randrange(30)}", time, event_id


done = 0
while done < events:
    call = [event() for _ in range(min(per_call, events - done))]
    done += len(call)
    if side == "service":
        keys, args = [], list(SETTINGS)
        for stem, asin, category, time, event_id in call:
            keys += [stem + name for name in ("recent_items", "recent_categories", "last_active", "event_ids", "purchased")]
            args += [asin, category, time, event_id, 1]
        command("EVALSHA", sha, len(keys), *keys, *args)
    else:
        for stem, asin, category, time, _ in call:
            command("LPUSH", stem + "recent_items", asin)
            command("LTRIM", stem + "recent_items", 0, 19)
            command("EXPIRE", stem + "recent_items", TTL)
            command("HINCRBY", stem + "recent_categories", category, 1)
            command("EXPIRE", stem + "recent_categories", TTL)
            command("SET", stem + "last_active", time, "EX", TTL)
