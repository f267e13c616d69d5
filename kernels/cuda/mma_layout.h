// Where the skinny tensor-core product (kernels/cuda/mma_gemm.cu) puts each element, as constexpr
// functions that the kernel uses and a host test (tests/test_mma_layout.cpp) checks against the
// fragment layout of mma.sync.m16n8k16 in the PTX ISA ("Matrix Fragments for mma.m16n8k16 with
// floating point type"), so the index arithmetic is verified without a GPU.
//
// A dot product does not care in which order k is visited, only that A and B agree. So each lane
// loads 16 contiguous elements (two 16-byte loads) of each of its rows and tokens per chunk of 64,
// and feeds them to four mma steps: lane (g, t) = (lane / 4, lane % 4) holds chunk elements
// [16t, 16t + 16); at step s its register half h of k-half kh (the fragment's logical k
// 2t + h + 8 kh) is the element 16t + 4s + 2 kh + h. Rows read 128 contiguous bytes per four
// lanes, and no shared memory or shuffle is needed.
#pragma once

#if defined(__CUDACC__)
#define SAKER_HD __host__ __device__
#else
#define SAKER_HD
#endif

namespace saker::cuda::mma {

constexpr int kChunk = 64;      // k elements per chunk (four m16n8k16 steps)
constexpr int kSteps = 4;       // mma steps per chunk
constexpr int kLaneElems = 16;  // contiguous elements a lane loads per row (or token) and chunk
constexpr int kTileRows = 16;   // m of the mma: weight rows
constexpr int kTileTokens = 8;  // n of the mma: tokens
constexpr int kMmaWarps = 4;    // warps per block, interleaved over the chunks of K

SAKER_HD constexpr int group(int lane) {
  return lane >> 2;
}
SAKER_HD constexpr int thread_in_group(int lane) {
  return lane & 3;
}

// The chunk element a lane's register half holds at `step`: kh is the fragment's k-half (A
// registers 2 and 3, B register 1), h the 16-bit half of the register (low = 0).
SAKER_HD constexpr int chunk_element(int lane, int step, int kh, int h) {
  return kLaneElems * thread_in_group(lane) + 4 * step + 2 * kh + h;
}
// The same element as the 32-bit word of the lane's 16 elements (8 words, two uint4 loads).
SAKER_HD constexpr int lane_word(int step, int kh) {
  return 2 * step + kh;
}

// PTX's fragment layout, for the test: (row, k) of A register `reg` (0..3) half h, (k, token) of
// B register `reg` (0..1) half h, and (row, token) of accumulator element i (0..3).
constexpr int a_row(int lane, int reg) {
  return group(lane) + 8 * (reg & 1);
}
constexpr int a_k(int lane, int reg, int h) {
  return 2 * thread_in_group(lane) + h + 8 * (reg >> 1);
}
constexpr int b_k(int lane, int reg, int h) {
  return 2 * thread_in_group(lane) + h + 8 * reg;
}
constexpr int b_token(int lane) {
  return group(lane);
}

// Which of its rows (0: group, 1: group + 8) an A register comes from, and its k-half: registers
// 0 and 1 are k-half 0 of the two rows, 2 and 3 k-half 1.
SAKER_HD constexpr int a_reg_row(int reg) {
  return reg & 1;
}
SAKER_HD constexpr int a_reg_khalf(int reg) {
  return reg >> 1;
}

// Accumulator element i of a lane: its row in the 16-row tile and its token in the 8-token tile.
SAKER_HD constexpr int c_row(int lane, int i) {
  return group(lane) + 8 * (i >> 1);
}
SAKER_HD constexpr int c_token(int lane, int i) {
  return 2 * thread_in_group(lane) + (i & 1);
}

}  // namespace saker::cuda::mma

#undef SAKER_HD
