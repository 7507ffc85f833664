"""iam_enforce: the lab evaluates IAM identity policies (opt-in, option ``iam_enforce``).

Why not moto's own evaluation (moto 5.2.5 ``moto/iam/access_control.py``, switched on by
``INITIAL_NO_AUTH_ACTION_COUNT``)? It is global, not per request: once on, every key it
did not issue (the lab's "testing", the Rust side's AKIALAB...) is refused with
InvalidClientTokenId, so the harness could no longer seed. And it is too coarse for
least-privilege policies: the resource is "*" for every non-S3 action (so an Allow on
``arn:aws:ec2:*:*:instance/*`` never allows anything), conditions see only request
parameters (no aws:ResourceTag, aws:TokenIssueTime, aws:PrincipalArn), permissions
boundaries and session policies are ignored, S3 sub-resources (retention, legal hold,
attributes, versions) map to GetObject/PutObject, and every service but EC2 and S3
answers in IAM's XML error format. So moto's switch stays off and this module decides,
as WSGI middleware, before moto sees the request.

Who is evaluated: requests signed with an IAM user's access key or with credentials from
sts:AssumeRole, in any account. Unrestricted, as before: keys IAM never issued (the
account root in the lab: "testing", "AKIALABLABLABLAB0000", ...), requests carrying
``x-moto-account-id`` (the lab's seeding shortcut), sessions of the roles named in the
option ``iam_enforce_exempt_roles`` (default ["LabAdmin"], the role conftest.py and the
drill reach other accounts through: an administrator role), and the temporary keys the
SSM agent simulator makes for instances without a profile.

Evaluation (AWS "Policy evaluation logic", same-account subset): an explicit Deny in any
identity policy, the permissions boundary or the session policy refuses; otherwise some
identity policy (inline or managed; for users also their groups') must Allow, and so must
the boundary and the session policy when there is one. Statements: Action/NotAction
(wildcards, case-insensitive), Resource/NotResource (wildcards per ARN segment, as
ArnLike), policy variables ``${aws:username}``-style, and conditions with String*, Arn*,
Numeric*, Date*, Bool, Null, IpAddress, BinaryEquals, ...IfExists, ForAnyValue:,
ForAllValues:. A statement with an operator not listed is treated as not matching (for
an Allow: no allow; for a Deny: no deny) and logged once. Context keys: aws:CurrentTime,
aws:EpochTime, aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType, aws:userid,
aws:username, aws:PrincipalTag/*, aws:RequestedRegion, aws:SourceIp, aws:SecureTransport
(always "true": the lab stands in for AWS endpoints, which are HTTPS), aws:TokenIssueTime
(assumed roles: the time AssumeRole answered), aws:ResourceTag/* and ec2:ResourceTag/*
(EC2 resources), aws:RequestTag/*, aws:TagKeys, ec2:CreateAction, ec2:Add/userId,
ec2:Add/group, ec2:Remove/userId, ec2:Remove/group, ec2:Attribute, iam:PassedToService,
s3:prefix, s3:delimiter, s3:max-keys, s3:versionid, s3:object-lock-mode,
s3:object-lock-retain-until-date, s3:object-lock-remaining-retention-days,
s3:object-lock-legal-hold, s3:x-amz-server-side-encryption(-aws-kms-key-id),
sts:RoleSessionName, sts:ExternalId.

Resources: which ARNs each action is authorized against is in ``checks_for`` (EC2,
S3, IAM, STS, KMS, SSM, Auto Scaling, ELB, CloudTrail, EBS direct); an action not listed
there is authorized against "*", so only ``Resource: "*"`` statements cover it. Implied
authorizations: tag-on-create (TagSpecifications need ec2:CreateTags with
ec2:CreateAction), iam:PassRole for instance profiles (RunInstances,
AssociateIamInstanceProfile, ReplaceIamInstanceProfileAssociation), S3 Object Lock
headers on PutObject/CreateMultipartUpload (s3:PutObjectRetention,
s3:PutObjectLegalHold), the governance bypass header (s3:BypassGovernanceRetention),
CopyObject's source (s3:GetObject[Version]), EBS's use of customer managed KMS keys on
the caller's behalf (CopySnapshot, CreateVolume: kms:DescribeKey, kms:CreateGrant,
kms:Decrypt [+ kms:ReEncryptFrom] on the source's key, kms:DescribeKey, kms:CreateGrant,
kms:GenerateDataKeyWithoutPlaintext [+ kms:ReEncryptTo] on the result's key, with
kms:ViaService ec2.<region>.amazonaws.com; AWS managed keys such as aws/ebs need none).

Not modelled: resource-based policies (bucket policies, KMS key policies, role trust
policies are sts_trust's), SCPs and RCPs, cross-account evaluation (both sides' policies),
the same-account exemption that lets a trust policy naming a principal alone admit an
AssumeRole, signature checks, tag-on-create of Auto Scaling/ELB, DeleteObjects' per-key
errors (the whole request is refused), every condition key not listed above.

Denied requests answer in the service's format: EC2 403 ``UnauthorizedOperation`` (also for
DryRun: only an allowed DryRun reaches moto, which answers ``DryRunOperation``); S3, IAM,
STS, Auto Scaling, ELB 403 ``AccessDenied``; KMS, SSM, CloudTrail 400
``AccessDeniedException``; EBS direct 403 ``AccessDeniedException``. Message:
``User: <principal> is not authorized to perform: <action> on resource: <arn> because no
identity-based policy allows the <action> action`` (or ``with an explicit deny in an
identity-based policy``), as AWS words it.

Routes: ``GET /_lab/iam-enforce/denials`` (the most recent refusals, with the principal,
action, resource and reason), ``POST /_lab/iam-enforce/denials/reset``,
``POST /_lab/iam-enforce/evaluate`` (ask without calling: ``{"principal_arn": role or user
ARN, "action": "ec2:CreateTags", "resource": "arn:...", "context": {"key": ["v"]}}``).
"""

from __future__ import annotations

import ast
import base64
import collections
import functools
import ipaddress
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import unquote

from labext import admin, awsreq, option_checks

log = logging.getLogger("lab.iam_enforce")

OPTION_DEFAULTS: dict[str, Any] = {
    "iam_enforce": False,
    "iam_enforce_exempt_roles": ["LabAdmin"],
}
# Enough to see what a whole drill was refused; older entries fall off.
MAX_DENIALS_KEPT = 1000
PARTITION = "aws"
AWS_OWNED_SSM_DOCUMENT_PREFIXES = ("AWS-", "AWSSupport-", "AWSEC2-", "AmazonCloudWatch-",
                                   "AmazonInspector-", "AWSFleetManager-", "AmazonEKS-")

_ctx = None


# ---------------------------------------------------------------------------------------
# Options


def validate(changes: dict) -> dict:
    if "iam_enforce_exempt_roles" in changes:
        roles = changes["iam_enforce_exempt_roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise admin.AdminError(400, "iam_enforce_exempt_roles must be a list of role names, "
                                        f"got {roles!r}")
    if "iam_enforce" in changes and not isinstance(changes["iam_enforce"], bool):
        raise admin.AdminError(400, f"iam_enforce must be true or false, got {changes['iam_enforce']!r}")
    return {}


# ---------------------------------------------------------------------------------------
# Policy documents


