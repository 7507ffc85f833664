"""What an AWS request is, read from the raw WSGI environ before moto sees it.

Shared by the ``realism`` and ``iam_enforce`` middleware (not an extension itself: it has
no ``install``). ``parse(environ)`` answers, once per request (cached in the environ):
the SigV4 signing name (= the IAM action prefix for the services cleanroom uses), region,
access key, the account moto will act in, the API operation and its parameters, or None
for anything that is not a signed AWS request (moto's own /moto-api/, health checks).

Protocols: EC2 and query (form body ``Action=...``), JSON (``X-Amz-Target``), S3 REST
(operation from method, path and sub-resource), EBS direct (REST paths). Form and JSON
bodies are small: they are read here and put back as a fresh stream. S3 bodies are never
read (they may be gigabytes), except the small XML body of DeleteObjects.

Error documents in each service's own wire format are built here too, so both middlewares
answer exactly as the service would.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from werkzeug.wsgi import get_input_stream

ENVIRON_KEY = "cleanroom.awsreq"
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"

_AUTH_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")
_ACCOUNT_HEADER = "HTTP_X_MOTO_ACCOUNT_ID"

# Query-protocol services' XML namespaces (botocore service models, metadata.xmlNamespace).
QUERY_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
}
ELB_CLASSIC_VERSION = "2012-06-01"
ELB_CLASSIC_NAMESPACE = "http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/"


@dataclass
class AwsRequest:
    service: str                 # SigV4 signing name: ec2, s3, iam, sts, kms, ssm, ...
    region: str
    access_key: str
    account: str                 # the account moto acts in for this request
    account_from_header: bool    # x-moto-account-id: the lab's admin shortcut
    protocol: str                # "ec2" | "query" | "json" | "rest"
    operation: str               # API operation name, e.g. DescribeInstances, PutObject
    params: dict[str, Any] = field(default_factory=dict)  # query: flat; json: parsed body
    method: str = "GET"
    path: str = "/"
    query: dict[str, list[str]] = field(default_factory=dict)  # URL query string
    headers: dict[str, str] = field(default_factory=dict)      # lower-case names
    bucket: str | None = None    # S3
    key: str | None = None       # S3
    body: bytes | None = None    # only for bodies read here (form, JSON, DeleteObjects)

    @property
    def dry_run(self) -> bool:
        return str(self.params.get("DryRun", "")).lower() == "true"

    def param_list(self, prefix: str) -> list[str]:
        """EC2/query list members: ``prefix.1``, ``prefix.2``, ... in index order."""
        rx = re.compile(re.escape(prefix) + r"\.(\d+)$")
        found = [(int(m.group(1)), v) for k, v in self.params.items() if (m := rx.match(k))]
        return [v for _i, v in sorted(found)]


def _headers_of(environ: dict) -> dict[str, str]:
    out = {}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            out[k[5:].replace("_", "-").lower()] = v
    if "CONTENT_TYPE" in environ:
        out["content-type"] = environ["CONTENT_TYPE"]
    return out


def _credential(environ: dict, query: dict[str, list[str]]) -> tuple[str, str, str] | None:
    """(access key, region, service) from the SigV4 Authorization header or a presigned URL."""
    m = _AUTH_CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if m:
        return m.group(1), m.group(3), m.group(4)
    cred = (query.get("X-Amz-Credential") or [None])[0]
    if cred:
        parts = cred.split("/")
        if len(parts) == 5:
            return parts[0], parts[2], parts[3]
    return None


def account_for(environ: dict, access_key: str) -> tuple[str, bool]:
    """The account moto 5.2.5 picks (BaseResponse.get_current_account), and whether it came
    from the x-moto-account-id header."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"], False
    header = environ.get(_ACCOUNT_HEADER)
    if header:
        return header, True
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key), False


