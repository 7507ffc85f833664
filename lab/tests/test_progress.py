"""progress: snapshots stay pending for snapshot_polls DescribeSnapshots polls."""

from __future__ import annotations

import contextlib

import pytest
from botocore.exceptions import ClientError

from conftest import Lab


@contextlib.contextmanager
def polls(lab, n):
    before = lab.admin_ok("GET", "/_lab/config")["snapshot_polls"]
    lab.config(snapshot_polls=n)
    try:
        yield
    finally:
        lab.config(snapshot_polls=before)


def volume(ec2, size=1):
    return ec2.create_volume(AvailabilityZone="us-east-1a", Size=size)["VolumeId"]


def state(ec2, *ids):
    snaps = ec2.describe_snapshots(SnapshotIds=list(ids))["Snapshots"]
    by_id = {s["SnapshotId"]: (s["State"], s.get("Progress")) for s in snaps}
    return [by_id[i] for i in ids]


def test_stock_snapshots_are_completed_at_once(stock_lab, fresh_account):
    ec2 = stock_lab.client("ec2", account=fresh_account)
    with polls(stock_lab, 3):
        snap = ec2.create_snapshot(VolumeId=volume(ec2))
    assert snap["State"] == "completed"
    assert state(ec2, snap["SnapshotId"]) == [("completed", "100%")]


def test_progress_rises_over_the_configured_polls(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 3):
        snap = ec2.create_snapshot(VolumeId=volume(ec2), Description="evidence")
    sid = snap["SnapshotId"]
    assert snap["State"] == "pending"
    seen = [state(ec2, sid)[0] for _ in range(4)]
    assert seen == [("pending", "0%"), ("pending", "33%"), ("pending", "66%"), ("completed", "100%")]
    assert state(ec2, sid) == [("completed", "100%")]


def test_zero_polls_is_instant(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 0):
        snap = ec2.create_snapshot(VolumeId=volume(ec2))
    assert snap["State"] == "completed"
    assert state(ec2, snap["SnapshotId"]) == [("completed", "100%")]


def test_polls_are_read_at_creation(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 1):
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
    with polls(lab, 10):
        assert state(ec2, sid) == [("pending", "0%")]
        assert state(ec2, sid) == [("completed", "100%")]


def test_filtered_waiter_still_makes_progress(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 2):
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
    # A listing filtered on status=completed counts as a poll too.
    for _ in range(2):
        assert ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["completed"]}])["Snapshots"] == []
    done = ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["completed"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in done] == [sid]


def test_boto3_waiter_completes(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 3):
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 6})
    assert state(ec2, sid) == [("completed", "100%")]


def launch_with_two_volumes(ec2):
    image = ec2.register_image(Name="two", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    data = volume(ec2, 2)
    ec2.attach_volume(VolumeId=data, InstanceId=iid, Device="/dev/sdf")
    return iid


def test_create_snapshots_set_completes_together(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    iid = launch_with_two_volumes(ec2)
    with polls(lab, 2):
        got = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid}, Description="set")
    a, b = [s["SnapshotId"] for s in got["Snapshots"]]
    assert {s["State"] for s in got["Snapshots"]} == {"pending"}
    assert [state(ec2, a)[0] for _ in range(3)] == [("pending", "0%"), ("pending", "50%"), ("pending", "99%")]
    assert state(ec2, b) == [("pending", "0%")]
    assert state(ec2, a) == [("pending", "99%")]  # waits for its sibling
    assert state(ec2, b) == [("pending", "50%")]
    assert state(ec2, a, b) == [("completed", "100%"), ("completed", "100%")]


def test_copy_of_pending_snapshot_is_refused_then_copy_progresses(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 1):
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
        with pytest.raises(ClientError) as e:
            ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")
        assert e.value.response["Error"]["Code"] == "IncorrectState"
        assert sid in e.value.response["Error"]["Message"]
        state(ec2, sid)
        assert state(ec2, sid) == [("completed", "100%")]
        copy = ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")["SnapshotId"]
    assert state(ec2, copy) == [("pending", "0%")]
    assert state(ec2, copy) == [("completed", "100%")]


def test_stock_copies_a_pending_snapshot(stock_lab, fresh_account):
    # Stock has no pending snapshots at all, so a copy is always accepted at once.
    ec2 = stock_lab.client("ec2", account=fresh_account)
    sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
    copy = ec2.copy_snapshot(SourceSnapshotId=sid, SourceRegion="us-east-1")["SnapshotId"]
    assert state(ec2, copy) == [("completed", "100%")]


def test_admin_progress_route(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    with polls(lab, 2):
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
    state(ec2, sid)
    got = lab.admin_ok("GET", f"/_lab/snapshots/{sid}/progress")
    assert got["account"] == fresh_account and got["polls"] == 2 and got["seen"] == 1
    assert got["state"] == "pending"
    assert lab.admin("GET", "/_lab/snapshots/snap-0000000000/progress").status_code == 404


def test_launcher_flag_sets_default_polls():
    other = Lab(["--snapshot-polls", "2", "--without", "sharing", "blockdata", "ssm_agent"], "polls")
    try:
        assert other.admin_ok("GET", "/_lab/config")["snapshot_polls"] == 2
        ec2 = other.client("ec2")
        sid = ec2.create_snapshot(VolumeId=volume(ec2))["SnapshotId"]
        assert [state(ec2, sid)[0] for _ in range(3)] == [
            ("pending", "0%"), ("pending", "50%"), ("completed", "100%")]
    finally:
        other.close()
