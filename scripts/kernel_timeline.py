#!/usr/bin/env python3
"""The per-kernel timeline of CUDA-graph replays from bench/tools/kernel_trace.cc's CSV.

Splits the graph-node kernels into replays (a replay starts at each launch of the first
graph kernel's name), keeps the last N replays of equal length, and prints for each kernel
position the median start and end relative to the replay's first start, the duration and
the gap after the previous kernel's end (negative: overlap, as PDL allows).
Usage: kernel_timeline.py trace.csv [last_n=50]
"""
import csv
import statistics
import sys


def main():
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["graph_id"] != "0"]
    last_n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    if not rows:
        sys.exit("no graph kernels in the trace")
    rows.sort(key=lambda r: int(r["start_ns"]))
    first = rows[0]["name"]
    replays, cur = [], []
    for r in rows:
        if r["name"] == first and cur:
            replays.append(cur)
            cur = []
        cur.append(r)
    replays.append(cur)
    n = statistics.mode(len(x) for x in replays)
    replays = [x for x in replays if len(x) == n][-last_n:]
    print(f"{len(replays)} replays of {n} kernels")
    print(f"{'start':>8} {'end':>8} {'dur':>7} {'gap':>7}  grid  kernel (us, medians)")
    prev_end = None
    for i in range(n):
        t0 = [int(x[0]["start_ns"]) for x in replays]
        s = statistics.median(int(x[i]["start_ns"]) - a for x, a in zip(replays, t0)) / 1e3
        e = statistics.median(int(x[i]["end_ns"]) - a for x, a in zip(replays, t0)) / 1e3
        gap = "" if prev_end is None else f"{s - prev_end:7.2f}"
        name = replays[-1][i]["name"]
        print(f"{s:8.2f} {e:8.2f} {e - s:7.2f} {gap:>7}  {replays[-1][i]['grid']:>4}  {name[:70]}")
        prev_end = e
    total = statistics.median(int(x[-1]["end_ns"]) - int(x[0]["start_ns"]) for x in replays)
    period = statistics.median(int(b[0]["start_ns"]) - int(a[0]["start_ns"])
                               for a, b in zip(replays, replays[1:])) if len(replays) > 1 else 0
    print(f"first start to last end {total / 1e3:.2f} us; replay period {period / 1e3:.2f} us")


if __name__ == "__main__":
    main()
