#!/usr/bin/env bash
# The tooling AMI's test phase (amis/forensic-tooling.yaml), also run by ssm-documents/test.sh:
# the collection scripts, in local mode, on a fixture image built on the spot. Passes only
# when the image pass equals coreutils' digests and triage and YARA find the planted
# intrusion; prints one summary line naming the tool versions.
#   ami-selftest.sh [SSM_DOCUMENTS_DIR]   (default: the directory above this script)
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
docs="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cleanroom-ami-selftest.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fail() {
    echo "ami-selftest: FAILED: $*" >&2
    exit 1
}
# expect FILE JQ_FILTER WHAT [jq args...]: the filter must be true of the result file.
expect() {
    local file="$1" filter="$2" what="$3"
    shift 3
    jq -e "$@" "$filter" "$file" >/dev/null || fail "$what ($file)"
}

image="$(bash "$docs/tests/fixtures/build-image.sh" "$work/fixture.img")"
for script in disk-image triage yara-scan; do
    mkdir "$work/$script"
    CLEANROOM_CASE=AMI-SELFTEST CLEANROOM_IMAGE="$image" CLEANROOM_OUT="$work/$script" \
        bash "$docs/scripts/$script.sh" >"$work/$script.stdout" 2>"$work/$script.stderr" ||
        fail "$script.sh exited $?: $(head -n 3 "$work/$script.stderr")"
done

sha256="sha256:$(sha256sum "$image" | cut -d' ' -f1)"
sha1="sha1:$(sha1sum "$image" | cut -d' ' -f1)"
md5="md5:$(md5sum "$image" | cut -d' ' -f1)"
# shellcheck disable=SC2016 # $a $b $c are jq variables
expect "$work/disk-image/image.json" '.sha256 == $a and .sha1 == $b and .md5 == $c and .second_check.match' \
    "image digests differ from sha256sum/sha1sum/md5sum" --arg a "$sha256" --arg b "$sha1" --arg c "$md5"
triage="$work/triage/triage.json"
expect "$triage" 'any(.findings[]; .kind == "tmp_executable" and .path == "/var/tmp/.x/kswapd0")' "triage missed the miner"
expect "$triage" 'any(.findings[]; .kind == "runs_from_tmp" and .path == "/var/spool/cron/crontabs/root")' "triage missed the cron entry"
expect "$triage" 'any(.findings[]; .kind == "authorized_key" and (.detail | contains("mdrfckr")))' "triage missed the backdoor key"
expect "$triage" 'any(.findings[]; .kind == "ssh_login" and (.detail | contains("203.0.113.66")))' "triage missed the attacker's login"
expect "$triage" 'any(.findings[]; .kind == "deleted_file" and .path == "/tmp/.x/install.sh")' "triage missed the deleted dropper"
yara="$work/yara-scan/yara.json"
expect "$yara" 'any(.matches[]; .rule == "Cleanroom_Miner_XMRig" and .path == "/var/tmp/.x/kswapd0")' "YARA missed the miner"
expect "$yara" 'any(.matches[]; .rule == "Cleanroom_SSH_Backdoor_Known_Key_Comment")' "YARA missed the backdoor key"
expect "$yara" 'any(.matches[]; .deleted and .path == "/tmp/.x/install.sh")' "YARA missed the deleted dropper"

jq -r '"ami-selftest: ok (" + ([.tools | to_entries[] | "\(.key) \(.value)"] | join("; ")) + ")"' "$yara"
