"""The MoE layer written out in NumPy (softmax top-k routing, SwiGLU experts), and the bf16
helpers the tests share: the model the moe_engine module is checked against.

    out[t] = sum_j w[t, j] * W2_e (silu(W1_e x[t]) * (W3_e x[t])),  e = ids[t, j]
"""
import numpy as np


def bf16_to_f32(bits):
    """uint16 bf16 bit patterns -> float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values):
    """float32 -> uint16 bf16 bit patterns, rounding to nearest even."""
    u = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def random_bf16(shape, seed):
    return f32_to_bf16(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def relative_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def softmax_topk(logits, k, renormalize=True):
    """(ids [T, k], weights [T, k]) of softmax -> top-k (-> renormalize)."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, ids, axis=1)
    if renormalize:
        w /= w.sum(axis=1, keepdims=True)
    return ids, w


def expert_matrices(weights, config):
    """Per expert (W1, W3, W2) as float64 from a bf16 or fp16 Weights."""
    def as_float(a):
        return bf16_to_f32(a) if a.dtype == np.uint16 else a.astype(np.float32)

    return [
        tuple(as_float(weights.tensor(e, p)).astype(np.float64)
              for p in ("gate_proj", "up_proj", "down_proj"))
        for e in range(config.num_experts)
    ]


def layer_forward(config, experts, x, logits):
    """The layer on float inputs x [T, H] with router logits [T, E] -> float64 [T, H]."""
    x = np.asarray(x, dtype=np.float64)
    ids, w = softmax_topk(logits, config.top_k, config.renormalize)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(config.top_k):
            w1, w3, w2 = experts[ids[t, j]]
            g = w1 @ x[t]
            h = g / (1 + np.exp(-g)) * (w3 @ x[t])
            out[t] += w[t, j] * (w2 @ h)
    return out
