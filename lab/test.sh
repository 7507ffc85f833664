#!/usr/bin/env bash
# Bootstrap the lab venv, then run the lab's own test suite.
# Arguments, if any, replace the default target (lab/tests), e.g. lab/tests/test_console.py -x.
set -euo pipefail
lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$lab_dir/bootstrap.sh"
cd "$lab_dir/.."
if [[ $# -eq 0 ]]; then
    set -- lab/tests
fi
exec "$lab_dir/.venv/bin/python" -m pytest -q "$@"
