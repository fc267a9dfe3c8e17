"""What a journal flush costs on this disk: `fdatasync` after each 300-byte write, 2,000 times, to
a file that grows (as the journal's segments do) and to one zero-filled beforehand (as
PostgreSQL's WAL segments are). Prints the mean, median and p99 latency and the CPU this process
spent per flush (the exits to the hypervisor show here, and grow when the host is busy).

    python3 bench/fsync.py [DIR]      # DIR: on the journal's disk (default: the current one)
"""

import os
import statistics
import sys
import time

FLUSHES, RECORD = 2000, 300


def run(path, zero_filled):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        if zero_filled:
            os.write(fd, b"\0" * (FLUSHES * RECORD + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        record, latencies = b"x" * RECORD, []
        cpu = time.process_time()
        for _ in range(FLUSHES):
            os.write(fd, record)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1e6)
        cpu = (time.process_time() - cpu) / FLUSHES * 1e6
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    return statistics.mean(latencies), latencies[len(latencies) // 2], latencies[len(latencies) * 99 // 100], cpu


if __name__ == "__main__":
    path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "fsync-probe.bin")
    for name, zero_filled in [("growing", False), ("zero-filled", True)] * 2:
        mean, p50, p99, cpu = run(path, zero_filled)
        print(f"{name:12} fdatasync mean {mean:4.0f} µs, p50 {p50:4.0f}, p99 {p99:4.0f}; CPU {cpu:3.0f} µs per flush")
