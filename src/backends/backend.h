// The backend contract (DESIGN.md "Roles and boundaries"): a backend answers
// can_implement() before anything is allocated, owns its weights through its quant method,
// and computes experts in run_moe(), its one compute entry point.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "core/device_info.h"
#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {

class ExpertTensorRegistry;

/// Whether something can run, and if not, why (naming what and why).
struct Capability {
  bool ok = false;
  std::string reason;
  static Capability yes(std::string why = "") { return {true, std::move(why)}; }
  static Capability no(std::string why) { return {false, std::move(why)}; }
  explicit operator bool() const { return ok; }
};

/// Where the cross-rank exchange happens.
enum class SchedulerKind { kExternalComm, kFusedComm };

/// The layer input as the backend consumes it: unquantized (scales empty) or quantized
/// (e.g. e4m3 [T, H] + f32 scales [T, H/128]). Zero rows allowed.
struct QuantizedInput {
  TensorView data;    // [T, H]
  TensorView scales;  // format-specific, or empty
};

struct RunMoeArgs {
  QuantizedInput x;         // [T, H], T = dispatched tokens
  TensorView topk_ids;      // i32 [T, k] global expert ids; ids this rank does not own are skipped
  TensorView topk_weights;  // f32 [T, k]; 1.0 everywhere when the weight was applied on input
  // [T, H]: sum over k of w * expert(x) (+ shared MLP). act_dtype, rounded once; or, under
  // expert parallelism, the strategy's wide partial-sum buffer -- f64 on the host, f32 on
  // GPUs -- written (and accumulated into) without rounding. Backends that do not support
  // expert parallelism may reject a wide out with moe::Error.
  TensorView out;
  bool with_routed = true;   // compute the routed experts
  bool with_shared = false;  // add the shared-expert MLP of x (weight 1)
  bool accumulate = false;   // out += result (rounded once more to out's dtype) instead of out =
};

class MoEBackend {
 public:
  virtual ~MoEBackend() = default;
  virtual std::string_view name() const = 0;
  virtual SchedulerKind scheduler_kind() const = 0;
  /// EPLB: whether the backend runs in slot space (its "experts" are global slots, loaded
  /// per slot through the WeightSource; static placements need nothing more).
  virtual bool supports_load_balancer() const = 0;
  /// Where the backend's tensors live.
  virtual Device device() const = 0;
  /// EPLB online mode: registers, through the quant method, every per-expert tensor of the
  /// local slots and the method's migration status (eplb/expert_tensors.h). The default
  /// registers nothing, which reads as "not supported".
  virtual void register_eplb_tensors(ExpertTensorRegistry& registry) {}

  // Weight lifecycle; layouts are the quant method's.
  virtual void create_weights() = 0;
  virtual void load_weights(WeightSource& source, LoadMode mode) = 0;
  virtual void post_load_weights() = 0;
  virtual void process_weights_after_loading() = 0;
  virtual void pre_reload_weights() = 0;

  /// Scratch memory run_moe needs for up to max_tokens dispatched tokens.
  virtual size_t workspace_bytes(int max_tokens) const = 0;
  /// Quantizes x [T, H] into the form run_moe consumes, into buffers the backend owns
  /// (sized for max_num_tokens). T == 0 allowed.
  virtual QuantizedInput quantize_input(const TensorView& x, void* stream) = 0;
  /// Whether run_moe also takes the act_dtype rows themselves (args.x without scales) and
  /// quantizes them bit for bit as quantize_input would, fused with its own pass over the
  /// input. The scheduler then skips quantize_input where no tokens move between ranks.
  virtual bool quantizes_in_run_moe() const { return false; }
  /// The one compute entry point. No host synchronisation, no allocation on GPU backends.
  virtual void run_moe(const RunMoeArgs& args, void* stream) = 0;
};

/// A backend the factory can build: its name, the static capability check (answered before
/// any allocation) and its constructor.
struct BackendEntry {
  std::string_view name;
  Capability (*can_implement)(const MoeConfig&, const Mapping&, const DeviceInfo&);
  std::unique_ptr<MoEBackend> (*create)(const MoeConfig&, const Mapping&, const DeviceInfo&);
};

}  // namespace moe
