"""What the lab benchmarks (aws_speed.py, acquire_speed.py) share: the lab as a child
process on loopback with its admin routes and clients, and the readings of its request
log (GET /_lab/realism/log)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import urllib.request

import boto3


class Lab:
    """The lab started on a free loopback port; `env` is what a cleanroom child needs
    (lab endpoint, lab credentials, no instance metadata, no profile files)."""

    def __init__(self, root: str, region: str, home: str):
        self.region, self.home = region, home
        self.process = subprocess.Popen([f"{root}/lab/.venv/bin/python", f"{root}/lab/server.py", "--port", "0", "--exit-on-stdin-eof"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().split()[1]
        self.env = dict(AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID="AKIALABLABLABLAB0000",
                        AWS_SECRET_ACCESS_KEY="lab-secret-not-a-real-credential", AWS_REGION=region,
                        AWS_DEFAULT_REGION=region, AWS_EC2_METADATA_DISABLED="true",
                        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", PATH=os.environ["PATH"])

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=10)

    def admin(self, method: str, path: str, body=None, account: str | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if account:
            headers["x-moto-account-id"] = account
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req) as r:
            text = r.read()
        try:
            return json.loads(text or b"null")
        except ValueError:
            return text.decode(errors="replace")

    def realism(self, latency_ms: float = 0, throttle: bool = False):
        self.admin("POST", "/_lab/config", {"latency_ms": {"fixed": latency_ms}, "ec2_throttle": throttle})
        self.admin("POST", "/_lab/realism/buckets/reset")
        self.admin("POST", "/_lab/realism/stats/reset")  # also empties the request log

    def request_log(self) -> list[dict]:
        return self.admin("GET", "/_lab/realism/log")["requests"]

    def client(self, service, account=None, region=None):
        c = boto3.client(service, endpoint_url=self.url, region_name=region or self.region,
                         aws_access_key_id="lab", aws_secret_access_key="lab")
        c.meta.events.register("before-send.*.*", Header("x-moto-account-id", account or self.home))
        return c

    def isolation_checked(self, acct, iid) -> bool:
        """Every ENI of the instance on exactly one group: the case's isolation group,
        which allows nothing in or out."""
        ec2 = self.client("ec2", acct)
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        for eni in inst["NetworkInterfaces"]:
            groups = [g["GroupId"] for g in eni["Groups"]]
            if len(groups) != 1:
                return False
            g = ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"][0]
            if "isolation, no inbound, no outbound" not in g["Description"] or g["IpPermissions"] or g["IpPermissionsEgress"]:
                return False
        return bool(inst["NetworkInterfaces"])


class Header:
    """Sets one header on every request of a boto3 client (its account, its source IP)."""
    def __init__(self, name, value): self.name, self.value = name, value
    def __call__(self, request, **_): request.headers[self.name] = self.value


def accounts(first_digit: str):
    """New 12-digit account ids, unique to this process."""
    counter = iter(range(1_000_000))
    return lambda: f"{first_digit}{os.getpid() % 100000:05d}{next(counter):06d}"


def trust(acct: str) -> str:
    """A role trust policy that lets `acct` assume the role."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{acct}:root"}, "Action": "sts:AssumeRole"}]})


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def is_swap(e: dict) -> bool:
    return e["operation"] == "ModifyNetworkInterfaceAttribute" and not e["dry_run"] and e["status"] == 200


def chain_depth(log: list[dict], until: float) -> int:
    """Sequential round trips actually made to `until`: the longest chain of requests each
    sent after the previous one was answered (what the elapsed time would be made of on
    AWS, where a call costs the latency; here the lab's own processing time adds to it)."""
    done = sorted((e for e in log if e["end"] <= until + 1e-6), key=lambda e: e["end"])
    depth: list[tuple[float, int]] = []
    for e in done:
        before = [d for end, d in depth if end <= e["start"]]
        depth.append((e["end"], 1 + max(before, default=0)))
    return max((d for _, d in depth), default=0)


def summarise_calls(log: list[dict], until: float | None = None) -> dict:
    """Requests (every service, throttled answers included) and per service/operation."""
    chosen = [e for e in log if until is None or e["start"] < until]
    per = collections.Counter(f"{e['service']}:{e['operation']}{' (DryRun)' if e['dry_run'] else ''}" for e in chosen)
    by_service = collections.Counter(e["service"] for e in chosen)
    return {"requests": len(chosen), "errors": sum(e["status"] >= 400 for e in chosen),
            "by_service": dict(sorted(by_service.items())), "by_operation": dict(sorted(per.items()))}


def drop_log(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("log", "t0")}