def parse_doc(raw: Any) -> dict:
    """A policy document as IAM stores it: JSON, URL-encoded JSON, or (roles made by moto's
    CloudFormation, which stores str(dict)) a Python literal. Unreadable: an empty policy,
    which allows nothing."""
    if isinstance(raw, dict):
        return raw
    for attempt in (lambda: json.loads(raw), lambda: json.loads(unquote(raw)),
                    lambda: ast.literal_eval(raw)):
        try:
            doc = attempt()
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(doc, dict):
            return doc
    log.warning("policy document is not JSON, allows nothing: %.80r", raw)
    return {}


def _as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _condition_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@functools.lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _wildcard_regex(pattern, ignore_case).fullmatch(value) is not None


def arn_match(pattern: str, arn: str) -> bool:
    """ArnLike: each of the six colon-separated parts is matched on its own (a wildcard
    does not cross a colon before the resource part)."""
    if pattern == "*":
        return True
    p, a = pattern.split(":", 5), arn.split(":", 5)
    if len(a) != 6:
        return wildcard_match(pattern, arn)  # not an ARN ("*"): plain wildcard
    if len(p) != 6:
        return False  # fewer than six parts never names an ARN
    return all(wildcard_match(x, y) for x, y in zip(p, a, strict=True))


_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_NO_VALUE = "\x00unset-policy-variable\x00"  # matches nothing


def substitute(text: str, context: dict[str, list[str]]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in ("*", "?", "$"):
            return name
        values = context.get(name.lower())
        return values[0] if values and len(values) == 1 else _NO_VALUE

    return _VARIABLE.sub(one, text) if "${" in text else text


def _parse_date(v: str) -> datetime | None:
    try:
        if re.fullmatch(r"\d+(\.\d+)?", v):
            return datetime.fromtimestamp(float(v), tz=timezone.utc)
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _ip_in(have: str, want: str) -> bool:
    try:
        return ipaddress.ip_address(have) in ipaddress.ip_network(want, strict=False)
    except ValueError:
        return False


def _cmp(fn: Callable[[Any, Any], bool], parse: Callable[[str], Any]) -> Callable[[str, str], bool]:
    def op(have: str, want: str) -> bool:
        a, b = parse(have), parse(want)
        return a is not None and b is not None and fn(a, b)
    return op


# operator (without IfExists/qualifiers) -> (match(have, want), negated)
OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda h, w: h == w, False),
    "StringNotEquals": (lambda h, w: h == w, True),
    "StringEqualsIgnoreCase": (lambda h, w: h.lower() == w.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda h, w: h.lower() == w.lower(), True),
    "StringLike": (lambda h, w: wildcard_match(w, h), False),
    "StringNotLike": (lambda h, w: wildcard_match(w, h), True),
    "ArnEquals": (lambda h, w: arn_match(w, h), False),
    "ArnLike": (lambda h, w: arn_match(w, h), False),
    "ArnNotEquals": (lambda h, w: arn_match(w, h), True),
    "ArnNotLike": (lambda h, w: arn_match(w, h), True),
    "NumericEquals": (_cmp(lambda a, b: a == b, _num), False),
    "NumericNotEquals": (_cmp(lambda a, b: a == b, _num), True),
    "NumericLessThan": (_cmp(lambda a, b: a < b, _num), False),
    "NumericLessThanEquals": (_cmp(lambda a, b: a <= b, _num), False),
    "NumericGreaterThan": (_cmp(lambda a, b: a > b, _num), False),
    "NumericGreaterThanEquals": (_cmp(lambda a, b: a >= b, _num), False),
    "DateEquals": (_cmp(lambda a, b: a == b, _parse_date), False),
    "DateNotEquals": (_cmp(lambda a, b: a == b, _parse_date), True),
    "DateLessThan": (_cmp(lambda a, b: a < b, _parse_date), False),
    "DateLessThanEquals": (_cmp(lambda a, b: a <= b, _parse_date), False),
    "DateGreaterThan": (_cmp(lambda a, b: a > b, _parse_date), False),
    "DateGreaterThanEquals": (_cmp(lambda a, b: a >= b, _parse_date), False),
    "Bool": (lambda h, w: h.lower() == w.lower(), False),
    "BinaryEquals": (lambda h, w: h == w, False),
    "IpAddress": (_ip_in, False),
    "NotIpAddress": (_ip_in, True),
}

_warned_operators: set[str] = set()


class UnknownOperator(Exception):
    pass


def conditions_hold(conditions: dict, context: dict[str, list[str]]) -> bool:
    """All condition blocks hold. Raises UnknownOperator for an operator not modelled."""
    for raw_op, block in (conditions or {}).items():
        op, qualifier = raw_op, None
        for prefix, q in (("ForAnyValue:", "any"), ("ForAllValues:", "all")):
            if op.startswith(prefix):
                op, qualifier = op[len(prefix):], q
        if_exists = op.endswith("IfExists") and op != "IfExists"
        if if_exists:
            op = op[: -len("IfExists")]
        if not isinstance(block, dict):
            raise UnknownOperator(raw_op)
        for key, wants_raw in block.items():
            wants = [substitute(_condition_value(w), context) for w in _as_list(wants_raw)]
            have = context.get(key.lower()) or []
            if op == "Null":
                want_absent = bool(wants) and wants[0].lower() == "true"
                if (not have) != want_absent:
                    return False
                continue
            if op not in OPERATORS:
                raise UnknownOperator(raw_op)
            match, negated = OPERATORS[op]
            if not have:
                # Absent key: ForAllValues over nothing holds; IfExists holds; a negated
                # operator holds ("the key is not present, so it is not equal").
                if qualifier == "all" or if_exists or (negated and qualifier is None):
                    continue
                return False

            def ok(value: str, match=match, wants=wants, negated=negated) -> bool:
                hit = any(match(value, w) for w in wants)
                return not hit if negated else hit

            if qualifier == "all" or (qualifier is None and negated):
                holds = all(ok(v) for v in have)
            else:
                holds = any(ok(v) for v in have)
            if not holds:
                return False
    return True


@dataclass
class Check:
    """One authorization: ``action`` on ``resource`` with request/resource context."""
    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PolicySource:
    label: str   # e.g. "inline cleanroom-capture of role/CleanroomResponder"
    doc: dict


def _statement_matches(stmt: dict, check: Check, context: dict[str, list[str]]) -> bool:
    if "Action" in stmt:
        if not any(wildcard_match(str(a), check.action, ignore_case=True) for a in _as_list(stmt["Action"])):
            return False
    elif "NotAction" in stmt:
        if any(wildcard_match(str(a), check.action, ignore_case=True) for a in _as_list(stmt["NotAction"])):
            return False
    else:
        return False
    if "Resource" in stmt:
        if not any(arn_match(substitute(str(r), context), check.resource) for r in _as_list(stmt["Resource"])):
            return False
    elif "NotResource" in stmt:
        if any(arn_match(substitute(str(r), context), check.resource) for r in _as_list(stmt["NotResource"])):
            return False
    else:
        return False
    try:
        return conditions_hold(stmt.get("Condition") or {}, context)
    except UnknownOperator as e:
        op = str(e)
        if op not in _warned_operators:
            _warned_operators.add(op)
            log.warning("condition operator %s is not modelled: statements using it never match", op)
        return False


