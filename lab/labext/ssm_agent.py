"""An SSM agent simulator: Run Command really runs shell steps, in a sandbox, inside the lab.

Stock moto 5.2.5 runs nothing (every command is Success with empty output), sends a command
to every instance whatever InstanceIds says, writes nothing to S3, and has no
ListCommandInvocations, CancelCommand or DescribeInstanceInformation. Here:

* ``POST /_lab/ssm/managed-instances`` {"instance_id": "i-..."} (account/region as for every
  admin route) makes an EC2 instance a managed instance (PingStatus Online, PlatformType
  Linux); ``GET`` lists them; ``DELETE /_lab/ssm/managed-instances/{id}`` deregisters;
  ``PATCH`` the same path with {"ping_status": "ConnectionLost"} takes it offline (commands
  then wait for delivery and end DeliveryTimedOut after TimeoutSeconds).
  ``GET /_lab/ssm/commands/{command_id}`` shows the agent's view (sandbox paths, exit codes,
  S3 upload errors) for debugging.
  ``POST /_lab/ssm/step-failures`` {"document": NAME, "exit_code": N, "stderr": TEXT,
  "step": NAME?, "times": N|null} makes the next matching step of that document (in the
  account and region) print TEXT on stderr and exit N instead of running its script: a
  collection document failing on the instance, on demand. With {"delay_seconds": S} and
  no exit_code the step runs its script after S seconds instead (a document that takes
  long: cleanroom's command timeout). ``GET`` lists, ``DELETE`` clears.
* DescribeInstanceInformation lists managed instances (Filters / InstanceInformationFilterList
  on InstanceIds, PingStatus, PlatformTypes, ResourceType; MaxResults 5..50, default 10;
  NextToken).
* SendCommand resolves the document (AWS-RunShellScript is built in, schema 1.2; any
  registered Command document of schema 1.2 or 2.x with aws:runShellScript steps),
  validates and substitutes parameters (``{{ name }}`` with the document's defaults, a
  StringList placeholder standing alone expands to several lines, ``{{ssm:/param}}`` reads
  Parameter Store), targets only the named instances (InstanceIds, or Targets on InstanceIds /
  tag:K / tag-key; an instance that is not a managed, running instance of the account is
  ``InvalidInstanceId``), then runs each invocation asynchronously: Pending -> InProgress ->
  Success | Failed | TimedOut | Cancelled. Each step's runCommand lines are written to
  ``_script.sh`` and run with bash in a fresh sandbox directory, in their own process group,
  killed (SIGKILL to the group) at the step's timeoutSeconds / executionTimeout (exit code 137,
  TimedOut) or on CancelCommand (137, Cancelled).
* The sandbox (cwd, ``$CLEANROOM_ROOT``) exposes every EBS volume attached to the instance as a
  Nitro instance shows NVMe devices: ``$CLEANROOM_ROOT/dev/nvme<N>n1`` -> the volume's image
  file (blockdata), ``dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex>`` ->
  ``../../nvme<N>n1`` and ``dev/<device basename, e.g. sdf or xvda>`` -> ``nvme<N>n1``. Root
  device first (nvme0n1), then by device name. Images are read-only: mode 0444, and a step
  that changes an image anyway (root ignores modes) fails with a note on stderr. Option
  ``ssm_run_as_nobody`` (POST /_lab/config) runs scripts as uid 65534 when the lab is root,
  which enforces it, but only works where that user can reach the lab's Python (awscli).
* Environment of a script: only CLEANROOM_ROOT, CLEANROOM_INSTANCE_ID, CLEANROOM_COMMAND_ID,
  HOME and TMPDIR inside the sandbox, PATH with the lab venv's bin first (awscli), LANG,
  AWS_ENDPOINT_URL (the lab), AWS_EC2_METADATA_DISABLED=true, AWS_REGION/AWS_DEFAULT_REGION,
  AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE=/dev/null, NO_PROXY, and, when the instance has
  an instance profile with a role, that role's credentials (assumed with session name =
  instance id). Without a profile there are none, as on AWS: the AWS CLI cannot sign. The
  agent's own S3 uploads use the role, or else a temporary key of the account.
* Output: GetCommandInvocation gives the real status, ResponseCode, the first 24,000
  characters of stdout and 8,000 of stderr (no truncation marker, as SSM), and
  StandardOutputUrl/StandardErrorUrl; with OutputS3BucketName the agent uploads, like the real
  one, each non-empty stream to ``<prefix>/<command-id>/<instance-id>/<plugin-dir>/stdout``
  and ``.../stderr`` where plugin-dir is ``awsrunShellScript/<step name>`` for schema 2.x and
  ``awsrunShellScript/0.awsrunShellScript`` for AWS-RunShellScript (schema 1.2).
  ListCommandInvocations (Details=True gives CommandPlugins) and ListCommands report the real
  status; CancelCommand cancels.

It is code inside the lab's moto server; nothing here can run against a real account.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, EmptyResult
from moto.ssm.responses import SimpleSystemManagerResponse

from labext import admin

# Limits and defaults, with where they come from.
STDOUT_LIMIT = 24000  # GetCommandInvocation StandardOutputContent (SSM agent MaxStdoutLength)
STDERR_LIMIT = 8000  # StandardErrorContent (SSM agent MaxStderrLength)
PLUGIN_OUTPUT_LIMIT = 2400  # CommandPlugins[].Output (agent MaximumPluginOutputSize)
DEFAULT_EXECUTION_TIMEOUT = 3600  # seconds, aws:runShellScript default
MAX_EXECUTION_TIMEOUT = 172800  # seconds, AWS-RunShellScript executionTimeout maximum
DEFAULT_DELIVERY_TIMEOUT = 3600  # SendCommand TimeoutSeconds default
STOPPED_EXIT_CODE = 137  # agent's CommandStoppedPreemptivelyExitCode on Linux (timeout/cancel)
LAB_PARALLEL = 4  # invocations running at once in the whole lab (2-core machines)
DII_DEFAULT_PAGE, DII_MIN, DII_MAX = 10, 5, 50  # DescribeInstanceInformation MaxResults
LIST_DEFAULT_PAGE, LIST_MAX = 50, 50  # ListCommands / ListCommandInvocations MaxResults
NOBODY = 65534
AGENT_VERSION = "3.3.0.0"

TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")

AWS_RUN_SHELL_SCRIPT = {
    "schemaVersion": "1.2",
    "description": "Run a shell script or specify the commands to run.",
    "parameters": {
        "commands": {"type": "StringList", "minItems": 1, "displayType": "textarea",
                     "description": "(Required) Specify a shell script or a command to run."},
        "workingDirectory": {"type": "String", "default": "", "maxChars": 4096,
                             "description": "(Optional) The path to the working directory on "
                                            "your instance."},
        "executionTimeout": {
            "type": "String", "default": "3600",
            "description": "(Optional) The time in seconds for a command to complete before it "
                           "is considered to have failed. Default is 3600 (1 hour). Maximum is "
                           "172800 (48 hours).",
            "allowedPattern": "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|"
                              "(172[0-7][0-9]{2})|(172800)"},
    },
    "runtimeConfig": {"aws:runShellScript": {"properties": [{
        "id": "0.aws:runShellScript", "runCommand": "{{ commands }}",
        "workingDirectory": "{{ workingDirectory }}", "timeoutSeconds": "{{ executionTimeout }}",
    }]}},
}
BUILTIN_DOCUMENTS = {"AWS-RunShellScript": AWS_RUN_SHELL_SCRIPT}


class SsmError(ServiceException):
    pass


def _err(code: str, message: str) -> SsmError:
    return SsmError(code, message)


# ---------------------------------------------------------------------------------------
# State

_lock = threading.RLock()
_managed: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
_commands: dict[tuple[str, str], list["LabCommand"]] = {}
_running: set[subprocess.Popen] = set()
_ctx: Any = None
_root: Path | None = None
_slots = threading.BoundedSemaphore(LAB_PARALLEL)
_generation = 0  # bumped by reset(): workers of an older generation stop quietly
_installed = False
_step_failures: list[dict[str, Any]] = []  # POST /_lab/ssm/step-failures, oldest first


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime | None) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _elapsed(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"PT{(end - start).total_seconds():.3f}S"


def _ec2(account: str, region: str):
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _ssm(account: str, region: str):
    from moto.ssm.models import ssm_backends

    return ssm_backends[account][region]


def _instance(account: str, region: str, instance_id: str) -> Any | None:
    try:
        return _ec2(account, region).get_instance(instance_id)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------
# Documents


class Step:
    def __init__(self, name: str, action: str, s3_dir: str, inputs: dict[str, Any],
                 precondition: Any = None, on_failure: str | None = None):
        self.name = name
        self.action = action
        self.s3_dir = s3_dir
        self.inputs = inputs
        self.precondition = precondition
        self.on_failure = on_failure


def _document(account: str, region: str, name: str, version: str | None) -> tuple[dict, str]:
    if name.startswith("arn:"):
        name = name.split("document/", 1)[-1]
    if name in BUILTIN_DOCUMENTS:
        return BUILTIN_DOCUMENTS[name], "1"
    documents = _ssm(account, region)._documents.get(name)
    if documents is None:
        raise _err("InvalidDocument", f"Document with name {name} does not exist.")
    version = None if version in (None, "", "$DEFAULT") else version
    doc = documents.find(version, None, strict=False)
    if doc is None:
        raise _err("InvalidDocumentVersion", f"Document {name} has no version {version}.")
    if doc.document_type != "Command":
        raise _err("InvalidDocument", f"Document {name} is of type {doc.document_type}; "
                                      f"SendCommand runs only Command documents.")
    content = doc.content_json if isinstance(doc.content_json, dict) else json.loads(doc.content)
    return content, doc.document_version


def _steps(content: dict) -> list[Step]:
    schema = str(content.get("schemaVersion", ""))
    steps = []
    if schema.startswith("2."):
        for st in content.get("mainSteps") or []:
            action = st.get("action", "")
            steps.append(Step(st.get("name", action), action,
                              f"{action.replace(':', '')}/{st.get('name', '')}",
                              dict(st.get("inputs") or {}), st.get("precondition"),
                              st.get("onFailure")))
    elif schema == "1.2":
        for action, conf in (content.get("runtimeConfig") or {}).items():
            props = conf.get("properties") or []
            if isinstance(props, dict):
                props = [props]
            for i, prop in enumerate(props):
                pid = prop.get("id") or f"{i}.{action}"
                steps.append(Step(action, action,
                                  f"{action.replace(':', '')}/{pid.replace(':', '')}",
                                  dict(prop)))
    else:
        raise _err("InvalidDocumentSchemaVersion",
                   f"The lab's agent runs schema 1.2 and 2.x documents, not {schema!r}.")
    if not steps:
        raise _err("InvalidDocumentContent", "The document has no steps.")
    return steps


def _parameter_values(account: str, region: str, content: dict,
                      given: dict[str, list[str]]) -> dict[str, Any]:
    declared = content.get("parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise _err("InvalidParameters",
                   f"Parameters {unknown} are not defined in the document.")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        ptype = spec.get("type", "String")
        if name in given:
            raw = given[name]
            raw = raw if isinstance(raw, list) else [raw]
        elif "default" in spec:
            d = spec["default"]
            raw = d if isinstance(d, list) else [d]
        else:
            raise _err("InvalidParameters", f"Required parameter {name} is not specified.")
        raw = [_resolve_ssm_refs(account, region, str(v)) if isinstance(v, str) else v
               for v in raw]
        if ptype == "StringList":
            value: Any = [str(v) for v in raw]
            items = value
        else:
            value = "" if not raw else (json.dumps(raw[0]) if isinstance(raw[0], (dict, list))
                                        else str(raw[0]))
            items = [value]
        allowed = spec.get("allowedValues")
        pattern = spec.get("allowedPattern")
        for item in items:
            if allowed and item not in [str(a) for a in allowed]:
                raise _err("InvalidParameters",
                           f"Parameter {name} value {item!r} is not one of {allowed}.")
            if pattern and given.get(name) is not None and not re.fullmatch(pattern, item):
                raise _err("InvalidParameters",
                           f"Parameter {name} value {item!r} fails allowedPattern {pattern}.")
        values[name] = value
    return values


def _resolve_ssm_refs(account: str, region: str, text: str) -> str:
    def one(m: re.Match) -> str:
        try:
            param = _ssm(account, region).get_parameter(m.group(1))
        except Exception:
            raise _err("InvalidParameters", f"Parameter Store parameter {m.group(1)} not found.")
        return param.value if param else ""
    return re.sub(r"\{\{\s*ssm:([^}\s]+)\s*\}\}", one, text)


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def _substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            m = _PLACEHOLDER.fullmatch(item.strip()) if isinstance(item, str) else None
            if m and isinstance(params.get(m.group(1)), list):
                out.extend(params[m.group(1)])
            else:
                out.append(_substitute(item, params))
        return out
    if isinstance(value, dict):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, str):
        m = _PLACEHOLDER.fullmatch(value.strip())
        if m and isinstance(params.get(m.group(1)), list):
            return list(params[m.group(1)])

        def one(mm: re.Match) -> str:
            if mm.group(1) not in params:
                return mm.group(0)
            v = params[mm.group(1)]
            return "\n".join(v) if isinstance(v, list) else str(v)
        return _PLACEHOLDER.sub(one, value)
    return value


def _precondition_ok(pre: Any) -> bool:
    """Only ``StringEquals: [platformType, X]`` exists for Command documents."""
    if not isinstance(pre, dict):
        return True
    eq = pre.get("StringEquals")
    if isinstance(eq, list) and len(eq) == 2 and "platformType" in str(eq[0]):
        return str(eq[1]).lower() == "linux"
    return True


# ---------------------------------------------------------------------------------------
# Commands and invocations


class Plugin:
    def __init__(self, step: Step):
        self.step = step
        self.name = step.name
        self.status = "Pending"
        self.status_details = "Pending"
        self.response_code = -1
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.stdout = ""
        self.stderr = ""
        self.stdout_url = ""
        self.stderr_url = ""
        self.upload_errors: list[str] = []


class Invocation:
    def __init__(self, command: "LabCommand", instance_id: str, steps: list[Step]):
        self.command = command
        self.instance_id = instance_id
        self.status = "Pending"
        self.status_details = "Pending"
        self.plugins = [Plugin(s) for s in steps]
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.proc: subprocess.Popen | None = None
        self.cancel = threading.Event()
        self.sandbox: Path | None = None
        self.notes: list[str] = []

    def terminal(self) -> bool:
        return self.status in TERMINAL

    def plugin_urls(self, plugin: Plugin) -> tuple[str, str, str]:
        c = self.command
        if not c.bucket:
            return "", "", ""
        key_prefix = _s3_join(c.key_prefix, c.id, self.instance_id, plugin.step.s3_dir)
        region = c.s3_region or c.region
        host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
        base = f"https://{host}/{c.bucket}/{key_prefix}"
        return f"{base}/stdout", f"{base}/stderr", key_prefix


def _s3_join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class LabCommand:
    def __init__(self, account: str, region: str, params: dict[str, Any], content: dict,
                 doc_version: str, steps_params: dict[str, Any], instance_ids: list[str]):
        self.id = str(uuid.uuid4())
        self.account = account
        self.region = region
        self.document_name = params["DocumentName"]
        self.document_version = doc_version
        self.comment = params.get("Comment") or ""
        self.parameters = params.get("Parameters") or {}
        self.targets = params.get("Targets") or []
        self.given_instance_ids = params.get("InstanceIds") or []
        self.timeout_seconds = int(params.get("TimeoutSeconds") or DEFAULT_DELIVERY_TIMEOUT)
        self.bucket = params.get("OutputS3BucketName") or ""
        self.key_prefix = params.get("OutputS3KeyPrefix") or ""
        self.s3_region = params.get("OutputS3Region") or ""
        self.max_concurrency = params.get("MaxConcurrency") or "50"
        self.max_errors = params.get("MaxErrors") or "0"
        self.service_role = params.get("ServiceRoleArn") or ""
        self.notification_config = params.get("NotificationConfig") or {
            "NotificationArn": "", "NotificationEvents": [], "NotificationType": ""}
        self.cloudwatch = params.get("CloudWatchOutputConfig") or {
            "CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}
        self.requested = _now()
        self.content = content
        self.steps_params = steps_params
        self.cancel_requested = False
        self.invocations: dict[str, Invocation] = {
            iid: Invocation(self, iid, _steps(content)) for iid in instance_ids}
        n = max(1, len(instance_ids))
        self.concurrency = threading.BoundedSemaphore(_limit(self.max_concurrency, n))

    def status(self) -> tuple[str, str]:
        invs = list(self.invocations.values())
        if not invs:
            return "Success", "Success"
        if any(not i.terminal() for i in invs):
            if self.cancel_requested:
                return "Cancelling", "Cancelling"
            if all(i.status == "Pending" for i in invs):
                return "Pending", "Pending"
            return "InProgress", "InProgress"
        if self.cancel_requested and any(i.status == "Cancelled" for i in invs):
            return "Cancelled", "Cancelled"
        errors = self.error_count()
        delivery = self.delivery_timed_out_count()
        if errors + delivery == 0:
            return "Success", "Success"
        if errors > _limit(self.max_errors, len(invs), zero_ok=True) or errors == len(invs):
            return "Failed", "Failed"
        if delivery and not errors:
            return "TimedOut", "Delivery Timed Out"
        return "Success", "Success"

    def error_count(self) -> int:
        return sum(1 for i in self.invocations.values()
                   if i.status == "Failed" or (i.status == "TimedOut"
                                               and i.status_details != "DeliveryTimedOut"))

    def delivery_timed_out_count(self) -> int:
        return sum(1 for i in self.invocations.values() if i.status_details == "DeliveryTimedOut")

    def response(self) -> dict[str, Any]:
        status, details = self.status()
        invs = self.invocations.values()
        return {
            "CommandId": self.id, "DocumentName": self.document_name,
            "DocumentVersion": self.document_version, "Comment": self.comment,
            "ExpiresAfter": self.requested + timedelta(seconds=self.timeout_seconds),
            "Parameters": self.parameters, "InstanceIds": list(self.given_instance_ids),
            "Targets": self.targets, "RequestedDateTime": self.requested,
            "Status": status, "StatusDetails": details,
            "OutputS3Region": self.s3_region or self.region,
            "OutputS3BucketName": self.bucket, "OutputS3KeyPrefix": self.key_prefix,
            "MaxConcurrency": self.max_concurrency, "MaxErrors": self.max_errors,
            "TargetCount": len(self.invocations),
            "CompletedCount": sum(1 for i in invs if i.terminal()),
            "ErrorCount": self.error_count(),
            "DeliveryTimedOutCount": self.delivery_timed_out_count(),
            "ServiceRole": self.service_role, "NotificationConfig": self.notification_config,
            "CloudWatchOutputConfig": self.cloudwatch, "TimeoutSeconds": self.timeout_seconds,
        }


def _limit(spec: str, n: int, zero_ok: bool = False) -> int:
    spec = str(spec).strip()
    try:
        if spec.endswith("%"):
            value = int(n * int(spec[:-1]) / 100)
        else:
            value = int(spec)
    except ValueError:
        value = 0 if zero_ok else n
    return max(0 if zero_ok else 1, value)


def _truncate_output(stdout: str, stderr: str, capacity: int = PLUGIN_OUTPUT_LIMIT) -> str:
    """The agent's TruncateOutput for CommandPlugins[].Output."""
    title = "\n----------ERROR-------\n" if stderr else ""
    avail = capacity - len(title)
    out_t, err_t = "\n---Output truncated---", "\n---Error truncated----"
    if len(stdout) + len(stderr) < avail:
        return stdout + title + stderr
    if len(stdout) > avail / 2 and len(stderr) > avail / 2:
        size = avail - len(err_t) - len(out_t)
        return stdout[: size // 2] + out_t + title + stderr[: size // 2] + err_t
    if len(stdout) < avail / 2:
        size = avail - len(err_t)
        return stdout + title + stderr[: size - len(stdout)] + err_t
    size = avail - len(out_t)
    return stdout[: size - len(stderr)] + out_t + title + stderr


# ---------------------------------------------------------------------------------------
# Running an invocation


def _role_credentials(account: str, region: str, instance: Any) -> dict[str, str]:
    """What the instance's scripts get from IMDS: its profile's role, assumed with session
    name = instance id. An instance without a profile (or whose profile has no role) has no
    credentials at all on AWS, so the sandbox gets none and the AWS CLI cannot sign."""
    role_arn = None
    try:
        assoc = _ec2(account, region).iam_instance_profile_associations.get(instance.id)
        profile = getattr(assoc, "iam_instance_profile", None)
        roles = getattr(profile, "roles", None) or []
        role_arn = roles[0].arn if roles else None
    except Exception:
        role_arn = None
    if not role_arn:
        return {}
    try:
        from moto.sts.models import sts_backends

        assumed = sts_backends[account]["aws"].assume_role(
            region_name=region, role_session_name=instance.id, role_arn=role_arn,
            policy="", duration=3600, external_id="")
    except Exception as e:  # noqa: BLE001 - no credentials is what the instance would see
        print(f"lab ssm_agent: cannot assume {role_arn} for {instance.id}: {e}", file=sys.stderr)
        return {}
    return {"AWS_ACCESS_KEY_ID": assumed.access_key_id,
            "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
            "AWS_SESSION_TOKEN": assumed.session_token}


def _agent_credentials(account: str, role_creds: dict[str, str]) -> dict[str, str]:
    """What the agent itself uploads output with: the instance's role, or without one a
    temporary key of the account (on AWS a managed instance without a profile gets the
    agent's own credentials from Default Host Management, which its scripts cannot see)."""
    if role_creds:
        return role_creds
    from moto.iam.models import iam_backends

    key = iam_backends[account]["aws"].create_temp_access_key()
    return {"AWS_ACCESS_KEY_ID": key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": key.secret_access_key}


def _attached_volumes(account: str, region: str, instance: Any) -> list[tuple[str, Any]]:
    backend = _ec2(account, region)
    found = []
    for vol in list(backend.volumes.values()):
        att = vol.attachment
        if att is not None and att.instance.id == instance.id:
            found.append((att.device, vol))
    root = getattr(instance, "root_device_name", None)
    found.sort(key=lambda dv: (dv[0] != root, dv[0]))
    return found


def _build_sandbox(inv: Invocation, instance: Any, run_as: int | None) -> Path:
    c = inv.command
    base = _root / c.id / inv.instance_id
    sandbox = base / "root"
    for d in (sandbox / "dev" / "disk" / "by-id", sandbox / "home", sandbox / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    (base / "orchestration").mkdir(parents=True, exist_ok=True)
    try:
        from labext import blockdata
        have_blockdata = blockdata._store is not None
    except Exception:
        have_blockdata = False
    if have_blockdata:
        for n, (device, vol) in enumerate(_attached_volumes(c.account, c.region, instance)):
            image = blockdata.volume_image(vol)
            nvme = f"nvme{n}n1"
            (sandbox / "dev" / nvme).symlink_to(image)
            serial = vol.id.replace("-", "")
            (sandbox / "dev" / "disk" / "by-id" /
             f"nvme-Amazon_Elastic_Block_Store_{serial}").symlink_to(f"../../{nvme}")
            short = os.path.basename(device or "")
            if short and short != nvme and not (sandbox / "dev" / short).exists():
                (sandbox / "dev" / short).symlink_to(nvme)
    for d in (_root, _root / c.id, base, base / "orchestration"):
        os.chmod(d, 0o711)
    if run_as is not None:
        for dirpath, dirnames, _files in os.walk(sandbox):
            os.chown(dirpath, run_as, run_as, follow_symlinks=False)
            for name in dirnames:
                os.chown(os.path.join(dirpath, name), run_as, run_as, follow_symlinks=False)
    return sandbox


def _run_as() -> int | None:
    if os.geteuid() != 0:
        return None
    if _ctx is None or not _ctx.options.get("ssm_run_as_nobody", False):
        return None
    return NOBODY


def _environment(inv: Invocation, sandbox: Path, creds: dict[str, str]) -> dict[str, str]:
    c = inv.command
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "tmp"),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "CLEANROOM_ROOT": str(sandbox), "CLEANROOM_INSTANCE_ID": inv.instance_id,
        "CLEANROOM_COMMAND_ID": c.id,
        "AWS_ENDPOINT_URL": (_ctx.base_url if _ctx is not None else "") or "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": c.region, "AWS_DEFAULT_REGION": c.region,
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    env.update(creds)
    return env


def _finish_plugin(plugin: Plugin, status: str, details: str, code: int) -> None:
    plugin.status, plugin.status_details, plugin.response_code = status, details, code
    plugin.end = _now()


def _run_step(inv: Invocation, plugin: Plugin, sandbox: Path, env: dict[str, str],
              run_as: int | None) -> None:
    c = inv.command
    step = plugin.step
    plugin.start = _now()
    plugin.status = plugin.status_details = "InProgress"
    if step.action != "aws:runShellScript":
        plugin.stderr = (f"The lab's SSM agent runs only aws:runShellScript steps; "
                         f"step {step.name} is {step.action}.")
        _finish_plugin(plugin, "Failed", "Failed", 1)
        return
    inputs = _substitute(step.inputs, c.steps_params)
    lines = inputs.get("runCommand") or []
    lines = lines if isinstance(lines, list) else [lines]
    failure = _take_step_failure(c, step)
    if failure is not None and failure["exit_code"] is None:
        lines = [f"sleep {int(failure['delay_seconds'])}", *lines]
    elif failure is not None:
        lines = [f"sleep {int(failure['delay_seconds'])}",
                 f"printf '%s\\n' {shlex.quote(failure['stderr'])} >&2",
                 f"exit {failure['exit_code']}"]
    try:
        timeout = int(str(inputs.get("timeoutSeconds") or DEFAULT_EXECUTION_TIMEOUT))
    except ValueError:
        timeout = DEFAULT_EXECUTION_TIMEOUT
    timeout = max(1, min(timeout, MAX_EXECUTION_TIMEOUT))
    workdir = sandbox
    wd = str(inputs.get("workingDirectory") or "").strip()
    if wd:
        workdir = sandbox / wd.lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(workdir, run_as, run_as)

    orch = sandbox.parent / "orchestration" / step.s3_dir.replace("/", "_")
    orch.mkdir(parents=True, exist_ok=True)
    os.chmod(orch, 0o755)
    script = orch / "_script.sh"
    script.write_text("\n".join(str(x) for x in lines) + "\n")
    os.chmod(script, 0o644)
    out_path, err_path = orch / "stdout", orch / "stderr"
    before = _image_stamps(sandbox)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        kwargs: dict[str, Any] = {}
        if run_as is not None:
            kwargs.update(user=run_as, group=run_as, extra_groups=[])
        proc = subprocess.Popen(["bash", str(script)], cwd=str(workdir), env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True, **kwargs)
        inv.proc = proc
        with _lock:
            _running.add(proc)
        deadline = time.monotonic() + timeout
        reason = None
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.1)
                    if inv.cancel.is_set() and code < 0:  # killed by CancelCommand
                        reason, code = "Cancelled", STOPPED_EXIT_CODE
                    break
                except subprocess.TimeoutExpired:
                    pass
                if inv.cancel.is_set():
                    reason = "Cancelled"
                elif time.monotonic() >= deadline:
                    reason = "TimedOut"
                if reason:
                    _kill_group(proc)
                    proc.wait()
                    code = STOPPED_EXIT_CODE
                    break
        finally:
            with _lock:
                _running.discard(proc)
            inv.proc = None
    raw_out = out_path.read_bytes()
    raw_err = err_path.read_bytes()
    plugin.stdout = raw_out.decode("utf-8", "replace")
    plugin.stderr = raw_err.decode("utf-8", "replace")
    changed = [dev for dev, stamp in _image_stamps(sandbox).items() if before.get(dev) != stamp]
    if changed:
        note = (f"lab: read-only violation: the step changed the image of {', '.join(changed)}"
                f" (evidence devices are read-only)")
        plugin.stderr = (plugin.stderr + "\n" + note).lstrip("\n")
        raw_err = plugin.stderr.encode()
        inv.notes.append(note)
        if reason is None and code == 0:
            code = 1
    _upload(inv, plugin, raw_out, raw_err)
    if reason == "Cancelled":
        _finish_plugin(plugin, "Cancelled", "Cancelled", code)
    elif reason == "TimedOut":
        _finish_plugin(plugin, "TimedOut", "ExecutionTimedOut", code)
    elif code == 0:
        _finish_plugin(plugin, "Success", "Success", 0)
    else:
        _finish_plugin(plugin, "Failed", "Failed", code)


def _image_stamps(sandbox: Path) -> dict[str, tuple[int, int, int]]:
    """(mtime_ns, ctime_ns, size) of every exposed device image, by device name."""
    stamps = {}
    dev = sandbox / "dev"
    for link in sorted(dev.glob("nvme*n1")):
        try:
            st = os.stat(link)
        except OSError:
            continue
        stamps[link.name] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    return stamps


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _upload(inv: Invocation, plugin: Plugin, raw_out: bytes, raw_err: bytes) -> None:
    c = inv.command
    plugin.stdout_url, plugin.stderr_url, key_prefix = inv.plugin_urls(plugin)
    if not c.bucket:
        return
    import boto3
    from botocore.config import Config

    creds = inv.agent_creds
    try:
        s3 = boto3.session.Session(
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=creds.get("AWS_SESSION_TOKEN"),
            region_name=c.s3_region or c.region,
        ).client("s3", endpoint_url=_ctx.base_url,
                 config=Config(s3={"addressing_style": "path"},
                               retries={"total_max_attempts": 2}))
    except Exception as e:  # noqa: BLE001 - recorded, as the agent logs it
        plugin.upload_errors.append(f"client: {e}")
        return
    for name, data in (("stdout", raw_out), ("stderr", raw_err)):
        if not data:  # the agent uploads a stream only when it is non-empty
            continue
        try:
            s3.put_object(Bucket=c.bucket, Key=f"{key_prefix}/{name}", Body=data)
        except Exception as e:  # noqa: BLE001
            plugin.upload_errors.append(f"{name}: {e}")
            print(f"lab ssm_agent: upload of {c.id}/{inv.instance_id} {name} to "
                  f"s3://{c.bucket}/{key_prefix}/{name} failed: {e}", file=sys.stderr)


def _run_invocation(inv: Invocation, generation: int) -> None:
    c = inv.command
    deadline = c.requested + timedelta(seconds=c.timeout_seconds)
    try:
        # Delivery: the instance must be online and a slot free before the delivery timeout.
        acquired = []
        while True:
            if generation != _generation:
                return
            if inv.cancel.is_set():
                inv.status = inv.status_details = "Cancelled"
                for p in inv.plugins:
                    _finish_plugin(p, "Cancelled", "Cancelled", -1)
                inv.end = _now()
                return
            if _now() >= deadline:
                inv.status, inv.status_details = "TimedOut", "DeliveryTimedOut"
                for p in inv.plugins:
                    _finish_plugin(p, "TimedOut", "DeliveryTimedOut", -1)
                inv.end = _now()
                return
            info = _managed.get((c.account, c.region), {}).get(inv.instance_id)
            inst = _instance(c.account, c.region, inv.instance_id)
            online = (info is not None and info.get("ping_status") == "Online"
                      and inst is not None and inst.state == "running")
            if online and not acquired:
                if c.concurrency.acquire(timeout=0.1):
                    acquired.append(c.concurrency)
            if online and len(acquired) == 1:
                if _slots.acquire(timeout=0.1):
                    acquired.append(_slots)
                    break
            else:
                time.sleep(0.1)
        try:
            _execute(inv)
        finally:
            for sem in acquired:
                sem.release()
    except Exception as e:  # noqa: BLE001 - an agent bug must still end the invocation
        inv.notes.append(f"agent error: {type(e).__name__}: {e}")
        print(f"lab ssm_agent: invocation {c.id}/{inv.instance_id} crashed: {e!r}",
              file=sys.stderr)
        for p in inv.plugins:
            if p.status not in TERMINAL:
                p.stderr = (p.stderr + f"\nlab agent error: {e}").strip()
                _finish_plugin(p, "Failed", "Failed", 1)
        inv.status = inv.status_details = "Failed"
        inv.end = _now()


def _execute(inv: Invocation) -> None:
    c = inv.command
    instance = _instance(c.account, c.region, inv.instance_id)
    if instance is None:
        raise RuntimeError(f"instance {inv.instance_id} disappeared")
    inv.start = _now()
    inv.status = inv.status_details = "InProgress"
    run_as = _run_as()
    sandbox = _build_sandbox(inv, instance, run_as)
    inv.sandbox = sandbox
    inv.creds = _role_credentials(c.account, c.region, instance)
    inv.agent_creds = _agent_credentials(c.account, inv.creds)
    env = _environment(inv, sandbox, inv.creds)
    stop = False
    for plugin in inv.plugins:
        if stop or inv.cancel.is_set():
            if inv.cancel.is_set():
                _finish_plugin(plugin, "Cancelled", "Cancelled", -1)
            else:
                plugin.start = _now()
                _finish_plugin(plugin, "Success", "Skipped", 0)
            continue
        if not _precondition_ok(plugin.step.precondition):
            plugin.start = _now()
            plugin.stdout = "Step execution skipped due to unsatisfied preconditions"
            _finish_plugin(plugin, "Success", "Skipped", 0)
            continue
        _run_step(inv, plugin, sandbox, env, run_as)
        if plugin.status == "Cancelled":
            stop = True
        elif plugin.status != "Success" and plugin.step.on_failure == "exit":
            stop = True
        elif plugin.status == "Success" and plugin.step.on_failure == "successAndExit":
            stop = True
    statuses = [p.status for p in inv.plugins]
    if "Cancelled" in statuses:
        inv.status = inv.status_details = "Cancelled"
    elif "TimedOut" in statuses:
        inv.status, inv.status_details = "TimedOut", "ExecutionTimedOut"
    elif "Failed" in statuses:
        inv.status = inv.status_details = "Failed"
    else:
        inv.status = inv.status_details = "Success"
    inv.end = _now()


Invocation.creds = {}  # type: ignore[attr-defined]
Invocation.agent_creds = {}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Views


def _plugin_view(inv: Invocation, plugin: Plugin) -> dict[str, Any]:
    out_url, err_url, key_prefix = inv.plugin_urls(plugin)
    c = inv.command
    view = {
        "Name": plugin.name, "Status": plugin.status, "StatusDetails": plugin.status_details,
        "ResponseCode": plugin.response_code,
        "Output": _truncate_output(plugin.stdout, plugin.stderr),
        "StandardOutputUrl": out_url, "StandardErrorUrl": err_url,
        "OutputS3Region": c.s3_region or c.region, "OutputS3BucketName": c.bucket,
        "OutputS3KeyPrefix": key_prefix.rsplit("/", 1)[0] if key_prefix else c.key_prefix,
    }
    if plugin.start:
        view["ResponseStartDateTime"] = plugin.start
    if plugin.end:
        view["ResponseFinishDateTime"] = plugin.end
    return view


def _invocation_view(inv: Invocation, details: bool) -> dict[str, Any]:
    c = inv.command
    instance = _instance(c.account, c.region, inv.instance_id)
    name = ""
    if instance is not None:
        name = getattr(instance, "private_dns_name", "") or ""
    view: dict[str, Any] = {
        "CommandId": c.id, "InstanceId": inv.instance_id, "InstanceName": name,
        "Comment": c.comment, "DocumentName": c.document_name,
        "DocumentVersion": c.document_version, "RequestedDateTime": c.requested,
        "Status": inv.status, "StatusDetails": inv.status_details, "TraceOutput": "",
        "ServiceRole": c.service_role, "NotificationConfig": c.notification_config,
        "CloudWatchOutputConfig": c.cloudwatch,
    }
    if len(inv.plugins) == 1:
        out_url, err_url, _ = inv.plugin_urls(inv.plugins[0])
        view["StandardOutputUrl"], view["StandardErrorUrl"] = out_url, err_url
    if details:
        view["CommandPlugins"] = [_plugin_view(inv, p) for p in inv.plugins]
    return view


def _get_invocation_view(inv: Invocation, plugin_name: str | None) -> dict[str, Any]:
    c = inv.command
    if plugin_name:
        matches = [p for p in inv.plugins if p.name == plugin_name]
        if not matches:
            raise _err("InvalidPluginName", f"Plugin {plugin_name} is not in document "
                                            f"{c.document_name}.")
        plugin = matches[0]
    elif len(inv.plugins) == 1:
        plugin = inv.plugins[0]
    else:
        raise _err("InvalidPluginName", "The document has more than one step: name the step "
                                        "with PluginName.")
    out_url, err_url, _ = inv.plugin_urls(plugin)
    return {
        "CommandId": c.id, "InstanceId": inv.instance_id, "Comment": c.comment,
        "DocumentName": c.document_name, "DocumentVersion": c.document_version,
        "PluginName": plugin.name, "ResponseCode": plugin.response_code,
        "ExecutionStartDateTime": _iso(plugin.start),
        "ExecutionElapsedTime": _elapsed(plugin.start, plugin.end),
        "ExecutionEndDateTime": _iso(plugin.end),
        "Status": plugin.status, "StatusDetails": plugin.status_details,
        "StandardOutputContent": plugin.stdout[:STDOUT_LIMIT],
        "StandardOutputUrl": out_url,
        "StandardErrorContent": plugin.stderr[:STDERR_LIMIT],
        "StandardErrorUrl": err_url,
        "CloudWatchOutputConfig": c.cloudwatch,
    }


# ---------------------------------------------------------------------------------------
# Pagination tokens (opaque, tied to the listing)


def _page(items: list[Any], max_results: int, token: str | None, kind: str) -> tuple[list[Any], str | None]:
    start = 0
    if token:
        try:
            k, n = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
            start = int(n)
            if k != kind or start < 0:
                raise ValueError
        except Exception:
            raise _err("InvalidNextToken", "The specified token isn't valid.") from None
    page = items[start:start + max_results]
    nxt = start + max_results
    token_out = (base64.urlsafe_b64encode(f"{kind}:{nxt}".encode()).decode()
                 if nxt < len(items) else None)
    return page, token_out


def _max_results(value: Any, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    n = int(value)
    if not low <= n <= high:
        raise _err("ValidationException", f"MaxResults must be between {low} and {high}.")
    return n


# ---------------------------------------------------------------------------------------
# API: the response methods


def _managed_in(account: str, region: str) -> dict[str, dict[str, Any]]:
    return _managed.setdefault((account, region), {})


def _instance_info_view(account: str, region: str, info: dict[str, Any]) -> dict[str, Any]:
    instance = _instance(account, region, info["instance_id"])
    ip = getattr(instance, "private_ip", "") if instance is not None else ""
    dns = getattr(instance, "private_dns_name", "") if instance is not None else ""
    ping = info["ping_status"]
    if instance is not None and instance.state != "running":
        ping = "ConnectionLost"  # a stopped or terminated instance's agent is silent
    return {
        "InstanceId": info["instance_id"], "PingStatus": ping,
        "LastPingDateTime": info.get("last_ping", info["registered"]),
        "AgentVersion": AGENT_VERSION, "IsLatestVersion": True,
        "PlatformType": "Linux", "PlatformName": info.get("platform_name", "Amazon Linux"),
        "PlatformVersion": info.get("platform_version", "2023"),
        "ResourceType": "EC2Instance", "IPAddress": ip or "", "ComputerName": dns or "",
        "RegistrationDate": info["registered"],
        "SourceId": info["instance_id"], "SourceType": "AWS::EC2::Instance",
    }


# An AMI tagged with this key and value has the SSM agent: instances launched from it
# with an instance profile register themselves, as the agent does at boot on AWS.
AGENT_AMI_TAG = ("lab:ssm-agent", "installed")


def _auto_register(account: str, region: str) -> None:
    """Registers running instances whose AMI carries AGENT_AMI_TAG and that have an
    instance profile (the agent needs credentials to reach SSM) as managed, Online."""
    backend = _ec2(account, region)
    try:
        instances = list(backend.all_instances())
    except Exception:
        return
    now = _now()
    with _lock:
        managed = _managed_in(account, region)
        for inst in instances:
            if inst.id in managed or inst.state != "running":
                continue
            if inst.id not in backend.iam_instance_profile_associations:
                continue
            try:
                image = backend.describe_images(ami_ids=[inst.image_id])[0]
                tags = {t["key"]: t["value"] for t in backend.describe_tags(filters={"resource-id": [image.id]})}
            except Exception:
                continue
            if tags.get(AGENT_AMI_TAG[0]) == AGENT_AMI_TAG[1]:
                managed[inst.id] = {"instance_id": inst.id, "registered": now, "ping_status": "Online",
                                    "last_ping": now}


def describe_instance_information(self: Any) -> ActionResult:
    account, region = self.current_account, self.region
    _auto_register(account, region)
    max_results = _max_results(self._get_param("MaxResults"), DII_DEFAULT_PAGE, DII_MIN, DII_MAX)
    filters: list[tuple[str, list[str]]] = []
    for f in self._get_param("Filters") or []:
        filters.append((f.get("Key", ""), list(f.get("Values") or [])))
    for f in self._get_param("InstanceInformationFilterList") or []:
        filters.append((f.get("key", ""), list(f.get("valueSet") or [])))
    with _lock:
        infos = list(_managed_in(account, region).values())
    views = []
    for info in infos:
        if _instance(account, region, info["instance_id"]) is None:
            continue
        view = _instance_info_view(account, region, info)
        ok = True
        for key, values in filters:
            if key == "InstanceIds":
                ok = view["InstanceId"] in values
            elif key == "PingStatus":
                ok = view["PingStatus"] in values
            elif key == "PlatformTypes":
                ok = view["PlatformType"] in values
            elif key == "ResourceType":
                ok = view["ResourceType"] in values
            elif key == "AgentVersion":
                ok = view["AgentVersion"] in values
            elif key.startswith("tag:") or key == "tag-key":
                inst = _instance(account, region, info["instance_id"])
                tags = {t["key"]: t["value"] for t in inst.get_tags()} if inst else {}
                ok = (key[4:] in tags and tags[key[4:]] in values) if key.startswith("tag:") \
                    else any(k in tags for k in values)
            else:
                raise _err("InvalidFilterKey", f"The filter key {key} is not valid.")
            if not ok:
                break
        if ok:
            views.append(view)
    page, token = _page(views, max_results, self._get_param("NextToken"), "dii")
    result: dict[str, Any] = {"InstanceInformationList": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _resolve_targets(account: str, region: str, instance_ids: list[str],
                     targets: list[dict[str, Any]]) -> list[str]:
    managed = _managed_in(account, region)
    chosen: list[str] = []
    bad = []
    for iid in instance_ids:
        inst = _instance(account, region, iid)
        if iid not in managed or inst is None or inst.state not in ("running", "pending"):
            bad.append(iid)
        elif iid not in chosen:
            chosen.append(iid)
    if bad:
        raise _err("InvalidInstanceId",
                   f"Instances [[{', '.join(bad)}]] not in a valid state for account {account}")
    for target in targets:
        key, values = target.get("Key", ""), list(target.get("Values") or [])
        for iid, _info in list(managed.items()):
            inst = _instance(account, region, iid)
            if inst is None or inst.state != "running" or iid in chosen:
                continue
            tags = {t["key"]: t["value"] for t in inst.get_tags()}
            if key in ("InstanceIds", "instanceids"):
                hit = iid in values
            elif key.startswith("tag:"):
                hit = tags.get(key[4:]) in values
            elif key == "tag-key":
                hit = any(v in tags for v in values)
            else:
                raise _err("InvalidTarget", f"Target key {key} is not supported by the lab.")
            if hit:
                chosen.append(iid)
    return chosen


def send_command(self: Any) -> ActionResult:
    _auto_register(self.current_account, self.region)
    account, region = self.current_account, self.region
    params = {k: self._get_param(k) for k in (
        "DocumentName", "DocumentVersion", "Comment", "Parameters", "Targets", "InstanceIds",
        "TimeoutSeconds", "OutputS3BucketName", "OutputS3KeyPrefix", "OutputS3Region",
        "MaxConcurrency", "MaxErrors", "ServiceRoleArn", "NotificationConfig",
        "CloudWatchOutputConfig")}
    if not params["DocumentName"]:
        raise _err("ValidationException", "DocumentName is required.")
    if not params["InstanceIds"] and not params["Targets"]:
        raise _err("ValidationException", "Specify InstanceIds or Targets.")
    content, version = _document(account, region, params["DocumentName"],
                                 params["DocumentVersion"])
    steps_params = _parameter_values(account, region, content, params["Parameters"] or {})
    _steps(content)  # validate
    with _lock:
        instance_ids = _resolve_targets(account, region, params["InstanceIds"] or [],
                                        params["Targets"] or [])
        command = LabCommand(account, region, params, content, version, steps_params,
                             instance_ids)
        _commands.setdefault((account, region), []).append(command)
        generation = _generation
    for inv in command.invocations.values():
        threading.Thread(target=_run_invocation, args=(inv, generation),
                         name=f"ssm-{command.id[:8]}-{inv.instance_id}", daemon=True).start()
    return ActionResult({"Command": command.response()})


def _command(account: str, region: str, command_id: str) -> "LabCommand":
    with _lock:
        for c in _commands.get((account, region), []):
            if c.id == command_id:
                return c
    raise _err("InvalidCommandId", "Invalid command id.")


def _time_filters(filters: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(f.get("key") or f.get("Key") or "", f.get("value") or f.get("Value") or "")
            for f in filters or []]


def _parse_time(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _command_matches(c: LabCommand, filters: list[tuple[str, str]]) -> bool:
    for key, value in filters:
        if key == "Status":
            if c.status()[0] != value:
                return False
        elif key == "DocumentName":
            if c.document_name != value:
                return False
        elif key == "InvokedAfter":
            if c.requested < _parse_time(value):
                return False
        elif key == "InvokedBefore":
            if c.requested > _parse_time(value):
                return False
        elif key == "ExecutionStage":
            done = c.status()[0] in TERMINAL
            if (value == "Executing") == done:
                return False
        else:
            raise _err("InvalidFilterKey", f"The filter key {key} is not valid.")
    return True


def _selected_commands(account: str, region: str, command_id: str | None) -> list:
    """The named command, or every command of the account and region, newest first."""
    if command_id:
        return [_command(account, region, command_id)]
    with _lock:
        return list(reversed(_commands.get((account, region), [])))


def list_commands(self: Any) -> ActionResult:
    account, region = self.current_account, self.region
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    max_results = _max_results(self._get_param("MaxResults"), LIST_DEFAULT_PAGE, 1, LIST_MAX)
    filters = _time_filters(self._get_param("Filters") or [])
    commands = _selected_commands(account, region, command_id)
    if instance_id:
        commands = [c for c in commands if instance_id in c.invocations]
    commands = [c for c in commands if _command_matches(c, filters)]
    page, token = _page(commands, max_results, self._get_param("NextToken"), "lc")
    result: dict[str, Any] = {"Commands": [c.response() for c in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def list_command_invocations(self: Any) -> ActionResult:
    account, region = self.current_account, self.region
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = bool(self._get_param("Details"))
    max_results = _max_results(self._get_param("MaxResults"), LIST_DEFAULT_PAGE, 1, LIST_MAX)
    filters = _time_filters(self._get_param("Filters") or [])
    commands = _selected_commands(account, region, command_id)
    invs = []
    for c in commands:
        if not _command_matches(c, [f for f in filters if f[0] != "Status"]):
            continue
        for inv in c.invocations.values():
            if instance_id and inv.instance_id != instance_id:
                continue
            if any(k == "Status" and inv.status != v for k, v in filters):
                continue
            invs.append(inv)
    page, token = _page(invs, max_results, self._get_param("NextToken"), "lci")
    result: dict[str, Any] = {"CommandInvocations": [_invocation_view(i, details) for i in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def get_command_invocation(self: Any) -> ActionResult:
    account, region = self.current_account, self.region
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    try:
        command = _command(account, region, command_id)
    except SsmError:
        raise _err("InvalidCommandId", "Invalid command id.") from None
    inv = command.invocations.get(instance_id)
    if inv is None:
        raise _err("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist) when "
                                             "calling the GetCommandInvocation operation")
    return ActionResult(_get_invocation_view(inv, self._get_param("PluginName")))


def cancel_command(self: Any) -> ActionResult:
    account, region = self.current_account, self.region
    command = _command(account, region, self._get_param("CommandId"))
    wanted = self._get_param("InstanceIds") or list(command.invocations)
    unknown = [i for i in wanted if i not in command.invocations]
    if unknown:
        raise _err("InvalidInstanceId",
                   f"Instances [[{', '.join(unknown)}]] are not targets of the command")
    command.cancel_requested = True
    for iid in wanted:
        inv = command.invocations[iid]
        if not inv.terminal():
            if inv.status == "InProgress":
                inv.status_details = "Cancelling"
            inv.cancel.set()
            proc = inv.proc
            if proc is not None:
                _kill_group(proc)
    return EmptyResult()


# ---------------------------------------------------------------------------------------
# Admin routes


@admin.route("POST", r"/_lab/ssm/managed-instances")
def register_managed_instance(req: Any):
    body = req.json() or {}
    iid = body.get("instance_id")
    if not isinstance(iid, str) or not iid.startswith("i-"):
        raise admin.AdminError(400, 'body must be {"instance_id": "i-..."}')
    if _instance(req.account, req.region, iid) is None:
        raise admin.AdminError(404, f"instance {iid} not found in account {req.account} "
                                    f"region {req.region}")
    ping = body.get("ping_status", "Online")
    if ping not in ("Online", "ConnectionLost", "Inactive"):
        raise admin.AdminError(400, "ping_status must be Online, ConnectionLost or Inactive")
    now = _now()
    with _lock:
        managed = _managed_in(req.account, req.region)
        created = iid not in managed
        info = managed.setdefault(iid, {"instance_id": iid, "registered": now})
        info.update(ping_status=ping, last_ping=now)
        for k in ("platform_name", "platform_version"):
            if k in body:
                info[k] = str(body[k])
    return (201 if created else 200), {"instance_id": iid, "account": req.account,
                                       "region": req.region, "ping_status": ping,
                                       "created": created}


@admin.route("GET", r"/_lab/ssm/managed-instances")
def list_managed_instances(req: Any):
    with _lock:
        infos = list(_managed_in(req.account, req.region).values())
    return 200, [{"instance_id": i["instance_id"], "ping_status": i["ping_status"]}
                 for i in infos]


@admin.route("PATCH", r"/_lab/ssm/managed-instances/(?P<instance_id>i-[0-9a-f]+)")
def patch_managed_instance(req: Any):
    body = req.json() or {}
    ping = body.get("ping_status")
    if ping not in ("Online", "ConnectionLost", "Inactive"):
        raise admin.AdminError(400, "ping_status must be Online, ConnectionLost or Inactive")
    with _lock:
        info = _managed_in(req.account, req.region).get(req.params["instance_id"])
        if info is None:
            raise admin.AdminError(404, f"{req.params['instance_id']} is not managed")
        info.update(ping_status=ping, last_ping=_now())
    return 200, {"instance_id": req.params["instance_id"], "ping_status": ping}


@admin.route("DELETE", r"/_lab/ssm/managed-instances/(?P<instance_id>i-[0-9a-f]+)")
def deregister_managed_instance(req: Any):
    with _lock:
        info = _managed_in(req.account, req.region).pop(req.params["instance_id"], None)
    if info is None:
        raise admin.AdminError(404, f"{req.params['instance_id']} is not managed")
    return 200, {"instance_id": req.params["instance_id"], "deregistered": True}


@admin.route("GET", r"/_lab/ssm/commands/(?P<command_id>[0-9a-f-]{36})")
def command_debug(req: Any):
    try:
        c = _command(req.account, req.region, req.params["command_id"])
    except SsmError:
        raise admin.AdminError(404, f"command {req.params['command_id']} not found") from None
    return 200, {
        "command_id": c.id, "status": c.status()[0], "document": c.document_name,
        "invocations": [{
            "instance_id": inv.instance_id, "status": inv.status,
            "status_details": inv.status_details,
            "sandbox": str(inv.sandbox) if inv.sandbox else None, "notes": inv.notes,
            "plugins": [{"name": p.name, "status": p.status, "response_code": p.response_code,
                         "s3_dir": p.step.s3_dir, "upload_errors": p.upload_errors,
                         "stdout_bytes": len(p.stdout), "stderr_bytes": len(p.stderr)}
                        for p in inv.plugins],
        } for inv in c.invocations.values()],
    }


def _take_step_failure(c: "LabCommand", step: Step) -> dict[str, Any] | None:
    """The oldest armed step failure for this command's document and step, one use taken."""
    name = c.document_name.split("document/", 1)[-1]
    with _lock:
        for f in _step_failures:
            if (f["account"], f["region"], f["document"]) != (c.account, c.region, name):
                continue
            if f["step"] not in (None, step.name) or f["remaining"] == 0:
                continue
            if f["remaining"] is not None:
                f["remaining"] -= 1
            f["hits"] += 1
            return dict(f)
    return None


@admin.route("POST", r"/_lab/ssm/step-failures")
def add_step_failure(req: Any):
    body = req.json() or {}
    document, code = body.get("document"), body.get("exit_code")
    if not isinstance(document, str) or not document:
        raise admin.AdminError(400, "document is required (a document name)")
    delay = body.get("delay_seconds", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 3600:
        raise admin.AdminError(400, "delay_seconds must be an integer 0..3600")
    if code is None and delay == 0:
        raise admin.AdminError(400, "exit_code (1..255) or delay_seconds (1..3600) is required")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255):
        raise admin.AdminError(400, "exit_code must be an integer 1..255")
    times = body.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise admin.AdminError(400, "times must be a positive integer, or null for until cleared")
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        raise admin.AdminError(400, "step must be a step name")
    failure = {"id": f"step-failure-{uuid.uuid4().hex[:12]}", "account": req.account,
               "region": req.region, "document": document, "step": step, "exit_code": code,
               "delay_seconds": delay,
               "stderr": str(body.get("stderr") or f"lab: injected failure (exit {code})"),
               "times": times, "remaining": times, "hits": 0}
    with _lock:
        _step_failures.append(failure)
    return 201, failure


@admin.route("GET", r"/_lab/ssm/step-failures")
def list_step_failures(req: Any):
    with _lock:
        return 200, [dict(f) for f in _step_failures
                     if (f["account"], f["region"]) == (req.account, req.region)]


@admin.route("DELETE", r"/_lab/ssm/step-failures")
def clear_step_failures(req: Any):
    with _lock:
        gone = [f for f in _step_failures if (f["account"], f["region"]) == (req.account, req.region)]
        _step_failures[:] = [f for f in _step_failures if f not in gone]
    return 200, {"deleted": len(gone)}


# ---------------------------------------------------------------------------------------


def install(ctx: Any) -> None:
    global _ctx, _root, _installed
    _ctx = ctx
    ctx.options.setdefault("ssm_run_as_nobody", False)
    _root = Path(ctx.data_dir) / "ssm"
    shutil.rmtree(_root, ignore_errors=True)
    _root.mkdir(parents=True, exist_ok=True)
    try:  # an unprivileged script user must traverse (never list) the data dir
        os.chmod(ctx.data_dir, os.stat(ctx.data_dir).st_mode | 0o011)
        os.chmod(_root, 0o711)
    except OSError:
        pass
    if not _installed:
        _installed = True
        SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
        SimpleSystemManagerResponse.send_command = send_command
        SimpleSystemManagerResponse.list_commands = list_commands
        SimpleSystemManagerResponse.list_command_invocations = list_command_invocations
        SimpleSystemManagerResponse.get_command_invocation = get_command_invocation
        SimpleSystemManagerResponse.cancel_command = cancel_command


def reset() -> None:
    global _generation
    with _lock:
        _generation += 1
        for c in [c for cs in _commands.values() for c in cs]:
            for inv in c.invocations.values():
                inv.cancel.set()
        for proc in list(_running):
            _kill_group(proc)
        _managed.clear()
        _commands.clear()
        _step_failures.clear()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
        _root.mkdir(parents=True, exist_ok=True)
        os.chmod(_root, 0o711)
