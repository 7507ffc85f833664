"""cloudtrail: CloudTrail event history (LookupEvents) recorded from the calls made to the lab.

Stock moto 5.2.5 has no LookupEvents at all: moto/cloudtrail/responses.py defines no
``lookup_events``, so the server answers HTTP 500 (NotImplementedError), and nothing records
the calls made to it. cleanroom asks CloudTrail who launched an instance (which access key,
from which IP, with which user agent), what that key did in a time window, and every
instance a key or user launched, in every region. Here:

* A WSGI middleware records every successful (2xx) management call to EC2, IAM, STS, S3
  (bucket-level calls only: object calls are data events, not in event history), KMS, SSM,
  Auto Scaling, Elastic Load Balancing and CloudTrail itself, per account and region, as
  CloudTrail's 90-day event history does. Read-only calls (Describe*, Get*, List*, ...) are
  recorded only with option ``cloudtrail_record_read_only`` (POST /_lab/config), except the
  calls that issue credentials (sts:AssumeRole*, GetSessionToken, GetFederationToken), which
  are always recorded, with readOnly true as CloudTrail marks them.
* Each event carries what LookupEvents returns (EventId, EventName, ReadOnly, AccessKeyId,
  EventTime, EventSource, Username, Resources) and a CloudTrailEvent JSON string (eventVersion,
  userIdentity, eventTime, eventSource, eventName, awsRegion, sourceIPAddress, userAgent,
  requestParameters, responseElements, requestID, eventID, readOnly, eventType, managementEvent,
  recipientAccountId, eventCategory). RunInstances userData is "<sensitiveDataRemoved>", as
  CloudTrail writes it; secrets in responses (secret access keys, key material, plaintexts)
  are left out.
* Identity: the access key of the SigV4 Authorization header, mapped as moto maps it: an
  assumed-role session's key -> AssumedRole (Username = session name), an IAM user's key ->
  IAMUser, any other key -> Root of the request's account (Username "root").
* The source IP is the client's claim in header ``x-lab-source-ip`` (an IP address, or an AWS
  service name such as ``ec2.amazonaws.com``), else the peer address (127.0.0.1).
* ``POST /_lab/cloudtrail/events`` seeds history (a JSON list of events, or {"Events": [...]})
  into the route's account/region; ``GET`` lists it newest first; ``DELETE`` clears it.
  Reset clears every account's history.
* LookupEvents answers from that history, as CloudTrail: one lookup attribute at most,
  StartTime/EndTime inclusive, newest first, MaxResults 1..50 (default 50), opaque NextToken
  bound to the query, per account and region; the errors of the API reference.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import ipaddress
import json
import re
import secrets
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote

from moto.core.exceptions import JsonRESTError

from labext import admin

# Event history keeps 90 days (LookupEvents API reference: "events that occurred in a Region
# within the last 90 days").
EVENT_HISTORY_DAYS = 90
# LookupEvents MaxResults: "Possible values are 1 through 50. The default is 50."
MAX_RESULTS = 50
# LookupAttribute AttributeValue: at most 2000 characters, where '_', ' ', ',' and '\n'
# count twice (API reference, LookupAttribute).
ATTRIBUTE_VALUE_MAX = 2000
ATTRIBUTE_KEYS = ("EventId", "EventName", "ReadOnly", "Username", "ResourceType",
                  "ResourceName", "EventSource", "AccessKeyId")
# Insights events are looked up on these only (API reference).
INSIGHT_ATTRIBUTE_KEYS = ("EventId", "EventName", "EventSource")
EVENT_VERSION = "1.09"
SENSITIVE_EC2 = "<sensitiveDataRemoved>"  # what CloudTrail writes for RunInstances userData
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"  # what it writes for SSM command parameters
# Request bodies of query/JSON calls are parsed in memory; nothing that large is an AWS
# management call (the largest, KMS/SSM payloads, are a few KiB).
MAX_PARSED_BODY = 16 << 20
TARGET_PREFIX = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101"

# SigV4 signing name -> CloudTrail eventSource, for the services whose management events
# the lab records.
EVENT_SOURCES = {
    "ec2": "ec2.amazonaws.com",
    "iam": "iam.amazonaws.com",
    "sts": "sts.amazonaws.com",
    "s3": "s3.amazonaws.com",
    "kms": "kms.amazonaws.com",
    "ssm": "ssm.amazonaws.com",
    "autoscaling": "autoscaling.amazonaws.com",
    "elasticloadbalancing": "elasticloadbalancing.amazonaws.com",
    "cloudtrail": "cloudtrail.amazonaws.com",
}
# botocore model names, in the order a seeded EventName without EventSource is looked up.
_MODEL_FOR_SOURCE = [("ec2", "ec2.amazonaws.com"), ("iam", "iam.amazonaws.com"),
                     ("sts", "sts.amazonaws.com"), ("s3", "s3.amazonaws.com"),
                     ("kms", "kms.amazonaws.com"), ("ssm", "ssm.amazonaws.com"),
                     ("autoscaling", "autoscaling.amazonaws.com"),
                     ("elbv2", "elasticloadbalancing.amazonaws.com"),
                     ("cloudtrail", "cloudtrail.amazonaws.com")]

READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Lookup", "Head", "Search", "BatchGet")
# Calls CloudTrail marks readOnly although their names do not say so.
READ_ONLY_ACTIONS = {
    "sts": {"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity",
            "DecodeAuthorizationMessage"},
    "kms": {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext",
            "GenerateMac", "GenerateRandom", "ReEncrypt", "Sign", "Verify", "VerifyMac"},
}
# Always recorded, even when read-only calls are not: they hand out credentials, and tie a
# session's later calls to whoever started it.
CREDENTIAL_ACTIONS = {"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity",
                      "GetSessionToken", "GetFederationToken"}
# S3 calls that are data events (not in event history) although they name no object key.
S3_DATA_EVENTS = {"DeleteObjects", "ListObjects", "ListObjectsV2", "ListObjectVersions",
                  "ListMultipartUploads"}

_EC2_ID_TYPES = {
    "i": "AWS::EC2::Instance", "vol": "AWS::EC2::Volume", "snap": "AWS::EC2::Snapshot",
    "ami": "AWS::EC2::Ami", "sg": "AWS::EC2::SecurityGroup", "subnet": "AWS::EC2::Subnet",
    "vpc": "AWS::EC2::VPC", "eni": "AWS::EC2::NetworkInterface",
    "lt": "AWS::EC2::LaunchTemplate", "igw": "AWS::EC2::InternetGateway",
    "rtb": "AWS::EC2::RouteTable", "acl": "AWS::EC2::NetworkAcl",
    "vpce": "AWS::EC2::VPCEndpoint",
}
_EC2_ID_RE = re.compile(r"^(" + "|".join(_EC2_ID_TYPES) + r")-[0-9a-f]{8,17}$")
# (service or "*", key) -> resource type, for names that are not EC2 ids.
_NAMED_RESOURCES = {
    ("iam", "userName"): "AWS::IAM::User",
    ("iam", "roleName"): "AWS::IAM::Role",
    ("iam", "groupName"): "AWS::IAM::Group",
    ("iam", "policyArn"): "AWS::IAM::Policy",
    ("iam", "instanceProfileName"): "AWS::IAM::InstanceProfile",
    ("iam", "accessKeyId"): "AWS::IAM::AccessKey",
    ("sts", "accessKeyId"): "AWS::IAM::AccessKey",
    ("*", "roleArn"): "AWS::IAM::Role",
    ("s3", "bucketName"): "AWS::S3::Bucket",
    ("ec2", "keyName"): "AWS::EC2::KeyPair",
    ("ssm", "documentName"): "AWS::SSM::Document",
    ("autoscaling", "autoScalingGroupName"): "AWS::AutoScaling::AutoScalingGroup",
    ("elasticloadbalancing", "targetGroupArn"): "AWS::ElasticLoadBalancingV2::TargetGroup",
    ("elasticloadbalancing", "loadBalancerArn"): "AWS::ElasticLoadBalancingV2::LoadBalancer",
    ("cloudtrail", "name"): "AWS::CloudTrail::Trail",
}
_KMS_KEY_ID_RE = re.compile(r"^(arn:aws[\w-]*:kms:[^:]+:\d{12}:key/)?[0-9a-f-]{36}$|^mrk-[0-9a-f]{32}$")

_lock = threading.RLock()
_ctx = None
_seq = 0
# (account, region) -> events, in recording order
_events: dict[tuple[str, str], list["StoredEvent"]] = {}
_token_key = secrets.token_bytes(32)


def reset() -> None:
    with _lock:
        _events.clear()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# Reading an AWS request off the wire (also used by the faults extension)


_SCOPE_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")


@dataclass
class AwsRequest:
    service: str              # SigV4 signing name: ec2, s3, kms, ...
    region: str               # from the credential scope
    access_key: str
    account: str              # as moto picks it
    protocol: str             # ec2 | query | json | rest-json | rest-xml
    action: str | None        # operation name, None when it cannot be told
    params: dict[str, Any]    # query: flat form; json: the body; rest: uri and query params
    method: str
    host: str
    json_version: str = "1.1"
    body: bytes | None = None


def signing_scope(environ: dict) -> tuple[str, str, str] | None:
    """(access key, region, service) of a SigV4-signed request, header or presigned."""
    m = _SCOPE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if m:
        return m.group(1), m.group(2), m.group(3)
    for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
        if k == "X-Amz-Credential":
            parts = unquote(v).split("/")
            if len(parts) == 5:
                return parts[0], parts[2], parts[3]
    return None


def account_of(environ: dict, access_key: str) -> str:
    """The account moto serves a request in (moto 5.2.5 BaseResponse.get_current_account)."""
    import os

    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    header = environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if header:
        return header
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def _buffer_body(environ: dict) -> bytes | None:
    """Read the body once and put it back for the app; None when it is too big to parse."""
    from werkzeug.wsgi import get_input_stream

    length = environ.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > MAX_PARSED_BODY:
        return None
    body = get_input_stream(environ).read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False
    return body


def _rest_operation(service: str, environ: dict) -> tuple[str | None, dict[str, Any]]:
    """Operation name and uri params of a REST (S3, EBS direct, ...) request, by moto's router."""
    from moto.core.request import Request
    from moto.core.routing import get_service_router

    probe = dict(environ)
    probe["wsgi.input"] = io.BytesIO(b"")
    probe["CONTENT_LENGTH"] = "0"
    probe.pop("werkzeug.request", None)
    try:
        operation, params = get_service_router(service).match(Request(probe))
    except Exception:  # noqa: BLE001 - unknown service or path: no operation name
        return None, {}
    # The path labels and query names are the wire names (EBS direct: "snapshotId",
    # "maxResults"); name them by the operation's members too ("SnapshotId").
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    named = dict(params)
    shape = operation.input_shape
    for member, member_shape in (shape.members.items() if shape is not None else ()):
        where = member_shape.serialization.get("location")
        wire = member_shape.serialization.get("name", member)
        if where == "uri" and wire in params:
            named[member] = params[wire]
        elif where == "querystring" and wire in query:
            named[member] = query[wire]
    return operation.name, named


