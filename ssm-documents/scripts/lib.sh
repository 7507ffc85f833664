# shellcheck shell=bash
# Shared by the three scripts (placed before each in its document; sourced when run
# locally). Modes, result JSON and exit codes: ssm-documents/README.md.

# Exit codes (README.md, "Exit codes"; the Rust side maps them).
# shellcheck disable=SC2034 # some are used only by the scripts that source this file
readonly CL_EXIT_USAGE=2 CL_EXIT_NOT_IMAGE=3 CL_EXIT_TRUNCATED=4 CL_EXIT_MISSING_TOOL=5
readonly CL_EXIT_MISSING_DEVICE=6 CL_EXIT_UPLOAD=7 CL_EXIT_MISMATCH=8 CL_EXIT_FAILED=9

# Parameter patterns: the documents' allowedPattern, checked again here.
readonly CL_RE_VOLUME='^vol-[0-9a-f]{8,17}$'
readonly CL_RE_BUCKET='^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$'
readonly CL_RE_CASE='^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
readonly CL_RE_PREFIX='^cases/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/evidence/[0-9]{12}/i-[0-9a-f]{8,17}/(vol-[0-9a-f]{8,17})/$'
readonly CL_RE_REGION='^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$'
# S3 PutObject takes at most 5 GiB in one request; bigger outputs go multipart (aws s3 cp).
readonly CL_SINGLE_PUT_MAX_BYTES=$((5 << 30))

CL_WARNINGS=()
declare -A CL_TOOLS=() CL_HELPERS_USED=()

cl_die() { # CODE MESSAGE [DETAIL...]
    local code="$1" line
    shift
    printf 'cleanroom %s: %s\n' "${CL_NAME:-collection}" "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit "$code"
}

cl_warn() {
    printf 'cleanroom %s: warning: %s\n' "${CL_NAME:-collection}" "$1" >&2
    CL_WARNINGS+=("$1")
}

cl_now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# cl_tools NAME...: each must be on PATH; records its version for the result's "tools".
cl_tools() {
    local tool version tsk=""
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            cl_die "$CL_EXIT_MISSING_TOOL" "$tool is missing: run this on the cleanroom forensic tooling AMI (amis/forensic-tooling.yaml), or install it (scripts/setup)"
        case "$tool" in
            # One package: asked once.
            mmls | fsstat | fls | icat | istat | mactime)
                [[ -n "$tsk" ]] || tsk="$("$tool" -V 2>&1 | head -n 1)" || true
                version="$tsk"
                ;;
            openssl) version="$(openssl version 2>&1)" || true ;;
            aws) version="$(aws --version 2>&1 | head -n 1)" || true ;;
            *) version="$("$tool" --version 2>&1 | head -n 1)" || true ;;
        esac
        CL_TOOLS[$tool]="$version"
    done
}

# cl_py HELPER ARGS...: runs a Python helper and records its digest for "helpers_sha256".
cl_py() {
    local helper="$CL_HELPERS/$1"
    shift
    CL_HELPERS_USED[$(basename "$helper")]="sha256:$(cl_sha256 "$helper")"
    python3 "$helper" "$@"
}

cl_sha256() { local d; d="$(openssl dgst -sha256 -r "$1")" && echo "${d%% *}"; }

