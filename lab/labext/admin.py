"""Admin endpoints of the lab, under the path prefix ``/_lab/``, as WSGI middleware.

Interface for extensions (keep it stable, other extensions depend on it)::

    from labext import admin

    @admin.route("PUT", r"/_lab/volumes/(?P<volume_id>vol-[0-9a-f]+)/data")
    def put_volume_data(req):
        req.params["volume_id"]      # named groups of the path regex (also req.groups)
        req.query                    # dict: query parameter -> first value
        req.headers                  # case-insensitive mapping of request headers
        req.stream                   # file-like body stream, limited to Content-Length
        req.body()                   # whole body as bytes (cached; do not mix with stream)
        req.json()                   # body parsed as JSON (None when the body is empty)
        req.account, req.region      # x-moto-account-id header or ?account=, ?region=
        req.ctx                      # the LabContext (data_dir, options, base_url, ...)
        return 200, {"ok": True}     # dict/list -> JSON; bytes -> octet-stream; str -> text
        # or (status, body, {"Header": "value"}); or raise admin.AdminError(404, "...")
        # Large bodies: return a binary file object (read in 1 MiB blocks, then closed) or
        # any other iterable of bytes (e.g. a generator), with {"Content-Length": ...}
        # in the headers if known; they are streamed, never held in memory.

The regex must match the whole path. A path that matches some route but not its method
gets 405; a path under /_lab/ that matches nothing gets 404. Errors are JSON
``{"error": "<message>"}``.

Extensions that need to see or rewrite raw AWS requests (before moto parses them) can
register WSGI middleware with ``admin.add_middleware(factory)``, where
``factory(app) -> app``; the last one added runs first (outermost).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from typing import Any, Callable, Iterable

from werkzeug.datastructures import EnvironHeaders
from werkzeug.wsgi import get_input_stream

log = logging.getLogger("lab.admin")

PREFIX = "/_lab/"
STREAMING_BODIES = True  # handlers may return file objects / iterables of bytes (see above)
STREAM_BLOCK = 1 << 20
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
_ACCOUNT_RE = re.compile(r"^\d{12}$")

_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error",
}

# (method, compiled regex, handler); guarded by _routes_lock for registration.
_routes: list[tuple[str, re.Pattern[str], Callable[["AdminRequest"], Any]]] = []
_routes_lock = threading.Lock()


class AdminError(Exception):
    """Raise from a handler to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def route(method: str, pattern: str) -> Callable:
    """Register ``handler(req)`` for ``method`` and a full-match path regex under /_lab/."""
    if not pattern.startswith("/_lab/"):
        raise ValueError(f"admin routes must live under /_lab/: {pattern!r}")
    compiled = re.compile(pattern)
    method = method.upper()

    def decorator(handler: Callable) -> Callable:
        with _routes_lock:
            for m, rx, _h in _routes:
                if m == method and rx.pattern == compiled.pattern:
                    raise ValueError(f"admin route registered twice: {method} {pattern}")
            _routes.append((method, compiled, handler))
        return handler

    return decorator


def routes() -> list[tuple[str, str]]:
    """(method, pattern) of every registered route, for /_lab/health and docs."""
    with _routes_lock:
        return [(m, rx.pattern) for m, rx, _h in _routes]


class AdminRequest:
    def __init__(self, environ: dict, params: dict[str, str], ctx: Any):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"].upper()
        self.path = environ.get("PATH_INFO", "")
        self.params = params
        self.groups = params
        self.ctx = ctx
        self.headers = EnvironHeaders(environ)
        from urllib.parse import parse_qs

        qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.query = {k: v[0] for k, v in qs.items()}
        self.query_all = qs
        self.stream = get_input_stream(environ)
        self._body: bytes | None = None

        account = self.headers.get("x-moto-account-id") or self.query.get("account")
        if account is None:
            account = DEFAULT_ACCOUNT
        if not _ACCOUNT_RE.match(account):
            raise AdminError(400, f"account must be 12 digits, got {account!r}")
        self.account = account
        self.region = self.query.get("region") or DEFAULT_REGION

    def body(self) -> bytes:
        if self._body is None:
            self._body = self.stream.read()
        return self._body

    def json(self) -> Any:
        raw = self.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise AdminError(400, f"request body is not valid JSON: {e}") from None


