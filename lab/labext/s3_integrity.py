"""s3_integrity: S3 checksums, Object Lock COMPLIANCE and conditional writes, as S3 does them.

What stock moto 5.2.5 gets wrong, and what this extension does instead (each patch below
says which moto function it replaces or wraps, and why):

Checksums (WSGI middleware, before moto parses the request)
* Stock stores whatever x-amz-checksum-* value a client sends, and never checks Content-MD5:
  a corrupted upload is accepted. Here every S3 PUT/POST body is checked against
  Content-MD5 and the x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256} header, or the
  trailer of an aws-chunked body (x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER,
  Content-Encoding: aws-chunked, x-amz-trailer: x-amz-checksum-crc32 - what current boto3
  over https and the Rust SDK send by default). S3's answers, which we copy:
    400 BadDigest     "The CRC32 you specified did not match the calculated checksum."
                      (CRC32/CRC32C/CRC64NVME/SHA1/SHA256)
    400 BadDigest     "The Content-MD5 you specified did not match what we received."
    400 InvalidDigest "The Content-MD5 you specified is not valid."
    400 InvalidRequest "Value for x-amz-checksum-sha256 header is invalid." (bad base64/length)
    400 InvalidRequest "Expecting a single x-amz-checksum- header. ..."  (two algorithms)
    400 IncompleteBody  (aws-chunked body shorter/longer than x-amz-decoded-content-length)
  The aws-chunked body is decoded here (moto's own decoder is quadratic and ignores the
  trailer) and handed to moto as a plain body with the trailer as a header.
* A checksum given only as a value header (no x-amz-sdk-checksum-algorithm) is stored too
  (stock drops it), so HeadObject/GetObject with ChecksumMode=ENABLED return it.
* PutObject/UploadPart with Object Lock headers, or into a bucket with default retention,
  and neither Content-MD5 nor a checksum: stock refuses with a code S3 does not have
  (MissingUploadObjectWithObjectLockHeaders); S3 answers 400 InvalidRequest "Content-MD5 OR
  x-amz-checksum- HTTP header is required for Put Object requests with Object Lock
  parameters" ("Put Part" for parts), and so do we.

Multipart checksums (S3Response patches)
* UploadPart into an upload created with ChecksumAlgorithm X without an X checksum:
  400 InvalidRequest "Checksum Type mismatch occurred, expected checksum Type: sha256,
  actual checksum Type: null". The part's checksum is kept for ListParts/attributes.
* CompleteMultipartUpload must list each part's checksum (400 InvalidRequest "The upload was
  created using a sha256 checksum. The complete request must include the checksum for each
  part. ...") and it must match (400 InvalidPart). Its answer carries the object checksum.
* COMPOSITE checksums: base64(H(concat(part digests)))-N with x-amz-checksum-type COMPOSITE
  on CompleteMultipartUpload, HeadObject and GetObject (ChecksumMode=ENABLED); in
  GetObjectAttributes the same value without "-N" (S3 does this) plus ObjectParts with
  TotalPartsCount and each part's size and checksum. Stock omits the suffix on HEAD, the
  checksum on Complete, and ObjectParts altogether. Single-part objects report FULL_OBJECT.

Object Lock (S3Response patches)
* PutObjectRetention on a version under active COMPLIANCE retention that shortens
  retain-until, switches to GOVERNANCE or removes retention: 403 AccessDenied (stock
  accepts all three). Under active GOVERNANCE retention the same needs
  x-amz-bypass-governance-retention: true. A retain-until date in the past: 400
  InvalidArgument. Stock stores it without checks.
* GetObjectRetention (stock: not implemented, falls through to GetObject) answers the
  retention, or 404 NoSuchObjectLockConfiguration.
* Deleting a locked version: stock already refuses, but with status 400; S3 says 403.
* PutBucketVersioning Suspended on an Object Lock bucket: 409 InvalidBucketState (stock
  suspends it, which would let new writes replace the "null" version).

Listing versions (S3Backend.list_object_versions wrapped)
* Stock deep-copies every version of every key in the bucket for each ListObjectVersions,
  prefix or not, and a FakeKey's deep copy reads and rewrites its whole body: with two
  1 GiB disk images in the bucket, listing four custody records took 27 s (ListObjectsV2:
  0.03 s) and left gigabytes of temp files. During a listing the copies here share the
  body (the listing reads only metadata and sets is_latest on its copy); every other deep
  copy is stock.

Conditional writes
* Stock 5.2.5 already honours If-None-Match: * (and If-Match) on PutObject and
  CompleteMultipartUpload with 412 PreconditionFailed, but check and write are not atomic
  under the threaded server; requests carrying If-None-Match/If-Match are serialised per
  key here, so two racing writers of a custody-log entry can never both win.

Not modelled: CRC64NVME default checksums for uploads that send none (S3 adds one; we store
nothing), FULL_OBJECT multipart checksums beyond what moto computes, checksum validation of
CopyObject, SigV4 chunk signatures (moto does not verify signatures at all).
"""

