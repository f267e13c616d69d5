#include "kernels/cpu/isa.h"

#include <cstdlib>
#include <string>

namespace saker::cpu {
namespace {

Isa hardware_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kPortable;
}

}  // namespace

Isa detect_isa() {
  const Isa hw = hardware_isa();
  if (const char* cap = std::getenv("SAKER_CPU_ISA")) {
    const std::string c = cap;
    Isa want = hw;
    if (c == "portable") want = Isa::kPortable;
    if (c == "avx2") want = Isa::kAvx2;
    if (c == "avx512") want = Isa::kAvx512;
    return static_cast<int>(want) < static_cast<int>(hw) ? want : hw;
  }
  return hw;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out{Isa::kPortable};
  const Isa hw = hardware_isa();
  if (hw >= Isa::kAvx2) out.push_back(Isa::kAvx2);
  if (hw >= Isa::kAvx512) out.push_back(Isa::kAvx512);
  return out;
}

bool has_avx512_bf16() {
  __builtin_cpu_init();
  return hardware_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
}

bool has_avx512_vnni() {
  __builtin_cpu_init();
  return hardware_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni");
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

}  // namespace saker::cpu
