"""iam_enforce: identity policies of IAM users and assumed roles decide (opt-in), and
cfn_roles: the roles of cleanroom's own CloudFormation templates, created in the lab."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from conftest import DEFAULT_ACCOUNT, LAB_DIR, random_account

sys.path.insert(0, str(LAB_DIR))
from labext import cfn_roles, iam_enforce  # noqa: E402  (pure parts, tested with plain data)
from labext.iam_enforce import Check, PolicySource, conditions_hold, decide  # noqa: E402

AMI = "ami-12345678"
ROOT_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{DEFAULT_ACCOUNT}:root"},
    "Action": "sts:AssumeRole"}]}


def allow(*actions: str, resource: str | list[str] = "*", **extra) -> dict:
    stmt = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    stmt.update(extra)
    return {"Version": "2012-10-17", "Statement": [stmt]}


@pytest.fixture
def enforcing(lab):
    lab.config(iam_enforce=True)
    lab.admin_ok("POST", "/_lab/iam-enforce/denials/reset")
    try:
        yield lab
    finally:
        lab.config(iam_enforce=False, iam_enforce_exempt_roles=["LabAdmin"])


def make_role(lab, account: str, name: str, *inline: dict, managed: list[dict] | None = None,
              trust: dict | None = None) -> None:
    """A role in ``account`` (made through the exempt LabAdmin session) trusting 123456789012."""
    iam = lab.client("iam", account=account)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or ROOT_TRUST))
    for i, doc in enumerate(inline):
        iam.put_role_policy(RoleName=name, PolicyName=f"inline-{i}", PolicyDocument=json.dumps(doc))
    for i, doc in enumerate(managed or []):
        arn = iam.create_policy(PolicyName=f"{name}-managed-{i}", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)


class Session:
    """Clients with the credentials of one sts:AssumeRole session."""

    def __init__(self, lab, account: str, role: str, session_name: str = "lab-test"):
        got = lab.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}",
                                            RoleSessionName=session_name)["Credentials"]
        self.lab, self.creds = lab, got

    def client(self, service: str, region: str = "us-east-1"):
        return self.lab.raw_client(service, self.creds["AccessKeyId"], self.creds["SecretAccessKey"],
                                   self.creds["SessionToken"], region=region)


def error_of(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call()
    r = info.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"].get("Message", "")


def launch(lab, account: str, **tags: str) -> str:
    kw = {}
    if tags:
        kw["TagSpecifications"] = [{"ResourceType": "instance",
                                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return lab.client("ec2", account=account).run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, **kw)["Instances"][0]["InstanceId"]


# --- the brief's case: a role allowed only ec2:DescribeInstances ---------------------------


@pytest.fixture
def describe_only(lab, fresh_account):
    make_role(lab, fresh_account, "DescribeOnly", allow("ec2:DescribeInstances"))
    return fresh_account, launch(lab, fresh_account), Session(lab, fresh_account, "DescribeOnly")


def test_role_allowed_only_describe_instances_is_refused_everything_else(enforcing, describe_only):
    account, instance_id, session = describe_only
    ec2, s3 = session.client("ec2"), session.client("s3")
    reservations = ec2.describe_instances()["Reservations"]
    assert instance_id in [i["InstanceId"] for r in reservations for i in r["Instances"]]

    status, code, message = error_of(lambda: ec2.create_security_group(GroupName="x", Description="x"))
    assert (status, code) == (403, "UnauthorizedOperation")
    assert (f"User: arn:aws:sts::{account}:assumed-role/DescribeOnly/lab-test is not authorized to "
            f"perform: ec2:CreateSecurityGroup") in message
    assert "because no identity-based policy allows the ec2:CreateSecurityGroup action" in message

    status, code, message = error_of(lambda: s3.create_bucket(Bucket=f"denied-{account}"))
    assert (status, code) == (403, "AccessDenied")
    assert f'on resource: "arn:aws:s3:::denied-{account}"' in message

    # A DryRun answers DryRunOperation only when allowed; refused, it is UnauthorizedOperation.
    status, code, message = error_of(lambda: ec2.modify_instance_attribute(
        InstanceId=instance_id, DisableApiTermination={"Value": True}, DryRun=True))
    assert (status, code) == (403, "UnauthorizedOperation")
    assert f"on resource: arn:aws:ec2:us-east-1:{account}:instance/{instance_id}" in message

    denials = enforcing.admin_ok("GET", "/_lab/iam-enforce/denials")["denials"]
    assert [d["action"] for d in denials] == ["ec2:CreateSecurityGroup", "s3:CreateBucket",
                                              "ec2:ModifyInstanceAttribute"]
    assert denials[-1]["dry_run"] is True


def test_the_same_calls_succeed_with_enforcement_off(lab, describe_only):
    assert lab.admin_ok("GET", "/_lab/config")["iam_enforce"] is False
    account, instance_id, session = describe_only
    ec2, s3 = session.client("ec2"), session.client("s3")
    ec2.create_security_group(GroupName="allowed-when-off", Description="x")
    s3.create_bucket(Bucket=f"allowed-{account}")
    assert error_of(lambda: ec2.modify_instance_attribute(
        InstanceId=instance_id, DisableApiTermination={"Value": True}, DryRun=True))[1] == "DryRunOperation"


def test_stock_moto_ignores_identity_policies(stock_lab):
    account = random_account()
    iam = stock_lab.client("iam")
    iam.create_role(RoleName=f"DescribeOnly{account}", AssumeRolePolicyDocument=json.dumps(ROOT_TRUST))
    iam.put_role_policy(RoleName=f"DescribeOnly{account}", PolicyName="p",
                        PolicyDocument=json.dumps(allow("ec2:DescribeInstances")))
    session = Session(stock_lab, DEFAULT_ACCOUNT, f"DescribeOnly{account}")
    session.client("ec2").create_security_group(GroupName=f"stock-{account}", Description="x")


def test_an_allowed_dry_run_answers_dry_run_operation(enforcing, fresh_account):
    mine, other = launch(enforcing, fresh_account), launch(enforcing, fresh_account)
    make_role(enforcing, fresh_account, "ProtectOne", allow(
        "ec2:ModifyInstanceAttribute", resource=f"arn:aws:ec2:*:{fresh_account}:instance/{mine}"))
    ec2 = Session(enforcing, fresh_account, "ProtectOne").client("ec2")

    def protect(iid):
        return lambda: ec2.modify_instance_attribute(
            InstanceId=iid, DisableApiTermination={"Value": True}, DryRun=True)

    assert error_of(protect(mine))[1] == "DryRunOperation"
    assert error_of(protect(other))[1] == "UnauthorizedOperation"


# --- evaluation --------------------------------------------------------------------------


def test_an_explicit_deny_wins_over_any_allow(enforcing, fresh_account):
    instance_id = launch(enforcing, fresh_account)
    make_role(enforcing, fresh_account, "AllButTerminate", allow("ec2:*"),
              managed=[{"Version": "2012-10-17", "Statement": [
                  {"Sid": "NeverDestroy", "Effect": "Deny", "Action": ["ec2:TerminateInstances"],
                   "Resource": "*"}]}])
    ec2 = Session(enforcing, fresh_account, "AllButTerminate").client("ec2")
    ec2.describe_instances()
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "case", "Value": "c1"}])
    status, code, message = error_of(lambda: ec2.terminate_instances(InstanceIds=[instance_id]))
    assert (status, code) == (403, "UnauthorizedOperation")
    assert "with an explicit deny in an identity-based policy" in message
    denial = enforcing.admin_ok("GET", "/_lab/iam-enforce/denials")["denials"][-1]
    assert denial["reason"] == "explicit_deny_identity"
    assert "statement NeverDestroy" in denial["decided_by"]


def test_root_keys_and_admin_seeding_stay_unrestricted(enforcing, fresh_account):
    enforcing.client("ec2").create_security_group(GroupName=f"root-{fresh_account}", Description="x")
    lab_key = enforcing.raw_client("ec2", "AKIALABLABLABLAB0000", "lab-secret-not-a-real-credential")
    lab_key.create_security_group(GroupName=f"rust-{fresh_account}", Description="x")
    seeding = enforcing.client("ec2")
    seeding.meta.events.register("before-sign.ec2.*", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", fresh_account))
    group = seeding.create_security_group(GroupName="seeded", Description="x")["GroupId"]
    owner = enforcing.client("ec2", account=fresh_account).describe_security_groups(GroupIds=[group])
    assert owner["SecurityGroups"][0]["OwnerId"] == fresh_account
    assert enforcing.admin_ok("GET", "/_lab/iam-enforce/denials")["denied"] == 0


def test_the_harness_role_is_exempt_until_the_option_says_otherwise(enforcing, fresh_account):
    ec2 = enforcing.client("ec2", account=fresh_account)  # a LabAdmin session, no policies
    ec2.create_security_group(GroupName="exempt", Description="x")
    enforcing.config(iam_enforce_exempt_roles=[])
    assert error_of(lambda: ec2.create_security_group(GroupName="not-exempt", Description="x"))[1] \
        == "UnauthorizedOperation"


def test_iam_user_keys_are_evaluated_with_their_groups(enforcing, fresh_account):
    iam = enforcing.client("iam", account=fresh_account)
    iam.create_user(UserName="responder")
    iam.put_user_policy(UserName="responder", PolicyName="p", PolicyDocument=json.dumps(
        allow("s3:ListAllMyBuckets")))
    iam.create_group(GroupName="readers")
    iam.add_user_to_group(GroupName="readers", UserName="responder")
    iam.put_group_policy(GroupName="readers", PolicyName="g", PolicyDocument=json.dumps(
        allow("ec2:DescribeRegions")))
    key = iam.create_access_key(UserName="responder")["AccessKey"]
    s3 = enforcing.raw_client("s3", key["AccessKeyId"], key["SecretAccessKey"])
    ec2 = enforcing.raw_client("ec2", key["AccessKeyId"], key["SecretAccessKey"])
    s3.list_buckets()
    ec2.describe_regions()
    status, code, message = error_of(lambda: s3.create_bucket(Bucket=f"user-{fresh_account}"))
    assert (status, code) == (403, "AccessDenied")
    assert f"User: arn:aws:iam::{fresh_account}:user/responder is not authorized" in message


SERVICE_DENIALS = [
    # client, call, HTTP status, code
    ("kms", lambda c: c.list_keys(), 400, "AccessDeniedException"),
    ("ssm", lambda c: c.describe_instance_information(), 400, "AccessDeniedException"),
    ("cloudtrail", lambda c: c.lookup_events(), 400, "AccessDeniedException"),
    ("iam", lambda c: c.get_role(RoleName="Nothing"), 403, "AccessDenied"),
    ("sts", lambda c: c.assume_role(RoleArn="arn:aws:iam::123456789012:role/X",
                                    RoleSessionName="xx"), 403, "AccessDenied"),
    ("autoscaling", lambda c: c.describe_auto_scaling_groups(), 403, "AccessDenied"),
    ("elbv2", lambda c: c.describe_target_groups(), 403, "AccessDenied"),
    ("elb", lambda c: c.describe_load_balancers(), 403, "AccessDenied"),
    ("s3", lambda c: c.list_buckets(), 403, "AccessDenied"),
    ("ec2", lambda c: c.describe_volumes(), 403, "UnauthorizedOperation"),
]


@pytest.fixture
def nothing_allowed(lab, fresh_account):
    make_role(lab, fresh_account, "Nothing", allow("sqs:ListQueues"))
    return Session(lab, fresh_account, "Nothing")


@pytest.mark.parametrize("service,call,status,code", SERVICE_DENIALS, ids=[d[0] for d in SERVICE_DENIALS])
def test_each_service_refuses_in_its_own_format(enforcing, nothing_allowed, service, call, status, code):
    got = error_of(lambda: call(nothing_allowed.client(service)))
    assert got[:2] == (status, code)
    assert "is not authorized to perform" in got[2]


def test_get_caller_identity_is_always_allowed(enforcing, nothing_allowed):
    assert ":assumed-role/Nothing/" in nothing_allowed.client("sts").get_caller_identity()["Arn"]


def test_snapshot_arns_carry_no_account(enforcing, fresh_account):
    ec2_admin = enforcing.client("ec2", account=fresh_account)
    vol = ec2_admin.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    snap = ec2_admin.create_snapshot(VolumeId=vol)["SnapshotId"]
    make_role(enforcing, fresh_account, "TagWithAccount",
              allow("ec2:CreateTags", resource=f"arn:aws:ec2:*:{fresh_account}:snapshot/*"))
    make_role(enforcing, fresh_account, "TagWithoutAccount",
              allow("ec2:CreateTags", resource="arn:aws:ec2:*::snapshot/*"))

    def tag(role):
        return lambda: Session(enforcing, fresh_account, role).client("ec2").create_tags(
            Resources=[snap], Tags=[{"Key": "case", "Value": "c"}])

    status, code, message = error_of(tag("TagWithAccount"))
    assert code == "UnauthorizedOperation"
    assert f"on resource: arn:aws:ec2:us-east-1::snapshot/{snap}" in message
    tag("TagWithoutAccount")()


def test_conditions_on_share_targets_and_resource_tags(enforcing, fresh_account):
    forensics, stranger = "444455556666", "777788889999"
    ec2_admin = enforcing.client("ec2", account=fresh_account)
    vol = ec2_admin.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    snap = ec2_admin.create_snapshot(VolumeId=vol)["SnapshotId"]
    analysis = launch(enforcing, fresh_account, **{"cleanroom:role": "analysis"})
    suspect = launch(enforcing, fresh_account)
    make_role(enforcing, fresh_account, "HandOff", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:ModifySnapshotAttribute", "Resource": "arn:aws:ec2:*::snapshot/*",
         "Condition": {"StringEquals": {"ec2:Add/userId": forensics}}},
        {"Effect": "Allow", "Action": "ec2:ModifySnapshotAttribute", "Resource": "arn:aws:ec2:*::snapshot/*",
         "Condition": {"Null": {"ec2:Add/userId": "true"}}},
        {"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/cleanroom:role": "analysis"}}},
    ]})
    ec2 = Session(enforcing, fresh_account, "HandOff").client("ec2")

    def share(op: str, account: str):
        return lambda: ec2.modify_snapshot_attribute(
            SnapshotId=snap, Attribute="createVolumePermission", OperationType=op, UserIds=[account])

    share("add", forensics)()
    assert error_of(share("add", stranger))[1] == "UnauthorizedOperation"
    share("remove", forensics)()
    ec2.terminate_instances(InstanceIds=[analysis])
    assert error_of(lambda: ec2.terminate_instances(InstanceIds=[suspect]))[1] == "UnauthorizedOperation"


def test_sessions_issued_before_a_revocation_are_denied(enforcing, fresh_account):
    """cleanroom's containment: an inline Deny with DateLessThan aws:TokenIssueTime."""
    make_role(enforcing, fresh_account, "Compromised", allow("ec2:DescribeInstances"))
    old = Session(enforcing, fresh_account, "Compromised").client("ec2")
    old.describe_instances()
    cutoff = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    enforcing.client("iam", account=fresh_account).put_role_policy(
        RoleName="Compromised", PolicyName="revoke-older-sessions", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Action": "*", "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}}}]}))
    status, code, message = error_of(old.describe_instances)
    assert code == "UnauthorizedOperation" and "explicit deny" in message
    while datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") < cutoff:
        time.sleep(0.1)  # a session issued at or after the cutoff is not revoked
    Session(enforcing, fresh_account, "Compromised").client("ec2").describe_instances()


