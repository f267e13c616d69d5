// Checkpoint loader tests: every corrupt case is a file built byte by byte, and every rejection is
// checked for the message that names the problem, the file and the tensor.
#include "engine/model/checkpoint.h"

#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

namespace fs = std::filesystem;
using Catch::Contains;
using saker::Checkpoint;
using saker::CheckpointError;
using saker::DType;
using saker::ExpectedTensor;
using saker::SafetensorsFile;
using saker::TensorInfo;
using Bytes = std::vector<std::uint8_t>;

// Both the type and the message: a std::runtime_error with the right text is not enough.
#define REQUIRE_CHECKPOINT_ERROR(expr, matcher) \
  do {                                          \
    REQUIRE_THROWS_AS(expr, CheckpointError);   \
    REQUIRE_THROWS_WITH(expr, matcher);         \
  } while (false)

// A fresh directory under the system temp dir, removed with its contents on scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("saker_ckpt_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(counter++) + "_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;  // never throw from a destructor; a leftover temp dir is harmless
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const Bytes& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void write_text(const fs::path& p, const std::string& text) {
  write_file(p, Bytes(text.begin(), text.end()));
}

void append_u64le(Bytes& b, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// A raw safetensors file: the 8-byte length (the header's own unless overridden), the header text
// as given, then the data bytes. Nothing is checked, so corrupt files are easy to spell out.
void write_raw(const fs::path& p, const std::string& header, const Bytes& data,
               std::optional<std::uint64_t> length = std::nullopt) {
  Bytes b;
  append_u64le(b, length.value_or(header.size()));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  write_file(p, b);
}

std::string dims_json(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// One header entry as JSON text: "name":{"dtype":…,"shape":…,"data_offsets":[b,e]}.
std::string entry(const std::string& name, const std::string& dtype,
                  const std::vector<std::int64_t>& shape, std::uint64_t begin, std::uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + dims_json(shape) +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

std::string object(const std::vector<std::string>& entries) {
  std::string s = "{";
  for (std::size_t i = 0; i < entries.size(); ++i) s += (i ? "," : "") + entries[i];
  return s + "}";
}

// A well-formed tensor for write_safetensors: its raw little-endian bytes as stored.
struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  Bytes bytes;
};

// Lays tensors out back to back in the given order, as the safetensors library does, and pads the
// header with spaces to a multiple of 8 bytes like real files.
void write_safetensors(const fs::path& p, const std::vector<Tensor>& tensors,
                       const std::string& metadata = "") {
  std::vector<std::string> entries;
  if (!metadata.empty()) entries.push_back("\"__metadata__\":" + metadata);
  Bytes data;
  for (const Tensor& t : tensors) {
    entries.push_back(entry(t.name, t.dtype, t.shape, data.size(), data.size() + t.bytes.size()));
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  std::string header = object(entries);
  header.append((8 - header.size() % 8) % 8, ' ');
  write_raw(p, header, data);
}

Bytes f32_bytes(std::initializer_list<float> values) {
  Bytes b;
  for (float v : values) {
    const auto u = std::bit_cast<std::uint32_t>(v);
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  return b;
}

Bytes u16_bytes(std::initializer_list<std::uint16_t> values) {
  Bytes b;
  for (std::uint16_t v : values) {
    b.push_back(static_cast<std::uint8_t>(v));
    b.push_back(static_cast<std::uint8_t>(v >> 8));
  }
  return b;
}

Bytes as_bytes(const TensorInfo& t) {
  Bytes b;
  for (std::byte x : t.data) b.push_back(std::to_integer<std::uint8_t>(x));
  return b;
}

float f32_at(const TensorInfo& t, std::size_t i) {
  float v;
  std::memcpy(&v, t.data.data() + 4 * i, 4);
  return v;
}

std::uint16_t u16_at(const TensorInfo& t, std::size_t i) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(t.data[2 * i]) |
                                    (std::to_integer<unsigned>(t.data[2 * i + 1]) << 8));
}

// Three shards' worth of realistic names, reused by the sharded tests.
const std::string kEmb = "transformer.word_embeddings.weight";
const std::string kQkv = "transformer.h.0.self_attention.query_key_value.weight";
const std::string kLnF = "transformer.ln_f.weight";
const std::string kShard1 = "model-00001-of-00002.safetensors";
const std::string kShard2 = "model-00002-of-00002.safetensors";

std::string index_json(const std::vector<std::pair<std::string, std::string>>& map) {
  std::vector<std::string> entries;
  for (const auto& [tensor, file] : map) entries.push_back("\"" + tensor + "\":\"" + file + "\"");
  return "{\"metadata\":{\"total_size\":40},\"weight_map\":" + object(entries) + "}";
}

// Shard 1 holds the embedding and QKV (F32, 24 + 8 bytes), shard 2 the final norm (BF16, 8).
void write_two_shards(const TempDir& dir) {
  write_safetensors(dir / kShard1, {{kEmb, "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
                                    {kQkv, "F32", {2, 1}, f32_bytes({7, 8})}});
  write_safetensors(dir / kShard2, {{kLnF, "BF16", {4}, u16_bytes({0x3f80, 0x4000, 0, 0xbf80})}});
}

}  // namespace

// --- valid files ---------------------------------------------------------------------------------

TEST_CASE("single file with F32, F16 and BF16 tensors reads back exactly", "[checkpoint]") {
  TempDir dir;
  const Bytes a = f32_bytes({1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -7.0f});
  const Bytes b = u16_bytes({0x3c00, 0xc000, 0x3800, 0x0001});  // 1, -2, 0.5, smallest subnormal
  const Bytes c = u16_bytes({saker::f32_to_bf16(1.0f), saker::f32_to_bf16(-3.5f),
                             saker::f32_to_bf16(0.15625f), saker::f32_to_bf16(100.0f)});
  write_safetensors(
      dir / "model.safetensors",
      {{"a.weight", "F32", {2, 3}, a}, {"b", "F16", {4}, b}, {"c", "BF16", {2, 2}, c}});

  const Checkpoint ck = Checkpoint::open(dir.path());
  CHECK(ck.dir() == dir.path());
  CHECK(ck.names() == std::vector<std::string>{"a.weight", "b", "c"});
  CHECK(ck.total_bytes() == 24 + 8 + 8);

  const TensorInfo& ta = ck.get("a.weight");
  CHECK(ta.name == "a.weight");
  CHECK(ta.dtype == DType::F32);
  CHECK(ta.shape == std::vector<std::int64_t>{2, 3});
  CHECK(ta.numel() == 6);
  CHECK(ta.file == dir / "model.safetensors");
  CHECK(as_bytes(ta) == a);
  CHECK(f32_at(ta, 0) == 1.5f);
  CHECK(f32_at(ta, 5) == -7.0f);

  const TensorInfo& tb = ck.get("b");
  CHECK(tb.dtype == DType::F16);
  CHECK(as_bytes(tb) == b);
  CHECK(saker::f16_to_f32(u16_at(tb, 0)) == 1.0f);
  CHECK(saker::f16_to_f32(u16_at(tb, 1)) == -2.0f);
  CHECK(saker::f16_to_f32(u16_at(tb, 2)) == 0.5f);
  CHECK(saker::f16_to_f32(u16_at(tb, 3)) == 0x1p-24f);

  const TensorInfo& tc = ck.get("c");
  CHECK(tc.dtype == DType::BF16);
  CHECK(tc.numel() == 4);
  CHECK(as_bytes(tc) == c);
  CHECK(saker::bf16_to_f32(u16_at(tc, 1)) == -3.5f);
  CHECK(saker::bf16_to_f32(u16_at(tc, 3)) == 100.0f);

  CHECK(ck.find("a.weight") == &ta);
  CHECK(ck.find("missing") == nullptr);
  REQUIRE_CHECKPOINT_ERROR(ck.get("missing"), Contains("tensor missing not found in checkpoint") &&
                                                  Contains(dir.path().string()));
  REQUIRE_NOTHROW(ck.validate({{"a.weight", {2, 3}}, {"b", {4}}, {"c", {2, 2}}}));
}

TEST_CASE("__metadata__ is accepted and not a tensor", "[checkpoint]") {
  TempDir dir;
  write_safetensors(dir / "model.safetensors", {{"w", "F32", {1}, f32_bytes({42})}},
                    R"({"format":"pt","note":"x"})");
  const Checkpoint ck = Checkpoint::open(dir.path());
  CHECK(ck.names() == std::vector<std::string>{"w"});
  CHECK(ck.find("__metadata__") == nullptr);
  CHECK(f32_at(ck.get("w"), 0) == 42.0f);
}

TEST_CASE("__metadata__ must be an object of strings", "[checkpoint]") {
  TempDir dir;
  const fs::path p = dir / "m.safetensors";
  write_safetensors(p, {{"w", "F32", {1}, f32_bytes({42})}}, R"({"total":3})");
  REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("__metadata__") &&
                                                   Contains("object of strings") &&
                                                   Contains(p.string()));
}

TEST_CASE("zero-size tensors are valid with begin == end", "[checkpoint]") {
  TempDir dir;
  const fs::path p = dir / "z.safetensors";
  // The empty tensor sits between the other two, at the offset where the second one starts.
  write_raw(p,
            object({entry("first", "F32", {1}, 0, 4), entry("empty", "BF16", {0, 4096}, 4, 4),
                    entry("second", "F32", {1}, 4, 8)}),
            f32_bytes({1, 2}));
  const SafetensorsFile f(p);
  REQUIRE(f.tensors().size() == 3);
  const TensorInfo& e = f.tensors().at("empty");
  CHECK(e.numel() == 0);
  CHECK(e.data.empty());
  CHECK(e.shape == std::vector<std::int64_t>{0, 4096});
  CHECK(f32_at(f.tensors().at("second"), 0) == 2.0f);
}

TEST_CASE("a file of only an empty tensor is valid", "[checkpoint]") {
  TempDir dir;
  const fs::path p = dir / "z.safetensors";
  write_raw(p, object({entry("nothing", "F16", {3, 0}, 0, 0)}), {});
  const SafetensorsFile f(p);
  CHECK(f.tensors().at("nothing").numel() == 0);
}

TEST_CASE("sharded checkpoint: find() locates tensors in both shards", "[checkpoint]") {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / "model.safetensors.index.json",
             index_json({{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}}));

  const Checkpoint ck = Checkpoint::open(dir.path());
  CHECK(ck.names() == std::vector<std::string>{kQkv, kLnF, kEmb});  // sorted by name
  CHECK(ck.total_bytes() == 24 + 8 + 8);
  const TensorInfo* emb = ck.find(kEmb);
  const TensorInfo* ln = ck.find(kLnF);
  REQUIRE(emb);
  REQUIRE(ln);
  CHECK(emb->file == dir / kShard1);
  CHECK(ln->file == dir / kShard2);
  CHECK(f32_at(*emb, 5) == 6.0f);
  CHECK(f32_at(*ck.find(kQkv), 1) == 8.0f);
  CHECK(saker::bf16_to_f32(u16_at(*ln, 1)) == 2.0f);
  REQUIRE_NOTHROW(ck.validate({{kEmb, {2, 3}}, {kQkv, {2, 1}}, {kLnF, {4}}}));
}

