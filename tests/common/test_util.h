// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

#include "moe/config.h"
#include "moe/errors.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe::testing {

/// Runs fn, expecting a moe::Error whose message contains every one of `parts` (any range
/// of strings or string views).
template <class Fn, class Parts>
void expect_error_containing(Fn&& fn, const Parts& parts) {
  try {
    fn();
    ADD_FAILURE() << "no moe::Error thrown; expected one containing '" << *std::begin(parts) << "'";
  } catch (const Error& e) {
    for (const auto& part : parts) {
      EXPECT_NE(e.message().find(part), std::string::npos)
          << "message '" << e.message() << "' lacks '" << part << "'";
    }
  }
}
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string_view> parts) {
  expect_error_containing(fn, parts);
}
template <class Fn>
void expect_error(Fn&& fn, std::string_view needle) {
  expect_error_containing(fn, std::initializer_list<std::string_view>{needle});
}

/// A WeightSource over tensors the test puts in: for fakes, wrong shapes and corruptions.
class MapWeightSource : public WeightSource {
 public:
  void set(int expert, Proj proj, Part part, Tensor t) {
    tensors_[{expert, proj, part}] = std::move(t);
  }
  void erase(int expert, Proj proj, Part part) { tensors_.erase({expert, proj, part}); }
  Tensor* find(int expert, Proj proj, Part part);
  Tensor router_weight_tensor, router_bias_tensor, correction_bias_tensor;

  TensorView expert_tensor(int expert, Proj proj, Part part) override;
  TensorView router_weight() override { return view_or_empty(router_weight_tensor); }
  TensorView router_bias() override { return view_or_empty(router_bias_tensor); }
  TensorView correction_bias() override { return view_or_empty(correction_bias_tensor); }
  std::string describe() const override { return "test tensors"; }

  /// Copies every tensor `source` has for `config` (router, experts, shared MLP).
  void copy_from(WeightSource& source, const MoeConfig& config, LoadMode mode = LoadMode::kVanilla);

 private:
  static TensorView view_or_empty(const Tensor& t) { return t.defined() ? t.view() : TensorView(); }
  std::map<std::tuple<int, Proj, Part>, Tensor> tensors_;
};

/// A deep copy of a host tensor.
Tensor clone(const TensorView& t);

/// Random activations x [t, H] in the layer's act dtype (N(0, 1)).
Tensor random_x(const MoeConfig& c, int64_t t, uint64_t seed);

/// Host routing of t tokens: N(0, 1) logits (+50 on `hot_expert` when >= 0, sending every
/// token there), a N(0, 0.1^2) correction bias where the method has one, then route_cpu.
struct Routed {
  Tensor logits, ids, weights;  // f32 [t, E], i32 [t, k], f32 [t, k]
};
Routed random_routing(const MoeConfig& c, int64_t t, uint64_t seed, int hot_expert = -1);

/// Same byte size and the same bytes (host tensors; empty tensors are identical).
bool bit_identical(const TensorView& a, const TensorView& b);

/// A small layer config for fast tests: E experts, top-k, H, I, the given method.
MoeConfig small_config(int experts = 8, int top_k = 2, int hidden = 256, int inter = 128);

/// The gtest name of a (preset name, quant mode) parameter, e.g. "qwen3_30b_a3b_fp8_block":
/// INSTANTIATE_TEST_SUITE_P(..., ::testing::Combine(names, quants), PresetQuantName()).
struct PresetQuantName {
  template <class Info>
  std::string operator()(const Info& info) const {
    std::string n =
        std::get<0>(info.param) + "_" + std::string(quant_mode_name(std::get<1>(info.param)));
    for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
    return n;
  }
};

}  // namespace moe::testing
