# Sourced by the GPU-run scripts that take gpu_pack.sh's output (gpu40b.sh, gpu_multi.sh): parses
# `--prebuilt DIR [--out DIR]` (the caller sets `out` to its default first), then sets `root`,
# `bin` and `out` (absolute, created) and LD_LIBRARY_PATH (the pack's libraries, then CUDA's and
# those of a Python environment's nvidia wheels, NCCL among them). Runs from the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
root=$(pwd)
prebuilt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 --prebuilt DIR [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$prebuilt" ] || { echo "usage: $0 --prebuilt DIR [--out DIR]" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$prebuilt/bin
libdirs=("$prebuilt/lib")
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libdirs+=("$d"); done
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do [ -d "$d" ] && libdirs+=("$d"); done
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
