"""faults: chosen AWS calls fail in a chosen account/region, in the service's own error
format; snapshots and copies can be made to end in state error."""

from __future__ import annotations

import json
import os

import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import random_account

AZ = "us-east-1a"
MARK = b"evidence-bytes"


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def status(excinfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def add_fault(lab, account: str, region: str = "us-east-1", **body) -> dict:
    r = lab.admin("POST", "/_lab/faults", json=body, account=account, region=region)
    assert r.status_code == 201, r.text
    return r.json()


def faults_of(lab, account: str) -> list[dict]:
    return [f for f in lab.admin_ok("GET", "/_lab/faults")["faults"] if f["account"] == account]


def snapshot_of(lab, ec2, account: str) -> tuple[str, str]:
    volume = ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    lab.admin_ok("PUT", f"/_lab/volumes/{volume}/data", data=MARK, account=account)
    snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    return volume, snap


def poll(ec2, snapshot_id: str) -> dict:
    return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]


def head_of(lab, account: str, snapshot_id: str) -> bytes:
    return lab.admin_ok("GET", f"/_lab/snapshots/{snapshot_id}/data?offset=0&length={len(MARK)}",
                        account=account)


# -- the stock defect -------------------------------------------------------------------

def test_stock_has_no_way_to_make_a_call_fail(stock_lab, fresh_account):
    r = stock_lab.admin("POST", "/_lab/faults", account=fresh_account,
                        json={"service": "ec2", "action": "CreateVolume", "code": "X"})
    assert r.status_code == 404
    ec2 = stock_lab.client("ec2", account=fresh_account)
    ec2.create_volume(AvailabilityZone=AZ, Size=1)  # and the call just works


# -- API errors, one test per wire format -------------------------------------------------

def test_ec2_error_matches_parameters_and_is_used_up(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    _vol, target = snapshot_of(lab, ec2, fresh_account)
    _vol, bystander = snapshot_of(lab, ec2, fresh_account)
    fault = add_fault(lab, fresh_account, service="ec2", action="ModifySnapshotAttribute",
                      code="UnauthorizedOperation", status=403, times=1,
                      message="You are not authorized to perform this operation.",
                      match={"SnapshotId": target})
    share = dict(Attribute="createVolumePermission", OperationType="add",
                 UserIds=["111122223333"])
    ec2.modify_snapshot_attribute(SnapshotId=bystander, **share)  # does not match
    with pytest.raises(ClientError) as e:
        ec2.modify_snapshot_attribute(SnapshotId=target, **share)
    assert (code(e), status(e)) == ("UnauthorizedOperation", 403)
    assert e.value.response["Error"]["Message"] == "You are not authorized to perform this operation."
    perms = ec2.describe_snapshot_attribute(SnapshotId=target, Attribute="createVolumePermission")
    assert perms["CreateVolumePermissions"] == []  # the refused call changed nothing
    ec2.modify_snapshot_attribute(SnapshotId=target, **share)  # times: 1, used up
    [listed] = faults_of(lab, fresh_account)
    assert (listed["id"], listed["hits"], listed["remaining"]) == (fault["id"], 1, 0)


def test_ec2_error_only_in_its_account_and_region(lab, fresh_account):
    add_fault(lab, fresh_account, region="eu-west-1", service="ec2", action="CreateVolume",
              code="InsufficientVolumeCapacity", times=None)
    lab.client("ec2", account=fresh_account).create_volume(AvailabilityZone=AZ, Size=1)
    west = lab.client("ec2", account=fresh_account, region="eu-west-1")
    for _ in range(2):  # times: null, until removed
        with pytest.raises(ClientError) as e:
            west.create_volume(AvailabilityZone="eu-west-1a", Size=1)
        assert (code(e), status(e)) == ("InsufficientVolumeCapacity", 400)
    other = lab.client("ec2", account=random_account(), region="eu-west-1")
    other.create_volume(AvailabilityZone="eu-west-1a", Size=1)


def test_ec2_list_member_match(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    a, b = (i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12345678", MinCount=2,
                                                       MaxCount=2)["Instances"])
    add_fault(lab, fresh_account, service="ec2", action="CreateTags", code="RequestLimitExceeded",
              status=503, match={"ResourceId": b})
    ec2.create_tags(Resources=[a], Tags=[{"Key": "case", "Value": "1"}])
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=[a, b], Tags=[{"Key": "case", "Value": "1"}])
    assert (code(e), status(e)) == ("RequestLimitExceeded", 503)


