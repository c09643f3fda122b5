// make_pooled_weights (weight_pool.h).
#include "bench/harness/weight_pool.h"

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "moe/errors.h"

namespace moe::bench {
namespace {

class PooledWeightSource final : public WeightSource {
 public:
  PooledWeightSource(std::unique_ptr<WeightSource> base, int num_experts, int pool)
      : base_(std::move(base)), num_experts_(num_experts), pool_(pool) {
    MOE_CHECK(base_ != nullptr, "make_pooled_weights: no base source");
    MOE_CHECK(pool >= 1 && pool <= num_experts, "make_pooled_weights: pool ", pool,
              " must be in [1, ", num_experts, "]");
  }

  TensorView expert_tensor(int expert, Proj proj, Part part) override {
    MOE_CHECK(expert == kSharedExpert || (expert >= 0 && expert < num_experts_), describe(),
              ": expert ", expert, " out of range [0, ", num_experts_, ") (or kSharedExpert)");
    const int source_expert = expert == kSharedExpert ? expert : expert % pool_;
    std::lock_guard lock(mutex_);
    const auto key = std::make_tuple(source_expert, proj, part);
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      // NOTE: the base's view is valid only until its next call: copy it at once.
      const TensorView v = base_->expert_tensor(source_expert, proj, part);
      Tensor copy;
      if (!v.empty()) {
        MOE_CHECK(v.device().is_cpu() && v.is_contiguous(), describe(), ": ",
                  expert_tensor_name(source_expert, proj, part),
                  " is not a contiguous host tensor");
        copy = Tensor::empty(v.shape(), v.dtype());
        std::memcpy(copy.data(), v.data(), v.nbytes());
      }
      it = cache_.emplace(key, std::move(copy)).first;
    }
    return it->second.defined() ? it->second.view() : TensorView();
  }

  TensorView router_weight() override {
    std::lock_guard lock(mutex_);
    return base_->router_weight();
  }
  TensorView router_bias() override {
    std::lock_guard lock(mutex_);
    return base_->router_bias();
  }
  TensorView correction_bias() override {
    std::lock_guard lock(mutex_);
    return base_->correction_bias();
  }
  std::string describe() const override {
    return base_->describe() + ", " + std::to_string(pool_) + " distinct experts repeated over " +
           std::to_string(num_experts_);
  }

 private:
  std::unique_ptr<WeightSource> base_;
  int num_experts_, pool_;
  std::mutex mutex_;
  std::map<std::tuple<int, Proj, Part>, Tensor> cache_;
};

}  // namespace

std::unique_ptr<WeightSource> make_pooled_weights(std::unique_ptr<WeightSource> base,
                                                  int num_experts, int pool) {
  return std::make_unique<PooledWeightSource>(std::move(base), num_experts, pool);
}

}  // namespace moe::bench
