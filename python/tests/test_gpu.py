"""moe_engine on a GPU with PyTorch tensors (skipped without torch, CUDA or a GPU backend):

  - the layer against a PyTorch implementation of it on the same weights (and against the
    Hugging Face Qwen3-MoE block when transformers is installed);
  - capture inside torch.cuda.graph and replay with new inputs;
  - the binding's per-call overhead over the C++ call (target: under 5 us).

Run on the GPU machine: PYTHONPATH=<build>/python python3 -m pytest -s python/tests/test_gpu.py
"""
import time

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to PyTorch", allow_module_level=True)

import moe_engine as me  # noqa: E402

T = 64


def qwen3_config(experts=32):
    """Qwen3-30B-A3B's layer shape (H 2048, I 768, top-8 softmax) with fewer experts."""
    return me.preset("qwen3-30b-a3b").replace(num_experts=experts, max_num_tokens=256)


def torch_weights(config, seed=0):
    """Random bf16 weights on the host, N(0, 1/in), by canonical name."""
    g = torch.Generator().manual_seed(seed)
    h, i = config.hidden_size, config.intermediate_size

    def w(rows, cols):
        return (torch.randn(rows, cols, generator=g) / cols ** 0.5).to(torch.bfloat16)

    tensors = {"gate.weight": w(config.num_experts, h)}
    for e in range(config.num_experts):
        tensors[f"experts.{e}.gate_proj.weight"] = w(i, h)
        tensors[f"experts.{e}.up_proj.weight"] = w(i, h)
        tensors[f"experts.{e}.down_proj.weight"] = w(h, i)
    return tensors


def torch_moe(config, tensors, x, logits):
    """The layer in PyTorch (float32 math): softmax -> top-k -> renormalize -> SwiGLU experts."""
    probs = torch.softmax(logits.float(), dim=-1)
    w, ids = torch.topk(probs, config.top_k, dim=-1)
    if config.renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    xf = x.float()
    out = torch.zeros_like(xf)
    for e in ids.unique().tolist():
        hit = ids == e
        rows = hit.any(dim=-1).nonzero().squeeze(-1)
        weight = (w * hit).sum(dim=-1)[rows, None]
        w1 = tensors[f"experts.{e}.gate_proj.weight"].cuda().float()
        w3 = tensors[f"experts.{e}.up_proj.weight"].cuda().float()
        w2 = tensors[f"experts.{e}.down_proj.weight"].cuda().float()
        h = torch.nn.functional.silu(xf[rows] @ w1.T) * (xf[rows] @ w3.T)
        out[rows] += weight * (h @ w2.T)
    return out


def rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def setup():
    config = qwen3_config()
    layer = me.Layer(config)
    print("\n" + str(layer.report))
    if not layer.device.startswith("cuda"):
        pytest.skip(f"no GPU backend can run here: {layer.report.backend} on {layer.device}")
    tensors = torch_weights(config)
    layer.load_weights(me.weights_from_tensors(config, tensors))
    return config, layer, tensors


def inputs(config, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, config.hidden_size, device="cuda", generator=g).to(torch.bfloat16)
    logits = torch.randn(T, config.num_experts, device="cuda", generator=g)
    return x, logits


def test_matches_pytorch(setup):
    config, layer, tensors = setup
    x, logits = inputs(config, 1)
    y = layer(x, logits)
    assert y.is_cuda and y.dtype == torch.bfloat16 and y.shape == x.shape
    err = rel_l2(y, torch_moe(config, tensors, x, logits))
    print(f"{layer.backend} vs PyTorch: relative L2 {err:.2e}")
    assert err < 1e-2


def test_router_weight_path_and_streams(setup):
    config, layer, tensors = setup
    x, _ = inputs(config, 2)
    logits = (x.float() @ tensors["gate.weight"].cuda().float().T)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # runs on the current (side) stream
        y = layer(x)
    torch.cuda.current_stream().wait_stream(side)
    assert rel_l2(y, torch_moe(config, tensors, x, logits)) < 2e-2
    side.wait_stream(torch.cuda.current_stream())
    y2 = layer(x, logits, stream=side)  # an explicit stream object
    side.synchronize()
    assert rel_l2(y2, y) < 2e-2


def test_out_argument(setup):
    config, layer, _ = setup
    x, logits = inputs(config, 8)
    expect = layer(x, logits)
    out = torch.full_like(x, float("nan"))
    assert layer.forward(x, logits, out=out) is out
    torch.cuda.synchronize()
    assert rel_l2(out, expect) < 1e-3
    h = config.hidden_size

    def raises(fragment):
        return pytest.raises(me.MoeError, match=fragment)

    with raises("out: expected bf16"):
        layer.forward(x, logits, out=torch.empty(T, h, device="cuda"))
    with raises(rf"out: expected \[T, {h}\] with T = {T}"):
        layer.forward(x, logits, out=out[:8])
    with raises("out must be contiguous"):
        layer.forward(x, logits, out=torch.empty(T, 2 * h, dtype=x.dtype, device="cuda")[:, ::2])
    with raises(f"out is on cpu but the layer runs on {layer.device}"):
        layer.forward(x, logits, out=torch.empty_like(x, device="cpu"))
    with raises(f"x is on cpu but the layer runs on {layer.device}"):
        layer.forward(x.cpu(), logits)
    with raises("router_logits must be contiguous"):
        layer.forward(x, logits.T.contiguous().T)


