#!/usr/bin/env bash
# The collection documents' tests (run by scripts/test): shellcheck of the scripts, the
# fixture builder, the YARA rules and their samples, the scripts in local mode, the
# rendered documents, the AMI self-test, and the documents end to end through the lab's SSM
# agent. Arguments go to pytest (e.g. -k triage -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in yara yarac mmls fsstat fls icat istat mactime jq openssl mke2fs debugfs sfdisk python3 shellcheck; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "ssm-documents/test.sh: missing ${missing[*]}: run scripts/setup" >&2
    exit 2
fi

shellcheck --severity=style "$here"/scripts/*.sh "$here"/tests/*.sh "$here"/tests/fixtures/*.sh "$here/test.sh" \
    "$root/scripts/bench-collect"
python3 - "$here"/scripts/*.py "$here/render.py" <<'PY'
import ast, sys
for path in sys.argv[1:]:
    with open(path) as f:
        ast.parse(f.read(), path)
PY

bash "$root/lab/bootstrap.sh"
cd "$root"
exec "$root/lab/.venv/bin/python" -m pytest -q -p no:cacheprovider "$here/tests" "$@"