def _matching(sources: Iterable[PolicySource], effect: str, check: Check,
              context: dict[str, list[str]]) -> str | None:
    for src in sources:
        for stmt in _as_list(src.doc.get("Statement")):
            if isinstance(stmt, dict) and stmt.get("Effect") == effect \
                    and _statement_matches(stmt, check, context):
                sid = stmt.get("Sid")
                return f"{src.label}" + (f" statement {sid}" if sid else "")
    return None


@dataclass
class Decision:
    allowed: bool
    reason: str            # allowed | explicit_deny_* | no_identity_allow | no_boundary_allow | no_session_allow
    by: str | None = None  # the policy (and statement) that decided

    def phrase(self, action: str) -> str:
        return {
            "explicit_deny_identity": "with an explicit deny in an identity-based policy",
            "explicit_deny_boundary": "with an explicit deny in a permissions boundary",
            "explicit_deny_session": "with an explicit deny in a session policy",
            "no_identity_allow": f"because no identity-based policy allows the {action} action",
            "no_boundary_allow": f"because no permissions boundary allows the {action} action",
            "no_session_allow": f"because no session policy allows the {action} action",
        }.get(self.reason, "")


def decide(identity: list[PolicySource], boundary: PolicySource | None,
           session: PolicySource | None, check: Check, context: dict[str, list[str]]) -> Decision:
    ctx = dict(context)
    ctx.update(check.context)
    for kind, sources in (("identity", identity), ("boundary", [boundary] if boundary else []),
                          ("session", [session] if session else [])):
        by = _matching(sources, "Deny", check, ctx)
        if by:
            return Decision(False, f"explicit_deny_{kind}", by)
    by = _matching(identity, "Allow", check, ctx)
    if not by:
        return Decision(False, "no_identity_allow")
    if boundary and not _matching([boundary], "Allow", check, ctx):
        return Decision(False, "no_boundary_allow")
    if session and not _matching([session], "Allow", check, ctx):
        return Decision(False, "no_session_allow")
    return Decision(True, "allowed", by)


# ---------------------------------------------------------------------------------------
# Principals


_aws_managed_docs: dict[str, dict] | None = None
_aws_managed_lock = threading.Lock()


def aws_managed_policy_data(arn: str) -> dict | None:
    """An AWS managed policy (name, path, versions, Document) from moto's bundled copy. moto
    loads them into IAM only with MOTO_IAM_LOAD_MANAGED_POLICIES=true; the lab leaves that
    off (it slows every new account down)."""
    global _aws_managed_docs
    m = re.match(r"^arn:aws[\w-]*:iam::aws:policy(/.*/|/)([\w+=,.@-]+)$", arn)
    if not m:
        return None
    with _aws_managed_lock:
        if _aws_managed_docs is None:
            from moto.iam.aws_managed_policies import aws_managed_policies_data

            _aws_managed_docs = json.loads(aws_managed_policies_data)
    return _aws_managed_docs.get(m.group(2))


def aws_managed_policy_document(arn: str) -> dict | None:
    data = aws_managed_policy_data(arn)
    return data.get("Document") if data else None


def _managed_doc(policy: Any) -> dict | None:
    for version in getattr(policy, "versions", []) or []:
        if getattr(version, "is_default", False):
            return parse_doc(version.document)
    doc = getattr(policy, "document", None)
    return parse_doc(doc) if doc else None


def _policy_by_arn(backend: Any, arn: str) -> dict | None:
    policy = backend.managed_policies.get(arn)
    if policy is not None:
        return _managed_doc(policy)
    return aws_managed_policy_document(arn)


@dataclass
class Principal:
    kind: str                     # "AssumedRole" | "User"
    arn: str                      # as AWS names the caller in error messages
    account: str
    principal_arn: str            # aws:PrincipalArn: the role's or user's ARN
    name: str                     # role or user name
    userid: str
    issued: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    identity: list[PolicySource] = field(default_factory=list)
    boundary: PolicySource | None = None
    session: PolicySource | None = None
    session_name: str | None = None


def _iam_backend(account: str) -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account][PARTITION]


def _find_access_key(access_key: str) -> tuple[str, Any] | None:
    from moto.iam.models import iam_backends

    for account, by_partition in list(iam_backends.items()):
        backend = by_partition[PARTITION]
        key = backend.access_keys.get(access_key)
        if key is not None:
            return account, key
    return None


def _role_sources(backend: Any, role: Any) -> tuple[list[PolicySource], PolicySource | None]:
    who = f"role/{role.name}"
    sources = [PolicySource(f"inline {name} of {who}", parse_doc(doc))
               for name, doc in list(role.policies.items())]
    for arn, policy in list(role.managed_policies.items()):
        doc = _managed_doc(policy)
        if doc:
            sources.append(PolicySource(f"managed {arn} on {who}", doc))
    boundary = None
    if getattr(role, "permissions_boundary_arn", None):
        doc = _policy_by_arn(backend, role.permissions_boundary_arn)
        boundary = PolicySource(f"boundary {role.permissions_boundary_arn}", doc or {})
    return sources, boundary


def _user_sources(backend: Any, user: Any) -> tuple[list[PolicySource], PolicySource | None]:
    who = f"user/{user.name}"
    sources = [PolicySource(f"inline {name} of {who}", parse_doc(doc))
               for name, doc in list(user.policies.items())]
    for arn, policy in list(user.managed_policies.items()):
        doc = _managed_doc(policy)
        if doc:
            sources.append(PolicySource(f"managed {arn} on {who}", doc))
    for group in backend.get_groups_for_user(user.name):
        for name, doc in list(group.policies.items()):
            sources.append(PolicySource(f"inline {name} of group/{group.name}", parse_doc(doc)))
        for arn, policy in list(group.managed_policies.items()):
            doc = _managed_doc(policy)
            if doc:
                sources.append(PolicySource(f"managed {arn} on group/{group.name}", doc))
    boundary = None
    if getattr(user, "permissions_boundary_arn", None):
        doc = _policy_by_arn(backend, user.permissions_boundary_arn)
        boundary = PolicySource(f"boundary {user.permissions_boundary_arn}", doc or {})
    return sources, boundary


def _tags_dict(tags: Any) -> dict[str, str]:
    if isinstance(tags, dict):
        if "Key" in tags and "Value" in tags:
            return {tags["Key"]: tags["Value"]}
        return {str(k): str(v.get("Value", v) if isinstance(v, dict) else v) for k, v in tags.items()}
    out = {}
    for t in tags or []:
        if isinstance(t, dict) and "Key" in t:
            out[t["Key"]] = t.get("Value", "")
    return out


def principal_for_role(account: str, role: Any, session_name: str = "lab-evaluate") -> Principal:
    backend = _iam_backend(account)
    identity, boundary = _role_sources(backend, role)
    return Principal(
        kind="AssumedRole", account=account,
        arn=f"arn:{PARTITION}:sts::{account}:assumed-role/{role.name}/{session_name}",
        principal_arn=role.arn, name=role.name, userid=f"{role.id}:{session_name}",
        tags=_tags_dict(role.tags),
        identity=identity, boundary=boundary, session_name=session_name)


