#!/usr/bin/env bash
# Create lab/.venv and install lab/requirements.txt into it.
#
# Idempotent: the sha256 of requirements.txt is kept in lab/.venv/.requirements.sha256;
# when it matches, this script exits at once and prints nothing. When requirements.txt
# changes, the venv is brought to exactly the pinned set in place (install what is pinned,
# uninstall what is no longer listed), so a lab already running from it keeps working.
# A venv whose interpreter no longer runs is rebuilt. Usable from any working directory.
# Set LAB_PYTHON to choose the interpreter for a new venv (default python3).
set -euo pipefail

lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$lab_dir/.venv"
req="$lab_dir/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

venv_works() {
    "$venv/bin/python" -c '' 2>/dev/null
}

up_to_date() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && venv_works
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

echo "lab/bootstrap.sh: installing requirements.txt ($want) into $venv" >&2
if ! venv_works; then
    rm -rf "$venv"
    "${LAB_PYTHON:-python3}" -m venv "$venv"
fi
rm -f "$stamp"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
"${pip[@]}" install --requirement "$req"

# Remove packages that are installed but no longer pinned.
normalise() { tr 'A-Z_.' 'a-z--'; }
pinned="$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$req" | normalise | sort -u)"
installed="$("${pip[@]}" freeze --exclude-editable | sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' |
    normalise | sort -u)"
extra="$(comm -13 <(echo "$pinned") <(echo "$installed"))"
if [[ -n "$extra" ]]; then
    # shellcheck disable=SC2086 # one package name per word
    "${pip[@]}" uninstall --yes $extra
fi

echo "$want" >"$stamp"
echo "lab/bootstrap.sh: done" >&2
