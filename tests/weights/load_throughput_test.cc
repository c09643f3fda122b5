// Load throughput on a multi-GB checkpoint (disabled by default: it writes GBs to disk).
//
//   moe_weights_tests --gtest_also_run_disabled_tests --gtest_filter='*LoadThroughput*'
//   MOE_THROUGHPUT_EXPERTS=80 (default; 80 x 44 MB = 3.5 GB)  MOE_THROUGHPUT_DIR=/tmp
//
// Writes one DeepSeek-V3-shaped FP8 layer (H = 7168, I = 2048, 128x128 weight_scale_inv, a
// shared expert, e_score_correction_bias) as a 2-shard checkpoint with an index, drops it
// from the page cache (fsync + POSIX_FADV_DONTNEED), then measures
//   1. the reader alone: every tensor served by CheckpointSource and copied once (cold cache),
//   2. the whole layer lifecycle: create_moe(reference) + load_weights (cold cache again),
// and prints GB/s. Every expert holds expert 0's random weights (generating 3.5 GB of
// distinct random fp8 takes far longer than reading it); a few tensors are compared.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "moe/moe.h"
#include "weights/checkpoint_source.h"
#include "weights/safetensors.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

// Writes back and evicts a file from the page cache so that the next read comes from disk.
void drop_from_cache(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << path;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(LoadThroughput, DISABLED_DeepSeekV3Fp8Layer) {
  MoeConfig c;
  c.name = "deepseek_v3 (throughput)";
  c.num_experts = env_int("MOE_THROUGHPUT_EXPERTS", 80);
  c.top_k = 8;
  c.hidden_size = 7168;
  c.intermediate_size = 2048;
  c.routing.method = RoutingMethod::kDeepSeekV3;
  c.routing.num_groups = 8;
  c.routing.topk_groups = 4;
  c.routing.routed_scaling_factor = 2.5f;
  c.routing.has_correction_bias = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 2048;
  c.quant = QuantMode::kFP8Block;
  c.max_num_tokens = 16;
  ASSERT_EQ(c.num_experts % 8, 0) << "MOE_THROUGHPUT_EXPERTS must be a multiple of 8";

  const char* base = std::getenv("MOE_THROUGHPUT_DIR");
  const fs::path dir =
      fs::path(base ? base : "/tmp") / ("moe_throughput_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path p;
    ~Cleanup() { fs::remove_all(p); }
  } cleanup{dir};

  // Expert 0's tensors (and the shared MLP's) stand for every expert.
  auto random = make_random_weights(c, 1);
  std::map<std::pair<int, int>, Tensor> parts;  // (expert 0 or shared, proj * 2 + scale)
  auto keep = [&](int e, Proj p, Part part) {
    const TensorView v = random->expert_tensor(e, p, part);
    Tensor t = Tensor::empty(v.shape(), v.dtype());
    std::memcpy(t.data(), v.data(), v.nbytes());
    parts[{e, static_cast<int>(p) * 2 + (part == Part::kScale)}] = std::move(t);
  };
  for (int e : {0, kSharedExpert}) {
    for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown}) {
      keep(e, p, Part::kWeight);
      keep(e, p, Part::kScale);
    }
  }
  const TensorView router = random->router_weight();
  const TensorView correction = random->correction_bias();

  const std::string prefix = "model.layers.3.mlp.";
  std::vector<std::vector<StWriteTensor>> shards(2);
  std::map<std::string, std::string> weight_map;
  const std::string names[2] = {"model-00001-of-00002.safetensors",
                                "model-00002-of-00002.safetensors"};
  auto add = [&](int shard, const std::string& name, const TensorView& t) {
    shards[shard].push_back(st_write_tensor(name, t));
    weight_map[name] = names[shard];
  };
  add(0, prefix + "gate.weight", router);
  add(0, prefix + "gate.e_score_correction_bias", correction);
  const char* proj_names[3] = {"gate_proj", "up_proj", "down_proj"};
  for (int e = -1; e < c.num_experts; ++e) {
    const int src = e < 0 ? kSharedExpert : 0;
    const int shard = e < c.num_experts / 2 ? 0 : 1;
    const std::string b =
        prefix + (e < 0 ? "shared_experts." : "experts." + std::to_string(e) + ".");
    for (int p = 0; p < 3; ++p) {
      add(shard, b + proj_names[p] + ".weight", parts.at({src, p * 2}));
      add(shard, b + proj_names[p] + ".weight_scale_inv", parts.at({src, p * 2 + 1}));
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  uint64_t total = 0;
  for (int s = 0; s < 2; ++s) {
    write_safetensors((dir / names[s]).string(), shards[s]);
    total += fs::file_size(dir / names[s]);
  }
  write_safetensors_index(dir.string(), weight_map, total);
  const double write_s = seconds_since(t0);
  for (const auto& n : names) drop_from_cache(dir / n);
  std::printf("checkpoint: %.2f GB in 2 shards, written in %.2f s (%.2f GB/s)\n", total / 1e9,
              write_s, total / 1e9 / write_s);

  // 1. The reader alone, cold: every tensor served and copied once into one buffer.
  {
    CheckpointSource src(SafetensorsCheckpoint::open(dir.string()), c, 3);
    Tensor sink = Tensor::empty({static_cast<int64_t>(parts.at({0, 0}).nbytes()) + 64}, DType::kU8);
    t0 = std::chrono::steady_clock::now();
    uint64_t copied = 0;
    for (int e = -1; e < c.num_experts; ++e) {
      for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown}) {
        for (Part part : {Part::kWeight, Part::kScale}) {
          const TensorView t = src.expert_tensor(e, p, part);
          std::memcpy(sink.data(), t.data(), t.nbytes());
          copied += t.nbytes();
        }
      }
    }
    const double s = seconds_since(t0);
    std::printf("reader, cold cache: %.2f GB served and copied in %.2f s: %.2f GB/s\n",
                copied / 1e9, s, copied / 1e9 / s);
    // Spot check: expert (E - 1)'s down_proj is expert 0's.
    const TensorView last = src.expert_tensor(c.num_experts - 1, Proj::kDown, Part::kWeight);
    EXPECT_EQ(std::memcmp(last.data(), parts.at({0, 4}).data(), last.nbytes()), 0);
  }
  for (const auto& n : names) drop_from_cache(dir / n);

  // 2. The whole lifecycle into the reference backend, cold.
  MoeOptions options;
  options.backend = "reference";
  auto moe = create_moe(c, {}, options).moe;
  auto src = CheckpointSource::open(dir.string(), c, 3);
  t0 = std::chrono::steady_clock::now();
  moe->load_weights(*src);
  const double s = seconds_since(t0);
  const LoadStats stats = src->stats();
  std::printf(
      "layer load_weights (reference backend, cold cache): %.2f GB in %.2f s: %.2f GB/s\n"
      "  (source: %s)\n",
      stats.bytes / 1e9, s, stats.bytes / 1e9 / s, stats.str().c_str());
  EXPECT_GT(stats.bytes, 3ull * c.num_experts * 7168 * 2048);

  // 3. A reload from the page cache (warm): the copies and the backend's checks alone.
  auto again = CheckpointSource::open(dir.string(), c, 3);
  t0 = std::chrono::steady_clock::now();
  moe->reload_weights(*again);
  const double warm_s = seconds_since(t0);
  std::printf(
      "layer reload_weights (reference backend, warm cache): %.2f GB in %.2f s: %.2f GB/s\n"
      "  (source: %s)\n",
      again->stats().bytes / 1e9, warm_s, again->stats().bytes / 1e9 / warm_s,
      again->stats().str().c_str());
}

}  // namespace
}  // namespace moe
