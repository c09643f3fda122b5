// The per-expert tensors a backend's quant method registers for EPLB weight migration
// (DESIGN.md "EPLB": every per-expert tensor a quant method creates is registered, or the
// slot goes stale after a migration).
//
// A registered tensor is, for each local slot of the rank, one contiguous byte range that
// holds everything of that slot's expert in that tensor (a weight row block, its scales, its
// bias). Migration copies those bytes, unchanged, from a slot that holds the new expert (on
// this rank or another) into the slot that changes. Tensors shared by all the rank's experts
// (a static activation scale that is a maximum over them, say) cannot move that way; a quant
// method with such a tensor declares migration not supported, with the reason.
//
// Every rank of an EP group registers the same tensors in the same order with the same byte
// counts (the same backend and quant method build them): the migration matches the ranks'
// transfers by that order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/tensor.h"

namespace moe {

/// Whether a quant method's tensors can migrate.
enum class EplbSupport {
  kSupported,     // every per-expert tensor registered; migration tested bit-exact
  kNotVerified,   // registered, but no test proves a migrated slot equals a loaded one
  kNotSupported,  // some per-expert state cannot move (the reason says which)
};

std::string_view eplb_support_name(EplbSupport support);

/// One registered tensor: `slot_bytes` bytes at slots[l] for each local slot l. Registered
/// by add_rows, it is also one allocation: base (its start) and slots[l] = base + l * stride.
struct ExpertTensor {
  std::string name;
  int64_t slot_bytes = 0;
  std::vector<std::byte*> slots;  // [num_local_slots]
  std::byte* base = nullptr;      // add_rows: the tensor's first byte; add_slot: nullptr
  int64_t stride = 0;             // add_rows: bytes from one slot to the next
};

class ExpertTensorRegistry {
 public:
  /// A registry for `num_local_slots` slots whose tensors live on `device`.
  ExpertTensorRegistry(int num_local_slots, Device device);

  int num_local_slots() const { return num_local_slots_; }
  Device device() const { return device_; }
  EplbSupport support() const { return support_; }
  /// Why migration is not supported or not verified; "" when supported.
  const std::string& reason() const { return reason_; }
  const std::vector<ExpertTensor>& tensors() const { return tensors_; }
  /// Bytes of one slot over every tensor.
  int64_t slot_bytes() const;

  /// Declares the quant method's status (kSupported needs no reason).
  void set_support(EplbSupport support, std::string reason = "");

  /// `t` [G, ...] contiguous, dim 0 the groups of which the first num_local_slots are the
  /// routed slots in local slot order (later groups, e.g. the shared MLP, do not move).
  /// An undefined or empty `t` (a part the layer does not have) is skipped. Throws moe::Error on a
  /// duplicate name, a tensor on another device, or fewer groups than slots.
  void add_rows(std::string name, const Tensor& t);
  /// Slot `local_slot`'s own tensor `t` (contiguous) under `name`; every slot of a name must
  /// be added with the same byte count. An undefined or empty `t` is skipped (then for
  /// every slot).
  void add_slot(std::string name, int local_slot, const Tensor& t);

  /// Throws moe::Error naming the first tensor with a slot left unset.
  void validate() const;

  /// Testing: drops `name` as if its quant method had not registered it (a test proves a
  /// migration then leaves stale slots). Throws when there is no such tensor.
  void drop_for_testing(std::string_view name);

 private:
  ExpertTensor& find_or_add(const std::string& name, int64_t slot_bytes);

  int num_local_slots_;
  Device device_;
  EplbSupport support_ = EplbSupport::kNotSupported;
  std::string reason_ = "the quant method registered no tensors";
  std::vector<ExpertTensor> tensors_;
};

}  // namespace moe
