"""faults: make chosen AWS calls fail, in one account and region, for cleanroom's failure tests.

AWS fails in ways no emulator produces on its own: a permission missing on one call, a
throttled API, a snapshot that ends in state ``error``. cleanroom must report those clearly
and resume afterwards, so the lab can be told to fail them (stock moto has nothing of the
kind). Faults live in the route's account and region (``x-moto-account-id`` or ``?account=``,
``?region=``); reset clears them.

* ``POST /_lab/faults`` ``{"service": "ec2", "action": "ModifySnapshotAttribute",
  "code": "UnauthorizedOperation", "message": "...", "status": 403, "times": 1,
  "match": {"SnapshotId": "snap-..."}, "after_call": false}``: the next ``times`` calls of
  that action (signing name ``service``) in that account/region whose parameters match are
  answered with that error, in the service's own format (EC2 XML, query XML for IAM/STS/Auto
  Scaling/ELB, JSON ``__type`` for KMS/SSM/CloudTrail, S3 XML, REST-JSON for EBS direct).
  The call does not reach moto, unless ``after_call`` is true: then it is carried out and
  its answer replaced by the error (the "did it happen?" case a resumable tool must handle).
* ``{"kind": "snapshot_error", "volume_id": "vol-...", "times": 1, "message": "..."}``: the
  next snapshot(s) CreateSnapshot or CreateSnapshots takes of that volume end in State
  ``error`` with that StateMessage once their progress polls are done (see ``progress``), and
  hold no data. ``{"kind": "copy_error", "source_snapshot_id": "snap-..."}``: the same for
  the copies CopySnapshot makes of that source (in the account/region making the copy).
* ``GET /_lab/faults`` lists every fault (every account), with ``remaining`` and ``hits``;
  ``DELETE /_lab/faults`` removes them all; ``DELETE /_lab/faults/{id}`` one.

``times`` absent = 1, ``null`` = until removed. IAM is global: its faults match whatever
region the call was signed for.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from xml.sax.saxutils import escape

from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot

from labext import admin
from labext.cloudtrail import AwsRequest, parse_request

KINDS = ("api_error", "snapshot_error", "copy_error")
DEFAULT_STATUS = 400  # what AWS answers for most client errors
DEFAULT_SNAPSHOT_MESSAGE = "Snapshot creation failed (lab fault injection)"
DEFAULT_COPY_MESSAGE = "Snapshot copy failed (lab fault injection)"
GLOBAL_SERVICES = ("iam",)  # signed for us-east-1 whatever region the caller uses

_lock = threading.RLock()
_ctx = None
_faults: dict[str, "Fault"] = {}  # id -> fault, in creation order


@dataclass
class Fault:
    id: str
    kind: str
    account: str
    region: str
    times: int | None          # as asked; None = until removed
    remaining: int | None
    created: str
    hits: int = 0
    service: str | None = None
    action: str | None = None
    code: str | None = None
    message: str | None = None
    status: int = DEFAULT_STATUS
    match: dict[str, Any] = field(default_factory=dict)
    after_call: bool = False
    volume_id: str | None = None
    source_snapshot_id: str | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "account": self.account,
                               "region": self.region, "times": self.times,
                               "remaining": self.remaining, "hits": self.hits,
                               "created": self.created}
        if self.kind == "api_error":
            out.update(service=self.service, action=self.action, code=self.code,
                       message=self.message, status=self.status, match=self.match,
                       after_call=self.after_call)
        elif self.kind == "snapshot_error":
            out.update(volume_id=self.volume_id, message=self.message)
        else:
            out.update(source_snapshot_id=self.source_snapshot_id, message=self.message)
        return out

    def live(self) -> bool:
        return self.remaining is None or self.remaining > 0


def reset() -> None:
    with _lock:
        _faults.clear()


def _take(predicate: Callable[[Fault], bool]) -> Fault | None:
    """The oldest live fault the predicate accepts, with one use consumed (atomically)."""
    with _lock:
        for fault in _faults.values():
            if fault.live() and predicate(fault):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
    return None


# ---------------------------------------------------------------------------------------
# Matching request parameters


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """JSON bodies flattened the way query parameters are named: ``A.B``, lists ``A.1``."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value, 1):
            _flatten(v, f"{prefix}.{i}", out)
    if prefix:
        out.setdefault(prefix, value)


def _param_matches(params: dict[str, Any], flat: dict[str, Any], name: str, want: Any) -> bool:
    want_n = _norm(want)
    if name in params and _norm(params[name]) == want_n:
        return True
    if name in flat and _norm(flat[name]) == want_n:
        return True
    # A scalar names one member of a list: EC2 ``InstanceId.1``, query ``X.member.1``, JSON [..].
    member = re.compile(re.escape(name) + r"(\.member)?\.\d+$")
    return any(member.match(k) and _norm(v) == want_n for k, v in flat.items())


