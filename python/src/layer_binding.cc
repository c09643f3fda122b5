// moe_engine.Layer: one MoE layer (ConfigurableMoE) built by the factory (create_moe).
//
//   layer = me.Layer(config, backend="auto")     # layer.report says what was chosen and why
//   layer.load_weights(me.random_weights(config, seed=0))
//   y = layer(x, router_logits)                  # x [T, H], logits f32 [T, E] -> y [T, H]
//   layer(x, router_logits, out=y)               # into your buffer (no allocation)
//
// forward() takes any DLPack tensors (tensor_args.h) on the layer's device, without copies,
// and runs on `stream` (default: PyTorch's current stream on that device when torch is
// imported). It allocates only the output when `out` is not given (torch: torch.empty_like(x),
// so a forward can be captured in torch.cuda.graph), never synchronises, and releases the GIL
// while the library runs. Library errors raise moe_engine.MoeError with the library's message.
// NOTE: a forward's cost over the C++ call is the tensor conversions (tensor_args.cc), the
// output allocation and the stream lookup; python/tests/bench_overhead.py and test_gpu.py's
// test_binding_overhead measure it. Every argument is checked on every call (by the library's
// forward, on the views made here).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bindings.h"
#include "moe/checkpoint.h"
#include "moe/moe.h"
#include "tensor_args.h"

namespace moe::py {
namespace {

using namespace nb::literals;

struct PyLayer {
  std::unique_ptr<ConfigurableMoE> moe;
  FactoryReport report;
};

PyLayer make_layer(const MoeConfig& config, const std::string& backend,
                   const std::string& communication, bool allow_fallback, int ep_size,
                   int ep_rank) {
  MoeOptions options;
  options.backend = backend;
  options.communication = communication;
  options.allow_fallback = allow_fallback;
  CreateResult r;
  {
    nb::gil_scoped_release release;  // expert parallel: collective with the other ranks
    r = create_moe(config, Mapping{ep_size, ep_rank}, options);
  }
  return PyLayer{std::move(r.moe), std::move(r.report)};
}

void load(PyLayer& l, WeightSource& source, LoadMode mode) {
  nb::gil_scoped_release release;
  l.moe->load_weights(source, mode);
}

int first_layer(const std::string& path) {
  const std::vector<int> layers = checkpoint_moe_layers(path);
  MOE_CHECK(!layers.empty(), path, ": no MoE layer found");
  return layers.front();
}

void load_checkpoint(PyLayer& l, const std::string& path, std::optional<int> layer) {
  CheckpointLayer ckpt =
      open_checkpoint_layer(path, l.moe->config(), layer ? *layer : first_layer(path));
  load(l, *ckpt.source, ckpt.load_mode);
}

TensorArg input_x(const PyLayer& l, nb::handle x) {
  TensorArg xa = tensor_arg(x, "x", false);
  MOE_CHECK(xa.view.ndim() == 2, "x: expected [T, ", l.moe->config().hidden_size, "], got ",
            xa.view.str());
  return xa;
}

nb::object forward(PyLayer& l, nb::handle x, nb::handle router_logits, nb::handle out,
                   nb::handle stream) {
  const TensorArg xa = input_x(l, x);
  TensorArg logits;
  if (!router_logits.is_none()) logits = tensor_arg(router_logits, "router_logits", false);
  const MoeConfig& c = l.moe->config();
  const TensorArg oa = out.is_none()
                           ? new_tensor_like(xa, {xa.view.size(0), c.hidden_size}, c.act_dtype)
                           : tensor_arg(out, "out", true);
  void* s = stream_arg(stream, l.moe->device());
  {
    nb::gil_scoped_release release;
    l.moe->forward(xa.view, logits.view, oa.view, s);
  }
  return oa.object;
}

std::pair<nb::object, nb::object> route(PyLayer& l, nb::handle x, nb::handle router_logits,
                                        nb::handle stream) {
  const TensorArg xa = input_x(l, x);
  TensorArg logits;
  if (!router_logits.is_none()) logits = tensor_arg(router_logits, "router_logits", false);
  const int64_t t = xa.view.size(0), k = l.moe->config().top_k;
  const TensorArg ids = new_tensor_like(xa, {t, k}, DType::kI32);
  const TensorArg weights = new_tensor_like(xa, {t, k}, DType::kF32);
  void* s = stream_arg(stream, l.moe->device());
  {
    nb::gil_scoped_release release;
    l.moe->route(xa.view, logits.view, ids.view, weights.view, s);
  }
  return {ids.object, weights.object};
}

// The forward on raw addresses: contiguous x, out [T, H] (act_dtype) and router_logits f32
// [T, E] (0: computed from the router weight) on the layer's device.
void forward_raw(PyLayer& l, uintptr_t x, uintptr_t router_logits, uintptr_t out,
                 int64_t num_tokens, uintptr_t stream) {
  const MoeConfig& c = l.moe->config();
  const Device dev = l.moe->device();
  const TensorView xv(reinterpret_cast<void*>(x), c.act_dtype, {num_tokens, c.hidden_size}, dev);
  const TensorView ov(reinterpret_cast<void*>(out), c.act_dtype, {num_tokens, c.hidden_size}, dev);
  TensorView lv;
  if (router_logits != 0) {
    lv = TensorView(reinterpret_cast<void*>(router_logits), DType::kF32,
                    {num_tokens, static_cast<int64_t>(c.num_experts)}, dev);
  }
  nb::gil_scoped_release release;
  l.moe->forward(xv, lv, ov, reinterpret_cast<void*>(stream));
}

// Host seconds per call of `iterations` C++ forwards (no Python in the loop, no
// synchronisation): the baseline of the binding's per-call overhead.
double time_forward(PyLayer& l, nb::handle x, nb::handle router_logits, nb::handle out,
                    int iterations, nb::handle stream) {
  MOE_CHECK(iterations > 0, "time_forward: iterations must be > 0, got ", iterations);
  const TensorArg xa = input_x(l, x);
  TensorArg logits;
  if (!router_logits.is_none()) logits = tensor_arg(router_logits, "router_logits", false);
  const TensorArg oa = tensor_arg(out, "out", true);
  void* s = stream_arg(stream, l.moe->device());
  nb::gil_scoped_release release;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) l.moe->forward(xa.view, logits.view, oa.view, s);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
         iterations;
}

}  // namespace

