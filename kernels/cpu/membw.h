// Measures this machine's memory read bandwidth the way the decode kernels read weights: every
// pool thread streams its own slice of a buffer much larger than the caches.
#pragma once

#include <cstddef>

#include "kernels/cpu/thread_pool.h"

namespace saker::cpu {

// Best of `repeats` full passes over a `bytes`-byte buffer, in bytes per second.
double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes = std::size_t{1} << 30,
                              int repeats = 5);

}  // namespace saker::cpu
