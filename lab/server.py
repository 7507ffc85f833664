#!/usr/bin/env python3
"""The lab: moto server 5.2.5 with cleanroom's extensions, on a loopback port.

    lab/.venv/bin/python lab/server.py [--host 127.0.0.1] [--port 0] [--data-dir DIR]
        [--snapshot-polls N] [--without EXT ...] [--exit-on-stdin-eof] [--verbose]
        [--latency-ms MS|JSON] [--ec2-throttle] [--ec2-buckets JSON] [--s3-slowdown-rate F]
        [--service-buckets JSON] [--realism-seed N] [--iam-enforce]

Prints exactly one line on stdout once it serves: ``LAB_READY http://127.0.0.1:<port>``.
Everything else goes to stderr. Exits 0 on SIGTERM/SIGINT (and, with --exit-on-stdin-eof,
when stdin reaches EOF, so a dead parent never leaves an orphan server behind).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

# Before moto is imported: without this, moto loads its AMI catalogue into every EC2
# region backend, which makes DescribeSnapshots/DescribeImages about 100x slower.
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
# The lab must never reach out for credentials or metadata, even from inside moto.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _k, _v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
               ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_k, _v)
os.environ.pop("AWS_PROFILE", None)

LAB_DIR = Path(__file__).resolve().parent
if str(LAB_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_DIR))

ALLOWED_HOSTS = ("127.0.0.1",)

log = logging.getLogger("lab")


def _json_arg(text: str):
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or JSON: {text!r}") from None


# flag attribute -> (option, extension that owns it)
EXTENSION_FLAGS = {
    "latency_ms": ("latency_ms", "realism"), "ec2_buckets": ("ec2_buckets", "realism"),
    "s3_slowdown_rate": ("s3_slowdown_rate", "realism"),
    "service_buckets": ("service_buckets", "realism"), "realism_seed": ("realism_seed", "realism"),
    "ec2_throttle": ("ec2_throttle", "realism"), "iam_enforce": ("iam_enforce", "iam_enforce"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lab/server.py", description=__doc__.split("\n")[1])
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address; only 127.0.0.1 is accepted (the lab is loopback-only)")
    p.add_argument("--port", type=int, default=0, help="TCP port, 0 = any free port (default)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where extensions keep bulk data; default a temp dir removed at exit")
    p.add_argument("--snapshot-polls", type=int, default=0,
                   help="DescribeSnapshots polls a new snapshot stays pending (0 = instant)")
    p.add_argument("--without", nargs="+", action="extend", default=[], metavar="EXT",
                   help="do not load these extensions (repeatable)")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="exit when stdin is closed (for parents that may die)")
    p.add_argument("--verbose", "-v", action="store_true", help="log every request to stderr")
    # realism and iam_enforce (lab/README.md); each sets the option of the same name.
    p.add_argument("--latency-ms", type=_json_arg, default=None, metavar="MS|JSON",
                   help='delay per AWS request: 40, or {"uniform": [20, 60]}, {"normal": [40, 10]}')
    p.add_argument("--ec2-throttle", action="store_true",
                   help="EC2 token buckets with the documented sizes")
    p.add_argument("--ec2-buckets", type=_json_arg, default=None, metavar="JSON",
                   help='EC2 bucket overrides, e.g. {"mutating": [50, 5]}')
    p.add_argument("--s3-slowdown-rate", type=float, default=None, metavar="F",
                   help="fraction 0..1 of S3 requests answered 503 SlowDown")
    p.add_argument("--service-buckets", type=_json_arg, default=None, metavar="JSON",
                   help='token buckets of other services, e.g. {"iam": [15, 2]}')
    p.add_argument("--realism-seed", type=int, default=None, metavar="N",
                   help="seed for latency samples and SlowDown picks")
    p.add_argument("--iam-enforce", action="store_true",
                   help="evaluate IAM identity policies of IAM users and assumed roles")
    args = p.parse_args(argv)
    if args.host not in ALLOWED_HOSTS:
        p.error(f"--host {args.host!r} refused: the lab binds only {', '.join(ALLOWED_HOSTS)}")
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    if args.snapshot_polls < 0:
        p.error("--snapshot-polls must be >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    faulthandler.enable(file=sys.stderr)  # a crash in a C extension still leaves a trace
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
                        format="lab %(levelname)s %(name)s: %(message)s")
    # werkzeug logs every request at INFO; keep the default run quiet.
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.ERROR)

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

    import labext
    from labext import admin

    own_data_dir = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="cleanroom-lab-")) if own_data_dir else args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    server = None
    try:
        ctx = labext.LabContext(data_dir=data_dir.resolve())
        ctx.options["snapshot_polls"] = args.snapshot_polls
        for attr, (option, owner) in EXTENSION_FLAGS.items():
            value = getattr(args, attr)
            if value is None or value is False:
                continue
            if owner in args.without:
                raise labext.LabExtensionError(
                    f"--{attr.replace('_', '-')} needs extension {owner}, which --without disables")
            ctx.options[option] = value  # the extension validates it at install

        moto_app = DomainDispatcherApplication(create_backend_app)
        app = admin.make_app(moto_app, ctx)
        # Same server moto's ThreadedMotoServer builds: threaded werkzeug + moto's handler.
        server = make_server(args.host, args.port, app, threaded=True,
                             request_handler=MotoRequestHandler)
        server.daemon_threads = True
        port = server.server_port
        ctx.base_url = f"http://{args.host}:{port}"

        labext.load(ctx, without=args.without)
        log.info("extensions: %s (disabled: %s)", ctx.extensions, ctx.disabled)

        def on_signal(signum, _frame):
            # Always said, even when quiet: an unexpected stop should be explainable.
            print(f"lab: stopping on signal {signal.Signals(signum).name}", file=sys.stderr, flush=True)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        if args.exit_on_stdin_eof:
            def watch_stdin():
                # os.read, not sys.stdin: a daemon thread blocked inside a buffered
                # reader makes interpreter shutdown abort ("could not acquire lock").
                fd = sys.stdin.fileno()
                try:
                    while os.read(fd, 65536):
                        pass
                except (OSError, ValueError):
                    pass
                print("lab: stopping, stdin closed", file=sys.stderr, flush=True)
                stop.set()

            threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

        serve = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
        serve.start()
        sys.stdout.write(f"LAB_READY {ctx.base_url}\n")
        sys.stdout.flush()

        while not stop.wait(0.5):
            if not serve.is_alive():
                log.error("server thread died")
                return 1
        return 0
    except labext.LabExtensionError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            # shutdown() waits for serve_forever to return; it runs in its own thread.
            threading.Thread(target=server.shutdown, daemon=True).start()
            server.server_close()
        if own_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
