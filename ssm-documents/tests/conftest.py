"""Fixtures for the collection documents' tests.

The lab fixtures (``lab``, ``fresh_account``) are lab/tests/conftest.py's own, loaded under
another module name so that this file can be a conftest too. Fixture images are built once
per session with tests/fixtures/build-image.sh.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent          # ssm-documents/
REPO = DOCS.parent
SCRIPTS = DOCS / "scripts"
BUILD_IMAGE = DOCS / "tests" / "fixtures" / "build-image.sh"
SAMPLES = DOCS / "tests" / "samples"
BASH = shutil.which("bash")

_spec = importlib.util.spec_from_file_location("lab_conftest", REPO / "lab" / "tests" / "conftest.py")
lab_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_conftest)
lab = lab_conftest.lab                      # noqa: F811 (re-exported fixtures)
fresh_account = lab_conftest.fresh_account
random_account = lab_conftest.random_account

# Tools live in /usr/sbin on Debian (mke2fs, debugfs, sfdisk) even for non-root users.
os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def digests(path: Path) -> dict[str, str]:
    hs = {n: hashlib.new(n) for n in ("sha256", "sha1", "md5")}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hs.values():
                h.update(chunk)
    return {n: f"{n}:{h.hexdigest()}" for n, h in hs.items()}


def build_image(out: Path, *args: str) -> Path:
    p = subprocess.run(["bash", str(BUILD_IMAGE), *args, str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{out.resolve()}\n", f"stdout must be only the image path: {p.stdout!r}"
    return out


@dataclass
class Run:
    """One script run in local mode."""
    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def result(self) -> dict:
        assert self.returncode == 0, f"exit {self.returncode}: {self.stderr}"
        last = self.stdout.rstrip("\n").split("\n")[-1]
        return json.loads(last)


def run_local(script: str, image: Path, out: Path, case: str = "CASE-TEST-1", **env: str) -> Run:
    out.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, CLEANROOM_IMAGE=str(image), CLEANROOM_OUT=str(out),
                    CLEANROOM_CASE=case, **env)
    for k in ("CLEANROOM_VOLUME_ID", "CLEANROOM_BUCKET", "CLEANROOM_PREFIX", "CLEANROOM_REGION"):
        full_env.pop(k, None)
    p = subprocess.run([BASH, str(SCRIPTS / script)], capture_output=True, text=True, env=full_env)
    return Run(p.returncode, p.stdout, p.stderr, out)


@pytest.fixture(scope="session")
def images():
    """The planted fixture images: plain ext4 and the GPT disk, built once."""
    d = Path(tempfile.mkdtemp(prefix="cleanroom-ssmdoc-"))
    try:
        yield {"plain": build_image(d / "plain.img"),
               "partitioned": build_image(d / "partitioned.img", "--partitioned")}
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmp(tmp_path):
    return tmp_path
