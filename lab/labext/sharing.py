"""Cross-account snapshot sharing and the KMS rules that go with it (moto 5.2.5).

Stock moto records createVolumePermission but nothing reads it: the named account cannot
see, copy or restore the snapshot. This extension makes sharing take effect and adds the
refusals AWS makes:

* DescribeSnapshots in account B lists A's snapshots shared with B (explicitly or publicly),
  honours SnapshotIds, OwnerIds (ids, ``self``) and RestorableByUserIds (ids, ``self``,
  ``all``); any snapshot B may not see is ``InvalidSnapshot.NotFound``.
* CopySnapshot and CreateVolume in B accept a snapshot shared with B (in the source region
  for CopySnapshot). Removing the permission takes that away again.
* ModifySnapshotAttribute also accepts the ``CreateVolumePermission={"Add"|"Remove": [...]}``
  form (refusing both at once), refuses to share a snapshot encrypted under the AWS managed
  key ``aws/ebs`` (``OperationNotPermitted``, as EC2 answers) and refuses to make an
  encrypted snapshot public.
* KMS: a snapshot or volume encrypted without a KmsKeyId, or with ``alias/aws/ebs``, is on the
  account's AWS managed key. Using a key needs the key to exist, be Enabled, and its key
  policy to allow the calling account (Principal AWS ``"*"``, ``"<acct>"``,
  ``arn:aws:iam::<acct>:root`` or any principal ARN in that account) for the actions EBS
  needs; Deny statements win; Conditions are not evaluated. A copy whose source key or
  target key the caller cannot use is created and then fails as EBS does it: the snapshot's
  State is ``error`` with StateMessage ``Given key ID is not accessible`` (EBS checks KMS
  asynchronously and the CopySnapshot call itself succeeds). A volume from a snapshot whose
  key the caller cannot use, or with such a KmsKeyId, is created in State ``error``.

Everything here patches moto in-process; see lab/README.md "Cross-account sharing and KMS".
"""

from __future__ import annotations

import fnmatch
import json
import threading
from typing import Any, Iterable

from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidParameterDependency,
    InvalidSnapshotIdError,
    OperationNotPermitted,
)
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot, Volume
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import generic_filter

# The message EC2 gives when a copy fails because a KMS key cannot be used. Seen in the wild
# as "AMI snapshot copy failed with error: Given key ID is not accessible" (AWS Backup).
KEY_NOT_ACCESSIBLE = "Given key ID is not accessible"
# ModifySnapshotAttribute on an aws/ebs-encrypted snapshot: OperationNotPermitted with this
# message (as reported by packer users, hashicorp/packer#7499). ModifyImageAttribute answers
# InvalidParameter "Snapshots encrypted with the AWS Managed CMK can't be shared." instead.
DEFAULT_KEY_SHARE_REFUSED = "Encrypted snapshots with EBS default key cannot be shared"
# Not confirmed against AWS (the wording is ours; the code matches the default-key refusal).
PUBLIC_ENCRYPTED_REFUSED = "Encrypted snapshots cannot be shared publicly"

# What EBS asks KMS for, per role of the key (the set AWS documents for sharing an encrypted
# snapshot: DescribeKey, CreateGrant, Decrypt, ReEncrypt*, GenerateDataKeyWithoutPlaintext).
SOURCE_KEY_ACTIONS = ("kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt")
SOURCE_KEY_REENCRYPT = ("kms:ReEncryptFrom",)
TARGET_KEY_ACTIONS = ("kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext")
TARGET_KEY_REENCRYPT = ("kms:ReEncryptTo",)

AWS_EBS_ALIAS = "alias/aws/ebs"

_installed = False
_tls = threading.local()  # .allow_shared: get_snapshot may return snapshots shared with us


class SnapshotNotFound(InvalidSnapshotIdError):
    def __init__(self, snapshot_id: str):  # noqa: D401 - keep the subclass catchable as stock
        EC2ClientError.__init__(self, "InvalidSnapshot.NotFound",
                                f"The snapshot '{snapshot_id}' does not exist.")


class IncorrectState(EC2ClientError):
    def __init__(self, message: str):
        super().__init__("IncorrectState", message)


class InvalidParameterCombination(EC2ClientError):
    def __init__(self, message: str):
        super().__init__("InvalidParameterCombination", message)


