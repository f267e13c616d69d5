// The two limits the CPU kernels are held to, measured on this machine with the pool's threads:
// memory read bandwidth (decode streams every weight once a step) and fused multiply-add peak
// (prefill is arithmetic-bound).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/cpu/thread_pool.h"

namespace saker::cpu {

// Best of `repeats` full passes over a `bytes`-byte buffer, in bytes per second.
double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes = std::size_t{1} << 30,
                              int repeats = 5);

// One pass of the pool's threads over [p, p + n) floats (p 64-byte aligned), each summing its
// own slice: the reference read that benchmarks interleave with the kernel they measure.
float read_pass(ThreadPool& pool, const float* p, std::int64_t n);

// One pass over several buffers in a single parallel loop: each thread reads its own share of
// every buffer in turn, so the threads meet once, not once per buffer.
float read_pass(ThreadPool& pool, std::span<const std::span<const float>> buffers);

// Best of `repeats` runs of independent FMA chains on every pool thread, in FLOP/s (an FMA is 2),
// with the widest vectors the processor has (cpu/isa.h).
double measure_fma_peak(ThreadPool& pool, int repeats = 5);

// The same with vdpbf16ps chains (2 multiply-adds per fp32 lane): the limit of the bf16
// dot-product kernels (`--cpu-matmul bf16`); 0 without AVX512_BF16.
double measure_bf16_dot_peak(ThreadPool& pool, int repeats = 5);
// And with vpdpbusd chains (4 multiply-adds per 32-bit lane): the w8a8 kernels' limit; 0 without
// AVX512_VNNI.
double measure_int8_dot_peak(ThreadPool& pool, int repeats = 5);

// One run of those chains worth about `flops` in all, shared by the pool's threads; returns the
// FLOPs done (the reference run that benchmarks interleave with an arithmetic-bound kernel).
double fma_pass(ThreadPool& pool, double flops);

}  // namespace saker::cpu
