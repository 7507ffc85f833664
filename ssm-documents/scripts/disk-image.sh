#!/usr/bin/env bash
# Cleanroom-DiskImage: image an evidence volume. One read of the device gives SHA-256, SHA-1
# and MD5 (imagepass.py) and streams the bytes to S3 as image.raw (multipart, expected size
# given, SHA-256 per part); then the uploaded object version is read back and hashed again
# with openssl on this instance: the second, independent check of the SHA-256. A mismatch
# is recorded in image.json and the exit status is 8.
#
# Local mode (CLEANROOM_IMAGE, CLEANROOM_OUT): the image pass only, nothing uploaded; the
# second check re-reads the file (CLEANROOM_SECOND_CHECK=none skips it, for benchmarks).
# See lib.sh for the environment and README.md for the result JSON.
if ! declare -F cl_init >/dev/null; then
    # shellcheck source=/dev/null # lib.sh, linted on its own
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi

image_main() {
    cl_init image cleanroom.disk-image/1 image.raw image.json
    cl_tools python3 openssl jq mmls fsstat
    # Evidence is imaged whatever it holds (an encrypted or unknown volume too); a local
    # file that is no disk image, or is truncated, is refused.
    if [[ "$CL_MODE" == local ]]; then cl_layout 1; else cl_layout 0; fi

    local pass="$CL_WORK/pass.json" version="" pass_rc=0 upload_rc=0
    if [[ "$CL_MODE" == document ]]; then
        local key="${CLEANROOM_PREFIX}image.raw" fifo="$CL_WORK/image.fifo" uploader
        mkfifo "$fifo"
        # aws itself is the background job (not a function), so $! is its pid. This shell
        # holds the pipe's write end (fd 3): a failed pass kills the uploader before the
        # pipe closes, so a partial stream never becomes an object.
        aws --region "$CLEANROOM_REGION" s3 cp - "s3://$CLEANROOM_BUCKET/$key" \
            --expected-size "$CL_IMAGE_BYTES" --checksum-algorithm SHA256 --only-show-errors \
            <"$fifo" >/dev/null 2>"$CL_WORK/upload.err" &
        uploader=$!
        exec 3>"$fifo"
        cl_py imagepass.py "$CL_IMAGE" "$CL_IMAGE_BYTES" "$pass" --stream >&3 || pass_rc=$?
        ((pass_rc == 0)) || kill -KILL "$uploader" 2>/dev/null || true
        exec 3>&-
        wait "$uploader" || upload_rc=$?
        if ((pass_rc != 0 && upload_rc != 0 && upload_rc != 137)); then
            cl_upload_failed "$key" "$CL_WORK/upload.err"
        fi
        ((pass_rc == 0)) || cl_die "$pass_rc" "the image pass over $CL_IMAGE failed (see imagepass above): nothing was completed in S3; run the document again with a new EvidencePrefix"
        ((upload_rc == 0)) || cl_upload_failed "$key" "$CL_WORK/upload.err"
        version="$(cl_s3 s3api head-object --bucket "$CLEANROOM_BUCKET" --key "$key" \
            --query '[VersionId, ContentLength]' --output text 2>"$CL_WORK/upload.err")" ||
            cl_upload_failed "$key" "$CL_WORK/upload.err"
        local stored="${version##*[[:space:]]}"
        version="${version%%[[:space:]]*}"
        [[ "$stored" == "$CL_IMAGE_BYTES" ]] ||
            cl_die "$CL_EXIT_MISMATCH" "s3://$CLEANROOM_BUCKET/$key holds $stored bytes, the volume $CL_IMAGE_BYTES: the upload is incomplete; run again with a new EvidencePrefix"
    else
        cl_py imagepass.py "$CL_IMAGE" "$CL_IMAGE_BYTES" "$pass" || pass_rc=$?
        ((pass_rc == 0)) || cl_die "$pass_rc" "the image pass over $CL_IMAGE failed (see imagepass above): check the image is readable and not changing"
    fi

    local sha256 sha1 md5 bytes
    sha256="$(jq -r .sha256 "$pass")" sha1="$(jq -r .sha1 "$pass")" md5="$(jq -r .md5 "$pass")"
    bytes="$(jq -r .bytes "$pass")"
    [[ "$CL_MODE" == local ]] || cl_add_output image.raw - "$sha256" "$sha1" "$md5" "$bytes" "$version"

    local method detail second=""
    if [[ "$CL_MODE" == document ]]; then
        method=s3-readback
        detail="GetObject of image.raw version $version read back on the analysis instance, SHA-256 by openssl"
        second="$(image_readback "${CLEANROOM_PREFIX}image.raw" "$version")"
    elif [[ "${CLEANROOM_SECOND_CHECK:-reread}" == none ]]; then
        method=none detail="skipped (CLEANROOM_SECOND_CHECK=none, local mode only)"
    else
        method=local-reread detail="the image file read a second time, SHA-256 by openssl"
        second="$(cl_sha256 "$CL_IMAGE")"
    fi

    jq -n --argjson bytes "$bytes" --arg sha256 "$sha256" --arg sha1 "$sha1" --arg md5 "$md5" \
        --arg serial "$CL_SERIAL" --arg serial_source "$CL_SERIAL_SOURCE" \
        --arg method "$method" --arg detail "$detail" --arg second "$second" \
        --slurpfile pass "$pass" '
        {bytes: $bytes, sha256: ("sha256:" + $sha256), sha1: ("sha1:" + $sha1), md5: ("md5:" + $md5),
         nvme_serial: (if $serial == "" then null else $serial end),
         nvme_serial_source: (if $serial_source == "" then null else $serial_source end),
         image_pass: {method: "one read; python3 hashlib (OpenSSL): MD5 on one thread, SHA-1 and SHA-256 on another",
                      seconds: $pass[0].seconds, chunk_bytes: $pass[0].chunk_bytes},
         second_check: {method: $method, detail: $detail,
                        sha256: (if $second == "" then null else "sha256:" + $second end),
                        match: (if $second == "" then null else $second == $sha256 end)}}' >"$CL_WORK/fields.json"
    cl_finish "$CL_WORK/fields.json"
    if [[ -n "$second" && "$second" != "$sha256" ]]; then
        cl_die "$CL_EXIT_MISMATCH" "second check failed: the image pass gave sha256:$sha256, the $method gave sha256:$second; do not use this image, run the document again with a new EvidencePrefix"
    fi
}

# image_readback KEY VERSION: SHA-256 of that object version, read from S3 on this instance.
image_readback() {
    local fifo="$CL_WORK/readback.fifo" getter digest get_rc=0
    mkfifo "$fifo"
    aws --region "$CLEANROOM_REGION" s3api get-object --bucket "$CLEANROOM_BUCKET" --key "$1" \
        --version-id "$2" "$fifo" >/dev/null 2>"$CL_WORK/readback.err" &
    getter=$!
    digest="$(openssl dgst -sha256 -r <"$fifo")"
    wait "$getter" || get_rc=$?
    ((get_rc == 0)) || cl_die "$CL_EXIT_UPLOAD" "reading back s3://$CLEANROOM_BUCKET/$1 failed: the instance profile must allow s3:GetObjectVersion on the evidence prefix" \
        "$(head -n 3 "$CL_WORK/readback.err")"
    echo "${digest%% *}"
}

image_main "$@"
