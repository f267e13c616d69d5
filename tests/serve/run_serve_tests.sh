#!/usr/bin/env bash
# Runs the serving end-to-end tests (tests/serve/test_serve.py) with the official `openai` and
# `text-generation` clients from the test venv (scripts/setup_test_venv.sh).
#
#   tests/serve/run_serve_tests.sh SAKER_BIN [MPIRUN] [-- extra test_serve.py options]
#
# SERVE_TEST_SCRIPT=test_hardening.py runs the hostile-client tests the same way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
saker=${1:?usage: run_serve_tests.sh SAKER_BIN [MPIRUN] [-- options]}
shift
mpirun=mpirun
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  mpirun=$1
  shift
fi
[ "${1:-}" = "--" ] && shift

command -v curl >/dev/null 2>&1 || { echo "run_serve_tests: curl is needed (scripts/setup.sh installs it)" >&2; exit 1; }
python=$("$root/scripts/setup_test_venv.sh")
exec "$python" -u "$here/${SERVE_TEST_SCRIPT:-test_serve.py}" --saker "$saker" --fixtures "$root/tests/fixtures" --mpirun "$mpirun" "$@"