def _read_body(environ: dict) -> bytes:
    body = get_input_stream(environ).read()
    # Put it back for moto (and any middleware inside us) as a plain, length-known stream.
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def drain_body(environ: dict) -> None:
    """Read and drop an unread request body before answering without moto, so a kept-alive
    connection is not left with body bytes where the next request should start."""
    if environ.get(ENVIRON_KEY + ".body_read"):
        return
    stream = get_input_stream(environ)
    while stream.read(1 << 20):
        pass
    environ[ENVIRON_KEY + ".body_read"] = True


def parse(environ: dict) -> AwsRequest | None:
    if ENVIRON_KEY in environ:
        return environ[ENVIRON_KEY]
    req = _parse(environ)
    environ[ENVIRON_KEY] = req
    return req


def _parse(environ: dict) -> AwsRequest | None:
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    cred = _credential(environ, query)
    if cred is None:
        return None
    access_key, region, service = cred
    account, from_header = account_for(environ, access_key)
    headers = _headers_of(environ)
    method = environ["REQUEST_METHOD"].upper()
    path = environ.get("PATH_INFO", "") or "/"
    req = AwsRequest(service=service, region=region, access_key=access_key, account=account,
                     account_from_header=from_header, protocol="rest", operation="",
                     method=method, path=path, query=query, headers=headers)
    target = headers.get("x-amz-target")
    if service == "s3":
        _parse_s3(environ, req)
    elif target:
        req.protocol = "json"
        req.operation = target.rsplit(".", 1)[-1]
        body = _read_body(environ)
        environ[ENVIRON_KEY + ".body_read"] = True
        req.body = body
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        req.params = parsed if isinstance(parsed, dict) else {}
    elif service == "ebs":
        req.operation = _ebs_operation(method, path)
    else:
        # EC2 and query protocols: Action in the form body (or, rarely, the query string).
        form: dict[str, list[str]] = {}
        if method == "POST":
            body = _read_body(environ)
            environ[ENVIRON_KEY + ".body_read"] = True
            req.body = body
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        merged = {k: v[0] for k, v in query.items()}
        merged.update({k: v[0] for k, v in form.items()})
        req.params = merged
        req.protocol = "ec2" if service == "ec2" else "query"
        req.operation = merged.get("Action", "")
    return req


_EBS_ROUTES = [
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "GetSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/changedblocks$"), "ListChangedBlocks"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "PutSnapshotBlock"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
    ("POST", re.compile(r"^/snapshots$"), "StartSnapshot"),
]


def _ebs_operation(method: str, path: str) -> str:
    for m, rx, name in _EBS_ROUTES:
        if m == method and rx.match(path):
            return name
    return f"{method} {path}"


def ebs_snapshot_id(path: str) -> str | None:
    m = re.match(r"^/snapshots/(?:completion/)?(snap-[0-9a-zA-Z]+)", path)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------
# S3 REST: operation names, and the IAM actions each needs (Amazon S3 User Guide, "Policy
# actions for Amazon S3": the operation -> permission table).

