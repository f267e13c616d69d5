#!/usr/bin/env bash
# Creates the Python virtual environment with the client libraries the serving tests drive saker
# with (the official `openai` SDK and Hugging Face's `text-generation` client) and prints the path
# of its python on stdout; everything else goes to stderr.
#
#   python=$(scripts/setup_test_venv.sh)
#
# Location: ${SAKER_VENV:-$HOME/.cache/saker-test-venv}. Idempotent and quick once done: a venv
# built from the same pins is reused as is; other pins (or a broken venv) are rebuilt. Needs
# python3 with the venv module (Debian/Ubuntu: apt-get install python3-venv, in scripts/setup.sh)
# and access to a Python package index (or PIP_FIND_LINKS / PIP_INDEX_URL pointing at one).
set -euo pipefail

venv=${SAKER_VENV:-$HOME/.cache/saker-test-venv}
pins=(openai==3.57.0 text-generation==0.7.0 jsonschema==4.23.0)
want="${pins[*]}"
stamp="$venv/.saker-test-pins"

ready() {
  [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
    "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('openai') and u.find_spec('text_generation') and u.find_spec('jsonschema')))" >/dev/null 2>&1
}

if ready; then
  echo "$venv/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$venv")"
# Two test runs may start at once; the second waits for the first's venv.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
  if ready; then
    echo "$venv/bin/python"
    exit 0
  fi
fi

if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  echo "setup_test_venv: python3 lacks the venv/ensurepip modules; install python3-venv" \
       "(apt-get install python3-venv, see scripts/setup.sh)" >&2
  exit 1
fi
echo "setup_test_venv: creating $venv with ${want}" >&2
rm -f "$stamp"
python3 -m venv --clear "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
"$venv/bin/python" -c "import openai, text_generation, jsonschema" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
