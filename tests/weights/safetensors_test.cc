// safetensors reader and writer: round trips of every dtype, sharded and multi-file
// checkpoints, and one test per malformed-file case (each error must name the file, the
// tensor where one is concerned, and what is wrong). Ends with a short mutation run over the
// fuzz corpus: any input either parses or throws moe::Error.
#include "weights/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/random.h"
#include "moe/errors.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// A fresh directory removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info->name();  // "OneClearError/bad_json" for parametrized tests
    for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    path = fs::temp_directory_path() / ("moe_st_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// A file of: 8-byte length (header.size() unless overridden), header text, data bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               std::optional<uint64_t> length = std::nullopt) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = length.value_or(header.size());
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header;
  out << std::string(data_bytes, '\x11');
}

// The error message of `f`, which must throw moe::Error.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected a moe::Error";
  return "";
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(mix64(seed * 1000003 + i));
  return v;
}

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  TempDir dir;
  struct Spec {
    std::string name, dtype;
    std::vector<int64_t> shape;
    size_t bytes;
  };
  const std::vector<Spec> specs = {
      {"a.f32", "F32", {3, 5}, 60},    {"b.bf16", "BF16", {7}, 14},
      {"c.f16", "F16", {2, 2, 2}, 16}, {"d.e4m3", "F8_E4M3", {4, 9}, 36},
      {"e.u8", "U8", {5, 3}, 15},      {"f.i64", "I64", {2}, 16},
      {"g.scalar", "F32", {}, 4},      {"h.empty", "BF16", {0, 4}, 0},
      {"i.e8m0", "F8_E8M0", {6}, 6},   {"j.i32", "I32", {1, 1}, 4},
  };
  std::vector<std::vector<uint8_t>> data;
  std::vector<StWriteTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    data.push_back(random_bytes(specs[i].bytes, i + 1));
    tensors.push_back({specs[i].name, specs[i].dtype, specs[i].shape, data.back().data()});
  }
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "test"}});

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->header().data_offset % 8, 0u) << "the header is padded to 8 bytes";
  EXPECT_EQ(file->header().metadata.at("format"), "pt");
  EXPECT_EQ(file->header().metadata.at("note"), "test");
  ASSERT_EQ(file->header().tensors.size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const StTensorInfo* t = file->find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype->name, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    ASSERT_EQ(t->nbytes(), specs[i].bytes);
    if (specs[i].bytes > 0) {
      EXPECT_EQ(std::memcmp(file->data(*t), data[i].data(), specs[i].bytes), 0) << specs[i].name;
    }
  }
  EXPECT_EQ(file->find("missing"), nullptr);
  EXPECT_EQ(find_st_dtype("BF16")->dtype, DType::kBF16);
  EXPECT_EQ(find_st_dtype("F8_E4M3")->dtype, DType::kE4M3);
  EXPECT_FALSE(find_st_dtype("F64")->dtype.has_value());
  EXPECT_EQ(find_st_dtype("F7"), nullptr);
}

TEST(Safetensors, WriteTensorMapsDtypesAndPacksE2M1) {
  Tensor w = Tensor::empty({4, 64}, DType::kE2M1);
  Tensor s = Tensor::empty({4, 4}, DType::kE4M3Scale);
  Tensor u = Tensor::empty({4, 2}, DType::kUE8M0);
  const StWriteTensor ww = st_write_tensor("w", w);
  EXPECT_EQ(ww.dtype, "U8");
  EXPECT_EQ(ww.shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(st_write_tensor("s", s).dtype, "F8_E4M3");
  EXPECT_EQ(st_write_tensor("u", u).dtype, "U8");
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  const float x = 1.0f;
  EXPECT_NE(error_of([&] {
              write_safetensors(dir.file("a.safetensors"), {{"t", "F7", {1}, &x}});
            }).find("unknown dtype \"F7\""),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(dir.file("a.safetensors"),
                                {{"t", "F32", {1}, &x}, {"t", "F32", {1}, &x}});
            }).find("'t' is written twice"),
            std::string::npos);
}