from __future__ import annotations

import base64
import copy
import binascii
import hashlib
import io
import re
import threading
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

import crc32c as _crc32c
import xmltodict
from dateutil import parser as dateparser
from werkzeug.wsgi import get_input_stream

from moto.s3.responses import S3Response
from moto.s3.utils import compute_checksum

from labext import admin

# ---------------------------------------------------------------------------------------
# Checksums


def _crc64nvme_table() -> list[int]:
    poly = 0x9A6C9329AC4BC9B5  # reflected CRC-64/NVME polynomial
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC64_TABLE = _crc64nvme_table()


def crc64nvme(data: bytes) -> bytes:
    """Pure Python CRC-64/NVME (~7 MB/s; fine for a lab). Check: b"123456789" ->
    0xae8b14860a799888."""
    crc = 0xFFFFFFFFFFFFFFFF
    table = _CRC64_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return (crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


ALGORITHMS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "crc32": (4, lambda d: zlib.crc32(d).to_bytes(4, "big")),
    "crc32c": (4, lambda d: _crc32c.crc32c(d).to_bytes(4, "big")),
    "crc64nvme": (8, crc64nvme),
    "sha1": (20, lambda d: hashlib.sha1(d).digest()),
    "sha256": (32, lambda d: hashlib.sha256(d).digest()),
}


def digest(algorithm: str, data: bytes) -> bytes:
    return ALGORITHMS[algorithm.lower()][1](data)


def b64digest(algorithm: str, data: bytes) -> str:
    return base64.b64encode(digest(algorithm, data)).decode()


def composite(algorithm: str, parts: Iterable[bytes]) -> str:
    """S3's COMPOSITE multipart checksum (without the -N suffix)."""
    return b64digest(algorithm, b"".join(digest(algorithm, p) for p in parts))


# ---------------------------------------------------------------------------------------
# Error documents


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: str):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def xml(self) -> bytes:
        extra = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in self.extra.items())
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
                f"<Message>{escape(self.message)}</Message>{extra}"
                f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>").encode()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        return self.status, {"Content-Type": "application/xml"}, self.xml()

    def wsgi(self, start_response: Callable) -> list[bytes]:
        body = self.xml()
        start_response(f"{self.status} {self.code}", [("Content-Type", "application/xml"),
                                                       ("Content-Length", str(len(body)))])
        return [body]


# ---------------------------------------------------------------------------------------
# WSGI middleware: body decoding and validation


_CREDENTIAL_S3 = re.compile(r"Credential=[^,\s]*/s3/aws4_request")
_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


def _is_s3(environ: dict) -> bool:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if _CREDENTIAL_S3.search(auth):
        return True
    qs = environ.get("QUERY_STRING", "")
    return "X-Amz-Credential=" in qs and "%2Fs3%2Faws4_request" in qs


