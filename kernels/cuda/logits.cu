// Logit summaries on the device (kernels/logit_summary.h): one block per row finds the argmax,
// the log-sum-exp and the kSummaryTopK best (logit, id) pairs, so only a summary per sequence is
// copied to the host. The top-K is a radix select: three histogram passes find the K-th largest
// key exactly, then one ordered pass collects the keys above it and, of the keys equal to it, the
// lowest ids (the host's tie rule), and a final rank sort orders the K candidates.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/logit_summary.h"

namespace saker::cuda {
namespace {

constexpr int kSummaryThreads = 1024;
constexpr int kRadixBits = 11;
constexpr int kBins = 1 << kRadixBits;
constexpr int kBinsPerThread = kBins / kSummaryThreads;
static_assert(kBinsPerThread == 2, "the bin search below gives each thread two bins");
constexpr std::uint32_t kNoBin = 0xffffffffu;

// Row elements a thread takes per loop step: loads in flight before they are used.
constexpr int kUnroll = 4;

// v[u] = row[base + u * kSummaryThreads + threadIdx.x], or 0 past the row's end.
__device__ __forceinline__ void load_tiles(const float* row, std::int64_t vocab, std::int64_t base,
                                           float (&v)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const std::int64_t i = base + u * kSummaryThreads + threadIdx.x;
    v[u] = i < vocab ? row[i] : 0.0f;
  }
}

// A key whose unsigned order is the floats' order; -0 and +0 share one key, as they compare
// equal on the host (ties then go to the lower id).
__device__ __forceinline__ std::uint32_t order_key(float v) {
  const std::uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum over the block in thread order; *total gets the sum. Every thread must
// call it.
__device__ int block_exclusive_scan(int v, int* total) {
  __shared__ int warp_tot[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  __syncthreads();  // a previous call's readers are done with warp_tot
  if (lane == 31) warp_tot[warp] = inc;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < kSummaryThreads / 32; ++w) {
    if (w < warp) before += warp_tot[w];
    all += warp_tot[w];
  }
  *total = all;
  return before + inc - v;
}

// Adds one to hist[bin] for every lane whose bin is not kNoBin; lanes sharing a bin add once
// (logits cluster in a few bins, where plain shared atomics would serialise).
__device__ __forceinline__ void histogram_add(int* hist, std::uint32_t bin) {
  const unsigned peers = __match_any_sync(0xffffffffu, bin);
  const int leader = __ffs(peers) - 1;
  if (bin != kNoBin && static_cast<int>(threadIdx.x % 32) == leader)
    atomicAdd(&hist[bin], __popc(peers));
}

// With hist holding the counts of one radix digit, finds the digit of the `*remaining`-th
// largest key (counting from the top) and lowers *remaining by the keys in higher digits.
__device__ std::uint32_t select_digit(const int* hist, int* remaining) {
  __shared__ std::uint32_t digit;
  __shared__ int left;
  // Thread t holds digits hi = kBins-1-2t and hi-1: thread order is descending digit order.
  const int hi = kBins - 1 - kBinsPerThread * static_cast<int>(threadIdx.x);
  const int c_hi = hist[hi], c_lo = hist[hi - 1];
  int total = 0;
  const int above = block_exclusive_scan(c_hi + c_lo, &total);
  const int want = *remaining;
  if (above < want && want <= above + c_hi) {
    digit = static_cast<std::uint32_t>(hi);
    left = want - above;
  } else if (above + c_hi < want && want <= above + c_hi + c_lo) {
    digit = static_cast<std::uint32_t>(hi - 1);
    left = want - above - c_hi;
  }
  __syncthreads();
  *remaining = left;
  return digit;
}

__global__ void __launch_bounds__(kSummaryThreads)
    logit_summary_kernel(const float* logits, std::int64_t vocab, LogitSummary* out) {
  __shared__ int hist[kBins];
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  __shared__ std::uint32_t cand_key[kSummaryTopK];
  __shared__ std::int32_t cand_id[kSummaryTopK];
  const float* row = logits + blockIdx.x * vocab;
  LogitSummary& s = out[blockIdx.x];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int need = static_cast<int>(vocab < kSummaryTopK ? vocab : kSummaryTopK);
  pdl_enter();

  // Pass 1: argmax (first index on ties) and the histogram of the keys' top digit.
  for (int b = tid; b < kBins; b += kSummaryThreads) hist[b] = 0;
  __syncthreads();
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (std::int64_t base = 0; base < vocab; base += kUnroll * kSummaryThreads) {
    float v[kUnroll];
    load_tiles(row, vocab, base, v);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t i = base + u * kSummaryThreads + tid;
      std::uint32_t bin = kNoBin;
      if (i < vocab) {
        if (v[u] > bv || (v[u] == bv && i < bi)) bv = v[u], bi = static_cast<int>(i);
        bin = order_key(v[u]) >> (32 - kRadixBits);
      }
      histogram_add(hist, bin);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
  __syncthreads();
  bv = best_v[0], bi = best_i[0];
  for (int w = 1; w < kSummaryThreads / 32; ++w)
    if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) bv = best_v[w], bi = best_i[w];
  const float max = bv;

  int remaining = need;
  std::uint32_t prefix = select_digit(hist, &remaining) << (32 - kRadixBits);
  std::uint32_t prefix_mask = ~0u << (32 - kRadixBits);

  // Pass 2: the exponentials' sum (as the host: float difference, double exp and sum) and the
  // second digit; pass 3: the last digit.
  double sum = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const int shift = pass == 0 ? 32 - 2 * kRadixBits : 0;
    const std::uint32_t digit_mask = pass == 0 ? kBins - 1 : (1u << (32 - 2 * kRadixBits)) - 1;
    __syncthreads();  // select_digit's readers are done with hist
    for (int b = tid; b < kBins; b += kSummaryThreads) hist[b] = 0;
    __syncthreads();
    for (std::int64_t base = 0; base < vocab; base += kUnroll * kSummaryThreads) {
      float v[kUnroll];
      load_tiles(row, vocab, base, v);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t i = base + u * kSummaryThreads + tid;
        std::uint32_t bin = kNoBin;
        if (i < vocab) {
          if (pass == 0) sum += exp(static_cast<double>(__fsub_rn(v[u], max)));
          const std::uint32_t k = order_key(v[u]);
          if ((k & prefix_mask) == prefix) bin = (k >> shift) & digit_mask;
        }
        histogram_add(hist, bin);
      }
    }
    __syncthreads();
    prefix |= select_digit(hist, &remaining) << shift;
    prefix_mask |= digit_mask << shift;
  }
  sum = block_sum(sum);