def parse_request(environ: dict, *, read_body: bool = True) -> AwsRequest | None:
    """What a signed AWS request asks for. Buffers query/JSON bodies (small) when read_body;
    never reads REST bodies (S3 objects). None for unsigned requests."""
    scope = signing_scope(environ)
    if scope is None:
        return None
    access_key, region, service = scope
    method = environ.get("REQUEST_METHOD", "GET").upper()
    host = environ.get("HTTP_HOST", "")
    account = account_of(environ, access_key)
    content_type = (environ.get("CONTENT_TYPE") or "").lower()
    target = environ.get("HTTP_X_AMZ_TARGET")
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    req = AwsRequest(service=service, region=region, access_key=access_key, account=account,
                     protocol="rest-xml" if service == "s3" else "query", action=None,
                     params={}, method=method, host=host)
    if target:
        req.protocol = "json"
        req.json_version = "1.0" if "json-1.0" in content_type else "1.1"
        req.action = target.rsplit(".", 1)[-1]
        if read_body:
            body = _buffer_body(environ)
            req.body = body
            try:
                parsed = json.loads(body) if body and body.strip() else {}
            except ValueError:
                parsed = {}
            req.params = parsed if isinstance(parsed, dict) else {}
        return req
    if service != "s3" and (content_type.startswith("application/x-www-form-urlencoded")
                            or "Action" in query):
        req.protocol = "ec2" if service == "ec2" else "query"
        params = dict(query)
        if read_body and method == "POST":
            body = _buffer_body(environ)
            req.body = body
            if body:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        req.action = params.get("Action")
        req.params = params
        return req
    req.protocol = "rest-xml" if service == "s3" else _model_protocol(service)
    action, uri_params = _rest_operation(service, environ)
    req.action = action
    req.params = {**query, **uri_params}
    return req


