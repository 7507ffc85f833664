"""progress: EBS snapshots take a few polls to complete.

Stock moto 5.2.5 creates every snapshot "completed" with Progress "100%" (Snapshot.status
is set in __init__, Snapshot.progress is a constant property). Real snapshots start
"pending" and cleanroom must poll, report progress and wait; the lab makes that path run.

Model, with N = option snapshot_polls (launcher --snapshot-polls, POST /_lab/config; read
when the snapshot is created; 0 = stock behaviour, instantly completed):
* CreateSnapshot, CreateSnapshots and CopySnapshot make snapshots "pending", Progress "0%".
  (Snapshots moto creates for RegisterImage stay instant.)
* Each DescribeSnapshots call that covers a snapshot (by id, or all when no ids are given,
  before filters apply) is one poll. Polls 1..N show "pending" with Progress
  floor(100*(k-1)/N)% (0%, then rising); the next poll shows "completed", "100%".
* The snapshots of one CreateSnapshots call complete together, as AWS documents for
  multi-volume snapshot sets: one that is done waits at "99%" until every member is.
* CopySnapshot of a source that is still pending is refused with IncorrectState, as AWS
  copies only completed snapshots ("after ... the snapshot status is completed, you can
  copy it"; the exact AWS message is not documented, ours names the snapshot and state).
GET /_lab/snapshots/{id}/progress shows the internal counters (any account/region).
"""

from __future__ import annotations

import threading

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.responses import EC2Response
from moto.ec2.responses.elastic_block_store import ElasticBlockStore

from labext import admin

_lock = threading.RLock()
_ctx = None


class IncorrectState(EC2ClientError):
    def __init__(self, message: str):
        super().__init__("IncorrectState", message)


# -- Snapshot state --------------------------------------------------------------------

_original_init = Snapshot.__init__


def _init(self: Snapshot, *args, **kwargs) -> None:
    _original_init(self, *args, **kwargs)
    polls = _ctx.snapshot_polls if _ctx is not None else 0
    self._lab_polls = 0 if getattr(self, "from_ami", None) else polls  # pending views before completion
    self._lab_seen = 0                          # DescribeSnapshots polls so far
    self._lab_group = None                      # list of siblings (CreateSnapshots)
    self._lab_shown = "0%"
    if self._lab_polls > 0:
        self.status = "pending"


def _progress(self: Snapshot) -> str:
    # Replaces the constant "100%" property.
    if getattr(self, "status", "completed") == "completed":
        return "100%"
    return getattr(self, "_lab_shown", "0%")


def _advance(snap: Snapshot) -> None:
    """One DescribeSnapshots poll of ``snap``."""
    if snap.status != "pending" or not hasattr(snap, "_lab_polls"):
        return
    group = snap._lab_group or [snap]
    n = snap._lab_polls
    if snap._lab_seen >= n and all(s._lab_seen >= s._lab_polls for s in group):
        for s in group:
            s.status = "completed"
            s._lab_shown = "100%"
        return
    snap._lab_seen += 1
    if snap._lab_seen <= n:
        snap._lab_shown = f"{(100 * (snap._lab_seen - 1)) // n}%"
    else:
        snap._lab_shown = "99%"  # done, waiting for the rest of its set


# -- Patches ---------------------------------------------------------------------------

_original_create_snapshots = EBSBackend.create_snapshots


def _create_snapshots(self, *args, **kwargs):
    # Tie the snapshots of one CreateSnapshots call into a set that completes together.
    snapshots = _original_create_snapshots(self, *args, **kwargs)
    group = list(snapshots)
    for s in group:
        s._lab_group = group
    return snapshots


# The two response wrappers sit on the concrete EC2Response class and delegate, at call
# time, to whatever ElasticBlockStore (the mixin) has then: the sharing extension replaces
# the mixin's describe_snapshots/copy_snapshot, and these must compose with it.

def _describe_snapshots(self: EC2Response):
    # Count this call as a poll of every snapshot it covers (before filters, so a waiter
    # filtering on status=completed still makes progress), then answer as stock.
    snapshot_ids = self._get_param("SnapshotIds", [])
    try:
        covered = self.ec2_backend.describe_snapshots(snapshot_ids=snapshot_ids, filters=None)
    except Exception:
        covered = []  # the stock call below raises the proper error
    with _lock:
        for snap in covered:
            _advance(snap)
    return ElasticBlockStore.describe_snapshots(self)


def _find_snapshot(snapshot_id: str, region: str) -> Snapshot | None:
    for account_id, regions in list(ec2_backends.items()):
        backend = dict.get(regions, region)  # existing backends only, creates none
        if backend is None:
            continue
        snap = backend.snapshots.get(snapshot_id)
        if snap is not None:
            return snap
    return None


def _copy_snapshot(self: EC2Response):
    # AWS copies only completed snapshots.
    source_id = self._get_param("SourceSnapshotId")
    source_region = self._get_param("SourceRegion") or self.region
    with _lock:
        source = _find_snapshot(source_id, source_region)
        if source is not None and source.status != "completed":
            raise IncorrectState(f"Snapshot '{source_id}' is in state '{source.status}'.")
    return ElasticBlockStore.copy_snapshot(self)


@admin.route("GET", r"/_lab/snapshots/(?P<snapshot_id>snap-[0-9a-f]+)/progress")
def _get_progress(req):
    sid = req.params["snapshot_id"]
    with _lock:
        for account_id, regions in list(ec2_backends.items()):
            for region, backend in list(regions.items()):
                snap = backend.snapshots.get(sid)
                if snap is not None:
                    return 200, {"snapshot_id": sid, "account": account_id, "region": region,
                                 "state": snap.status, "progress": snap.progress,
                                 "polls": getattr(snap, "_lab_polls", 0),
                                 "seen": getattr(snap, "_lab_seen", 0),
                                 "group": [s.id for s in (getattr(snap, "_lab_group", None) or [])]}
    raise admin.AdminError(404, f"snapshot {sid} not found")


def install(ctx) -> None:
    global _ctx
    _ctx = ctx
    ctx.options.setdefault("snapshot_polls", 0)
    Snapshot.__init__ = _init
    Snapshot.progress = property(_progress)
    # CreateSnapshots answers with SnapshotInfo, whose State serialises from an attribute
    # named "state"; Snapshot only has "status", so stock omits State there altogether.
    Snapshot.state = property(lambda self: self.status)
    EBSBackend.create_snapshots = _create_snapshots
    EC2Response.describe_snapshots = _describe_snapshots
    EC2Response.copy_snapshot = _copy_snapshot
