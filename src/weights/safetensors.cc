// safetensors reader and writer (contract in safetensors.h).
#include "weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moe/errors.h"

namespace moe {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// The element types of the format, written once (dtype names of the safetensors spec).
constexpr std::array<StDType, 19> kStDTypes = {{
    {"F64", 64, std::nullopt},     {"F32", 32, DType::kF32},     {"F16", 16, DType::kF16},
    {"BF16", 16, DType::kBF16},    {"F8_E4M3", 8, DType::kE4M3}, {"F8_E5M2", 8, std::nullopt},
    {"F8_E8M0", 8, DType::kUE8M0}, {"F4", 4, DType::kE2M1},      {"I64", 64, DType::kI64},
    {"I32", 32, DType::kI32},      {"I16", 16, std::nullopt},    {"I8", 8, std::nullopt},
    {"U64", 64, std::nullopt},     {"U32", 32, std::nullopt},    {"U16", 16, std::nullopt},
    {"U8", 8, DType::kU8},         {"BOOL", 8, std::nullopt},    {"F6_E2M3", 6, std::nullopt},
    {"F6_E3M2", 6, std::nullopt},
}};

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Short excerpt of a JSON value for messages. NOTE: never dumps a nested container whole:
// dump() recurses, and a hostile header may nest a million levels deep.
std::string excerpt(const Json& v) {
  if (v.is_string()) {
    const std::string& str = v.get_ref<const std::string&>();
    return str.size() > 60 ? Json(str.substr(0, 57)).dump() + "..." : v.dump();
  }
  if (v.is_object()) return "an object of " + std::to_string(v.size()) + " entries";
  if (!v.is_array()) return v.dump();
  std::string s = "[";
  size_t i = 0;
  for (const Json& e : v) {
    if (i == 8) {
      s += ", ...";
      break;
    }
    s += (i++ ? ", " : "") + (e.is_primitive() ? excerpt(e) : std::string(e.type_name()));
  }
  return s + "]";
}

// One header entry {dtype, shape, data_offsets} -> StTensorInfo, validated on its own.
StTensorInfo parse_entry(const std::string& name, const Json& v, std::string_view path,
                         uint64_t data_size) {
  auto fail = [&](const std::string& what) -> void {
    const std::string shown = name.size() > 200 ? name.substr(0, 197) + "..." : name;
    MOE_THROW(path, ": tensor '", shown, "': ", what);
  };
  if (!v.is_object()) fail("entry must be a JSON object, got " + excerpt(v));
  StTensorInfo info;
  info.name = name;

  auto it = v.find("dtype");
  if (it == v.end()) fail("missing \"dtype\"");
  if (!it->is_string()) fail("\"dtype\" must be a string, got " + excerpt(*it));
  const std::string& dtype = it->get_ref<const std::string&>();
  info.dtype = find_st_dtype(dtype);
  if (info.dtype == nullptr) {
    fail("unknown dtype " + excerpt(*it) + " (known: " + st_dtype_names() + ")");
  }

  it = v.find("shape");
  if (it == v.end()) fail("missing \"shape\"");
  if (!it->is_array()) fail("\"shape\" must be an array, got " + excerpt(*it));
  // numel and its byte count, with overflow checks: a valid shape fits the file.
  uint64_t numel = 1;
  for (const Json& d : *it) {
    if (!d.is_number_unsigned()) {
      fail("\"shape\" entries must be non-negative integers, got " + excerpt(*it));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail("shape dimension " + std::to_string(dim) + " is too large");
    }
    info.shape.push_back(static_cast<int64_t>(dim));
    if (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() / 64) / dim) {
      fail("shape " + excerpt(*it) + " has too many elements");
    }
    numel *= dim;
  }

  it = v.find("data_offsets");
  if (it == v.end()) fail("missing \"data_offsets\"");
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
      !(*it)[1].is_number_unsigned()) {
    fail("\"data_offsets\" must be [begin, end] of non-negative integers, got " + excerpt(*it));
  }
  info.begin = (*it)[0].get<uint64_t>();
  info.end = (*it)[1].get<uint64_t>();
  if (info.begin > info.end) {
    fail("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
         "] end before they begin");
  }

  const uint64_t bits = numel * static_cast<uint64_t>(info.dtype->bits);
  if (bits % 8 != 0) {
    fail("shape " + shape_str(info.shape) + " of " + std::string(info.dtype->name) +
         " is not a whole number of bytes");
  }
  if (bits / 8 != info.end - info.begin) {
    fail("shape " + shape_str(info.shape) + " x " + std::string(info.dtype->name) + " (" +
         std::to_string(info.dtype->bits) + " bits) = " + std::to_string(bits / 8) +
         " bytes, but data_offsets [" + std::to_string(info.begin) + ", " +
         std::to_string(info.end) + "] span " + std::to_string(info.end - info.begin) + " bytes");
  }
  if (info.end > data_size) {
    fail("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
         "] run past the end of the data section (" + std::to_string(data_size) +
         " bytes; the file is truncated or the offsets are wrong)");
  }
  return info;
}

