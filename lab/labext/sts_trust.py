"""sts_trust: sts:AssumeRole honours the role's existence and its trust policy.

Stock moto 5.2.5 (moto/sts/models.py STSBackend.assume_role, documented there: "the role
does not need to exist") hands out credentials for any role ARN. AWS answers 403
AccessDenied "User: <caller> is not authorized to perform: sts:AssumeRole on resource:
<role arn>" when the role does not exist or its trust policy does not admit the caller.
cleanroom's preflight must be able to report "role cannot be assumed", so the lab does the same.

What is evaluated (the trust policy only; moto enforces no identity policies):
* Statements with Effect Allow/Deny, Action/NotAction matching sts:AssumeRole (wildcards).
* Principal "*" or {"AWS": ...} entries: "*", an account id, arn:aws:iam::ACCT:root (any
  principal of that account), arn:aws:iam::ACCT:role/[path/]NAME (sessions of that role),
  arn:aws:iam::ACCT:user/[path/]NAME, or an assumed-role session ARN.
  Service/Federated principals never match an AssumeRole caller. NotPrincipal is honoured.
* Conditions: String(Not)Equals/Like, Arn(Not)Equals/Like, Bool, Null, with ...IfExists, on
  sts:ExternalId, sts:RoleSessionName, aws:PrincipalAccount, aws:PrincipalArn,
  aws:PrincipalType, aws:SourceIdentity (absent). An unknown operator makes the statement not
  apply (logged).
* An explicit Deny wins; no Allow means AccessDenied.
* DurationSeconds above the role's MaxSessionDuration: ValidationError, as AWS.

The caller: the request's access key, looked up as an assumed-role session (its role),
an IAM user's key, or else the root of the request's account (keys moto never issued,
such as "testing", belong to the default account 123456789012).
Credentials returned are moto's own: their access key lives in the role's account, so
calls made with them act in that account.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from typing import Any
from urllib.parse import unquote

from moto.core.exceptions import _RESTError
from moto.iam.models import iam_backends
from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse

log = logging.getLogger("lab.sts_trust")

ROLE_ARN_RE = re.compile(r"^arn:(aws[\w-]*):iam::(\d{12}):role/(?:(.*)/)?([\w+=,.@-]+)$")


class AccessDenied(_RESTError):
    code = 403

    def __init__(self, message: str):
        super().__init__("AccessDenied", message)


class Caller:
    def __init__(self, account: str, arn: str, kind: str, role_arn: str | None = None):
        self.account = account
        self.arn = arn          # as AWS would name it in an error message
        self.kind = kind        # "AssumedRole" | "User" | "Account"
        self.role_arn = role_arn  # for AssumedRole: the IAM role ARN


def identify_caller(response: TokenResponse) -> Caller:
    account = response.current_account
    key = response.get_access_key()
    for acct in (account,):
        sts = sts_backends[acct]["aws"]
        assumed = sts.get_assumed_role_from_access_key(key)
        if assumed is not None:
            return Caller(acct, assumed.arn, "AssumedRole", role_arn=assumed.role_arn)
        user = iam_backends[acct]["aws"].get_user_from_access_key_id(key)
        if user is not None:
            return Caller(acct, user.arn, "User")
    return Caller(account, f"arn:aws:iam::{account}:root", "Account")


def _as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _role_name_of(arn: str) -> tuple[str, str] | None:
    m = ROLE_ARN_RE.match(arn)
    return (m.group(2), m.group(4)) if m else None


def principal_matches(entry: str, caller: Caller) -> bool:
    if entry == "*":
        return True
    if re.fullmatch(r"\d{12}", entry):
        return caller.account == entry
    if entry == f"arn:aws:iam::{caller.account}:root":
        return True
    if entry == caller.arn:
        return True
    if caller.kind == "AssumedRole" and caller.role_arn:
        # A role ARN in a trust policy admits every session of that role. Compare account
        # and name: the session ARN carries no path.
        want, have = _role_name_of(entry), _role_name_of(caller.role_arn)
        if want and have and want == have:
            return True
    return False


def _principal_block_matches(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    return any(principal_matches(str(e), caller) for e in _as_list(principal.get("AWS")))


def _action_matches(stmt: dict) -> bool:
    target = "sts:assumerole"
    if "Action" in stmt:
        return any(fnmatch.fnmatchcase(target, str(a).lower()) for a in _as_list(stmt["Action"]))
    if "NotAction" in stmt:
        return not any(fnmatch.fnmatchcase(target, str(a).lower()) for a in _as_list(stmt["NotAction"]))
    return False


def _cond_value_match(op: str, have: str, want: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return have == want
    if op == "StringEqualsIgnoreCase":
        return have.lower() == want.lower()
    if op in ("StringLike", "ArnLike"):
        return fnmatch.fnmatchcase(have, want)
    if op == "Bool":
        return have.lower() == str(want).lower()
    raise KeyError(op)


def conditions_hold(conditions: dict, context: dict[str, str | None]) -> bool:
    for raw_op, block in (conditions or {}).items():
        op = raw_op
        if_exists = op.endswith("IfExists")
        if if_exists:
            op = op[: -len("IfExists")]
        negated = op.startswith(("StringNot", "ArnNot"))
        base = op.replace("StringNot", "String").replace("ArnNot", "Arn")
        for key, wants in block.items():
            have = context.get(key.lower())
            wants = [str(w) for w in _as_list(wants)]
            if op == "Null":
                # Null: "true" means the key must be absent.
                if (have is None) != (wants[0].lower() == "true"):
                    return False
                continue
            if have is None:
                if if_exists or negated:
                    continue
                return False
            try:
                hit = any(_cond_value_match(base, have, w) for w in wants)
            except KeyError:
                log.warning("trust policy condition operator %s not modelled: statement "
                            "does not apply", raw_op)
                return False
            if hit == negated:
                return False
    return True


def evaluate_trust(doc: dict, caller: Caller, context: dict[str, str | None]) -> bool:
    allowed = False
    for stmt in _as_list(doc.get("Statement")):
        if not isinstance(stmt, dict) or not _action_matches(stmt):
            continue
        if "Principal" in stmt:
            if not _principal_block_matches(stmt["Principal"], caller):
                continue
        elif "NotPrincipal" in stmt:
            if _principal_block_matches(stmt["NotPrincipal"], caller):
                continue
        else:
            continue
        if not conditions_hold(stmt.get("Condition") or {}, context):
            continue
        if stmt.get("Effect") == "Deny":
            return False
        if stmt.get("Effect") == "Allow":
            allowed = True
    return allowed


def _parse_doc(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return json.loads(unquote(raw))


def check_assume_role(response: TokenResponse) -> None:
    role_arn = response._get_param("RoleArn") or ""
    caller = identify_caller(response)
    denied = AccessDenied(f"User: {caller.arn} is not authorized to perform: sts:AssumeRole "
                          f"on resource: {role_arn}")
    parsed = ROLE_ARN_RE.match(role_arn)
    if not parsed:
        raise denied
    account = parsed.group(2)
    try:
        role = iam_backends[account]["aws"].get_role_by_arn(role_arn)
    except Exception:
        # A role ARN with no path matches a role that has one only if AWS would: it does
        # not (the ARN includes the path), so a miss is a miss.
        raise denied from None
    context = {
        "sts:externalid": response._get_param("ExternalId"),
        "sts:rolesessionname": response._get_param("RoleSessionName"),
        "aws:principalaccount": caller.account,
        "aws:principalarn": caller.role_arn if caller.kind == "AssumedRole" else caller.arn,
        "aws:principaltype": caller.kind,
    }
    if not evaluate_trust(_parse_doc(role.assume_role_policy_document), caller, context):
        raise denied
    duration = response._get_int_param("DurationSeconds", 3600)
    max_duration = int(getattr(role, "max_session_duration", None) or 3600)
    if duration > max_duration:
        from moto.sts.exceptions import STSValidationError

        raise STSValidationError(
            f"The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")


_original_assume_role = TokenResponse.assume_role


def _assume_role(self: TokenResponse):
    # Patched: stock moto issues credentials for any ARN. Check first, as AWS does.
    try:
        check_assume_role(self)
    except AccessDenied as e:
        return e.description, {"status": e.code}
    return _original_assume_role(self)


def install(ctx) -> None:
    TokenResponse.assume_role = _assume_role