# cl_init NAME SCHEMA OUTPUT...: mode, parameters, device, work directory. OUTPUT names the
# files this script writes (the result NAME.json included).
cl_init() {
    set -Eeuo pipefail
    umask 077
    # A command that fails where nothing handles it ends the run with a message, not silently.
    trap 'cl_die "$CL_EXIT_FAILED" "internal error: a command failed (status $?) at line $LINENO of $(basename "$CL_SCRIPT"): report it with the messages above"' ERR
    CL_NAME="$1" CL_SCHEMA="$2"
    shift 2
    CL_OUTPUT_NAMES=("$@")
    CL_STARTED="$(cl_now)"
    CL_SCRIPT="${BASH_SOURCE[-1]}"
    [[ "${CLEANROOM_CASE:-}" =~ $CL_RE_CASE ]] ||
        cl_die "$CL_EXIT_USAGE" "case id '${CLEANROOM_CASE:-}' is missing or invalid: set CLEANROOM_CASE to 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
    if [[ -n "${CLEANROOM_IMAGE:-}" ]]; then
        [[ -z "${CLEANROOM_VOLUME_ID:-}" ]] ||
            cl_die "$CL_EXIT_USAGE" "both CLEANROOM_IMAGE and CLEANROOM_VOLUME_ID are set: set only one (local image or document mode)"
        CL_MODE=local
        cl_init_local
    elif [[ -n "${CLEANROOM_VOLUME_ID:-}" ]]; then
        CL_MODE=document
        cl_init_document
    else
        cl_die "$CL_EXIT_USAGE" "nothing to read: set CLEANROOM_IMAGE=/path/to/disk.raw and CLEANROOM_OUT=/path/to/dir (local), or run the SSM document with a VolumeId"
    fi
    trap cl_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    mkdir -p "$CL_WORK/out" "$CL_WORK/helpers"
    CL_OUT="$CL_WORK/out"
    : >"$CL_WORK/outputs.tsv"
    # In a document the helpers arrive inside it (render.py) and are written here; run
    # locally they are the files next to this script.
    if declare -F cl_write_helpers >/dev/null; then
        cl_write_helpers "$CL_WORK/helpers"
        CL_HELPERS="$CL_WORK/helpers"
        CL_RULES="$CL_WORK/helpers/yara"
    else
        CL_HELPERS="$(cd "$(dirname "$CL_SCRIPT")" && pwd)"
        # shellcheck disable=SC2034 # read by yara-scan.sh
        CL_RULES="$CL_HELPERS/../yara"
    fi
}

cl_init_local() {
    local out="${CLEANROOM_OUT:-}" name
    [[ -n "$out" && -d "$out" && -w "$out" ]] ||
        cl_die "$CL_EXIT_USAGE" "CLEANROOM_OUT '${out}' is not a writable directory: create it, or point CLEANROOM_OUT at one"
    for name in "${CL_OUTPUT_NAMES[@]}"; do
        [[ ! -e "$out/$name" ]] ||
            cl_die "$CL_EXIT_USAGE" "$out/$name exists already: nothing is overwritten; use an empty CLEANROOM_OUT"
    done
    CL_IMAGE="$CLEANROOM_IMAGE"
    [[ -e "$CL_IMAGE" ]] || cl_die "$CL_EXIT_MISSING_DEVICE" "image $CL_IMAGE does not exist: check the path given to --image"
    [[ -f "$CL_IMAGE" || -b "$CL_IMAGE" ]] ||
        cl_die "$CL_EXIT_NOT_IMAGE" "$CL_IMAGE is not a regular file or block device: give a raw disk image (dd, ewfexport -f raw)"
    [[ -r "$CL_IMAGE" ]] || cl_die "$CL_EXIT_MISSING_DEVICE" "image $CL_IMAGE is not readable: check its permissions"
    CL_IMAGE="$(realpath "$CL_IMAGE")"
    CL_DEVICE="$CL_IMAGE"
    CL_VOLUME_ID="" CL_SERIAL="" CL_SERIAL_SOURCE=""
    CL_FINAL_OUT="$(realpath "$out")"
    # Inside CLEANROOM_OUT, so the final moves are renames on one file system.
    CL_WORK="$(mktemp -d "$CL_FINAL_OUT/.cleanroom-partial.XXXXXX")"
    cl_image_bytes
}

