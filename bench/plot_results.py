#!/usr/bin/env python3
"""Draws time/floor per case from `moe bench` results.

    python3 bench/plot_results.py RESULTS.json [MORE.json ...] OUT.png

One group of bars per model (in the order the results list them), one bar per token count,
a line at 1.0 (the floor: max of activated weights + I/O over the copy bandwidth, and FLOPs
over the GEMM rate, both measured in the same run) and dashed lines at the issue's targets
(geometric mean 1.10, worst case 1.40). Several result files (e.g. runs over different
--models) are drawn together. Rows of several backends (`moe bench --backend dense,grouped`)
get one group per (model, backend), and the title gives each backend's geometric mean and
worst. Exit status 2 when matplotlib is missing or an input is bad.
"""

import json
import math
import sys


def fail(message):
    print(f"error: plot_results.py: {message}", file=sys.stderr)
    sys.exit(2)


def load_cases(paths):
    cases, devices = [], []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            fail(f"cannot read {path}: {e}")
        if doc.get("format") != "moe-bench/1":
            fail(f"{path} is not a moe bench result (format {doc.get('format')!r})")
        devices.append(doc["device"]["name"])
        roofline = doc["roofline"]
        # Results older than the "backend" field: the run's --backend.
        default_backend = doc.get("settings", {}).get("backend", "")
        for c in doc["cases"]:
            c = dict(c)
            c["_roofline"] = roofline
            c["_backend"] = c.get("backend") or default_backend
            cases.append(c)
    if not cases:
        fail("no case in " + ", ".join(paths))
    return cases, sorted(set(devices))


def main(argv):
    if len(argv) < 3:
        fail("usage: plot_results.py RESULTS.json [MORE.json ...] OUT.png")
    *inputs, out = argv[1:]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is not installed for this python3 (pip install matplotlib)")

    cases, devices = load_cases(inputs)
    backends = list(dict.fromkeys(c["_backend"] for c in cases))
    several = len(backends) > 1

    def group(c):
        return f"{c['model']}\n{c['_backend']}" if several else c["model"]

    models = list(dict.fromkeys(group(c) for c in cases))
    token_counts = sorted({c["tokens"] for c in cases})
    ratio = {(group(c), c["tokens"]): c["time_over_floor"] for c in cases}

    width = 0.8 / len(token_counts)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(models) + 3.5), 5.0))
    cmap = plt.get_cmap("viridis")
    for i, t in enumerate(token_counts):
        xs, ys = [], []
        for m_idx, m in enumerate(models):
            if (m, t) in ratio:
                xs.append(m_idx - 0.4 + width * (i + 0.5))
                ys.append(ratio[(m, t)])
        color = cmap(i / max(1, len(token_counts) - 1))
        ax.bar(xs, ys, width=width * 0.95, label=f"T={t}", color=color)

    ax.axhline(1.0, color="black", linewidth=1.0, label="floor")
    ax.axhline(1.10, color="tab:green", linewidth=0.8, linestyle="--", label="target geomean 1.10")
    ax.axhline(1.40, color="tab:red", linewidth=0.8, linestyle="--", label="target worst 1.40")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right")
    ax.set_ylabel("time / floor")
    ratios = list(ratio.values())
    roof = cases[0]["_roofline"]
    parts = []
    for b in backends:
        rows = [c for c in cases if c["_backend"] == b]
        geomean = math.exp(sum(math.log(c["time_over_floor"]) for c in rows) / len(rows))
        worst = max(rows, key=lambda c: c["time_over_floor"])
        parts.append(
            (f"{b}: " if several else "")
            + f"time/floor geomean {geomean:.2f}, worst {worst['time_over_floor']:.2f} "
            f"({worst['model']} T={worst['tokens']})"
        )
    # One line per backend, so that a comparison's title stays inside the figure.
    fig.suptitle(
        f"moe bench on {', '.join(devices)}: roofline copy {roof['copy_gbps']:.0f} GB/s, "
        f"cuBLAS bf16 GEMM {roof['gemm_tflops']:.0f} TFLOP/s\n" + "\n".join(parts),
        fontsize=10,
    )
    ax.set_ylim(0, max(1.5, max(ratios) * 1.08))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=130)
    except OSError as e:
        fail(f"cannot write {out}: {e}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
