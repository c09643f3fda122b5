"""The binding's per-call host overhead on the CPU: moe_engine's forward on a tiny reference layer
against the same forward called from C++ (Layer.time_forward: no Python in the loop).

What it isolates: converting the tensor arguments (PyTorch attribute reads, DLPack / buffer
imports), allocating the output, nanobind's argument parsing and the GIL release. The C++
forward itself is in the baseline and subtracted; with the default T = 0 tokens it only checks
its arguments (about 0.3 us), so the difference is not lost in the noise of a real forward (use
--tokens 1 for one). On a CPU layer there is no stream lookup (None means "no stream" there):
test_gpu.py's test_binding_overhead measures the whole thing, stream included, on a GPU.

Not a pytest test (pytest collects test_*.py only). Run:
  PYTHONPATH=<build>/python MOE_NUM_THREADS=1 python3 python/tests/bench_overhead.py [--tokens 0]
"""
import argparse
import os
import time

import numpy as np

import moe_engine as me


def best_seconds_per_call(fn, iterations, repeats):
    """The fastest of `repeats` runs of `iterations` calls, per call (host seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - start) / iterations)
    return best


def tiny_layer():
    config = me.Config(name="tiny", num_experts=8, top_k=2, hidden_size=128, intermediate_size=64,
                       max_num_tokens=16)
    layer = me.Layer(config, backend="reference")
    layer.load_random_weights(seed=1)
    return layer


def cases(layer, framework, tokens):
    """(name, callable, the C++ baseline's arguments) for one tensor framework."""
    c = layer.config
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((tokens, c.hidden_size), dtype=np.float32).view(np.uint32) >> 16)
    x = x.astype(np.uint16)  # bf16 bit patterns
    logits = rng.standard_normal((tokens, c.num_experts), dtype=np.float32)
    out = np.empty_like(x)
    if framework == "torch":
        import torch

        x = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        logits, out = torch.from_numpy(logits), torch.empty_like(x)
        ptrs = (x.data_ptr(), logits.data_ptr(), out.data_ptr())
    else:
        ptrs = (x.ctypes.data, logits.ctypes.data, out.ctypes.data)
    return (x, logits, out), [
        ("forward(x, logits, out=out)", lambda: layer.forward(x, logits, out=out)),
        ("forward(x, logits)  (allocates)", lambda: layer.forward(x, logits)),
        ("layer(x, logits, out=out)", lambda: layer(x, logits, out=out)),
        ("forward_raw(ptrs)", lambda: layer.forward_raw(ptrs[0], ptrs[1], ptrs[2], tokens)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    layer = tiny_layer()
    frameworks = ["numpy"]
    try:
        import torch  # noqa: F401

        frameworks.insert(0, "torch")
    except ImportError:
        print("(torch not installed: NumPy only)")
    print(f"tiny reference layer, T = {args.tokens}, MOE_NUM_THREADS = "
          f"{os.environ.get('MOE_NUM_THREADS', 'default')}; best of {args.repeats} x "
          f"{args.iterations} calls")
    for framework in frameworks:
        (x, logits, out), timed = cases(layer, framework, args.tokens)
        for _, fn in timed:
            fn()  # warm-up: torch's lookups, the first allocation
        cpp = min(layer.time_forward(x, logits, out, args.iterations)
                  for _ in range(args.repeats))
        print(f"\n{framework}: C++ forward {cpp * 1e6:6.2f} us per call")
        for name, fn in timed:
            s = best_seconds_per_call(fn, args.iterations, args.repeats)
            print(f"  {name:34s} {s * 1e6:7.2f} us, {(s - cpp) * 1e6:+6.2f} us over C++")


if __name__ == "__main__":
    main()
