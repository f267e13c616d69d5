#!/usr/bin/env bash
# Installs the Debian packages that building and testing saker need. Idempotent: packages already
# present are not fetched again, and apt's lists are refreshed only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  nlohmann-json3-dev libboost-dev libboost-program-options-dev libpcre2-dev libspdlog-dev
  libssl-dev openssl
  libopenmpi-dev openmpi-bin
  catch2 libbenchmark-dev libvalijson-dev
  clang libclang-rt-dev llvm
  curl python3-venv wamerican iproute2
  slurm-wlm munge
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all build and test packages are installed"
fi

# The CUDA backend builds when the CUDA toolkit is present (/usr/local/cuda); it is optional.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found; the CUDA backend will be built"
else
  echo "setup: no CUDA toolkit; building the CPU backend only"
fi
