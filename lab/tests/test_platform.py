"""The launcher, the admin framework, the registry and the account conventions."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import DEFAULT_ACCOUNT, LAB_DIR, SERVER, _all_extensions

PY = sys.executable


def spawn(*args: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([PY, str(SERVER), *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def ready_line(proc: subprocess.Popen) -> str:
    return proc.stdout.readline().decode()


def test_health_reports_moto_and_every_extension(lab):
    h = lab.admin_ok("GET", "/_lab/health")
    assert h["ok"] is True
    assert h["moto"] == "5.2.5"
    expected = [e for e in _all_extensions() if e not in os.environ.get("LAB_WITHOUT", "")]
    assert h["extensions"] == expected
    assert lab.url.startswith("http://127.0.0.1:")
    assert h["base_url"] == lab.url


def test_stock_lab_has_no_extensions(stock_lab):
    h = stock_lab.admin_ok("GET", "/_lab/health")
    assert h["extensions"] == []
    assert h["disabled"] == _all_extensions()


def test_ready_line_is_the_only_stdout_and_port_zero_picks_a_free_port(tmp_path):
    a = spawn("--without", *_all_extensions(), "--exit-on-stdin-eof")
    b = spawn("--without", *_all_extensions(), "--exit-on-stdin-eof")
    try:
        la, lb = ready_line(a), ready_line(b)
        assert la.startswith("LAB_READY http://127.0.0.1:") and la.endswith("\n")
        assert lb.startswith("LAB_READY http://127.0.0.1:")
        assert la != lb
    finally:
        for p in (a, b):
            p.stdin.close()
            assert p.wait(15) == 0
            assert p.stdout.read() == b""  # nothing after the ready line


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "localhost"])
def test_non_loopback_host_is_refused(host):
    p = spawn("--host", host, "--without", *_all_extensions())
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert b"LAB_READY" not in out
    assert b"refused" in err


def test_exits_on_stdin_eof():
    p = spawn("--without", *_all_extensions(), "--exit-on-stdin-eof")
    assert ready_line(p).startswith("LAB_READY")
    p.stdin.close()
    assert p.wait(15) == 0


def test_sigterm_exits_cleanly_and_removes_temp_data_dir():
    p = spawn("--exit-on-stdin-eof")
    line = ready_line(p)
    assert line.startswith("LAB_READY"), p.stderr.read()
    import requests

    s = requests.Session()
    s.trust_env = False
    data_dir = Path(s.get(line.split()[1] + "/_lab/health").json()["data_dir"])
    assert data_dir.is_dir()
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert not data_dir.exists()


def test_explicit_data_dir_is_kept(tmp_path):
    d = tmp_path / "bulk"
    p = spawn("--data-dir", str(d), "--without", *_all_extensions(), "--exit-on-stdin-eof")
    assert ready_line(p).startswith("LAB_READY")
    p.send_signal(signal.SIGINT)
    assert p.wait(15) == 0
    assert d.is_dir()


def test_unknown_without_name_fails_loudly():
    p = spawn("--without", "no_such_ext")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and b"no_such_ext" in err and out == b""


def test_missing_extension_module_fails_loudly():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import labext, tempfile, pathlib\n"
        "labext.EXTENSIONS.append('not_written_yet')\n"
        "ctx = labext.LabContext(data_dir=pathlib.Path(tempfile.mkdtemp()))\n"
        "try:\n"
        "    labext.load(ctx, without=[e for e in labext.EXTENSIONS if e != 'not_written_yet'])\n"
        "except labext.LabExtensionError as e:\n"
        "    print('ERR', e)\n"
    ) % str(LAB_DIR)
    out = subprocess.run([PY, "-c", code], capture_output=True, timeout=60, text=True).stdout
    assert out.startswith("ERR ") and "not_written_yet.py" in out and "--without" in out


def test_default_ami_catalogue_is_not_loaded(lab):
    ec2 = lab.client("ec2")
    assert ec2.describe_images(Owners=["amazon"])["Images"] == []


# -- admin framework (in-process, through a WSGI test client) ---------------------------

@pytest.fixture
def admin_app(tmp_path):
    sys.path.insert(0, str(LAB_DIR))
    import labext
    from labext import admin
    from werkzeug.test import Client

    calls = []

    def fake_moto(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"moto"]

    ctx = labext.LabContext(data_dir=tmp_path)
    app = admin.make_app(fake_moto, ctx)
    pattern = r"/_lab/things/(?P<thing_id>t-[0-9a-f]+)/data"
    routes_before = list(admin._routes)

    @admin.route("PUT", pattern)
    def put_thing(req):
        return 200, {"params": req.params, "query": req.query, "account": req.account,
                     "region": req.region, "len": len(req.stream.read()),
                     "ctype": req.headers.get("content-type")}

    @admin.route("POST", pattern)
    def post_thing(req):
        body = req.json()
        if body.get("fail"):
            raise admin.AdminError(409, "thing is busy")
        if body.get("crash"):
            raise RuntimeError("boom")
        return 201, b"\x00\xffraw", {"X-Thing": req.params["thing_id"]}

    @admin.route("GET", r"/_lab/things/(?P<thing_id>t-[0-9a-f]+)/file")
    def get_file(req):
        path = tmp_path / "blob"
        path.write_bytes(bytes(range(256)) * 10_000)
        return 200, open(path, "rb"), {"Content-Length": str(path.stat().st_size)}

    @admin.route("GET", r"/_lab/things/(?P<thing_id>t-[0-9a-f]+)/gen")
    def get_gen(req):
        return 200, (bytes([i]) * 1000 for i in range(5))

    try:
        yield Client(app), calls, admin
    finally:
        admin._routes[:] = routes_before


def test_admin_route_gets_params_query_account_region_and_stream(admin_app):
    client, calls, _ = admin_app
    payload = os.urandom(300_000)
    r = client.put("/_lab/things/t-0a/data?region=eu-west-1&x=1", data=payload,
                   headers={"x-moto-account-id": "111122223333",
                            "Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json == {"params": {"thing_id": "t-0a"}, "query": {"region": "eu-west-1", "x": "1"},
                      "account": "111122223333", "region": "eu-west-1", "len": 300_000,
                      "ctype": "application/octet-stream"}
    r = client.put("/_lab/things/t-0a/data?account=444455556666", data=b"")
    assert r.json["account"] == "444455556666" and r.json["region"] == "us-east-1"
    r = client.put("/_lab/things/t-0a/data")
    assert r.json["account"] == DEFAULT_ACCOUNT
    assert calls == []


def test_admin_errors_and_raw_bodies(admin_app):
    client, calls, _ = admin_app
    r = client.post("/_lab/things/t-1/data", json={})
    assert r.status_code == 201 and r.data == b"\x00\xffraw" and r.headers["X-Thing"] == "t-1"
    r = client.post("/_lab/things/t-1/data", json={"fail": True})
    assert r.status_code == 409 and r.json == {"error": "thing is busy"}
    r = client.post("/_lab/things/t-1/data", json={"crash": True})
    assert r.status_code == 500 and "boom" in r.json["error"]
    r = client.post("/_lab/things/t-1/data", data=b"{not json")
    assert r.status_code == 400
    assert client.delete("/_lab/things/t-1/data").status_code == 405
    assert client.get("/_lab/things/zz/data").status_code == 404
    assert client.put("/_lab/things/t-1/data?account=12").status_code == 400
    assert client.get("/somewhere/else").data == b"moto"
    assert calls == ["/somewhere/else"]


def test_admin_streams_file_objects_and_iterables(admin_app):
    client, _, admin = admin_app
    assert admin.STREAMING_BODIES is True
    r = client.get("/_lab/things/t-2/file")
    assert r.status_code == 200 and r.headers["Content-Length"] == "2560000"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.data == bytes(range(256)) * 10_000
    r = client.get("/_lab/things/t-2/gen")
    assert r.data == b"".join(bytes([i]) * 1000 for i in range(5))


def test_admin_route_must_be_under_prefix_and_unique(admin_app):
    _, _, admin = admin_app
    with pytest.raises(ValueError):
        admin.route("GET", r"/elsewhere")
    with pytest.raises(ValueError):
        admin.route("PUT", r"/_lab/things/(?P<thing_id>t-[0-9a-f]+)/data")(lambda r: (200, {}))


# -- built-in routes against the real server ----------------------------------------------

def test_reset_clears_moto_state(lab):
    s3 = lab.client("s3")
    s3.create_bucket(Bucket="platform-reset-probe")
    assert "platform-reset-probe" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    r = lab.admin_ok("POST", "/_lab/reset")
    assert r["ok"] is True
    assert "platform-reset-probe" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    lab.reset()  # drops cached assumed-role credentials too


def test_config_validates_options(lab):
    before = lab.admin_ok("GET", "/_lab/config")
    try:
        assert lab.config(snapshot_polls=4)["snapshot_polls"] == 4
        assert lab.admin("POST", "/_lab/config", json={"snapshot_polls": -1}).status_code == 400
        assert lab.admin("POST", "/_lab/config", json={"snapshot_polls": "3"}).status_code == 400
        assert lab.admin("POST", "/_lab/config", json={"nope": 1}).status_code == 400
        assert lab.admin("POST", "/_lab/config", json=[1]).status_code == 400
    finally:
        lab.config(**before)


def test_unknown_admin_path_is_404_json(lab):
    r = lab.admin("GET", "/_lab/does-not-exist")
    assert r.status_code == 404 and "error" in r.json()


# -- accounts -----------------------------------------------------------------------------

def test_default_credentials_are_the_default_account(lab):
    assert lab.client("sts").get_caller_identity()["Account"] == DEFAULT_ACCOUNT


def test_other_account_reached_through_assume_role(lab, fresh_account):
    sts = lab.client("sts", account=fresh_account)
    ident = sts.get_caller_identity()
    assert ident["Account"] == fresh_account
    assert ident["Arn"].startswith(f"arn:aws:sts::{fresh_account}:assumed-role/LabAdmin/")
    # State is per account: a volume made in the fresh account is not in the default one.
    vol = lab.client("ec2", account=fresh_account).create_volume(
        AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    assert vol not in [v["VolumeId"] for v in lab.client("ec2").describe_volumes()["Volumes"]]
    seen = lab.client("ec2", account=fresh_account).describe_volumes()["Volumes"]
    assert [v["VolumeId"] for v in seen] == [vol]


def test_x_moto_account_id_header_also_selects_the_account(lab, fresh_account):
    ec2 = lab.client("ec2")

    def add_header(request, **_):
        request.headers["x-moto-account-id"] = fresh_account

    ec2.meta.events.register("before-sign.ec2.*", add_header)
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    seen = lab.client("ec2", account=fresh_account).describe_volumes()["Volumes"]
    assert [v["VolumeId"] for v in seen] == [vol]


def test_role_route_creates_role_in_that_account(lab, fresh_account):
    r = lab.admin("PUT", f"/_lab/accounts/{fresh_account}/roles/Probe",
                  json={"trusted_accounts": ["210987654321"]})
    assert r.status_code == 201 and r.json()["arn"] == f"arn:aws:iam::{fresh_account}:role/Probe"
    r = lab.admin("PUT", f"/_lab/accounts/{fresh_account}/roles/Probe", json={})
    assert r.status_code == 200 and r.json()["created"] is False
    iam = lab.client("iam", account=fresh_account)
    role = iam.get_role(RoleName="Probe")["Role"]
    principals = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
    assert principals in ([f"arn:aws:iam::{DEFAULT_ACCOUNT}:root"], f"arn:aws:iam::{DEFAULT_ACCOUNT}:root")
    with pytest.raises(ClientError):
        lab.client("iam").get_role(RoleName="Probe")