void parse_metadata(const Json& v, std::string_view path, std::map<std::string, std::string>& out) {
  MOE_CHECK(v.is_object(), path, ": \"__metadata__\" must be an object of strings, got ",
            excerpt(v));
  for (const auto& [key, value] : v.items()) {
    MOE_CHECK(value.is_string(), path, ": \"__metadata__\" entry '", key,
              "' must be a string, got ", excerpt(value));
    out[key] = value.get<std::string>();
  }
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

const StDType* find_st_dtype(std::string_view name) {
  for (const StDType& d : kStDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string st_dtype_names() {
  std::string s;
  for (const StDType& d : kStDTypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string StTensorInfo::str() const {
  return std::string(dtype ? dtype->name : "?") + shape_str(shape);
}

const StTensorInfo* StHeader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors[it->second];
}

StHeader parse_safetensors_header(std::span<const uint8_t> file, std::string_view path) {
  MOE_CHECK(file.size() >= 8, path, ": the file is ", file.size(),
            " bytes, shorter than the 8-byte header length (truncated or not safetensors)");
  const uint64_t header_len = read_le64(file.data());
  const uint64_t available = file.size() - 8;
  MOE_CHECK(header_len <= available, path, ": header length ", header_len,
            " runs past the end of the file (", file.size(),
            " bytes: the file is truncated or not safetensors)");
  MOE_CHECK(header_len <= kMaxSafetensorsHeaderBytes, path, ": header length ", header_len,
            " exceeds the limit of ", kMaxSafetensorsHeaderBytes, " bytes");

  StHeader header;
  header.data_offset = 8 + header_len;
  header.data_size = available - header_len;

  const char* text = reinterpret_cast<const char*>(file.data() + 8);
  std::set<std::string> keys;
  std::string duplicate;
  // Rejects a name that appears twice at the top level (JSON parsers keep only one).
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(text, text + header_len, on_event);
  } catch (const Json::exception& e) {
    MOE_THROW(path, ": the header (", header_len, " bytes) is not valid JSON: ", e.what());
  }
  MOE_CHECK(root.is_object(), path, ": the header must be a JSON object, got ", root.type_name());
  MOE_CHECK(duplicate.empty(), path, ": tensor '", duplicate, "' appears twice in the header");

  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      parse_metadata(value, path, header.metadata);
      continue;
    }
    MOE_CHECK(!name.empty(), path, ": a tensor has an empty name");
    header.tensors.push_back(parse_entry(name, value, path, header.data_size));
  }

  // Ranges may not overlap: sort by offset, compare neighbours (empty tensors own no bytes).
  std::stable_sort(header.tensors.begin(), header.tensors.end(),
                   [](const StTensorInfo& a, const StTensorInfo& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  const StTensorInfo* prev = nullptr;
  for (const StTensorInfo& t : header.tensors) {
    if (t.nbytes() == 0) continue;
    if (prev != nullptr && t.begin < prev->end) {
      MOE_THROW(path, ": tensor '", t.name, "' bytes [", t.begin, ", ", t.end, ") overlap tensor '",
                prev->name, "' bytes [", prev->begin, ", ", prev->end, ")");
    }
    prev = &t;
  }
  for (size_t i = 0; i < header.tensors.size(); ++i) header.index_[header.tensors[i].name] = i;
  return header;
}

// ---- SafetensorsFile ----------------------------------------------------------------------

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MOE_CHECK(fd >= 0, path, ": cannot open: ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    MOE_THROW(path, ": not a regular file");
  }
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      MOE_THROW(path, ": mmap of ", f->size_, " bytes failed: ", why);
    }
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file
  f->header_ = parse_safetensors_header({f->base_, f->size_}, path);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void SafetensorsFile::prefetch(const uint8_t* ptr, uint64_t n) const {
  if (n == 0 || base_ == nullptr) return;
  uint64_t begin = static_cast<uint64_t>(ptr - base_);
  const uint64_t end = std::min(size_, begin + n + kReadAheadBytes);
  if (begin >= prefetched_begin_ && begin < prefetched_end_) {
    if (end <= prefetched_end_) return;  // asked for already
    begin = prefetched_end_;
  } else {
    prefetched_begin_ = begin;
  }
  prefetched_end_ = end;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t aligned = begin & ~(page - 1);
  ::madvise(const_cast<uint8_t*>(base_ + aligned), end - aligned, MADV_WILLNEED);  // advice only
}

// ---- SafetensorsCheckpoint ----------------------------------------------------------------

std::shared_ptr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
  std::shared_ptr<SafetensorsCheckpoint> c(new SafetensorsCheckpoint());
  c->path_ = path;
  std::error_code ec;
  MOE_CHECK(fs::exists(path, ec), "checkpoint '", path, "' does not exist");

  if (!fs::is_directory(path, ec)) {  // one file
    auto file = SafetensorsFile::open(path);
    const std::string name = fs::path(path).filename().string();
    c->dir_ = fs::path(path).parent_path().string();
    for (const StTensorInfo& t : file->header().tensors) c->shard_of_[t.name] = name;
    c->files_[name] = std::move(file);
    return c;
  }
  c->dir_ = path;

  const fs::path index = fs::path(path) / std::string(kSafetensorsIndexName);
  if (fs::exists(index, ec)) {
    c->index_path_ = index.string();
    std::ifstream in(index, std::ios::binary);
    MOE_CHECK(in.good(), c->index_path_, ": cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    Json root;
    try {
      root = Json::parse(text.str());
    } catch (const Json::exception& e) {
      MOE_THROW(c->index_path_, ": not valid JSON: ", e.what());
    }
    MOE_CHECK(root.is_object(), c->index_path_, ": must be a JSON object");
    auto wm = root.find("weight_map");
    MOE_CHECK(wm != root.end() && wm->is_object(), c->index_path_,
              ": missing \"weight_map\" object {tensor name: file}");
    std::set<std::string> checked;
    for (const auto& [name, file] : wm->items()) {
      MOE_CHECK(file.is_string(), c->index_path_, ": weight_map entry '", name,
                "' must be a file name string, got ", excerpt(file));
      const std::string& f = file.get_ref<const std::string&>();
      const fs::path rel(f);
      bool plain = !f.empty() && rel.is_relative();
      for (const auto& part : rel) plain = plain && part != "..";
      MOE_CHECK(plain, c->index_path_, ": weight_map entry '", name, "' names file '", f,
                "', which is not a file inside the checkpoint directory");
      if (checked.insert(f).second) {
        MOE_CHECK(fs::is_regular_file(fs::path(path) / rel, ec), c->index_path_,
                  ": weight_map entry '", name, "' names file '", f, "', which does not exist in ",
                  path);
      }
      c->shard_of_[name] = f;
    }
    return c;
  }

  // No index: every .safetensors file of the directory.
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
      found.push_back(entry.path().filename().string());
    }
  }
  MOE_CHECK(!found.empty(), "checkpoint directory '", path, "' has no ", kSafetensorsIndexName,
            " and no .safetensors file");
  std::sort(found.begin(), found.end());
  for (const std::string& name : found) {
    auto file = SafetensorsFile::open((fs::path(path) / name).string());
    for (const StTensorInfo& t : file->header().tensors) {
      auto [it, inserted] = c->shard_of_.emplace(t.name, name);
      MOE_CHECK(inserted, "checkpoint '", path, "': tensor '", t.name, "' is in both ", it->second,
                " and ", name, " (and there is no ", kSafetensorsIndexName, ")");
    }
    c->files_[name] = std::move(file);
  }
  return c;
}

