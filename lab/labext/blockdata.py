"""Block data for EBS volumes and snapshots, and the EBS direct read APIs on them.

Stock moto 5.2.5 keeps no data in EC2 volumes or snapshots, and the EBS direct APIs only know
snapshots made with StartSnapshot (ListSnapshotBlocks on an EC2 snapshot is a 500). Here:

* Data lives in immutable *blobs* under ``<data_dir>/blockdata/blobs/``: sparse files exactly
  as long as the volume (GiB * 2**30), mode 0444. Volumes and snapshots hold a reference to a
  blob; snapshots, copies (any account, any region, re-encrypted) and volumes restored from
  them share the blob: nothing is copied, however big. A blob goes when its last reference
  does. A volume restored larger than its snapshot (or grown with ModifyVolume) gets a new
  blob: a reflink/sparse copy extended with zeros.
* Admin routes (account/region from ``x-moto-account-id``/``?account=`` and ``?region=``):
    PUT  /_lab/volumes/{vol}/data            body = raw image, streamed to disk (zero
                                             chunks become holes); or ?path=/abs/file to copy
                                             (reflink when the filesystem can) a local image.
                                             Shorter than the volume: zero-padded. Longer: 413.
    GET  /_lab/volumes/{vol}/data            the volume's bytes (volume size, zero-padded)
    GET  /_lab/snapshots/{snap}/data         the snapshot's bytes
    GET  /_lab/volumes/{vol}/data/info       {"size_bytes", "has_data", "blob"}
  The GETs take ?offset=&length= for a slice.
* EBS direct on EC2 snapshots (own, or shared with the caller): ListSnapshotBlocks (BlockSize
  524288; only blocks holding a non-zero byte; MaxResults 100..10000, NextToken,
  StartingBlockIndex; VolumeSize in GiB), GetSnapshotBlock (BlockData, Checksum = base64
  SHA-256 of the block, ChecksumAlgorithm SHA256, DataLength), ListChangedBlocks (blocks whose
  bytes differ between two snapshots, or all of the second's). Block and page tokens are
  opaque HMACs bound to the snapshot and index. Snapshots made through StartSnapshot keep
  moto's stock behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import shutil
import subprocess
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from moto.core.exceptions import ServiceException
from moto.core.utils import utcnow
from moto.ec2.models.elastic_block_store import EBSBackend as EC2EBSBackend

from labext import admin

GIB = 1 << 30
BLOCK_SIZE = 512 * 1024  # EBS direct APIs' block size, bytes
CHUNK = 1 << 20  # upload/copy chunk
MAX_INLINE_READ = 64 << 20  # GET data without streaming support: at most this per request
LIST_MIN, LIST_MAX = 100, 10000  # ListSnapshotBlocks/ListChangedBlocks MaxResults range (API)
TOKEN_LIFETIME = timedelta(days=7)  # ExpiryTime we report for block tokens

_ZERO_CHUNK = bytes(CHUNK)
_ZERO_BLOCK = bytes(BLOCK_SIZE)


class EbsError(ServiceException):
    def __init__(self, code: str, message: str, reason: str):
        super().__init__(code, message)
        self.reason = reason


def _not_found(snapshot_id: str) -> EbsError:
    return EbsError("ResourceNotFoundException",
                    f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")


def _invalid(message: str, reason: str) -> EbsError:
    return EbsError("ValidationException", message, reason)


# ---------------------------------------------------------------------------------------
# The blob store


class Store:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.lock = threading.RLock()
        self.refs: dict[str, str] = {}  # vol-/snap- id -> blob name
        self.counts: dict[str, int] = {}
        self.block_cache: dict[str, list[int]] = {}  # blob -> sorted non-zero block indexes
        self.secret = secrets.token_bytes(32)
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.refs.clear()
            self.counts.clear()
            self.block_cache.clear()
            shutil.rmtree(self.root, ignore_errors=True)
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
            # The SSM agent's scripts may run as an unprivileged user and must reach the blobs
            # through the device symlinks: traverse, never list or write.
            for d in (self.root, self.blobs):
                os.chmod(d, 0o711)

    def path(self, blob: str) -> Path:
        return self.blobs / blob

    def tmp_path(self) -> Path:
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def publish(self, tmp: Path) -> str:
        name = f"{uuid.uuid4().hex}.img"
        os.chmod(tmp, 0o444)
        os.replace(tmp, self.blobs / name)
        return name

    def zero_blob(self, size: int) -> str:
        tmp = self.tmp_path()
        with open(tmp, "wb") as f:
            f.truncate(size)
        return self.publish(tmp)

    def extended_copy(self, blob: str, size: int) -> str:
        """A new blob: ``blob`` followed by zeros up to ``size`` (reflink when possible)."""
        tmp = self.tmp_path()
        _copy_file(self.path(blob), tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "r+b") as f:
            f.truncate(size)
        return self.publish(tmp)

    def blob_of(self, resource_id: str) -> str | None:
        with self.lock:
            return self.refs.get(resource_id)

    def attach(self, resource_id: str, blob: str | None) -> None:
        with self.lock:
            self.detach(resource_id)
            if blob is None:
                return
            self.refs[resource_id] = blob
            self.counts[blob] = self.counts.get(blob, 0) + 1

    def detach(self, resource_id: str) -> None:
        with self.lock:
            blob = self.refs.pop(resource_id, None)
            if blob is None:
                return
            self.counts[blob] -= 1
            if self.counts[blob] <= 0:
                del self.counts[blob]
                self.block_cache.pop(blob, None)
                try:
                    os.unlink(self.path(blob))  # open readers keep their file
                except FileNotFoundError:
                    pass

    def nonzero_blocks(self, blob: str) -> list[int]:
        with self.lock:
            cached = self.block_cache.get(blob)
        if cached is not None:
            return cached
        blocks = _scan_nonzero_blocks(self.path(blob))
        with self.lock:
            self.block_cache[blob] = blocks
        return blocks

    def read_block(self, blob: str, index: int) -> bytes:
        with open(self.path(blob), "rb") as f:
            data = os.pread(f.fileno(), BLOCK_SIZE, index * BLOCK_SIZE)
        return data.ljust(BLOCK_SIZE, b"\0")


def _copy_file(src: Path, dst: Path) -> None:
    """Copy keeping holes, sharing extents (reflink) where the filesystem allows."""
    subprocess.run(["cp", "--reflink=auto", "--sparse=always", "--", str(src), str(dst)],
                   check=True, capture_output=True)


def _scan_nonzero_blocks(path: Path) -> list[int]:
    """Indexes of the BLOCK_SIZE blocks holding a non-zero byte; holes are skipped unread."""
    blocks: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos, last = 0, -1
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first = max(start // BLOCK_SIZE, last + 1)
            for index in range(first, math.ceil(end / BLOCK_SIZE)):
                data = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
                if data and data != _ZERO_BLOCK[: len(data)]:
                    blocks.append(index)
                last = index
            pos = max(end, (last + 1) * BLOCK_SIZE)
    finally:
        os.close(fd)
    return blocks


_store: Store | None = None
_ctx: Any = None
_installed = False


def store() -> Store:
    if _store is None:
        raise RuntimeError("blockdata extension is not installed")
    return _store


# ---------------------------------------------------------------------------------------
# Public helpers (used by ssm_agent)


def volume_image(volume: Any) -> Path:
    """A file holding the volume's bytes, exactly its size (a zero blob when it has none)."""
    st = store()
    size = volume.size * GIB
    with st.lock:
        blob = st.blob_of(volume.id)
        if blob is None or os.stat(st.path(blob)).st_size != size:
            blob = st.extended_copy(blob, size) if blob else st.zero_blob(size)
            st.attach(volume.id, blob)
        return st.path(blob)


