"""The clean-room hand-off, end to end, through boto3 against the lab (PRODUCT.md steps 6-7).

Account A (the compromised member account) holds a volume with a disk image; its snapshot is
on the AWS managed key and cannot be shared, so it is copied under a customer key whose policy
names the forensics account B, and that copy is shared. B copies it under its own key (the
evidence), restores a volume in the analysis AZ, attaches it to an analysis instance that the
SSM agent manages, and runs a registered collection document that hashes the attached device
through the NVMe device map and uploads the digest with ``aws s3 cp``. The digest read back
from S3 and from GetCommandInvocation must equal the digest of the original image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import random_account

GIB = 1 << 30
AZ = "us-east-1a"
DOCUMENT_NAME = "Cleanroom-HashEvidenceDevice"

# A collection document as cleanroom ships them: schema 2.2, device paths under
# ${CLEANROOM_ROOT:-} so the same script runs on a real instance (empty prefix) and in the lab.
HASH_DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "Hash an attached evidence volume and upload the digest.",
    "parameters": {
        "volumeId": {"type": "String", "allowedPattern": "^vol-[0-9a-f]{8,17}$"},
        "bucket": {"type": "String"},
        "key": {"type": "String"},
        "executionTimeout": {"type": "String", "default": "600"},
    },
    "mainSteps": [{
        "action": "aws:runShellScript",
        "name": "hashDevice",
        "inputs": {
            "timeoutSeconds": "{{ executionTimeout }}",
            "runCommand": [
                "set -euo pipefail",
                "vol='{{ volumeId }}'",
                'dev="${CLEANROOM_ROOT:-}/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol/-/}"',
                'test -e "$dev" || { echo "no device for $vol" >&2; exit 2; }',
                'digest=$(sha256sum "$dev" | cut -d" " -f1)',
                'echo "sha256:$digest" > digest.txt',
                'aws s3 cp --only-show-errors digest.txt "s3://{{ bucket }}/{{ key }}"',
                'echo "sha256:$digest"',
            ],
        },
    }],
}


def make_image(workdir: Path, size: int) -> Path:
    """A disk image of ``size`` bytes: ext4 holding a few files when mkfs.ext4 can make one
    (the suspect's disk in miniature), else a few MiB of random bytes; sparse either way."""
    image = workdir / "disk.img"
    content = workdir / "content"
    (content / "etc" / "cron.d").mkdir(parents=True)
    (content / "etc" / "cron.d" / "miner").write_text("* * * * * root /tmp/.x/xmrig\n")
    (content / "root" / ".ssh").mkdir(parents=True)
    (content / "root" / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA backdoor\n")
    (content / "tmp" / ".x").mkdir(parents=True)
    (content / "tmp" / ".x" / "xmrig").write_bytes(os.urandom(3 << 20))
    with open(image, "wb") as f:
        f.truncate(size)
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs:
        subprocess.run([mkfs, "-q", "-F", "-E", "root_owner=0:0", "-L", "suspect-root",
                        "-d", str(content), str(image)], check=True, capture_output=True)
    else:
        with open(image, "r+b") as f:
            f.write(os.urandom(4 << 20))
    return image


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_zeros(h, n: int) -> None:
    zeros = bytes(1 << 20)
    while n > 0:
        h.update(zeros[: min(n, len(zeros))])
        n -= len(zeros)


def key_policy(owner: str, user: str | None = None) -> str:
    statements = [{"Sid": "Enable IAM policies", "Effect": "Allow",
                   "Principal": {"AWS": f"arn:aws:iam::{owner}:root"},
                   "Action": "kms:*", "Resource": "*"}]
    if user:
        statements.append({
            "Sid": "Forensics account may copy snapshots under this key", "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{user}:root"},
            "Action": ["kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:ReEncrypt*",
                       "kms:GenerateDataKeyWithoutPlaintext"],
            "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def wait_snapshot(ec2, snapshot_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        if snap["State"] != "pending":
            return snap
        assert time.monotonic() < deadline, f"{snapshot_id} still pending"
        time.sleep(0.05)


def wait_invocation(ssm, command_id: str, instance_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as e:  # AWS answers this until the invocation exists
            if e.response["Error"]["Code"] != "InvocationDoesNotExist":
                raise
            inv = {"Status": "Pending"}
        if inv["Status"] in ("Success", "Failed", "TimedOut", "Cancelled"):
            return inv
        assert time.monotonic() < deadline, f"command {command_id} still {inv['Status']}"
        time.sleep(0.2)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="cleanroom-flow-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_evidence_survives_the_hand_off_bit_for_bit(lab, workdir):
    member, forensics = random_account(), random_account()
    image = make_image(workdir, GIB)
    original = sha256_file(image)

    # -- member account A: the suspect volume, on the default EBS key ----------------------
    ec2_a = lab.client("ec2", account=member)
    kms_a = lab.client("kms", account=member)
    volume = ec2_a.create_volume(AvailabilityZone=AZ, Size=1, Encrypted=True,
                                 VolumeType="gp3")["VolumeId"]
    with open(image, "rb") as f:
        seeded = lab.admin("PUT", f"/_lab/volumes/{volume}/data", data=f, account=member,
                           timeout=300)
    assert seeded.status_code == 200, seeded.text
    snap = ec2_a.create_snapshot(VolumeId=volume, Description="case-1 frozen disk")["SnapshotId"]
    assert wait_snapshot(ec2_a, snap)["State"] == "completed"
    with pytest.raises(ClientError) as refused:  # aws/ebs snapshots cannot be shared
        ec2_a.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                        OperationType="add", UserIds=[forensics])
    assert refused.value.response["Error"]["Code"] == "OperationNotPermitted"

    # Re-encrypt under a customer key whose policy names the forensics account; share that.
    handoff_key = kms_a.create_key(Policy=key_policy(member, forensics),
                                   Description="case-1 hand-off")["KeyMetadata"]["Arn"]
    staged = ec2_a.copy_snapshot(SourceSnapshotId=snap, SourceRegion="us-east-1",
                                 Encrypted=True, KmsKeyId=handoff_key,
                                 Description="case-1 hand-off copy")["SnapshotId"]
    staged_info = wait_snapshot(ec2_a, staged)
    assert (staged_info["State"], staged_info["KmsKeyId"]) == ("completed", handoff_key)
    ec2_a.modify_snapshot_attribute(SnapshotId=staged,
                                    CreateVolumePermission={"Add": [{"UserId": forensics}]})

    # -- forensics account B: its own copy, under its own key, is the evidence -------------
    ec2_b = lab.client("ec2", account=forensics)
    kms_b = lab.client("kms", account=forensics)
    s3_b = lab.client("s3", account=forensics)
    ssm_b = lab.client("ssm", account=forensics)
    shared = ec2_b.describe_snapshots(RestorableByUserIds=["self"], OwnerIds=[member])
    assert [s["SnapshotId"] for s in shared["Snapshots"]] == [staged]
    forensics_key = kms_b.create_key(Policy=key_policy(forensics),
                                     Description="forensics evidence")["KeyMetadata"]["Arn"]
    evidence = ec2_b.copy_snapshot(SourceSnapshotId=staged, SourceRegion="us-east-1",
                                   Encrypted=True, KmsKeyId=forensics_key,
                                   Description="case-1 evidence")["SnapshotId"]
    evidence_info = wait_snapshot(ec2_b, evidence)
    assert (evidence_info["State"], evidence_info["OwnerId"], evidence_info["KmsKeyId"]) == (
        "completed", forensics, forensics_key)
    ec2_a.modify_snapshot_attribute(SnapshotId=staged,
                                    CreateVolumePermission={"Remove": [{"UserId": forensics}]})
    with pytest.raises(ClientError):  # the share is gone; the evidence copy is not
        ec2_b.describe_snapshots(SnapshotIds=[staged])
    assert wait_snapshot(ec2_b, evidence)["State"] == "completed"

    # Analysis: volume from the evidence copy, analysis instance, attach, agent.
    evidence_volume = ec2_b.create_volume(SnapshotId=evidence, AvailabilityZone=AZ,
                                          VolumeType="gp3")
    assert (evidence_volume["Encrypted"], evidence_volume["KmsKeyId"]) == (True, forensics_key)
    # Its instance profile is where the document's `aws s3 cp` gets credentials from
    # (without one an instance has none, in the lab as on AWS).
    iam_b = lab.client("iam", account=forensics)
    iam_b.create_role(RoleName="CleanroomAnalysis", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))
    iam_b.create_instance_profile(InstanceProfileName="CleanroomAnalysis")
    iam_b.add_role_to_instance_profile(InstanceProfileName="CleanroomAnalysis",
                                       RoleName="CleanroomAnalysis")
    analysis = ec2_b.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                                   InstanceType="m6i.large",
                                   IamInstanceProfile={"Name": "CleanroomAnalysis"},
                                   Placement={"AvailabilityZone": AZ})["Instances"][0]
    instance_id = analysis["InstanceId"]
    ec2_b.attach_volume(VolumeId=evidence_volume["VolumeId"], InstanceId=instance_id,
                        Device="/dev/sdf")
    registered = lab.admin("POST", "/_lab/ssm/managed-instances", account=forensics,
                           json={"instance_id": instance_id})
    assert registered.status_code == 201, registered.text
    online = []
    pages = ssm_b.get_paginator("describe_instance_information").paginate(
        PaginationConfig={"PageSize": 5})
    for page in pages:
        online += [i["InstanceId"] for i in page["InstanceInformationList"]
                   if i["PingStatus"] == "Online"]
    assert instance_id in online

    bucket = f"cleanroom-evidence-{forensics}"
    s3_b.create_bucket(Bucket=bucket)
    ssm_b.create_document(Name=DOCUMENT_NAME, DocumentType="Command", DocumentFormat="JSON",
                          Content=json.dumps(HASH_DOCUMENT))
    digest_key = f"cases/case-1/evidence/{member}/{evidence_volume['VolumeId']}.sha256"
    command = ssm_b.send_command(
        InstanceIds=[instance_id], DocumentName=DOCUMENT_NAME,
        Parameters={"volumeId": [evidence_volume["VolumeId"]], "bucket": [bucket],
                    "key": [digest_key]},
        OutputS3BucketName=bucket, OutputS3KeyPrefix="cases/case-1/ssm",
        TimeoutSeconds=600, Comment="case-1 hash evidence")["Command"]
    assert command["TargetCount"] == 1
    inv = wait_invocation(ssm_b, command["CommandId"], instance_id)
    assert inv["Status"] == "Success", inv["StandardErrorContent"]
    assert inv["ResponseCode"] == 0

    expected = f"sha256:{original}"
    assert inv["StandardOutputContent"].strip() == expected
    uploaded = s3_b.get_object(Bucket=bucket, Key=digest_key)["Body"].read().decode().strip()
    assert uploaded == expected
    stdout_key = (f"cases/case-1/ssm/{command['CommandId']}/{instance_id}/"
                  f"awsrunShellScript/hashDevice/stdout")
    assert inv["StandardOutputUrl"].endswith(f"/{bucket}/{stdout_key}")
    from_s3 = s3_b.get_object(Bucket=bucket, Key=stdout_key)["Body"].read().decode().strip()
    assert from_s3 == expected
    assert ssm_b.list_commands(CommandId=command["CommandId"])["Commands"][0]["Status"] == "Success"

    # And agentless: the evidence copy read over EBS direct has the same bytes.
    ebs_b = lab.client("ebs", account=forensics)
    blocks, token = [], None
    while True:
        page = ebs_b.list_snapshot_blocks(SnapshotId=evidence,
                                          **({"NextToken": token} if token else {}))
        blocks += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            break
    h = hashlib.sha256()
    position = 0
    with open(image, "rb") as f:
        for b in blocks:
            offset = b["BlockIndex"] * page["BlockSize"]
            hash_zeros(h, offset - position)
            data = ebs_b.get_snapshot_block(SnapshotId=evidence, BlockIndex=b["BlockIndex"],
                                            BlockToken=b["BlockToken"])["BlockData"].read()
            f.seek(offset)
            assert data == f.read(len(data))
            h.update(data)
            position = offset + len(data)
    hash_zeros(h, page["VolumeSize"] * GIB - position)
    assert h.hexdigest() == original
