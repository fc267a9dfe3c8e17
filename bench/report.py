"""Prints bench/run's results as a table, with the targets of issue 5 where they apply."""

import json
import os
import platform
import subprocess
import sys


def load(path):
    """Results by name; a name measured several times keeps every run, in order."""
    results = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            results.setdefault(row["name"], []).append(row)
    return results


def median(runs, key):
    values = sorted(run[key] for run in runs)
    return values[len(values) // 2]


def median_cpu(runs, group, measure="ms_per_1k_events"):
    """The median of a process group's CPU per event (in µs), or of another of bench/cpu.py's
    measures (`kernel_share`)."""
    return sorted(r["cpu"][group][measure] for r in runs)[len(runs) // 2]


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cores} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    runs = load(sys.argv[1])
    results = {name: rows[-1] for name, rows in runs.items()}
    binary = sys.argv[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"machine: {machine()}; commit {commit}; binary {binary}")
    print("generator, service, Redis and PostgreSQL all on this machine")
    print()
    print(f"| {'measure':<58} | {'result':<34} | {'target':<16} | {'':<7} |")
    print(f"| {'-' * 58} | {'-' * 34} | {'-' * 16} | {'-' * 7} |")

    def row(name, result, target="", ok=None):
        mark = "" if ok is None else verdict(ok)
        print(f"| {name:<58} | {result:<34} | {target:<16} | {mark:<7} |")

    def statuses(r):
        others = {k: v for k, v in r["statuses"].items() if k != "200"}
        return f", non-200: {others}" if others else ""

    if "a" in results:
        a = results["a"]
        row("(a) POST /api/event, closed loop, 64 connections",
            f"{a['requests_per_sec']:,.0f} req/s{statuses(a)}", ">= 20,000/s", a["requests_per_sec"] >= 20000)
    if "b" in results:
        b = results["b"]
        bs = runs["b"]
        p99s = ", ".join(f"{r['p99_ms']:.1f}" for r in bs)
        row(f"(b) latency at 5,000 req/s, open loop, {len(bs)} runs: median p50 / p99",
            f"{median(bs, 'p50_ms'):.2f} / {median(bs, 'p99_ms'):.2f} ms", "p99 <= 5 ms", median(bs, "p99_ms") <= 5)
        row("    (b) worst p99; every run's p99", f"{max(r['p99_ms'] for r in bs):.2f} ms; {p99s}")
        row("    (b) achieved rate (last run)", f"{b['requests_per_sec']:,.0f} req/s{statuses(b)}")
    if "c" in results:
        c = results["c"]
        row("(c) POST /api/events, batches of 100, 16 connections",
            f"{c['events_per_sec']:,.0f} events/s{statuses(c)}", ">= 50,000/s", c["events_per_sec"] >= 50000)
    if "c-gzip" in results:
        c = results["c-gzip"]
        row("    (c) with each batch gzip-compressed", f"{c['events_per_sec']:,.0f} events/s{statuses(c)}")
    for key, plain, label in [("c-segment", "c", "(c) through Segment's /v1/batch, 100 messages"),
                              ("c-segment-gzip", "c-gzip", "    Segment's /v1/batch, gzip-compressed")]:
        if key in results:
            s = results[key]
            share = s["events_per_sec"] / results[plain]["events_per_sec"] if plain in results else None
            row(label, f"{s['events_per_sec']:,.0f} events/s{statuses(s)}"
                + (f"; {share:.0%} of {plain}" if share is not None else ""),
                ">= 80% of (c)", None if share is None else share >= 0.8)
    if "d" in results:
        d = results["d"]
        writer = d["events"] / d["writer_seconds"]
        copy = d["events"] / d["copy_seconds"]
        row(f"(d) writer draining {d['events']:,} events (start to empty)",
            f"{writer:,.0f} rows/s ({d['writer_seconds']:.1f} s)")
        row("    plain COPY of the same rows with psql", f"{copy:,.0f} rows/s ({d['copy_seconds']:.1f} s)")
        row("    writer / COPY", f"{writer / copy:.0%}", ">= 70%", writer / copy >= 0.7)
        row("    rows stored by the writer", f"{d['stored']:,} of {d['events']:,}", "all", d["stored"] == d["events"])
    if "e" in results:
        e = results["e"]
        row("(e) Redis ceiling: redis-benchmark, the script per event",
            f"{e['events_per_sec']:,.0f} events/s")
        if "a" in results:
            row("    (a) / (e)", f"{results['a']['requests_per_sec'] / e['events_per_sec']:.0%}")
    if "f" in results:
        f = results["f"]
        row("(f) peak RSS of the service under (a)", f"{f['peak_rss_mb']:.1f} MB", "<= 150 MB", f["peak_rss_mb"] <= 150)
    if "g" in results:
        g = results["g"]
        row("(g) acknowledged events / rows stored",
            f"{g['acknowledged']:,} / {g['stored']:,}", "equal", g["acknowledged"] == g["stored"])
    if "journal-latency" in results:
        for name, h in results["journal-latency"].items():
            if name != "name":
                row(f"    journal {name}s during (a) and (b): count, mean",
                    f"{h['count']:,.0f}, {h['mean_ms']:.2f} ms; >10 ms: {h['over_10ms']:,.0f}, >100 ms: {h['over_100ms']:,.0f}")
    for mode in ["always", "interval", "tmpfs"]:
        a, b = runs.get(f"journal-{mode}-a"), runs.get(f"journal-{mode}-b")
        if a and b:
            row(f"journal {mode} (median of {len(a)}): (a) req/s; (b) p50/p99",
                f"{median(a, 'requests_per_sec'):,.0f}; {median(b, 'p50_ms'):.2f} / {median(b, 'p99_ms'):.2f} ms")
    for mode in ["journal", "jetstream"]:
        a, b, ack = runs.get(f"handoff-{mode}-a"), runs.get(f"handoff-{mode}-b"), runs.get(f"handoff-{mode}-ack")
        if a and b:
            acks = ""
            if mode == "jetstream" and ack:
                means = sorted((r["after"]["sum"] - r["before"]["sum"]) * 1000 / max(r["after"]["count"] - r["before"]["count"], 1)
                               for r in ack)
                acks = f"; publish ack mean under (b) {means[len(means) // 2]:.2f} ms"
            row(f"hand-off {mode} (median of {len(a)}): (a) req/s; (b) p50/p99",
                f"{median(a, 'requests_per_sec'):,.0f}; {median(b, 'p50_ms'):.2f} / {median(b, 'p99_ms'):.2f} ms{acks}")
    for writers in [1, 2]:
        d = results.get(f"drain-writers-{writers}")
        if d:
            row(f"JetStream drain, {writers} writer(s): {d['events']:,} events",
                f"{d['events'] / d['seconds']:,.0f} rows/s ({d['seconds']:.1f} s)")
    cpu_rows = [(label, results[key]) for key, label in [("a", "(a)"), ("b", "(b)"), ("c", "(c)"), ("c-gzip", "(c) gzip"),
                                                    ("c-segment", "(c) Segment"), ("c-segment-gzip", "(c) Segment gzip")]
                if key in results and "cpu" in results[key]]
    if cpu_rows:
        print()
        print("Where the CPU went (cores used during the run; CPU ms per 1,000 events accepted):")
        print()
        groups = ["service", "redis", "postgres", "generator"]
        print("| run | " + " | ".join(groups) + " | all |")
        print("| --- |" + " --- |" * (len(groups) + 1))
        for label, r in cpu_rows:
            cells = [f"{r['cpu'][g]['cores']:.2f} cores, {r['cpu'][g]['ms_per_1k_events']:.0f} ms" for g in groups]
            total = sum(r["cpu"][g]["cores"] for g in groups)
            print(f"| {label} | " + " | ".join(cells) + f" | {total:.2f} cores |")
        print()
    # compare's rows (floor's "before" rows are in its own table below).
    for side in ["before", "after"] if runs.get("after-a") else []:
        a, b = runs.get(f"{side}-a"), runs.get(f"{side}-b")
        if a and b:
            row(f"{side} (median of {len(a)}): (a) req/s; (b) p50/p99",
                f"{median(a, 'requests_per_sec'):,.0f}; {median(b, 'p50_ms'):.2f} / {median(b, 'p99_ms'):.2f} ms")
        c = runs.get(f"{side}-c")
        if c:
            cpu = " / ".join(f"{median_cpu(c, group):.1f}" for group in ["service", "redis", "postgres"])
            row(f"{side} (median of {len(c)}): (c) events/s; µs per event: service / Redis / PG",
                f"{median(c, 'events_per_sec'):,.0f}; {cpu}")
    if runs.get("before-c") and runs.get("after-c"):
        ratio = median(runs["after-c"], "events_per_sec") / median(runs["before-c"], "events_per_sec")
        row("(c) after / before", f"{ratio:.2f}x", ">= 1.3x", ratio >= 1.3)
    floor_report(runs)
    for n in ["100", "1000"]:
        r = results.get(f"rerank-{n}")
        if r:
            row(f"re-rank of {n} candidates, 4 connections: p50 / p99",
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms ({r['requests_per_sec']:,.0f}/s)")


def floor_report(runs):
    """bench/run floor: the service against the floor server, medians of the interleaved rounds,
    and the ratios issue 13 sets targets for."""
    if not all(runs.get(k) for k in ["floor-a", "floor-b", "service-a", "service-b"]):
        return

    def cpu(side, run, group):
        return median_cpu(runs[f"{side}-{run}"], group)

    # With BENCH_BEFORE_BIN, "before" is another build of the service, measured in the same rounds.
    services = [side for side in ["before", "service"] if runs.get(f"{side}-a") and runs.get(f"{side}-b")]
    print()
    print(f"The service against the floor (medians of {len(runs['floor-a'])} interleaved rounds; CPU in µs per event):")
    print()
    print("| | (a) req/s | (b) p50 / p99 (ms) | (a) CPU per event: server / Redis / PostgreSQL (µs) | (a) kernel's share of the server's CPU |")
    print("| --- | --- | --- | --- | --- |")
    for side in ["floor"] + services:
        a, b = runs[f"{side}-a"], runs[f"{side}-b"]
        server = "floor" if side == "floor" else "service"
        kernel = median_cpu(a, server, "kernel_share")
        print(f"| {side} | {median(a, 'requests_per_sec'):,.0f} | {median(b, 'p50_ms'):.2f} / {median(b, 'p99_ms'):.2f} | "
              f"{cpu(side, 'a', server):.0f} / {cpu(side, 'a', 'redis'):.0f} / {cpu(side, 'a', 'postgres'):.0f} | {kernel:.0%} |")
    print()
    for side in services:
        ratios = [
            ("service CPU per event / floor's, under (a)", cpu(side, "a", "service") / cpu("floor", "a", "floor"),
             "<= 2.0x", lambda v: v <= 2.0),
            ("service CPU per event / floor's, under (b)", cpu(side, "b", "service") / cpu("floor", "b", "floor"), "", None),
            ("Redis CPU per event / floor's, under (a)", cpu(side, "a", "redis") / cpu("floor", "a", "redis"),
             "<= 1.2x", lambda v: v <= 1.2),
            ("(a) req/s / floor's", median(runs[f"{side}-a"], "requests_per_sec") / median(runs["floor-a"], "requests_per_sec"),
             ">= 0.5x", lambda v: v >= 0.5),
            ("(b) p99 / floor's p99", median(runs[f"{side}-b"], "p99_ms") / median(runs["floor-b"], "p99_ms"),
             "<= 2.0x", lambda v: v <= 2.0),
        ]
        if len(services) > 1:
            print(f"{side}:")
            print()
        print("| ratio | value | target | |")
        print("| --- | --- | --- | --- |")
        for name, value, target, check in ratios:
            print(f"| {name} | {value:.2f}x | {target} | {verdict(check(value)) if check else ''} |")
        print(f"| PostgreSQL CPU per stored event, under (a) | {cpu(side, 'a', 'postgres'):.0f} µs | <= 35 µs | "
              f"{verdict(cpu(side, 'a', 'postgres') <= 35)} |")
        print()


if __name__ == "__main__":
    main()