def _matches(fault: Fault, req: AwsRequest) -> bool:
    if fault.kind != "api_error" or fault.account != req.account:
        return False
    if fault.region != req.region and req.service not in GLOBAL_SERVICES:
        return False
    if fault.service != req.service or fault.action != req.action:
        return False
    if not fault.match:
        return True
    flat: dict[str, Any] = {}
    for k, v in req.params.items():
        _flatten(v, k, flat)
    return all(_param_matches(req.params, flat, k, v) for k, v in fault.match.items())


# ---------------------------------------------------------------------------------------
# Error documents, in each protocol's format


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def error_document(req: AwsRequest, status: int, code: str, message: str
                   ) -> tuple[list[tuple[str, str]], bytes]:
    rid = str(uuid.uuid4())
    msg = escape(message)
    headers = [("x-amzn-RequestId", rid)]
    if req.protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{escape(code)}</Code><Message>{msg}</Message></Error></Errors>"
                f"<RequestID>{rid}</RequestID></Response>")
        headers.append(("Content-Type", "text/xml;charset=UTF-8"))
    elif req.protocol == "query":
        kind = "Sender" if status < 500 else "Receiver"
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
                f"<Type>{kind}</Type><Code>{escape(code)}</Code><Message>{msg}</Message>"
                f"</Error><RequestId>{rid}</RequestId></ErrorResponse>")
        headers.append(("Content-Type", "text/xml"))
    elif req.protocol == "json":
        body = json.dumps({"__type": code, "message": message})
        headers.append(("Content-Type", f"application/x-amz-json-{req.json_version}"))
    elif req.protocol == "rest-xml":  # S3
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
                f"<Message>{msg}</Message><RequestId>{rid}</RequestId>"
                f"<HostId>{uuid.uuid4().hex}</HostId></Error>")
        headers += [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
    else:  # rest-json (EBS direct): the code travels in a header
        body = json.dumps({"message": message})
        headers += [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    return headers, body.encode()


def _drain(environ: dict) -> None:
    """Read an unread body before answering without moto, so a kept-alive connection does
    not see the body's bytes as its next request."""
    from werkzeug.wsgi import get_input_stream

    stream = get_input_stream(environ)
    while stream.read(1 << 20):
        pass


def middleware(app: Callable) -> Callable:
    def faults(environ: dict, start_response: Callable):
        with _lock:
            armed = any(f.kind == "api_error" and f.live() for f in _faults.values())
        if not armed:
            return app(environ, start_response)
        try:
            req = parse_request(environ)
        except Exception as e:  # noqa: BLE001
            print(f"lab faults: cannot parse request: {e!r}", file=sys.stderr)
            return app(environ, start_response)
        if req is None or not req.action:
            return app(environ, start_response)
        fault = _take(lambda f: _matches(f, req))
        if fault is None:
            return app(environ, start_response)
        if fault.after_call:
            result = app(environ, lambda status, headers, exc_info=None: (lambda data: None))
            try:
                for _chunk in result:
                    pass
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()
        else:
            _drain(environ)
        headers, body = error_document(req, fault.status, fault.code or "", fault.message or "")
        if req.method == "HEAD":
            body = b""
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{fault.status} {_REASONS.get(fault.status, 'Error')}", headers)
        return [body]

    return faults


# ---------------------------------------------------------------------------------------
# Snapshots that end in State "error"


class FailingSnapshot(Snapshot):
    """A snapshot a fault has doomed: whenever it would show "completed" it shows "error".

    The progress extension still moves it through its polls ("pending" first); sharing and
    progress refuse to copy or restore it as for any snapshot in state error."""

    @property
    def status(self) -> str:
        shown = self.__dict__.get("status", "completed")
        return "error" if shown == "completed" else shown

    @status.setter
    def status(self, value: str) -> None:
        self.__dict__["status"] = value

    @property
    def state_message(self) -> str | None:
        if self.status != "error":
            return None
        return self.__dict__.get("state_message") or self.__dict__.get("_lab_fault_message")

    @state_message.setter
    def state_message(self, value: str | None) -> None:
        self.__dict__["state_message"] = value


def _doom(snap: Snapshot, message: str) -> None:
    snap.__class__ = FailingSnapshot
    snap.__dict__["_lab_fault_message"] = message
    blockdata = (_ctx.modules.get("blockdata") if _ctx is not None else None)
    if blockdata is not None:
        blockdata.store().detach(snap.id)  # a failed snapshot holds no data


def _install_snapshot_hooks() -> None:
    create = EBSBackend.create_snapshot
    copy = EBSBackend.copy_snapshot

    def create_snapshot(self, volume_id, description, owner_id=None, from_ami=None):
        snap = create(self, volume_id, description, owner_id=owner_id, from_ami=from_ami)
        if from_ami:  # AMI snapshots are not CreateSnapshot(s)
            return snap
        fault = _take(lambda f: f.kind == "snapshot_error" and f.volume_id == volume_id
                      and f.account == self.account_id and f.region == self.region_name)
        if fault is not None:
            _doom(snap, fault.message or DEFAULT_SNAPSHOT_MESSAGE)
        return snap

    def copy_snapshot(self, source_snapshot_id, *args, **kwargs):
        snap = copy(self, source_snapshot_id, *args, **kwargs)
        fault = _take(lambda f: f.kind == "copy_error"
                      and f.source_snapshot_id == source_snapshot_id
                      and f.account == self.account_id and f.region == self.region_name)
        if fault is not None:
            _doom(snap, fault.message or DEFAULT_COPY_MESSAGE)
        return snap

    EBSBackend.create_snapshot = create_snapshot
    EBSBackend.copy_snapshot = copy_snapshot


# ---------------------------------------------------------------------------------------
# Admin routes


_API_KEYS = {"kind", "service", "action", "code", "message", "status", "times", "match",
             "after_call"}
_SNAPSHOT_KEYS = {"kind", "volume_id", "times", "message"}
_COPY_KEYS = {"kind", "source_snapshot_id", "times", "message"}


def _need_str(body: dict, key: str, pattern: str | None = None) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise admin.AdminError(400, f"{key} is required (a non-empty string)")
    if pattern and not re.fullmatch(pattern, value):
        raise admin.AdminError(400, f"{key} {value!r} does not look right ({pattern})")
    return value


def _fault_from(body: Any, account: str, region: str) -> Fault:
    if not isinstance(body, dict):
        raise admin.AdminError(400, "body must be a JSON object")
    kind = body.get("kind", "api_error")
    if kind not in KINDS:
        raise admin.AdminError(400, f"kind {kind!r}: one of {list(KINDS)}")
    allowed = {"api_error": _API_KEYS, "snapshot_error": _SNAPSHOT_KEYS,
               "copy_error": _COPY_KEYS}[kind]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise admin.AdminError(400, f"unknown field(s) {unknown} for kind {kind}; "
                                    f"known: {sorted(allowed)}")
    times = body.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise admin.AdminError(400, f"times {times!r}: a positive integer, or null for "
                                    "until removed")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise admin.AdminError(400, "message must be a string")
    fault = Fault(id=f"fault-{uuid.uuid4().hex[:12]}", kind=kind, account=account,
                  region=region, times=times, remaining=times, message=message,
                  created=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    if kind == "api_error":
        fault.service = _need_str(body, "service", r"[a-z0-9-]+")
        fault.action = _need_str(body, "action", r"[A-Za-z0-9]+")
        fault.code = _need_str(body, "code", r"[A-Za-z0-9.:#_-]+")
        if fault.message is None:
            fault.message = f"{fault.code} (lab fault {fault.id})"
        status = body.get("status", DEFAULT_STATUS)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise admin.AdminError(400, f"status {status!r}: an HTTP error status 400..599")
        fault.status = status
        match = body.get("match") or {}
        if not isinstance(match, dict):
            raise admin.AdminError(400, "match must be a JSON object of parameter -> value")
        fault.match = match
        after = body.get("after_call", False)
        if not isinstance(after, bool):
            raise admin.AdminError(400, "after_call must be true or false")
        fault.after_call = after
    elif kind == "snapshot_error":
        fault.volume_id = _need_str(body, "volume_id", r"vol-[0-9a-f]+")
    else:
        fault.source_snapshot_id = _need_str(body, "source_snapshot_id", r"snap-[0-9a-f]+")
    return fault


@admin.route("POST", r"/_lab/faults")
def _post_fault(req: admin.AdminRequest):
    fault = _fault_from(req.json(), req.account, req.region)
    with _lock:
        _faults[fault.id] = fault
    return 201, fault.view()


@admin.route("GET", r"/_lab/faults")
def _list_faults(req: admin.AdminRequest):
    with _lock:
        return 200, {"faults": [f.view() for f in _faults.values()]}


@admin.route("DELETE", r"/_lab/faults")
def _delete_faults(req: admin.AdminRequest):
    with _lock:
        gone = len(_faults)
        _faults.clear()
    return 200, {"deleted": gone}


@admin.route("DELETE", r"/_lab/faults/(?P<fault_id>fault-[0-9a-f]+)")
def _delete_fault(req: admin.AdminRequest):
    with _lock:
        fault = _faults.pop(req.params["fault_id"], None)
    if fault is None:
        raise admin.AdminError(404, f"no fault {req.params['fault_id']}")
    return 200, fault.view()


def install(ctx) -> None:
    global _ctx
    _ctx = ctx
    _install_snapshot_hooks()
    admin.add_middleware(middleware)
