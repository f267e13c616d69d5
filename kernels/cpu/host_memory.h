// Host memory for what the CPU kernels stream: weights, the KV cache, bandwidth probes.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace saker::cpu {

struct FreeHostMemory {
  void operator()(void* p) const { std::free(p); }
};
using HostMemory = std::unique_ptr<std::byte, FreeHostMemory>;

// `bytes` (at least 1), 64-byte aligned; from 2 MiB up, 2 MiB aligned and advised onto 2 MiB
// pages where the system allows (madvise mode): a buffer streamed whole then takes one TLB miss
// per 2 MiB instead of one per 4 KiB, and the prefetchers do not stop every 4 KiB. Uninitialised;
// throws std::bad_alloc.
HostMemory allocate_host_memory(std::size_t bytes);

// Whether such buffers can get 2 MiB pages: transparent huge pages in mode always or madvise.
bool huge_pages_available();

}  // namespace saker::cpu
