"""The fixture builder: reproducible bytes, the planted items really there."""

from __future__ import annotations

import hashlib
import subprocess

from conftest import build_image, digests


def fls(image, *args):
    return subprocess.run(["fls", *args, str(image)], capture_output=True, text=True, check=True).stdout


def test_two_builds_give_the_same_bytes(tmp):
    for variant in ([], ["--partitioned"]):
        a = build_image(tmp / "a.img", *variant)
        b = build_image(tmp / "b.img", *variant)
        assert digests(a) == digests(b), f"build {variant} is not reproducible"


def test_plain_image_holds_the_planted_intrusion(images):
    listing = fls(images["plain"], "-r", "-p")
    for path in ("var/tmp/.x/kswapd0", "var/spool/cron/crontabs/root", "root/.ssh/authorized_keys",
                 "var/log/auth.log", "etc/ld.so.preload", "etc/systemd/system/kworker-update.service"):
        assert f"\t{path}\n" in listing, path
    deleted = fls(images["plain"], "-r", "-d", "-p")
    assert "* " in deleted and "\ttmp/.x/install.sh\n" in deleted, "the dropper must be listed as deleted"


def test_partitioned_image_has_three_partitions_and_two_file_systems(images):
    mmls = subprocess.run(["mmls", str(images["partitioned"])], capture_output=True, text=True,
                          check=True).stdout
    assert "GUID Partition Table" in mmls
    for name in ("bios", "boot", "root"):
        assert name in mmls
    assert "\tvar/tmp/.x/kswapd0\n" in fls(images["partitioned"], "-r", "-p", "-o", "36864")


def test_builder_refuses_bad_sizes(tmp):
    for size in ("1M", "33554433", "lots"):
        p = subprocess.run(["bash", str(build_image.__globals__["BUILD_IMAGE"]), str(tmp / "x.img"), size],
                           capture_output=True, text=True)
        assert p.returncode == 2 and p.stdout == "" and "build-image.sh:" in p.stderr
        assert not (tmp / "x.img").exists()


def test_miner_sample_is_not_executable_code():
    # An ELF header with no program headers: the kernel has nothing to map.
    data = (build_image.__globals__["SAMPLES"] / "xmrig-strings.elf").read_bytes()
    assert data[:4] == b"\x7fELF"
    e_phnum = int.from_bytes(data[56:58], "little")
    assert e_phnum == 0
    assert hashlib.sha256(data).hexdigest()  # read whole