_S3_BUCKET_SUB = {
    # sub-resource: (GET op, PUT op, DELETE op); IAM action = the op unless mapped below
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", None),
    "object-lock": ("GetBucketObjectLockConfiguration", "PutBucketObjectLockConfiguration", None),
    "policy": ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
    "policyStatus": ("GetBucketPolicyStatus", None, None),
    "tagging": ("GetBucketTagging", "PutBucketTagging", "DeleteBucketTagging"),
    "encryption": ("GetBucketEncryption", "PutBucketEncryption", "DeleteBucketEncryption"),
    "ownershipControls": ("GetBucketOwnershipControls", "PutBucketOwnershipControls",
                          "DeleteBucketOwnershipControls"),
    "publicAccessBlock": ("GetPublicAccessBlock", "PutPublicAccessBlock", "DeletePublicAccessBlock"),
    "acl": ("GetBucketAcl", "PutBucketAcl", None),
    "lifecycle": ("GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration",
                  "DeleteBucketLifecycle"),
    "cors": ("GetBucketCors", "PutBucketCors", "DeleteBucketCors"),
    "notification": ("GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration", None),
    "logging": ("GetBucketLogging", "PutBucketLogging", None),
    "location": ("GetBucketLocation", None, None),
    "versions": ("ListObjectVersions", None, None),
    "uploads": ("ListMultipartUploads", None, None),
    "replication": ("GetBucketReplication", "PutBucketReplication", "DeleteBucketReplication"),
    "website": ("GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite"),
}
# S3 operation -> IAM action where the names differ.
S3_IAM_ACTION = {
    "HeadBucket": "ListBucket", "ListObjects": "ListBucket", "ListObjectsV2": "ListBucket",
    "ListObjectVersions": "ListBucketVersions", "ListMultipartUploads": "ListBucketMultipartUploads",
    "ListBuckets": "ListAllMyBuckets",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "DeleteBucketEncryption": "PutEncryptionConfiguration",
    "DeleteBucketTagging": "PutBucketTagging",
    "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "PutLifecycleConfiguration",
    "GetBucketCors": "GetBucketCORS", "PutBucketCors": "PutBucketCORS",
    "DeleteBucketCors": "PutBucketCORS",
    "GetBucketNotificationConfiguration": "GetBucketNotification",
    "PutBucketNotificationConfiguration": "PutBucketNotification",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "PutBucketPublicAccessBlock",
    "DeleteBucketOwnershipControls": "PutBucketOwnershipControls",
    "GetBucketReplication": "GetReplicationConfiguration",
    "PutBucketReplication": "PutReplicationConfiguration",
    "DeleteBucketReplication": "PutReplicationConfiguration",
    "DeleteBucketWebsite": "DeleteBucketWebsite",
    "HeadObject": "GetObject", "UploadPart": "PutObject", "CreateMultipartUpload": "PutObject",
    "CompleteMultipartUpload": "PutObject", "CopyObject": "PutObject", "UploadPartCopy": "PutObject",
    "ListParts": "ListMultipartUploadParts", "DeleteObjects": "DeleteObject",
}


def _parse_s3(environ: dict, req: AwsRequest) -> None:
    req.protocol = "rest"
    host = environ.get("HTTP_HOST", "")
    path = unquote(environ.get("PATH_INFO", "") or "/")
    bucket = key = None
    vhost = re.match(r"^([a-z0-9][a-z0-9.-]*[a-z0-9])\.s3[.-]", host)
    if vhost:
        bucket = vhost.group(1)
        key = path.lstrip("/") or None
    else:
        parts = path.lstrip("/").split("/", 1)
        bucket = parts[0] or None
        key = parts[1] if len(parts) > 1 and parts[1] else None
    req.bucket, req.key = bucket, key
    q = req.query
    m = req.method
    if bucket is None:
        req.operation = "ListBuckets"
        return
    if key is None:
        sub = next((s for s in _S3_BUCKET_SUB if s in q), None)
        if m == "HEAD":
            req.operation = "HeadBucket"
        elif m == "POST" and "delete" in q:
            req.operation = "DeleteObjects"
            body = _read_body(environ)
            environ[ENVIRON_KEY + ".body_read"] = True
            req.body = body
        elif sub is not None:
            ops = _S3_BUCKET_SUB[sub]
            op = {"GET": ops[0], "PUT": ops[1], "DELETE": ops[2]}.get(m)
            req.operation = op or f"{m} ?{sub}"
        elif m == "GET":
            req.operation = "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
        elif m == "PUT":
            req.operation = "CreateBucket"
        elif m == "DELETE":
            req.operation = "DeleteBucket"
        else:
            req.operation = f"{m} bucket"
        return
    versioned = "versionId" in q
    if m == "PUT":
        if "retention" in q:
            req.operation = "PutObjectRetention"
        elif "legal-hold" in q:
            req.operation = "PutObjectLegalHold"
        elif "tagging" in q:
            req.operation = "PutObjectTagging"
        elif "acl" in q:
            req.operation = "PutObjectAcl"
        elif "uploadId" in q:
            req.operation = "UploadPartCopy" if "x-amz-copy-source" in req.headers else "UploadPart"
        elif "x-amz-copy-source" in req.headers:
            req.operation = "CopyObject"
        else:
            req.operation = "PutObject"
    elif m in ("GET", "HEAD"):
        if "retention" in q:
            req.operation = "GetObjectRetention"
        elif "legal-hold" in q:
            req.operation = "GetObjectLegalHold"
        elif "attributes" in q:
            req.operation = "GetObjectAttributes"
        elif "tagging" in q:
            req.operation = "GetObjectTagging"
        elif "acl" in q:
            req.operation = "GetObjectAcl"
        elif "uploadId" in q:
            req.operation = "ListParts"
        else:
            req.operation = "HeadObject" if m == "HEAD" else "GetObject"
    elif m == "DELETE":
        if "uploadId" in q:
            req.operation = "AbortMultipartUpload"
        elif "tagging" in q:
            req.operation = "DeleteObjectTagging"
        else:
            req.operation = "DeleteObject"
    elif m == "POST":
        if "uploads" in q:
            req.operation = "CreateMultipartUpload"
        elif "uploadId" in q:
            req.operation = "CompleteMultipartUpload"
        elif "restore" in q:
            req.operation = "RestoreObject"
        else:
            req.operation = "POST object"
    else:
        req.operation = f"{m} object"
    req.params = {"versioned": versioned}