def test_after_call_the_call_happened_but_the_caller_sees_an_error(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    add_fault(lab, fresh_account, service="ec2", action="CreateVolume", code="InternalError",
              status=500, after_call=True)
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone=AZ, Size=1,
                          TagSpecifications=[{"ResourceType": "volume",
                                              "Tags": [{"Key": "case", "Value": "7"}]}])
    assert (code(e), status(e)) == ("InternalError", 500)
    made = ec2.describe_volumes(Filters=[{"Name": "tag:case", "Values": ["7"]}])["Volumes"]
    assert len(made) == 1


def test_query_errors_for_iam_and_sts(lab, fresh_account):
    iam = lab.client("iam", account=fresh_account)
    sts = lab.client("sts", account=fresh_account)
    iam.create_role(RoleName="Responder", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": f"arn:aws:iam::{fresh_account}:root"}}]}))
    # IAM is global: a fault filed under another region still applies.
    add_fault(lab, fresh_account, region="eu-west-1", service="iam", action="GetRole",
              code="NoSuchEntity", status=404, match={"RoleName": "Responder"})
    with pytest.raises(ClientError) as e:
        iam.get_role(RoleName="Responder")
    assert (code(e), status(e)) == ("NoSuchEntity", 404)
    assert e.value.response["Error"]["Type"] == "Sender"
    iam.get_role(RoleName="Responder")

    fault = add_fault(lab, fresh_account, service="sts", action="AssumeRole",
                      code="AccessDenied", status=403, times=None,
                      message="User is not authorized to perform: sts:AssumeRole")
    role = f"arn:aws:iam::{fresh_account}:role/Responder"
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            sts.assume_role(RoleArn=role, RoleSessionName="ir")
        assert (code(e), status(e)) == ("AccessDenied", 403)
    assert lab.admin_ok("DELETE", f"/_lab/faults/{fault['id']}")["hits"] == 2
    sts.assume_role(RoleArn=role, RoleSessionName="ir")


def test_json_errors_for_kms_ssm_and_cloudtrail(lab, fresh_account):
    kms = lab.client("kms", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    ct = lab.client("cloudtrail", account=fresh_account)
    add_fault(lab, fresh_account, service="kms", action="CreateKey", code="KMSInternalException",
              status=500)
    add_fault(lab, fresh_account, service="ssm", action="DescribeInstanceInformation",
              code="ThrottlingException", message="Rate exceeded")
    add_fault(lab, fresh_account, service="cloudtrail", action="LookupEvents",
              code="ThrottlingException", match={"LookupAttributes": [
                  {"AttributeKey": "EventName", "AttributeValue": "RunInstances"}]})
    with pytest.raises(ClientError) as e:
        kms.create_key()
    assert (code(e), status(e)) == ("KMSInternalException", 500)
    with pytest.raises(ClientError) as e:
        ssm.describe_instance_information()
    assert (code(e), e.value.response["Error"]["Message"]) == ("ThrottlingException", "Rate exceeded")
    ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "Other"}])
    with pytest.raises(ClientError) as e:
        ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName",
                                            "AttributeValue": "RunInstances"}])
    assert code(e) == "ThrottlingException"
    kms.create_key()