def test_instance_profiles_need_pass_role(enforcing, fresh_account):
    iam = enforcing.client("iam", account=fresh_account)
    iam.create_role(RoleName="Workload", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    iam.create_instance_profile(InstanceProfileName="Workload")
    iam.add_role_to_instance_profile(InstanceProfileName="Workload", RoleName="Workload")
    instance_id = launch(enforcing, fresh_account)
    make_role(enforcing, fresh_account, "Restorer", allow("ec2:AssociateIamInstanceProfile"))
    ec2 = Session(enforcing, fresh_account, "Restorer").client("ec2")

    def associate():
        return ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": "Workload"},
                                                  InstanceId=instance_id)

    status, code, message = error_of(associate)
    assert "iam:PassRole" in message and "role/Workload" in message
    iam.put_role_policy(RoleName="Restorer", PolicyName="pass", PolicyDocument=json.dumps(allow(
        "iam:PassRole", resource=f"arn:aws:iam::{fresh_account}:role/Workload",
        Condition={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})))
    associate()


def test_object_lock_headers_need_put_object_retention(enforcing, fresh_account):
    bucket = f"locked-{fresh_account}"
    s3_admin = enforcing.client("s3", account=fresh_account)
    s3_admin.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    make_role(enforcing, fresh_account, "Writer", allow("s3:PutObject", resource=f"arn:aws:s3:::{bucket}/cases/*"))
    s3 = Session(enforcing, fresh_account, "Writer").client("s3")
    until = datetime.now(timezone.utc) + timedelta(days=1)

    def put(key: str, **kw):
        return lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"evidence", ChecksumAlgorithm="SHA256", **kw)

    put("cases/c1/plain.json")()
    status, code, message = error_of(put("cases/c1/locked.json", ObjectLockMode="COMPLIANCE",
                                         ObjectLockRetainUntilDate=until))
    assert (status, code) == (403, "AccessDenied") and "s3:PutObjectRetention" in message
    assert error_of(put("elsewhere/x"))[1] == "AccessDenied"
    enforcing.client("iam", account=fresh_account).put_role_policy(
        RoleName="Writer", PolicyName="retention", PolicyDocument=json.dumps(
            allow("s3:PutObjectRetention", resource=f"arn:aws:s3:::{bucket}/cases/*")))
    put("cases/c1/locked.json", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)()


