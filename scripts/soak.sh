#!/usr/bin/env bash
# A soak run of a 2-rank server (tests/serve/soak.py): a mix of streams, cancels, disconnects,
# bad inputs, 429 bursts and idle connections for MINUTES, then checks for leaks and changed
# answers. CI runs 2 minutes of it (CTest serve_soak); docs/security.md records a 30-minute run.
#
#   scripts/soak.sh [MINUTES] [BUILD_DIR]      (default: 30 minutes, build)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
build=${2:-build}
python=$(scripts/setup_test_venv.sh)
exec "$python" -u tests/serve/soak.py --saker "$build/saker" --fixtures tests/fixtures --minutes "$minutes"