def test_json_1_0_error_body_and_content_type(lab, fresh_account):
    # DynamoDB speaks JSON 1.0: the answer must say so, with the code in __type.
    add_fault(lab, fresh_account, service="dynamodb", action="ListTables",
              code="ProvisionedThroughputExceededException")
    client = lab.client("dynamodb", account=fresh_account)
    captured = {}
    client.meta.events.register("after-call.dynamodb.ListTables",
                                lambda http_response, **_: captured.update(
                                    body=http_response.content,
                                    ctype=http_response.headers.get("Content-Type")))
    with pytest.raises(ClientError) as e:
        client.list_tables()
    assert code(e) == "ProvisionedThroughputExceededException"
    assert captured["ctype"] == "application/x-amz-json-1.0"
    assert json.loads(captured["body"])["__type"] == "ProvisionedThroughputExceededException"


def test_s3_errors_put_and_head(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    bucket = f"evidence-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    add_fault(lab, fresh_account, service="s3", action="PutObject", code="AccessDenied",
              status=403, message="Access Denied",
              match={"Bucket": bucket, "Key": "cases/1/manifest.json"})
    s3.put_object(Bucket=bucket, Key="cases/1/other.json", Body=b"{}")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="cases/1/manifest.json", Body=os.urandom(3 << 20))
    assert (code(e), status(e), e.value.response["Error"]["Message"]) == (
        "AccessDenied", 403, "Access Denied")
    # The connection is reused after the refused upload: the next request must be intact.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["cases/1/other.json"]
    add_fault(lab, fresh_account, service="s3", action="HeadObject", code="AccessDenied",
              status=403)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="cases/1/other.json")
    assert status(e) == 403  # HEAD answers carry no body, so no code either


def test_s3_error_raw_shape(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    bucket = f"raw-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    add_fault(lab, fresh_account, service="s3", action="GetObjectRetention",
              code="NoSuchObjectLockConfiguration", status=404)
    captured = {}
    s3.meta.events.register("after-call.s3.GetObjectRetention",
                            lambda http_response, **_: captured.update(
                                body=http_response.content, headers=http_response.headers))
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket=bucket, Key="k")
    assert code(e) == "NoSuchObjectLockConfiguration"
    assert captured["body"].startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                                       b"NoSuchObjectLockConfiguration</Code>")
    assert captured["headers"]["x-amz-request-id"]


def test_rest_json_error_for_ebs_direct(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    _vol, snap = snapshot_of(lab, ec2, fresh_account)
    add_fault(lab, fresh_account, service="ebs", action="ListSnapshotBlocks",
              code="ThrottlingException", status=400, match={"SnapshotId": snap})
    ebs = lab.client("ebs", account=fresh_account)
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap)
    assert code(e) == "ThrottlingException"
    assert ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]


# -- snapshots that end in error --------------------------------------------------------

def test_snapshot_error_after_the_progress_polls(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    volume, healthy = snapshot_of(lab, ec2, fresh_account)
    add_fault(lab, fresh_account, kind="snapshot_error", volume_id=volume,
              message="Snapshot creation failed.")
    lab.config(snapshot_polls=2)
    try:
        doomed = ec2.create_snapshot(VolumeId=volume)
        second = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]  # times: 1
    finally:
        lab.config(snapshot_polls=0)
    assert doomed["State"] == "pending"
    seen = [(s["State"], s.get("StateMessage")) for s in
            (poll(ec2, doomed["SnapshotId"]) for _ in range(3))]
    assert seen == [("pending", None), ("pending", None), ("error", "Snapshot creation failed.")]
    assert [poll(ec2, second)["State"] for _ in range(3)] == ["pending", "pending", "completed"]
    errored = ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["error"]}],
                                     OwnerIds=["self"])["Snapshots"]
    assert [s["SnapshotId"] for s in errored] == [doomed["SnapshotId"]]
    assert head_of(lab, fresh_account, doomed["SnapshotId"]) == bytes(len(MARK))  # no data
    assert head_of(lab, fresh_account, second) == MARK
    assert head_of(lab, fresh_account, healthy) == MARK
    with pytest.raises(ClientError) as e:
        ec2.copy_snapshot(SourceSnapshotId=doomed["SnapshotId"], SourceRegion="us-east-1")
    assert code(e) == "IncorrectState"
    with pytest.raises(ClientError) as e:
        lab.client("ebs", account=fresh_account).list_snapshot_blocks(
            SnapshotId=doomed["SnapshotId"])
    assert code(e) == "ValidationException"
    with pytest.raises(WaiterError) as e:  # the snapshot_completed waiter stops at once
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[doomed["SnapshotId"]],
                                                  WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    assert "terminal failure state" in str(e.value)


