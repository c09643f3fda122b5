"""moe_engine on the CPU (reference backend, NumPy): the layer against the model written out
in NumPy, weights from every source (random, checkpoint, the caller's arrays), the factory
report, PyTorch and generic DLPack tensors, and every error path raising MoeError with the
library's message.

Run: PYTHONPATH=build/python pytest python/tests   (ctest: python_tests)
"""
import pathlib

import numpy as np
import pytest

import moe_engine as me
from layer_model import (bf16_to_f32, expert_matrices, f32_to_bf16, layer_forward,
                         random_bf16, relative_l2, softmax_topk)

HF_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "hf_configs"


def tiny(**fields):
    """A small softmax top-k layer (bf16) that the reference backend runs in milliseconds."""
    base = dict(name="tiny", num_experts=8, top_k=2, hidden_size=128, intermediate_size=64,
                max_num_tokens=16)
    base.update(fields)
    return me.Config(**base)


@pytest.fixture(scope="module")
def layer():
    lay = me.Layer(tiny(), backend="reference")
    lay.load_random_weights(seed=1)
    return lay


def logits_for(config, t, seed=3):
    return np.random.default_rng(seed).standard_normal((t, config.num_experts), dtype=np.float32)


# ---- Module and Config ---------------------------------------------------------------------


def test_module_lists():
    assert me.__version__.count(".") == 2
    assert "qwen3-30b-a3b" in me.presets()
    assert "reference" in me.backends()
    assert "fp8_block" in me.quant_modes()
    assert me.SHARED_EXPERT == -1


def test_config_fields_and_replace():
    c = me.preset("qwen3-30b-a3b")
    assert (c.num_experts, c.top_k, c.hidden_size, c.intermediate_size) == (128, 8, 2048, 768)
    assert c.routing_method == "softmax_topk" and c.quant == "bf16" and c.act_dtype == "bf16"
    small = c.replace(num_experts=16, quant="fp8_block")
    assert small.num_experts == 16 and small.quant == "fp8_block" and c.num_experts == 128
    assert small.to_dict()["num_experts"] == 16
    assert me.Config(**c.to_dict()) == c
    assert "128" in c.summary()
    c.validate()


def test_config_from_hf_json():
    c = me.config_from_hf_json(str(HF_CONFIGS / "deepseek_v3.json"))
    assert c.routing_method == "deepseek_v3" and c.num_experts == 256 and c.quant == "fp8_block"
    assert c.num_groups == 8 and c.topk_groups == 4 and c.routed_scaling_factor == 2.5
    text = (HF_CONFIGS / "mixtral.json").read_text()
    assert me.config_from_hf_json_text(text).num_experts == 8


# ---- The layer -----------------------------------------------------------------------------


def test_forward_matches_numpy_model(layer):
    c = layer.config
    x = random_bf16((12, c.hidden_size), seed=2)
    logits = logits_for(c, 12)
    out = layer.forward(x, logits)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint16 and out.shape == x.shape
    experts = expert_matrices(me.random_weights(c, seed=1), c)
    expect = layer_forward(c, experts, bf16_to_f32(x), logits)
    assert relative_l2(bf16_to_f32(out), expect) < 1e-2


def test_route_matches_numpy(layer):
    c = layer.config
    x = random_bf16((12, c.hidden_size), seed=2)
    logits = logits_for(c, 12)
    ids, weights = layer.route(x, logits)
    assert ids.dtype == np.int32 and ids.shape == (12, c.top_k) and weights.dtype == np.float32
    expect_ids, expect_w = softmax_topk(logits, c.top_k)
    np.testing.assert_array_equal(ids, expect_ids)
    np.testing.assert_allclose(weights, expect_w, rtol=1e-5)


def test_fp16_layer_takes_float16_arrays():
    c = tiny(quant="fp16", act_dtype="f16")
    lay = me.Layer(c, backend="reference")
    lay.load_random_weights(seed=4)
    x = np.random.default_rng(5).standard_normal((6, c.hidden_size)).astype(np.float16)
    logits = logits_for(c, 6)
    out = lay(x, logits)
    assert out.dtype == np.float16
    expect = layer_forward(c, expert_matrices(me.random_weights(c, seed=4), c), x, logits)
    assert relative_l2(out, expect) < 5e-3


