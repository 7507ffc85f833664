"""console: seeded console output and screenshots per instance.

Stock moto 5.2.5 (moto/ec2/responses/general.py) answers GetConsoleOutput for every
instance with the same canned 2006 Xen boot log, and has no GetConsoleScreenshot at all
(the server answers 500 NotImplementedError). cleanroom captures both as evidence, so the
lab lets a test or the drill seed them, per account/region/instance:

    PUT /_lab/instances/{id}/console-output[?latest=true]   body: raw bytes (text)
    PUT /_lab/instances/{id}/screenshot                      body: JPEG bytes
    GET /_lab/instances/{id}/console                         what is seeded (JSON, for tests)
    (account: x-moto-account-id header or ?account=; region: ?region=; the instance must exist)

GetConsoleOutput models AWS: Output is base64 of the last 64 KiB only. Two buffers:
the "buffered" output (what Latest=false returns: posted around the last state transition)
and the live serial output (Latest=true). A PUT without ?latest=true sets both; with it,
only the live one. Unseeded instances have no output: the Output member is omitted, as AWS
does for an instance that has written nothing yet.
GetConsoleScreenshot returns ImageData = base64 of the seeded JPEG, or of a small valid
placeholder JPEG. Unknown instance ids raise InvalidInstanceID.NotFound (moto's own lookup).
"""

from __future__ import annotations

import base64
import threading
from datetime import datetime, timezone

from moto.core.responses import ActionResult
from moto.core.types import Base64EncodedString
from moto.ec2.models import ec2_backends
from moto.ec2.responses.general import General

from labext import admin

CONSOLE_LIMIT = 64 * 1024  # AWS keeps only the most recent 64 KB

# A 320x60 grey JPEG reading "cleanroom lab: no screenshot seeded".
PLACEHOLDER_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERX"
    "RTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/wAALCAA8AUABAREA/8QAGgABAAMBAQEAAAAAAAAAAAAAAAIDBAEFBv/E"
    "ACoQAAICAgICAQMDBQEAAAAAAAABAgMEERIhEzFBBSJRIzJhFCRScYGC/9oACAEBAAA/APiwAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADeseK+nxsjj+RShJzt5NeOSk0l+PWnr29m/6hiY/ky7ZV"
    "2SlKdsnNR6g+T4rfJJb6fp730Qt+n49NlPko61fyjuWpcK1JNPffb9rSf4M/hx/BLI8Ee8XyKHKWlLy8N+9+v5NE"
    "sChRvccbcq3rHjyl/cL5fvvS7617Of0mJBaeOpOXlb3OX2ONUZ8ffxJtFFdUIfU5RqhxU8WUlFbenKhvS/6zZHCh"
    "j5FPCjU5RyIOKb1PVXWm/e9vtaPM+oUqpUtUeGUo7nHv7Zb9dv8AGn/6/wBG6eJiTysmEKFBUZDrilOX3/bNpPb+"
    "XBLr8ldeJU8qMZYz5yp5SpXJ8JctdrfLWu/yt/wWPAqjnUUvFUqZW1xdysepNtco79P5XWn1sqjj4s8B3eGW5QnJ"
    "yim1XJb0uTl/C6abe+i6eDiLKxqlVPhLJhWpNcVbBvt75Pfx2kvZVi4+PkVwtWL23ZFQi5SXXDTa3t/ufr/eid9V"
    "LVONOmLcce5qam3x4ysa18P1+PksqxaarrOONF6VkKduT88fHJ8vf8L1/kVYGDRfiVzsqa6bc9v7nt6S7099Lj0/"
    "nZKOFiuyTWPa5qMP0eDb7ctvjz2vUfb+TtGNVW7JUUudbpyN2uW+DUZpR6evWn/0W4GJGyMI1T/e1CTXFXJRbWny"
    "e9tR7SXsx/VYuMcJOnwvwdw76/Un+ezAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAf//Z"
)

_lock = threading.Lock()
# (account, region, instance_id) -> {"buffered": bytes|None, "latest": bytes|None,
#                                     "ts": datetime|None, "screenshot": bytes|None}
_state: dict[tuple[str, str, str], dict] = {}


def reset() -> None:
    with _lock:
        _state.clear()


def _entry(account: str, region: str, instance_id: str) -> dict:
    return _state.setdefault((account, region, instance_id),
                             {"buffered": None, "latest": None, "ts": None, "screenshot": None})


def _require_instance(req) -> str:
    instance_id = req.params["instance_id"]
    try:
        ec2_backends[req.account][req.region].get_instance(instance_id)
    except Exception:
        raise admin.AdminError(404, f"instance {instance_id} not found in account "
                                    f"{req.account} region {req.region}") from None
    return instance_id


_INSTANCE = r"/_lab/instances/(?P<instance_id>i-[0-9a-f]+)"


@admin.route("PUT", _INSTANCE + r"/console-output")
def _put_console(req):
    instance_id = _require_instance(req)
    data = req.body()
    latest_only = req.query.get("latest", "").lower() in ("1", "true", "yes")
    with _lock:
        e = _entry(req.account, req.region, instance_id)
        e["latest"] = data
        if not latest_only:
            e["buffered"] = data
        e["ts"] = datetime.now(timezone.utc)
    return 200, {"instance_id": instance_id, "bytes": len(data), "latest_only": latest_only}


@admin.route("PUT", _INSTANCE + r"/screenshot")
def _put_screenshot(req):
    instance_id = _require_instance(req)
    data = req.body()
    if not (data.startswith(b"\xff\xd8") and data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        raise admin.AdminError(400, "screenshot body must be a JPEG (FF D8 ... FF D9)")
    with _lock:
        _entry(req.account, req.region, instance_id)["screenshot"] = data
    return 200, {"instance_id": instance_id, "bytes": len(data)}


@admin.route("GET", _INSTANCE + r"/console")
def _get_console(req):
    instance_id = req.params["instance_id"]
    with _lock:
        e = dict(_state.get((req.account, req.region, instance_id)) or {})
    return 200, {k: (len(v) if isinstance(v, bytes) else v) for k, v in e.items()}


def _b64(data: bytes) -> Base64EncodedString:
    return Base64EncodedString(base64.b64encode(data).decode("ascii"))


def get_console_output(self: General) -> ActionResult:
    # Replaces moto's canned log: seeded text, last 64 KiB, Latest honoured.
    instance_id = self._get_param("InstanceId")
    instance = self.ec2_backend.get_instance(instance_id)  # InvalidInstanceID.NotFound
    latest = str(self._get_param("Latest", "false")).lower() == "true"
    with _lock:
        e = _state.get((self.current_account, self.region, instance.id)) or {}
        data = e.get("latest" if latest else "buffered")
        ts = e.get("ts")
    result: dict = {"InstanceId": instance.id,
                    "Timestamp": ts or datetime.now(timezone.utc)}
    if data:
        result["Output"] = _b64(data[-CONSOLE_LIMIT:])
    return ActionResult(result)


def get_console_screenshot(self: General) -> ActionResult:
    # Missing in stock moto (500). Seeded JPEG or a placeholder.
    instance_id = self._get_param("InstanceId")
    instance = self.ec2_backend.get_instance(instance_id)
    with _lock:
        shot = (_state.get((self.current_account, self.region, instance.id)) or {}).get("screenshot")
    return ActionResult({"InstanceId": instance.id, "ImageData": _b64(shot or PLACEHOLDER_JPEG)})


def install(ctx) -> None:
    General.get_console_output = get_console_output
    General.get_console_screenshot = get_console_screenshot
