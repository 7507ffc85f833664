#!/usr/bin/env bash
# Scripted check of the clean-room hand-off against a fresh lab (PRODUCT.md steps 6-7):
# member account A seeds a volume with a generated ext4 disk image, snapshots it, re-encrypts
# the snapshot under a customer key whose policy names forensics account B and shares it;
# B copies it under its own key, restores a volume, attaches it to an analysis instance the
# lab's SSM agent manages, runs a registered document that hashes the device through the
# NVMe device map and uploads the digest with `aws s3 cp`; the digest read back from S3 and
# from GetCommandInvocation must equal the original image's.
#
# Usage: lab/check_clean_room.sh [extra pytest args]. Exit 0 when the check passes.
# The lab is started (and stopped) by the test's fixture on a loopback port; nothing leaves
# 127.0.0.1 and no real credentials are read.
set -euo pipefail
lab_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$lab_dir/bootstrap.sh"
cd "$lab_dir/.."
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL
exec "$lab_dir/.venv/bin/python" -m pytest lab/tests/test_clean_room_flow.py -q -p no:cacheprovider "$@"