const SafetensorsFile& SafetensorsCheckpoint::shard(const std::string& file) {
  auto it = files_.find(file);
  if (it == files_.end()) {
    it = files_.emplace(file, SafetensorsFile::open((fs::path(dir_) / file).string())).first;
  }
  return *it->second;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(shard_of_.size());
  for (const auto& [name, file] : shard_of_) out.push_back(name);
  return out;
}

std::vector<std::string> SafetensorsCheckpoint::names_with_prefix(std::string_view prefix) const {
  std::vector<std::string> out;
  for (auto it = shard_of_.lower_bound(std::string(prefix));
       it != shard_of_.end() && std::string_view(it->first).starts_with(prefix); ++it) {
    out.push_back(it->first);
  }
  return out;
}

std::optional<SafetensorsCheckpoint::Entry> SafetensorsCheckpoint::find(std::string_view name) {
  auto it = shard_of_.find(std::string(name));
  if (it == shard_of_.end()) return std::nullopt;
  const SafetensorsFile& file = shard(it->second);
  const StTensorInfo* info = file.find(name);
  MOE_CHECK(info != nullptr, index_path_, ": weight_map puts tensor '", name, "' in ", it->second,
            ", but that file has no such tensor");
  return Entry{&file, info};
}

SafetensorsCheckpoint::Entry SafetensorsCheckpoint::get(std::string_view name) {
  auto e = find(name);
  MOE_CHECK(
      e.has_value(), describe(), ": tensor '", name, "' is missing",
      sharded() ? " (not in the weight_map of " + std::string(kSafetensorsIndexName) + ")" : "");
  return *e;
}