TEST_CASE("the index wins over a stray model.safetensors", "[checkpoint]") {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / "model.safetensors.index.json",
             index_json({{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}}));
  write_safetensors(dir / "model.safetensors", {{"other", "F32", {1}, f32_bytes({0})}});
  CHECK(Checkpoint::open(dir.path()).find("other") == nullptr);
}

// --- corrupt single files ------------------------------------------------------------------------

TEST_CASE("corrupt safetensors files are rejected with a precise message", "[checkpoint]") {
  TempDir dir;
  const fs::path p = dir / "bad.safetensors";
  const std::string file = p.string();

  SECTION("empty file") {
    write_file(p, {});
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("file is empty") && Contains(file));
  }
  SECTION("shorter than the 8-byte length") {
    write_file(p, {0x10, 0, 0, 0});
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("truncated") && Contains(file));
  }
  SECTION("data cut short") {
    const Bytes data = f32_bytes({1, 2, 3, 4});
    write_raw(p, object({entry("w", "F32", {4}, 0, 16)}), Bytes(data.begin(), data.begin() + 9));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("run past the end of the data") &&
                                                     Contains("(9 bytes)") && Contains(file));
  }
  SECTION("header length runs past the end of the file") {
    const std::string h = object({entry("w", "F32", {1}, 0, 4)});
    write_raw(p, h, f32_bytes({1}), 1000);
    const std::string size = std::to_string(8 + h.size() + 4);
    REQUIRE_CHECKPOINT_ERROR(
        SafetensorsFile(p),
        Contains("header length 1000 runs past the end of the file (size " + size + ")") &&
            Contains(file));
  }
  SECTION("header length of zero") {
    write_raw(p, "", Bytes(16), 0);
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("header length is 0") && Contains(file));
  }
  SECTION("absurd header length") {
    write_raw(p, "{}", {}, 0x4000'0000'0000'0000ull);
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("header length 4611686018427387904") &&
                                                     Contains("absurdly large") && Contains(file));
  }
  SECTION("header not valid JSON") {
    write_raw(p, R"({"w": {"dtype": "F32",)", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("header is not valid JSON") && Contains(file));
  }
  SECTION("header not an object") {
    write_raw(p, "[1, 2, 3]", {});
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("header is not a JSON object") &&
                                                     Contains("array") && Contains(file));
  }
  SECTION("entry not an object") {
    write_raw(p, R"({"w": [0, 4]})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("not a JSON object") &&
                                                     Contains(file));
  }
  SECTION("entry missing dtype") {
    write_raw(p, R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("missing \"dtype\"") &&
                                                     Contains(file));
  }
  SECTION("entry missing shape") {
    write_raw(p, R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("missing \"shape\"") &&
                                                     Contains(file));
  }
  SECTION("entry missing data_offsets") {
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [1]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("missing \"data_offsets\"") &&
                                                     Contains(file));
  }
  SECTION("dtype of the wrong type") {
    write_raw(p, R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("\"dtype\" is not a string") &&
                                                     Contains(file));
  }
  SECTION("shape of the wrong type") {
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("tensor w") && Contains("non-integer 1.5") && Contains(file));
  }
  SECTION("negative dimension") {
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 4]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("negative dimension -1") &&
                                                     Contains(file));
  }
  SECTION("data_offsets not a pair") {
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("array of two integers") &&
                                                     Contains(file));
  }
  SECTION("negative data offset") {
    write_raw(p, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("non-negative integers") &&
                                                     Contains(file));
  }
  SECTION("unsupported dtype I64") {
    write_raw(p, object({entry("ids", "I64", {2}, 0, 16)}), Bytes(16));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("unsupported dtype I64 for tensor ids") && Contains(file));
  }
  SECTION("unsupported dtype F8_E4M3") {
    write_raw(p, object({entry("q", "F8_E4M3", {4}, 0, 4)}), Bytes(4));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("unsupported dtype F8_E4M3 for tensor q") && Contains(file));
  }
  SECTION("data_offsets begin after end") {
    write_raw(p, object({entry("w", "F32", {1}, 8, 4)}), Bytes(8));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor w") &&
                                                     Contains("[8, 4) begin after they end") &&
                                                     Contains(file));
  }
  SECTION("offsets past the end of the data") {
    write_raw(p, object({entry("a", "F32", {2}, 0, 8), entry("b", "F32", {4}, 8, 24)}), Bytes(16));
    REQUIRE_CHECKPOINT_ERROR(
        SafetensorsFile(p),
        Contains("tensor b: data_offsets [8, 24) run past the end of the data (16 bytes)") &&
            Contains(file));
  }
  SECTION("shape × dtype disagrees with the span") {
    // [2, 2] BF16 is 8 bytes, but the entry claims 16 (as if it were F32).
    write_raw(p, object({entry("w", "BF16", {2, 2}, 0, 16)}), Bytes(16));
    REQUIRE_CHECKPOINT_ERROR(
        SafetensorsFile(p),
        Contains("tensor w: shape [2, 2] × BF16 needs 8 bytes but data_offsets span 16") &&
            Contains(file));
  }
  SECTION("element count overflows 64 bits") {
    // 2^32 × 2^32 wraps to 0 in 64 bits; that must not pass as an empty tensor.
    write_raw(p, object({entry("huge", "F32", {4294967296, 4294967296}, 0, 0)}), {});
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor huge") &&
                                                     Contains("more elements than fit") &&
                                                     Contains(file));
  }
  SECTION("byte count overflows 64 bits") {
    // 2^62 elements fit, but 2^62 × 4 bytes wraps to 0.
    write_raw(p, object({entry("huge", "F32", {4611686018427387904}, 0, 0)}), {});
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("tensor huge") &&
                                                     Contains("more bytes than fit") &&
                                                     Contains(file));
  }
  SECTION("overlapping tensors") {
    write_raw(p, object({entry("a", "F32", {2}, 0, 8), entry("b", "F32", {2}, 4, 12)}), Bytes(12));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("tensors a and b overlap") && Contains(file));
  }
  SECTION("two tensors sharing the same bytes") {
    write_raw(p, object({entry("a", "F32", {2}, 0, 8), entry("b", "F32", {2}, 0, 8)}), Bytes(8));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("tensors a and b overlap") && Contains(file));
  }
  SECTION("gap between tensors") {
    write_raw(p, object({entry("a", "F32", {2}, 0, 8), entry("b", "F32", {2}, 12, 20)}), Bytes(20));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("gap of 4 bytes before tensor b") && Contains(file));
  }
  SECTION("gap before the first tensor") {
    write_raw(p, object({entry("a", "F32", {2}, 6, 14)}), Bytes(14));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("gap of 6 bytes before tensor a") && Contains(file));
  }
  SECTION("trailing bytes after the last tensor") {
    write_raw(p, object({entry("a", "F32", {2}, 0, 8)}), Bytes(11));
    REQUIRE_CHECKPOINT_ERROR(
        SafetensorsFile(p), Contains("3 trailing bytes after the last tensor a") && Contains(file));
  }
  SECTION("data but no tensors") {
    write_raw(p, "{}", Bytes(5));
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p),
                             Contains("5 trailing bytes with no tensors") && Contains(file));
  }
  SECTION("missing file names errno") {
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(dir / "nope.safetensors"),
                             Contains("nope.safetensors") && Contains("No such file"));
  }
  SECTION("a directory is not a file") {
    fs::create_directory(p);
    REQUIRE_CHECKPOINT_ERROR(SafetensorsFile(p), Contains("not a regular file") && Contains(file));
  }
}