TEST(Safetensors, ShardedCheckpointWithIndex) {
  TempDir dir;
  const auto a = random_bytes(64, 1), b = random_bytes(32, 2);
  write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                    {{"x.weight", "BF16", {4, 8}, a.data()}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                    {{"y.weight", "F32", {8}, b.data()}});
  write_safetensors_index(dir.path.string(),
                          {{"x.weight", "model-00001-of-00002.safetensors"},
                           {"y.weight", "model-00002-of-00002.safetensors"}},
                          96);
  auto ckpt = SafetensorsCheckpoint::open(dir.path.string());
  EXPECT_TRUE(ckpt->sharded());
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"x.weight", "y.weight"}));
  EXPECT_EQ(ckpt->files().size(), 2u);
  auto x = ckpt->get("x.weight");
  EXPECT_EQ(std::memcmp(x.data(), a.data(), 64), 0);
  auto y = ckpt->get("y.weight");
  EXPECT_EQ(std::memcmp(y.data(), b.data(), 32), 0);
  EXPECT_NE(y.file->path().find("00002"), std::string::npos);
  EXPECT_FALSE(ckpt->find("z").has_value());
  const std::string missing = error_of([&] { ckpt->get("z.weight"); });
  EXPECT_NE(missing.find("'z.weight' is missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("weight_map"), std::string::npos) << missing;
}

TEST(Safetensors, IndexErrorsNameTheIndexAndTheTensor) {
  TempDir dir;
  const auto a = random_bytes(16, 1);
  write_safetensors(dir.file("one.safetensors"), {{"x", "U8", {16}, a.data()}});
  // A weight_map entry naming a file that is not there.
  write_safetensors_index(dir.path.string(), {{"x", "one.safetensors"}, {"y", "two.safetensors"}},
                          16);
  std::string msg = error_of([&] { SafetensorsCheckpoint::open(dir.path.string()); });
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'y'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("two.safetensors"), std::string::npos) << msg;
  // A weight_map entry naming a file without that tensor.
  write_safetensors_index(dir.path.string(), {{"x", "one.safetensors"}, {"y", "one.safetensors"}},
                          16);
  auto ckpt = SafetensorsCheckpoint::open(dir.path.string());
  msg = error_of([&] { ckpt->find("y"); });
  EXPECT_NE(msg.find("'y'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("one.safetensors"), std::string::npos) << msg;
  // A path escaping the directory.
  write_safetensors_index(dir.path.string(), {{"x", "../one.safetensors"}}, 16);
  msg = error_of([&] { SafetensorsCheckpoint::open(dir.path.string()); });
  EXPECT_NE(msg.find("not a file inside"), std::string::npos) << msg;
  // Malformed index JSON.
  std::ofstream(dir.file("model.safetensors.index.json")) << "{\"weight_map\": ";
  msg = error_of([&] { SafetensorsCheckpoint::open(dir.path.string()); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

TEST(Safetensors, DirectoryWithoutIndexOpensEveryFile) {
  TempDir dir;
  const auto a = random_bytes(16, 1);
  write_safetensors(dir.file("a.safetensors"), {{"x", "U8", {16}, a.data()}});
  write_safetensors(dir.file("b.safetensors"), {{"y", "U8", {16}, a.data()}});
  auto ckpt = SafetensorsCheckpoint::open(dir.path.string());
  EXPECT_EQ(ckpt->names().size(), 2u);
  EXPECT_TRUE(ckpt->contains("y"));
  write_safetensors(dir.file("c.safetensors"), {{"x", "U8", {16}, a.data()}});
  const std::string msg = error_of([&] { SafetensorsCheckpoint::open(dir.path.string()); });
  EXPECT_NE(msg.find("'x' is in both a.safetensors and c.safetensors"), std::string::npos) << msg;
  // A single file path is a checkpoint too.
  EXPECT_EQ(SafetensorsCheckpoint::open(dir.file("b.safetensors"))->names(),
            std::vector<std::string>{"y"});
}

// ---- Malformed files: one error naming the file (and tensor) and the problem -------------

struct Malformed {
  const char* name;
  std::string header;
  size_t data_bytes;
  std::optional<uint64_t> length;
  std::vector<std::string> expected;  // substrings of the message (besides the file name)
};

class SafetensorsMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(SafetensorsMalformed, OneClearError) {
  TempDir dir;
  const Malformed& m = GetParam();
  const std::string path = dir.file(std::string(m.name) + ".safetensors");
  write_raw(path, m.header, m.data_bytes, m.length);
  const std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  for (const std::string& s : m.expected) EXPECT_NE(msg.find(s), std::string::npos) << msg;
}

const std::string kGood = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

INSTANTIATE_TEST_SUITE_P(
    Cases, SafetensorsMalformed,
    ::testing::Values(
        Malformed{"header_length_past_end",
                  kGood,
                  16,
                  1u << 20,
                  {"header length 1048576", "runs past the end"}},
        Malformed{"huge_header_length", kGood, 16, ~0ull, {"runs past the end"}},
        Malformed{"bad_json", R"({"w":{"dtype":"F32",)", 0, {}, {"not valid JSON"}},
        Malformed{"not_an_object", "[1, 2, 3]", 0, {}, {"must be a JSON object", "array"}},
        Malformed{"unknown_dtype",
                  R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}})",
                  2,
                  {},
                  {"'w'", "unknown dtype \"F7\""}},
        Malformed{"shape_byte_mismatch",
                  R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})",
                  16,
                  {},
                  {"'w'", "[2, 3] x F32", "24 bytes", "span 16 bytes"}},
        Malformed{"data_past_end",
                  kGood,
                  8,
                  {},
                  {"'w'", "run past the end of the data section (8 bytes"}},
        Malformed{
            "overlap",
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
            16,
            {},
            {"'b'", "'a'", "overlap"}},
        Malformed{
            "duplicate_name",
            R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
            2,
            {},
            {"'w' appears twice"}},
        Malformed{"negative_dim",
                  R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})",
                  1,
                  {},
                  {"'w'", "non-negative"}},
        Malformed{"missing_offsets",
                  R"({"w":{"dtype":"U8","shape":[1]}})",
                  1,
                  {},
                  {"'w'", "missing \"data_offsets\""}},
        Malformed{"reversed_offsets",
                  R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})",
                  2,
                  {},
                  {"'w'", "end before they begin"}},
        Malformed{"entry_not_object", R"({"w":[1]})", 0, {}, {"'w'", "must be a JSON object"}},
        Malformed{"bad_metadata", R"({"__metadata__":{"k":1}})", 0, {}, {"__metadata__", "'k'"}},
        Malformed{"overflowing_shape",
                  R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                  8,
                  {},
                  {"'w'", "too many elements"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Safetensors, TruncatedFiles) {
  TempDir dir;
  const std::string tiny = dir.file("tiny.safetensors");
  std::ofstream(tiny, std::ios::binary) << "abc";
  std::string msg = error_of([&] { SafetensorsFile::open(tiny); });
  EXPECT_NE(msg.find(tiny), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 bytes, shorter than the 8-byte header length"), std::string::npos) << msg;

  const std::string empty = dir.file("empty.safetensors");
  std::ofstream(empty, std::ios::binary).flush();
  msg = error_of([&] { SafetensorsFile::open(empty); });
  EXPECT_NE(msg.find("0 bytes"), std::string::npos) << msg;

  // A valid file cut short in its data section.
  const auto a = random_bytes(4096, 3);
  const std::string cut = dir.file("cut.safetensors");
  write_safetensors(cut, {{"big", "BF16", {2048}, a.data()}});
  fs::resize_file(cut, fs::file_size(cut) - 100);
  msg = error_of([&] { SafetensorsFile::open(cut); });
  EXPECT_NE(msg.find("'big'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  msg = error_of([&] { SafetensorsFile::open(dir.file("absent.safetensors")); });
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

// Hostile headers: deep nesting and huge names give an error, not a crash or a huge message.
TEST(Safetensors, HostileHeaders) {
  TempDir dir;
  const std::string deep = dir.file("deep.safetensors");
  write_raw(deep, "{\"w\": " + std::string(200000, '[') + std::string(200000, ']') + "}", 0);
  std::string msg = error_of([&] { SafetensorsFile::open(deep); });
  EXPECT_NE(msg.find("'w': entry must be a JSON object, got [array]"), std::string::npos) << msg;

  const std::string named = dir.file("named.safetensors");
  const std::string huge(100000, 'n');
  write_raw(named, "{\"" + huge + "\": {\"dtype\": \"" + huge + "\"}}", 0);
  msg = error_of([&] { SafetensorsFile::open(named); });
  EXPECT_NE(msg.find("unknown dtype"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 1000u);
}

// Holes between ranges are tolerated, headers padded with spaces parse.
TEST(Safetensors, LenientWhereEveryWriterIs) {
  TempDir dir;
  const std::string path = dir.file("holes.safetensors");
  write_raw(path, R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}      )", 8);
  auto f = SafetensorsFile::open(path);
  ASSERT_NE(f->find("a"), nullptr);
  EXPECT_EQ(f->find("a")->begin, 4u);
}

// ---- A short fuzz run: mutations of the corpus parse or throw moe::Error, nothing else -----

TEST(Safetensors, MutatedCorpusOnlyThrowsMoeError) {
  std::vector<std::vector<uint8_t>> seeds;
  const fs::path corpus = fs::path(MOE_TEST_DATA_DIR) / ".." / ".." / "fuzz" / "corpus";
  if (fs::exists(corpus)) {
    for (const auto& e : fs::directory_iterator(corpus)) {
      std::ifstream in(e.path(), std::ios::binary);
      seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  ASSERT_FALSE(seeds.empty()) << "no fuzz corpus at " << corpus;
  std::mt19937_64 rng(7);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::vector<uint8_t> input = seeds[rng() % seeds.size()];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !input.empty(); ++m) {
      const size_t pos = rng() % input.size();
      switch (rng() % 4) {
        case 0:
          input[pos] = static_cast<uint8_t>(rng());
          break;  // flip a byte
        case 1:
          input.resize(pos);
          break;  // truncate
        case 2:
          input.insert(input.begin() + pos, static_cast<uint8_t>(rng()));
          break;
        default:
          input[pos] = "0123456789[]{}\",:-"[rng() % 18];
          break;  // JSON-ish byte
      }
    }
    try {
      const StHeader h = parse_safetensors_header(input, "mutated");
      for (const StTensorInfo& t : h.tensors) ASSERT_LE(t.end, h.data_size);
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(parsed + rejected, 0);
}

}  // namespace
}  // namespace moe