  // Pass 4, in id order: every key above the threshold, and the first `remaining` equal to it.
  const int above_total = need - remaining;
  int above_seen = 0, equal_seen = 0;
  for (std::int64_t base = 0; base < vocab && (above_seen < above_total || equal_seen < remaining);
       base += kUnroll * kSummaryThreads) {
    float v[kUnroll];
    load_tiles(row, vocab, base, v);
    std::uint32_t k[kUnroll];
    bool any = false;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      k[u] = base + u * kSummaryThreads + tid < vocab ? order_key(v[u]) : 0;
      any = any || k[u] >= prefix;  // key 0 is below every real key (it would be a NaN)
    }
    if (!__syncthreads_or(any)) continue;  // most of the row: nothing to collect here
    for (int u = 0; u < kUnroll; ++u) {    // tile by tile, in id order
      const std::int64_t i = base + u * kSummaryThreads + tid;
      const bool above = i < vocab && k[u] > prefix, equal = i < vocab && k[u] == prefix;
      int tile_total = 0;
      // Both counts in one scan: a tile has at most kSummaryThreads of either.
      const int pos = block_exclusive_scan((above ? 1 : 0) | (equal ? 1 << 16 : 0), &tile_total);
      if (above) {
        const int slot = above_seen + (pos & 0xffff);
        cand_key[slot] = k[u], cand_id[slot] = static_cast<std::int32_t>(i);
      } else if (equal && equal_seen + (pos >> 16) < remaining) {
        const int slot = above_total + equal_seen + (pos >> 16);
        cand_key[slot] = k[u], cand_id[slot] = static_cast<std::int32_t>(i);
      }
      above_seen += tile_total & 0xffff;
      equal_seen += tile_total >> 16;
    }
  }
  __syncthreads();

  // Each candidate's rank among the others: better key, or the same key and a lower id.
  if (tid < need) {
    const std::uint32_t k = cand_key[tid];
    const std::int32_t id = cand_id[tid];
    int rank = 0;
    for (int j = 0; j < need; ++j) rank += cand_key[j] > k || (cand_key[j] == k && cand_id[j] < id);
    s.top_ids[rank] = id;
    s.top_logits[rank] = row[id];
  }
  if (tid == 0) {
    s.argmax = bi;
    s.max = max;
    s.log_z = static_cast<double>(max) + log(sum);
    s.count = need;
    s.pad_ = 0;
  }
}

}  // namespace

void launch_logit_summary(const float* logits, std::int64_t rows, std::int64_t vocab,
                          LogitSummary* out, const Enqueue& q) {
  if (rows == 0 || vocab == 0) return;
  enqueue(q, static_cast<unsigned>(rows), kSummaryThreads, 0, logit_summary_kernel,
          "logit_summary_kernel", logits, vocab, out);
}

}  // namespace saker::cuda