# ---------------------------------------------------------------------------------------
# Visibility


def _ec2_backends():
    from moto.ec2.models import ec2_backends

    return ec2_backends


def can_access(snapshot: Snapshot, account: str) -> bool:
    """Whether ``account`` may see and restore ``snapshot`` (own, explicit or public)."""
    return (snapshot.owner_id == account
            or account in snapshot.create_volume_permission_userids
            or "all" in snapshot.create_volume_permission_groups)


def _existing_region_backends(region: str) -> Iterable[Any]:
    """EC2 backends of every account that already has one in ``region`` (none created)."""
    for _account, per_region in list(_ec2_backends().items()):
        backend = dict.get(per_region, region)
        if backend is not None:
            yield backend


def shared_with(account: str, region: str) -> list[Snapshot]:
    """Snapshots of other accounts in ``region`` that ``account`` may use."""
    found = []
    for backend in _existing_region_backends(region):
        if backend.account_id == account:
            continue
        for snap in list(backend.snapshots.values()):
            if snap.owner_id != account and can_access(snap, account):
                found.append(snap)
    return found


def find_visible(account: str, region: str, snapshot_id: str) -> Snapshot | None:
    own = _ec2_backends()[account][region]
    snap = own.snapshots.get(snapshot_id)
    if snap is not None:
        return snap
    for backend in _existing_region_backends(region):
        snap = backend.snapshots.get(snapshot_id)
        if snap is not None and can_access(snap, account):
            return snap
    return None


# ---------------------------------------------------------------------------------------
# KMS model


def _kms_backends():
    from moto.kms.models import kms_backends

    return kms_backends


def resolve_key(key_ref: str | None, account: str, region: str) -> Any | None:
    """The moto KMS key for an id, ARN, alias name or alias ARN; None if there is none."""
    if not key_ref:
        return None
    if key_ref.startswith("arn:"):
        parts = key_ref.split(":")
        if len(parts) < 6:
            return None
        region, account = parts[3], parts[4]
    try:
        return _kms_backends()[account][region].describe_key(key_ref)
    except Exception:  # KeyError, NotFoundException, a None alias target: all "no such key"
        return None


def default_key_arn(backend: EBSBackend) -> str:
    """ARN of the account's EBS default key (aws/ebs unless ModifyEbsDefaultKmsKeyId)."""
    if not backend.default_kms_key_id:
        backend._create_default_encryption_key()
    return backend.default_kms_key_id


def is_aws_managed(key: Any) -> bool:
    if key is None:
        return False
    if getattr(key, "key_manager", "CUSTOMER") == "AWS":
        return True
    return any(str(alias).startswith("alias/aws/") for alias in getattr(key, "aliases", {}))


def _mark_aws_managed(key: Any) -> None:
    if key is not None and is_aws_managed(key):
        key.key_manager = "AWS"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _principal_matches(statement: dict, account: str) -> bool:
    principal = statement.get("Principal")
    if principal is None:
        return False
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for entry in _as_list(principal.get("AWS")):
        entry = str(entry)
        if entry in ("*", account):
            return True
        # arn:aws:iam::<acct>:root, or a role/user of that account (IAM is not evaluated).
        parts = entry.split(":")
        if len(parts) >= 6 and parts[2] == "iam" and parts[4] == account:
            return True
    return False


def _action_matches(statement: dict, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), str(p).lower())
               for p in _as_list(statement.get("Action")))


def _resource_matches(statement: dict, key: Any) -> bool:
    resources = _as_list(statement.get("Resource", "*"))
    return any(fnmatch.fnmatchcase(key.arn, str(r)) for r in resources)


def key_policy_allows(key: Any, account: str, actions: Iterable[str]) -> bool:
    """Evaluate the key policy for ``account`` (Deny wins; Conditions not evaluated)."""
    try:
        doc = json.loads(key.policy) if isinstance(key.policy, str) else key.policy
        statements = _as_list(doc.get("Statement"))
    except (TypeError, ValueError, AttributeError):
        # An unreadable policy: only the key's own account, as with the default policy.
        return account == key.account_id
    for action in actions:
        allowed = False
        for st in statements:
            if not isinstance(st, dict) or "NotAction" in st or "NotPrincipal" in st:
                continue
            if not (_principal_matches(st, account) and _action_matches(st, action)
                    and _resource_matches(st, key)):
                continue
            if st.get("Effect") == "Deny":
                return False
            if st.get("Effect") == "Allow":
                allowed = True
        if not allowed:
            return False
    return True