def snapshot_blob(snapshot_id: str) -> str | None:
    return store().blob_of(snapshot_id)


# ---------------------------------------------------------------------------------------
# Backend hooks


def _install_backend_hooks() -> None:
    orig_create_snapshot = EC2EBSBackend.create_snapshot
    orig_copy_snapshot = EC2EBSBackend.copy_snapshot
    orig_create_volume = EC2EBSBackend.create_volume
    orig_delete_snapshot = EC2EBSBackend.delete_snapshot
    orig_delete_volume = EC2EBSBackend.delete_volume
    orig_modify_volume = EC2EBSBackend.modify_volume

    def create_snapshot(self, volume_id, description, *args, **kwargs):
        snap = orig_create_snapshot(self, volume_id, description, *args, **kwargs)
        store().attach(snap.id, store().blob_of(volume_id))
        return snap

    def copy_snapshot(self, source_snapshot_id, *args, **kwargs):
        snap = orig_copy_snapshot(self, source_snapshot_id, *args, **kwargs)
        if snap.status != "error":
            store().attach(snap.id, store().blob_of(source_snapshot_id))
        return snap

    def create_volume(self, *args, **kwargs):
        vol = orig_create_volume(self, *args, **kwargs)
        blob = store().blob_of(vol.snapshot_id) if vol.snapshot_id else None
        if blob and getattr(vol, "lab_state", None) != "error":
            st = store()
            if os.stat(st.path(blob)).st_size < vol.size * GIB:
                blob = st.extended_copy(blob, vol.size * GIB)
            st.attach(vol.id, blob)
        return vol

    def delete_snapshot(self, snapshot_id):
        result = orig_delete_snapshot(self, snapshot_id)
        store().detach(snapshot_id)
        return result

    def delete_volume(self, volume_id):
        result = orig_delete_volume(self, volume_id)
        store().detach(volume_id)
        return result

    def modify_volume(self, volume_id, *args, **kwargs):
        vol = orig_modify_volume(self, volume_id, *args, **kwargs)
        st = store()
        blob = st.blob_of(volume_id)
        if blob and os.stat(st.path(blob)).st_size < vol.size * GIB:
            st.attach(volume_id, st.extended_copy(blob, vol.size * GIB))
        return vol

    EC2EBSBackend.create_snapshot = create_snapshot
    EC2EBSBackend.copy_snapshot = copy_snapshot
    EC2EBSBackend.create_volume = create_volume
    EC2EBSBackend.delete_snapshot = delete_snapshot
    EC2EBSBackend.delete_volume = delete_volume
    EC2EBSBackend.modify_volume = modify_volume