def s3_delete_objects(body: bytes) -> list[tuple[str, str | None]]:
    """(key, version id) of each object named in a DeleteObjects body."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    out = []
    for obj in root.iter():
        if obj.tag.rsplit("}", 1)[-1] != "Object":
            continue
        key = version = None
        for child in obj:
            name = child.tag.rsplit("}", 1)[-1]
            if name == "Key":
                key = child.text or ""
            elif name == "VersionId":
                version = child.text
        if key is not None:
            out.append((key, version))
    return out


# ---------------------------------------------------------------------------------------
# Error documents, each in its service's wire format.

def request_id() -> str:
    return str(uuid.uuid4())


def error_response(req: AwsRequest, status: int, code: str, message: str,
                   extra_headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of an error as ``req.service`` sends it."""
    rid = request_id()
    msg = escape(message)
    if req.service == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{msg}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>")
        ctype = "text/xml;charset=UTF-8"
    elif req.service == "s3":
        host_id = uuid.uuid4().hex
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{msg}</Message><RequestId>{rid}</RequestId>"
                f"<HostId>{host_id}</HostId></Error>")
        ctype = "application/xml"
    elif req.protocol == "json" or req.protocol == "rest":
        # JSON protocols (KMS, SSM, CloudTrail) and REST-JSON (EBS direct).
        # botocore and the Rust SDK read "__type" (or x-amzn-ErrorType) and "message".
        key = "message" if req.protocol == "json" else "Message"
        body = json.dumps({"__type": code, key: message})
        ctype = "application/x-amz-json-1.1" if req.protocol == "json" else "application/json"
    else:
        ns = QUERY_NAMESPACES.get(req.service, "")
        if req.service == "elasticloadbalancing" and req.params.get("Version") == ELB_CLASSIC_VERSION:
            ns = ELB_CLASSIC_NAMESPACE
        xmlns = f' xmlns="{ns}"' if ns else ""
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse{xmlns}><Error><Type>Sender</Type>'
                f"<Code>{code}</Code><Message>{msg}</Message></Error>"
                f"<RequestId>{rid}</RequestId></ErrorResponse>")
        ctype = "text/xml"
    data = body.encode()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(data))),
               ("x-amzn-RequestId", rid), ("x-amzn-ErrorType", code)]
    if req.service == "s3":
        headers.append(("x-amz-request-id", rid))
    for k, v in (extra_headers or {}).items():
        headers.append((k, v))
    return status, headers, data


_REASONS = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}


def send_error(environ: dict, start_response: Callable, req: AwsRequest, status: int, code: str,
               message: str) -> list[bytes]:
    """Answer the request with an error, without moto."""
    drain_body(environ)
    status, headers, data = error_response(req, status, code, message)
    start_response(f"{status} {_REASONS.get(status, code)}", headers)
    if req.method == "HEAD":
        return [b""]
    return [data]