def test_out_argument_is_written_in_place(layer):
    c = layer.config
    x = random_bf16((5, c.hidden_size), seed=6)
    logits = logits_for(c, 5)
    out = np.full((5, c.hidden_size), 0x7FC0, dtype=np.uint16)  # bf16 NaN
    returned = layer.forward(x, logits, out=out)
    assert returned is out
    np.testing.assert_array_equal(out, layer.forward(x, logits))
    assert np.isfinite(bf16_to_f32(out)).all()


def test_router_weight_used_without_logits(layer):
    c = layer.config
    x = random_bf16((8, c.hidden_size), seed=7)
    out = layer.forward(x)
    assert np.isfinite(bf16_to_f32(out)).all()
    wg = bf16_to_f32(me.random_weights(c, seed=1).router_weight()).astype(np.float64)
    logits = bf16_to_f32(x).astype(np.float64) @ wg.T
    ids, _ = layer.route(x)
    top = np.sort(logits, axis=1)[:, ::-1]
    clear = top[:, c.top_k - 1] - top[:, c.top_k] > 1e-3  # no near-tie at the k-th expert
    expect_ids, _ = softmax_topk(logits, c.top_k)
    np.testing.assert_array_equal(ids[clear], expect_ids[clear])


def test_zero_tokens_and_chunking(layer):
    c = layer.config
    empty = layer.forward(np.zeros((0, c.hidden_size), np.uint16), np.zeros((0, 8), np.float32))
    assert empty.shape == (0, c.hidden_size)
    t = 3 * c.max_num_tokens + 5  # more than one chunk
    x = random_bf16((t, c.hidden_size), seed=8)
    logits = logits_for(c, t)
    whole = layer.forward(x, logits)
    first = layer.forward(x[:7], logits[:7])
    np.testing.assert_array_equal(whole[:7], first)


def test_iteration_counter(layer):
    before = layer.iteration
    layer.forward(random_bf16((2, 128), 9), logits_for(layer.config, 2))
    assert layer.iteration == before + 1


def test_report():
    lay = me.Layer(tiny(), backend="reference")
    r = lay.report
    assert r.backend == "reference" and r.requested_backend == "reference"
    assert any(cand.chosen and cand.name == "reference" for cand in r.backends)
    assert r.communication == "local" and r.device
    assert "backend: reference" in str(r)
    assert lay.backend == "reference" and lay.device == "cpu"
    auto = me.Layer(tiny())
    assert auto.report.requested_backend == "auto" and auto.report.backend in me.backends()


# ---- Weights from every source -------------------------------------------------------------


PARTS = ("weight", "weight_scale", "weight_scale_2", "input_scale", "bias")


@pytest.mark.parametrize("quant", ["bf16", "fp8_block", "fp8_per_tensor", "nvfp4", "mxfp4"])
def test_weights_from_tensors_match_random_weights(quant):
    c = tiny(quant=quant, hidden_size=256, intermediate_size=128)
    src = me.random_weights(c, seed=1)
    tensors = {"gate.weight": src.router_weight()}
    for e in range(c.num_experts):
        for p in ("gate_proj", "up_proj", "down_proj"):
            for part in PARTS:
                t = src.tensor(e, p, part)
                if t is not None:
                    tensors[f"experts.{e}.{p}.{part}"] = t
    own = me.Layer(c, backend="reference")
    own.load_weights(me.weights_from_tensors(c, tensors))
    ref = me.Layer(c, backend="reference")
    ref.load_weights(src)
    x = random_bf16((9, c.hidden_size), seed=10)
    logits = logits_for(c, 9)
    np.testing.assert_array_equal(own(x, logits), ref(x, logits))
    np.testing.assert_array_equal(own(x), ref(x))  # the router weight too


@pytest.mark.parametrize("quant", ["bf16", "fp16", "fp8_block", "fp8_per_tensor", "nvfp4",
                                   "mxfp4"])
