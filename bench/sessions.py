#!/usr/bin/env python3
"""Shopping sessions with categories, made to look like public session data, as the CSV that
`event-ingest evaluate` reads (actor,asin,category,event_type,ts). Deterministic for a seed.

Public session data sets (OTTO, Yoochoose, Diginetica) have no categories, or have them apart
from the sessions; this makes sessions with the statistics such sets show, and a category for
every item:

- 20,000 items in 200 categories; popularity falls off as Zipf's law (exponent 1.0) over the
  items, and over the categories (a category's popularity is the sum of its items');
- sessions start over 14 days; a session is a user's (a returning one of 30,000, 40% of
  sessions) or a visitor's; its length is geometric, 10 events on average;
- a session has an intent: a category drawn by popularity, changed with probability 0.1 at each
  event. Each event is, with probability 0.07, an item the session saw already, with 0.55 an item
  of the intent's category (by popularity within it), else an item drawn from the whole catalogue
  by popularity. The repeats, with the popular items drawn again, put some 30% of the evaluated
  targets among the actor's recent items (31% of a million events, seed 7), near OTTO's real
  sessions (`tests/data/otto-sample.jsonl`: 27.6%);
- types: view 72%, click 18%, add_to_cart 7%, purchase 2%, rate 1%; events of a session 40 s
  apart on average (exponential).

    python3 bench/sessions.py --events 1000000 --seed 7 > sessions.csv
"""

import argparse
import bisect
import itertools
import math
import random
import sys
from datetime import datetime, timedelta, timezone

ITEMS, CATEGORIES = 20_000, 200
USERS = 30_000
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 14
TYPES = ["view", "click", "add_to_cart", "purchase", "rate"]
TYPE_WEIGHTS = [72, 18, 7, 2, 1]


def zipf_cumulative(n, exponent):
    weights = [1.0 / (rank ** exponent) for rank in range(1, n + 1)]
    return list(itertools.accumulate(weights))


def draw(rng, cumulative):
    return bisect.bisect_left(cumulative, rng.random() * cumulative[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    # Items by popularity rank; each given a category at random, so that categories are of
    # uneven sizes and popularities.
    item_cumulative = zipf_cumulative(ITEMS, 1.0)
    category_of = [rng.randrange(CATEGORIES) for _ in range(ITEMS)]
    members = [[] for _ in range(CATEGORIES)]
    for item in range(ITEMS):
        members[category_of[item]].append(item)
    weight = [1.0 / (rank ** 1.0) for rank in range(1, ITEMS + 1)]
    member_cumulative = [list(itertools.accumulate(weight[i] for i in m)) for m in members]
    category_cumulative = list(itertools.accumulate(sum(weight[i] for i in m) for m in members))
    type_cumulative = list(itertools.accumulate(TYPE_WEIGHTS))

    out = sys.stdout
    out.write("actor,asin,category,event_type,ts\n")
    written, session = 0, 0
    rows = []
    while written < args.events:
        session += 1
        actor = str(rng.randrange(1, USERS + 1)) if rng.random() < 0.4 else f"s{session}"
        at = START + timedelta(seconds=rng.random() * DAYS * 86_400)
        length = max(1, int(math.log(1.0 - rng.random()) / math.log(0.9)))
        intent = draw(rng, category_cumulative)
        seen = []
        for _ in range(min(length, args.events - written)):
            if rng.random() < 0.1:
                intent = draw(rng, category_cumulative)
            roll = rng.random()
            if seen and roll < 0.07:
                item = rng.choice(seen)
            elif roll < 0.62:
                item = members[intent][draw(rng, member_cumulative[intent])]
            else:
                item = draw(rng, item_cumulative)
            seen.append(item)
            kind = TYPES[draw(rng, type_cumulative)]
            rows.append((at, f"{actor},P{item:05d},C{category_of[item]:03d},{kind},"))
            at += timedelta(seconds=rng.expovariate(1 / 40))
            written += 1
    # In time order, as a shop's log would be (the tool sorts anyway).
    rows.sort(key=lambda row: row[0])
    for at, row in rows:
        out.write(row + at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z\n")


if __name__ == "__main__":
    main()