def decode_aws_chunked(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Decode an aws-chunked body: hex-size[;chunk-signature=..]\\r\\n data \\r\\n ... 0\\r\\n
    then trailer lines name:value\\r\\n and a final \\r\\n."""
    pos, out = 0, []
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            raise S3Error(400, "IncompleteBody", "The request body terminated unexpectedly")
        try:
            size = int(raw[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise S3Error(400, "InvalidRequest", "Invalid aws-chunked chunk header") from None
        pos = eol + 2
        if size == 0:
            break
        chunk = raw[pos:pos + size]
        if len(chunk) != size or raw[pos + size:pos + size + 2] != b"\r\n":
            raise S3Error(400, "IncompleteBody", "The request body terminated unexpectedly")
        out.append(chunk)
        pos += size + 2
    trailers: dict[str, str] = {}
    while pos < len(raw):
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            eol = len(raw)
        line = raw[pos:eol]
        pos = eol + 2
        if not line.strip():
            break
        name, _, value = line.partition(b":")
        trailers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return b"".join(out), trailers


def _env_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def normalise_request(environ: dict) -> None:
    """Decode, validate and normalise one S3 PUT/POST in place. Raises S3Error."""
    raw = get_input_stream(environ).read()
    body = raw
    content_sha = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
    encodings = [e.strip() for e in environ.get("HTTP_CONTENT_ENCODING", "").split(",") if e.strip()]
    if content_sha.startswith("STREAMING-") or "aws-chunked" in encodings:
        body, trailers = decode_aws_chunked(raw)
        declared = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
        if declared is not None and declared.strip().isdigit() and int(declared) != len(body):
            raise S3Error(400, "IncompleteBody",
                          "You did not provide the number of bytes specified by the "
                          "x-amz-decoded-content-length HTTP header")
        announced = [t.strip().lower() for t in environ.get("HTTP_X_AMZ_TRAILER", "").split(",") if t.strip()]
        for name in announced:
            if name not in trailers:
                raise S3Error(400, "MalformedTrailerError",
                              "The request contained trailing data that was not well-formed "
                              "or did not conform to our published schema.")
        for name, value in trailers.items():
            if name.startswith("x-amz-checksum-"):
                environ[_env_key(name)] = value
        rest = [e for e in encodings if e != "aws-chunked"]
        if rest:
            environ["HTTP_CONTENT_ENCODING"] = ",".join(rest)
        else:
            environ.pop("HTTP_CONTENT_ENCODING", None)
        environ["HTTP_X_AMZ_CONTENT_SHA256"] = "UNSIGNED-PAYLOAD"
        environ.pop("HTTP_X_AMZ_DECODED_CONTENT_LENGTH", None)
        environ.pop("HTTP_X_AMZ_TRAILER", None)
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))

    md5 = environ.get("HTTP_CONTENT_MD5")
    if md5 is not None:
        try:
            want = base64.b64decode(md5.strip(), validate=True)
        except (binascii.Error, ValueError):
            want = b""
        if len(want) != 16:
            raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
        got = hashlib.md5(body).digest()
        if got != want:
            raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.",
                          ExpectedDigest=want.hex(), CalculatedDigest=base64.b64encode(got).decode())

    given = {alg: environ[_env_key(f"x-amz-checksum-{alg}")] for alg in ALGORITHMS
             if _env_key(f"x-amz-checksum-{alg}") in environ}
    if len(given) > 1:
        raise S3Error(400, "InvalidRequest",
                      "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    for alg, value in given.items():
        size = ALGORITHMS[alg][0]
        try:
            want = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            want = b""
        if len(want) != size:
            raise S3Error(400, "InvalidRequest", f"Value for x-amz-checksum-{alg} header is invalid.")
        if digest(alg, body) != want:
            raise S3Error(400, "BadDigest",
                          f"The {alg.upper()} you specified did not match the calculated checksum.")
        # moto stores a checksum only when told the algorithm; S3 stores any it was given.
        environ.setdefault("HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM", alg.upper())


def _lock_for(path: str) -> threading.Lock:
    with _key_locks_guard:
        lock = _key_locks.get(path)
        if lock is None:
            lock = _key_locks[path] = threading.Lock()
        return lock


def middleware(app: Callable) -> Callable:
    def s3_integrity(environ: dict, start_response: Callable):
        if environ["REQUEST_METHOD"] not in ("PUT", "POST") or not _is_s3(environ):
            return app(environ, start_response)
        try:
            normalise_request(environ)
        except S3Error as e:
            return e.wsgi(start_response)
        if "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ:
            # Check-then-write inside moto is not atomic; serialise conditional writers.
            with _lock_for(environ.get("PATH_INFO", "")):
                result = app(environ, start_response)
                try:
                    return [b"".join(result)]
                finally:
                    close = getattr(result, "close", None)
                    if close:
                        close()
        return app(environ, start_response)

    return s3_integrity


# ---------------------------------------------------------------------------------------
# S3Response patches: multipart checksums


def _multipart(self: S3Response, upload_id: str):
    bucket = self.backend.get_bucket(self.bucket_name)
    return bucket.multiparts.get(upload_id)


_orig_upload_part = S3Response.upload_part


def _upload_part(self: S3Response):
    # Wraps moto's upload_part: enforce the upload's checksum algorithm; keep the part checksum.
    upload_id = self._get_param("uploadId")
    part_number = self._get_int_param("partNumber")
    mp = _multipart(self, upload_id)
    algo = (mp.metadata.get("x-amz-checksum-algorithm") or "").lower() if mp is not None else ""
    lower = {k.lower() for k in self.headers.keys()}
    if self.backend.get_bucket(self.bucket_name).has_default_lock and "content-md5" not in lower \
            and not any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm" for h in lower):
        # Stock checks this for PutObject only; S3 wants an integrity header on parts too.
        return S3Error(400, "InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is required "
                                              "for Put Part requests with Object Lock parameters").response()
    if algo:
        sent = [a for a in ALGORITHMS if f"x-amz-checksum-{a}" in lower]
        if algo not in sent:
            return S3Error(400, "InvalidRequest",
                           f"Checksum Type mismatch occurred, expected checksum Type: {algo}, "
                           f"actual checksum Type: {sent[0] if sent else 'null'}").response()
    result = _orig_upload_part(self)
    if mp is not None and part_number in mp.parts:
        part = mp.parts[part_number]
        part_algo = algo or next((a for a in ALGORITHMS if self.headers.get(f"x-amz-checksum-{a}")), "")
        if part_algo:
            part.checksum_algorithm = part_algo.upper()
            part.checksum_value = self.headers.get(f"x-amz-checksum-{part_algo}") or b64digest(part_algo, part.value)
    return result


def _completed_parts(body: bytes) -> list[dict]:
    doc = xmltodict.parse(body or b"<CompleteMultipartUpload/>")
    root = doc.get("CompleteMultipartUpload") or {}
    parts = root.get("Part") or []
    return parts if isinstance(parts, list) else [parts]


def _qualified(key) -> str | None:
    if not getattr(key, "checksum_value", None):
        return None
    if key.checksum_type == "COMPOSITE":
        return f"{key.checksum_value}-{key.checksum_parts}"
    return key.checksum_value


_orig_key_response_post = S3Response._key_response_post


def _key_response_post(self: S3Response, request, body, bucket_name, query, key_name):
    # Wraps moto's POST on a key; for CompleteMultipartUpload validate part checksums first
    # and add the object's checksum to the answer.
    upload_id = (query.get("uploadId") or [None])[0]
    mp = _multipart(self, upload_id) if upload_id else None
    if mp is not None:
        algo = (mp.metadata.get("x-amz-checksum-algorithm") or "").lower()
        if algo:
            member = f"Checksum{algo.upper()}"
            for p in _completed_parts(body):
                number = int(p.get("PartNumber", 0))
                value = p.get(member)
                if not value:
                    return S3Error(400, "InvalidRequest",
                                   f"The upload was created using a {algo} checksum. The complete "
                                   "request must include the checksum for each part. It was missing "
                                   f"for part {number} in the request.").response()
                part = mp.parts.get(number)
                if part is None or value != b64digest(algo, part.value):
                    return S3Error(400, "InvalidPart",
                                   "One or more of the specified parts could not be found.  The part "
                                   "may not have been uploaded, or the specified entity tag may not "
                                   "match the part's entity tag.").response()
    result = _orig_key_response_post(self, request, body, bucket_name, query, key_name)
    if mp is not None and isinstance(result, tuple) and result[0] == 200:
        key = self.backend.get_object(bucket_name, key_name)
        qualified = _qualified(key) if key is not None else None
        if qualified and key.checksum_algorithm:
            status, headers, content = result
            text = content.decode() if isinstance(content, bytes) else content
            extra = (f"<Checksum{key.checksum_algorithm.upper()}>{qualified}"
                     f"</Checksum{key.checksum_algorithm.upper()}>"
                     f"<ChecksumType>{key.checksum_type}</ChecksumType>")
            text = text.replace("</CompleteMultipartUploadResult>", extra + "</CompleteMultipartUploadResult>")
            result = (status, headers, text)
    return result


def _fix_checksum_headers(self: S3Response, headers: dict, key) -> None:
    if self.headers.get("x-amz-checksum-mode") != "ENABLED" or not getattr(key, "checksum_value", None):
        return
    if not key.checksum_algorithm:
        return
    for h in [h for h in headers if h.lower().startswith("x-amz-checksum-")]:
        del headers[h]
    headers[f"x-amz-checksum-{key.checksum_algorithm.lower()}"] = _qualified(key)
    headers["x-amz-checksum-type"] = key.checksum_type or "FULL_OBJECT"


_orig_head_object = S3Response.head_object


def _head_object(self: S3Response, bucket_name, query, key_name, headers):
    # Wraps moto's head_object: COMPOSITE checksums carry "-N" and x-amz-checksum-type.
    status, response_headers, body = _orig_head_object(self, bucket_name, query, key_name, headers)
    if status == 200 and not query.get("partNumber"):
        version_id = query.get("versionId", [None])[0]
        key = self.backend.head_object(bucket_name, key_name, version_id=version_id)
        if key is not None:
            _fix_checksum_headers(self, response_headers, key)
    return status, response_headers, body


_orig_get_object = S3Response.get_object


def _get_object(self: S3Response):
    # Wraps moto's get_object: add x-amz-checksum-type for single-part objects too.
    status, response_headers, body = _orig_get_object(self)
    if status == 200 and "range" not in {k.lower() for k in self.headers.keys()}:
        version_id = self.querystring.get("versionId", [None])[0]
        key = self.backend.get_object(self.bucket_name, self.parse_key_name(), version_id=version_id)
        if key is not None:
            _fix_checksum_headers(self, response_headers, key)
    return status, response_headers, body


def _get_object_attributes(self: S3Response):
    # Replaces moto's get_object_attributes: adds ObjectParts (stock never returns it) and
    # keeps S3's form: the composite checksum without "-N", plus ChecksumType.
    from moto.core.responses import ActionResult

    key, not_modified = self._get_key(validate_storage_class=False)
    if not_modified:
        return 304, {}, "Not Modified"
    response_headers = self._get_cors_headers_other()
    if key.version_id != "null":
        response_headers["x-amz-version-id"] = key.version_id
    wanted = {a.strip() for a in self.headers.get("x-amz-object-attributes", "").split(",")}
    result: dict[str, Any] = {"LastModified": key.last_modified}
    if "ETag" in wanted:
        result["ETag"] = key.etag.strip('"')
    if "ObjectSize" in wanted:
        result["ObjectSize"] = key.size
    if "StorageClass" in wanted:
        result["StorageClass"] = key.storage_class
    if "Checksum" in wanted and key.checksum_value and key.checksum_algorithm:
        result["Checksum"] = {f"Checksum{key.checksum_algorithm.upper()}": key.checksum_value,
                              "ChecksumType": key.checksum_type or "FULL_OBJECT"}
    mp = getattr(key, "multipart", None)
    if "ObjectParts" in wanted and mp is not None:
        max_parts = int(self.headers.get("x-amz-max-parts") or 1000)
        marker = int(self.headers.get("x-amz-part-number-marker") or 0)
        numbers = [n for n in sorted(mp.parts) if n > marker]
        page = numbers[:max_parts]
        parts = []
        for n in page:
            part = mp.parts[n]
            item: dict[str, Any] = {"PartNumber": n, "Size": part.size}
            if getattr(part, "checksum_value", None) and key.checksum_type == "COMPOSITE":
                item[f"Checksum{part.checksum_algorithm.upper()}"] = part.checksum_value
            parts.append(item)
        result["ObjectParts"] = {
            "TotalPartsCount": len(mp.parts), "PartNumberMarker": marker,
            "NextPartNumberMarker": page[-1] if page else marker, "MaxParts": max_parts,
            "IsTruncated": len(numbers) > len(page), "Parts": parts,
        }
    self.data["Action"] = "GetObjectAttributes"
    status, headers, body = self.serialized(ActionResult(result))
    headers.update(response_headers)
    return status, headers, body


# ---------------------------------------------------------------------------------------
# S3Response patches: Object Lock


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    d = dateparser.isoparse(value)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _bypass(self: S3Response) -> bool:
    return self.headers.get("x-amz-bypass-governance-retention", "").lower() == "true"


_ACCESS_DENIED = S3Error(403, "AccessDenied", "Access Denied")


def _put_object_retention(self: S3Response):
    # Replaces moto's put_object_retention, which stores any retention unchecked.
    bucket = self.backend.get_bucket(self.bucket_name)
    if not bucket.object_lock_enabled:
        return S3Error(400, "InvalidRequest", "Bucket is missing Object Lock Configuration").response()
    version_id = self._get_param("versionId")
    key = self.backend.get_object(self.bucket_name, self.parse_key_name(), version_id=version_id)
    if key is None:
        return S3Error(404, "NoSuchKey" if not version_id else "NoSuchVersion",
                       "The specified key does not exist." if not version_id
                       else "The specified version does not exist.").response()
    doc = xmltodict.parse(self.body or b"<Retention/>").get("Retention") or {}
    new_mode = doc.get("Mode") if isinstance(doc, dict) else None
    new_until_raw = doc.get("RetainUntilDate") if isinstance(doc, dict) else None
    if bool(new_mode) != bool(new_until_raw):
        return S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                                            "validate against our published schema").response()
    if new_mode and new_mode not in ("GOVERNANCE", "COMPLIANCE"):
        return S3Error(400, "MalformedXML", "Unknown retention mode").response()
    try:
        new_until = _parse_date(new_until_raw)
    except (ValueError, OverflowError):
        return S3Error(400, "InvalidArgument", "The retain until date is not valid").response()
    if new_until is not None and new_until <= _now():
        return S3Error(400, "InvalidArgument", "The retain until date must be in the future!").response()

    old_until = _parse_date(key.lock_until) if key.lock_mode else None
    active = old_until is not None and old_until > _now()
    if active:
        weakens = (new_mode is None or new_until < old_until
                   or (key.lock_mode == "COMPLIANCE" and new_mode != "COMPLIANCE"))
        if weakens and (key.lock_mode == "COMPLIANCE" or not _bypass(self)):
            return _ACCESS_DENIED.response()
    key.lock_mode = new_mode
    key.lock_until = new_until_raw
    headers = {}
    if key.version_id and key.version_id != "null":
        headers["x-amz-version-id"] = key.version_id
    return 200, headers, ""


def _get_object_retention(self: S3Response):
    # moto 5.2.5 has no GetObjectRetention.
    bucket = self.backend.get_bucket(self.bucket_name)
    if not bucket.object_lock_enabled:
        return S3Error(400, "InvalidRequest", "Bucket is missing Object Lock Configuration").response()
    version_id = self.querystring.get("versionId", [None])[0]
    key = self.backend.get_object(self.bucket_name, self.parse_key_name(), version_id=version_id)
    if key is None:
        return S3Error(404, "NoSuchKey", "The specified key does not exist.").response()
    if not key.lock_mode:
        return S3Error(404, "NoSuchObjectLockConfiguration",
                       "The specified object does not have a ObjectLock configuration").response()
    until = _parse_date(key.lock_until)
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Mode>{key.lock_mode}</Mode>"
            f"<RetainUntilDate>{until.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z</RetainUntilDate>"
            "</Retention>")
    return 200, {"Content-Type": "application/xml"}, body


_orig_key_response_get = S3Response._key_response_get


def _key_response_get(self: S3Response, query, key_name):
    if "retention" in query and "uploadId" not in query:
        return _get_object_retention(self)
    return _orig_key_response_get(self, query, key_name)


_orig_key_response_delete = S3Response._key_response_delete


def _key_response_delete(self: S3Response, *args, **kwargs):
    # Stock refuses to delete a locked version with AccessDenied but status 400; S3 says 403.
    from moto.s3.exceptions import AccessDeniedByLock

    try:
        return _orig_key_response_delete(self, *args, **kwargs)
    except AccessDeniedByLock:
        return _ACCESS_DENIED.response()


_orig_key_response_put = S3Response._key_response_put


def _key_response_put(self: S3Response, query, key_name):
    # Stock raises MissingUploadObjectWithObjectLockHeaders, an error code S3 does not use.
    from moto.s3.exceptions import MissingUploadObjectWithObjectLockHeaders

    try:
        return _orig_key_response_put(self, query, key_name)
    except MissingUploadObjectWithObjectLockHeaders:
        what = "Put Part" if query.get("uploadId") else "Put Object"
        return S3Error(400, "InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is required "
                                              f"for {what} requests with Object Lock parameters").response()


_orig_bucket_response_put = S3Response._bucket_response_put


def _bucket_response_put(self: S3Response, request, bucket_name, querystring):
    # Object Lock buckets stay versioned: S3 refuses to suspend versioning on them.
    if "versioning" in querystring:
        status = re.search(r"<Status>([A-Za-z]+)</Status>", (self.body or b"").decode("utf-8", "replace"))
        if status and status.group(1) != "Enabled":
            bucket = self.backend.get_bucket(bucket_name)
            if bucket.object_lock_enabled:
                return S3Error(409, "InvalidBucketState",
                               "An Object Lock configuration is present on this bucket, so the "
                               "versioning state cannot be changed.").response()
    return _orig_bucket_response_put(self, request, bucket_name, querystring)


# S3Backend patch: ListObjectVersions without copying bodies

_listing = threading.local()


def _key_deepcopy(self, memo):
    if getattr(_listing, "active", False):
        listed = object.__new__(_listed_class(type(self)))
        listed.__dict__.update(self.__dict__)
        return listed
    # Stock: what deepcopy does through FakeKey's pickle hooks.
    new = object.__new__(type(self))
    new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
    return new


_listed_classes: dict[type, type] = {}


def _listed_class(cls: type) -> type:
    """A FakeKey class whose instances never close the body they share with the stored key
    (stock's __del__ disposes, which closes the buffer)."""
    if cls not in _listed_classes:
        _listed_classes[cls] = type("Listed" + cls.__name__, (cls,), {
            "dispose": lambda self, garbage=False: None,
            "__del__": lambda self: None,
        })
    return _listed_classes[cls]


def _wrap_list_object_versions(orig: Callable) -> Callable:
    def list_object_versions(self, *args, **kwargs):
        _listing.active = True
        try:
            return orig(self, *args, **kwargs)
        finally:
            _listing.active = False
    return list_object_versions


# ---------------------------------------------------------------------------------------


def reset() -> None:
    with _key_locks_guard:
        _key_locks.clear()


def install(ctx) -> None:
    admin.add_middleware(middleware)
    S3Response.upload_part = _upload_part
    S3Response._key_response_post = _key_response_post
    S3Response.head_object = _head_object
    S3Response.get_object = _get_object
    S3Response.get_object_attributes = _get_object_attributes
    S3Response.put_object_retention = _put_object_retention
    S3Response._key_response_get = _key_response_get
    S3Response._key_response_delete = _key_response_delete
    S3Response._bucket_response_put = _bucket_response_put
    S3Response._key_response_put = _key_response_put
    from moto.s3.models import FakeKey, S3Backend
    FakeKey.__deepcopy__ = _key_deepcopy
    S3Backend.list_object_versions = _wrap_list_object_versions(S3Backend.list_object_versions)