cl_init_document() {
    local vol="$CLEANROOM_VOLUME_ID" prefix="${CLEANROOM_PREFIX:-}"
    [[ "$vol" =~ $CL_RE_VOLUME ]] || cl_die "$CL_EXIT_USAGE" "VolumeId '$vol' is not a volume id (vol-<8 to 17 hex digits>)"
    [[ "${CLEANROOM_BUCKET:-}" =~ $CL_RE_BUCKET ]] || cl_die "$CL_EXIT_USAGE" "EvidenceBucket '${CLEANROOM_BUCKET:-}' is not an S3 bucket name"
    [[ "${CLEANROOM_REGION:-}" =~ $CL_RE_REGION ]] || cl_die "$CL_EXIT_USAGE" "Region '${CLEANROOM_REGION:-}' is not a region name"
    [[ "$prefix" =~ $CL_RE_PREFIX ]] ||
        cl_die "$CL_EXIT_USAGE" "EvidencePrefix '$prefix' is not cases/<case>/evidence/<account>/<instance>/<volume>/"
    [[ "${BASH_REMATCH[1]}" == "$CLEANROOM_CASE" && "${BASH_REMATCH[2]}" == "$vol" ]] ||
        cl_die "$CL_EXIT_USAGE" "EvidencePrefix '$prefix' names another case or volume than CaseId $CLEANROOM_CASE and VolumeId $vol: pass matching parameters"
    CL_VOLUME_ID="$vol"
    local byid="${CLEANROOM_ROOT:-}/dev/disk/by-id"
    CL_DEVICE="$byid/nvme-Amazon_Elastic_Block_Store_${vol/-/}"
    if [[ ! -e "$CL_DEVICE" ]]; then
        local found
        found="$(find "$byid" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null || true)"
        cl_die "$CL_EXIT_MISSING_DEVICE" "volume $vol is not attached to this instance (no $CL_DEVICE): attach it, then run the document again" \
            "by-id holds: ${found:-nothing}"
    fi
    CL_IMAGE="$(readlink -f "$CL_DEVICE")"
    [[ -r "$CL_IMAGE" ]] || cl_die "$CL_EXIT_MISSING_DEVICE" "device $CL_IMAGE of volume $vol is not readable: run the document as root"
    # shellcheck disable=SC2034 # CL_SERIAL_SOURCE is read by disk-image.sh
    # The serial as the kernel reads it from the NVMe controller; udev named by-id after it.
    local sys
    sys="${CLEANROOM_ROOT:-}/sys/block/$(basename "$CL_IMAGE")/device/serial"
    if [[ -r "$sys" ]]; then
        CL_SERIAL="$(tr -d ' \n' <"$sys")" CL_SERIAL_SOURCE=sysfs
    else
        CL_SERIAL="${CL_DEVICE##*_}" CL_SERIAL_SOURCE="by-id link name"
    fi
    [[ "$CL_SERIAL" == "${vol/-/}" ]] ||
        cl_die "$CL_EXIT_MISSING_DEVICE" "device $CL_IMAGE reports NVMe serial '$CL_SERIAL', not ${vol/-/}: refusing to read the wrong volume"
    CL_WORK="$(mktemp -d "${TMPDIR:-/tmp}/cleanroom-$CL_NAME.XXXXXX")"
    cl_image_bytes
    cl_tools aws
    cl_refuse_existing_keys
}

cl_image_bytes() {
    if [[ -b "$CL_IMAGE" ]]; then
        CL_IMAGE_BYTES="$(blockdev --getsize64 "$CL_IMAGE")"
    else
        CL_IMAGE_BYTES="$(stat -L -c %s "$CL_IMAGE")"
    fi
}

cl_cleanup() {
    local rc=$?
    [[ -z "${CL_WORK:-}" ]] || rm -rf "$CL_WORK"
    exit "$rc"
}

# cl_layout STRICT: partitions and file systems (layout.py); mmls.txt and fsstat*.txt land
# in $CL_OUT. STRICT=1: no file system or a truncated one ends the run.
cl_layout() {
    local strict="$1" rc=0
    cl_py layout.py "$CL_IMAGE" "$CL_IMAGE_BYTES" "$CL_OUT" >"$CL_WORK/layout.json" || rc=$?
    ((rc == 0)) || cl_die "$CL_EXIT_FAILED" "layout.py failed (exit $rc) reading $CL_IMAGE: see the messages above"
    # One jq: the error's exit code on the first line (0: none), then message and warnings.
    local lines=()
    mapfile -t lines < <(jq -r '.error.exit // 0, (.error.message // empty), .warnings[]' "$CL_WORK/layout.json")
    if ((lines[0] != 0)); then
        ((strict)) && cl_die "${lines[0]}" "${lines[1]}"
    fi
    local w
    for w in "${lines[@]:1}"; do cl_warn "$w"; done
}

# cl_add_output NAME FILE [SHA256 SHA1 MD5 BYTES VERSION]: records an output; its digests
# are computed in cl_finish unless given. FILE - = uploaded already (the streamed image).
cl_add_output() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${3:--}" "${4:--}" "${5:--}" "${6:--}" "${7:--}" \
        >>"$CL_WORK/outputs.tsv"
}

