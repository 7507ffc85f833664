"""cfn_roles: create an IAM role from one of cleanroom's CloudFormation templates.

``POST /_lab/accounts/{account}/roles-from-template`` (region ``?region=``, default
us-east-1) with

    {"template": "cloudformation/member-account.yaml",   # path under the repository
     "role": "ResponderRole",                            # logical id of an AWS::IAM::Role
     "parameters": {"ResponderPrincipalArn": "...", ...},
     "resources": {"EvidenceKey": {"Arn": "arn:aws:kms:..."}, "AnalysisSubnet": "subnet-..."},
     "stack_name": "cleanroom"}                          # optional, for AWS::StackName

creates (or replaces) in that account: the role with its trust policy, MaxSessionDuration,
Path, PermissionsBoundary, inline ``Policies`` and ``ManagedPolicyArns``; every
``AWS::IAM::ManagedPolicy`` and ``AWS::IAM::Policy`` of the template attached to it
(``Roles: [!Ref Role]``, or a ``!Ref`` in ManagedPolicyArns); every
``AWS::IAM::InstanceProfile`` that lists it. AWS managed policies
(``arn:aws:iam::aws:policy/...``) are added to the account from moto's bundled copy.

Intrinsics resolved: Ref (parameters, pseudo parameters AWS::AccountId, AWS::Region,
AWS::Partition, AWS::URLSuffix, AWS::StackName, AWS::NoValue, and resources), Fn::Sub
(both forms), Fn::GetAtt, Fn::Join, Fn::Select, Fn::Split, Fn::GetAZs, Fn::FindInMap,
Fn::Base64. A resource's Ref/attributes come from ``resources`` when given (a string is
its Ref; an object maps attribute names, with "Ref", to values), else are derived where
the template fixes them: IAM roles and instance profiles with a name, managed policies,
S3 buckets with a BucketName, a KMS key whose id or ARN is given. Anything else (Fn::If,
conditions, Fn::ImportValue, a subnet's id, a key ARN not given) is a 400 that names every
construct it could not resolve and where it is.

Answer: 201 (200 when the role existed and was replaced) with the role ARN and the
policy documents exactly as created.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import yaml

from labext import admin
from labext.iam_enforce import _managed_doc, aws_managed_policy_data

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
DEFAULT_STACK_NAME = "cleanroom-lab"
ROLE_TYPE = "AWS::IAM::Role"
NO_VALUE = object()


class CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (!Ref, !Sub, !GetAtt, ...) into
    their long JSON forms ({"Ref": ...}, {"Fn::Sub": ...})."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


def load_template(text: str) -> dict:
    doc = yaml.load(text, Loader=CfnLoader)  # noqa: S506 (CfnLoader is a SafeLoader)
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise ValueError("not a CloudFormation template (no Resources mapping)")
    return doc


class Resolver:
    def __init__(self, template: dict, parameters: dict[str, Any], account: str, region: str,
                 stack_name: str, given: dict[str, Any]):
        self.template = template
        self.parameters = parameters
        self.account, self.region, self.stack_name = account, region, stack_name
        self.given = given
        self.errors: list[str] = []
        self.managed_policies_needed: list[str] = []  # logical ids referenced by Ref

    # -- physical ids -------------------------------------------------------------------
    def _resource(self, logical: str) -> dict | None:
        res = self.template["Resources"].get(logical)
        return res if isinstance(res, dict) else None

    def _prop(self, logical: str, name: str, where: str) -> Any:
        res = self._resource(logical) or {}
        value = (res.get("Properties") or {}).get(name)
        return None if value is None else self.resolve(value, f"{where} -> Resources.{logical}.Properties.{name}")

    def physical(self, logical: str, attr: str, construct: str, where: str) -> Any:
        given = self.given.get(logical)
        if isinstance(given, dict) and attr in given:
            return given[attr]
        if isinstance(given, str) and attr == "Ref":
            return given
        res = self._resource(logical)
        if res is None:
            return self._fail(construct, where, f"the template has no resource {logical}")
        rtype = res.get("Type", "?")
        derived = self._derive(logical, rtype, attr, given, where)
        if derived is not None:
            return derived
        hint = json.dumps({logical: {attr: "..."}})
        return self._fail(construct, where,
                          f"{rtype} {logical} does not exist in the lab and its {attr} is not fixed by "
                          f"the template; pass it in \"resources\": {hint}")

    def _derive(self, logical: str, rtype: str, attr: str, given: Any, where: str) -> Any:
        iam = f"arn:{PARTITION}:iam::{self.account}"
        if rtype == ROLE_TYPE:
            name = self._prop(logical, "RoleName", where)
            path = self._prop(logical, "Path", where) or "/"
            if name:
                return {"Ref": name, "Arn": f"{iam}:role{path}{name}"}.get(attr)
        elif rtype == "AWS::IAM::InstanceProfile":
            name = self._prop(logical, "InstanceProfileName", where)
            path = self._prop(logical, "Path", where) or "/"
            if name:
                return {"Ref": name, "Arn": f"{iam}:instance-profile{path}{name}"}.get(attr)
        elif rtype == "AWS::IAM::ManagedPolicy":
            if attr in ("Ref", "PolicyArn"):
                if logical not in self.managed_policies_needed:
                    self.managed_policies_needed.append(logical)
                name = self._prop(logical, "ManagedPolicyName", where) or f"{self.stack_name}-{logical}"
                path = self._prop(logical, "Path", where) or "/"
                return f"{iam}:policy{path}{name}"
        elif rtype == "AWS::S3::Bucket":
            name = self._prop(logical, "BucketName", where)
            if name:
                return {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}",
                        "DomainName": f"{name}.s3.{URL_SUFFIX}",
                        "RegionalDomainName": f"{name}.s3.{self.region}.{URL_SUFFIX}"}.get(attr)
        elif rtype == "AWS::KMS::Key" and isinstance(given, (str, dict)):
            ref = given if isinstance(given, str) else given.get("Ref") or given.get("KeyId")
            arn = given.get("Arn") if isinstance(given, dict) else None
            if ref and ref.startswith("arn:"):
                arn, ref = ref, ref.rsplit("/", 1)[-1]
            if ref and not arn:
                arn = f"arn:{PARTITION}:kms:{self.region}:{self.account}:key/{ref}"
            if arn and not ref:
                ref = arn.rsplit("/", 1)[-1]
            return {"Ref": ref, "KeyId": ref, "Arn": arn}.get(attr)
        return None

    # -- intrinsics ---------------------------------------------------------------------
    def _fail(self, construct: str, where: str, why: str) -> str:
        self.errors.append(f"cannot resolve {construct} at {where}: {why}")
        return f"<unresolved {construct}>"

    def ref(self, name: str, where: str) -> Any:
        pseudo = {"AWS::AccountId": self.account, "AWS::Region": self.region,
                  "AWS::Partition": PARTITION, "AWS::URLSuffix": URL_SUFFIX,
                  "AWS::StackName": self.stack_name,
                  "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{self.account}:"
                                  f"stack/{self.stack_name}/lab"}
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name.startswith("AWS::"):
            return self._fail(f"Ref {name}", where, "pseudo parameter not modelled")
        if name in self.parameters:
            return self.parameters[name]
        return self.physical(name, "Ref", f"Ref {name}", where)

    def sub(self, arg: Any, where: str) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], {k: self.resolve(v, where) for k, v in arg[1].items()}
        elif isinstance(arg, str):
            text, variables = arg, {}
        else:
            return self._fail("Fn::Sub", where, f"unexpected argument {arg!r}")

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                value = self.physical(logical, attr, f"Fn::Sub ${{{name}}}", where)
            else:
                value = self.ref(name, where)
            if isinstance(value, list):
                return self._fail(f"Fn::Sub ${{{name}}}", where, "a list cannot be substituted")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", one, str(text))

    def resolve(self, node: Any, where: str) -> Any:
        if isinstance(node, list):
            out = [self.resolve(x, f"{where}[{i}]") for i, x in enumerate(node)]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(str(arg), where)
            if key.startswith("Fn::") or key == "Condition":
                return self.intrinsic(key, arg, where)
        out = {}
        for k, v in node.items():
            value = self.resolve(v, f"{where}.{k}")
            if value is not NO_VALUE:
                out[k] = value
        return out

    def intrinsic(self, fn: str, arg: Any, where: str) -> Any:
        if fn == "Fn::Sub":
            return self.sub(arg, where)
        if fn == "Fn::GetAtt":
            if not (isinstance(arg, list) and len(arg) == 2):
                return self._fail(fn, where, f"unexpected argument {arg!r}")
            logical, attr = str(arg[0]), self.resolve(arg[1], where)
            return self.physical(logical, str(attr), f"Fn::GetAtt {logical}.{attr}", where)
        if fn == "Fn::Join":
            delim, items = arg
            items = self.resolve(items, where)
            return str(delim).join(str(x) for x in (items if isinstance(items, list) else [items]))
        if fn == "Fn::Select":
            index, items = self.resolve(arg[0], where), self.resolve(arg[1], where)
            try:
                return items[int(index)]
            except (IndexError, ValueError, TypeError):
                return self._fail(fn, where, f"index {index!r} out of {items!r}")
        if fn == "Fn::Split":
            delim, text = arg
            return str(self.resolve(text, where)).split(str(delim))
        if fn == "Fn::GetAZs":
            region = self.resolve(arg, where) or self.region
            return [f"{region}{z}" for z in "abc"]
        if fn == "Fn::FindInMap":
            names = [self.resolve(x, where) for x in arg]
            try:
                return self.template["Mappings"][names[0]][names[1]][names[2]]
            except (KeyError, TypeError, IndexError):
                return self._fail(fn, where, f"no mapping {names!r}")
        if fn == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg, where)).encode()).decode()
        return self._fail(fn, where, "not modelled by the lab (conditions, imports, Cidr, ...)")


def _parameters(template: dict, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    declared = template.get("Parameters") or {}
    errors = [f"unknown parameter {name!r} (the template declares {sorted(declared)})"
              for name in given if name not in declared]
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in given:
            raw = given[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            errors.append(f"parameter {name!r} is required (no Default)")
            continue
        ptype = spec.get("Type", "String")
        if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
            value: Any = raw if isinstance(raw, list) else [x.strip() for x in str(raw).split(",")]
            value = [str(x) for x in value]
        else:
            value = str(raw).lower() if isinstance(raw, bool) else str(raw)
        for item in value if isinstance(value, list) else [value]:
            pattern = spec.get("AllowedPattern")
            if pattern and not re.fullmatch(pattern, item):
                errors.append(f"parameter {name!r} value {item!r} does not match AllowedPattern {pattern}")
            allowed = spec.get("AllowedValues")
            if allowed and item not in [str(a) for a in allowed]:
                errors.append(f"parameter {name!r} value {item!r} not in AllowedValues {allowed}")
            if ptype == "Number":
                try:
                    number = float(item)
                except ValueError:
                    errors.append(f"parameter {name!r} value {item!r} is not a Number")
                    continue
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    errors.append(f"parameter {name!r} value {item!r} below MinValue {spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    errors.append(f"parameter {name!r} value {item!r} above MaxValue {spec['MaxValue']}")
        values[name] = value
    return values, errors


def _refers_to(roles: Any, role_logical: str) -> bool:
    return any(isinstance(r, dict) and r.get("Ref") == role_logical for r in roles or [])


def _template_path(raw: Any) -> Path:
    if not isinstance(raw, str) or not raw:
        raise admin.AdminError(400, '"template" must be a path to a template under the repository')
    path = Path(raw)
    path = (path if path.is_absolute() else REPO_ROOT / path).resolve()
    if REPO_ROOT not in path.parents:
        raise admin.AdminError(400, f"template {raw!r} is outside the repository ({REPO_ROOT})")
    if not path.is_file():
        raise admin.AdminError(404, f"template {raw!r} not found under {REPO_ROOT}")
    return path


def _ensure_aws_managed(backend: Any, arn: str) -> bool:
    if arn in backend.managed_policies:
        return True
    data = aws_managed_policy_data(arn)
    if data is None:
        return False
    from moto.iam.models import AWSManagedPolicy

    name = arn.rsplit("/", 1)[-1]
    backend.managed_policies[arn] = AWSManagedPolicy.from_data(name, backend.account_id,
                                                               "us-east-1", data)
    return True


def _put_managed_policy(backend: Any, name: str, path: str, doc: dict, description: str) -> str:
    arn = f"arn:{PARTITION}:iam::{backend.account_id}:policy{path}{name}"
    text = json.dumps(doc)
    if arn in backend.managed_policies:
        policy = backend.managed_policies[arn]
        for version in list(policy.versions):
            if not version.is_default:
                backend.delete_policy_version(arn, version.version_id)
        backend.create_policy_version(arn, text, set_as_default=True)
        for version in list(policy.versions):
            if not version.is_default:
                backend.delete_policy_version(arn, version.version_id)
    else:
        backend.create_policy(description=description, path=path, policy_document=text,
                              policy_name=name, tags=[])
    return arn


def create_role_from_template(template: dict, role_logical: str, account: str, region: str,
                              parameters: dict[str, Any], given: dict[str, Any],
                              stack_name: str) -> tuple[int, dict]:
    from moto.iam.models import iam_backends

    resources = template["Resources"]
    role_res = resources.get(role_logical)
    if not isinstance(role_res, dict) or role_res.get("Type") != ROLE_TYPE:
        roles = sorted(k for k, v in resources.items() if isinstance(v, dict) and v.get("Type") == ROLE_TYPE)
        raise admin.AdminError(400, f"{role_logical!r} is not an {ROLE_TYPE} of the template; its roles: {roles}")
    values, errors = _parameters(template, parameters)
    if errors:
        raise admin.AdminError(400, "; ".join(errors))
    r = Resolver(template, values, account, region, stack_name, given)
    props = r.resolve(role_res.get("Properties") or {}, f"Resources.{role_logical}.Properties")

    attached_policies = []   # (logical, resolved properties) of AWS::IAM::ManagedPolicy
    extra_inline = []        # resolved properties of AWS::IAM::Policy
    profiles = []            # resolved properties of AWS::IAM::InstanceProfile
    for logical, res in resources.items():
        if not isinstance(res, dict):
            continue
        raw_props = res.get("Properties") or {}
        where = f"Resources.{logical}.Properties"
        if res.get("Type") == "AWS::IAM::ManagedPolicy" and _refers_to(raw_props.get("Roles"), role_logical):
            attached_policies.append((logical, r.resolve(raw_props, where)))
        elif res.get("Type") == "AWS::IAM::Policy" and _refers_to(raw_props.get("Roles"), role_logical):
            extra_inline.append(r.resolve(raw_props, where))
        elif res.get("Type") == "AWS::IAM::InstanceProfile" and _refers_to(raw_props.get("Roles"), role_logical):
            profiles.append((logical, r.resolve(raw_props, where)))
    for logical in r.managed_policies_needed:
        if logical not in [x[0] for x in attached_policies]:
            raw = resources[logical].get("Properties") or {}
            attached_policies.append((logical, r.resolve(raw, f"Resources.{logical}.Properties")))
    if r.errors:
        raise admin.AdminError(400, "; ".join(r.errors))

    backend = iam_backends[account][PARTITION]
    name = props.get("RoleName") or f"{stack_name}-{role_logical}"[:64]
    path = props.get("Path") or "/"
    trust = props.get("AssumeRolePolicyDocument")
    if not isinstance(trust, dict):
        raise admin.AdminError(400, f"{role_logical} has no AssumeRolePolicyDocument object")
    max_session = str(props.get("MaxSessionDuration") or 3600)
    try:
        role = backend.get_role(name)
        created = False
    except Exception:
        role = None
        created = True
    try:
        if role is None:
            role = backend.create_role(
                role_name=name, assume_role_policy_document=json.dumps(trust), path=path,
                permissions_boundary=props.get("PermissionsBoundary"),
                description=props.get("Description") or "", tags=props.get("Tags") or [],
                max_session_duration=max_session, linked_service=None)
        else:
            backend.update_assume_role_policy(name, json.dumps(trust))
            for policy_name in list(role.policies):
                backend.delete_role_policy(name, policy_name)
            for arn in list(role.managed_policies):
                backend.detach_role_policy(arn, name)
            role.max_session_duration = max_session
            role.description = props.get("Description") or ""
            role.permissions_boundary_arn = props.get("PermissionsBoundary")
        inline: dict[str, Any] = {}
        for policy in list(props.get("Policies") or []) + extra_inline:
            backend.put_role_policy(name, policy["PolicyName"], json.dumps(policy["PolicyDocument"]))
            inline[policy["PolicyName"]] = policy["PolicyDocument"]
        managed: list[dict[str, Any]] = []
        for logical, mp in attached_policies:
            mp_name = mp.get("ManagedPolicyName") or f"{stack_name}-{logical}"
            arn = _put_managed_policy(backend, mp_name, mp.get("Path") or "/", mp["PolicyDocument"],
                                      mp.get("Description") or "")
            if arn not in (props.get("ManagedPolicyArns") or []):
                backend.attach_role_policy(arn, name)
                managed.append({"arn": arn, "document": mp["PolicyDocument"]})
        for arn in props.get("ManagedPolicyArns") or []:
            if arn.startswith(f"arn:{PARTITION}:iam::aws:policy/") and not _ensure_aws_managed(backend, arn):
                raise admin.AdminError(400, f"AWS managed policy {arn} is unknown to the lab (moto's bundled list)")
            if arn not in backend.managed_policies:
                raise admin.AdminError(400, f"managed policy {arn} does not exist in account {account}")
            backend.attach_role_policy(arn, name)
            managed.append({"arn": arn, "document": _managed_doc(backend.managed_policies[arn])})
        made_profiles = []
        for logical, ip in profiles:
            ip_name = ip.get("InstanceProfileName") or f"{stack_name}-{logical}"
            try:
                profile = backend.get_instance_profile(ip_name)
            except Exception:
                profile = backend.create_instance_profile(ip_name, ip.get("Path") or "/", [name])
            if all(getattr(x, "name", None) != name for x in profile.roles):
                profile.roles[:] = [role]
            made_profiles.append({"name": profile.name, "arn": profile.arn})
    except admin.AdminError:
        raise
    except Exception as e:  # moto's own validation (policy grammar, limits): say which
        raise admin.AdminError(400, f"IAM refused the role's policies: {type(e).__name__}: {e}") from None
    return (201 if created else 200), {
        "arn": role.arn, "role_name": name, "account": account, "created": created,
        "max_session_duration": int(max_session), "trust_policy": trust,
        "inline_policies": inline, "managed_policies": managed, "instance_profiles": made_profiles,
    }


@admin.route("POST", r"/_lab/accounts/(?P<account>\d{12})/roles-from-template")
def _roles_from_template(req: admin.AdminRequest):
    body = req.json()
    if not isinstance(body, dict):
        raise admin.AdminError(400, 'body: {"template": path, "role": logical id, "parameters": {...}, '
                                    '"resources": {...}}')
    unknown = sorted(set(body) - {"template", "role", "parameters", "resources", "stack_name"})
    if unknown:
        raise admin.AdminError(400, f"unknown body keys {unknown}")
    path = _template_path(body.get("template"))
    try:
        template = load_template(path.read_text())
    except (yaml.YAMLError, ValueError) as e:
        raise admin.AdminError(400, f"template {body['template']!r}: {e}") from None
    role = body.get("role")
    parameters = body.get("parameters") or {}
    given = body.get("resources") or {}
    if not isinstance(role, str) or not isinstance(parameters, dict) or not isinstance(given, dict):
        raise admin.AdminError(400, '"role" must be a string; "parameters" and "resources" objects')
    stack_name = str(body.get("stack_name") or DEFAULT_STACK_NAME)
    return create_role_from_template(template, role, req.params["account"], req.region,
                                     parameters, given, stack_name)


def install(ctx) -> None:
    """Routes only; nothing in moto is patched."""