TEST_CASE("Checkpoint::open passes a corrupt model.safetensors's error through", "[checkpoint]") {
  TempDir dir;
  write_raw(dir / "model.safetensors", object({entry("a", "F32", {2}, 0, 8)}), Bytes(4));
  REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                           Contains((dir / "model.safetensors").string()) && Contains("tensor a") &&
                               Contains("run past the end"));
}

// --- validate ------------------------------------------------------------------------------------

TEST_CASE("validate reports missing, mis-shaped and unexpected tensors", "[checkpoint]") {
  TempDir dir;
  write_safetensors(dir / "model.safetensors",
                    {{"x.weight", "F32", {2, 3}, Bytes(24)}, {"y.bias", "F32", {3}, Bytes(12)}});
  const Checkpoint ck = Checkpoint::open(dir.path());
  const std::string d = dir.path().string();
  const std::string file = (dir / "model.safetensors").string();

  SECTION("missing tensor") {
    REQUIRE_CHECKPOINT_ERROR(
        ck.validate({{"x.weight", {2, 3}}, {"y.bias", {3}}, {"lm_head.weight", {8, 2}}}),
        Contains("checkpoint " + d + " is missing tensor lm_head.weight (expected shape [8, 2])"));
  }
  SECTION("shape mismatch") {
    REQUIRE_CHECKPOINT_ERROR(ck.validate({{"x.weight", {3, 2}}, {"y.bias", {3}}}),
                             Contains("tensor x.weight in " + file +
                                      " has shape [2, 3] but the model config implies [3, 2]"));
  }
  SECTION("unexpected tensor") {
    REQUIRE_CHECKPOINT_ERROR(
        ck.validate({{"x.weight", {2, 3}}}),
        Contains("checkpoint " + d + " has unexpected tensor y.bias (not part of this model)"));
  }
  SECTION("missing is reported before shape and unexpected") {
    // y.bias is unexpected and x.weight mis-shaped, but the missing tensor comes first.
    REQUIRE_CHECKPOINT_ERROR(ck.validate({{"x.weight", {6}}, {"z", {1}}}),
                             Contains("missing tensor z"));
  }
  SECTION("shape is reported before unexpected") {
    REQUIRE_CHECKPOINT_ERROR(ck.validate({{"x.weight", {6}}}),
                             Contains("tensor x.weight in " + file + " has shape [2, 3]"));
  }
}