def test_matches_hugging_face_block():
    transformers = pytest.importorskip("transformers")
    try:
        from transformers.models.qwen3_moe import modeling_qwen3_moe as qm
    except ImportError as e:
        pytest.skip(f"transformers has no Qwen3-MoE: {e}")
    config = qwen3_config(experts=16)
    hf_config = transformers.Qwen3MoeConfig(
        hidden_size=config.hidden_size, moe_intermediate_size=config.intermediate_size,
        num_experts=config.num_experts, num_experts_per_tok=config.top_k, norm_topk_prob=True)
    torch.manual_seed(0)
    block = qm.Qwen3MoeSparseMoeBlock(hf_config).to(torch.bfloat16).cuda().eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5)
    sd = {k: v.detach().cpu().contiguous() for k, v in block.state_dict().items()}
    tensors = {"gate.weight": sd["gate.weight"]}
    i = config.intermediate_size
    if "experts.0.gate_proj.weight" in sd:  # per-expert modules
        tensors.update({k: v for k, v in sd.items() if k.startswith("experts.")})
    elif "experts.gate_up_proj" in sd:  # stacked experts [E, 2I, H] / [E, H, I]
        gate_up, down = sd["experts.gate_up_proj"], sd["experts.down_proj"]
        if gate_up.shape[1] != 2 * i:
            gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
        for e in range(config.num_experts):
            tensors[f"experts.{e}.gate_proj.weight"] = gate_up[e, :i].contiguous()
            tensors[f"experts.{e}.up_proj.weight"] = gate_up[e, i:].contiguous()
            tensors[f"experts.{e}.down_proj.weight"] = down[e].contiguous()
    else:
        pytest.skip(f"unknown Qwen3-MoE weight layout: {sorted(sd)[:6]}")
    layer = me.Layer(config)
    if not layer.device.startswith("cuda"):
        pytest.skip("no GPU backend")
    layer.load_weights(me.weights_from_tensors(config, tensors))
    x, _ = inputs(config, 3)
    with torch.no_grad():
        logits = torch.nn.functional.linear(x, block.gate.weight).float()  # as the block does
        hf = block(x[None])
    hf = (hf[0] if isinstance(hf, tuple) else hf)[0]
    err = rel_l2(layer(x, logits), hf)
    print(f"{layer.backend} vs transformers {transformers.__version__}: relative L2 {err:.2e}")
    assert err < 2e-2


def test_cuda_graph_capture_and_replay(setup):
    config, layer, tensors = setup
    x, logits = inputs(config, 4)
    out = torch.empty_like(x)
    layer(x, logits, out=out)  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = layer(x, logits)  # allocated from the graph's pool
        layer(x, logits, out=out)  # into a caller's buffer
    for seed in (5, 6):  # new inputs into the captured buffers, then replay
        new_x, new_logits = inputs(config, seed)
        x.copy_(new_x)
        logits.copy_(new_logits)
        y.fill_(float("nan"))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        eager = layer(new_x, new_logits)
        assert rel_l2(y, eager) < 1e-3 and rel_l2(out, eager) < 1e-3
        assert rel_l2(y, torch_moe(config, tensors, new_x, new_logits)) < 1e-2


def host_seconds_per_call(fn, iterations=50, repeats=7):
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - start) / iterations)
    torch.cuda.synchronize()
    return best


def test_binding_overhead(setup):
    config, layer, _ = setup
    x, logits = inputs(config, 7)
    x, logits = x[:16].contiguous(), logits[:16].contiguous()
    out = torch.empty_like(x)
    stream = torch.cuda.current_stream()
    layer(x, logits, out=out)
    cpp = float("inf")
    for _ in range(7):
        torch.cuda.synchronize()
        cpp = min(cpp, layer.time_forward(x, logits, out, 50, stream))
    torch.cuda.synchronize()
    ptr = stream.cuda_stream
    timings = {
        "forward(x, logits, out=out)": lambda: layer.forward(x, logits, out=out),
        "forward(x, logits, out=out, stream=s)": lambda: layer.forward(x, logits, out=out,
                                                                       stream=stream),
        "forward(x, logits)  (allocates out)": lambda: layer.forward(x, logits),
        "layer(x, logits)  (allocates out)": lambda: layer(x, logits),
        "forward_raw(ptrs)": lambda: layer.forward_raw(x.data_ptr(), logits.data_ptr(),
                                                       out.data_ptr(), 16, ptr),
    }
    print(f"\nC++ forward: {cpp * 1e6:.2f} us per call (host)")
    over = {}
    for name, fn in timings.items():
        s = host_seconds_per_call(fn)
        over[name] = s - cpp
        print(f"{name:42s} {s * 1e6:7.2f} us per call, {over[name] * 1e6:+6.2f} us over C++")
    assert over["forward(x, logits, out=out)"] < 5e-6
