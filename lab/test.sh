#!/usr/bin/env bash
# Bootstrap the lab venv, then run the lab's own test suite. Extra arguments go to pytest.
set -euo pipefail
lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$lab_dir/bootstrap.sh"
cd "$lab_dir/.."
exec "$lab_dir/.venv/bin/python" -m pytest lab/tests -q "$@"