def test_checkpoint_round_trip(tmp_path, quant):
    c = tiny(quant=quant, hidden_size=256, intermediate_size=128,
             act_dtype="f16" if quant == "fp16" else "bf16")
    src = me.random_weights(c, seed=11)
    me.save_checkpoint(str(tmp_path), c, src, layer=2)
    assert me.checkpoint_layers(str(tmp_path)) == [2]
    back = me.checkpoint_config(str(tmp_path))
    assert back.quant == quant and back.num_experts == 8 and back.hidden_size == 256
    from_ckpt = me.Layer.from_checkpoint(str(tmp_path), backend="reference", max_num_tokens=16)
    direct = me.Layer(c, backend="reference")
    direct.load_weights(src)
    x = random_bf16((7, 256), seed=12)
    if quant == "fp16":
        x = bf16_to_f32(x).astype(np.float16)
    np.testing.assert_array_equal(from_ckpt(x), direct(x))
    ckpt = me.open_checkpoint(str(tmp_path), back)
    assert ckpt.tensor(0, "gate_proj").dtype == {"bf16": np.uint16, "fp16": np.float16}.get(
        quant, np.uint8)
    if quant == "fp8_block":
        assert ckpt.tensor(0, "gate_proj", "weight_scale").shape == (1, 2)  # 128x128 blocks


# ---- Other tensor producers ----------------------------------------------------------------


class DLPackOnly:
    """A tensor that offers only the DLPack protocol (as CuPy or JAX arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_generic_dlpack_objects():
    c = tiny(quant="fp16", act_dtype="f16")  # NumPy reads float16 back through DLPack
    lay = me.Layer(c, backend="reference")
    lay.load_random_weights(seed=13)
    x = np.random.default_rng(13).standard_normal((4, c.hidden_size)).astype(np.float16)
    logits = logits_for(c, 4)
    out = lay.forward(DLPackOnly(x), DLPackOnly(logits))
    assert not isinstance(out, np.ndarray) and hasattr(out, "__dlpack__")
    assert out.__dlpack_device__() == (1, 0)  # kDLCPU
    np.testing.assert_array_equal(np.from_dlpack(out), lay.forward(x, logits))
    ids, weights = lay.route(DLPackOnly(x), DLPackOnly(logits))
    np.testing.assert_array_equal(np.from_dlpack(ids), lay.route(x, logits)[0])


def test_bf16_dlpack_output_reads_in_torch(layer):
    torch = pytest.importorskip("torch")
    c = layer.config
    x = random_bf16((3, c.hidden_size), seed=16)
    logits = logits_for(c, 3)
    out = torch.from_dlpack(layer.forward(DLPackOnly(x), DLPackOnly(logits)))
    assert out.dtype == torch.bfloat16  # a true bf16 DLPack tensor, not uint16
    np.testing.assert_array_equal(out.view(torch.int16).numpy().view(np.uint16), layer(x, logits))


def test_torch_cpu_tensors(layer):
    torch = pytest.importorskip("torch")
    c = layer.config
    x = random_bf16((6, c.hidden_size), seed=14)
    logits = logits_for(c, 6)
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    out = layer(xt, torch.from_numpy(logits))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    np.testing.assert_array_equal(out.view(torch.int16).numpy().view(np.uint16),
                                  layer(x, logits))
    ids, weights = layer.route(xt, torch.from_numpy(logits))
    assert ids.dtype == torch.int32 and weights.dtype == torch.float32


def torch_bf16(bits):
    """A torch bf16 tensor with the given uint16 bf16 bit patterns (a copy)."""
    import torch

    return torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)


def torch_bits(t):
    """A torch bf16 tensor's bit patterns as a NumPy uint16 array."""
    import torch

    return t.view(torch.int16).numpy().view(np.uint16)


