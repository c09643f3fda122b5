// A strategy this build or machine cannot run: it exists so that the factory can list it
// with the reason (e.g. "built without MPI") instead of leaving it out silently.
#pragma once

#include <string>
#include <string_view>

#include "comm/communication.h"
#include "moe/errors.h"

namespace moe {

class UnavailableCommunication final : public Communication {
 public:
  UnavailableCommunication(std::string_view name, std::string reason)
      : name_(name), reason_(std::move(reason)) {}
  std::string_view name() const override { return name_; }
  Capability is_platform_supported() const override { return Capability::no(reason_); }
  Capability is_workload_feasible(const MoeConfig&, int) const override {
    return Capability::no(reason_);
  }
  bool supports_post_quant_dispatch() const override { return false; }
  void prepare_dispatch(const RoutingView&, void*) override { fail(); }
  DispatchResult dispatch(const QuantizedInput&, const RoutingView&, const TensorView&,
                          void*) override {
    fail();
  }
  void combine(const TensorView&, const TensorView&, void*) override { fail(); }

 private:
  [[noreturn]] void fail() const { MOE_THROW("communication '", name_, "': ", reason_); }
  std::string name_;
  std::string reason_;
};

}  // namespace moe
