// Helpers of the MPI suite: the world, this rank's share of the tokens, and MPI checks.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "core/random.h"
#include "moe/configurable_moe.h"
#include "moe/tensor.h"

namespace moe::mpi_test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

/// Rows [begin, end) of `total` that EP rank `rank` of `ranks` holds: the first
/// total % ranks ranks hold one more.
struct Slice {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
inline Slice even_slice(int64_t total, int rank, int ranks) {
  const int64_t base = total / ranks, extra = total % ranks;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

/// The EP group of a case: `case_ep` ranks (0: the whole world); this rank's position in it.
struct EpGroup {
  int world = 1, rank = 0, ep = 1, ep_rank = 0;
};
/// The group, or nullopt with `why_not` set when the case does not apply to this world: ep
/// does not divide the world, or an explicit ep equal to the world size (the same case as 0).
inline std::optional<EpGroup> ep_group(int case_ep, std::string* why_not) {
  EpGroup g;
  g.world = world_size();
  g.rank = world_rank();
  g.ep = case_ep == 0 ? g.world : case_ep;
  if (g.world % g.ep != 0) {
    *why_not =
        "ep " + std::to_string(g.ep) + " does not divide the world " + std::to_string(g.world);
    return std::nullopt;
  }
  if (case_ep == g.world) {
    *why_not = "the same case as ep = the world size";
    return std::nullopt;
  }
  g.ep_rank = g.rank % g.ep;
  return g;
}

/// This EP rank's tokens of `total`: an even slice, or all on EP rank 0.
inline Slice token_slice(int64_t total, const EpGroup& g, bool all_on_rank0) {
  if (all_on_rank0) return g.ep_rank == 0 ? Slice{0, total} : Slice{0, 0};
  return even_slice(total, g.ep_rank, g.ep);
}

/// The single-process reference layer on all tokens: its output (poisoned before the
/// forward) and its routing.
struct SingleRank {
  Tensor out;      // act_dtype [T, H]
  Tensor ids;      // i32 [T, k]
  Tensor weights;  // f32 [T, k]
};
inline SingleRank run_single_rank(const MoeConfig& config, WeightSource& source, const Tensor& x,
                                  const Tensor& logits) {
  MoeOptions options;
  options.backend = "reference";
  auto layer = create_moe(config, Mapping{}, options).moe;
  layer->load_weights(source);
  const int64_t t = x.size(0);
  SingleRank r{Tensor::empty({t, config.hidden_size}, config.act_dtype),
               Tensor::empty({t, config.top_k}, DType::kI32),
               Tensor::empty({t, config.top_k}, DType::kF32)};
  fill_poison(r.out);
  layer->forward(x, logits, r.out);
  layer->route(x, logits, r.ids, r.weights);
  return r;
}

/// A forward of `layer` on x and logits into a fresh output poisoned first.
inline Tensor forward_poisoned(ConfigurableMoE& layer, const TensorView& x,
                               const TensorView& logits) {
  Tensor out = Tensor::empty({x.size(0), layer.config().hidden_size}, layer.config().act_dtype);
  fill_poison(out);
  layer.forward(x, logits, out);
  return out;
}

/// True on every rank when `ok` is true on every rank of the world.
inline bool all_ranks(bool ok) {
  int local = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&local, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

}  // namespace moe::mpi_test