def principal_for_user(account: str, user: Any) -> Principal:
    backend = _iam_backend(account)
    identity, boundary = _user_sources(backend, user)
    tags = {}
    try:
        tags = _tags_dict(backend.list_user_tags(user.name))
    except Exception:  # older/other moto shapes: tags are optional context
        pass
    return Principal(kind="User", account=account, arn=user.arn, principal_arn=user.arn,
                     name=user.name, userid=user.id, tags=tags, identity=identity,
                     boundary=boundary)


def resolve_principal(access_key: str) -> Principal | None:
    """The IAM principal an access key belongs to; None for keys IAM never issued."""
    found = _find_access_key(access_key)
    if found is None:
        return None
    account, key = found
    backend = _iam_backend(account)
    if key.role_arn:
        from moto.sts.models import sts_backends

        session = None
        for assumed in list(sts_backends[account][PARTITION].assumed_roles):
            if assumed.access_key_id == access_key:
                session = assumed
        session_name = session.session_name if session else "session"
        try:
            role = backend.get_role_by_arn(key.role_arn)
        except Exception:
            # The role was deleted after the session began: nothing allows anything.
            name = key.role_arn.rsplit("/", 1)[-1]
            return Principal(kind="AssumedRole", account=account,
                             arn=f"arn:{PARTITION}:sts::{account}:assumed-role/{name}/{session_name}",
                             principal_arn=key.role_arn, name=name, userid=name,
                             issued=key.create_date, session_name=session_name)
        p = principal_for_role(account, role, session_name)
        p.issued = key.create_date
        if session is not None and session.policy:
            try:
                p.session = PolicySource("session policy", parse_doc(session.policy))
            except ValueError:
                p.session = PolicySource("session policy (unparsable)", {})
        return p
    if key.user_name:
        try:
            user = backend.get_user(key.user_name)
        except Exception:
            return None
        return principal_for_user(account, user)
    return None  # a temporary key of no principal (the lab's SSM agent): the account


def _iso(d: datetime) -> str:
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_context(p: Principal, region: str, source_ip: str) -> dict[str, list[str]]:
    now = datetime.now(timezone.utc)
    ctx = {
        "aws:currenttime": [_iso(now)],
        "aws:epochtime": [str(int(now.timestamp()))],
        "aws:principalarn": [p.principal_arn],
        "aws:principalaccount": [p.account],
        "aws:principaltype": [p.kind],
        "aws:userid": [p.userid],
        "aws:requestedregion": [region],
        "aws:securetransport": ["true"],
        "aws:sourceip": [source_ip],
        "aws:viaawsservice": ["false"],
    }
    if p.kind == "User":
        ctx["aws:username"] = [p.name]
    if p.issued is not None:
        ctx["aws:tokenissuetime"] = [_iso(p.issued)]
    for k, v in p.tags.items():
        ctx[f"aws:principaltag/{k}".lower()] = [v]
    return ctx


# ---------------------------------------------------------------------------------------
# Which checks a request needs (action, resource ARN, context)

EC2_ID_TYPES = {
    "i": "instance", "vol": "volume", "snap": "snapshot", "sg": "security-group",
    "eni": "network-interface", "subnet": "subnet", "vpc": "vpc", "ami": "image",
    "rtb": "route-table", "igw": "internet-gateway", "acl": "network-acl",
    "key": "key-pair", "lt": "launch-template", "eipalloc": "elastic-ip",
    "vpce": "vpc-endpoint", "nat": "natgateway", "dopt": "dhcp-options",
    "sgr": "security-group-rule", "pl": "prefix-list", "eigw": "egress-only-internet-gateway",
}
# Actions on one instance named by InstanceId.
EC2_ONE_INSTANCE = frozenset({
    "GetConsoleOutput", "GetConsoleScreenshot", "ModifyInstanceAttribute",
    "ModifyInstanceMetadataOptions", "AssociateIamInstanceProfile", "ResetInstanceAttribute",
    "GetPasswordData", "ModifyInstanceCapacityReservationAttributes",
})
EC2_MANY_INSTANCES = frozenset({
    "TerminateInstances", "StopInstances", "StartInstances", "RebootInstances",
    "MonitorInstances", "UnmonitorInstances",
})
EC2_ONE_SNAPSHOT = frozenset({
    "ModifySnapshotAttribute", "ResetSnapshotAttribute", "DeleteSnapshot", "LockSnapshot",
    "UnlockSnapshot", "ModifySnapshotTier",
})
EC2_SECURITY_GROUP_RULES = frozenset({
    "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress",
    "UpdateSecurityGroupRuleDescriptionsIngress", "UpdateSecurityGroupRuleDescriptionsEgress",
    "ModifySecurityGroupRules", "DeleteSecurityGroup",
})


def _ec2_backend(req: awsreq.AwsRequest, region: str | None = None) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[req.account][region or req.region]


def ec2_arn(req: awsreq.AwsRequest, rtype: str, rid: str, region: str | None = None) -> str:
    # Snapshots and images are named without an account (Service Authorization Reference:
    # arn:${Partition}:ec2:${Region}::snapshot/${SnapshotId}, ...::image/${ImageId}).
    account = "" if rtype in ("snapshot", "image") else req.account
    return f"arn:{PARTITION}:ec2:{region or req.region}:{account}:{rtype}/{rid}"


def ec2_arn_of_id(req: awsreq.AwsRequest, rid: str) -> str:
    rtype = EC2_ID_TYPES.get(rid.split("-", 1)[0])
    return ec2_arn(req, rtype, rid) if rtype else "*"


def _resource_tag_context(req: awsreq.AwsRequest, rid: str | None) -> dict[str, list[str]]:
    if not rid:
        return {}
    try:
        tags = dict(_ec2_backend(req).tags.get(rid, {}))
    except Exception:
        return {}
    out = {}
    for k, v in tags.items():
        out[f"aws:resourcetag/{k}".lower()] = [v]
        out[f"ec2:resourcetag/{k}".lower()] = [v]
    return out


def _tags_from(req: awsreq.AwsRequest, prefix: str) -> dict[str, str]:
    out = {}
    rx = re.compile(re.escape(prefix) + r"\.(\d+)\.Key$")
    for k, v in req.params.items():
        m = rx.match(k)
        if m:
            out[v] = req.params.get(f"{prefix}.{m.group(1)}.Value", "")
    return out


def _request_tag_context(tags: dict[str, str]) -> dict[str, list[str]]:
    if not tags:
        return {}
    ctx = {f"aws:requesttag/{k}".lower(): [v] for k, v in tags.items()}
    ctx["aws:tagkeys"] = list(tags)
    return ctx


def _pass_role_checks(req: awsreq.AwsRequest, prefix: str) -> list[Check]:
    name = req.params.get(f"{prefix}.Name")
    arn = req.params.get(f"{prefix}.Arn")
    if not name and not arn:
        return []
    backend = _iam_backend(req.account)
    try:
        profile = backend.get_instance_profile_by_arn(arn) if arn else backend.get_instance_profile(name)
    except Exception:
        return []  # moto answers the unknown profile itself
    return [Check("iam:PassRole", role.arn, {"iam:passedtoservice": ["ec2.amazonaws.com"]})
            for role in profile.roles]


def _instance_of_association(req: awsreq.AwsRequest, association_id: str | None) -> str | None:
    if not association_id:
        return None
    try:
        for instance_id, assoc in list(_ec2_backend(req).iam_instance_profile_associations.items()):
            if assoc.association_id == association_id:
                return instance_id
    except Exception:
        pass
    return None


