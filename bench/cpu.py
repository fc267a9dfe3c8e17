"""CPU time of the processes a benchmark involves, from /proc: `snap` prints a snapshot as JSON,
`diff BEFORE AFTER SECONDS EVENTS` the cores each group used, its CPU per 1,000 events, and the
kernel's share of that CPU (system time against user time)."""

import json
import os
import sys

GROUPS = {
    "service": lambda comm, cmd: comm == "event-ingest",
    "floor": lambda comm, cmd: comm.startswith("floor-"),
    "generator": lambda comm, cmd: comm.startswith("loadgen"),
    "redis": lambda comm, cmd: comm.startswith("redis-server"),
    "postgres": lambda comm, cmd: comm == "postgres",
}
TICKS = os.sysconf("SC_CLK_TCK")


def snap():
    """Per group, the user and the system ticks of its processes."""
    totals = {group: [0, 0] for group in GROUPS}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        user, system = int(fields[11]), int(fields[12])
        for group, matches in GROUPS.items():
            if matches(comm, None):
                totals[group][0] += user
                totals[group][1] += system
    return totals


def diff(before, after, seconds, events):
    result = {}
    for group in GROUPS:
        user, system = (after[group][i] - before[group][i] for i in (0, 1))
        cpu = (user + system) / TICKS
        result[group] = {
            "cores": cpu / seconds,
            "ms_per_1k_events": cpu * 1000 / max(events, 1) * 1000,
            "kernel_share": system / (user + system) if user + system else 0.0,
        }
    return result


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        print(json.dumps(snap()))
    else:
        before, after = json.loads(sys.argv[2]), json.loads(sys.argv[3])
        print(json.dumps(diff(before, after, float(sys.argv[4]), int(sys.argv[5]))))