void bind_layer(nb::module_& m) {
  nb::class_<PyLayer>(m, "Layer", "One MoE layer, built by the factory (create_moe).")
      .def(
          "__init__",
          [](PyLayer* self, const MoeConfig& config, const std::string& backend,
             const std::string& communication, bool allow_fallback, int ep_size, int ep_rank) {
            new (self) PyLayer(
                make_layer(config, backend, communication, allow_fallback, ep_size, ep_rank));
          },
          "config"_a, "backend"_a = "auto", "communication"_a = "auto", "allow_fallback"_a = false,
          "ep_size"_a = 1, "ep_rank"_a = 0,
          "Builds the layer: backend 'auto' (the best this machine can run) or a name from "
          "backends(); ep_size/ep_rank for expert parallelism (under mpirun).")
      .def_static(
          "from_checkpoint",
          [](const std::string& path, std::optional<int> layer, const std::string& backend,
             std::optional<int> max_num_tokens, bool allow_fallback, int ep_size, int ep_rank) {
            const int index = layer ? *layer : first_layer(path);
            MoeConfig config = checkpoint_layer_config(path, index);
            if (max_num_tokens) config.max_num_tokens = *max_num_tokens;
            PyLayer l = make_layer(config, backend, "auto", allow_fallback, ep_size, ep_rank);
            load_checkpoint(l, path, index);
            return l;
          },
          "path"_a, "layer"_a = nb::none(), "backend"_a = "auto", "max_num_tokens"_a = nb::none(),
          "allow_fallback"_a = false, "ep_size"_a = 1, "ep_rank"_a = 0,
          "MoE layer `layer` (default: the first) of a checkpoint directory, built and loaded.")
      .def(
          "load_weights",
          [](PyLayer& l, PyWeights& w, std::optional<std::string> load_mode) {
            load(l, *w.source, load_mode ? parse_load_mode(*load_mode) : w.load_mode);
          },
          "weights"_a, "load_mode"_a = nb::none(),
          "Loads (or reloads) the weights: only this rank's experts, in the backend's layout.")
      .def(
          "load_random_weights",
          [](PyLayer& l, uint64_t seed) {
            auto source = make_random_weights(l.moe->config(), seed);
            load(l, *source, LoadMode::kVanilla);
          },
          "seed"_a = 0)
      .def("load_checkpoint", &load_checkpoint, "path"_a, "layer"_a = nb::none(),
           "Loads MoE layer `layer` (default: the first) of a checkpoint.")
      .def("forward", &forward, "x"_a.none(), "router_logits"_a = nb::none(), "out"_a = nb::none(),
           "stream"_a = nb::none(),
           "out[T, H] = the layer applied to x[T, H] (act_dtype) with router_logits f32[T, E] "
           "(None: computed from the loaded router weight). Tensors: any DLPack object on the "
           "layer's device, not copied. Returns `out`: allocated like x when not given, else "
           "the caller's buffer (act_dtype, [T, H], contiguous, on the layer's device; checked "
           "on every call), written in place with no allocation. Runs on `stream` (None: "
           "PyTorch's current stream on the layer's device).")
      .def("__call__", &forward, "x"_a.none(), "router_logits"_a = nb::none(), "out"_a = nb::none(),
           "stream"_a = nb::none())
      .def("route", &route, "x"_a, "router_logits"_a = nb::none(), "stream"_a = nb::none(),
           "(topk_ids i32[T, k], topk_weights f32[T, k]): the routing a forward uses.")
      .def("forward_raw", &forward_raw, "x_ptr"_a, "router_logits_ptr"_a, "out_ptr"_a,
           "num_tokens"_a, "stream"_a = 0,
           "forward on raw device addresses (contiguous tensors; router_logits_ptr 0: "
           "computed): the lowest-overhead call.")
      .def("time_forward", &time_forward, "x"_a, "router_logits"_a, "out"_a, "iterations"_a = 100,
           "stream"_a = nb::none(),
           "Host seconds per C++ forward call over `iterations` calls (no Python in the loop, "
           "no synchronisation): the baseline for the binding's overhead.")
      .def_prop_ro("config", [](const PyLayer& l) { return l.moe->config(); })
      .def_prop_ro(
          "report", [](const PyLayer& l) { return l.report; }, "The factory's decisions (Report).")
      .def_prop_ro("backend", [](const PyLayer& l) { return std::string(l.moe->backend_name()); })
      .def_prop_ro(
          "device", [](const PyLayer& l) { return l.moe->device().str(); },
          "'cpu' or 'cuda:N': where x, router_logits and out must live.")
      .def_prop_ro("iteration", [](const PyLayer& l) { return l.moe->iteration(); })
      .def("__repr__", [](const PyLayer& l) {
        return "moe_engine.Layer(" + l.moe->config().name +
               ", backend=" + std::string(l.moe->backend_name()) +
               ", device=" + l.moe->device().str() + ")";
      });
}

}  // namespace moe::py
