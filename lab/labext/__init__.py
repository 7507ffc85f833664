"""Registry of the lab's extensions to moto 5.2.5.

Each extension is a module ``labext/<name>.py`` with ``install(ctx)`` and, optionally,
``reset()`` (called by POST /_lab/reset and moto's /moto-api/reset after moto's own reset).
Extensions patch moto's backends/responses in-process; they are pinned to moto 5.2.5.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTENSIONS = ["sts_trust", "s3_integrity", "s3_wire", "console", "progress", "sharing", "blockdata", "ssm_agent", "eni_groups",
              "iam_enforce", "realism", "cfn_roles",
              "cloudtrail", "faults"]

MOTO_VERSION = "5.2.5"


class LabExtensionError(RuntimeError):
    pass


@dataclass
class LabContext:
    data_dir: Path
    # Runtime options, changeable by POST /_lab/config. An extension may add its own keys
    # with ctx.options.setdefault(key, default) in install(); only known keys are accepted.
    options: dict[str, Any] = field(default_factory=lambda: {"snapshot_polls": 0})
    base_url: str | None = None  # e.g. "http://127.0.0.1:45123", set before install()
    extensions: list[str] = field(default_factory=list)  # installed, in order
    disabled: list[str] = field(default_factory=list)
    modules: dict[str, Any] = field(default_factory=dict)  # name -> module

    @property
    def snapshot_polls(self) -> int:
        return int(self.options.get("snapshot_polls", 0))


def check_moto_version() -> None:
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise LabExtensionError(
            f"lab extensions are written against moto {MOTO_VERSION}, found {moto.__version__}; "
            "run lab/bootstrap.sh (requirements.txt pins it)")


def load(ctx: LabContext, without: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import and install every extension not in ``without``. Fails loudly on a missing one."""
    unknown = sorted(set(without) - set(EXTENSIONS))
    if unknown:
        raise LabExtensionError(f"--without names unknown extension(s) {unknown}; "
                                f"known: {EXTENSIONS}")
    check_moto_version()
    here = Path(__file__).resolve().parent
    for name in EXTENSIONS:
        if name in without:
            ctx.disabled.append(name)
            continue
        if not (here / f"{name}.py").exists():
            raise LabExtensionError(
                f"lab extension {name!r} is listed in labext.EXTENSIONS but {here / (name + '.py')} "
                f"does not exist. Create it (it must define install(ctx)) or start the lab with "
                f"--without {name}.")
        module = importlib.import_module(f"labext.{name}")
        install = getattr(module, "install", None)
        if not callable(install):
            raise LabExtensionError(f"lab extension {name!r} ({module.__file__}) has no install(ctx)")
        install(ctx)
        ctx.modules[name] = module
        ctx.extensions.append(name)
    return list(ctx.extensions)
