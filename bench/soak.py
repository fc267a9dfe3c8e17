"""The soak run's report: a table of each minute (RSS, p50, p99, max), the two verdicts, and a
plot (PNG).

    python3 bench/soak.py LOADGEN_JSON RSS_SAMPLES PNG

RSS_SAMPLES has a line "SECONDS_SINCE_START RSS_KB" per sample. Exits non-zero when a verdict
fails.
"""

import json
import statistics
import sys


def main():
    load = json.loads(open(sys.argv[1]).read())
    # A sample cut short (the sampler stopped between its two fields) is left out.
    samples = [tuple(map(float, fields)) for fields in map(str.split, open(sys.argv[2]))
               if len(fields) == 2]
    png = sys.argv[3]
    intervals = [i for i in load["intervals"] if i["requests"] > 0]

    def rss_at(seconds):
        before = [kb for t, kb in samples if t <= seconds]
        return (before[-1] if before else samples[0][1]) / 1024

    print()
    print("| minute | requests | RSS at its end (MB) | p50 (ms) | p99 (ms) | max (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i in intervals:
        end = i["start_secs"] + 60
        print(f"| {i['start_secs'] // 60 + 1} | {i['requests']:,} | {rss_at(end):.1f} | "
              f"{i['p50_ms']:.2f} | {i['p99_ms']:.2f} | {i['max_ms']:.2f} |")

    # RSS in the last third of the run, against its own start.
    # Only the samples taken while the load ran; the ends of the last third are each the mean of
    # three samples (one sample is a moment of the allocator's, not a trend).
    duration = max(i["start_secs"] for i in intervals) + 60
    last_third = [kb for t, kb in samples if duration * 2 / 3 <= t <= duration]
    start, end = sum(last_third[:3]) / len(last_third[:3]), sum(last_third[-3:]) / len(last_third[-3:])
    growth = (end - start) / start
    median_p99 = statistics.median(i["p99_ms"] for i in intervals)
    worst = max(intervals, key=lambda i: i["p99_ms"])
    rss_ok = growth < 0.05
    tail_ok = worst["p99_ms"] <= 10 * median_p99
    print()
    print(f"RSS over the last third: {start / 1024:.1f} -> {end / 1024:.1f} MB "
          f"({growth:+.1%}; must grow by less than 5%): {'met' if rss_ok else 'NOT met'}")
    print(f"worst minute's p99 {worst['p99_ms']:.2f} ms (minute {worst['start_secs'] // 60 + 1}) against the "
          f"median p99 {median_p99:.2f} ms (at most 10x): {'met' if tail_ok else 'NOT met'}")
    print(f"requests: {load['requests']:,}; non-200: "
          f"{ {k: v for k, v in load['statuses'].items() if k != '200'} or 'none'}")

    plot(samples, intervals, png)
    print(f"plot: {png}")
    sys.exit(0 if rss_ok and tail_ok else 1)


def plot(samples, intervals, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, latency) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rss.plot([t / 60 for t, _ in samples], [kb / 1024 for _, kb in samples], color="tab:blue")
    rss.set_ylabel("RSS (MB)")
    rss.set_ylim(bottom=0)
    rss.grid(alpha=0.3)
    minutes = [i["start_secs"] / 60 + 0.5 for i in intervals]
    for key, label, color in [("p50_ms", "p50", "tab:green"), ("p99_ms", "p99", "tab:orange"),
                              ("max_ms", "max", "tab:red")]:
        latency.plot(minutes, [i[key] for i in intervals], marker="o", label=label, color=color)
    latency.set_yscale("log")
    latency.set_ylabel("latency per minute (ms)")
    latency.set_xlabel("minutes")
    latency.legend()
    latency.grid(alpha=0.3, which="both")
    fig.suptitle("bench/run soak: steady load on POST /api/event")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
