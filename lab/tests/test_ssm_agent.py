"""ssm_agent: Run Command really runs shell steps in a sandbox and reports like SSM."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from botocore.exceptions import ClientError

AZ = "us-east-1a"
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def launch(ec2, n=1, tags=None) -> list[str]:
    args = dict(ImageId="ami-12345678", MinCount=n, MaxCount=n,
                Placement={"AvailabilityZone": AZ})
    if tags:
        args["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [
            {"Key": k, "Value": v} for k, v in tags.items()]}]
    return [i["InstanceId"] for i in ec2.run_instances(**args)["Instances"]]


def manage(lab, account, instance_id, **extra):
    r = lab.admin("POST", "/_lab/ssm/managed-instances", account=account,
                  json={"instance_id": instance_id, **extra})
    assert r.status_code in (200, 201), r.text


def managed_instance(lab, account) -> str:
    ec2 = lab.client("ec2", account=account)
    iid = launch(ec2)[0]
    manage(lab, account, iid)
    return iid


def run(ssm, iid, *commands, timeout=60, **kw) -> str:
    params = {"commands": list(commands)}
    params.update(kw.pop("params", {}))
    return ssm.send_command(InstanceIds=[iid], DocumentName=kw.pop("doc", "AWS-RunShellScript"),
                            Parameters=params, **kw)["Command"]["CommandId"]


def wait(ssm, command_id, iid, timeout=60, **kw) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=iid, **kw)
        if inv["Status"] in TERMINAL:
            return inv
        assert time.monotonic() < deadline, f"still {inv['Status']}"
        time.sleep(0.1)


# -- the stock defect -------------------------------------------------------------------

def test_stock_ssm_runs_nothing_and_targets_everyone(stock_lab, fresh_account):
    ec2 = stock_lab.client("ec2", account=fresh_account)
    ssm = stock_lab.client("ssm", account=fresh_account)
    one, _two = launch(ec2, 2)
    cmd = ssm.send_command(InstanceIds=[one], DocumentName="AWS-RunShellScript",
                           Parameters={"commands": ["echo hello; exit 3"]})["Command"]
    assert cmd["TargetCount"] >= 2  # every instance (one counted twice), though one was named
    assert ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=_two)["Status"]
    inv = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=one)
    assert (inv["Status"], inv["ResponseCode"], inv["StandardOutputContent"]) == ("Success", 0, "")
    with pytest.raises(ClientError):
        ssm.list_command_invocations(CommandId=cmd["CommandId"])
    with pytest.raises(ClientError):
        ssm.describe_instance_information()


# -- managed instances ------------------------------------------------------------------

def test_describe_instance_information_lists_managed_instances_with_pages(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    ids = launch(ec2, 7)
    unmanaged = launch(ec2)[0]
    for iid in ids:
        manage(lab, fresh_account, iid)
    first = ssm.describe_instance_information(MaxResults=5)
    assert len(first["InstanceInformationList"]) == 5 and first["NextToken"]
    second = ssm.describe_instance_information(MaxResults=5, NextToken=first["NextToken"])
    assert "NextToken" not in second
    seen = [i["InstanceId"] for i in first["InstanceInformationList"]
            + second["InstanceInformationList"]]
    assert sorted(seen) == sorted(ids) and unmanaged not in seen
    info = first["InstanceInformationList"][0]
    assert (info["PingStatus"], info["PlatformType"], info["ResourceType"]) == (
        "Online", "Linux", "EC2Instance")
    only = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids[3:4]}])
    assert [i["InstanceId"] for i in only["InstanceInformationList"]] == ids[3:4]
    legacy = ssm.describe_instance_information(InstanceInformationFilterList=[
        {"key": "InstanceIds", "valueSet": ids[:2]}])
    assert sorted(i["InstanceId"] for i in legacy["InstanceInformationList"]) == sorted(ids[:2])
    assert lab.admin("POST", "/_lab/ssm/managed-instances", account=fresh_account,
                     json={"instance_id": "i-0123456789abcdef0"}).status_code == 404
    assert lab.admin("DELETE", f"/_lab/ssm/managed-instances/{ids[0]}",
                     account=fresh_account).status_code == 200
    rest = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids[:1]}])
    assert rest["InstanceInformationList"] == []


def test_send_command_refuses_unmanaged_instances_and_unknown_documents(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    stranger = launch(ec2)[0]
    with pytest.raises(ClientError) as e:
        run(ssm, stranger, "true")
    assert code(e) == "InvalidInstanceId"
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[iid, "i-0123456789abcdef0"],
                         DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]})
    assert code(e) == "InvalidInstanceId"
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[iid], DocumentName="No-Such-Document")
    assert code(e) == "InvalidDocument"
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                         Parameters={"commands": ["true"], "bogus": ["x"]})
    assert code(e) == "InvalidParameters"
    with pytest.raises(ClientError) as e:  # commands has no default
        ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript")
    assert code(e) == "InvalidParameters"
    with pytest.raises(ClientError) as e:
        ssm.get_command_invocation(CommandId="00000000-0000-0000-0000-000000000000",
                                   InstanceId=iid)
    assert code(e) == "InvalidCommandId"


# -- running ----------------------------------------------------------------------------

def test_run_shell_script_captures_output_exit_code_and_only_targets_named(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    one, two = launch(ec2, 2)
    manage(lab, fresh_account, one)
    manage(lab, fresh_account, two)
    cid = run(ssm, one, "echo out-$CLEANROOM_INSTANCE_ID", "echo oops >&2", "pwd", "exit 3")
    invs = ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]
    assert [i["InstanceId"] for i in invs] == [one]
    inv = wait(ssm, cid, one)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("Failed", "Failed", 3)
    out = inv["StandardOutputContent"].splitlines()
    assert out[0] == f"out-{one}"
    assert out[1].endswith(f"/{one}/root")  # cwd = the sandbox
    assert inv["StandardErrorContent"] == "oops\n"
    assert inv["PluginName"] == "aws:runShellScript"
    assert inv["ExecutionElapsedTime"].startswith("PT")
    with pytest.raises(ClientError) as e:
        ssm.get_command_invocation(CommandId=cid, InstanceId=two)
    assert code(e) == "InvocationDoesNotExist"
    listed = ssm.list_commands(CommandId=cid)["Commands"][0]
    assert (listed["Status"], listed["TargetCount"], listed["ErrorCount"]) == ("Failed", 1, 1)
    ok = run(ssm, one, "true")
    assert wait(ssm, ok, one)["Status"] == "Success"
    assert ssm.list_commands(CommandId=ok)["Commands"][0]["Status"] == "Success"


def test_status_goes_through_in_progress(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    cid = run(ssm, iid, "sleep 1.5", "echo done")
    seen = []
    while True:
        inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        if not seen or seen[-1] != inv["Status"]:
            seen.append(inv["Status"])
        if inv["Status"] in TERMINAL:
            break
        time.sleep(0.05)
    assert "InProgress" in seen and seen[-1] == "Success"
    assert set(seen) <= {"Pending", "InProgress", "Success"}
    assert inv["StandardOutputContent"] == "done\n"


def test_execution_timeout_kills_the_process_group(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    t0 = time.monotonic()
    cid = run(ssm, iid, "echo started", "(sleep 60; echo child-survived > /dev/null) &",
              "sleep 60", params={"executionTimeout": ["1"]})
    inv = wait(ssm, cid, iid)
    assert time.monotonic() - t0 < 15
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == (
        "TimedOut", "ExecutionTimedOut", 137)
    assert inv["StandardOutputContent"] == "started\n"


def test_cancel_command(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    cid = run(ssm, iid, "echo before", "sleep 60")
    deadline = time.monotonic() + 20
    while ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] != "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ssm.cancel_command(CommandId=cid)
    inv = wait(ssm, cid, iid, timeout=20)
    assert (inv["Status"], inv["StatusDetails"]) == ("Cancelled", "Cancelled")
    assert ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Cancelled"
    with pytest.raises(ClientError) as e:
        ssm.cancel_command(CommandId="00000000-0000-0000-0000-000000000000")
    assert code(e) == "InvalidCommandId"


def test_offline_instance_waits_for_delivery(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    lab.admin_ok("PATCH", f"/_lab/ssm/managed-instances/{iid}", account=fresh_account,
                 json={"ping_status": "ConnectionLost"})
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])
    assert info["InstanceInformationList"][0]["PingStatus"] == "ConnectionLost"
    cid = run(ssm, iid, "echo delivered")
    time.sleep(0.5)
    assert ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "Pending"
    lab.admin_ok("PATCH", f"/_lab/ssm/managed-instances/{iid}", account=fresh_account,
                 json={"ping_status": "Online"})
    assert wait(ssm, cid, iid)["StandardOutputContent"] == "delivered\n"


DOC = {
    "schemaVersion": "2.2",
    "description": "lab test document",
    "parameters": {
        "greeting": {"type": "String", "default": "hello"},
        "lines": {"type": "StringList", "default": ["echo a", "echo b"]},
        "mode": {"type": "String", "default": "fast", "allowedValues": ["fast", "slow"]},
    },
    "mainSteps": [
        {"action": "aws:runShellScript", "name": "first",
         "inputs": {"runCommand": ["echo {{ greeting }} {{mode}}", "{{ lines }}"]}},
        {"action": "aws:runShellScript", "name": "windowsOnly",
         "precondition": {"StringEquals": ["platformType", "Windows"]},
         "inputs": {"runCommand": ["echo never"]}},
        {"action": "aws:runShellScript", "name": "second",
         "inputs": {"runCommand": ["echo second >&2", "exit 0"], "timeoutSeconds": "30"}},
    ],
}


def test_schema_22_document_parameters_steps_and_s3_layout(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    s3 = lab.client("s3", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    ssm.create_document(Name="Lab-Test-Doc", DocumentType="Command", DocumentFormat="JSON",
                        Content=json.dumps(DOC))
    bucket = f"ssm-out-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    cid = ssm.send_command(InstanceIds=[iid], DocumentName="Lab-Test-Doc",
                           Parameters={"greeting": ["hi"]}, OutputS3BucketName=bucket,
                           OutputS3KeyPrefix="runs/")["Command"]["CommandId"]
    first = wait(ssm, cid, iid, PluginName="first")
    assert (first["Status"], first["StandardOutputContent"]) == ("Success", "hi fast\na\nb\n")
    second = wait(ssm, cid, iid, PluginName="second")
    assert second["StandardErrorContent"] == "second\n"
    with pytest.raises(ClientError) as e:  # several steps: name one
        ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert code(e) == "InvalidPluginName"
    invs = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
    assert invs[0]["Status"] == "Success"
    plugins = {p["Name"]: p for p in invs[0]["CommandPlugins"]}
    assert list(plugins) == ["first", "windowsOnly", "second"]
    assert plugins["windowsOnly"]["StatusDetails"] == "Skipped"
    assert plugins["second"]["Output"] == "\n----------ERROR-------\nsecond\n"
    prefix = f"runs/{cid}/{iid}/awsrunShellScript"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    # Only non-empty streams are uploaded, as the agent does.
    assert keys == [f"{prefix}/first/stdout", f"{prefix}/second/stderr"]
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/first/stdout")["Body"].read()
    assert body == b"hi fast\na\nb\n"
    assert first["StandardOutputUrl"].endswith(f"/{bucket}/{prefix}/first/stdout")
    assert second["StandardErrorUrl"].endswith(f"/{bucket}/{prefix}/second/stderr")
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[iid], DocumentName="Lab-Test-Doc",
                         Parameters={"mode": ["reckless"]})
    assert code(e) == "InvalidParameters"


def test_an_armed_step_failure_fails_that_document_once_then_it_runs_again(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    ssm.create_document(Name="Lab-Failing-Doc", DocumentType="Command", DocumentFormat="JSON",
                        Content=json.dumps(DOC))
    r = lab.admin("POST", "/_lab/ssm/step-failures", account=fresh_account,
                  json={"document": "Lab-Failing-Doc", "step": "second", "exit_code": 5,
                        "stderr": "yara: command not found; it's missing"})
    assert r.status_code == 201, r.text
    # Another account's document of the same name is not touched.
    other = lab.admin("GET", "/_lab/ssm/step-failures", account="123456789012").json()
    assert other == []
    cid = ssm.send_command(InstanceIds=[iid], DocumentName="Lab-Failing-Doc")["Command"]["CommandId"]
    first = wait(ssm, cid, iid, PluginName="first")
    assert first["Status"] == "Success"  # only the named step fails
    second = wait(ssm, cid, iid, PluginName="second")
    assert (second["Status"], second["ResponseCode"]) == ("Failed", 5)
    assert second["StandardErrorContent"] == "yara: command not found; it's missing\n"
    armed = lab.admin("GET", "/_lab/ssm/step-failures", account=fresh_account).json()
    assert [(f["hits"], f["remaining"]) for f in armed] == [(1, 0)]
    # Used up: the next command runs the step's own script.
    cid = ssm.send_command(InstanceIds=[iid], DocumentName="Lab-Failing-Doc")["Command"]["CommandId"]
    again = wait(ssm, cid, iid, PluginName="second")
    assert (again["Status"], again["ResponseCode"]) == ("Success", 0)
    r = lab.admin("POST", "/_lab/ssm/step-failures", account=fresh_account,
                  json={"document": "Lab-Failing-Doc", "exit_code": 0})
    assert r.status_code == 400
    assert lab.admin("DELETE", "/_lab/ssm/step-failures", account=fresh_account).json() == {"deleted": 1}


def test_a_delayed_step_is_still_in_progress_then_runs_its_own_script(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    ssm.create_document(Name="Lab-Slow-Doc", DocumentType="Command", DocumentFormat="JSON",
                        Content=json.dumps(DOC))
    r = lab.admin("POST", "/_lab/ssm/step-failures", account=fresh_account,
                  json={"document": "Lab-Slow-Doc", "step": "first", "delay_seconds": 5})
    assert r.status_code == 201, r.text
    cid = ssm.send_command(InstanceIds=[iid], DocumentName="Lab-Slow-Doc")["Command"]["CommandId"]
    time.sleep(0.5)
    early = ssm.get_command_invocation(CommandId=cid, InstanceId=iid, PluginName="first")
    assert early["Status"] in ("Pending", "InProgress"), early["Status"]
    done = wait(ssm, cid, iid, PluginName="first")
    # After the delay the step's own script ran: not an injected failure.
    assert (done["Status"], done["ResponseCode"]) == ("Success", 0)
    assert done["StandardOutputContent"].startswith("hello fast\n")
    bad = lab.admin("POST", "/_lab/ssm/step-failures", account=fresh_account,
                    json={"document": "Lab-Slow-Doc", "delay_seconds": 4000})
    assert bad.status_code == 400


def test_long_output_is_truncated_in_the_api_but_whole_in_s3(lab, fresh_account):
    ssm = lab.client("ssm", account=fresh_account)
    s3 = lab.client("s3", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    bucket = f"ssm-long-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    cid = run(ssm, iid, "head -c 30000 /dev/zero | tr '\\0' 'x'",
              "head -c 9000 /dev/zero | tr '\\0' 'e' >&2", OutputS3BucketName=bucket)
    inv = wait(ssm, cid, iid)
    assert inv["StandardOutputContent"] == "x" * 24000
    assert inv["StandardErrorContent"] == "e" * 8000
    key = f"{cid}/{iid}/awsrunShellScript/0.awsrunShellScript/stdout"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x" * 30000


def test_targets_by_tag(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    tagged = launch(ec2, tags={"Role": "analysis"})[0]
    other = launch(ec2, tags={"Role": "web"})[0]
    for iid in (tagged, other):
        manage(lab, fresh_account, iid)
    cmd = ssm.send_command(Targets=[{"Key": "tag:Role", "Values": ["analysis"]}],
                           DocumentName="AWS-RunShellScript",
                           Parameters={"commands": ["echo tagged"]})["Command"]
    assert cmd["TargetCount"] == 1
    assert wait(ssm, cmd["CommandId"], tagged)["StandardOutputContent"] == "tagged\n"


def test_device_map_exposes_attached_volumes_read_only(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    vol = ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    image = os.urandom(1 << 20)
    assert lab.admin("PUT", f"/_lab/volumes/{vol}/data", data=image,
                     account=fresh_account).status_code == 200
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    serial = vol.replace("-", "")
    by_id = f"${{CLEANROOM_ROOT:-}}/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}"
    cid = run(ssm, iid, f"head -c 1048576 {by_id} | sha256sum | cut -d' ' -f1",
              "head -c 1048576 ${CLEANROOM_ROOT:-}/dev/sdf | sha256sum | cut -d' ' -f1",
              f"readlink {by_id}", "readlink $CLEANROOM_ROOT/dev/sdf",
              "ls $CLEANROOM_ROOT/dev/disk/by-id | wc -l",
              "blockdev_size=$(stat -L -c %s $CLEANROOM_ROOT/dev/sdf); echo $blockdev_size")
    out = wait(ssm, cid, iid)["StandardOutputContent"].splitlines()
    digest = hashlib.sha256(image).hexdigest()
    assert out[0] == digest and out[1] == digest
    assert out[2] == out[3].replace("nvme", "../../nvme") and out[3].startswith("nvme")
    assert out[4] == "2"  # the root volume and sdf
    assert out[5] == str(1 << 30)
    cid = run(ssm, iid, "printf tamper | dd of=$CLEANROOM_ROOT/dev/sdf conv=notrunc 2>/dev/null"
              " || echo refused")
    inv = wait(ssm, cid, iid)
    if inv["StandardOutputContent"] == "refused\n":  # an unprivileged script user
        assert inv["Status"] == "Success"
    else:  # root can write anyway: the agent notices and fails the step
        assert inv["Status"] == "Failed"
        assert "read-only violation" in inv["StandardErrorContent"]


def test_stopped_instances_lose_their_connection(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    iid = managed_instance(lab, fresh_account)
    ec2.stop_instances(InstanceIds=[iid])
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])
    assert info["InstanceInformationList"][0]["PingStatus"] == "ConnectionLost"
    with pytest.raises(ClientError) as e:
        run(ssm, iid, "true")
    assert code(e) == "InvalidInstanceId"


def test_scripts_get_credentials_only_from_an_instance_profile(lab, fresh_account):
    # On AWS an instance without a profile has no credentials: the CLI cannot sign. The lab
    # once gave such a sandbox a fresh key of the account, so an "aws" step that only works
    # with credentials passed here and would fail on AWS.
    ec2 = lab.client("ec2", account=fresh_account)
    iam = lab.client("iam", account=fresh_account)
    ssm = lab.client("ssm", account=fresh_account)
    iam.create_role(RoleName="AnalysisRole", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))
    iam.create_instance_profile(InstanceProfileName="AnalysisProfile")
    iam.add_role_to_instance_profile(InstanceProfileName="AnalysisProfile",
                                     RoleName="AnalysisRole")
    bare = managed_instance(lab, fresh_account)
    with_profile = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": AZ},
        IamInstanceProfile={"Name": "AnalysisProfile"})["Instances"][0]["InstanceId"]
    manage(lab, fresh_account, with_profile)
    whoami = "aws sts get-caller-identity --query Arn --output text"

    inv = wait(ssm, run(ssm, bare, whoami), bare)
    assert inv["Status"] == "Failed"
    assert "Unable to locate credentials" in inv["StandardErrorContent"]
    assert inv["StandardOutputContent"] == ""

    inv = wait(ssm, run(ssm, with_profile, whoami), with_profile)
    assert inv["Status"] == "Success", inv["StandardErrorContent"]
    assert inv["StandardOutputContent"].strip() == (
        f"arn:aws:sts::{fresh_account}:assumed-role/AnalysisRole/{with_profile}")
