#include "engine/model/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

namespace saker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The reference safetensors reader refuses larger headers; real ones are a few hundred KB, so a
// bigger length means a corrupt file or not safetensors at all.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw CheckpointError(file.string() + ": " + what);
}

std::string errno_text(int err) {
  return std::strerror(err);
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_str(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// Closes the descriptor on every way out of MappedFile's constructor; the mapping outlives it.
struct FdGuard {
  int fd;
  ~FdGuard() { ::close(fd); }
};

// A JSON value as a non-negative integer. nlohmann stores non-negative literals as unsigned;
// "-0" parses as a signed zero, which is still fine.
std::optional<std::uint64_t> as_index(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() == 0) return 0;
  return std::nullopt;
}

// Where one tensor's bytes sit in the data area, for the density check.
struct Extent {
  std::uint64_t begin;
  std::uint64_t end;
  const std::string* name;
};

// Parses and checks one header entry against the data area (size only; density is checked once
// all entries are known). `name` must outlive `extents`.
TensorInfo parse_entry(const fs::path& path, const std::string& name, const json& entry,
                       std::span<const std::byte> data, std::vector<Extent>& extents) {
  const std::string t = "tensor " + name + ": ";
  if (!entry.is_object()) fail(path, t + "header entry is not a JSON object");

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) fail(path, t + "missing \"dtype\"");
  if (!dtype_it->is_string()) fail(path, t + "\"dtype\" is not a string");
  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) fail(path, t + "missing \"shape\"");
  if (!shape_it->is_array()) fail(path, t + "\"shape\" is not an array");
  const auto offs_it = entry.find("data_offsets");
  if (offs_it == entry.end()) fail(path, t + "missing \"data_offsets\"");
  if (!offs_it->is_array() || offs_it->size() != 2)
    fail(path, t + "\"data_offsets\" is not an array of two integers");

  TensorInfo info;
  info.name = name;
  info.file = path;
  for (const json& d : *shape_it) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<std::int64_t>() < 0)
      fail(path, t + "shape has negative dimension " + std::to_string(d.get<std::int64_t>()));
    const auto dim = as_index(d);
    if (!dim) fail(path, t + "\"shape\" holds a non-integer " + d.dump());
    if (*dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail(path, t + "shape dimension " + std::to_string(*dim) + " is too large");
    info.shape.push_back(static_cast<std::int64_t>(*dim));
  }

  const auto begin = as_index((*offs_it)[0]);
  const auto end = as_index((*offs_it)[1]);
  if (!begin || !end) fail(path, t + "\"data_offsets\" must be two non-negative integers");

  const std::string& dtype_name_str = dtype_it->get_ref<const std::string&>();
  const auto dtype = dtype_from_name(dtype_name_str);
  if (!dtype)
    fail(path, "unsupported dtype " + dtype_name_str + " for tensor " + name +
                   " (saker reads F32, F16 and BF16)");
  info.dtype = *dtype;

  if (*begin > *end)
    fail(path, t + "data_offsets " + range_str(*begin, *end) + " begin after they end");
  if (*end > data.size())
    fail(path, t + "data_offsets " + range_str(*begin, *end) + " run past the end of the data (" +
                   std::to_string(data.size()) + " bytes)");

  // Checked products: a hostile shape must not wrap around to a size that happens to match.
  // Any zero dimension makes the tensor empty however large the others are.
  const bool empty = std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end();
  std::uint64_t nbytes = 0;
  if (!empty) {
    std::uint64_t numel = 1;
    for (std::int64_t d : info.shape) {
      if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(d), &numel) ||
          numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(path, t + "shape " + shape_str(info.shape) + " has more elements than fit in 64 bits");
    }
    if (__builtin_mul_overflow(numel, dtype_size(*dtype), &nbytes))
      fail(path, t + "shape " + shape_str(info.shape) + " × " + dtype_name_str +
                     " needs more bytes than fit in 64 bits");
  }
  if (*end - *begin != nbytes)
    fail(path, t + "shape " + shape_str(info.shape) + " × " + dtype_name_str + " needs " +
                   std::to_string(nbytes) + " bytes but data_offsets span " +
                   std::to_string(*end - *begin));

  info.data = data.subspan(*begin, *end - *begin);
  extents.push_back({*begin, *end, &name});
  return info;
}

