// safetensors: a validating, memory-mapped reader (single files and sharded checkpoints) and
// a writer.
//
// File format (facts/checkpoints.md): 8-byte little-endian header length N, then N bytes of
// JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data section; offsets are relative to the data section.
//
// Contract of the reader: nothing is used before all of it is validated. A file is rejected
// with one moe::Error naming the file (and the tensor, where one is concerned) and what is
// wrong when: it is shorter than 8 bytes; the header length runs past the end of the file
// (or exceeds kMaxHeaderBytes); the header is not well-formed JSON or not an object; a key
// appears twice; an entry lacks dtype/shape/data_offsets or has the wrong JSON type; a dtype
// name is unknown; shape x dtype size != end - begin; a range runs past the data section;
// two ranges overlap; "__metadata__" is not an object of strings. Holes between ranges are
// allowed (the format's reference implementation forbids them; every known writer pads
// only the header).
//
// Sharded checkpoints: DIR/model.safetensors.index.json {"weight_map": {name: file}} names
// the shard of every tensor; shards are opened (mapped and validated) on first use. Without
// an index, every *.safetensors file in DIR is opened and a name found in two files is an
// error.
//
// NOTE: tensor data is returned as pointers into a read-only mapping (PROT_READ); writing
// through them faults. Offsets need not be aligned: callers that read typed elements must
// check alignment (see SafetensorsFile::data).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moe/dtype.h"
#include "moe/tensor.h"

namespace moe {

/// Largest header the reader accepts (the format's reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

/// A safetensors element type: its name in the file, its size and the moe::DType whose
/// bytes have the same meaning, where one exists.
struct StDType {
  std::string_view name;  ///< "F32", "BF16", "F8_E4M3", ...
  int bits = 0;
  std::optional<DType> dtype;
};

/// The element type named `name` in a header, or nullptr when the name is unknown.
const StDType* find_st_dtype(std::string_view name);
/// All names the reader knows, comma-separated, for messages.
std::string st_dtype_names();

/// One tensor entry of a validated header.
struct StTensorInfo {
  std::string name;
  const StDType* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte range [begin, end) inside the data section
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
  /// "BF16[128, 2048]"
  std::string str() const;
};

/// A validated header.
struct StHeader {
  std::vector<StTensorInfo> tensors;  ///< in the order of their data offsets
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  ///< 8 + header length: where the data section starts
  uint64_t data_size = 0;    ///< bytes of the data section

  /// The entry named `name`, or nullptr.
  const StTensorInfo* find(std::string_view name) const;

 private:
  friend StHeader parse_safetensors_header(std::span<const uint8_t>, std::string_view);
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors
};

/// Parses and validates the header of the safetensors file whose bytes are `file` (the whole
/// file: the ranges are checked against its size). `path` names the file in messages.
/// Throws moe::Error naming the file, the tensor and what is wrong.
StHeader parse_safetensors_header(std::span<const uint8_t> file, std::string_view path);

/// One memory-mapped, validated safetensors file.
class SafetensorsFile {
 public:
  /// Maps and validates `path`; throws moe::Error naming the file on any problem.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  const StHeader& header() const { return header_; }
  const StTensorInfo* find(std::string_view name) const { return header_.find(name); }
  /// First byte of the tensor's data inside the read-only mapping.
  const uint8_t* data(const StTensorInfo& info) const {
    return base_ + header_.data_offset + info.begin;
  }
  /// Asks the kernel to start reading bytes [ptr, ptr + n) of the mapping and the
  /// kReadAheadBytes after them (MADV_WILLNEED), skipping what an earlier call asked for, so
  /// that a reader walking the file in order finds the next tensors on their way.
  void prefetch(const uint8_t* ptr, uint64_t n) const;
  static constexpr uint64_t kReadAheadBytes = 256ull << 20;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  StHeader header_;
  mutable uint64_t prefetched_begin_ = 0;  // file bytes [begin, end) already asked for
  mutable uint64_t prefetched_end_ = 0;
};

/// A checkpoint: one .safetensors file, a directory with model.safetensors.index.json, or a
/// directory of .safetensors files.
class SafetensorsCheckpoint {
 public:
  /// Opens `path` (a file or a directory); throws moe::Error naming what is wrong.
  static std::shared_ptr<SafetensorsCheckpoint> open(const std::string& path);

  /// A tensor found in the checkpoint: its file and its validated entry.
  struct Entry {
    const SafetensorsFile* file = nullptr;
    const StTensorInfo* info = nullptr;
    const uint8_t* data() const { return file->data(*info); }
  };

  const std::string& path() const { return path_; }
  /// Every tensor name (sorted).
  std::vector<std::string> names() const;
  /// Names starting with `prefix` (sorted).
  std::vector<std::string> names_with_prefix(std::string_view prefix) const;
  bool contains(std::string_view name) const { return shard_of_.count(std::string(name)) > 0; }
  /// The tensor `name`, or nullopt when the checkpoint has none. Opens its shard on first
  /// use; throws when the index names a shard that does not hold the tensor.
  std::optional<Entry> find(std::string_view name);
  /// The tensor `name`; throws moe::Error naming it and the checkpoint when absent.
  Entry get(std::string_view name);
  /// Files of the checkpoint (relative to the directory), sorted.
  std::vector<std::string> files() const;
  /// "sharded checkpoint DIR (N files, model.safetensors.index.json)" and the like.
  std::string describe() const;
  bool sharded() const { return !index_path_.empty(); }

 private:
  SafetensorsCheckpoint() = default;
  const SafetensorsFile& shard(const std::string& file);

  std::string path_;                             // the directory (or the single file)
  std::string dir_;                              // the directory holding the files
  std::string index_path_;                       // empty without an index
  std::map<std::string, std::string> shard_of_;  // tensor name -> file name (relative)
  std::map<std::string, std::shared_ptr<SafetensorsFile>> files_;  // opened shards
};

// ---- Writer -------------------------------------------------------------------------------

/// One tensor to write: its name, safetensors dtype name, shape and bytes (numel x dtype
/// size; the pointer may be shared by several tensors).
struct StWriteTensor {
  std::string name;
  std::string dtype;  ///< "BF16", "F8_E4M3", "U8", ...
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

/// A write entry for a contiguous host tensor: f32 -> F32, f16 -> F16, bf16 -> BF16,
/// e4m3 / e4m3scale -> F8_E4M3, ue8m0 / u8 -> U8, e2m1 -> U8 with the last dimension halved
/// (the ModelOpt packing), i32 -> I32, i64 -> I64.
StWriteTensor st_write_tensor(std::string name, const TensorView& t);

/// Writes a safetensors file: the header (padded with spaces to a multiple of 8 bytes) and the
/// tensors' bytes in the given order, without holes. Throws moe::Error naming the file or the
/// tensor (unknown dtype, duplicate name, I/O error).
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Writes DIR/model.safetensors.index.json with "weight_map" {name: file} and
/// "metadata": {"total_size": total_bytes}.
void write_safetensors_index(const std::string& dir,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_bytes);

/// Index file name of sharded checkpoints.
inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";

}  // namespace moe
