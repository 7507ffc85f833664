"""blockdata: volumes and snapshots hold bytes; EBS direct reads them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile

import pytest
from botocore.exceptions import ClientError

from conftest import random_account

AZ = "us-east-1a"
GIB = 1 << 30
BLOCK = 512 * 1024


def code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def new_volume(ec2, size=1, **kw) -> str:
    return ec2.create_volume(AvailabilityZone=kw.pop("az", AZ), Size=size, **kw)["VolumeId"]


def seed(lab, account, volume_id, data: bytes, region=None):
    r = lab.admin("PUT", f"/_lab/volumes/{volume_id}/data", data=data, account=account,
                  region=region)
    assert r.status_code == 200, r.text
    return r.json()


def read(lab, account, kind, rid, offset=0, length=None, region=None) -> bytes:
    path = f"/_lab/{kind}/{rid}/data"
    params = {"offset": str(offset)}
    if length is not None:
        params["length"] = str(length)
    r = lab.http.get(lab.url + path, params={**params, "account": account,
                                            **({"region": region} if region else {})},
                     timeout=120)
    assert r.status_code == 200, r.text
    return r.content


def sparse_image(blocks: dict[int, bytes], size: int) -> str:
    """A local sparse file of ``size`` bytes with ``bytes`` written at block indexes."""
    fd, path = tempfile.mkstemp(prefix="lab-image-")
    with os.fdopen(fd, "wb") as f:
        for index, data in blocks.items():
            f.seek(index * BLOCK)
            f.write(data)
        f.truncate(size)
    return path


def all_blocks(ebs, snapshot_id, **kw):
    blocks, token, pages = [], None, 0
    while True:
        args = dict(SnapshotId=snapshot_id, **kw)
        if token:
            args["NextToken"] = token
        page = ebs.list_snapshot_blocks(**args)
        pages += 1
        blocks += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            return blocks, pages, page


# -- the stock defect -------------------------------------------------------------------

def test_stock_ec2_snapshots_have_no_blocks(stock_lab, fresh_account):
    ec2 = stock_lab.client("ec2", account=fresh_account)
    ebs = stock_lab.client("ebs", account=fresh_account)
    snap = ec2.create_snapshot(VolumeId=new_volume(ec2))["SnapshotId"]
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    r = stock_lab.admin("PUT", f"/_lab/volumes/{new_volume(ec2)}/data", data=b"x",
                        account=fresh_account)
    assert r.status_code == 404  # no such admin route without the extension


# -- seeding and reading ----------------------------------------------------------------

def test_seed_streams_pads_and_snapshots_share_immutable_data(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    vol = new_volume(ec2)
    image = os.urandom(3 * BLOCK + 123)
    got = seed(lab, fresh_account, vol, image)
    assert got == {"volume_id": vol, "size_bytes": GIB, "image_bytes": len(image),
                   "padded_bytes": GIB - len(image)}
    head = read(lab, fresh_account, "volumes", vol, 0, 4 * BLOCK)
    assert head == image + bytes(4 * BLOCK - len(image))
    assert read(lab, fresh_account, "volumes", vol, GIB - 10) == bytes(10)
    info = lab.admin_ok("GET", f"/_lab/volumes/{vol}/data/info", account=fresh_account)
    assert info["has_data"] and info["size_bytes"] == GIB

    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    seed(lab, fresh_account, vol, b"\x07" * 1000)  # re-seed: the snapshot keeps the old bytes
    assert read(lab, fresh_account, "snapshots", snap, 0, len(image)) == image
    assert read(lab, fresh_account, "volumes", vol, 0, 1001) == b"\x07" * 1000 + b"\0"
    restored = ec2.create_volume(SnapshotId=snap, AvailabilityZone=AZ)["VolumeId"]
    assert read(lab, fresh_account, "volumes", restored, 0, len(image)) == image


def test_seed_refuses_an_image_larger_than_the_volume(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    vol = new_volume(ec2)
    path = sparse_image({}, GIB + 1)
    try:
        r = lab.http.put(lab.url + f"/_lab/volumes/{vol}/data",
                         params={"account": fresh_account, "path": path}, timeout=60)
        assert r.status_code == 413, r.text
        with open(path, "rb") as f:  # streamed: refused when it passes the size
            r = lab.admin("PUT", f"/_lab/volumes/{vol}/data", data=f, account=fresh_account)
        assert r.status_code == 413, r.text
    finally:
        os.unlink(path)
    assert lab.admin("PUT", "/_lab/volumes/vol-0123456789abcdef0/data", data=b"x",
                     account=fresh_account).status_code == 404
    assert lab.admin("PUT", f"/_lab/volumes/{vol}/data", data=b"x",
                     account=random_account()).status_code == 404  # other account
    info = lab.admin_ok("GET", f"/_lab/volumes/{vol}/data/info", account=fresh_account)
    assert info["has_data"] is False


def test_seed_from_a_local_path_keeps_holes(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    vol = new_volume(ec2, size=2)
    marker = b"cleanroom" * 100
    path = sparse_image({0: marker, 3000: marker}, 3001 * BLOCK)
    try:
        r = lab.http.put(lab.url + f"/_lab/volumes/{vol}/data",
                         params={"account": fresh_account, "path": path}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["size_bytes"] == 2 * GIB
    finally:
        os.unlink(path)
    assert read(lab, fresh_account, "volumes", vol, 3000 * BLOCK, len(marker)) == marker
    lab.admin("PUT", f"/_lab/volumes/{vol}/data", data=b"",
              account=fresh_account)  # an empty image: all zeros
    assert read(lab, fresh_account, "volumes", vol, 0, 16) == bytes(16)


def test_data_follows_copies_across_accounts_regions_and_keys(lab, fresh_account):
    a, b = fresh_account, random_account()
    ea = lab.client("ec2", account=a)
    kms_a = lab.client("kms", account=a)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{a}:root"}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": b}, "Action": "kms:*", "Resource": "*"}]}
    key_a = kms_a.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    vol = new_volume(ea, Encrypted=True)
    image = os.urandom(BLOCK) + bytes(BLOCK) + os.urandom(17)
    seed(lab, a, vol, image)
    snap = ea.create_snapshot(VolumeId=vol)["SnapshotId"]
    staged = ea.copy_snapshot(SourceSnapshotId=snap, SourceRegion="us-east-1", Encrypted=True,
                              KmsKeyId=key_a)["SnapshotId"]
    ea.modify_snapshot_attribute(SnapshotId=staged, Attribute="createVolumePermission",
                                 OperationType="add", UserIds=[b])
    west_b = lab.client("ec2", account=b, region="us-west-2")
    key_b = lab.client("kms", account=b, region="us-west-2").create_key()["KeyMetadata"]["Arn"]
    evidence = west_b.copy_snapshot(SourceSnapshotId=staged, SourceRegion="us-east-1",
                                    Encrypted=True, KmsKeyId=key_b)["SnapshotId"]
    assert read(lab, b, "snapshots", evidence, 0, len(image), region="us-west-2") == image
    # A bigger volume from it: the data, then zeros.
    big = west_b.create_volume(SnapshotId=evidence, AvailabilityZone="us-west-2a", Size=2)
    assert big["Size"] == 2
    assert read(lab, b, "volumes", big["VolumeId"], 0, len(image), region="us-west-2") == image
    assert read(lab, b, "volumes", big["VolumeId"], 2 * GIB - 8, region="us-west-2") == bytes(8)
    # A failed (KMS) copy carries no data.
    bad = west_b.copy_snapshot(SourceSnapshotId=staged, SourceRegion="us-east-1",
                               Encrypted=True, KmsKeyId="alias/nope")["SnapshotId"]
    assert read(lab, b, "snapshots", bad, 0, 16, region="us-west-2") == bytes(16)


def test_create_snapshots_of_an_instance_keep_each_volumes_data(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    inst = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                             Placement={"AvailabilityZone": AZ})["Instances"][0]["InstanceId"]
    data = {}
    for device in ("/dev/sdf", "/dev/sdg"):
        vol = new_volume(ec2)
        data[vol] = os.urandom(1000)
        seed(lab, fresh_account, vol, data[vol])
        ec2.attach_volume(VolumeId=vol, InstanceId=inst, Device=device)
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": inst,
                                                        "ExcludeBootVolume": True})["Snapshots"]
    assert sorted(s["VolumeId"] for s in snaps) == sorted(data)
    for s in snaps:
        assert read(lab, fresh_account, "snapshots", s["SnapshotId"], 0, 1000) == data[s["VolumeId"]]


# -- EBS direct -------------------------------------------------------------------------

def test_ebs_direct_lists_only_nonzero_blocks_and_reads_them(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ebs = lab.client("ebs", account=fresh_account)
    vol = new_volume(ec2)
    content = {0: os.urandom(BLOCK), 5: b"\x01", 2047: b"tail" * 10}
    path = sparse_image(content, GIB)
    try:
        r = lab.http.put(lab.url + f"/_lab/volumes/{vol}/data",
                         params={"account": fresh_account, "path": path}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        os.unlink(path)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]

    page = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert (page["BlockSize"], page["VolumeSize"]) == (BLOCK, 1)
    assert [b["BlockIndex"] for b in page["Blocks"]] == [0, 5, 2047]
    assert "NextToken" not in page and page["ExpiryTime"]
    for b in page["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                     BlockToken=b["BlockToken"])
        data = got["BlockData"].read()
        want = content[b["BlockIndex"]].ljust(BLOCK, b"\0")
        assert data == want
        assert got["DataLength"] == BLOCK
        assert got["ChecksumAlgorithm"] == "SHA256"
        assert got["Checksum"] == base64.b64encode(hashlib.sha256(want).digest()).decode()
    starting = ebs.list_snapshot_blocks(SnapshotId=snap, StartingBlockIndex=1)
    assert [b["BlockIndex"] for b in starting["Blocks"]] == [5, 2047]

    tokens = {b["BlockIndex"]: b["BlockToken"] for b in page["Blocks"]}
    with pytest.raises(ClientError) as e:  # a token for another block
        ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=5, BlockToken=tokens[0])
    assert code(e) == "ValidationException"
    assert e.value.response["Error"].get("Message")
    other = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    with pytest.raises(ClientError) as e:  # a token of another snapshot
        ebs.get_snapshot_block(SnapshotId=other, BlockIndex=0, BlockToken=tokens[0])
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:  # not readable by an account it is not shared with
        lab.client("ebs", account=random_account()).list_snapshot_blocks(SnapshotId=snap)
    assert code(e) == "ResourceNotFoundException"


def test_ebs_direct_paginates(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ebs = lab.client("ebs", account=fresh_account)
    vol = new_volume(ec2)
    path = sparse_image({i: bytes([i % 250 + 1]) for i in range(0, 2 * 250, 2)}, GIB)
    try:
        r = lab.http.put(lab.url + f"/_lab/volumes/{vol}/data",
                         params={"account": fresh_account, "path": path}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        os.unlink(path)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    blocks, pages, _ = all_blocks(ebs, snap, MaxResults=100)
    assert pages == 3
    assert [b["BlockIndex"] for b in blocks] == list(range(0, 500, 2))
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap, NextToken="bm90IGEgdG9rZW4=")
    assert code(e) == "ValidationException"


def test_list_changed_blocks(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    ebs = lab.client("ebs", account=fresh_account)
    vol = new_volume(ec2)
    base = bytearray(8 * BLOCK)
    base[0] = 1
    base[2 * BLOCK] = 2
    base[4 * BLOCK] = 4
    seed(lab, fresh_account, vol, bytes(base))
    first = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    base[2 * BLOCK] = 9  # changed
    base[4 * BLOCK] = 0  # now zero
    base[6 * BLOCK] = 6  # new
    seed(lab, fresh_account, vol, bytes(base))
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    changed = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
    by_index = {b["BlockIndex"]: b for b in changed["ChangedBlocks"]}
    assert sorted(by_index) == [2, 4, 6]
    assert "SecondBlockToken" not in by_index[4] and "FirstBlockToken" not in by_index[6]
    data = ebs.get_snapshot_block(SnapshotId=second, BlockIndex=2,
                                  BlockToken=by_index[2]["SecondBlockToken"])["BlockData"].read()
    assert data[0] == 9
    alone = ebs.list_changed_blocks(SecondSnapshotId=second)
    assert [b["BlockIndex"] for b in alone["ChangedBlocks"]] == [0, 2, 6]
    same = ebs.list_changed_blocks(FirstSnapshotId=second,
                                   SecondSnapshotId=ec2.create_snapshot(VolumeId=vol)["SnapshotId"])
    assert same["ChangedBlocks"] == []


def test_deleting_the_last_reference_frees_the_data(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    vol = new_volume(ec2)
    seed(lab, fresh_account, vol, b"evidence")
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    blob = lab.admin_ok("GET", f"/_lab/volumes/{vol}/data/info", account=fresh_account)["blob"]
    ec2.delete_volume(VolumeId=vol)
    assert read(lab, fresh_account, "snapshots", snap, 0, 8) == b"evidence"  # still referenced
    ec2.delete_snapshot(SnapshotId=snap)
    r = lab.admin("GET", f"/_lab/snapshots/{snap}/data", account=fresh_account)
    assert r.status_code == 404
    assert blob and blob.endswith(".img")


def test_get_streams_a_whole_gib(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account)
    vol = new_volume(ec2)
    head = os.urandom(3 * BLOCK)
    seed(lab, fresh_account, vol, head)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    want = hashlib.sha256(head)
    zeros = bytes(1 << 20)
    left = GIB - len(head)
    while left > 0:
        want.update(zeros[: min(left, len(zeros))])
        left -= len(zeros)
    r = lab.http.get(lab.url + f"/_lab/snapshots/{snap}/data",
                     params={"account": fresh_account}, stream=True, timeout=120)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == GIB
    got, n = hashlib.sha256(), 0
    for chunk in r.iter_content(1 << 20):
        got.update(chunk)
        n += len(chunk)
    assert (n, got.hexdigest()) == (GIB, want.hexdigest())
