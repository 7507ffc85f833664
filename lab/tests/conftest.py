"""Fixtures for the lab's tests.

- ``lab`` (session): the lab with every extension, as a subprocess of this test run.
- ``stock_lab`` (session): the same launcher with every extension disabled (stock moto
  5.2.5), so a test can show that the defect an extension fixes is real.
- ``fresh_account`` (function): a random 12-digit account id no other test uses, so tests
  need not reset the shared lab.

Reaching an account: ``lab.client(service)`` talks to the default account 123456789012
(moto maps any access key it does not know, here "testing", to that account).
``lab.client(service, account=X)`` reaches X the way real code does: the lab creates role
``LabAdmin`` in X (admin route PUT /_lab/accounts/X/roles/LabAdmin, trusting the root of
123456789012), the default account calls sts:AssumeRole on it, and the client uses the
temporary credentials; moto maps those access keys to X.
"""

from __future__ import annotations

import json as jsonlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

# Never touch real credentials, profiles, IMDS or a proxy: everything goes to 127.0.0.1.
os.environ.update({
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
})
for _k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
           "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
           "AWS_WEB_IDENTITY_TOKEN_FILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
           "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_k, None)

import boto3  # noqa: E402
import requests  # noqa: E402
from botocore.config import Config  # noqa: E402

LAB_DIR = Path(__file__).resolve().parent.parent
SERVER = LAB_DIR / "server.py"
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
ADMIN_ROLE = "LabAdmin"
START_TIMEOUT = 90.0


def _all_extensions() -> list[str]:
    sys.path.insert(0, str(LAB_DIR))
    try:
        import labext
        return list(labext.EXTENSIONS)
    finally:
        sys.path.remove(str(LAB_DIR))


class Lab:
    """A running lab server (subprocess) and helpers to talk to it."""

    def __init__(self, args: list[str], name: str):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"lab-{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", "--exit-on-stdin-eof", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=dict(os.environ),
        )
        line = self._read_ready_line()
        self.start_seconds = time.monotonic() - t0
        if not line.startswith("LAB_READY http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"lab {name} did not start: stdout {line!r}; log:\n{self.log()}")
        self.url = line.split(" ", 1)[1].strip()
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies, no netrc
        self._creds: dict[str, dict[str, str]] = {}
        self._creds_lock = threading.Lock()

    def _read_ready_line(self) -> str:
        out: list[str] = []
        reader = threading.Thread(
            target=lambda: out.append(self.proc.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        return out[0] if out else ""

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.died_early = self.proc.poll()
        if self.died_early is None:
            try:
                self.proc.stdin.close()  # --exit-on-stdin-eof: the lab exits on its own
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()

    # -- admin endpoints ------------------------------------------------------------------
    def admin(self, method: str, path: str, json: Any = None, data: Any = None,
              account: str | None = None, region: str | None = None,
              headers: dict[str, str] | None = None, timeout: float = 60) -> requests.Response:
        """Call /_lab/<path> (path may be given with or without the /_lab prefix)."""
        if not path.startswith("/_lab/"):
            path = "/_lab/" + path.lstrip("/")
        params = {}
        if account is not None:
            params["account"] = account
        if region is not None:
            params["region"] = region
        return self.http.request(method, self.url + path, json=json, data=data, params=params,
                                 headers=headers, timeout=timeout)

    def admin_ok(self, method: str, path: str, **kw: Any) -> Any:
        """Like admin() but asserts a 2xx answer and returns its JSON (or bytes)."""
        r = self.admin(method, path, **kw)
        assert 200 <= r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        if r.headers.get("Content-Type", "").startswith("application/json"):
            return r.json()
        return r.content

    def reset(self) -> None:
        self.admin_ok("POST", "/_lab/reset")
        with self._creds_lock:
            self._creds.clear()

    def config(self, **options: Any) -> dict:
        return self.admin_ok("POST", "/_lab/config", json=options)

    # -- boto3 ----------------------------------------------------------------------------
    def config_for(self, **kw: Any) -> Config:
        base = dict(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=120,
                    s3={"addressing_style": "path"})
        base.update(kw)
        return Config(**base)

    def credentials(self, account: str = DEFAULT_ACCOUNT) -> dict[str, str]:
        """Credentials that moto maps to ``account``."""
        if account == DEFAULT_ACCOUNT:
            return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        with self._creds_lock:
            if account not in self._creds:
                self.admin_ok("PUT", f"/_lab/accounts/{account}/roles/{ADMIN_ROLE}")
                sts = self.client("sts")
                got = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ADMIN_ROLE}",
                                      RoleSessionName="lab-tests")["Credentials"]
                self._creds[account] = {
                    "aws_access_key_id": got["AccessKeyId"],
                    "aws_secret_access_key": got["SecretAccessKey"],
                    "aws_session_token": got["SessionToken"],
                }
            return dict(self._creds[account])

    def session(self, account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> boto3.Session:
        return boto3.Session(region_name=region, **self.credentials(account))

    def client(self, service: str, account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION,
               **config: Any):
        return self.session(account, region).client(
            service, endpoint_url=self.url, config=self.config_for(**config))

    def raw_client(self, service: str, access_key: str, secret_key: str = "testing",
                   session_token: str | None = None, region: str = DEFAULT_REGION, **config: Any):
        """A client with explicit credentials (e.g. those of an IAM user or assumed role)."""
        return boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                             aws_session_token=session_token, region_name=region).client(
            service, endpoint_url=self.url, config=self.config_for(**config))


def _start(args: list[str], name: str) -> Lab:
    return Lab(args, name)


@pytest.fixture(scope="session")
def lab():
    without = [x for x in os.environ.get("LAB_WITHOUT", "").replace(",", " ").split() if x]
    args = ["--without", *without] if without else []
    server = _start(args, "full")
    try:
        yield server
    finally:
        server.close()
    assert server.died_early is None, (
        f"the lab died during the tests (exit {server.died_early}); its log:\n{server.log()}")


@pytest.fixture(scope="session")
def stock_lab():
    server = _start(["--without", *_all_extensions()], "stock")
    try:
        yield server
    finally:
        server.close()


def random_account() -> str:
    while True:
        account = str(random.SystemRandom().randrange(100_000_000_000, 999_999_999_999))
        if account != DEFAULT_ACCOUNT:
            return account


@pytest.fixture
def fresh_account() -> str:
    """A random 12-digit account id, for state no other test shares."""
    return random_account()