// safetensors files are dense: tensors tile the data area exactly, with no overlap and no gap.
// Anything else means a corrupt or hand-edited file, so it is rejected rather than guessed at.
void check_dense(const fs::path& path, std::vector<Extent> extents, std::uint64_t data_size) {
  // Sorting by end as well puts empty tensors ahead of one starting at the same offset.
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
    return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
  });
  std::uint64_t cursor = 0;
  const Extent* prev = nullptr;
  for (const Extent& e : extents) {
    if (e.begin < cursor)
      fail(path, "tensors " + *prev->name + " and " + *e.name + " overlap (" + *prev->name +
                     " spans " + range_str(prev->begin, prev->end) + ", " + *e.name + " spans " +
                     range_str(e.begin, e.end) + ")");
    if (e.begin > cursor)
      fail(path, "gap of " + std::to_string(e.begin - cursor) + " bytes before tensor " + *e.name +
                     " (data_offsets " + range_str(e.begin, e.end) + ")");
    cursor = e.end;
    prev = &e;
  }
  if (cursor < data_size) {
    const std::string after = prev ? "after the last tensor " + *prev->name : "with no tensors";
    fail(path, std::to_string(data_size - cursor) + " trailing bytes " + after + " (data area is " +
                   std::to_string(data_size) + " bytes)");
  }
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open: " + errno_text(errno));
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) fail(path, "cannot read: " + errno_text(errno));
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    fail(path, std::string("not valid JSON: ") + e.what());
  }
}

// A shard name must name a file in the model directory itself: anything with a separator or a
// dot-dir could make a downloaded index read files elsewhere.
bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." &&
         s.find_first_of(std::string_view("/\\\0", 3)) == std::string::npos;
}

// Opens every shard the index names and cross-checks the index against the shards' headers.
std::vector<std::unique_ptr<SafetensorsFile>> open_sharded(const fs::path& dir,
                                                           const fs::path& index) {
  const json root = read_json_file(index);
  if (!root.is_object()) fail(index, "not a JSON object");
  const auto wm_it = root.find("weight_map");
  if (wm_it == root.end() || !wm_it->is_object()) fail(index, "has no \"weight_map\" object");
  if (wm_it->empty()) fail(index, "\"weight_map\" is empty");

  std::map<std::string, std::string> weight_map;       // tensor → shard name
  std::map<std::string, std::string> first_tensor_of;  // shard name → a tensor, for messages
  for (auto it = wm_it->begin(); it != wm_it->end(); ++it) {
    if (!it->is_string())
      fail(index, "weight_map entry for tensor " + it.key() + " is not a string");
    const std::string& shard = it->get_ref<const std::string&>();
    if (!is_plain_file_name(shard))
      fail(index, "tensor " + it.key() + " maps to \"" + shard +
                      "\", which is not a plain file name in the model directory");
    weight_map.emplace(it.key(), shard);
    first_tensor_of.emplace(shard, it.key());
  }

  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> by_shard;
  for (const auto& [shard, tensor] : first_tensor_of) {
    const fs::path p = dir / shard;
    std::error_code ec;
    if (!fs::exists(p, ec))
      fail(index,
           "shard " + shard + " (holding tensor " + tensor + ") does not exist in " + dir.string());
    files.push_back(std::make_unique<SafetensorsFile>(p));
    by_shard.emplace(shard, files.back().get());
  }

  std::map<std::string_view, const std::string*> seen;  // tensor → the shard it was first found in
  for (const auto& [shard, file] : by_shard) {
    for (const auto& [name, info] : file->tensors()) {
      const auto [prev, inserted] = seen.emplace(name, &shard);
      if (!inserted)
        fail(index, "tensor " + name + " appears in both " + *prev->second + " and " + shard);
      const auto wm = weight_map.find(name);
      if (wm == weight_map.end())
        throw CheckpointError("tensor " + name + " is in file " + file->path().string() +
                              " but not listed in the index " + index.string());
      if (wm->second != shard)
        throw CheckpointError("tensor " + name + " is in file " + file->path().string() +
                              " but the index " + index.string() + " maps it to " + wm->second);
    }
  }
  for (const auto& [name, shard] : weight_map) {
    if (!by_shard.at(shard)->tensors().contains(name))
      fail(index,
           "maps tensor " + name + " to " + shard + ", but " + shard + " has no such tensor");
  }
  return files;
}

// Names of .bin files in dir, sorted, to tell a PyTorch-only download from an empty directory.
std::vector<std::string> bin_files(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code ec2;
    if (e.path().extension() == ".bin" && e.is_regular_file(ec2))
      out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;  // cannot overflow: SafetensorsFile checked it
  return n;
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  const FdGuard guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  if (st.st_size == 0) fail(path, "file is empty");  // mmap of length 0 fails with EINVAL anyway
  const auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED)
    fail(path, "cannot mmap " + std::to_string(size) + " bytes: " + errno_text(errno));
  data_ = static_cast<const std::byte*>(p);
  size_ = size;
}