def test_snapshot_error_in_a_multi_volume_set(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": AZ})["Instances"][0]["InstanceId"]
    data = ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=data, InstanceId=iid, Device="/dev/sdf")
    add_fault(lab, fresh_account, kind="snapshot_error", volume_id=data)
    made = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]
    states = {s["VolumeId"]: (poll(ec2, s["SnapshotId"])["State"],
                              poll(ec2, s["SnapshotId"]).get("StateMessage")) for s in made}
    assert states.pop(data) == ("error", "Snapshot creation failed (lab fault injection)")
    assert list(states.values()) == [("completed", None)]


def test_copy_error(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    _vol, source = snapshot_of(lab, ec2, fresh_account)
    add_fault(lab, fresh_account, kind="copy_error", source_snapshot_id=source,
              message="Copy failed: internal error")
    failed = ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="us-east-1")["SnapshotId"]
    copied = ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="us-east-1")["SnapshotId"]
    got = poll(ec2, failed)
    assert (got["State"], got["StateMessage"]) == ("error", "Copy failed: internal error")
    assert poll(ec2, copied)["State"] == "completed"
    assert poll(ec2, source)["State"] == "completed"
    assert head_of(lab, fresh_account, failed) == bytes(len(MARK))
    assert head_of(lab, fresh_account, copied) == MARK
    with pytest.raises(ClientError) as e:
        ec2.create_volume(SnapshotId=failed, AvailabilityZone=AZ)
    assert code(e) == "IncorrectState"


# -- the routes ---------------------------------------------------------------------------

def test_routes_validate_list_delete_and_reset(lab, fresh_account):
    bad = [
        {"action": "CreateVolume", "code": "X"},                       # no service
        {"service": "ec2", "code": "X"},                               # no action
        {"service": "ec2", "action": "CreateVolume"},                  # no code
        {"service": "ec2", "action": "CreateVolume", "code": "X", "status": 200},
        {"service": "ec2", "action": "CreateVolume", "code": "X", "times": 0},
        {"service": "ec2", "action": "CreateVolume", "code": "X", "match": ["x"]},
        {"service": "ec2", "action": "CreateVolume", "code": "X", "colour": "red"},
        {"kind": "snapshot_error"},
        {"kind": "snapshot_error", "volume_id": "vol-1", "code": "X"},
        {"kind": "copy_error", "source_snapshot_id": "vol-1"},
        {"kind": "meteor"},
        ["not", "an", "object"],
    ]
    for body in bad:
        r = lab.admin("POST", "/_lab/faults", json=body, account=fresh_account)
        assert r.status_code == 400, (body, r.text)
    one = add_fault(lab, fresh_account, service="ec2", action="CreateVolume", code="X")
    add_fault(lab, fresh_account, kind="copy_error", source_snapshot_id="snap-0123456789abcdef0",
              times=None)
    assert {f["kind"] for f in faults_of(lab, fresh_account)} == {"api_error", "copy_error"}
    assert lab.admin("DELETE", "/_lab/faults/fault-000000000000").status_code == 404
    assert lab.admin_ok("DELETE", f"/_lab/faults/{one['id']}")["id"] == one["id"]
    assert [f["kind"] for f in faults_of(lab, fresh_account)] == ["copy_error"]
    assert lab.admin_ok("DELETE", "/_lab/faults")["deleted"] >= 1
    assert faults_of(lab, fresh_account) == []
    add_fault(lab, fresh_account, service="ec2", action="CreateVolume", code="X")
    lab.reset()
    assert lab.admin_ok("GET", "/_lab/faults")["faults"] == []