def _volumes_of(req: awsreq.AwsRequest, instance_id: str) -> list[str]:
    try:
        instance = _ec2_backend(req).get_instance(instance_id)
        return [dev.volume_id for _path, dev in instance.get_block_device_mapping if dev.volume_id]
    except Exception:
        return []


def _instance_of_volume(req: awsreq.AwsRequest, volume_id: str) -> str | None:
    try:
        volume = _ec2_backend(req).get_volume(volume_id)
        return volume.attachment.instance.id if volume.attachment else None
    except Exception:
        return None


def _ec2_checks(req: awsreq.AwsRequest) -> list[Check]:
    op, P = req.operation, req.params
    action = f"ec2:{op}"
    checks: list[Check] = []

    def on(rtype: str, rid: str | None, extra: dict | None = None, region: str | None = None) -> None:
        arn = ec2_arn(req, rtype, rid or "*", region)
        ctx = _resource_tag_context(req, rid) if rid and region is None else {}
        ctx.update(extra or {})
        checks.append(Check(action, arn, ctx))

    if op in EC2_ONE_INSTANCE:
        on("instance", P.get("InstanceId"))
        if op == "ModifyInstanceAttribute":
            for sg in req.param_list("GroupId"):
                on("security-group", sg)
        if op == "AssociateIamInstanceProfile":
            checks.extend(_pass_role_checks(req, "IamInstanceProfile"))
        if op in ("ModifyInstanceAttribute", "ResetInstanceAttribute") and P.get("Attribute"):
            for c in checks:
                c.context.setdefault("ec2:attribute", [P["Attribute"]])
    elif op in EC2_MANY_INSTANCES:
        for iid in req.param_list("InstanceId") or [None]:
            on("instance", iid)
    elif op in ("DisassociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation"):
        on("instance", _instance_of_association(req, P.get("AssociationId")))
        if op == "ReplaceIamInstanceProfileAssociation":
            checks.extend(_pass_role_checks(req, "IamInstanceProfile"))
    elif op in ("CreateTags", "DeleteTags"):
        request_tags = _request_tag_context(_tags_from(req, "Tag"))
        for rid in req.param_list("ResourceId"):
            arn = ec2_arn_of_id(req, rid)
            ctx = _resource_tag_context(req, rid)
            ctx.update(request_tags)
            checks.append(Check(action, arn, ctx))
    elif op == "CreateSecurityGroup":
        on("security-group", None)
        if P.get("VpcId"):
            on("vpc", P["VpcId"])
    elif op in EC2_SECURITY_GROUP_RULES:
        on("security-group", P.get("GroupId"))
    elif op == "ModifyNetworkInterfaceAttribute":
        on("network-interface", P.get("NetworkInterfaceId"))
        for sg in req.param_list("SecurityGroupId"):
            on("security-group", sg)
    elif op == "CreateSnapshots":
        instance_id = P.get("InstanceSpecification.InstanceId")
        on("instance", instance_id)
        on("snapshot", None)
        for vol in _volumes_of(req, instance_id) if instance_id else []:
            on("volume", vol)
    elif op == "CreateSnapshot":
        on("volume", P.get("VolumeId"))
        on("snapshot", None)
    elif op == "CopySnapshot":
        on("snapshot", None)
        source_region = P.get("SourceRegion") or req.region
        on("snapshot", P.get("SourceSnapshotId"), region=source_region)
        source = _snapshot_anywhere(req, source_region, P.get("SourceSnapshotId"))
        checks.extend(_ebs_kms_checks(req, source, P.get("KmsKeyId"),
                                      P.get("Encrypted", "").lower() == "true"))
    elif op in EC2_ONE_SNAPSHOT:
        extra: dict[str, list[str]] = {}
        if op == "ModifySnapshotAttribute":
            extra = _snapshot_permission_context(req)
        on("snapshot", P.get("SnapshotId"), extra)
    elif op == "CreateVolume":
        on("volume", None)
        if P.get("SnapshotId"):
            on("snapshot", P["SnapshotId"])
        source = _snapshot_anywhere(req, req.region, P.get("SnapshotId"))
        checks.extend(_ebs_kms_checks(req, source, P.get("KmsKeyId"),
                                      P.get("Encrypted", "").lower() == "true"))
    elif op in ("AttachVolume", "DetachVolume"):
        instance_id = P.get("InstanceId") or _instance_of_volume(req, P.get("VolumeId", ""))
        on("instance", instance_id)
        on("volume", P.get("VolumeId"))
    elif op in ("DeleteVolume", "ModifyVolume"):
        on("volume", P.get("VolumeId"))
    elif op == "RunInstances":
        on("image", P.get("ImageId"))
        on("instance", None)
        on("volume", None)
        on("network-interface", None)
        subnets = [P["SubnetId"]] if P.get("SubnetId") else \
            [v for k, v in P.items() if re.match(r"NetworkInterface\.\d+\.SubnetId$", k)]
        for subnet in subnets or [None]:
            on("subnet", subnet)
        groups = req.param_list("SecurityGroupId") + \
            [v for k, v in P.items() if re.match(r"NetworkInterface\.\d+\.SecurityGroupId\.\d+$", k)]
        for sg in groups or [None]:
            on("security-group", sg)
        if P.get("KeyName"):
            on("key-pair", P["KeyName"])
        checks.extend(_pass_role_checks(req, "IamInstanceProfile"))
    else:
        checks.append(Check(action, "*"))
    checks.extend(_tag_on_create_checks(req))
    return checks


# What EBS asks KMS for on the caller's behalf ("Permissions to use AWS KMS keys" in the
# EBS user guide: kms:CreateGrant, kms:Decrypt, kms:DescribeKey,
# kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*), split as the lab's sharing
# extension checks key policies: the key that decrypts the source, the key of the result.
EBS_KMS_SOURCE_ACTIONS = ("kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt")
EBS_KMS_TARGET_ACTIONS = ("kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext")


def _snapshot_anywhere(req: awsreq.AwsRequest, region: str, snapshot_id: str | None) -> Any:
    """The snapshot in the caller's account, else in whichever account owns it (shared)."""
    if not snapshot_id:
        return None
    from moto.ec2.models import ec2_backends

    accounts = [req.account] + [a for a in list(ec2_backends.keys()) if a != req.account]
    for account in accounts:
        backend = dict.get(ec2_backends.get(account) or {}, region)  # never creates backends
        snap = getattr(backend, "snapshots", {}).get(snapshot_id) if backend is not None else None
        if snap is not None:
            return snap
    return None


def _customer_key_arn(req: awsreq.AwsRequest, key_ref: str | None) -> str | None:
    """The ARN of a customer managed key, or None for none / an AWS managed key (aws/ebs:
    its key policy alone lets the account use it through EC2; no identity Allow needed)."""
    if not key_ref:
        return None
    try:
        from labext.sharing import is_aws_managed, resolve_key

        key = resolve_key(key_ref, req.account, req.region)
        if key is not None:
            return None if is_aws_managed(key) else key.arn
    except Exception:  # sharing not importable: judge by the name
        pass
    if "alias/aws/" in key_ref:
        return None
    return kms_key_arn(req, key_ref)


