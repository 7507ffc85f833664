"""The three documents through the lab's SSM agent, as the analysis stage runs them: rendered
and registered with CreateDocument, sent with SendCommand to a managed analysis instance
whose instance profile may write the evidence bucket (Object Lock, COMPLIANCE default
retention), against an attached volume seeded with the fixture image."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from conftest import DOCS, SCRIPTS, digests, random_account
from test_render import DOCUMENTS, render

AZ = "us-east-1a"
REGION = "us-east-1"
CASE = "IR-2026-0042"
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def analysis_policy(bucket: str) -> dict:
    """What the documents need of the analysis instance's role, and no more (the lab
    evaluates it: iam_enforce): write evidence under cases/, read it back by version (the
    second check), HeadObject to refuse existing keys, multipart upload of image.raw.
    s3:ListBucket makes S3 answer a missing key with 404 instead of 403 (the lab answers 404
    either way)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow",
         "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts"],
         "Resource": f"arn:aws:s3:::{bucket}/cases/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}]}


@dataclass
class CleanRoom:
    account: str
    bucket: str
    instance: str
    volume: str
    ec2: object
    s3: object
    ssm: object

    def prefix(self, tag: str = "") -> str:
        volume = self.volume
        return f"cases/{CASE}{tag}/evidence/{self.account}/{self.instance}/{volume}/"

    def params(self, **over: str) -> dict:
        p = {"VolumeId": self.volume, "EvidenceBucket": self.bucket, "EvidencePrefix": self.prefix(),
             "Region": REGION, "CaseId": CASE}
        p.update(over)
        return {k: [v] for k, v in p.items()}

    def send(self, document: str, **over: str) -> str:
        return self.ssm.send_command(
            InstanceIds=[self.instance], DocumentName=document, Parameters=self.params(**over),
            OutputS3BucketName=self.bucket, OutputS3KeyPrefix=f"cases/{over.get('CaseId', CASE)}/ssm-output",
            TimeoutSeconds=600)["Command"]["CommandId"]

    def wait(self, command_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            inv = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance)
            if inv["Status"] in TERMINAL:
                return inv
            assert time.monotonic() < deadline, f"{command_id} still {inv['Status']}"
            time.sleep(0.5)

    def stdout_from_s3(self, command_id: str, step: str) -> str:
        key = f"cases/{CASE}/ssm-output/{command_id}/{self.instance}/awsrunShellScript/{step}/stdout"
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def object(self, key: str, version: str | None = None) -> bytes:
        kw = {"VersionId": version} if version else {}
        return self.s3.get_object(Bucket=self.bucket, Key=key, **kw)["Body"].read()


