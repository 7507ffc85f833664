"""sharing: createVolumePermission takes effect across accounts, with AWS's KMS rules."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from conftest import random_account

AZ = "us-east-1a"


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def snapshot_of_new_volume(ec2, **volume_args) -> str:
    vol = ec2.create_volume(AvailabilityZone=volume_args.pop("az", AZ), Size=1, **volume_args)
    return ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]


def share(ec2, snapshot_id: str, account: str) -> None:
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[account])


def describe(ec2, snapshot_id: str) -> dict:
    return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]


def key_policy(owner: str, *users: str) -> str:
    statements = [{"Sid": "owner", "Effect": "Allow",
                   "Principal": {"AWS": f"arn:aws:iam::{owner}:root"},
                   "Action": "kms:*", "Resource": "*"}]
    if users:
        statements.append({
            "Sid": "use by other accounts", "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{u}:root" for u in users]},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*",
                       "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"],
            "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def cmk(lab, account: str, *users: str, region: str = "us-east-1") -> str:
    kms = lab.client("kms", account=account, region=region)
    return kms.create_key(Policy=key_policy(account, *users))["KeyMetadata"]["Arn"]


@pytest.fixture
def accounts(fresh_account):
    return fresh_account, random_account(), random_account()


# -- the stock defect -------------------------------------------------------------------

def test_stock_moto_ignores_the_share(stock_lab, accounts):
    a, b, _ = accounts
    ea, eb = stock_lab.client("ec2", account=a), stock_lab.client("ec2", account=b)
    sid = snapshot_of_new_volume(ea)
    share(ea, sid, b)
    perms = ea.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    assert perms["CreateVolumePermissions"] == [{"UserId": b}]
    with pytest.raises(ClientError) as e:
        eb.describe_snapshots(SnapshotIds=[sid])
    assert code(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        eb.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")
    assert code(e) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as e:
        eb.create_volume(SnapshotId=sid, AvailabilityZone=AZ)
    assert code(e) == "InvalidSnapshot.NotFound"


def test_stock_moto_shares_default_key_snapshots(stock_lab, accounts):
    a, b, _ = accounts
    ea = stock_lab.client("ec2", account=a)
    sid = snapshot_of_new_volume(ea, Encrypted=True)
    share(ea, sid, b)  # AWS refuses this; stock moto does not
    assert describe(ea, sid).get("KmsKeyId") is None  # and it forgot the volume's key


# -- sharing takes effect ---------------------------------------------------------------

def test_shared_snapshot_is_visible_usable_and_revocable(lab, accounts):
    a, b, c = accounts
    ea, eb, ec = (lab.client("ec2", account=x) for x in (a, b, c))
    sid = snapshot_of_new_volume(ea)
    share(ea, sid, b)

    assert describe(eb, sid)["OwnerId"] == a
    assert [s["SnapshotId"] for s in eb.describe_snapshots(RestorableByUserIds=["self"])
            ["Snapshots"]] == [sid]
    assert [s["SnapshotId"] for s in eb.describe_snapshots(OwnerIds=[a])["Snapshots"]] == [sid]
    assert eb.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert sid in [s["SnapshotId"] for s in eb.describe_snapshots()["Snapshots"]]

    copy = eb.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")["SnapshotId"]
    got = describe(eb, copy)
    assert (got["OwnerId"], got["State"], got["Encrypted"]) == (b, "completed", False)
    vol = eb.create_volume(SnapshotId=sid, AvailabilityZone=AZ)
    assert (vol["SnapshotId"], vol["Size"], vol["State"]) == (sid, 1, "available")

    for other in (ec,):  # an account it was not shared with
        with pytest.raises(ClientError) as e:
            other.describe_snapshots(SnapshotIds=[sid])
        assert code(e) == "InvalidSnapshot.NotFound"
        assert sid in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            other.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")
        assert code(e) == "InvalidSnapshot.NotFound"
        with pytest.raises(ClientError) as e:
            other.create_volume(SnapshotId=sid, AvailabilityZone=AZ)
        assert code(e) == "InvalidSnapshot.NotFound"
        assert other.describe_snapshots(OwnerIds=[a])["Snapshots"] == []

    # The owner alone may change or read the permission.
    with pytest.raises(ClientError) as e:
        eb.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                     OperationType="add", UserIds=[c])
    assert code(e) == "InvalidSnapshot.NotFound"

    ea.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={"Remove": [{"UserId": b}]})
    for call in (lambda: eb.describe_snapshots(SnapshotIds=[sid]),
                 lambda: eb.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1"),
                 lambda: eb.create_volume(SnapshotId=sid, AvailabilityZone=AZ)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "InvalidSnapshot.NotFound"
    assert [s["SnapshotId"] for s in eb.describe_snapshots(RestorableByUserIds=["self"])
            ["Snapshots"]] == [copy]  # its own copy only
    # The copy B already made stays B's.
    assert describe(eb, copy)["State"] == "completed"


def test_structured_permission_form_and_restorable_by(lab, accounts):
    a, b, c = accounts
    ea, eb = lab.client("ec2", account=a), lab.client("ec2", account=b)
    sid = snapshot_of_new_volume(ea)
    ea.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={"Add": [{"UserId": b}]})
    assert ea.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")[
        "CreateVolumePermissions"] == [{"UserId": b}]
    mine = [s["SnapshotId"] for s in ea.describe_snapshots(RestorableByUserIds=[b])["Snapshots"]]
    assert mine == [sid]
    assert ea.describe_snapshots(RestorableByUserIds=[c])["Snapshots"] == []
    with pytest.raises(ClientError) as e:
        ea.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={
            "Add": [{"UserId": c}], "Remove": [{"UserId": b}]})
    assert code(e) == "InvalidParameterCombination"
    assert describe(eb, sid)["SnapshotId"] == sid


def test_public_share_reaches_everyone_but_not_for_encrypted(lab, accounts):
    a, _, c = accounts
    ea, ec = lab.client("ec2", account=a), lab.client("ec2", account=c)
    sid = snapshot_of_new_volume(ea)
    ea.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                 OperationType="add", GroupNames=["all"])
    assert describe(ec, sid)["OwnerId"] == a
    assert sid in [s["SnapshotId"] for s in ec.describe_snapshots(RestorableByUserIds=["all"])
                   ["Snapshots"]]
    enc = snapshot_of_new_volume(ea, Encrypted=True, KmsKeyId=cmk(lab, a))
    with pytest.raises(ClientError) as e:
        ea.modify_snapshot_attribute(SnapshotId=enc, Attribute="createVolumePermission",
                                     OperationType="add", GroupNames=["all"])
    assert code(e) == "OperationNotPermitted"


# -- KMS --------------------------------------------------------------------------------

@pytest.mark.parametrize("volume_key", [None, "alias/aws/ebs"])
def test_default_key_snapshots_cannot_be_shared(lab, accounts, volume_key):
    a, b, _ = accounts
    ea = lab.client("ec2", account=a)
    args = {"Encrypted": True} | ({"KmsKeyId": volume_key} if volume_key else {})
    sid = snapshot_of_new_volume(ea, **args)
    snap = describe(ea, sid)
    assert snap["Encrypted"] is True
    key = lab.client("kms", account=a).describe_key(KeyId=snap["KmsKeyId"])["KeyMetadata"]
    assert key["KeyManager"] == "AWS"
    with pytest.raises(ClientError) as e:
        share(ea, sid, b)
    assert code(e) == "OperationNotPermitted"
    assert "default key" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ea.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={"Add": [{"UserId": b}]})
    assert code(e) == "OperationNotPermitted"
    assert ea.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")[
        "CreateVolumePermissions"] == []


def test_snapshot_keeps_its_volumes_key(lab, accounts):
    a, _, _ = accounts
    ea = lab.client("ec2", account=a)
    key = cmk(lab, a)
    sid = snapshot_of_new_volume(ea, Encrypted=True, KmsKeyId=key)
    assert describe(ea, sid)["KmsKeyId"] == key


def test_reencrypt_share_and_copy_under_the_forensics_key(lab, accounts):
    a, b, _ = accounts
    ea, eb = lab.client("ec2", account=a), lab.client("ec2", account=b)
    source = snapshot_of_new_volume(ea, Encrypted=True)  # aws/ebs: not shareable
    key_a = cmk(lab, a, b)
    staged = ea.copy_snapshot(SourceSnapshotId=source, SourceRegion="us-east-1",
                              Encrypted=True, KmsKeyId=key_a)["SnapshotId"]
    got = describe(ea, staged)
    assert (got["State"], got["KmsKeyId"], got["Encrypted"]) == ("completed", key_a, True)
    share(ea, staged, b)
    key_b = cmk(lab, b)
    evidence = eb.copy_snapshot(SourceSnapshotId=staged, SourceRegion="us-east-1",
                                Encrypted=True, KmsKeyId=key_b)["SnapshotId"]
    got = describe(eb, evidence)
    assert (got["OwnerId"], got["State"], got["KmsKeyId"]) == (b, "completed", key_b)
    assert "StateMessage" not in got
    vol = eb.create_volume(SnapshotId=evidence, AvailabilityZone=AZ)
    assert (vol["Encrypted"], vol["KmsKeyId"], vol["State"]) == (True, key_b, "available")
    # Without KmsKeyId the copy is under B's own default EBS key.
    plain = eb.copy_snapshot(SourceSnapshotId=staged, SourceRegion="us-east-1")["SnapshotId"]
    got = describe(eb, plain)
    assert got["State"] == "completed" and got["KmsKeyId"].startswith(f"arn:aws:kms:us-east-1:{b}:")


def test_copy_fails_when_the_key_policy_does_not_name_the_account(lab, accounts):
    a, b, c = accounts
    ea, eb = lab.client("ec2", account=a), lab.client("ec2", account=b)
    key_a = cmk(lab, a, c)  # names C, not B
    sid = snapshot_of_new_volume(ea, Encrypted=True, KmsKeyId=key_a)
    share(ea, sid, b)
    copy = eb.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                            KmsKeyId=cmk(lab, b))["SnapshotId"]
    got = describe(eb, copy)
    assert (got["State"], got["StateMessage"]) == ("error", "Given key ID is not accessible")
    with pytest.raises(ClientError) as e:
        eb.create_volume(SnapshotId=copy, AvailabilityZone=AZ)
    assert code(e) == "IncorrectState"
    vol = eb.create_volume(SnapshotId=sid, AvailabilityZone=AZ)  # straight from the share
    assert vol["State"] == "error"

    # The same with a key that names B works; a Deny for B wins over an Allow.
    good = cmk(lab, a, b)
    sid2 = snapshot_of_new_volume(ea, Encrypted=True, KmsKeyId=good)
    share(ea, sid2, b)
    ok = eb.copy_snapshot(SourceSnapshotId=sid2, SourceRegion="us-east-1", Encrypted=True,
                          KmsKeyId=cmk(lab, b))["SnapshotId"]
    assert describe(eb, ok)["State"] == "completed"
    kms_a = lab.client("kms", account=a)
    policy = json.loads(key_policy(a, b))
    policy["Statement"].append({"Effect": "Deny", "Principal": {"AWS": b},
                                "Action": "kms:CreateGrant", "Resource": "*"})
    kms_a.put_key_policy(KeyId=good, PolicyName="default", Policy=json.dumps(policy))
    denied = eb.copy_snapshot(SourceSnapshotId=sid2, SourceRegion="us-east-1", Encrypted=True,
                              KmsKeyId=cmk(lab, b))["SnapshotId"]
    assert describe(eb, denied)["State"] == "error"


def test_copy_with_a_key_the_caller_cannot_use(lab, accounts):
    a, b, c = accounts
    ea = lab.client("ec2", account=a)
    sid = snapshot_of_new_volume(ea)
    foreign = cmk(lab, c)  # C's key, policy names only C
    bad = ea.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                           KmsKeyId=foreign)["SnapshotId"]
    assert describe(ea, bad)["State"] == "error"
    missing = ea.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                               KmsKeyId="alias/does-not-exist")["SnapshotId"]
    assert describe(ea, missing)["State"] == "error"
    lent = cmk(lab, c, a)  # C's key naming A: usable
    ok = ea.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                          KmsKeyId=lent)["SnapshotId"]
    assert describe(ea, ok)["State"] == "completed"
    kms_c = lab.client("kms", account=c)
    kms_c.disable_key(KeyId=lent.split("/")[-1])  # moto wants the bare id here
    off = ea.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1", Encrypted=True,
                           KmsKeyId=lent)["SnapshotId"]
    assert describe(ea, off)["State"] == "error"
    vol = ea.create_volume(AvailabilityZone=AZ, Size=1, Encrypted=True, KmsKeyId=foreign)
    assert vol["State"] == "error"


def test_cross_region_copy_of_a_shared_snapshot(lab, accounts):
    a, b, _ = accounts
    west_a = lab.client("ec2", account=a, region="us-west-2")
    sid = snapshot_of_new_volume(west_a, Encrypted=True,
                                 KmsKeyId=cmk(lab, a, b, region="us-west-2"), az="us-west-2a")
    share(west_a, sid, b)
    east_b = lab.client("ec2", account=b, region="us-east-1")
    with pytest.raises(ClientError) as e:  # regional: not there without SourceRegion
        east_b.describe_snapshots(SnapshotIds=[sid])
    assert code(e) == "InvalidSnapshot.NotFound"
    key_b = cmk(lab, b)
    copy = east_b.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-west-2", Encrypted=True,
                                KmsKeyId=key_b)["SnapshotId"]
    got = describe(east_b, copy)
    assert (got["State"], got["KmsKeyId"], got["OwnerId"]) == ("completed", key_b, b)
    # A key of the wrong region is not usable there.
    wrong = east_b.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-west-2", Encrypted=True,
                                 KmsKeyId=cmk(lab, b, region="us-west-2"))["SnapshotId"]
    assert describe(east_b, wrong)["State"] == "error"