class _FileStream:
    """WSGI iterable over a binary file object, closed when the server is done with it."""

    def __init__(self, f: Any):
        self.f = f

    def __iter__(self):
        while True:
            block = self.f.read(STREAM_BLOCK)
            if not block:
                return
            yield block

    def close(self) -> None:
        self.f.close()


def _is_stream(body: Any) -> bool:
    if isinstance(body, (bytes, bytearray, memoryview, str, dict, list, tuple)) or body is None:
        return False
    return hasattr(body, "read") or hasattr(body, "__iter__")


def _respond(start_response: Callable, status: int, body: Any,
             headers: dict[str, str] | None = None) -> Iterable[bytes]:
    hdrs = dict(headers or {})
    reason = _STATUS_TEXT.get(status, "Status")
    if _is_stream(body):
        hdrs.setdefault("Content-Type", "application/octet-stream")
        start_response(f"{status} {reason}", list(hdrs.items()))
        return _FileStream(body) if hasattr(body, "read") else body
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
        hdrs.setdefault("Content-Type", "application/octet-stream")
    elif isinstance(body, str):
        data = body.encode()
        hdrs.setdefault("Content-Type", "text/plain; charset=utf-8")
    elif body is None and status == 204:
        data = b""
    else:
        data = json.dumps(body, default=str).encode()
        hdrs.setdefault("Content-Type", "application/json")
    hdrs["Content-Length"] = str(len(data))
    start_response(f"{status} {reason}", list(hdrs.items()))
    return [data]


def dispatch(environ: dict, start_response: Callable, ctx: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    method = environ["REQUEST_METHOD"].upper()
    with _routes_lock:
        table = list(_routes)
    path_matched = False
    for m, rx, handler in table:
        match = rx.fullmatch(path)
        if not match:
            continue
        path_matched = True
        if m != method:
            continue
        try:
            req = AdminRequest(environ, match.groupdict(), ctx)
            result = handler(req)
        except AdminError as e:
            return _respond(start_response, e.status, {"error": e.message})
        except Exception as e:  # a bug in a handler: say so loudly, keep serving
            traceback.print_exc(file=sys.stderr)
            return _respond(start_response, 500,
                            {"error": f"{type(e).__name__}: {e}", "route": rx.pattern})
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            return _respond(start_response, 500,
                            {"error": f"handler for {rx.pattern} returned {type(result).__name__},"
                                      " expected (status, body[, headers])"})
        return _respond(start_response, *result)
    if path_matched:
        return _respond(start_response, 405, {"error": f"{method} not allowed on {path}"})
    return _respond(start_response, 404, {"error": f"no lab admin route for {method} {path}"})


# ---------------------------------------------------------------------------------------
# The WSGI application: /_lab/ goes to the admin routes, everything else to moto
# (through whatever middleware extensions registered).

_middleware: list[Callable[[Callable], Callable]] = []


def add_middleware(factory: Callable[[Callable], Callable]) -> None:
    """Register ``factory(app) -> app`` to wrap the moto app (last added runs outermost)."""
    _middleware.append(factory)
    if _app is not None:
        _app.rebuild()


class LabApp:
    def __init__(self, moto_app: Callable, ctx: Any):
        self.moto_app = moto_app
        self.ctx = ctx
        self.inner = moto_app
        self.rebuild()

    def rebuild(self) -> None:
        inner = self.moto_app
        for factory in _middleware:
            inner = factory(inner)
        self.inner = inner

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX) or path == PREFIX.rstrip("/"):
            return dispatch(environ, start_response, self.ctx)
        if path.rstrip("/") == "/moto-api/reset" and environ["REQUEST_METHOD"] == "POST":
            # moto's own reset must also reset extension state, or the two drift apart.
            reset_all(self.ctx)
            return _respond(start_response, 200, {"status": "ok"})
        return self.inner(environ, start_response)