# cl_digest_outputs: outputs.tsv -> outputs.jsonl, reading each file once for its three
# digests (one process for all of them).
cl_digest_outputs() {
    if [[ ! -s "$CL_WORK/outputs.tsv" ]]; then
        : >"$CL_WORK/outputs.jsonl"
        return
    fi
    python3 - "$CL_WORK/outputs.tsv" >"$CL_WORK/outputs.jsonl" <<'PY'
import hashlib, json, os, sys
for line in open(sys.argv[1]):
    name, path, sha256, sha1, md5, size, version = line.rstrip("\n").split("\t")
    if path != "-":
        hs = [hashlib.sha256(), hashlib.sha1(), hashlib.md5()]
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                for h in hs:
                    h.update(chunk)
        sha256, sha1, md5 = (h.hexdigest() for h in hs)
        size = os.path.getsize(path)
    print(json.dumps({"name": name, "size": int(size), "sha256": "sha256:" + sha256, "sha1": "sha1:" + sha1,
                      "md5": "md5:" + md5, "file": path, "version": version}))
PY
}

cl_s3() { aws --region "$CLEANROOM_REGION" --output json "$@"; }

cl_refuse_existing_keys() {
    local name err="$CL_WORK/head.err"
    for name in "${CL_OUTPUT_NAMES[@]}"; do
        if cl_s3 s3api head-object --bucket "$CLEANROOM_BUCKET" --key "$CLEANROOM_PREFIX$name" >/dev/null 2>"$err"; then
            cl_die "$CL_EXIT_UPLOAD" "s3://$CLEANROOM_BUCKET/$CLEANROOM_PREFIX$name exists already: evidence is never overwritten; use a new EvidencePrefix"
        fi
        grep -q -E '\((404|NoSuchKey|Not Found)\)|Not Found' "$err" ||
            cl_die "$CL_EXIT_UPLOAD" "cannot check s3://$CLEANROOM_BUCKET/$CLEANROOM_PREFIX$name: check the instance profile may read and write the bucket" \
                "$(head -n 2 "$err")"
    done
}

# cl_upload NAME FILE: PutObject with the SHA-256 checksum S3 verifies (Object Lock buckets
# require one) and If-None-Match, so an existing key is never overwritten. Prints the
# version id.
cl_upload() {
    local name="$1" file="$2" key="$CLEANROOM_PREFIX$1" err="$CL_WORK/upload.err" b64 size
    size="$(stat -c %s "$file")"
    if ((size > CL_SINGLE_PUT_MAX_BYTES)); then
        cl_s3 s3 cp "$file" "s3://$CLEANROOM_BUCKET/$key" --checksum-algorithm SHA256 --only-show-errors \
            >/dev/null 2>"$err" || cl_upload_failed "$key" "$err"
        cl_s3 s3api head-object --bucket "$CLEANROOM_BUCKET" --key "$key" --query VersionId --output text 2>"$err" ||
            cl_upload_failed "$key" "$err"
        return
    fi
    b64="$(openssl dgst -sha256 -binary "$file" | openssl base64 -A)"
    cl_s3 s3api put-object --bucket "$CLEANROOM_BUCKET" --key "$key" --body "$file" \
        --checksum-sha256 "$b64" --if-none-match '*' --query VersionId --output text 2>"$err" ||
        cl_upload_failed "$key" "$err"
}

cl_upload_failed() {
    cl_die "$CL_EXIT_UPLOAD" "upload of s3://$CLEANROOM_BUCKET/$1 failed: check the bucket policy and the instance profile, then run again with a new EvidencePrefix" \
        "$(head -n 3 "$2")"
}