_protocol_cache: dict[str, str] = {}


def _model_protocol(service: str) -> str:
    """The service's protocol from its botocore model (rest-json for EBS direct, ...)."""
    if service not in _protocol_cache:
        try:
            from moto.core.utils import get_service_model

            _protocol_cache[service] = str(get_service_model(service).protocol)
        except Exception:  # noqa: BLE001
            _protocol_cache[service] = "rest-json"
    return _protocol_cache[service]


# ---------------------------------------------------------------------------------------
# Identity


def identity_of(account: str, access_key: str) -> tuple[dict[str, Any], str]:
    """(userIdentity, Username) for a request signed with ``access_key`` in ``account``."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        role_name = assumed.role_arn.split("/")[-1]
        try:
            role_id = iam_backends[account]["aws"].get_role_by_arn(assumed.role_arn).id
        except Exception:  # noqa: BLE001 - moto lets a role that does not exist be assumed
            role_id = "AROA" + hashlib.sha256(assumed.role_arn.encode()).hexdigest()[:17].upper()
        created = getattr(assumed.access_key, "create_date", None) or _now()
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{assumed.session_name}",
            "arn": assumed.arn,
            "accountId": account,
            "accessKeyId": access_key,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": role_id,
                                  "arn": assumed.role_arn, "accountId": account,
                                  "userName": role_name},
                "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
            },
        }, assumed.session_name
    user = iam_backends[account]["aws"].get_user_from_access_key_id(access_key)
    if user is not None:
        return {"type": "IAMUser", "principalId": user.id, "arn": user.arn,
                "accountId": account, "accessKeyId": access_key, "userName": user.name}, user.name
    return {"type": "Root", "principalId": account, "arn": f"arn:aws:iam::{account}:root",
            "accountId": account, "accessKeyId": access_key}, "root"


# ---------------------------------------------------------------------------------------
# Classification and rendering


def is_read_only(service: str, action: str, method: str = "POST") -> bool:
    if service == "s3":
        return method in ("GET", "HEAD")
    if action in READ_ONLY_ACTIONS.get(service, ()):
        return True
    return action.startswith(READ_ONLY_PREFIXES)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_lower_first(str(k)): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


_QUERY_META = {"Action", "Version", "AWSAccessKeyId", "Signature", "SignatureMethod",
               "SignatureVersion", "Timestamp", "Expires"}


def _nest_query(params: dict[str, str]) -> dict[str, Any]:
    """Flat query parameters (``TagSpecification.1.Tag.1.Key``, ``Tags.member.1.Key``) as the
    nested lowerCamelCase structure CloudTrail shows."""
    root: dict[str, Any] = {}
    for key, value in params.items():
        if key in _QUERY_META or key.startswith("X-Amz-"):
            continue
        parts = [p for p in key.split(".") if p not in ("member", "entry")]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        leaf = parts[-1]
        if not isinstance(node.get(leaf), dict):
            node[leaf] = {"true": True, "false": False}.get(value, value)

    def finish(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [finish(node[k]) for k in sorted(node, key=int)]
            return {_lower_first(k): finish(v) for k, v in node.items()}
        return node

    return finish(root)


def _redact(value: Any, service: str, *, response: bool = False) -> Any:
    """CloudTrail never logs user data, secrets or plaintexts; mirror that."""
    if isinstance(value, list):
        return [_redact(v, service, response=response) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        low = k.lower()
        if low == "userdata":
            out[k] = SENSITIVE_EC2
        elif low in ("secretaccesskey", "plaintext", "password", "newpassword", "oldpassword",
                     "privatekeyplaintext"):
            continue
        elif low == "keymaterial" and response:
            out[k] = SENSITIVE_EC2
        elif service == "ssm" and not response and low in ("parameters", "value"):
            out[k] = HIDDEN
        else:
            out[k] = _redact(v, service, response=response)
    return out


def _run_instances_parameters(p: dict[str, Any]) -> dict[str, Any]:
    """RunInstances requestParameters in EC2's CloudTrail shape (instancesSet, groupSet, ...)."""
    p = dict(p)
    item = {}
    for k in ("imageId", "minCount", "maxCount", "keyName"):
        if k in p:
            v = p.pop(k)
            item[k] = int(v) if k in ("minCount", "maxCount") and str(v).isdigit() else v
    out: dict[str, Any] = {"instancesSet": {"items": [item]}}
    if "securityGroupId" in p:
        ids = p.pop("securityGroupId")
        out["groupSet"] = {"items": [{"groupId": g} for g in (ids if isinstance(ids, list) else [ids])]}
    if "tagSpecification" in p:
        specs = p.pop("tagSpecification")
        out["tagSpecificationSet"] = {"items": [
            {"resourceType": s.get("resourceType"),
             "tags": [{"key": t.get("key"), "value": t.get("value")} for t in s.get("tag", [])]}
            for s in (specs if isinstance(specs, list) else []) if isinstance(s, dict)]}
    out.update(p)
    return out


