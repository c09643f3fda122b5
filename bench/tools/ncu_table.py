#!/usr/bin/env python3
"""Prints per-kernel duration and DRAM bytes from `ncu --csv` files (scripts/device/profile.sh)."""
import collections
import csv
import sys

for path in sys.argv[1:]:
    rows = list(csv.reader(line for line in open(path) if not line.startswith("==")))
    hdr = None
    kernels = collections.OrderedDict()
    for r in rows:
        if "Kernel Name" in r:
            hdr = r
            continue
        if hdr is None or len(r) != len(hdr):
            continue
        d = dict(zip(hdr, r))
        key = (int(d["ID"]), d["Kernel Name"])
        kernels.setdefault(key, {})[d["Metric Name"]] = d["Metric Value"].replace(",", "")
    print(f"== {path}")
    for (i, name), m in kernels.items():
        short = name.split("(")[0][:48]
        targs = name[name.find("<"):name.find(">") + 1][:40] if "<" in name else ""
        print(f"{i:4d} {short:48s} {targs:40s} {float(m.get('gpu__time_duration.sum', 0)) / 1000:9.2f} us"
              f"  {float(m.get('dram__bytes.sum', 0)) / 1e6:9.2f} MB"
              f"  L2 {float(m.get('lts__t_bytes.sum', 0)) / 1e6:9.2f} MB")