def _ebs_kms_checks(req: awsreq.AwsRequest, source: Any, target_ref: str | None,
                    encrypt: bool) -> list[Check]:
    source_ref = getattr(source, "kms_key_id", None) if source is not None and \
        getattr(source, "encrypted", False) else None
    if not target_ref and (encrypt or source_ref):
        target_ref = source_ref  # EBS keeps the source's key (or the default key: AWS managed)
    source_arn, target_arn = _customer_key_arn(req, source_ref), _customer_key_arn(req, target_ref)
    ctx = {"kms:viaservice": [f"ec2.{req.region}.amazonaws.com"], "kms:calleraccount": [req.account]}
    out = []
    if source_arn:
        actions = EBS_KMS_SOURCE_ACTIONS + (("kms:ReEncryptFrom",) if target_arn != source_arn else ())
        out += [Check(a, source_arn, dict(ctx)) for a in actions]
    if target_arn and target_arn != source_arn:
        actions = EBS_KMS_TARGET_ACTIONS + (("kms:ReEncryptTo",) if source_ref else ())
        out += [Check(a, target_arn, dict(ctx)) for a in actions]
    return out


def _snapshot_permission_context(req: awsreq.AwsRequest) -> dict[str, list[str]]:
    P = req.params
    add_users, add_groups, remove_users, remove_groups = [], [], [], []
    if P.get("OperationType") in ("add", "remove"):
        users, groups = req.param_list("UserId"), req.param_list("UserGroup")
        if P["OperationType"] == "add":
            add_users, add_groups = users, groups
        else:
            remove_users, remove_groups = users, groups
    for k, v in P.items():
        m = re.match(r"CreateVolumePermission\.(Add|Remove)\.\d+\.(UserId|Group)$", k)
        if m:
            target = {("Add", "UserId"): add_users, ("Add", "Group"): add_groups,
                      ("Remove", "UserId"): remove_users, ("Remove", "Group"): remove_groups}
            target[(m.group(1), m.group(2))].append(v)
    ctx = {}
    for key, values in (("ec2:add/userid", add_users), ("ec2:add/group", add_groups),
                        ("ec2:remove/userid", remove_users), ("ec2:remove/group", remove_groups)):
        if values:
            ctx[key] = values
    if P.get("Attribute"):
        ctx["ec2:attribute"] = [P["Attribute"]]
    return ctx


def _tag_on_create_checks(req: awsreq.AwsRequest) -> list[Check]:
    """Tags given at creation (TagSpecification.N) need ec2:CreateTags on the new resource,
    with ec2:CreateAction = the creating action (EC2 User Guide, "Grant permission to tag
    Amazon EC2 resources during creation")."""
    specs: dict[str, tuple[str, dict[str, str]]] = {}
    for k, v in req.params.items():
        m = re.match(r"TagSpecification\.(\d+)\.ResourceType$", k)
        if m:
            specs[m.group(1)] = (v, _tags_from(req, f"TagSpecification.{m.group(1)}.Tag"))
    out = []
    for rtype, tags in specs.values():
        ctx = {"ec2:createaction": [req.operation]}
        ctx.update(_request_tag_context(tags))
        out.append(Check("ec2:CreateTags", ec2_arn(req, rtype, "*"), ctx))
    return out


