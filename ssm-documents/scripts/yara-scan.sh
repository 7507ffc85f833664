#!/usr/bin/env bash
# Cleanroom-Yara: the repository's YARA rules (ssm-documents/yara/*.yar, one namespace per
# file) over every regular file of the evidence volume, deleted files included, read with
# the Sleuth Kit and never mounted (yarascan.py). Result: yara.json naming, for each match,
# the rule, its namespace and tags, the file's path, inode, SHA-256 and size.
# See lib.sh for the environment and README.md for the result JSON.
if ! declare -F cl_init >/dev/null; then
    # shellcheck source=/dev/null # lib.sh, linted on its own
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi

yara_main() {
    cl_init yara cleanroom.yara/1 yara.json
    cl_tools python3 openssl jq mmls fsstat fls icat istat yara yarac
    cl_layout 1

    local rules=() sources=() file digests
    mapfile -t rules < <(LC_ALL=C find "$CL_RULES" -maxdepth 1 -name '*.yar' | LC_ALL=C sort)
    ((${#rules[@]})) || cl_die "$CL_EXIT_MISSING_TOOL" "no YARA rules in $CL_RULES: the document (or ssm-documents/yara) must carry them"
    for file in "${rules[@]}"; do
        sources+=("$(basename "$file" .yar):$file")
    done
    yarac -w "${sources[@]}" "$CL_WORK/rules.yarc" 2>"$CL_WORK/yarac.err" ||
        cl_die "$CL_EXIT_FAILED" "yarac could not compile the rules: $(head -n 3 "$CL_WORK/yarac.err")"
    digests="$(for file in "${rules[@]}"; do
        jq -cn --arg k "$(basename "$file")" --arg v "sha256:$(cl_sha256 "$file")" '{($k): $v}'
    done | jq -cs 'add')"

    mkdir -p "$CL_WORK/staging"
    cl_py yarascan.py "$CL_IMAGE" "$CL_WORK/layout.json" "$CL_WORK/rules.yarc" \
        "$CL_WORK/staging" >"$CL_WORK/scan.json" ||
        cl_die "$CL_EXIT_FAILED" "yarascan.py failed on $CL_IMAGE: see its messages above"
    local w
    while IFS= read -r w; do cl_warn "$w"; done < <(jq -r '.scan_errors[]' "$CL_WORK/scan.json")
    # rules_sha256: SHA-256 of the rule files' bytes concatenated in name order.
    jq --arg all "sha256:$(cat "${rules[@]}" | openssl dgst -sha256 -r | cut -d' ' -f1)" \
        --argjson files "$digests" 'del(.scan_errors) + {rules_sha256: $all, rules: $files}' \
        "$CL_WORK/scan.json" >"$CL_WORK/fields.json"
    cl_finish "$CL_WORK/fields.json"
}

yara_main "$@"