void MappedFile::release_resident() const {
  if (data_) ::madvise(const_cast<std::byte*>(data_), size_, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : file_(std::make_unique<MappedFile>(path)) {
  const std::span<const std::byte> bytes = file_->bytes();
  const std::uint64_t size = bytes.size();
  if (size < 8)
    fail(path,
         "truncated: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");

  std::uint64_t n = 0;  // little-endian whatever the host order
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(bytes[i]);
  const std::string size_note = " (size " + std::to_string(size) + ")";
  if (n == 0) fail(path, "header length is 0; not a safetensors file?");
  if (n > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(n) + " is absurdly large (limit " +
                   std::to_string(kMaxHeaderBytes) + " bytes; file size " + std::to_string(size) +
                   "); not a safetensors file?");
  if (n > size - 8)
    fail(path, "header length " + std::to_string(n) + " runs past the end of the file" + size_note);

  const auto* text = reinterpret_cast<const char*>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(text, text + n);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object())
    fail(path, std::string("header is not a JSON object (it is ") + header.type_name() + ")");

  const std::span<const std::byte> data = bytes.subspan(8 + n);
  std::vector<Extent> extents;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      // Free-form provenance (e.g. {"format": "pt"}); the format requires string values.
      const json& m = it.value();
      if (!m.is_object() ||
          !std::all_of(m.begin(), m.end(), [](const json& v) { return v.is_string(); }))
        fail(path, "\"__metadata__\" is not an object of strings");
      continue;
    }
    // The map key is the stable name the density check points at (JSON keys are unique).
    const auto pos = tensors_.emplace(it.key(), TensorInfo{}).first;
    pos->second = parse_entry(path, pos->first, it.value(), data, extents);
  }
  check_dense(path, std::move(extents), data.size());
}

Checkpoint Checkpoint::open(const fs::path& model_dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(model_dir, ec);
  if (!fs::exists(st))
    throw CheckpointError("model directory " + model_dir.string() + " does not exist");
  if (!fs::is_directory(st))
    throw CheckpointError("model directory " + model_dir.string() + " is not a directory");

  Checkpoint ckpt;
  ckpt.dir_ = model_dir;
  const fs::path index = model_dir / kIndexName;
  const fs::path single = model_dir / kSingleName;
  if (fs::exists(index, ec)) {
    ckpt.files_ = open_sharded(model_dir, index);
  } else if (fs::exists(single, ec)) {
    ckpt.files_.push_back(std::make_unique<SafetensorsFile>(single));
  } else {
    const std::vector<std::string> bins = bin_files(model_dir);
    if (!bins.empty())
      throw CheckpointError(
          model_dir.string() + " holds only PyTorch .bin weights (" + bins.front() +
          (bins.size() > 1 ? " and " + std::to_string(bins.size() - 1) + " more" : "") +
          "); saker requires safetensors: convert with transformers, e.g. "
          "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, "
          "safe_serialization=True)");
    throw CheckpointError("no " + std::string(kSingleName) + " or " + kIndexName + " in " +
                          model_dir.string());
  }

  // open_sharded already rejected a tensor present in two shards, so names are unique here.
  for (const auto& file : ckpt.files_)
    for (const auto& [name, info] : file->tensors()) ckpt.by_name_.emplace(name, &info);
  return ckpt;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw CheckpointError("tensor " + std::string(name) + " not found in checkpoint " +
                        dir_.string());
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, info] : by_name_) out.push_back(name);
  return out;
}

std::size_t Checkpoint::total_bytes() const {
  std::size_t total = 0;
  for (const auto& [name, info] : by_name_) total += info->data.size();
  return total;
}

std::optional<DType> Checkpoint::weight_dtype() const {
  std::map<DType, std::size_t> bytes;
  for (const auto& [name, info] : by_name_) bytes[info->dtype] += info->data.size();
  if (bytes.empty()) return std::nullopt;
  return std::max_element(bytes.begin(), bytes.end(),
                          [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

void Checkpoint::validate(const std::vector<ExpectedTensor>& expected) const {
  // Fixed order (missing, then shape, then unexpected) so the same checkpoint always reports the
  // same first problem.
  for (const ExpectedTensor& e : expected) {
    if (!find(e.name))
      throw CheckpointError("checkpoint " + dir_.string() + " is missing tensor " + e.name +
                            " (expected shape " + shape_str(e.shape) + ")");
  }
  for (const ExpectedTensor& e : expected) {
    const TensorInfo& t = *find(e.name);
    if (t.shape != e.shape)
      throw CheckpointError("tensor " + e.name + " in " + t.file.string() + " has shape " +
                            shape_str(t.shape) + " but the model config implies " +
                            shape_str(e.shape));
  }
  std::set<std::string_view> known;
  for (const ExpectedTensor& e : expected) known.insert(e.name);
  for (const auto& [name, info] : by_name_) {
    if (!known.contains(name))
      throw CheckpointError("checkpoint " + dir_.string() + " has unexpected tensor " + name +
                            " (not part of this model)");
  }
}

void Checkpoint::release_resident() const {
  for (const auto& f : files_) f->file().release_resident();
}

}  // namespace saker
