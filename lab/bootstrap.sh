#!/usr/bin/env bash
# Create lab/.venv and install lab/requirements.txt into it.
#
# Idempotent: the sha256 of requirements.txt is kept in lab/.venv/.requirements.sha256;
# when it matches, this script exits at once and prints nothing. When requirements.txt
# changes, the venv is rebuilt from scratch so it holds exactly the pinned set.
# Usable from any working directory. Set LAB_PYTHON to choose the interpreter (default python3).
set -euo pipefail

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$lab_dir/.venv"
req="$lab_dir/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

up_to_date() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
        "$venv/bin/python" -c '' 2>/dev/null
}

if up_to_date; then
    exit 0
fi

# Serialise concurrent bootstraps (e.g. a test run and the Rust tests starting together).
exec 9>"$lab_dir/.bootstrap.lock"
flock 9
if up_to_date; then
    exit 0
fi

python="${LAB_PYTHON:-python3}"
echo "lab/bootstrap.sh: building $venv from requirements.txt ($want)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$req"
echo "$want" >"$stamp"
echo "lab/bootstrap.sh: done" >&2