# ---------------------------------------------------------------------------------------
# Admin routes


def _ec2(account: str, region: str):
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _volume(req: Any) -> Any:
    vol = _ec2(req.account, req.region).volumes.get(req.params["volume_id"])
    if vol is None:
        raise admin.AdminError(404, f"volume {req.params['volume_id']} not found in account "
                                    f"{req.account} region {req.region}")
    return vol


@admin.route("PUT", r"/_lab/volumes/(?P<volume_id>vol-[0-9a-f]+)/data")
def put_volume_data(req: Any):
    vol = _volume(req)
    st = store()
    size = vol.size * GIB
    tmp = st.tmp_path()
    try:
        if "path" in req.query:
            src = Path(req.query["path"])
            if not src.is_absolute() or not src.is_file():
                raise admin.AdminError(400, f"path must be an absolute path to a regular file: "
                                            f"{src}")
            image_bytes = src.stat().st_size
            if image_bytes > size:
                raise admin.AdminError(413, f"image is {image_bytes} bytes, volume {vol.id} is "
                                            f"{vol.size} GiB ({size} bytes); grow the volume "
                                            f"first (ModifyVolume)")
            _copy_file(src, tmp)
            os.chmod(tmp, 0o644)
        else:
            declared = req.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > size:
                raise admin.AdminError(413, f"image is {declared} bytes, volume {vol.id} is "
                                            f"{vol.size} GiB ({size} bytes)")
            image_bytes = 0
            with open(tmp, "wb") as f:
                while True:
                    chunk = req.stream.read(CHUNK)
                    if not chunk:
                        break
                    image_bytes += len(chunk)
                    if image_bytes > size:
                        raise admin.AdminError(413, f"image is longer than volume {vol.id} "
                                                    f"({size} bytes)")
                    if chunk == _ZERO_CHUNK[: len(chunk)]:
                        f.seek(len(chunk), os.SEEK_CUR)  # leave a hole
                    else:
                        f.write(chunk)
        with open(tmp, "r+b") as f:
            f.truncate(size)
        blob = st.publish(tmp)
    finally:
        if tmp.exists():
            tmp.unlink()
    st.attach(vol.id, blob)
    return 200, {"volume_id": vol.id, "size_bytes": size, "image_bytes": image_bytes,
                 "padded_bytes": size - image_bytes}


def _serve(req: Any, path: Path | None, size: int):
    offset = int(req.query.get("offset", 0) or 0)
    length = req.query.get("length")
    length = size - offset if length in (None, "") else int(length)
    if offset < 0 or length < 0 or offset + length > size:
        raise admin.AdminError(400, f"offset/length outside 0..{size}")
    headers = {"Content-Length": str(length), "X-Lab-Size-Bytes": str(size)}
    if getattr(admin, "STREAMING_BODIES", False):
        return 200, _iter_file(path, offset, length), headers
    if length > MAX_INLINE_READ:
        raise admin.AdminError(413, f"{length} bytes asked; without streaming support in the "
                                    f"admin framework read at most {MAX_INLINE_READ} bytes per "
                                    f"request with ?offset=&length=")
    return 200, b"".join(_iter_file(path, offset, length)), headers