@pytest.fixture(scope="module")
def clean_room(lab, images):
    account = random_account()
    ec2, s3, iam, ssm = (lab.client(s, account=account) for s in ("ec2", "s3", "iam", "ssm"))
    bucket = f"cleanroom-evidence-{account}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    iam.create_role(RoleName="CleanroomAnalysis", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    iam.put_role_policy(RoleName="CleanroomAnalysis", PolicyName="evidence",
                        PolicyDocument=json.dumps(analysis_policy(bucket)))
    iam.create_instance_profile(InstanceProfileName="CleanroomAnalysis")
    iam.add_role_to_instance_profile(InstanceProfileName="CleanroomAnalysis", RoleName="CleanroomAnalysis")
    instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": AZ},
                                 IamInstanceProfile={"Name": "CleanroomAnalysis"})["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
    lab.admin_ok("PUT", f"/_lab/volumes/{volume}/data?path={images['plain']}", account=account)
    ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    r = lab.admin("POST", "/_lab/ssm/managed-instances", account=account, json={"instance_id": instance})
    assert r.status_code in (200, 201), r.text
    for name in DOCUMENTS:
        ssm.create_document(Content=render(str(DOCS / f"{name}.json")).decode(), Name=name,
                            DocumentType="Command", DocumentFormat="JSON")
    room = CleanRoom(account, bucket, instance, volume, ec2, s3, ssm)
    room.lab = lab
    # The role's policy is evaluated from here on (the harness's own role stays exempt).
    before = lab.admin_ok("GET", "/_lab/config").get("iam_enforce", False)
    lab.config(iam_enforce=True)
    try:
        yield room
    finally:
        lab.config(iam_enforce=before)


def volume_digests(room) -> dict:
    hs = {n: hashlib.new(n) for n in ("sha256", "sha1", "md5")}
    with room.lab.http.get(f"{room.lab.url}/_lab/volumes/{room.volume}/data", params={"account": room.account},
                           stream=True, timeout=300) as r:
        assert r.status_code == 200
        size = 0
        for chunk in r.iter_content(1 << 20):
            size += len(chunk)
            for h in hs.values():
                h.update(chunk)
    return {"bytes": size, **{n: f"{n}:{h.hexdigest()}" for n, h in hs.items()}}


def check_result_and_outputs(room, command_id, step, name):
    inv = room.wait(command_id)
    assert inv["Status"] == "Success", inv["StandardErrorContent"]
    result = json.loads(room.stdout_from_s3(command_id, step).rstrip("\n").split("\n")[-1])
    assert result["mode"] == "document" and result["case"] == CASE and result["volume_id"] == room.volume
    assert result["device"].endswith(f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{room.volume.replace('-', '')}")
    versions = {o["name"]: o["version_id"] for o in result["s3"]["objects"]}
    assert sorted(versions) == sorted(o["name"] for o in result["outputs"])
    for output in result["outputs"]:
        key = room.prefix() + output["name"]
        data = room.object(key, versions[output["name"]])
        got = {n: f"{n}:{hashlib.new(n, data).hexdigest()}" for n in ("sha256", "sha1", "md5")}
        assert got == {k: output[k] for k in got} and len(data) == output["size"], output["name"]
        # The bucket's default retention covers every object on S3. The lab (moto 5.2.5)
        # applies it to single PUTs only, not to CompleteMultipartUpload: image.raw is not
        # checked here (a lab gap, not the document's).
        if output["name"] != "image.raw":
            assert room.s3.head_object(Bucket=room.bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
    # The result file in S3 is the object the stdout's last line holds.
    assert json.loads(room.object(room.prefix() + name)) == result
    # The helpers written on the instance from the document are the repository's files.
    for helper, digest in result["helpers_sha256"].items():
        assert digest == digests(SCRIPTS / helper)["sha256"], helper
    return result


def test_disk_image_document_streams_the_volume_and_checks_it_twice(clean_room):
    room = clean_room
    r = check_result_and_outputs(room, room.send("Cleanroom-DiskImage"), "image", "image.json")
    want = volume_digests(room)
    assert {k: r[k] for k in want} == want
    image_raw = next(o for o in r["outputs"] if o["name"] == "image.raw")
    assert {k: image_raw[k] for k in ("sha256", "sha1", "md5")} == {k: want[k] for k in ("sha256", "sha1", "md5")}
    assert r["second_check"]["method"] == "s3-readback" and r["second_check"]["match"] is True
    assert r["second_check"]["sha256"] == want["sha256"]
    assert r["nvme_serial"] == room.volume.replace("-", "")
    assert r["filesystems"][0]["type"] == "Ext4"
    assert "aws" in r["tools"]


def test_triage_document_finds_the_intrusion(clean_room):
    room = clean_room
    r = check_result_and_outputs(room, room.send("Cleanroom-Triage"), "triage", "triage.json")
    kinds = {(f["kind"], f["path"]) for f in r["findings"]}
    for expected in [("tmp_executable", "/var/tmp/.x/kswapd0"), ("runs_from_tmp", "/var/spool/cron/crontabs/root"),
                     ("authorized_key", "/root/.ssh/authorized_keys"), ("ssh_login", "/var/log/auth.log"),
                     ("deleted_file", "/tmp/.x/install.sh")]:
        assert expected in kinds, expected
    assert {o["name"] for o in r["outputs"]} == {"key-files.tar.gz", "bodyfile.txt", "timeline.csv", "mmls.txt",
                                                 "fsstat.txt"}


def test_yara_document_finds_the_miner_and_the_backdoor(clean_room):
    room = clean_room
    r = check_result_and_outputs(room, room.send("Cleanroom-Yara"), "yara", "yara.json")
    hits = {(m["rule"], m["path"], m["deleted"]) for m in r["matches"]}
    assert ("Cleanroom_Miner_XMRig", "/var/tmp/.x/kswapd0", False) in hits
    assert ("Cleanroom_SSH_Backdoor_Known_Key_Comment", "/root/.ssh/authorized_keys", False) in hits
    assert ("Cleanroom_SSH_Key_Planted_By_Script", "/tmp/.x/install.sh", True) in hits
    assert r["outputs"] == [] and r["rules_sha256"].startswith("sha256:")


def test_existing_evidence_is_never_overwritten(clean_room):
    room = clean_room
    prefix = room.prefix("-rerun")
    first = room.wait(room.send("Cleanroom-Yara", EvidencePrefix=prefix, CaseId=f"{CASE}-rerun"))
    assert first["Status"] == "Success", first["StandardErrorContent"]
    again = room.wait(room.send("Cleanroom-Yara", EvidencePrefix=prefix, CaseId=f"{CASE}-rerun"))
    assert again["Status"] == "Failed" and again["ResponseCode"] == 7
    assert "exists already" in again["StandardErrorContent"].splitlines()[0]
    versions = room.s3.list_object_versions(Bucket=room.bucket, Prefix=prefix + "yara.json")["Versions"]
    assert len(versions) == 1


def test_a_volume_that_is_not_attached_is_named(clean_room):
    room = clean_room
    other = room.ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    prefix = f"cases/{CASE}/evidence/{room.account}/{room.instance}/{other}/"
    inv = room.wait(room.send("Cleanroom-Triage", VolumeId=other, EvidencePrefix=prefix))
    assert inv["Status"] == "Failed" and inv["ResponseCode"] == 6
    first = inv["StandardErrorContent"].splitlines()
    assert other in first[0] and "not attached" in first[0]
    assert room.volume.replace("-", "") in inv["StandardErrorContent"]  # what by-id holds


@pytest.mark.parametrize("bad", [
    {"VolumeId": "vol-0123456789abcdef0; reboot"},
    {"EvidencePrefix": "cases/x/../../other/"},
    {"Region": "us-east-1' && curl http://198.51.100.1 #"},
    {"CaseId": "case with spaces"},
    {"EvidenceBucket": "Not_A_Bucket"},
])
def test_bad_parameters_are_refused_before_anything_runs(clean_room, bad):
    room = clean_room
    before = len(room.ssm.list_commands()["Commands"])
    with pytest.raises(ClientError) as refused:
        room.send("Cleanroom-DiskImage", **bad)
    assert refused.value.response["Error"]["Code"] == "InvalidParameters"
    assert len(room.ssm.list_commands()["Commands"]) == before


def test_a_role_that_may_only_put_objects_is_not_enough(clean_room):
    # The documents read evidence back (HeadObject before writing, GetObject of the version
    # for the second check): a role with s3:PutObject alone fails before any work, naming it.
    room = clean_room
    iam = room.lab.client("iam", account=room.account)
    put_only = analysis_policy(room.bucket)
    put_only["Statement"][0]["Action"] = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    iam.put_role_policy(RoleName="CleanroomAnalysis", PolicyName="evidence", PolicyDocument=json.dumps(put_only))
    try:
        prefix = room.prefix("-putonly")
        inv = room.wait(room.send("Cleanroom-Yara", EvidencePrefix=prefix, CaseId=f"{CASE}-putonly"))
    finally:
        iam.put_role_policy(RoleName="CleanroomAnalysis", PolicyName="evidence",
                            PolicyDocument=json.dumps(analysis_policy(room.bucket)))
    assert inv["Status"] == "Failed" and inv["ResponseCode"] == 7
    assert "instance profile may read and write the bucket" in inv["StandardErrorContent"].splitlines()[0]


def test_a_volume_without_a_file_system_is_still_imaged(clean_room):
    # Evidence is imaged whatever it holds (encrypted, unknown, blank); only triage and
    # YARA need a file system they can read.
    room = clean_room
    blank = room.ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    room.ec2.attach_volume(VolumeId=blank, InstanceId=room.instance, Device="/dev/sdg")
    prefix = f"cases/{CASE}/evidence/{room.account}/{room.instance}/{blank}/"
    inv = room.wait(room.send("Cleanroom-DiskImage", VolumeId=blank, EvidencePrefix=prefix))
    assert inv["Status"] == "Success", inv["StandardErrorContent"]
    r = json.loads(room.object(prefix + "image.json"))
    zeros = hashlib.sha256()
    chunk = bytes(1 << 20)
    for _ in range(1024):
        zeros.update(chunk)
    assert r["sha256"] == f"sha256:{zeros.hexdigest()}" and r["second_check"]["match"] is True
    assert r["filesystems"] == [] and any("not a disk image" in w for w in r["warnings"])
    inv = room.wait(room.send("Cleanroom-Triage", VolumeId=blank, EvidencePrefix=prefix))
    assert inv["Status"] == "Failed" and inv["ResponseCode"] == 3