def test_ebs_use_of_a_customer_key_needs_the_callers_kms_permissions(enforcing, fresh_account):
    ec2_admin = enforcing.client("ec2", account=fresh_account)
    vol = ec2_admin.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    snap = ec2_admin.create_snapshot(VolumeId=vol)["SnapshotId"]
    key = enforcing.client("kms", account=fresh_account).create_key()["KeyMetadata"]["Arn"]
    make_role(enforcing, fresh_account, "Copier", allow("ec2:CopySnapshot"))
    ec2 = Session(enforcing, fresh_account, "Copier").client("ec2")

    def copy(**kw):
        return lambda: ec2.copy_snapshot(SourceSnapshotId=snap, SourceRegion="us-east-1", **kw)

    copy(Encrypted=True)()  # the account's AWS managed aws/ebs key: no identity Allow needed
    status, code, message = error_of(copy(Encrypted=True, KmsKeyId=key))
    assert code == "UnauthorizedOperation" and f"kms:DescribeKey on resource: {key}" in message
    enforcing.client("iam", account=fresh_account).put_role_policy(
        RoleName="Copier", PolicyName="key", PolicyDocument=json.dumps(allow(
            "kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", resource=key,
            Condition={"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}})))
    copy(Encrypted=True, KmsKeyId=key)()


def test_a_permissions_boundary_limits_an_allow(enforcing, fresh_account):
    iam = enforcing.client("iam", account=fresh_account)
    boundary = iam.create_policy(PolicyName="only-describe", PolicyDocument=json.dumps(
        allow("ec2:Describe*")))["Policy"]["Arn"]
    iam.create_role(RoleName="Bounded", AssumeRolePolicyDocument=json.dumps(ROOT_TRUST),
                    PermissionsBoundary=boundary)
    iam.put_role_policy(RoleName="Bounded", PolicyName="all", PolicyDocument=json.dumps(allow("ec2:*")))
    ec2 = Session(enforcing, fresh_account, "Bounded").client("ec2")
    ec2.describe_regions()
    message = error_of(lambda: ec2.create_security_group(GroupName="b", Description="b"))[2]
    assert "because no permissions boundary allows the ec2:CreateSecurityGroup action" in message


def test_evaluate_route_answers_without_calling(enforcing, fresh_account):
    make_role(enforcing, fresh_account, "Tagger", allow("ec2:CreateTags", resource="arn:aws:ec2:*::snapshot/*"))
    arn = f"arn:aws:iam::{fresh_account}:role/Tagger"
    yes = enforcing.admin_ok("POST", "/_lab/iam-enforce/evaluate", json={
        "principal_arn": arn, "action": "ec2:CreateTags",
        "resource": "arn:aws:ec2:us-east-1::snapshot/snap-0123456789abcdef0"})
    no = enforcing.admin_ok("POST", "/_lab/iam-enforce/evaluate", json={
        "principal_arn": arn, "action": "ec2:DeleteTags", "resource": "*"})
    assert yes["allowed"] is True and no["allowed"] is False
    assert "no identity-based policy allows the ec2:DeleteTags action" in no["message"]


# --- the evaluator, with plain data -------------------------------------------------------


def _decide(doc: dict, action: str, resource: str = "*", **context: list[str]) -> bool:
    return decide([PolicySource("test", doc)], None, None, Check(action, resource, {}),
                  {k.lower().replace("__", "/").replace("_", ":", 1): v for k, v in context.items()}).allowed


def test_actions_and_resources_match_with_wildcards_per_arn_segment():
    doc = allow("ec2:Describe*", "S3:getobject", resource=["arn:aws:ec2:*:111122223333:instance/*",
                                                             "arn:aws:s3:::bucket/cases/*"])
    assert _decide(doc, "ec2:DescribeInstances", "arn:aws:ec2:us-east-1:111122223333:instance/i-1")
    assert _decide(doc, "s3:GetObject", "arn:aws:s3:::bucket/cases/a/b")
    assert not _decide(doc, "ec2:DescribeInstances", "arn:aws:ec2:us-east-1:999999999999:instance/i-1")
    assert not _decide(doc, "ec2:DescribeInstances", "*")  # resource-scoped statement, no-resource action
    assert not _decide(doc, "ec2:ModifyInstanceAttribute", "arn:aws:ec2:us-east-1:111122223333:instance/i-1")
    # A wildcard does not cross the colon before the resource part.
    assert not _decide(allow("ec2:X", resource="arn:aws:ec2:*:111122223333*"),
                       "ec2:X", "arn:aws:ec2:us-east-1:111122223333:instance/i-1")


def test_not_action_and_not_resource():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"}]}
    assert _decide(doc, "ec2:RunInstances", "*")
    assert not _decide(doc, "iam:PutRolePolicy", "*")
    assert not _decide(doc, "s3:GetObject", "arn:aws:s3:::secret/k")


def test_condition_operators():
    ctx = {"aws:tokenissuetime": ["2026-01-01T00:00:00Z"], "ec2:add/userid": ["111122223333"],
           "aws:tagkeys": ["case", "owner"], "aws:sourceip": ["127.0.0.1"], "s3:max-keys": ["10"]}
    assert conditions_hold({"DateLessThan": {"aws:TokenIssueTime": "2026-01-02T00:00:00Z"}}, ctx)
    assert not conditions_hold({"DateGreaterThan": {"aws:TokenIssueTime": "2026-01-02T00:00:00Z"}}, ctx)
    assert conditions_hold({"StringEquals": {"ec2:Add/userId": ["111122223333", "2"]}}, ctx)
    assert not conditions_hold({"StringNotEquals": {"ec2:Add/userId": "111122223333"}}, ctx)
    # Absent keys: positive operators fail, negated ones and IfExists hold; Null tests presence.
    assert not conditions_hold({"StringEquals": {"aws:ResourceTag/x": "y"}}, ctx)
    assert conditions_hold({"StringNotEquals": {"aws:ResourceTag/x": "y"}}, ctx)
    assert conditions_hold({"StringEqualsIfExists": {"aws:ResourceTag/x": "y"}}, ctx)
    assert conditions_hold({"Null": {"aws:ResourceTag/x": "true", "ec2:Add/userId": "false"}}, ctx)
    assert conditions_hold({"ForAllValues:StringEquals": {"aws:TagKeys": ["case", "owner", "x"]}}, ctx)
    assert not conditions_hold({"ForAllValues:StringEquals": {"aws:TagKeys": ["case"]}}, ctx)
    assert conditions_hold({"ForAnyValue:StringLike": {"aws:TagKeys": "ow*"}}, ctx)
    assert conditions_hold({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}, ctx)
    assert conditions_hold({"NumericLessThanEquals": {"s3:max-keys": "10"}}, ctx)
    assert conditions_hold({"Bool": {"aws:SecureTransport": True}}, {"aws:securetransport": ["true"]})
    with pytest.raises(iam_enforce.UnknownOperator):
        conditions_hold({"StringSortOf": {"k": "v"}}, ctx)


def test_policy_variables_and_unmodelled_operators():
    doc = allow("s3:GetObject", resource="arn:aws:s3:::home/${aws:username}/*")
    assert _decide(doc, "s3:GetObject", "arn:aws:s3:::home/alice/x", aws_username=["alice"])
    assert not _decide(doc, "s3:GetObject", "arn:aws:s3:::home/bob/x", aws_username=["alice"])
    weird = allow("ec2:X", Condition={"StringSortOf": {"k": "v"}})
    assert not _decide(weird, "ec2:X")  # an Allow with an unknown operator allows nothing


def test_decide_explains_boundaries_and_session_policies():
    identity = [PolicySource("id", allow("ec2:*"))]
    boundary = PolicySource("b", allow("ec2:Describe*"))
    session = PolicySource("s", allow("ec2:DescribeInstances"))
    check = Check("ec2:DescribeRegions", "*")
    assert decide(identity, boundary, None, check, {}).allowed
    assert decide(identity, boundary, session, check, {}).reason == "no_session_allow"
    assert decide(identity, boundary, None, Check("ec2:RunInstances", "*"), {}).reason == "no_boundary_allow"


# --- roles from the shipped CloudFormation templates --------------------------------------

MEMBER = "cloudformation/member-account.yaml"
FORENSICS = "cloudformation/forensics-account.yaml"
FORENSICS_ACCOUNT = "444455556666"
HAND_OFF_KEY = f"arn:aws:kms:us-east-1:{FORENSICS_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MEMBER_PARAMS = {"ResponderPrincipalArn": f"arn:aws:iam::{DEFAULT_ACCOUNT}:root",
                 "ForensicsAccountId": FORENSICS_ACCOUNT}
# The member stack creates its hand-off key: the lab is given its ARN.
MEMBER_RESOURCES = {"HandOffKey": {"Arn": HAND_OFF_KEY}}


def forensics_params(bucket: str) -> dict:
    return {"ResponderPrincipalArn": f"arn:aws:iam::{DEFAULT_ACCOUNT}:root",
            "MemberAccountIds": "111122223333,222233334444", "EvidenceBucketName": bucket,
            "S3PrefixListId": "pl-63a5400a"}


def test_yaml_short_tags_become_long_forms():
    doc = cfn_roles.load_template("""
Resources:
  R:
    Type: AWS::IAM::Role
    Properties:
      A: !Ref P
      B: !Sub arn:${AWS::Partition}:s3:::${Bucket}/*
      C: !GetAtt Bucket.Arn
      D: !Select [0, !GetAZs ""]
      E: !Join [",", [a, b]]
""")
    props = doc["Resources"]["R"]["Properties"]
    assert props == {"A": {"Ref": "P"}, "B": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/*"},
                     "C": {"Fn::GetAtt": ["Bucket", "Arn"]},
                     "D": {"Fn::Select": [0, {"Fn::GetAZs": ""}]}, "E": {"Fn::Join": [",", ["a", "b"]]}}


def test_member_template_role_is_created_as_the_template_says(lab, fresh_account):
    got = lab.admin_ok("POST", f"/_lab/accounts/{fresh_account}/roles-from-template",
                       json={"template": MEMBER, "role": "ResponderRole", "parameters": MEMBER_PARAMS,
                             "resources": MEMBER_RESOURCES})
    assert got["created"] is True
    assert got["arn"] == f"arn:aws:iam::{fresh_account}:role/CleanroomResponder"
    assert got["max_session_duration"] == 14400
    assert got["trust_policy"]["Statement"][0]["Principal"] == {"AWS": MEMBER_PARAMS["ResponderPrincipalArn"]}
    assert sorted(got["inline_policies"]) == ["cleanroom-capture", "cleanroom-contain",
                                              "cleanroom-hand-off", "cleanroom-never-destroy"]
    contain = got["inline_policies"]["cleanroom-contain"]["Statement"]
    assert f"arn:aws:ec2:*:{fresh_account}:instance/*" in contain[0]["Resource"]
    hand_off = {s["Sid"]: s for s in got["inline_policies"]["cleanroom-hand-off"]["Statement"]}
    assert hand_off["ShareWithForensicsOnly"]["Condition"]["StringEquals"] == {"ec2:Add/userId": FORENSICS_ACCOUNT}
    assert hand_off["EncryptRelayCopiesUnderHandOffKey"]["Resource"] == HAND_OFF_KEY
    # What IAM now holds is what the answer says.
    iam = lab.client("iam", account=fresh_account)
    stored = iam.get_role_policy(RoleName="CleanroomResponder", PolicyName="cleanroom-hand-off")
    assert stored["PolicyDocument"] == got["inline_policies"]["cleanroom-hand-off"]
    assert iam.get_role(RoleName="CleanroomResponder")["Role"]["MaxSessionDuration"] == 14400
    again = lab.admin("POST", f"/_lab/accounts/{fresh_account}/roles-from-template",
                      json={"template": MEMBER, "role": "ResponderRole", "parameters": MEMBER_PARAMS,
                             "resources": MEMBER_RESOURCES})
    assert again.status_code == 200 and again.json()["created"] is False
    assert len(iam.list_role_policies(RoleName="CleanroomResponder")["PolicyNames"]) == 4


def test_forensics_role_names_every_resource_it_cannot_resolve(lab, fresh_account):
    r = lab.admin("POST", f"/_lab/accounts/{fresh_account}/roles-from-template",
                  json={"template": FORENSICS, "role": "ForensicsRole",
                        "parameters": forensics_params(f"evidence-{fresh_account}")})
    assert r.status_code == 400
    error = r.json()["error"]
    for construct in ("Fn::GetAtt EvidenceKey.Arn", "Fn::GetAtt SigningKey.Arn", "Ref AnalysisSubnet",
                      "Ref AnalysisSecurityGroup"):
        assert f"cannot resolve {construct} at Resources.ForensicsRole.Properties.Policies" in error
    assert '"resources"' in error


def test_forensics_role_with_its_resources_given(lab, fresh_account):
    bucket = f"evidence-{fresh_account}"
    key = f"arn:aws:kms:us-east-1:{fresh_account}:key/11111111-2222-3333-4444-555555555555"
    got = lab.admin_ok("POST", f"/_lab/accounts/{fresh_account}/roles-from-template", json={
        "template": FORENSICS, "role": "ForensicsRole", "parameters": forensics_params(bucket),
        "resources": {"EvidenceKey": {"Arn": key}, "SigningKey": "66666666-7777-8888-9999-000000000000",
                      "AnalysisSubnet": "subnet-0abc", "AnalysisSecurityGroup": {"Ref": "sg-0def"}}})
    evidence = {s["Sid"]: s for s in got["inline_policies"]["cleanroom-evidence"]["Statement"]}
    assert evidence["WriteEvidence"]["Resource"] == f"arn:aws:s3:::{bucket}/cases/*"
    assert evidence["UseEvidenceKeyThroughS3AndEc2"]["Resource"] == key
    assert evidence["SignCustodyRecords"]["Resource"] == \
        f"arn:aws:kms:us-east-1:{fresh_account}:key/66666666-7777-8888-9999-000000000000"
    clean_room = {s["Sid"]: s for s in got["inline_policies"]["cleanroom-clean-room"]["Statement"]}
    assert f"arn:aws:ec2:us-east-1:{fresh_account}:subnet/subnet-0abc" in \
        clean_room["LaunchInTheCleanRoomOnly"]["Resource"]
    assert clean_room["PassAnalysisRoleToEc2"]["Resource"] == f"arn:aws:iam::{fresh_account}:role/CleanroomAnalysis"
    assert clean_room["ReadAnalysisProfile"]["Resource"] == \
        f"arn:aws:iam::{fresh_account}:instance-profile/CleanroomAnalysis"


def test_analysis_role_gets_its_aws_managed_policy_and_instance_profile(lab, fresh_account):
    got = lab.admin_ok("POST", f"/_lab/accounts/{fresh_account}/roles-from-template", json={
        "template": FORENSICS, "role": "AnalysisRole",
        "parameters": forensics_params(f"evidence-{fresh_account}"),
        "resources": {"EvidenceKey": "11111111-2222-3333-4444-555555555555"}})
    assert got["trust_policy"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    managed = {m["arn"]: m["document"] for m in got["managed_policies"]}
    core = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    assert "ssm:UpdateInstanceInformation" in json.dumps(managed[core])
    assert got["instance_profiles"] == [{"name": "CleanroomAnalysis",
                                         "arn": f"arn:aws:iam::{fresh_account}:instance-profile/CleanroomAnalysis"}]
    iam = lab.client("iam", account=fresh_account)
    attached = iam.list_attached_role_policies(RoleName="CleanroomAnalysis")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [core]
    profile = iam.get_instance_profile(InstanceProfileName="CleanroomAnalysis")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["CleanroomAnalysis"]


@pytest.mark.parametrize("body,expected", [
    ({"template": MEMBER, "role": "ResponderRole", "parameters": {}},
     "parameter 'ResponderPrincipalArn' is required"),
    ({"template": MEMBER, "role": "ResponderRole",
      "parameters": dict(MEMBER_PARAMS, ForensicsAccountId="not-an-account")}, "does not match AllowedPattern"),
    ({"template": MEMBER, "role": "ResponderRole", "parameters": dict(MEMBER_PARAMS, Bogus="x")},
     "unknown parameter 'Bogus'"),
    ({"template": MEMBER, "role": "Nope", "parameters": MEMBER_PARAMS}, "is not an AWS::IAM::Role"),
    ({"template": "../../etc/passwd", "role": "R"}, "outside the repository"),
])
def test_bad_requests_say_what_is_wrong(lab, fresh_account, body, expected):
    r = lab.admin("POST", f"/_lab/accounts/{fresh_account}/roles-from-template", json=body)
    assert r.status_code == 400
    assert expected in r.json()["error"]


def test_the_shipped_member_role_in_an_enforcing_lab(enforcing, fresh_account):
    enforcing.admin_ok("POST", f"/_lab/accounts/{fresh_account}/roles-from-template",
                       json={"template": MEMBER, "role": "ResponderRole", "parameters": MEMBER_PARAMS,
                             "resources": MEMBER_RESOURCES})
    instance_id = launch(enforcing, fresh_account)
    # sts_trust: the template's trust policy wants a session name cleanroom-*.
    with pytest.raises(ClientError):
        Session(enforcing, fresh_account, "CleanroomResponder", "someone-else")
    ec2 = Session(enforcing, fresh_account, "CleanroomResponder", "cleanroom-test").client("ec2")
    ec2.describe_instances(InstanceIds=[instance_id])
    ec2.get_console_output(InstanceId=instance_id)
    assert error_of(lambda: ec2.modify_instance_attribute(
        InstanceId=instance_id, DisableApiTermination={"Value": True}, DryRun=True))[1] == "DryRunOperation"
    status, code, message = error_of(lambda: ec2.terminate_instances(InstanceIds=[instance_id]))
    assert code == "UnauthorizedOperation" and "explicit deny" in message
