// Which vector instruction set the CPU kernels run. Every kernel has a portable path that follows
// the same arithmetic, in the same order, as the vector paths, so all of them agree bit for bit
// and tests can compare them on one machine (CpuBackend::force_isa).
#pragma once

#include <string_view>
#include <vector>

namespace saker::cpu {

enum class Isa { kPortable, kAvx2, kAvx512 };

// The best this processor runs: AVX-512 (F, BW, VL), else AVX2 + FMA + F16C, else portable.
// SAKER_CPU_ISA=portable|avx2|avx512 caps it (benchmarks compare the paths on one machine).
Isa detect_isa();

// Every ISA this processor runs, portable first.
std::vector<Isa> supported_isas();

std::string_view isa_name(Isa isa);

// Whether the processor has AVX512_BF16 (vdpbf16ps: the kPanels16Pairs kernels, cpu/linear.h).
bool has_avx512_bf16();
// Whether the processor has AVX512_VNNI (vpdpbusd: the kPanels16Quads kernels, `--dtype w8a8`).
bool has_avx512_vnni();

}  // namespace saker::cpu
