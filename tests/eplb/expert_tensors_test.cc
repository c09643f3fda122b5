// ExpertTensorRegistry (eplb/expert_tensors.h): row-block tensors register one pointer per
// local slot at row strides (later groups stay out), per-slot tensors register their own
// bytes, and the errors on duplicates, short or misplaced tensors, mismatched byte counts and
// missing slots; the support status and its names.
//
// Not covered: a non-contiguous tensor (an owning Tensor is always contiguous, and add_rows /
// add_slot take one).
#include "eplb/expert_tensors.h"
#include "common/test_util.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "moe/errors.h"
#include "moe/tensor.h"

namespace moe {
namespace {

using testing::expect_error;

// A host tensor filled with random bytes.
Tensor random_tensor(std::initializer_list<int64_t> shape, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  std::mt19937 rng(seed);
  auto* bytes = static_cast<unsigned char*>(t.data());
  for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<unsigned char>(rng());
  return t;
}

TEST(ExpertTensorRegistry, DefaultsToNotSupportedWithAReason) {
  const ExpertTensorRegistry registry(/*num_local_slots=*/4, Device::cpu());
  EXPECT_EQ(registry.num_local_slots(), 4);
  EXPECT_EQ(registry.device(), Device::cpu());
  EXPECT_EQ(registry.support(), EplbSupport::kNotSupported);
  EXPECT_FALSE(registry.reason().empty());
  EXPECT_TRUE(registry.tensors().empty());
  EXPECT_EQ(registry.slot_bytes(), 0);
  EXPECT_NO_THROW(registry.validate());
}

TEST(ExpertTensorRegistry, NeedsALocalSlot) {
  expect_error([] { ExpertTensorRegistry(0, Device::cpu()); }, "0 local slots");
  expect_error([] { ExpertTensorRegistry(-2, Device::cpu()); }, "-2 local slots");
}

TEST(ExpertTensorRegistry, SupportNames) {
  EXPECT_EQ(eplb_support_name(EplbSupport::kSupported), "supported");
  EXPECT_EQ(eplb_support_name(EplbSupport::kNotVerified), "not verified");
  EXPECT_EQ(eplb_support_name(EplbSupport::kNotSupported), "not supported");
}

TEST(ExpertTensorRegistry, SetSupport) {
  ExpertTensorRegistry registry(2, Device::cpu());
  expect_error([&] { registry.set_support(EplbSupport::kNotSupported, ""); }, "must say why");
  expect_error([&] { registry.set_support(EplbSupport::kNotVerified); }, "must say why");
  // A failed call changes nothing.
  EXPECT_EQ(registry.support(), EplbSupport::kNotSupported);
  EXPECT_FALSE(registry.reason().empty());

  registry.set_support(EplbSupport::kNotVerified, "no bit-exact test yet");
  EXPECT_EQ(registry.support(), EplbSupport::kNotVerified);
  EXPECT_EQ(registry.reason(), "no bit-exact test yet");
  registry.set_support(EplbSupport::kSupported);
  EXPECT_EQ(registry.support(), EplbSupport::kSupported);
  EXPECT_EQ(registry.reason(), "");
  registry.set_support(EplbSupport::kNotSupported, "a shared activation scale");
  EXPECT_EQ(registry.support(), EplbSupport::kNotSupported);
  EXPECT_EQ(registry.reason(), "a shared activation scale");
}

TEST(ExpertTensorRegistry, AddRowsRegistersEachSlotAtRowStrides) {
  constexpr int kSlots = 4;
  ExpertTensorRegistry registry(kSlots, Device::cpu());
  // [G, ...] with G > slots: the last groups (a shared MLP, say) are not registered.
  const Tensor w = random_tensor({6, 3, 8}, DType::kBF16, 1);       // 48 bytes a group
  const Tensor scale = random_tensor({5, 3}, DType::kF32, 2);       // 12 bytes a group
  const Tensor packed = random_tensor({4, 2, 6}, DType::kE2M1, 3);  // 6 bytes a group
  registry.add_rows("w13", w);
  registry.add_rows("w13_scale", scale);
  registry.add_rows("w2_fp4", packed);
  registry.add_rows("bias", Tensor());  // the layer has none: skipped
  registry.validate();

  ASSERT_EQ(registry.tensors().size(), 3u);
  const ExpertTensor& tw = registry.tensors()[0];
  const ExpertTensor& ts = registry.tensors()[1];
  const ExpertTensor& tp = registry.tensors()[2];
  EXPECT_EQ(tw.name, "w13");
  EXPECT_EQ(ts.name, "w13_scale");
  EXPECT_EQ(tp.name, "w2_fp4");
  EXPECT_EQ(tw.slot_bytes, 48);
  EXPECT_EQ(ts.slot_bytes, 12);
  EXPECT_EQ(tp.slot_bytes, 6);
  EXPECT_EQ(registry.slot_bytes(), 48 + 12 + 6);
  for (const ExpertTensor* t : {&tw, &ts, &tp}) ASSERT_EQ(t->slots.size(), size_t{kSlots});
  for (int l = 0; l < kSlots; ++l) {
    EXPECT_EQ(tw.slots[l], static_cast<std::byte*>(w.data()) + 48 * l) << "slot " << l;
    EXPECT_EQ(ts.slots[l], static_cast<std::byte*>(scale.data()) + 12 * l) << "slot " << l;
    EXPECT_EQ(tp.slots[l], static_cast<std::byte*>(packed.data()) + 6 * l) << "slot " << l;
  }

  // Copying slot 0's bytes into slot 2 through the registry rewrites exactly row 2 of each
  // tensor; the rows past the slots (and the other slots) keep their bytes.
  const Tensor w_before = testing::clone(w), scale_before = testing::clone(scale);
  for (const ExpertTensor& t : registry.tensors()) {
    std::memcpy(t.slots[2], t.slots[0], static_cast<size_t>(t.slot_bytes));
  }
  const auto* wb = static_cast<const std::byte*>(w_before.data());
  const auto* wa = static_cast<const std::byte*>(w.data());
  for (int g = 0; g < 6; ++g) {
    const std::byte* want = wb + 48 * (g == 2 ? 0 : g);
    EXPECT_EQ(std::memcmp(wa + 48 * g, want, 48), 0) << "w13 group " << g;
  }
  const auto* sb = static_cast<const std::byte*>(scale_before.data());
  const auto* sa = static_cast<const std::byte*>(scale.data());
  for (int g = 0; g < 5; ++g) {
    const std::byte* want = sb + 12 * (g == 2 ? 0 : g);
    EXPECT_EQ(std::memcmp(sa + 12 * g, want, 12), 0) << "w13_scale group " << g;
  }
}

TEST(ExpertTensorRegistry, AddRowsWithExactlyOneGroupPerSlot) {
  ExpertTensorRegistry registry(1, Device::cpu());
  const Tensor t = random_tensor({1}, DType::kI32, 4);  // 1-D: one 4-byte group
  registry.add_rows("flag", t);
  ASSERT_EQ(registry.tensors().size(), 1u);
  EXPECT_EQ(registry.tensors()[0].slot_bytes, 4);
  EXPECT_EQ(registry.tensors()[0].slots[0], static_cast<std::byte*>(t.data()));
}

TEST(ExpertTensorRegistry, AddRowsErrors) {
  ExpertTensorRegistry registry(4, Device::cpu());
  const Tensor short_tensor = random_tensor({3, 8}, DType::kF32, 5);
  expect_error([&] { registry.add_rows("w2", short_tensor); }, {"'w2'", "3 groups", "4 local"});
  EXPECT_TRUE(registry.tensors().empty()) << "a refused tensor was registered";

  const Tensor w = random_tensor({4, 8}, DType::kF32, 6);
  registry.add_rows("w13", w);
  expect_error([&] { registry.add_rows("w13", w); }, {"'w13'", "registered twice"});
  const Tensor other = random_tensor({4, 2}, DType::kF32, 7);
  expect_error([&] { registry.add_rows("w13", other); }, {"'w13'", "registered twice"});
  EXPECT_EQ(registry.tensors().size(), 1u);

  // The layer lives on another device than the tensor.
  ExpertTensorRegistry on_gpu(4, Device::cuda(0));
  expect_error([&] { on_gpu.add_rows("w13", w); }, {"'w13'", "cpu", "cuda:0"});
  EXPECT_TRUE(on_gpu.tensors().empty());
}

TEST(ExpertTensorRegistry, AddSlotRegistersEachSlotsOwnTensor) {
  constexpr int kSlots = 3;
  ExpertTensorRegistry registry(kSlots, Device::cpu());
  std::vector<Tensor> scales;
  for (int l = 0; l < kSlots; ++l) scales.push_back(random_tensor({2, 5}, DType::kF32, 10 + l));
  // Out of order, with an undefined part skipped.
  for (int l : {2, 0, 1}) {
    registry.add_slot("w2_scale", l, scales[l]);
    registry.add_slot("w2_bias", l, Tensor());
  }
  registry.validate();
  ASSERT_EQ(registry.tensors().size(), 1u);
  const ExpertTensor& t = registry.tensors()[0];
  EXPECT_EQ(t.name, "w2_scale");
  EXPECT_EQ(t.slot_bytes, 40);
  EXPECT_EQ(registry.slot_bytes(), 40);
  for (int l = 0; l < kSlots; ++l) {
    EXPECT_EQ(t.slots[l], static_cast<std::byte*>(scales[l].data())) << "slot " << l;
  }
}

TEST(ExpertTensorRegistry, AddSlotErrors) {
  ExpertTensorRegistry registry(2, Device::cpu());
  const Tensor a = random_tensor({4}, DType::kF32, 20);
  const Tensor b = random_tensor({5}, DType::kF32, 21);
  const Tensor same_bytes = random_tensor({2}, DType::kI64, 22);  // 16 bytes like `a`
  registry.add_slot("s", 0, a);
  expect_error([&] { registry.add_slot("s", 1, b); }, {"'s'", "16 bytes", "20"});
  expect_error([&] { registry.add_slot("s", 0, same_bytes); }, {"'s'", "slot 0", "twice"});
  expect_error([&] { registry.add_slot("s", 2, a); }, {"'s'", "local slot 2", "[0, 2)"});
  expect_error([&] { registry.add_slot("s", -1, a); }, {"'s'", "local slot -1"});
  ExpertTensorRegistry on_gpu(2, Device::cuda(0));
  expect_error([&] { on_gpu.add_slot("s", 0, a); }, {"'s'", "cpu", "cuda:0"});

  // A name registered by rows cannot be added again by slot, nor the other way round.
  const Tensor rows = random_tensor({2, 4}, DType::kF32, 23);
  registry.add_rows("r", rows);
  expect_error([&] { registry.add_slot("r", 0, a); }, {"'r'", "twice"});
  expect_error([&] { registry.add_slot("r", 1, b); }, {"'r'", "16 bytes", "20"});
  expect_error([&] { registry.add_rows("s", rows); }, {"'s'", "registered twice"});

  registry.add_slot("s", 1, same_bytes);  // same byte count, another dtype: fine
  EXPECT_NO_THROW(registry.validate());
}

TEST(ExpertTensorRegistry, ValidateNamesTheMissingSlot) {
  ExpertTensorRegistry registry(3, Device::cpu());
  const Tensor rows = random_tensor({3, 4}, DType::kBF16, 30);
  registry.add_rows("w13", rows);
  std::vector<Tensor> parts;
  for (int l = 0; l < 3; ++l) parts.push_back(random_tensor({6}, DType::kU8, 31 + l));
  registry.add_slot("w2_scale", 0, parts[0]);
  registry.add_slot("w2_scale", 2, parts[2]);
  expect_error([&] { registry.validate(); }, {"'w2_scale'", "local slot 1"});
  registry.add_slot("w2_scale", 1, parts[1]);
  EXPECT_NO_THROW(registry.validate());
  EXPECT_EQ(registry.slot_bytes(), 8 + 6);
}

TEST(ExpertTensorRegistry, DropForTesting) {
  ExpertTensorRegistry registry(2, Device::cpu());
  const Tensor a = random_tensor({2, 4}, DType::kF32, 40);
  const Tensor b = random_tensor({2, 2}, DType::kF32, 41);
  const Tensor c = random_tensor({3, 1}, DType::kF32, 42);
  registry.add_rows("a", a);
  registry.add_rows("b", b);
  registry.add_rows("c", c);
  ASSERT_EQ(registry.slot_bytes(), 16 + 8 + 4);
  registry.drop_for_testing("b");
  ASSERT_EQ(registry.tensors().size(), 2u);
  EXPECT_EQ(registry.tensors()[0].name, "a");
  EXPECT_EQ(registry.tensors()[1].name, "c");
  EXPECT_EQ(registry.slot_bytes(), 16 + 4);
  expect_error([&] { registry.drop_for_testing("b"); }, {"'b'", "no tensor"});
  expect_error([&] { registry.drop_for_testing("zzz"); }, {"'zzz'", "no tensor"});
  // A dropped name can be registered again.
  registry.add_rows("b", b);
  EXPECT_EQ(registry.tensors().size(), 3u);
  EXPECT_NO_THROW(registry.validate());
}

}  // namespace
}  // namespace moe