def _iter_file(path: Path | None, offset: int, length: int) -> Iterator[bytes]:
    if path is None:  # no data: zeros
        while length > 0:
            n = min(CHUNK, length)
            yield _ZERO_CHUNK[:n]
            length -= n
        return
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            data = f.read(min(CHUNK, length))
            if not data:
                break
            length -= len(data)
            yield data
        while length > 0:  # never shorter than promised
            n = min(CHUNK, length)
            yield _ZERO_CHUNK[:n]
            length -= n


@admin.route("GET", r"/_lab/volumes/(?P<volume_id>vol-[0-9a-f]+)/data")
def get_volume_data(req: Any):
    vol = _volume(req)
    blob = store().blob_of(vol.id)
    return _serve(req, store().path(blob) if blob else None, vol.size * GIB)


@admin.route("GET", r"/_lab/volumes/(?P<volume_id>vol-[0-9a-f]+)/data/info")
def get_volume_data_info(req: Any):
    vol = _volume(req)
    blob = store().blob_of(vol.id)
    return 200, {"volume_id": vol.id, "size_bytes": vol.size * GIB, "has_data": blob is not None,
                 "blob": blob}


@admin.route("GET", r"/_lab/snapshots/(?P<snapshot_id>snap-[0-9a-f]+)/data")
def get_snapshot_data(req: Any):
    snap = _find_snapshot(req.account, req.region, req.params["snapshot_id"])
    if snap is None:
        raise admin.AdminError(404, f"snapshot {req.params['snapshot_id']} not visible to "
                                    f"account {req.account} in {req.region}")
    blob = store().blob_of(snap.id)
    return _serve(req, store().path(blob) if blob else None, snap.volume_size * GIB)


# ---------------------------------------------------------------------------------------
# EBS direct APIs


def _find_snapshot(account: str, region: str, snapshot_id: str) -> Any | None:
    from labext import sharing  # visibility rules live there (pure functions)

    return sharing.find_visible(account, region, snapshot_id)


def _token(kind: str, snapshot_id: str, index: int) -> str:
    mac = hmac.new(store().secret, f"{kind}|{snapshot_id}|{index}".encode(), hashlib.sha256)
    return base64.b64encode(b"\x01" + index.to_bytes(4, "big") + mac.digest()[:27]).decode()


def _token_index(kind: str, snapshot_id: str, token: str) -> int | None:
    try:
        raw = base64.b64decode(token, validate=True)
        index = int.from_bytes(raw[1:5], "big")
    except (ValueError, TypeError):
        return None
    return index if hmac.compare_digest(_token(kind, snapshot_id, index), token) else None


def _ec2_snapshot_for(response: Any, snapshot_id: str) -> Any:
    snap = _find_snapshot(response.current_account, response.region, snapshot_id)
    if snap is None:
        raise _not_found(snapshot_id)
    if snap.status != "completed":
        raise _invalid(f"The snapshot '{snapshot_id}' is not in the completed state "
                       f"({snap.status}).", "INVALID_SNAPSHOT_ID")
    return snap


def _page_args(response: Any) -> tuple[int, int, str | None]:
    max_results = response._get_param("MaxResults")
    max_results = LIST_MAX if max_results in (None, "") else int(max_results)
    if not LIST_MIN <= max_results <= LIST_MAX:
        raise _invalid(f"MaxResults must be between {LIST_MIN} and {LIST_MAX}.",
                       "INVALID_PARAMETER_VALUE")
    start = response._get_param("StartingBlockIndex")
    start = 0 if start in (None, "") else int(start)
    return max_results, start, response._get_param("NextToken")


def _blocks_of(snap: Any) -> list[int]:
    blob = store().blob_of(snap.id)
    return store().nonzero_blocks(blob) if blob else []


def _paginate(kind: str, key: str, indexes: list[int], max_results: int, start: int,
              next_token: str | None) -> tuple[list[int], str | None]:
    if next_token:
        resume = _token_index("page:" + kind, key, next_token)
        if resume is None:
            raise _invalid("The pagination token is invalid.", "INVALID_PAGE_TOKEN")
        start = max(start, resume)
    page = [i for i in indexes if i >= start][: max_results + 1]
    token = None
    if len(page) > max_results:
        token = _token("page:" + kind, key, page[max_results])
        page = page[:max_results]
    return page, token


