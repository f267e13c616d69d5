// Hugging Face safetensors checkpoints, memory-mapped and validated.
//
// A model directory holds either `model.safetensors` or `model.safetensors.index.json` plus the
// shard files it names. Tensors stay in their stored precision and are read in place from the
// mapping: nothing is copied at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/dtype.h"

namespace saker {

// Every problem with a checkpoint: the message names the file and, where there is one, the tensor.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;  // points into the file mapping; valid while the file lives
  std::filesystem::path file;

  std::int64_t numel() const;
};

// One read-only mapping of a file (RAII: unmapped on destruction).
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws CheckpointError
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }
  // Drops the pages read so far from this process (they stay in the page cache, and are read
  // again on the next access), so that weights copied elsewhere are not counted twice in RSS.
  void release_resident() const;

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// One .safetensors file: header parsed and every entry validated against the file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws CheckpointError
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return file_->path(); }
  const MappedFile& file() const { return *file_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
};

// The shape a model expects of one tensor.
struct ExpectedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
};

class Checkpoint {
 public:
  // Opens a model directory (single file or sharded with an index). A directory holding only
  // pytorch_model*.bin files gets an error saying safetensors is required.
  static Checkpoint open(const std::filesystem::path& model_dir);

  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& get(std::string_view name) const;  // throws CheckpointError naming the tensor
  std::vector<std::string> names() const;
  std::size_t total_bytes() const;  // sum of all tensors' data bytes
  // The precision most of the data bytes are stored in (the weights'); none when empty.
  std::optional<DType> weight_dtype() const;
  const std::filesystem::path& dir() const { return dir_; }

  // Checks the tensor set against what the model expects: every expected tensor present with
  // that exact shape, and no tensor the model does not know. The first problem found throws.
  void validate(const std::vector<ExpectedTensor>& expected) const;

  // MappedFile::release_resident for every file: call once the backend has its own copies.
  void release_resident() const;

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

}  // namespace saker