std::vector<std::string> SafetensorsCheckpoint::files() const {
  std::set<std::string> s;
  for (const auto& [name, file] : shard_of_) s.insert(file);
  for (const auto& [file, ptr] : files_) s.insert(file);
  return {s.begin(), s.end()};
}

std::string SafetensorsCheckpoint::describe() const {
  if (sharded()) {
    return "sharded checkpoint " + path_ + " (" + std::to_string(files().size()) + " files, " +
           std::string(kSafetensorsIndexName) + ")";
  }
  if (files_.size() == 1 && dir_ != path_) return "checkpoint file " + path_;
  return "checkpoint " + path_ + " (" + std::to_string(files_.size()) + " file" +
         (files_.size() == 1 ? "" : "s") + ")";
}

// ---- Writer -------------------------------------------------------------------------------

StWriteTensor st_write_tensor(std::string name, const TensorView& t) {
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), "st_write_tensor '", name,
            "': needs a contiguous host tensor, got ", t.str());
  StWriteTensor w;
  w.name = std::move(name);
  w.shape.assign(t.shape().begin(), t.shape().end());
  w.data = t.data();
  switch (t.dtype()) {
    case DType::kF64:
      w.dtype = "F64";
      break;
    case DType::kF32:
      w.dtype = "F32";
      break;
    case DType::kF16:
      w.dtype = "F16";
      break;
    case DType::kBF16:
      w.dtype = "BF16";
      break;
    case DType::kE4M3:
    case DType::kE4M3Scale:
      w.dtype = "F8_E4M3";
      break;
    case DType::kUE8M0:
    case DType::kU8:
      w.dtype = "U8";
      break;
    case DType::kI32:
      w.dtype = "I32";
      break;
    case DType::kI64:
      w.dtype = "I64";
      break;
    case DType::kE2M1:
      MOE_CHECK(!w.shape.empty() && w.shape.back() % 2 == 0, "st_write_tensor '", w.name,
                "': e2m1 needs an even last dimension, got ", t.str());
      w.dtype = "U8";
      w.shape.back() /= 2;
      break;
  }
  return w;
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const StWriteTensor& t : tensors) {
    const StDType* dtype = find_st_dtype(t.dtype);
    MOE_CHECK(dtype != nullptr, path, ": tensor '", t.name, "': unknown dtype \"", t.dtype,
              "\" (known: ", st_dtype_names(), ")");
    MOE_CHECK(!t.name.empty() && t.name != "__metadata__", path, ": invalid tensor name '", t.name,
              "'");
    MOE_CHECK(!header.contains(t.name), path, ": tensor '", t.name, "' is written twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      MOE_CHECK(d >= 0, path, ": tensor '", t.name, "' has a negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    MOE_CHECK(numel * dtype->bits % 8 == 0, path, ": tensor '", t.name,
              "' is not a whole number of bytes");
    const uint64_t bytes = numel * dtype->bits / 8;
    MOE_CHECK(bytes == 0 || t.data != nullptr, path, ": tensor '", t.name, "' has no data");
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section 8-byte aligned

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MOE_CHECK(out.good(), path, ": cannot create: ", errno_text());
  std::array<char, 8> len{};
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
  out.write(len.data(), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    out.write(static_cast<const char*>(tensors[i].data), static_cast<std::streamsize>(sizes[i]));
  }
  out.flush();
  MOE_CHECK(out.good(), path, ": write failed (", offset + 8 + text.size(),
            " bytes): ", errno_text());
}

void write_safetensors_index(const std::string& dir,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_bytes) {
  Json root = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  const std::string path = (fs::path(dir) / std::string(kSafetensorsIndexName)).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MOE_CHECK(out.good(), path, ": cannot create: ", errno_text());
  out << root.dump(2) << "\n";
  out.flush();
  MOE_CHECK(out.good(), path, ": write failed: ", errno_text());
}

}  // namespace moe