def test_torch_out_argument_and_allocation(layer):
    torch = pytest.importorskip("torch")
    c = layer.config
    x = random_bf16((5, c.hidden_size), seed=17)
    logits = logits_for(c, 5)
    expect = layer(x, logits)
    xt, lt = torch_bf16(x), torch.from_numpy(logits)
    out = torch.full((5, c.hidden_size), float("nan"), dtype=torch.bfloat16)  # poisoned
    assert layer.forward(xt, lt, out=out) is out
    np.testing.assert_array_equal(torch_bits(out), expect)
    assert layer(xt, lt, out) is out  # positional, through __call__
    a, b = layer(xt, lt), layer(xt, lt)  # fresh tensors each call, never x itself
    assert a.data_ptr() not in (b.data_ptr(), xt.data_ptr(), out.data_ptr())
    assert a.dtype == torch.bfloat16 and a.shape == xt.shape and a.is_contiguous()
    np.testing.assert_array_equal(torch_bits(a), expect)
    ids, weights = layer.route(xt, lt)
    assert ids.shape == (5, c.top_k) and weights.shape == (5, c.top_k)
    if hasattr(torch, "uint16"):  # bf16 bit patterns as uint16: the output is still bf16
        y = layer(torch.from_numpy(x.astype(np.int32)).to(torch.uint16), lt)
        assert y.dtype == torch.bfloat16
        np.testing.assert_array_equal(torch_bits(y), expect)


def test_torch_subclasses_and_size_one_strides(layer):
    torch = pytest.importorskip("torch")
    c = layer.config

    class Marked(torch.Tensor):  # read by name (a subclass may override members)
        pass

    x = random_bf16((3, c.hidden_size), seed=18)
    logits = logits_for(c, 3)
    expect = layer(x, logits)
    xt, lt = torch_bf16(x), torch.from_numpy(logits)
    out = torch.empty_like(xt).as_subclass(Marked)
    y = layer(xt.as_subclass(Marked), torch.nn.Parameter(lt, requires_grad=False), out=out)
    assert y is out
    np.testing.assert_array_equal(torch_bits(out.as_subclass(torch.Tensor)), expect)
    np.testing.assert_array_equal(torch_bits(layer(xt.as_subclass(Marked), lt)), expect)
    one = torch_bf16(x[:1].reshape(c.hidden_size, 1).copy()).T  # [1, H], strides (1, 1)
    assert one.stride() == (1, 1) and one.is_contiguous()
    np.testing.assert_array_equal(torch_bits(layer(one, lt[:1])), layer(x[:1], logits[:1]))


def test_torch_errors(layer):
    torch = pytest.importorskip("torch")
    c = layer.config
    xt = torch_bf16(random_bf16((4, c.hidden_size), seed=19))
    lt = torch.from_numpy(logits_for(c, 4))
    with raises("x: expected bf16"):
        layer.forward(xt.float(), lt)
    with raises(r"x: expected \[T, 128\]"):
        layer.forward(xt[:, :64].contiguous(), lt)
    with raises("x must be contiguous"):
        layer.forward(torch_bf16(random_bf16((128, 4), 1)).T, lt)
    with raises("x: tensors on meta are not supported"):
        layer.forward(torch.empty(4, c.hidden_size, dtype=torch.bfloat16, device="meta"), lt)
    with raises("x: 8-bit"):
        layer.forward(xt.view(torch.uint8), lt)
    with raises("router_logits must be contiguous"):
        layer.forward(xt, lt.T.contiguous().T)  # [4, 8] with strides (1, 4)
    with raises("router_logits: unsupported element type torch.float64"):
        layer.forward(xt, lt.double())
    with raises("router_logits: expected f32"):
        layer.forward(xt, lt[:3])
    good = torch.empty_like(xt)
    with raises("out: expected bf16"):
        layer.forward(xt, lt, out=torch.empty(4, c.hidden_size))
    with raises(r"out: expected \[T, 128\] with T = 4"):
        layer.forward(xt, lt, out=good[:3])
    with raises("out must be contiguous"):
        layer.forward(xt, lt, out=torch.empty(4, 2 * c.hidden_size, dtype=torch.bfloat16)[:, ::2])
    with raises("out: tensors on meta are not supported"):
        layer.forward(xt, lt, out=torch.empty_like(xt, device="meta"))


# ---- Errors: MoeError with the library's message -------------------------------------------


def raises(fragment):
    return pytest.raises(me.MoeError, match=fragment)


def test_error_is_runtime_error_with_location():
    with pytest.raises(RuntimeError) as info:
        me.preset("no-such-model")
    assert isinstance(info.value, me.MoeError)
    assert "qwen3-30b-a3b" in str(info.value)  # lists the known presets
    assert ".cc:" in str(info.value)  # "[file:line]"