# cl_finish FIELDS_JSON_FILE: the result JSON (common fields + the script's own), then the
# outputs: uploaded (document) or moved into CLEANROOM_OUT (local), the result last; the
# result is the last line of stdout.
cl_finish() {
    local fields="$1" result="$CL_WORK/result.json" tools helpers warnings name file version
    local -A versions=()
    local pairs=()
    for name in "${!CL_TOOLS[@]}"; do pairs+=("$name" "${CL_TOOLS[$name]}"); done
    tools="$(jq -cn '[$ARGS.positional | _nwise(2) | select(length == 2) | {(.[0]): .[1]}] | add // {}' --args "${pairs[@]}")"
    pairs=()
    for name in "${!CL_HELPERS_USED[@]}"; do pairs+=("$name" "${CL_HELPERS_USED[$name]}"); done
    helpers="$(jq -cn '[$ARGS.positional | _nwise(2) | select(length == 2) | {(.[0]): .[1]}] | add // {}' --args "${pairs[@]}")"
    warnings="$(jq -cn '$ARGS.positional' --args "${CL_WARNINGS[@]}")"
    cl_digest_outputs
    if [[ "$CL_MODE" == document ]]; then
        while IFS=$'\t' read -r name file version; do
            if [[ "$file" != - ]]; then
                versions[$name]="$(cl_upload "$name" "$file")"
            else
                versions[$name]="$version"
            fi
        done < <(jq -r '[.name, .file, .version] | @tsv' "$CL_WORK/outputs.jsonl")
    fi
    pairs=()
    for name in "${!versions[@]}"; do pairs+=("$name" "${versions[$name]}"); done
    local s3objects
    s3objects="$(jq -cn --arg prefix "${CLEANROOM_PREFIX:-}" \
        '[$ARGS.positional | _nwise(2) | select(length == 2) | {name: .[0], key: ($prefix + .[0]), version_id: .[1]}] | sort_by(.name)' \
        --args "${pairs[@]}")"
    jq -c -n --arg schema "$CL_SCHEMA" --arg case "$CLEANROOM_CASE" --arg mode "$CL_MODE" \
        --arg volume "$CL_VOLUME_ID" --arg device "$CL_DEVICE" --arg resolved "$CL_IMAGE" \
        --argjson image_bytes "$CL_IMAGE_BYTES" --arg started "$CL_STARTED" --arg finished "$(cl_now)" \
        --argjson tools "$tools" --arg script "sha256:$(cl_sha256 "$CL_SCRIPT")" \
        --arg script_name "$(basename "$CL_SCRIPT")" --argjson helpers "$helpers" \
        --argjson warnings "$warnings" --slurpfile outputs "$CL_WORK/outputs.jsonl" \
        --argjson s3objects "$s3objects" --arg bucket "${CLEANROOM_BUCKET:-}" \
        --arg prefix "${CLEANROOM_PREFIX:-}" --slurpfile layout "$CL_WORK/layout.json" \
        --slurpfile fields "$fields" '
        {schema: $schema, case: $case, mode: $mode,
         volume_id: (if $volume == "" then null else $volume end),
         device: $device, device_resolved: $resolved, device_bytes: $image_bytes,
         started_at: $started, finished_at: $finished, tools: $tools,
         script: $script_name, script_sha256: $script, helpers_sha256: $helpers,
         partition_table: $layout[0].partition_table, partitions: $layout[0].partitions,
         filesystems: $layout[0].filesystems, unsupported_volumes: $layout[0].unsupported,
         warnings: $warnings,
         outputs: [$outputs[] | del(.file, .version)],
         s3: (if $bucket == "" then null
              else {bucket: $bucket, prefix: $prefix, objects: $s3objects} end)}
        + $fields[0]' >"$result"
    if [[ "$CL_MODE" == document ]]; then
        version="$(cl_upload "$CL_NAME.json" "$result")"
        printf '%s: s3://%s/%s%s.json version %s\n' "$CL_NAME" "$CLEANROOM_BUCKET" "$CLEANROOM_PREFIX" "$CL_NAME" "$version" >&2
    else
        while IFS= read -r file; do
            if [[ -e "$CL_FINAL_OUT/$(basename "$file")" ]] || ! mv "$file" "$CL_FINAL_OUT/"; then
                cl_die "$CL_EXIT_FAILED" "could not move $(basename "$file") into $CL_FINAL_OUT (it exists, or the move failed): the result JSON was not written"
            fi
        done < <(jq -r 'select(.file != "-") | .file' "$CL_WORK/outputs.jsonl")
        if [[ -e "$CL_FINAL_OUT/$CL_NAME.json" ]] || ! mv "$result" "$CL_FINAL_OUT/$CL_NAME.json"; then
            cl_die "$CL_EXIT_FAILED" "could not write $CL_FINAL_OUT/$CL_NAME.json"
        fi
        result="$CL_FINAL_OUT/$CL_NAME.json"
    fi
    cat "$result"
}