// --- sharded checkpoints -------------------------------------------------------------------------

TEST_CASE("broken sharded checkpoints are rejected", "[checkpoint]") {
  TempDir dir;
  const fs::path index = dir / "model.safetensors.index.json";
  write_two_shards(dir);

  SECTION("index names a missing shard file") {
    fs::remove(dir / kShard2);
    write_text(index, index_json({{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains(kShard2) && Contains(kLnF) && Contains("does not exist"));
  }
  SECTION("tensor mapped to the wrong file") {
    write_text(index, index_json({{kEmb, kShard1}, {kQkv, kShard2}, {kLnF, kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(
        Checkpoint::open(dir.path()),
        Contains("tensor " + kQkv + " is in file " + (dir / kShard1).string()) &&
            Contains("maps it to " + kShard2));
  }
  SECTION("tensor absent from the index") {
    write_text(index, index_json({{kEmb, kShard1}, {kLnF, kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(
        Checkpoint::open(dir.path()),
        Contains("tensor " + kQkv + " is in file " + (dir / kShard1).string()) &&
            Contains("not listed in the index"));
  }
  SECTION("index lists a tensor its shard lacks") {
    write_text(
        index,
        index_json(
            {{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}, {"lm_head.weight", kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains("maps tensor lm_head.weight to " + kShard2) &&
                                 Contains("has no such tensor") && Contains(index.string()));
  }
  SECTION("tensor present in two shards") {
    write_safetensors(dir / kShard2, {{kLnF, "BF16", {4}, Bytes(8)}, {kQkv, "F32", {2}, Bytes(8)}});
    write_text(index, index_json({{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(
        Checkpoint::open(dir.path()),
        Contains("tensor " + kQkv + " appears in both " + kShard1 + " and " + kShard2));
  }
  SECTION("bad index JSON") {
    write_text(index, R"({"weight_map": {")" + kEmb + R"(": )");
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains(index.string()) && Contains("not valid JSON"));
  }
  SECTION("index without a weight_map") {
    write_text(index, R"({"metadata": {}})");
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains(index.string()) && Contains("no \"weight_map\" object"));
  }
  SECTION("path traversal in the index") {
    write_text(index, index_json({{kEmb, "../" + kShard1}}));
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains("../" + kShard1) && Contains("tensor " + kEmb) &&
                                 Contains("not a plain file name") && Contains(index.string()));
  }
  SECTION("absolute path in the index") {
    write_text(index, index_json({{kEmb, (dir / kShard1).string()}}));
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains("not a plain file name") && Contains(index.string()));
  }
  SECTION("a corrupt shard names the shard") {
    write_raw(dir / kShard2, object({entry(kLnF, "BF16", {4}, 0, 8)}), Bytes(6));
    write_text(index, index_json({{kEmb, kShard1}, {kQkv, kShard1}, {kLnF, kShard2}}));
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains((dir / kShard2).string()) && Contains("tensor " + kLnF));
  }
}

// --- directories ---------------------------------------------------------------------------------

TEST_CASE("model directories without safetensors weights", "[checkpoint]") {
  TempDir dir;
  const std::string d = dir.path().string();

  SECTION("only pytorch_model.bin") {
    write_text(dir / "pytorch_model.bin", "not really a pickle");
    write_text(dir / "config.json", "{}");
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir.path()),
                             Contains(d + " holds only PyTorch .bin weights (pytorch_model.bin)") &&
                                 Contains("requires safetensors") &&
                                 Contains("safe_serialization=True"));
  }
  SECTION("empty directory") {
    REQUIRE_CHECKPOINT_ERROR(
        Checkpoint::open(dir.path()),
        Contains("no model.safetensors or model.safetensors.index.json in " + d));
  }
  SECTION("nonexistent directory") {
    const fs::path missing = dir / "no_such_model";
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(missing),
                             Contains("model directory " + missing.string() + " does not exist"));
  }
  SECTION("a file instead of a directory") {
    write_text(dir / "file", "x");
    REQUIRE_CHECKPOINT_ERROR(Checkpoint::open(dir / "file"), Contains("is not a directory"));
  }
}