_app: LabApp | None = None


def make_app(moto_app: Callable, ctx: Any) -> LabApp:
    global _app
    _app = LabApp(moto_app, ctx)
    return _app


# ---------------------------------------------------------------------------------------
# Built-in routes.

_reset_hooks: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> None:
    """Register a callable to run after moto's reset (besides each extension's reset())."""
    _reset_hooks.append(hook)


def reset_all(ctx: Any) -> list[str]:
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    done = []
    for name, module in list(getattr(ctx, "modules", {}).items()):
        hook = getattr(module, "reset", None)
        if callable(hook):
            hook()
            done.append(name)
    for hook in _reset_hooks:
        hook()
    return done


@route("GET", r"/_lab/health")
def _health(req: AdminRequest):
    import moto

    return 200, {
        "ok": True,
        "moto": moto.__version__,
        "extensions": list(req.ctx.extensions),
        "disabled": list(req.ctx.disabled),
        "options": dict(req.ctx.options),
        "base_url": req.ctx.base_url,
        "data_dir": str(req.ctx.data_dir),
    }


@route("POST", r"/_lab/reset")
def _reset(req: AdminRequest):
    done = reset_all(req.ctx)
    return 200, {"ok": True, "reset": done}


@route("GET", r"/_lab/config")
def _get_config(req: AdminRequest):
    return 200, dict(req.ctx.options)


@route("POST", r"/_lab/config")
def _post_config(req: AdminRequest):
    body = req.json()
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object of option -> value")
    unknown = sorted(set(body) - set(req.ctx.options))
    if unknown:
        raise AdminError(400, f"unknown option(s) {unknown}; known: {sorted(req.ctx.options)}")
    for key, value in body.items():
        current = req.ctx.options[key]
        if isinstance(current, bool) or isinstance(current, int):
            if type(value) is not type(current) or (isinstance(value, int) and value < 0):
                raise AdminError(400, f"option {key} takes a non-negative "
                                      f"{type(current).__name__}, got {value!r}")
    req.ctx.options.update(body)
    return 200, dict(req.ctx.options)


@route("GET", r"/_lab/routes")
def _routes_list(req: AdminRequest):
    return 200, [{"method": m, "path": p} for m, p in routes()]


_NAME_RE = r"[\w+=,.@-]{1,64}"


@route("PUT", r"/_lab/accounts/(?P<account>\d{12})/roles/(?P<name>" + _NAME_RE + ")")
def _put_role(req: AdminRequest):
    """Create (or update the trust policy of) an IAM role in any account.

    Body (all optional): {"trust": <policy document dict>} or {"trusted_accounts": [ids]};
    default: trust the root of the default account 123456789012. This is how tests and the
    drill create the role they then reach the account through with sts:AssumeRole.
    """
    from moto.iam.models import iam_backends

    account = req.params["account"]
    name = req.params["name"]
    body = req.json() or {}
    if "trust" in body:
        doc = body["trust"]
    else:
        trusted = body.get("trusted_accounts") or [DEFAULT_ACCOUNT]
        doc = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in trusted]},
                "Action": "sts:AssumeRole",
            }],
        }
    doc_s = doc if isinstance(doc, str) else json.dumps(doc)
    backend = iam_backends[account]["aws"]
    try:
        role = backend.get_role(name)
        backend.update_assume_role_policy(name, doc_s)
        created = False
    except Exception:
        role = backend.create_role(
            role_name=name, assume_role_policy_document=doc_s, path="/",
            permissions_boundary=None, description="lab role", tags=[],
            max_session_duration="3600", linked_service=None,
        )
        created = True
    return (201 if created else 200), {"arn": role.arn, "account": account, "created": created}
