#!/usr/bin/env python3
"""Local-memory accesses (LDL / STL) inside the wgmma main loops of a kernel's SASS.

Reads `cuobjdump -sass` output of one kernel on stdin. A main loop is the smallest range
[target, backward branch] holding a GMMA instruction (HGMMA / QGMMA); prints the LDL / STL found in
any such range, and exits 1 if there are any. Spills outside those loops (per tile, per unit)
cost a few L1 hits and are allowed by scripts/check_ptxas.sh for the 512-thread variants.
Usage: cuobjdump -sass -fun NAME OBJ | scripts/sass_loop_spills.py
"""
import re
import sys

insts = []  # (address, text)
for line in sys.stdin:
    m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
    if m:
        insts.append((int(m.group(1), 16), m.group(2)))
if not insts:
    print("sass_loop_spills: no SASS on stdin", file=sys.stderr)
    sys.exit(2)
# Backward branches: loops [target, branch].
ranges = []
for addr, text in insts:
    b = re.search(r"\bBRA\s+0x([0-9a-f]+)", text)
    if b and int(b.group(1), 16) < addr:
        ranges.append((int(b.group(1), 16), addr))
# The main loops: for every GMMA, the smallest loop holding it (not the tile loop around it).
mains = set()
for addr, text in insts:
    if re.search(r"\b[HQ]GMMA\b", text):
        holding = [r for r in ranges if r[0] <= addr <= r[1]]
        if holding:
            mains.add(min(holding, key=lambda r: r[1] - r[0]))
bad = [(a, t) for lo, hi in mains for a, t in insts
       if lo <= a <= hi and re.search(r"\b(LDL|STL)\b", t)]
loops = len(mains)
for a, t in sorted(set(bad)):
    print(f"  {a:#06x}: {t}")
print(f"sass_loop_spills: {loops} wgmma loops, {len(set(bad))} local-memory accesses inside")
sys.exit(1 if bad or loops == 0 else 0)