def _s3_checks(req: awsreq.AwsRequest) -> list[Check]:
    op = req.operation
    h = req.headers
    bucket_arn = f"arn:{PARTITION}:s3:::{req.bucket}" if req.bucket else "*"
    versioned = bool(req.params.get("versioned"))
    ctx: dict[str, list[str]] = {"s3:authtype": ["REST-HEADER"],
                                 "s3:signatureversion": ["AWS4-HMAC-SHA256"]}
    for name in ("prefix", "delimiter", "max-keys"):
        if name in req.query:
            ctx[f"s3:{name}"] = [req.query[name][0]]
    if "versionId" in req.query:
        ctx["s3:versionid"] = [req.query["versionId"][0]]
    mode = h.get("x-amz-object-lock-mode")
    until = h.get("x-amz-object-lock-retain-until-date")
    hold = h.get("x-amz-object-lock-legal-hold")
    if mode:
        ctx["s3:object-lock-mode"] = [mode]
    if until:
        ctx["s3:object-lock-retain-until-date"] = [until]
        d = _parse_date(until)
        if d:
            ctx["s3:object-lock-remaining-retention-days"] = [
                str(max(0, int((d - datetime.now(timezone.utc)).total_seconds() // 86400)))]
    if hold:
        ctx["s3:object-lock-legal-hold"] = [hold]
    for name in ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id"):
        if name in h:
            ctx[f"s3:{name}"] = [h[name]]
    bypass = h.get("x-amz-bypass-governance-retention", "").lower() == "true"

    if req.bucket is None:
        return [Check("s3:ListAllMyBuckets", "*", ctx)]
    if op == "DeleteObjects":
        out = []
        for key, version in awsreq.s3_delete_objects(req.body or b""):
            act = "s3:DeleteObjectVersion" if version else "s3:DeleteObject"
            out.append(Check(act, f"{bucket_arn}/{key}", dict(ctx)))
            if bypass:
                out.append(Check("s3:BypassGovernanceRetention", f"{bucket_arn}/{key}", dict(ctx)))
        return out or [Check("s3:DeleteObject", f"{bucket_arn}/*", ctx)]
    if req.key is None:
        return [Check("s3:" + awsreq.S3_IAM_ACTION.get(op, op), bucket_arn, ctx)]

    obj_arn = f"{bucket_arn}/{req.key}"
    name = awsreq.S3_IAM_ACTION.get(op, op)
    versions = {"GetObject": "GetObjectVersion", "GetObjectTagging": "GetObjectVersionTagging",
                "PutObjectTagging": "PutObjectVersionTagging",
                "DeleteObjectTagging": "DeleteObjectVersionTagging",
                "GetObjectAcl": "GetObjectVersionAcl", "PutObjectAcl": "PutObjectVersionAcl",
                "DeleteObject": "DeleteObjectVersion",
                "GetObjectAttributes": "GetObjectVersionAttributes"}
    if versioned and name in versions:
        name = versions[name]
    out = [Check(f"s3:{name}", obj_arn, ctx)]
    if op in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        if mode or until:
            out.append(Check("s3:PutObjectRetention", obj_arn, ctx))
        if hold:
            out.append(Check("s3:PutObjectLegalHold", obj_arn, ctx))
    if bypass and op in ("PutObjectRetention", "DeleteObject"):
        out.append(Check("s3:BypassGovernanceRetention", obj_arn, ctx))
    if op in ("CopyObject", "UploadPartCopy"):
        source = unquote(h.get("x-amz-copy-source", "")).lstrip("/")
        src_path, _, src_query = source.partition("?")
        act = "s3:GetObjectVersion" if "versionId=" in src_query else "s3:GetObject"
        out.append(Check(act, f"arn:{PARTITION}:s3:::{src_path}", ctx))
    return out


def _iam_resource(req: awsreq.AwsRequest) -> str:
    P = req.params
    backend = _iam_backend(req.account)
    prefix = f"arn:{PARTITION}:iam::{req.account}"
    if P.get("PolicyArn"):
        return P["PolicyArn"]
    if P.get("RoleName"):
        try:
            return backend.get_role(P["RoleName"]).arn
        except Exception:
            return f"{prefix}:role{P.get('Path') or '/'}{P['RoleName']}"
    if P.get("InstanceProfileName"):
        try:
            return backend.get_instance_profile(P["InstanceProfileName"]).arn
        except Exception:
            return f"{prefix}:instance-profile{P.get('Path') or '/'}{P['InstanceProfileName']}"
    if P.get("UserName"):
        try:
            return backend.get_user(P["UserName"]).arn
        except Exception:
            return f"{prefix}:user{P.get('Path') or '/'}{P['UserName']}"
    if P.get("GroupName"):
        return f"{prefix}:group{P.get('Path') or '/'}{P['GroupName']}"
    return "*"


def kms_key_arn(req: awsreq.AwsRequest, key_ref: str | None) -> str:
    """The key ARN KMS authorizes against, from a key id, key ARN, alias name or alias ARN."""
    if not key_ref:
        return "*"
    if key_ref.startswith("arn:") and ":key/" in key_ref:
        return key_ref
    region, account = req.region, req.account
    alias = key_ref
    if key_ref.startswith("arn:") and ":alias/" in key_ref:
        parts = key_ref.split(":")
        region, account = parts[3], parts[4]
        alias = "alias/" + key_ref.split(":alias/", 1)[1]
    if alias.startswith("alias/"):
        try:
            from moto.kms.models import kms_backends

            key_id = kms_backends[account][region].any_id_to_key_id(alias)
        except Exception:
            return f"arn:{PARTITION}:kms:{region}:{account}:{alias}"
        return f"arn:{PARTITION}:kms:{region}:{account}:key/{key_id}"
    return f"arn:{PARTITION}:kms:{region}:{account}:key/{key_ref}"


def _kms_key_of_ciphertext(req: awsreq.AwsRequest, blob_b64: str | None) -> str:
    """moto's ciphertext starts with the 36-character key id (moto/kms/utils.py)."""
    if not blob_b64:
        return "*"
    try:
        raw = base64.b64decode(blob_b64)
        key_id = raw[:36].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return "*"
    return kms_key_arn(req, key_id) if re.fullmatch(r"[0-9a-f-]{36}", key_id) else "*"


def _kms_checks(req: awsreq.AwsRequest) -> list[Check]:
    op, P = req.operation, req.params
    action = f"kms:{op}"
    if op == "ReEncrypt":
        source = kms_key_arn(req, P.get("SourceKeyId")) if P.get("SourceKeyId") \
            else _kms_key_of_ciphertext(req, P.get("CiphertextBlob"))
        return [Check("kms:ReEncryptFrom", source),
                Check("kms:ReEncryptTo", kms_key_arn(req, P.get("DestinationKeyId")))]
    if op == "Decrypt" and not P.get("KeyId"):
        return [Check(action, _kms_key_of_ciphertext(req, P.get("CiphertextBlob")))]
    if op in ("CreateKey", "ListKeys", "ListAliases", "GenerateRandom", "ConnectCustomKeyStore"):
        return [Check(action, "*")]
    if op in ("CreateAlias", "UpdateAlias", "DeleteAlias"):
        alias = P.get("AliasName", "")
        out = [Check(action, f"arn:{PARTITION}:kms:{req.region}:{req.account}:{alias}")]
        if P.get("TargetKeyId"):
            out.append(Check(action, kms_key_arn(req, P["TargetKeyId"])))
        return out
    return [Check(action, kms_key_arn(req, P.get("KeyId")))]


def ssm_document_arn(req: awsreq.AwsRequest, name: str | None) -> str:
    if not name:
        return "*"
    if name.startswith("arn:"):
        return name
    account = "" if name.startswith(AWS_OWNED_SSM_DOCUMENT_PREFIXES) else req.account
    return f"arn:{PARTITION}:ssm:{req.region}:{account}:document/{name}"


def _ssm_checks(req: awsreq.AwsRequest) -> list[Check]:
    op, P = req.operation, req.params
    action = f"ssm:{op}"
    if op == "SendCommand":
        out = [Check(action, ssm_document_arn(req, P.get("DocumentName")))]
        ids = P.get("InstanceIds") or []
        for iid in ids:
            out.append(Check(action, f"arn:{PARTITION}:ec2:{req.region}:{req.account}:instance/{iid}"))
        if not ids:
            out.append(Check(action, f"arn:{PARTITION}:ec2:{req.region}:{req.account}:instance/*"))
        return out
    if op in ("CreateDocument", "DescribeDocument", "GetDocument", "UpdateDocument", "DeleteDocument",
              "UpdateDocumentDefaultVersion", "DescribeDocumentPermission",
              "ModifyDocumentPermission", "ListDocumentVersions"):
        return [Check(action, ssm_document_arn(req, P.get("Name")))]
    if op in ("GetParameter", "PutParameter", "DeleteParameter", "GetParameterHistory",
              "LabelParameterVersion"):
        name = str(P.get("Name", "")).lstrip("/")
        return [Check(action, f"arn:{PARTITION}:ssm:{req.region}:{req.account}:parameter/{name}")]
    if op in ("GetParameters", "DeleteParameters"):
        return [Check(action, f"arn:{PARTITION}:ssm:{req.region}:{req.account}:parameter/{n.lstrip('/')}")
                for n in P.get("Names") or []] or [Check(action, "*")]
    if op == "GetParametersByPath":
        path = str(P.get("Path", "")).strip("/")
        return [Check(action, f"arn:{PARTITION}:ssm:{req.region}:{req.account}:parameter/{path}")]
    return [Check(action, "*")]


def _autoscaling_checks(req: awsreq.AwsRequest) -> list[Check]:
    op, P = req.operation, req.params
    name = P.get("AutoScalingGroupName")
    if not name or op.startswith("Describe"):
        return [Check(f"autoscaling:{op}", "*")]
    try:
        from moto.autoscaling.models import autoscaling_backends

        arn = autoscaling_backends[req.account][req.region].autoscaling_groups[name].arn
    except Exception:
        arn = (f"arn:{PARTITION}:autoscaling:{req.region}:{req.account}:autoScalingGroup:*:"
               f"autoScalingGroupName/{name}")
    ctx = {}
    try:
        from moto.autoscaling.models import autoscaling_backends

        group = autoscaling_backends[req.account][req.region].autoscaling_groups[name]
        for t in group.tags or []:
            ctx[f"aws:resourcetag/{t['Key']}".lower()] = [t.get("Value", "")]
            ctx[f"autoscaling:resourcetag/{t['Key']}".lower()] = [t.get("Value", "")]
    except Exception:
        pass
    return [Check(f"autoscaling:{op}", arn, ctx)]


def _elb_checks(req: awsreq.AwsRequest) -> list[Check]:
    op, P = req.operation, req.params
    action = f"elasticloadbalancing:{op}"
    if op.startswith("Describe"):
        return [Check(action, "*")]
    if P.get("TargetGroupArn"):
        return [Check(action, P["TargetGroupArn"])]
    if P.get("LoadBalancerArn"):
        return [Check(action, P["LoadBalancerArn"])]
    if P.get("LoadBalancerName"):
        return [Check(action, f"arn:{PARTITION}:elasticloadbalancing:{req.region}:{req.account}:"
                              f"loadbalancer/{P['LoadBalancerName']}")]
    return [Check(action, "*")]


def checks_for(req: awsreq.AwsRequest) -> list[Check]:
    s = req.service
    if s == "ec2":
        return _ec2_checks(req)
    if s == "s3":
        return _s3_checks(req)
    if s == "iam":
        return [Check(f"iam:{req.operation}", _iam_resource(req))]
    if s == "sts":
        if req.operation == "GetCallerIdentity":
            return []  # always allowed, even under an explicit Deny (IAM User Guide)
        if req.operation in ("AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"):
            ctx = {}
            if req.params.get("RoleSessionName"):
                ctx["sts:rolesessionname"] = [req.params["RoleSessionName"]]
            if req.params.get("ExternalId"):
                ctx["sts:externalid"] = [req.params["ExternalId"]]
            return [Check(f"sts:{req.operation}", req.params.get("RoleArn") or "*", ctx)]
        return [Check(f"sts:{req.operation}", "*")]
    if s == "kms":
        return _kms_checks(req)
    if s == "ssm":
        return _ssm_checks(req)
    if s == "autoscaling":
        return _autoscaling_checks(req)
    if s == "elasticloadbalancing":
        return _elb_checks(req)
    if s == "ebs":
        snap = awsreq.ebs_snapshot_id(req.path)
        arn = f"arn:{PARTITION}:ec2:{req.region}::snapshot/{snap}" if snap else "*"
        return [Check(f"ebs:{req.operation}", arn)]
    return [Check(f"{s}:{req.operation}", "*")]


# ---------------------------------------------------------------------------------------
# Middleware


class Denials:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: collections.deque = collections.deque(maxlen=MAX_DENIALS_KEPT)
        self.allowed = 0
        self.denied = 0

    def add(self, entry: dict) -> None:
        with self.lock:
            self.entries.append(entry)
            self.denied += 1

    def count_allowed(self) -> None:
        with self.lock:
            self.allowed += 1

    def snapshot(self) -> dict:
        with self.lock:
            return {"allowed": self.allowed, "denied": self.denied, "denials": list(self.entries)}

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.allowed = self.denied = 0


_denials = Denials()


def denial_message(principal: Principal, check: Check, decision: Decision) -> str:
    where = "" if check.resource == "*" else (
        f' on resource: "{check.resource}"' if check.action.startswith("s3:")
        else f" on resource: {check.resource}")
    return (f"User: {principal.arn} is not authorized to perform: {check.action}{where} "
            f"{decision.phrase(check.action)}")


def _refusal(req: awsreq.AwsRequest, message: str, detail: dict) -> tuple[int, str, str]:
    if req.service == "ec2":
        # EC2 appends an encoded message (sts:DecodeAuthorizationMessage); here it is
        # base64 JSON of the decision, readable without AWS.
        encoded = base64.urlsafe_b64encode(json.dumps(detail, sort_keys=True).encode()).decode()
        return 403, "UnauthorizedOperation", (f"You are not authorized to perform this operation. "
                                              f"{message}. Encoded authorization failure message: {encoded}")
    if req.protocol == "json":
        return 400, "AccessDeniedException", message
    if req.service == "ebs":
        return 403, "AccessDeniedException", message
    return 403, "AccessDenied", message


def authorize(req: awsreq.AwsRequest, principal: Principal, source_ip: str = "127.0.0.1") -> \
        tuple[Check, Decision] | None:
    """The first check the principal is refused, or None when everything is allowed."""
    context = base_context(principal, req.region, source_ip)
    for check in checks_for(req):
        decision = decide(principal.identity, principal.boundary, principal.session, check, context)
        if not decision.allowed:
            return check, decision
    return None


def middleware(app: Callable) -> Callable:
    def iam_enforce(environ: dict, start_response: Callable):
        opts = _ctx.options if _ctx is not None else OPTION_DEFAULTS
        if not opts.get("iam_enforce"):
            return app(environ, start_response)
        req = awsreq.parse(environ)
        if req is None or req.account_from_header:
            return app(environ, start_response)
        principal = resolve_principal(req.access_key)
        if principal is None:
            return app(environ, start_response)
        if principal.kind == "AssumedRole" and principal.name in (opts.get("iam_enforce_exempt_roles") or []):
            return app(environ, start_response)
        refused = authorize(req, principal, environ.get("REMOTE_ADDR", "127.0.0.1"))
        if refused is None:
            _denials.count_allowed()
            return app(environ, start_response)
        check, decision = refused
        message = denial_message(principal, check, decision)
        detail = {"principal": principal.arn, "action": check.action, "resource": check.resource,
                  "reason": decision.reason, "decided_by": decision.by,
                  "operation": f"{req.service}:{req.operation}", "dry_run": req.dry_run,
                  "account": req.account, "region": req.region}
        _denials.add(dict(detail, time=time.time(), message=message))
        status, code, text = _refusal(req, message, detail)
        return awsreq.send_error(environ, start_response, req, status, code, text)

    return iam_enforce


# ---------------------------------------------------------------------------------------
# Routes


@admin.route("GET", r"/_lab/iam-enforce/denials")
def _get_denials(req: admin.AdminRequest):
    return 200, _denials.snapshot()


@admin.route("POST", r"/_lab/iam-enforce/denials/reset")
def _reset_denials(req: admin.AdminRequest):
    _denials.clear()
    return 200, {"ok": True}


@admin.route("POST", r"/_lab/iam-enforce/evaluate")
def _evaluate(req: admin.AdminRequest):
    body = req.json()
    if not isinstance(body, dict) or not {"principal_arn", "action"} <= set(body):
        raise admin.AdminError(400, 'body: {"principal_arn": role or user ARN, "action": "svc:Name", '
                                    '"resource": "arn:..." (default "*"), "context": {key: [values]}}')
    arn = str(body["principal_arn"])
    m = re.match(r"^arn:aws[\w-]*:iam::(\d{12}):(role|user)/(?:.*/)?([\w+=,.@-]+)$", arn)
    if not m:
        raise admin.AdminError(400, f"principal_arn must be an IAM role or user ARN, got {arn!r}")
    account, kind, name = m.groups()
    backend = _iam_backend(account)
    try:
        principal = (principal_for_role(account, backend.get_role(name)) if kind == "role"
                     else principal_for_user(account, backend.get_user(name)))
    except admin.AdminError:
        raise
    except Exception:
        raise admin.AdminError(404, f"no {kind} {name} in account {account}") from None
    context = base_context(principal, req.region, "127.0.0.1")
    extra = body.get("context") or {}
    if not isinstance(extra, dict):
        raise admin.AdminError(400, "context must be an object of key -> [values]")
    check = Check(str(body["action"]), str(body.get("resource") or "*"),
                  {k.lower(): [str(x) for x in _as_list(v)] for k, v in extra.items()})
    decision = decide(principal.identity, principal.boundary, principal.session, check, context)
    return 200, {"allowed": decision.allowed, "reason": decision.reason, "decided_by": decision.by,
                 "message": None if decision.allowed else denial_message(principal, check, decision)}


def reset() -> None:
    _denials.clear()


def install(ctx) -> None:
    global _ctx
    from labext import LabExtensionError

    try:
        option_checks.validate_preset(ctx.options, list(OPTION_DEFAULTS), validate)
    except ValueError as e:
        raise LabExtensionError(f"iam_enforce: {e}") from None
    for key, default in OPTION_DEFAULTS.items():
        ctx.options.setdefault(key, default)
    option_checks.add_validator(validate)
    admin.add_middleware(middleware)
    _ctx = ctx
