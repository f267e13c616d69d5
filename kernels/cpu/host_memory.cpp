#include "kernels/cpu/host_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <fstream>
#include <new>
#include <string>

namespace saker::cpu {

HostMemory allocate_host_memory(std::size_t bytes) {
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  const std::size_t align = bytes >= kHuge ? kHuge : 64;
  const std::size_t size = std::max<std::size_t>(1, (bytes + align - 1) / align) * align;
  HostMemory mem(static_cast<std::byte*>(std::aligned_alloc(align, size)));
  if (!mem) throw std::bad_alloc();
  if (align == kHuge) madvise(mem.get(), size, MADV_HUGEPAGE);
  return mem;
}

bool huge_pages_available() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(f, mode);
  return mode.find("[always]") != std::string::npos || mode.find("[madvise]") != std::string::npos;
}

}  // namespace saker::cpu