def test_config_errors():
    with raises("num_experts"):
        tiny(num_experts=0).validate()
    with raises("no_such_quant"):
        tiny(quant="no_such_quant")
    with raises("routing"):
        tiny(routing_method="bogus")
    with pytest.raises(TypeError, match="no field 'num_expert'"):
        me.Config(num_expert=8)
    with pytest.raises(TypeError, match="num_experts must be int"):
        me.Config(num_experts="eight")
    with pytest.raises(TypeError, match="num_experts must be int"):
        me.Config(num_experts=2.5)
    assert me.Config(routed_scaling_factor=2).routed_scaling_factor == 2.0
    with raises("malformed JSON"):
        me.config_from_hf_json_text("{not json")
    with raises("cannot open"):
        me.config_from_hf_json("/no/such/config.json")


def test_factory_errors():
    with raises("unknown backend 'nope'"):
        me.Layer(tiny(), backend="nope")
    with raises("num_experts"):
        me.Layer(tiny(num_experts=-1))


def test_forward_errors(layer):
    c = layer.config
    x = random_bf16((4, c.hidden_size), seed=15)
    logits = logits_for(c, 4)
    fresh = me.Layer(c, backend="reference")
    with raises("forward before load_weights"):
        fresh.forward(x, logits)
    with raises("x: expected bf16"):
        layer.forward(bf16_to_f32(x), logits)
    with raises(r"x: expected \[T, 128\]"):
        layer.forward(random_bf16((4, 64), 1), logits)
    with raises(r"x: expected \[T, 128\]"):
        layer.forward(random_bf16((128,), 1))
    with raises("x.*contiguous"):
        layer.forward(random_bf16((128, 4), 1).T, logits)
    with raises("router_logits"):
        layer.forward(x, logits[:, :4].copy())
    with raises("router_logits: unsupported element type"):
        layer.forward(x, logits.astype(np.float64))
    with raises("out"):
        layer.forward(x, logits, out=np.zeros((3, c.hidden_size), np.uint16))
    read_only = np.zeros((4, c.hidden_size), np.uint16)
    read_only.flags.writeable = False
    with raises("read-only"):
        layer.forward(x, logits, out=read_only)
    with raises("x: expected a tensor"):
        layer.forward([[1.0, 2.0]], logits)
    with raises("x: expected a tensor, got None"):
        layer.forward(None, logits)
    with raises("CUDA stream was given"):
        layer.forward(x, logits, stream=12345)
    with raises("stream: expected None"):
        layer.forward(x, logits, stream="default")
    with raises("8-bit"):
        layer.forward(x.view(np.uint8), logits)


def test_weight_errors(layer, tmp_path):
    c = layer.config
    with raises("unknown tensor name 'experts.99.gate_proj.weight'"):
        me.weights_from_tensors(c, {"experts.99.gate_proj.weight": random_bf16((64, 128), 1)})
    with raises("contiguous host tensor"):
        me.weights_from_tensors(c, {"gate.weight": random_bf16((128, 8), 1).T})
    lay = me.Layer(c, backend="reference")
    with raises("experts.0"):  # names the tensor the source lacks or has wrong
        lay.load_weights(me.weights_from_tensors(c, {"gate.weight": random_bf16((8, 128), 1)}))
    wrong = {f"experts.{e}.{p}.weight": np.zeros((64, 128), np.float32)
             for e in range(8) for p in ("gate_proj", "up_proj")}
    with raises("experts.0"):
        me.Layer(c, backend="reference").load_weights(me.weights_from_tensors(c, wrong))
    with raises("unknown projection"):
        me.random_weights(c).tensor(0, "w1")
    with raises("unknown load mode"):
        layer.load_weights(me.random_weights(c), load_mode="fused")
    with raises("no_such_dir"):
        me.open_checkpoint(str(tmp_path / "no_such_dir"), c)
    with raises("no_such_dir"):
        me.Layer.from_checkpoint(str(tmp_path / "no_such_dir"))
    gpt_oss = me.preset("gpt-oss-20b").replace(num_experts=4, hidden_size=64,
                                               intermediate_size=64, quant="bf16")
    with raises("cannot express"):
        me.save_checkpoint(str(tmp_path / "g"), gpt_oss, me.random_weights(gpt_oss))