def key_usable(key: Any, account: str, actions: Iterable[str]) -> bool:
    return (key is not None and getattr(key, "key_state", "Enabled") == "Enabled"
            # moto leaves KeyUsage unset (None) when CreateKey does not name it
            and (getattr(key, "key_usage", None) or "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT"
            and (getattr(key, "key_spec", None) or "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
            and key_policy_allows(key, account, actions))


def snapshot_key(snapshot: Snapshot) -> Any | None:
    """The KMS key an encrypted snapshot is under (its owner's aws/ebs key when unset)."""
    backend = snapshot.ec2_backend
    ref = snapshot.kms_key_id or default_key_arn(backend)
    return resolve_key(ref, snapshot.owner_id, backend.region_name)


def is_default_key_snapshot(snapshot: Snapshot) -> bool:
    if not snapshot.encrypted:
        return False
    ref = snapshot.kms_key_id
    if not ref or ref == AWS_EBS_ALIAS or ref.endswith(":" + AWS_EBS_ALIAS):
        return True
    return is_aws_managed(snapshot_key(snapshot))


# ---------------------------------------------------------------------------------------
# Patched backend methods


def install(ctx: Any) -> None:
    global _installed
    if _installed:
        return
    _installed = True

    orig_get_snapshot = EBSBackend.get_snapshot
    orig_create_snapshot = EBSBackend.create_snapshot
    orig_copy_snapshot = EBSBackend.copy_snapshot
    orig_create_volume = EBSBackend.create_volume
    orig_add_perm = EBSBackend.add_create_volume_permission
    orig_default_key = EBSBackend._create_default_encryption_key
    orig_volume_status = Volume.status

    def get_snapshot(self: EBSBackend, snapshot_id: str) -> Snapshot:
        snap = self.snapshots.get(snapshot_id)
        if snap is not None:
            return snap
        if getattr(_tls, "allow_shared", False):
            snap = find_visible(self.account_id, self.region_name, snapshot_id)
            if snap is not None:
                return snap
        try:
            return orig_get_snapshot(self, snapshot_id)
        except InvalidSnapshotIdError:
            raise SnapshotNotFound(snapshot_id) from None

    def describe_snapshots(self: EBSBackend, snapshot_ids: list[str] | None = None,
                           filters: Any = None, owner_ids: list[str] | None = None,
                           restorable_by: list[str] | None = None) -> list[Snapshot]:
        me = self.account_id
        candidates = list(self.snapshots.values()) + shared_with(me, self.region_name)
        if snapshot_ids:
            by_id = {s.id: s for s in candidates}
            for sid in snapshot_ids:
                if sid not in by_id:
                    raise SnapshotNotFound(sid)
            wanted = set(snapshot_ids)
            candidates = [s for s in candidates if s.id in wanted]
        if owner_ids:
            owners = {me if o == "self" else o for o in owner_ids}
            candidates = [s for s in candidates if s.owner_id in owners]
        if restorable_by:
            def restorable(s: Snapshot) -> bool:
                for who in restorable_by:
                    if who in ("self", me):
                        if s.owner_id == me or me in s.create_volume_permission_userids:
                            return True
                    elif who == "all":
                        if "all" in s.create_volume_permission_groups:
                            return True
                    elif s.owner_id == me and who in s.create_volume_permission_userids:
                        return True
                return False
            candidates = [s for s in candidates if restorable(s)]
        if filters:
            candidates = generic_filter(filters, candidates)
        return candidates

    def create_default_encryption_key(self: EBSBackend) -> str:
        arn = orig_default_key(self)
        _mark_aws_managed(resolve_key(arn, self.account_id, self.region_name))
        return arn

    def create_snapshot(self: EBSBackend, volume_id: str, description: str,
                        owner_id: str | None = None, from_ami: str | None = None) -> Snapshot:
        snap = orig_create_snapshot(self, volume_id, description, owner_id=owner_id,
                                    from_ami=from_ami)
        # Stock drops the volume's key: a snapshot is under its volume's key.
        if snap.encrypted and not snap.kms_key_id:
            snap.kms_key_id = snap.volume.kms_key_id or default_key_arn(self)
        return snap

    def copy_snapshot(self: EBSBackend, source_snapshot_id: str, source_region: str,
                      description: str, kms_key_id: str | None,
                      encrypted: bool | None = None) -> Snapshot:
        me, region = self.account_id, self.region_name
        source_region = source_region or region
        source = find_visible(me, source_region, source_snapshot_id)
        if source is None:
            raise SnapshotNotFound(source_snapshot_id)
        if source.status == "error":
            raise IncorrectState(f"Snapshot '{source_snapshot_id}' is in state 'error'.")
        if kms_key_id and not (encrypted or source.encrypted):
            raise InvalidParameterDependency("KmsKeyId", "Encrypted")
        make_encrypted = bool(source.encrypted or encrypted or kms_key_id)

        problem = None
        src_key = snapshot_key(source) if source.encrypted else None
        target_ref = None
        target_key = None
        if make_encrypted:
            target_ref = kms_key_id or default_key_arn(self)
            target_key = resolve_key(target_ref, me, region)
            if target_key is not None:
                target_ref = target_key.arn
                _mark_aws_managed(target_key)
            reencrypt = src_key is None or target_key is None or src_key.arn != target_key.arn
            if not key_usable(target_key, me, TARGET_KEY_ACTIONS
                              + (TARGET_KEY_REENCRYPT if reencrypt and src_key else ())):
                problem = KEY_NOT_ACCESSIBLE
            elif target_key.region != region:  # KMS keys are regional, like snapshots
                problem = KEY_NOT_ACCESSIBLE
        if source.encrypted and not key_usable(
                src_key, me, SOURCE_KEY_ACTIONS + (SOURCE_KEY_REENCRYPT if target_key is None
                                                   or src_key is None
                                                   or src_key.arn != target_key.arn else ())):
            problem = KEY_NOT_ACCESSIBLE

        snap = orig_copy_snapshot(self, source_snapshot_id, source_region, description, None)
        snap.encrypted = make_encrypted
        snap.kms_key_id = target_ref
        snap.lab_source = {"snapshot_id": source.id, "owner_id": source.owner_id,
                           "region": source_region}
        if problem:
            snap.status = "error"
            snap.state_message = problem
        return snap

    def create_volume(self: EBSBackend, size: int, zone_name: str,
                      snapshot_id: str | None = None, encrypted: bool = False,
                      kms_key_id: str | None = None, *args: Any, **kwargs: Any) -> Volume:
        me, region = self.account_id, self.region_name
        problem = None
        if snapshot_id:
            snap = find_visible(me, region, snapshot_id)
            if snap is None:
                raise SnapshotNotFound(snapshot_id)
            if snap.status == "error":
                raise IncorrectState(f"Snapshot '{snapshot_id}' is in state 'error'.")
            if snap.encrypted:
                encrypted = True
                src_key = snapshot_key(snap)
                if not key_usable(src_key, me, SOURCE_KEY_ACTIONS):
                    problem = KEY_NOT_ACCESSIBLE
                if not kms_key_id:
                    kms_key_id = src_key.arn if src_key is not None else snap.kms_key_id
        if kms_key_id:
            if not encrypted:
                raise InvalidParameterDependency("KmsKeyId", "Encrypted")
            key = resolve_key(kms_key_id, me, region)
            if key is not None:
                kms_key_id = key.arn
                _mark_aws_managed(key)
            if not key_usable(key, me, TARGET_KEY_ACTIONS) or key.region != region:
                problem = KEY_NOT_ACCESSIBLE
        elif encrypted:
            kms_key_id = default_key_arn(self)
        _tls.allow_shared = True
        try:
            vol = orig_create_volume(self, size, zone_name, snapshot_id, encrypted, kms_key_id,
                                     *args, **kwargs)
        finally:
            _tls.allow_shared = False
        if problem:
            vol.lab_state = "error"
            vol.lab_state_message = problem
        return vol

    def add_create_volume_permission(self: EBSBackend, snapshot_id: str, user_ids: list[str],
                                     groups: list[str]) -> None:
        snap = self.get_snapshot(snapshot_id)
        if (user_ids or groups) and is_default_key_snapshot(snap):
            raise OperationNotPermitted(DEFAULT_KEY_SHARE_REFUSED)
        if groups and "all" in groups and snap.encrypted:
            raise OperationNotPermitted(PUBLIC_ENCRYPTED_REFUSED)
        return orig_add_perm(self, snapshot_id, user_ids, groups)

    def volume_status(self: Volume) -> str:
        return getattr(self, "lab_state", None) or orig_volume_status.fget(self)

    EBSBackend.get_snapshot = get_snapshot
    EBSBackend.describe_snapshots = describe_snapshots
    EBSBackend.create_snapshot = create_snapshot
    EBSBackend.copy_snapshot = copy_snapshot
    EBSBackend.create_volume = create_volume
    EBSBackend.add_create_volume_permission = add_create_volume_permission
    EBSBackend._create_default_encryption_key = create_default_encryption_key
    Volume.status = property(volume_status)

    _install_responses()
    _install_attach_guard()


def _install_attach_guard() -> None:
    orig_attach = EBSBackend.attach_volume

    def attach_volume(self: EBSBackend, volume_id: str, instance_id: str, device_path: str,
                      delete_on_termination: bool = False):
        vol = self.get_volume(volume_id)
        if getattr(vol, "lab_state", None) == "error":
            raise IncorrectState(f"Volume '{volume_id}' is in the 'error' state.")
        return orig_attach(self, volume_id, instance_id, device_path, delete_on_termination)

    EBSBackend.attach_volume = attach_volume


def _install_responses() -> None:
    from moto.core.responses import ActionResult, EmptyResult

    def describe_snapshots(self: ElasticBlockStore) -> ActionResult:
        filters = self._filters_from_querystring()
        snapshots = self.ec2_backend.describe_snapshots(
            snapshot_ids=self._get_param("SnapshotIds", []), filters=filters,
            owner_ids=self._get_param("OwnerIds", []),
            restorable_by=self._get_param("RestorableByUserIds", []))
        return ActionResult({"Snapshots": snapshots})

    def copy_snapshot(self: ElasticBlockStore) -> ActionResult:
        tags = self._parse_tag_specification()
        self.error_on_dryrun()
        snapshot = self.ec2_backend.copy_snapshot(
            source_snapshot_id=self._get_param("SourceSnapshotId"),
            source_region=self._get_param("SourceRegion"),
            description=self._get_param("Description"),
            kms_key_id=self._get_param("KmsKeyId"),
            encrypted=self._get_bool_param("Encrypted", False),
        )
        snapshot.add_tags(tags.get("snapshot", {}))
        return ActionResult({"SnapshotId": snapshot.id, "Tags": snapshot.tag_set})

    def modify_snapshot_attribute(self: ElasticBlockStore) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        attribute = self._get_param("Attribute")
        operation_type = self._get_param("OperationType")
        groups = list(self._get_param("GroupNames", []) or [])
        user_ids = list(self._get_param("UserIds", []) or [])
        structured = self._get_param("CreateVolumePermission", {}) or {}
        adds = structured.get("Add") or []
        removes = structured.get("Remove") or []
        self.error_on_dryrun()
        if attribute and attribute != "createVolumePermission":
            raise EC2ClientError("InvalidParameterValue",
                                 f"Value ({attribute}) for parameter attribute is invalid.")
        if adds and removes:
            raise InvalidParameterCombination(
                "You cannot add and remove create volume permissions in the same request.")
        if adds or removes:
            operation_type = "add" if adds else "remove"
            items = adds or removes
            user_ids += [i["UserId"] for i in items if i.get("UserId")]
            groups += [i["Group"] for i in items if i.get("Group")]
        if operation_type == "add":
            self.ec2_backend.add_create_volume_permission(snapshot_id, user_ids=user_ids,
                                                          groups=groups)
        elif operation_type == "remove":
            self.ec2_backend.remove_create_volume_permission(snapshot_id, user_ids=user_ids,
                                                             groups=groups)
        else:
            raise EC2ClientError("MissingParameter",
                                 "The request must contain the parameter OperationType "
                                 "or CreateVolumePermission.")
        return EmptyResult()

    ElasticBlockStore.describe_snapshots = describe_snapshots
    ElasticBlockStore.copy_snapshot = copy_snapshot
    ElasticBlockStore.modify_snapshot_attribute = modify_snapshot_attribute


def reset() -> None:
    """Nothing to clear: all state lives on moto's own objects, which moto resets."""
