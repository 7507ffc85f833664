"""console: seeded GetConsoleOutput / GetConsoleScreenshot."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from botocore.exceptions import ClientError


def raw_ec2(lab, account, region="us-east-1"):
    """An EC2 client that leaves GetConsoleOutput's Output base64 as on the wire
    (botocore decodes it by default; the Rust SDK does not)."""
    from botocore.handlers import decode_console_output

    ec2 = lab.client("ec2", account=account, region=region)
    ec2.meta.events.unregister("after-call.ec2.GetConsoleOutput", decode_console_output)
    return ec2


def launch(lab, account, region="us-east-1"):
    ec2 = raw_ec2(lab, account, region)
    image = ec2.register_image(Name="probe", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                     "Ebs": {"VolumeSize": 8}}])["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    return ec2, iid


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk JPEG segments (SOI ... SOFn ... EOI) and return (width, height)."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    i = 2
    while i < len(data):
        assert data[i] == 0xFF, f"bad marker at {i}"
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xC3:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise AssertionError("no SOF segment")


def test_stock_console_output_is_a_canned_2006_log(stock_lab, fresh_account):
    ec2, iid = launch(stock_lab, fresh_account)
    out = base64.b64decode(ec2.get_console_output(InstanceId=iid)["Output"])
    assert b"2006" in out and b"Xen" in out


def test_stock_console_screenshot_is_a_server_error(stock_lab, fresh_account):
    ec2, iid = launch(stock_lab, fresh_account)
    with pytest.raises(Exception) as e:
        ec2.get_console_screenshot(InstanceId=iid)
    assert "500 Internal Server Error" in str(e.value)


def test_unseeded_instance_has_no_output(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    got = ec2.get_console_output(InstanceId=iid)
    assert got["InstanceId"] == iid
    assert base64.b64decode(got.get("Output", "")) == b""
    assert "Timestamp" in got


def test_seeded_output_comes_back_base64(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    text = b"[    0.000000] Linux version 6.1\n\xe2\x9c\x93 xmrig started\n"
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=text, account=fresh_account)
    got = ec2.get_console_output(InstanceId=iid)
    assert base64.b64decode(got["Output"]) == text
    assert base64.b64decode(ec2.get_console_output(InstanceId=iid, Latest=True)["Output"]) == text


def test_only_last_64_kib_are_kept(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    text = b"".join(b"line %06d\n" % i for i in range(20000))  # 220 000 bytes
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=text, account=fresh_account)
    out = base64.b64decode(ec2.get_console_output(InstanceId=iid)["Output"])
    assert len(out) == 64 * 1024
    assert out == text[-64 * 1024:]


def test_latest_true_returns_live_output(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=b"boot\n",
                 account=fresh_account)
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output?latest=true",
                 data=b"boot\nminer running\n", account=fresh_account)
    assert base64.b64decode(ec2.get_console_output(InstanceId=iid)["Output"]) == b"boot\n"
    live = ec2.get_console_output(InstanceId=iid, Latest=True)["Output"]
    assert base64.b64decode(live) == b"boot\nminer running\n"


def test_boto3_decodes_output_like_the_cli(lab, fresh_account):
    _, iid = launch(lab, fresh_account)
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=b"hello\n",
                 account=fresh_account)
    assert lab.client("ec2", account=fresh_account).get_console_output(
        InstanceId=iid)["Output"] == "hello\n"


def test_seed_honours_account_and_region(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account, region="eu-west-1")
    # Wrong account / region: the instance is not there.
    assert lab.admin("PUT", f"/_lab/instances/{iid}/console-output", data=b"x",
                     account=fresh_account).status_code == 404
    assert lab.admin("PUT", f"/_lab/instances/{iid}/console-output", data=b"x",
                     region="eu-west-1").status_code == 404
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=b"eu",
                 account=fresh_account, region="eu-west-1")
    assert base64.b64decode(ec2.get_console_output(InstanceId=iid)["Output"]) == b"eu"


def test_screenshot_placeholder_and_seeded(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    placeholder = base64.b64decode(ec2.get_console_screenshot(InstanceId=iid)["ImageData"])
    assert jpeg_size(placeholder) == (320, 60)
    seeded = placeholder[:-2] + b"\x00" * 3 + os.urandom(0) + b"\xff\xd9"
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/screenshot", data=seeded, account=fresh_account)
    got = ec2.get_console_screenshot(InstanceId=iid, WakeUp=True)
    assert got["InstanceId"] == iid
    assert base64.b64decode(got["ImageData"]) == seeded
    assert lab.admin("PUT", f"/_lab/instances/{iid}/screenshot", data=b"PNG",
                     account=fresh_account).status_code == 400


def test_unknown_instance_is_not_found(lab, fresh_account):
    ec2 = raw_ec2(lab, fresh_account)
    for call in (ec2.get_console_output, ec2.get_console_screenshot):
        with pytest.raises(ClientError) as e:
            call(InstanceId="i-0123456789abcdef0")
        assert e.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


def test_reset_forgets_seeds(lab, fresh_account):
    ec2, iid = launch(lab, fresh_account)
    lab.admin_ok("PUT", f"/_lab/instances/{iid}/console-output", data=b"x", account=fresh_account)
    assert lab.admin_ok("GET", f"/_lab/instances/{iid}/console", account=fresh_account)["buffered"] == 1
    # moto's own reset endpoint also resets extension state.
    r = lab.http.post(lab.url + "/moto-api/reset")
    assert r.status_code == 200
    lab.reset()
    assert lab.admin_ok("GET", f"/_lab/instances/{iid}/console", account=fresh_account) == {}