def _install_ebs_responses() -> None:
    from moto.core.responses import ActionResult
    from moto.ebs.responses import EBSResponse

    stock_list = EBSResponse.list_snapshot_blocks
    stock_get = EBSResponse.get_snapshot_block
    stock_changed = EBSResponse.list_changed_blocks

    def is_stock(self: Any, snapshot_id: str | None) -> bool:
        return bool(snapshot_id) and snapshot_id in self.ebs_backend.snapshots

    def list_snapshot_blocks(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        if is_stock(self, snapshot_id):
            return stock_list(self)
        snap = _ec2_snapshot_for(self, snapshot_id)
        max_results, start, next_token = _page_args(self)
        page, token = _paginate("list", snap.id, _blocks_of(snap), max_results, start,
                                next_token)
        result = {
            "Blocks": [{"BlockIndex": i, "BlockToken": _token("block", snap.id, i)}
                       for i in page],
            "ExpiryTime": utcnow() + TOKEN_LIFETIME,
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    def get_snapshot_block(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        if is_stock(self, snapshot_id):
            return stock_get(self)
        snap = _ec2_snapshot_for(self, snapshot_id)
        index = int(self._get_param("BlockIndex"))
        token = self._get_param("BlockToken") or ""
        if index < 0 or index * BLOCK_SIZE >= snap.volume_size * GIB:
            raise _invalid(f"Block index {index} is outside the snapshot.", "INVALID_BLOCK")
        if _token_index("block", snap.id, token) != index:
            raise _invalid("The block token is invalid.", "INVALID_BLOCK_TOKEN")
        blob = store().blob_of(snap.id)
        data = store().read_block(blob, index) if blob else _ZERO_BLOCK
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        return ActionResult({"DataLength": len(data), "BlockData": data, "Checksum": checksum,
                             "ChecksumAlgorithm": "SHA256"})

    def list_changed_blocks(self: Any) -> ActionResult:
        second_id = self._get_param("SecondSnapshotId")
        first_id = self._get_param("FirstSnapshotId")
        if is_stock(self, second_id) or is_stock(self, first_id):
            return stock_changed(self)
        second = _ec2_snapshot_for(self, second_id)
        first = _ec2_snapshot_for(self, first_id) if first_id else None
        if first is not None and first.volume_size != second.volume_size:
            raise _invalid("The snapshots have different volume sizes.", "UNRELATED_SNAPSHOTS")
        max_results, start, next_token = _page_args(self)
        second_blocks = set(_blocks_of(second))
        if first is None:
            changed = sorted(second_blocks)
            first_blocks: set[int] = set()
        else:
            first_blocks = set(_blocks_of(first))
            b1, b2 = store().blob_of(first.id), store().blob_of(second.id)
            if b1 == b2:
                changed = []
            else:
                changed = sorted(
                    i for i in first_blocks | second_blocks
                    if i not in first_blocks or i not in second_blocks
                    or store().read_block(b1, i) != store().read_block(b2, i))
        key = f"{first.id if first else ''}/{second.id}"
        page, token = _paginate("changed", key, changed, max_results, start, next_token)
        blocks = []
        for i in page:
            entry: dict[str, Any] = {"BlockIndex": i}
            if first is not None and i in first_blocks:
                entry["FirstBlockToken"] = _token("block", first.id, i)
            if i in second_blocks:
                entry["SecondBlockToken"] = _token("block", second.id, i)
            blocks.append(entry)
        result = {"ChangedBlocks": blocks, "ExpiryTime": utcnow() + TOKEN_LIFETIME,
                  "VolumeSize": second.volume_size, "BlockSize": BLOCK_SIZE}
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    EBSResponse.list_snapshot_blocks = list_snapshot_blocks
    EBSResponse.get_snapshot_block = get_snapshot_block
    EBSResponse.list_changed_blocks = list_changed_blocks


def install(ctx: Any) -> None:
    global _store, _ctx, _installed
    _ctx = ctx
    _store = Store(Path(ctx.data_dir) / "blockdata")
    try:  # let an unprivileged sandbox user traverse (never list) the lab's data dir
        os.chmod(ctx.data_dir, os.stat(ctx.data_dir).st_mode | 0o011)
    except OSError:
        pass
    if not _installed:
        _installed = True
        _install_backend_hooks()
        _install_ebs_responses()


def reset() -> None:
    if _store is not None:
        _store.clear()
