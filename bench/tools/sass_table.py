#!/usr/bin/env python3
"""Where a kernel's warps stall, from `scripts/device/sass_profile.sh`'s CSVs (ncu --page source
--print-source sass): the instructions with the most stall samples, and the samples by opcode
and by stall reason.
Usage: bench/tools/sass_table.py FILE.csv [...]"""
import csv, collections, sys
for f in sys.argv[1:]:
    lines=[l for l in open(f) if l.startswith('"')]
    rows=list(csv.reader(lines))
    print('==', f.split('/')[-1], rows[0][1][:110])
    hdr=rows[1]; data=rows[2:]
    idx={h:i for i,h in enumerate(hdr)}
    stall_cols=[h for h in hdr if h.startswith('stall_') and 'Not Issued' not in h]
    S='Warp Stall Sampling (All Samples)'
    tot=sum(int(r[idx[S]] or 0) for r in data)
    print('total samples', tot)
    top=sorted(data, key=lambda r: -int(r[idx[S]] or 0))[:22]
    for r in top:
        s=int(r[idx[S]])
        st=sorted(((int(r[idx[c]] or 0),c[6:]) for c in stall_cols), reverse=True)[:3]
        print('%5.1f%% %s %-58s %s'%(100*s/tot, r[0][-5:], r[1].strip()[:58], ' '.join('%s:%d'%(c,v) for v,c in st if v)))
    by=collections.Counter(); reason=collections.Counter()
    for r in data:
        t=r[1].strip().split()
        if not t: continue
        op=t[1] if t[0].startswith('@') else t[0]
        by[op.split('.')[0]]+=int(r[idx[S]] or 0)
        for c in stall_cols: reason[c[6:]]+=int(r[idx[c]] or 0)
    print('by opcode:', ', '.join('%s %.1f%%'%(k,100*v/tot) for k,v in by.most_common(12)))
    print('by reason:', ', '.join('%s %.1f%%'%(k,100*v/tot) for k,v in reason.most_common(10)))