def request_parameters(req: AwsRequest) -> dict[str, Any] | None:
    if req.protocol in ("ec2", "query"):
        params = _nest_query(req.params)
        if req.service == "ec2" and req.action == "RunInstances":
            params = _run_instances_parameters(params)
    elif req.protocol == "json":
        params = _camel_keys(req.params)
    elif req.service == "s3":
        params = {"bucketName": req.params.get("Bucket"), "Host": req.host}
        for k, v in req.params.items():
            if k not in ("Bucket", "Key") and not k.startswith("X-Amz-"):
                params[k] = v
    else:
        params = _camel_keys(req.params)
    return _redact(params, req.service) or None


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_value(node: ET.Element, ec2: bool) -> Any:
    children = list(node)
    if not children:
        text = node.text
        return None if text is None or not text.strip() else text
    tags = [_strip_ns(c.tag) for c in children]
    if all(t in ("item", "member") for t in tags):
        items = [_xml_value(c, ec2) for c in children]
        return {"items": items} if ec2 else items
    out: dict[str, Any] = {}
    for tag, child in zip(tags, children):
        key = _lower_first(tag)
        value = _xml_value(child, ec2)
        if key in out:  # a repeated element: a list
            if not isinstance(out[key], list):
                out[key] = [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def response_elements(req: AwsRequest, body: bytes, headers: dict[str, str]
                      ) -> tuple[Any, str | None]:
    """(responseElements, request id) from a successful answer."""
    request_id = (headers.get("x-amzn-requestid") or headers.get("x-amz-request-id")
                  or headers.get("x-amzn-request-id"))
    elements: Any = None
    if req.protocol in ("ec2", "query") and body.strip():
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            root = None
        if root is not None and req.protocol == "ec2":
            elements = _xml_value(root, ec2=True)
            if isinstance(elements, dict):
                request_id = request_id or elements.get("requestId")
        elif root is not None:
            for child in root:
                tag = _strip_ns(child.tag)
                if tag.endswith("Result"):
                    elements = _xml_value(child, ec2=False)
                elif tag == "ResponseMetadata":
                    for m in child:
                        if _strip_ns(m.tag) == "RequestId":
                            request_id = request_id or (m.text or "").strip()
    elif req.protocol == "json" and body.strip():
        try:
            elements = _camel_keys(json.loads(body))
        except ValueError:
            elements = None
    if isinstance(elements, (dict, list)) and not elements:
        elements = None
    if isinstance(elements, str):
        elements = None
    return _redact(elements, req.service, response=True), request_id


# Sub-structures of EC2 answers that describe what a resource is made of (its volumes, its
# network interfaces), not the resources the call acted on.
_RESPONSE_DETAIL_KEYS = {"blockDeviceMapping", "networkInterfaceSet", "attachmentSet"}


def _walk(value: Any, parent: str = "", skip: set[str] | frozenset = frozenset()
          ) -> Iterable[tuple[str, str, str]]:
    """(parent key, key, string value) of every scalar in a nested structure."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in skip:
                continue
            if isinstance(v, (dict, list)):
                yield from _walk(v, k, skip)
            elif isinstance(v, str):
                yield parent, k, v
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                yield from _walk(v, parent, skip)
            elif isinstance(v, str):
                yield parent, parent, v


def derive_resources(service: str, region: str, account: str, request: Any,
                     response: Any, event_name: str = "") -> list[dict[str, str]]:
    """Best effort, as CloudTrail's Resources: EC2 ids in the request and the answer (not
    in the answer's details, such as an instance's volumes), and named resources by key.
    RunInstances lists its instances first."""
    found: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(rtype: str, name: str) -> None:
        if (rtype, name) not in seen:
            seen.add((rtype, name))
            found.append({"ResourceType": rtype, "ResourceName": name})

    for parent, key, value in [*_walk(response, skip=_RESPONSE_DETAIL_KEYS), *_walk(request)]:
        m = _EC2_ID_RE.match(value)
        if m:
            add(_EC2_ID_TYPES[m.group(1)], value)
            continue
        if service == "sts" and parent == "assumedRoleUser" and key == "arn":
            add("AWS::STS::AssumedRole", value)
            continue
        if service == "kms" and (key == "keyId" or (parent == "keyMetadata" and key == "arn")):
            if _KMS_KEY_ID_RE.match(value):
                arn = value if value.startswith("arn:") else f"arn:aws:kms:{region}:{account}:key/{value}"
                add("AWS::KMS::Key", arn)
            continue
        rtype = _NAMED_RESOURCES.get((service, key)) or _NAMED_RESOURCES.get(("*", key))
        if rtype:
            add(rtype, value)
    if event_name == "RunInstances":
        found.sort(key=lambda r: r["ResourceType"] != "AWS::EC2::Instance")
    return found


# ---------------------------------------------------------------------------------------
# The store


@dataclass
class StoredEvent:
    seq: int
    time: int                  # epoch seconds, UTC
    event_id: str
    event_name: str
    event_source: str
    username: str | None
    access_key_id: str | None
    read_only: bool
    resources: list[dict[str, str]]
    cloudtrail_event: str      # the JSON string LookupEvents returns
    seeded: bool = False
    region: str = ""
    account: str = ""

    def api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"EventId": self.event_id, "EventName": self.event_name,
                               "ReadOnly": "true" if self.read_only else "false"}
        if self.access_key_id:
            out["AccessKeyId"] = self.access_key_id
        out["EventTime"] = self.time
        out["EventSource"] = self.event_source
        if self.username:
            out["Username"] = self.username
        out["Resources"] = list(self.resources)
        out["CloudTrailEvent"] = self.cloudtrail_event
        return out


def _store(event: StoredEvent) -> StoredEvent:
    global _seq
    with _lock:
        _seq += 1
        event.seq = _seq
        _events.setdefault((event.account, event.region), []).append(event)
    return event


def make_event(*, account: str, region: str, event_name: str, event_source: str,
               when: datetime, identity: dict[str, Any] | None, username: str | None,
               access_key_id: str | None, read_only: bool, source_ip: str, user_agent: str,
               request_params: Any, response: Any, request_id: str | None,
               event_id: str | None = None, resources: list[dict[str, str]] | None = None,
               extra: dict[str, Any] | None = None, seeded: bool = False) -> StoredEvent:
    event_id = event_id or str(uuid.uuid4())
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": identity or {},
        "eventTime": _iso(when),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
    }
    if extra:
        record.update({k: v for k, v in extra.items() if k in ("errorCode", "errorMessage")})
    record.update({
        "requestParameters": request_params,
        "responseElements": response,
        "requestID": request_id or str(uuid.uuid4()),
        "eventID": event_id,
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
    })
    if extra:
        record.update({k: v for k, v in extra.items() if k not in ("errorCode", "errorMessage")})
    record["eventCategory"] = "Management"
    if resources is None:
        service = event_source.split(".", 1)[0]
        resources = derive_resources(service, region, account, request_params, response,
                                     event_name)
    return StoredEvent(seq=0, time=int(when.timestamp()), event_id=event_id,
                       event_name=event_name, event_source=event_source, username=username,
                       access_key_id=access_key_id, read_only=read_only, resources=resources,
                       cloudtrail_event=json.dumps(record, separators=(",", ":"), default=str),
                       seeded=seeded, region=region, account=account)


def events_of(account: str, region: str) -> list[StoredEvent]:
    """Newest first (EventTime, then recording order)."""
    with _lock:
        found = list(_events.get((account, region), ()))
    found.sort(key=lambda e: (e.time, e.seq), reverse=True)
    return found


# ---------------------------------------------------------------------------------------
# Recording middleware


_SERVICE_HOST_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*\.amazonaws\.com$")


def source_ip_of(environ: dict) -> str:
    claimed = (environ.get("HTTP_X_LAB_SOURCE_IP") or "").strip()
    if claimed:
        try:
            return str(ipaddress.ip_address(claimed))
        except ValueError:
            if _SERVICE_HOST_RE.match(claimed):
                return claimed
            print(f"lab cloudtrail: ignoring x-lab-source-ip {claimed!r} (not an IP address or "
                  "an AWS service name)", file=sys.stderr)
    return environ.get("REMOTE_ADDR") or "127.0.0.1"


def _should_record(req: AwsRequest) -> bool:
    if req.service not in EVENT_SOURCES or not req.action:
        return False
    if req.service == "s3" and ("Key" in req.params or req.action in S3_DATA_EVENTS):
        return False
    if req.service == "sts" and req.action in CREDENTIAL_ACTIONS:
        return True
    if is_read_only(req.service, req.action, req.method):
        return bool(_ctx is not None and _ctx.options.get("cloudtrail_record_read_only"))
    return True


def _record_call(req: AwsRequest, environ: dict, identity: dict[str, Any], username: str,
                 status: int, headers: dict[str, str], body: bytes) -> None:
    if not 200 <= status < 300:
        return
    elements, request_id = response_elements(req, body, headers)
    params = request_parameters(req)
    read_only = is_read_only(req.service, req.action or "", req.method)
    common = dict(event_name=req.action, event_source=EVENT_SOURCES[req.service], when=_now(),
                  source_ip=source_ip_of(environ), user_agent=environ.get("HTTP_USER_AGENT", ""),
                  request_params=params, response=elements, request_id=request_id,
                  read_only=read_only)
    shared = None
    role_account = None
    if req.service == "sts" and req.action == "AssumeRole":
        m = re.match(r"^arn:aws[\w-]*:iam::(\d{12}):role/", str(req.params.get("RoleArn", "")))
        role_account = m.group(1) if m else None
        if role_account == req.account:
            role_account = None
        shared = str(uuid.uuid4()) if role_account else None
    extra = {"sharedEventID": shared} if shared else None
    _store(make_event(account=req.account, region=req.region, identity=identity,
                      username=username, access_key_id=req.access_key, extra=extra, **common))
    if role_account:
        # A cross-account AssumeRole is also in the role's account, naming the caller's account.
        caller = {"type": "AWSAccount", "principalId": identity.get("principalId"),
                  "accountId": identity.get("accountId")}
        _store(make_event(account=role_account, region=req.region, identity=caller,
                          username=None, access_key_id=None, extra=extra, **common))


def middleware(app: Callable) -> Callable:
    def cloudtrail(environ: dict, start_response: Callable):
        scope = signing_scope(environ)
        if scope is None or scope[2] not in EVENT_SOURCES:
            return app(environ, start_response)
        try:
            req = parse_request(environ)
        except Exception as e:  # noqa: BLE001 - never break a call because of the recorder
            print(f"lab cloudtrail: cannot parse request: {e!r}", file=sys.stderr)
            return app(environ, start_response)
        if req is None or not _should_record(req):
            return app(environ, start_response)
        # Before the call: the call may delete the very key that signed it.
        identity, username = identity_of(req.account, req.access_key)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = {k.lower(): v for k, v in headers}
            return start_response(status, headers, exc_info)

        result = app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close:
                close()
        try:
            _record_call(req, environ, identity, username, captured.get("status", 500),
                         captured.get("headers", {}), body)
        except Exception as e:  # noqa: BLE001
            print(f"lab cloudtrail: cannot record {req.service}:{req.action}: {e!r}",
                  file=sys.stderr)
        return [body]

    return cloudtrail


# ---------------------------------------------------------------------------------------
# LookupEvents


class _CloudTrailError(JsonRESTError):
    code = 400

    def __init__(self, error_type: str, message: str):
        super().__init__(error_type, message)


def _epoch(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise _CloudTrailError("InvalidTimeRangeException", f"{name} is not a timestamp.")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
    raise _CloudTrailError("InvalidTimeRangeException", f"{name} is not a timestamp.")


def _attribute_length(value: str) -> int:
    return len(value) + sum(value.count(c) for c in ("_", " ", ",", "\n"))


def _token(fingerprint: str, event: StoredEvent) -> str:
    payload = json.dumps({"q": fingerprint, "t": event.time, "s": event.seq},
                         separators=(",", ":")).encode()
    mac = hmac.new(_token_key, payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def _read_token(token: str, fingerprint: str) -> tuple[int, int]:
    bad = _CloudTrailError("InvalidNextTokenException", "Invalid NextToken.")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except Exception:  # noqa: BLE001
        raise bad from None
    payload, mac = raw[:-16], raw[-16:]
    if len(raw) <= 16 or not hmac.compare_digest(
            mac, hmac.new(_token_key, payload, hashlib.sha256).digest()[:16]):
        raise bad
    data = json.loads(payload)
    if data.get("q") != fingerprint:  # a token must come back with the same parameters
        raise bad
    return int(data["t"]), int(data["s"])


def lookup(account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
    """LookupEvents on the history of ``account`` in ``region``; raises _CloudTrailError."""
    attributes = params.get("LookupAttributes") or []
    if not isinstance(attributes, list):
        raise _CloudTrailError("InvalidLookupAttributesException",
                               "LookupAttributes must be a list.")
    if len(attributes) > 1:
        raise _CloudTrailError("InvalidLookupAttributesException",
                               "You cannot specify more than one lookup attribute.")
    category = params.get("EventCategory")
    if category is not None and category != "insight":
        raise _CloudTrailError("InvalidEventCategoryException",
                               f"Event category {category!r} is not valid. Valid value: insight.")
    key = value = None
    if attributes:
        attr = attributes[0] if isinstance(attributes[0], dict) else {}
        key, value = attr.get("AttributeKey"), attr.get("AttributeValue")
        allowed = INSIGHT_ATTRIBUTE_KEYS if category == "insight" else ATTRIBUTE_KEYS
        if key not in allowed:
            raise _CloudTrailError("InvalidLookupAttributesException",
                                   f"Lookup attribute key {key!r} is not valid. "
                                   f"Valid keys: {', '.join(allowed)}.")
        if not isinstance(value, str) or not value or _attribute_length(value) > ATTRIBUTE_VALUE_MAX:
            raise _CloudTrailError("InvalidLookupAttributesException",
                                   f"The value of lookup attribute {key} is not valid.")
        if key == "ReadOnly" and value not in ("true", "false"):
            raise _CloudTrailError("InvalidLookupAttributesException",
                                   "The value of lookup attribute ReadOnly must be true or false.")
    max_results = params.get("MaxResults")
    if max_results is None:
        max_results = MAX_RESULTS
    if isinstance(max_results, bool) or not isinstance(max_results, int) \
            or not 1 <= max_results <= MAX_RESULTS:
        raise _CloudTrailError("InvalidMaxResultsException",
                               f"MaxResults must be between 1 and {MAX_RESULTS}.")
    start = _epoch(params["StartTime"], "StartTime") if params.get("StartTime") is not None else None
    end = _epoch(params["EndTime"], "EndTime") if params.get("EndTime") is not None else None
    if start is not None and end is not None and start > end:
        raise _CloudTrailError("InvalidTimeRangeException",
                               "The start time must be before or equal to the end time.")
    fingerprint = hashlib.sha256(json.dumps(
        [account, region, key, value, start, end, category], default=str).encode()).hexdigest()
    after = _read_token(params["NextToken"], fingerprint) if params.get("NextToken") else None

    if category == "insight":
        return {"Events": []}  # the lab has no Insights
    oldest = (_now() - timedelta(days=EVENT_HISTORY_DAYS)).timestamp()
    page: list[StoredEvent] = []
    more = False
    for e in events_of(account, region):
        if e.time < oldest:
            continue
        if start is not None and e.time < start:
            continue
        if end is not None and e.time > end:
            continue
        if after is not None and (e.time, e.seq) >= after:
            continue
        if key is not None and not _attribute_matches(e, key, value):
            continue
        if len(page) == max_results:
            more = True
            break
        page.append(e)
    out: dict[str, Any] = {"Events": [e.api() for e in page]}
    if more:
        out["NextToken"] = _token(fingerprint, page[-1])
    return out


def _attribute_matches(e: StoredEvent, key: str, value: str) -> bool:
    if key == "EventId":
        return e.event_id == value
    if key == "EventName":
        return e.event_name == value
    if key == "EventSource":
        return e.event_source == value
    if key == "AccessKeyId":
        return e.access_key_id == value
    if key == "Username":
        return e.username == value
    if key == "ReadOnly":
        return e.read_only == (value == "true")
    if key == "ResourceType":
        return any(r.get("ResourceType") == value for r in e.resources)
    if key == "ResourceName":
        return any(r.get("ResourceName") == value for r in e.resources)
    return False


def _lookup_events(self) -> str:
    """CloudTrailResponse.lookup_events (stock 5.2.5 has none)."""
    try:
        params = json.loads(self.body) if self.body else {}
    except ValueError:
        params = {}
    return json.dumps(lookup(self.current_account, self.region,
                             params if isinstance(params, dict) else {}))


# ---------------------------------------------------------------------------------------
# Seeding


_SEED_KEYS = {"EventId", "EventName", "EventTime", "EventSource", "Username", "AccessKeyId",
              "ReadOnly", "Resources", "CloudTrailEvent", "SourceIPAddress", "UserAgent",
              "RequestParameters", "ResponseElements", "RequestId", "UserIdentity",
              "ErrorCode", "ErrorMessage"}
_source_by_name: dict[str, str | None] = {}


def _source_for(event_name: str) -> str | None:
    if event_name not in _source_by_name:
        from moto.core.utils import get_service_model

        found = None
        for model, source in _MODEL_FOR_SOURCE:
            try:
                if event_name in get_service_model(model).operation_names:
                    found = source
                    break
            except Exception:  # noqa: BLE001
                continue
        _source_by_name[event_name] = found
    return _source_by_name[event_name]


def _seed_time(value: Any) -> datetime:
    if value is None:
        return _now()
    if isinstance(value, bool):
        raise admin.AdminError(400, f"EventTime {value!r}: epoch seconds or an ISO 8601 time")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(int(value), timezone.utc)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise admin.AdminError(400, f"EventTime {value!r}: epoch seconds or an ISO 8601 "
                                        "time") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.astimezone(timezone.utc).replace(microsecond=0)
    raise admin.AdminError(400, f"EventTime {value!r}: epoch seconds or an ISO 8601 time")


def _seed_one(raw: Any, account: str, region: str, known_ids: set[str]) -> StoredEvent:
    if not isinstance(raw, dict):
        raise admin.AdminError(400, f"each event must be a JSON object, got {raw!r}")
    unknown = sorted(set(raw) - _SEED_KEYS)
    if unknown:
        raise admin.AdminError(400, f"unknown event field(s) {unknown}; known: {sorted(_SEED_KEYS)}")
    base = raw.get("CloudTrailEvent") or {}
    if isinstance(base, str):
        try:
            base = json.loads(base)
        except ValueError:
            raise admin.AdminError(400, "CloudTrailEvent is not valid JSON") from None
    if not isinstance(base, dict):
        raise admin.AdminError(400, "CloudTrailEvent must be a JSON object (or its string)")
    name = raw.get("EventName") or base.get("eventName")
    if not isinstance(name, str) or not name:
        raise admin.AdminError(400, "EventName is required")
    source = raw.get("EventSource") or base.get("eventSource") or _source_for(name)
    if not source:
        raise admin.AdminError(400, f"EventName {name!r} is no operation of a service the lab "
                                    "records; give EventSource")
    service = source.split(".", 1)[0]
    event_id = raw.get("EventId") or base.get("eventID") or str(uuid.uuid4())
    if event_id in known_ids:
        raise admin.AdminError(409, f"an event with EventId {event_id} already exists in "
                                    f"account {account} region {region}")
    known_ids.add(event_id)
    when = _seed_time(raw.get("EventTime", base.get("eventTime")))
    key = raw.get("AccessKeyId") or (base.get("userIdentity") or {}).get("accessKeyId")
    identity = raw.get("UserIdentity") or base.get("userIdentity")
    username = raw.get("Username")
    if identity is None:
        if key and username is None:
            identity, username = identity_of(account, key)
        elif username and username != "root":
            identity = {"type": "IAMUser", "principalId": "AIDA" + hashlib.sha256(
                f"{account}/{username}".encode()).hexdigest()[:17].upper(),
                "arn": f"arn:aws:iam::{account}:user/{username}", "accountId": account,
                "userName": username}
        else:
            identity = {"type": "Root", "principalId": account,
                        "arn": f"arn:aws:iam::{account}:root", "accountId": account}
        if key:
            identity["accessKeyId"] = key
    if not isinstance(identity, dict):
        raise admin.AdminError(400, "UserIdentity must be a JSON object")
    if username is None:
        username = (identity.get("userName") if identity.get("type") == "IAMUser"
                    else "root" if identity.get("type") == "Root"
                    else str(identity.get("arn", "")).rsplit("/", 1)[-1] or None)
    read_only = raw.get("ReadOnly", base.get("readOnly"))
    if read_only is None:
        read_only = is_read_only(service, name)
    elif isinstance(read_only, str) and read_only in ("true", "false"):
        read_only = read_only == "true"
    elif not isinstance(read_only, bool):
        raise admin.AdminError(400, f"ReadOnly {read_only!r}: true or false")
    params = raw.get("RequestParameters", base.get("requestParameters"))
    response = raw.get("ResponseElements", base.get("responseElements"))
    params = _redact(params, service)
    response = _redact(response, service, response=True)
    resources = raw.get("Resources")
    if resources is not None:
        if not isinstance(resources, list) or not all(
                isinstance(r, dict) and isinstance(r.get("ResourceType"), str)
                and isinstance(r.get("ResourceName"), str) for r in resources):
            raise admin.AdminError(400, "Resources must be a list of "
                                        "{\"ResourceType\": ..., \"ResourceName\": ...}")
        resources = [{"ResourceType": r["ResourceType"], "ResourceName": r["ResourceName"]}
                     for r in resources]
    extra = {k: v for k, v in base.items() if k not in (
        "eventVersion", "userIdentity", "eventTime", "eventSource", "eventName", "awsRegion",
        "sourceIPAddress", "userAgent", "requestParameters", "responseElements", "requestID",
        "eventID", "readOnly", "eventType", "managementEvent", "recipientAccountId",
        "eventCategory")}
    for field_name, ct_name in (("ErrorCode", "errorCode"), ("ErrorMessage", "errorMessage")):
        if field_name in raw:
            extra[ct_name] = raw[field_name]
    return make_event(
        account=account, region=region, event_name=name, event_source=source, when=when,
        identity=identity, username=username, access_key_id=key, read_only=read_only,
        source_ip=raw.get("SourceIPAddress", base.get("sourceIPAddress", "127.0.0.1")),
        user_agent=raw.get("UserAgent", base.get("userAgent", "")),
        request_params=params, response=response,
        request_id=raw.get("RequestId", base.get("requestID")), event_id=event_id,
        resources=resources, extra=extra or None, seeded=True)


@admin.route("POST", r"/_lab/cloudtrail/events")
def _post_events(req: admin.AdminRequest):
    body = req.json()
    if isinstance(body, dict) and "Events" in body:
        body = body["Events"]
    if not isinstance(body, list):
        raise admin.AdminError(400, "body must be a JSON list of events (or {\"Events\": [...]})")
    with _lock:
        known = {e.event_id for e in _events.get((req.account, req.region), ())}
        made = [_seed_one(raw, req.account, req.region, known) for raw in body]
        for e in made:
            _store(e)
    return 201, {"account": req.account, "region": req.region,
                 "events": [e.api() for e in made]}


@admin.route("GET", r"/_lab/cloudtrail/events")
def _get_events(req: admin.AdminRequest):
    return 200, {"account": req.account, "region": req.region,
                 "events": [dict(e.api(), Seeded=e.seeded)
                            for e in events_of(req.account, req.region)]}


@admin.route("DELETE", r"/_lab/cloudtrail/events")
def _delete_events(req: admin.AdminRequest):
    with _lock:
        gone = len(_events.pop((req.account, req.region), []))
    return 200, {"account": req.account, "region": req.region, "deleted": gone}


def install(ctx) -> None:
    global _ctx
    _ctx = ctx
    ctx.options.setdefault("cloudtrail_record_read_only", False)
    from moto.cloudtrail.responses import CloudTrailResponse

    CloudTrailResponse.lookup_events = _lookup_events
    admin.add_middleware(middleware)
