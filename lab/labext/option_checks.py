"""Validation of structured extension options at ``POST /_lab/config`` time.

admin.py's config route type-checks only int and bool options (the type of the default).
Options such as ``latency_ms: {"uniform": [20, 60]}`` or ``ec2_buckets`` need their own
check, done *before* the options change, so a bad value is a 400 naming it instead of a
lab that misbehaves later. ``add_validator(fn)`` wraps the registered config handler once
(admin.py itself is not changed; its route table is the extension point used here).

``fn(changes: dict) -> dict`` receives the whole requested change, validates the keys it
owns, returns normalised values for them (or {}), and raises ``admin.AdminError(400, ...)``
on bad input. Keys it does not own are left to the other validators and admin's own check.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from labext import admin

CONFIG_ROUTE = r"/_lab/config"

_validators: list[Callable[[dict], dict]] = []
_wrapped = False
_lock = threading.Lock()


def _checked_post_config(original: Callable) -> Callable:
    def post_config(req: admin.AdminRequest):
        body = req.json()
        if isinstance(body, dict):
            normalised: dict[str, Any] = {}
            for validate in list(_validators):
                normalised.update(validate(dict(body)) or {})
            if normalised:
                body.update(normalised)
                # AdminRequest caches the body; hand the normalised one to admin's handler.
                req._body = json.dumps(body).encode()
        return original(req)

    return post_config


def add_validator(validate: Callable[[dict], dict]) -> None:
    global _wrapped
    with _lock:
        _validators.append(validate)
        if _wrapped:
            return
        with admin._routes_lock:
            for i, (method, rx, handler) in enumerate(admin._routes):
                if method == "POST" and rx.pattern == CONFIG_ROUTE:
                    admin._routes[i] = (method, rx, _checked_post_config(handler))
                    _wrapped = True
                    return
    raise RuntimeError(f"admin route POST {CONFIG_ROUTE} not found; admin.py changed?")


def validate_preset(options: dict, keys: list[str], validate: Callable[[dict], dict]) -> None:
    """Check options set before install (server.py flags), in place. Raises ValueError."""
    preset = {k: options[k] for k in keys if k in options}
    if not preset:
        return
    try:
        options.update(validate(preset) or {})
    except admin.AdminError as e:
        raise ValueError(e.message) from None
