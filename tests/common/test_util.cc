#include "common/test_util.h"

#include <cstring>

#include "core/random.h"
#include "routing/routing.h"

namespace moe::testing {

Tensor* MapWeightSource::find(int expert, Proj proj, Part part) {
  auto it = tensors_.find({expert, proj, part});
  return it == tensors_.end() ? nullptr : &it->second;
}

TensorView MapWeightSource::expert_tensor(int expert, Proj proj, Part part) {
  Tensor* t = find(expert, proj, part);
  return t ? t->view() : TensorView();
}

Tensor clone(const TensorView& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  if (t.nbytes() > 0) std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

Tensor random_x(const MoeConfig& c, int64_t t, uint64_t seed) {
  Tensor x = Tensor::empty({t, c.hidden_size}, c.act_dtype);
  fill_normal(x, stream_id(seed, 1));
  return x;
}

Routed random_routing(const MoeConfig& c, int64_t t, uint64_t seed, int hot_expert) {
  Routed r;
  r.logits = Tensor::empty({t, c.num_experts}, DType::kF32);
  fill_normal(r.logits, stream_id(seed, 7));
  if (hot_expert >= 0) {
    for (int64_t i = 0; i < t; ++i) r.logits.data_as<float>()[i * c.num_experts + hot_expert] += 50;
  }
  r.ids = Tensor::empty({t, c.top_k}, DType::kI32);
  r.weights = Tensor::empty({t, c.top_k}, DType::kF32);
  Tensor bias;
  if (c.routing.has_correction_bias) {
    bias = Tensor::empty({c.num_experts}, DType::kF32);
    fill_normal(bias, stream_id(seed, 8), 0.1f);
  }
  route_cpu(c.routing, c.top_k, r.logits, bias.defined() ? bias.view() : TensorView(), r.ids,
            r.weights);
  return r;
}

bool bit_identical(const TensorView& a, const TensorView& b) {
  if (a.nbytes() != b.nbytes()) return false;
  return a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

void MapWeightSource::copy_from(WeightSource& source, const MoeConfig& config, LoadMode mode) {
  auto copy = [](TensorView v) { return v.empty() ? Tensor() : clone(v); };
  router_weight_tensor = copy(source.router_weight());
  router_bias_tensor = copy(source.router_bias());
  correction_bias_tensor = copy(source.correction_bias());
  std::vector<int> experts;
  for (int e = 0; e < config.num_experts; ++e) experts.push_back(e);
  if (config.num_shared_experts > 0) experts.push_back(kSharedExpert);
  const std::vector<Proj> projs = mode == LoadMode::kVanilla
                                      ? std::vector<Proj>{Proj::kGate, Proj::kUp, Proj::kDown}
                                      : std::vector<Proj>{Proj::kGateUp, Proj::kDown};
  for (int e : experts) {
    for (Proj p : projs) {
      for (Part part :
           {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale, Part::kBias}) {
        TensorView v = source.expert_tensor(e, p, part);
        if (!v.empty()) set(e, p, part, clone(v));
      }
    }
  }
}

MoeConfig small_config(int experts, int top_k, int hidden, int inter) {
  MoeConfig c;
  c.name = "small";
  c.num_experts = experts;
  c.top_k = top_k;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.max_num_tokens = 64;
  return c;
}

}  // namespace moe::testing
