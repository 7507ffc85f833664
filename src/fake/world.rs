//! The cross-account parts of the fake world: snapshots (with progress, sharing and
//! copies under keys), volumes, KMS keys and CloudTrail events, and the capture reads.
//! Semantics follow the lab's extensions (and through them AWS): an aws/ebs snapshot
//! cannot be shared; a copy under a key the caller may not use "succeeds" and ends in
//! `error`; snapshots complete after a number of polls.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cloud::{FakeCloud, fault};
use sha2::Digest;

use crate::cloud::{
    Call, Captured, CloudResult, CloudTrail, CommandRequest, CopyRequest, DocumentVersion, Ebs, ErrorKind,
    Found, Identity, Invocation, KeyInfo, Kms, Lookup, NewVolume, Raw, Snapshot, SnapshotState, Ssm, Sts,
    TrailEvent, Volume,
};
use crate::ids::{AccountId, InstanceId, Region, SnapshotId, VolumeId};

#[derive(Debug, Clone)]
pub struct FakeSnapshot {
    pub owner: AccountId,
    pub region: Region,
    pub snapshot: Snapshot,
    pub shared_with: BTreeSet<String>,
    /// DescribeSnapshots polls left before it completes.
    pub polls_left: u32,
    /// Ends in `error` instead of completing (with this message).
    pub fails_with: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FakeVolume {
    pub owner: AccountId,
    pub region: Region,
    pub volume: Volume,
}

#[derive(Debug, Clone)]
pub struct FakeKey {
    pub account: AccountId,
    pub region: Region,
    pub arn: String,
    pub aliases: Vec<String>,
    pub aws_managed: bool,
    pub enabled: bool,
    /// Other accounts its policy lets use it.
    pub users: BTreeSet<AccountId>,
}

#[derive(Debug, Clone)]
pub struct FakeEvent {
    pub account: AccountId,
    pub region: Region,
    pub event: TrailEvent,
}

#[derive(Debug, Default)]
pub struct EbsWorld {
    pub next: u64,
    /// Polls every new snapshot or copy takes to complete.
    pub snapshot_polls: u32,
    pub snapshots: BTreeMap<SnapshotId, FakeSnapshot>,
    pub volumes: BTreeMap<VolumeId, FakeVolume>,
    pub keys: Vec<FakeKey>,
    pub events: Vec<FakeEvent>,
    /// The next snapshots of these volumes end in `error` (count).
    pub failing_volumes: BTreeMap<VolumeId, u32>,
    /// The StateMessage of those failed snapshots (a default when unset).
    pub failure_message: Option<String>,
    /// SSM documents: (account, name) -> versions' contents.
    pub documents: BTreeMap<(AccountId, String), Vec<String>>,
    /// Instances whose agent is online.
    pub online: BTreeSet<InstanceId>,
    /// Commands sent: id -> (instance, document).
    pub commands: BTreeMap<String, (InstanceId, String)>,
    pub parameters: BTreeMap<String, String>,
}

impl EbsWorld {
    fn hex(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{:017x}", 0xeb5_0000_0000u64 + self.next)
    }

    /// A key by ARN, id or alias, in `account` and `region`.
    pub fn key(&self, account: &AccountId, region: &Region, key: &str) -> Option<&FakeKey> {
        self.keys.iter().find(|k| {
            (k.arn == key || k.arn.ends_with(&format!("/{key}")) || k.aliases.iter().any(|a| a == key))
                && (k.arn.contains(&format!(":{account}:")) || key.starts_with("arn:"))
                && (&k.region == region || key.starts_with("arn:"))
        })
    }

    /// The account's aws/ebs key in `region`, created on first use.
    pub fn default_ebs_key(&mut self, account: &AccountId, region: &Region) -> String {
        if let Some(k) =
            self.keys.iter().find(|k| &k.account == account && &k.region == region && k.aws_managed)
        {
            return k.arn.clone();
        }
        let id = self.hex("key");
        let arn = format!("arn:aws:kms:{region}:{account}:key/{id}");
        self.keys.push(FakeKey {
            account: account.clone(),
            region: region.clone(),
            arn: arn.clone(),
            aliases: vec!["alias/aws/ebs".into()],
            aws_managed: true,
            enabled: true,
            users: BTreeSet::new(),
        });
        arn
    }

    fn usable_by(&self, key: &str, account: &AccountId) -> bool {
        self.keys.iter().find(|k| k.arn == key).is_some_and(|k| {
            k.enabled && (&k.account == account || (!k.aws_managed && k.users.contains(account)))
        })
    }
}

impl FakeCloud {
    /// A customer-managed key in this account and region, usable by `users` too.
    pub fn add_key(&self, alias: &str, users: &[&AccountId]) -> String {
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let id = w.hex("key");
        let arn = format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account);
        w.keys.push(FakeKey {
            account: self.account.clone(),
            region: self.region.clone(),
            arn: arn.clone(),
            aliases: vec![alias.to_owned()],
            aws_managed: false,
            enabled: true,
            users: users.iter().map(|a| (*a).clone()).collect(),
        });
        arn
    }

    /// Records `volume` (attached to one of this account's instances) as encrypted with
    /// `key` (`None`: the account's aws/ebs key).
    pub fn encrypt_volume(&self, volume: &VolumeId, key: Option<&str>) {
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let key = match key {
            Some(k) => k.to_owned(),
            None => w.default_ebs_key(&self.account, &self.region),
        };
        let v = self.volume_entry(&mut w, volume);
        v.volume.encrypted = true;
        v.volume.kms_key = Some(key);
    }

    /// The next `times` snapshots of `volume` end in `error`.
    pub fn fail_snapshots_of(&self, volume: &VolumeId, times: u32) {
        self.world.ebs.lock().expect("ebs lock").failing_volumes.insert(volume.clone(), times);
    }

    /// The StateMessage every failed snapshot carries from now on.
    pub fn set_snapshot_failure_message(&self, message: &str) {
        self.world.ebs.lock().expect("ebs lock").failure_message = Some(message.to_owned());
    }

    /// Snapshots and copies take `polls` DescribeSnapshots calls to complete.
    pub fn set_snapshot_polls(&self, polls: u32) {
        self.world.ebs.lock().expect("ebs lock").snapshot_polls = polls;
    }

    /// Plants a CloudTrail event in this account and region.
    pub fn add_event(&self, event: TrailEvent) {
        self.world.ebs.lock().expect("ebs lock").events.push(FakeEvent {
            account: self.account.clone(),
            region: self.region.clone(),
            event,
        });
    }

    /// Sets the UserData (raw bytes, stored base64 as EC2 does) and console text of an instance.
    pub fn set_guest_data(&self, id: &InstanceId, user_data: &[u8], console: &[u8]) {
        use base64::Engine;
        let mut s = self.state.lock().expect("state lock");
        let i = s.instances.get_mut(id).expect("seeded instance");
        i.user_data = Some(base64::engine::general_purpose::STANDARD.encode(user_data));
        i.console = Some(console.to_vec());
    }

    /// Every snapshot of the world, for assertions.
    pub fn all_snapshots(&self) -> Vec<FakeSnapshot> {
        self.world.ebs.lock().expect("ebs lock").snapshots.values().cloned().collect()
    }

    fn volume_entry<'a>(&self, w: &'a mut EbsWorld, volume: &VolumeId) -> &'a mut FakeVolume {
        let (owner, region) = (self.account.clone(), self.region.clone());
        w.volumes.entry(volume.clone()).or_insert_with(|| FakeVolume {
            owner,
            region,
            volume: Volume {
                id: volume.clone(),
                size_gib: 8,
                volume_type: Some("gp3".into()),
                encrypted: false,
                kms_key: None,
                availability_zone: None,
                state: "in-use".into(),
                snapshot: None,
                attachments: vec![],
                tags: BTreeMap::new(),
            },
        })
    }

    fn visible(&self, s: &FakeSnapshot) -> bool {
        s.region == self.region && (s.owner == self.account || s.shared_with.contains(self.account.as_str()))
    }

    fn new_snapshot(
        &self,
        w: &mut EbsWorld,
        volume: &VolumeId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Snapshot {
        let v = self.volume_entry(w, volume).volume.clone();
        let fails = match w.failing_volumes.get_mut(volume) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Some(
                    w.failure_message
                        .clone()
                        .unwrap_or_else(|| "the snapshot could not be completed (injected)".to_owned()),
                )
            }
            _ => None,
        };
        let id: SnapshotId = w.hex("snap").parse().expect("id");
        let snapshot = Snapshot {
            id: id.clone(),
            volume: Some(volume.clone()),
            state: SnapshotState::Pending,
            progress: Some("0%".into()),
            state_message: None,
            encrypted: v.encrypted,
            kms_key: v.kms_key.clone(),
            owner: Some(self.account.clone()),
            size_gib: Some(v.size_gib),
            start_time: OffsetDateTime::now_utc().format(&Rfc3339).ok(),
            description: Some(description.to_owned()),
            tags: tags.clone(),
        };
        let polls = w.snapshot_polls;
        w.snapshots.insert(
            id,
            FakeSnapshot {
                owner: self.account.clone(),
                region: self.region.clone(),
                snapshot: snapshot.clone(),
                shared_with: BTreeSet::new(),
                polls_left: polls,
                fails_with: fails,
            },
        );
        snapshot
    }

    fn raw(
        &self,
        operation: &str,
        request: serde_json::Value,
        value: &impl serde::Serialize,
        call: &Call,
    ) -> Raw {
        Raw {
            operation: format!("fake:{operation}"),
            request,
            request_id: call.request_id.clone(),
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::to_vec(value).expect("fake values serialise")),
        }
    }

    // Capture reads of Ec2 and Iam, called from their impls in cloud.rs.

    pub(super) async fn capture_instance_raw(&self, id: &InstanceId) -> CloudResult<Raw> {
        let call = self.enter("DescribeInstances", format!("capture {id}")).await?;
        let s = self.state.lock().expect("state lock");
        let i = s.instances.get(id).ok_or_else(|| Self::not_found("DescribeInstances", id.as_str()))?;
        let value = s.instance(id, i);
        Ok(self.raw("DescribeInstances", serde_json::json!({"InstanceIds": [id]}), &value, &call))
    }

    pub(super) async fn capture_attribute_raw(
        &self,
        id: &InstanceId,
        attribute: &str,
    ) -> CloudResult<Captured<Option<String>>> {
        let call = self.enter("DescribeInstanceAttribute", format!("{id} {attribute}")).await?;
        let s = self.state.lock().expect("state lock");
        let i =
            s.instances.get(id).ok_or_else(|| Self::not_found("DescribeInstanceAttribute", id.as_str()))?;
        let value = match attribute {
            "userData" => i.user_data.clone(),
            "instanceType" => i.details.instance_type.clone(),
            "disableApiTermination" => Some(i.attributes.termination_protection.to_string()),
            "instanceInitiatedShutdownBehavior" => Some(i.attributes.shutdown_behavior.clone()),
            _ => None,
        };
        let raw = self.raw(
            "DescribeInstanceAttribute",
            serde_json::json!({"InstanceId": id, "Attribute": attribute}),
            &serde_json::json!({"InstanceId": id, attribute: value}),
            &call,
        );
        Ok(Captured { value, raw })
    }

    pub(super) async fn capture_list_raw(&self, operation: &str, ids: serde_json::Value) -> CloudResult<Raw> {
        let call = self.enter(operation, format!("capture {ids}")).await?;
        Ok(self.raw(operation, ids.clone(), &ids, &call))
    }

    pub(super) async fn console_raw(
        &self,
        id: &InstanceId,
        screenshot: bool,
    ) -> CloudResult<Captured<Option<String>>> {
        use base64::Engine;
        let op = if screenshot { "GetConsoleScreenshot" } else { "GetConsoleOutput" };
        let call = self.enter(op, id.to_string()).await?;
        let s = self.state.lock().expect("state lock");
        let i = s.instances.get(id).ok_or_else(|| Self::not_found(op, id.as_str()))?;
        let value = if screenshot {
            None
        } else {
            i.console.as_ref().map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        };
        let raw =
            self.raw(op, serde_json::json!({"InstanceId": id}), &serde_json::json!({"Output": value}), &call);
        Ok(Captured { value, raw })
    }
}

#[async_trait]
impl Ebs for FakeCloud {
    async fn capture_volumes(&self, ids: &[VolumeId]) -> CloudResult<Captured<Vec<Volume>>> {
        let call = self.enter("DescribeVolumes", format!("{ids:?}")).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let value: Vec<Volume> = ids.iter().map(|v| self.volume_entry(&mut w, v).volume.clone()).collect();
        let raw = self.raw("DescribeVolumes", serde_json::json!({"VolumeIds": ids}), &value, &call);
        Ok(Captured { value, raw })
    }

    async fn create_snapshots(
        &self,
        instance: &InstanceId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Vec<Snapshot>, Call)> {
        let call = self.enter("CreateSnapshots", instance.to_string()).await?;
        let volumes: Vec<VolumeId> = {
            let s = self.state.lock().expect("state lock");
            let i = s
                .instances
                .get(instance)
                .ok_or_else(|| Self::not_found("CreateSnapshots", instance.as_str()))?;
            i.volumes.iter().map(|v| v.volume.clone()).collect()
        };
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let snapshots = volumes.iter().map(|v| self.new_snapshot(&mut w, v, description, tags)).collect();
        Ok((snapshots, call))
    }

    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Snapshot, Call)> {
        let call = self.enter("CreateSnapshot", volume.to_string()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        Ok((self.new_snapshot(&mut w, volume, description, tags), call))
    }

    async fn snapshots(&self, ids: &[SnapshotId]) -> CloudResult<Vec<Snapshot>> {
        self.enter("DescribeSnapshots", format!("{ids:?}")).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let mut out = Vec::new();
        for id in ids {
            let Some(s) = w.snapshots.get_mut(id).filter(|s| self.visible(s)) else {
                return Err(fault(
                    "DescribeSnapshots",
                    ErrorKind::NotFound,
                    "InvalidSnapshot.NotFound",
                    &format!("The snapshot '{id}' does not exist."),
                ));
            };
            if s.snapshot.state == SnapshotState::Pending {
                if s.polls_left == 0 {
                    match &s.fails_with {
                        Some(m) => {
                            s.snapshot.state = SnapshotState::Error;
                            s.snapshot.state_message = Some(m.clone());
                        }
                        None => {
                            s.snapshot.state = SnapshotState::Completed;
                            s.snapshot.progress = Some("100%".into());
                        }
                    }
                } else {
                    s.polls_left -= 1;
                    s.snapshot.progress = Some("50%".into());
                }
            }
            out.push(s.snapshot.clone());
        }
        Ok(out)
    }

    async fn find_snapshots(&self, tags: &[(String, String)]) -> CloudResult<Vec<Snapshot>> {
        self.enter("DescribeSnapshots", format!("tags {tags:?}")).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        Ok(w.snapshots
            .values()
            .filter(|s| s.owner == self.account && s.region == self.region)
            .filter(|s| tags.iter().all(|(k, v)| s.snapshot.tags.get(k) == Some(v)))
            .map(|s| s.snapshot.clone())
            .collect())
    }

    async fn copy_snapshot(&self, request: &CopyRequest) -> CloudResult<(SnapshotId, Call)> {
        let call = self.enter("CopySnapshot", format!("{} -> {:?}", request.source, request.kms_key)).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let Some(source) = w
            .snapshots
            .get(&request.source)
            .filter(|s| s.region == request.source_region)
            .filter(|s| s.owner == self.account || s.shared_with.contains(self.account.as_str()))
            .cloned()
        else {
            return Err(fault(
                "CopySnapshot",
                ErrorKind::NotFound,
                "InvalidSnapshot.NotFound",
                &format!("The snapshot '{}' does not exist.", request.source),
            ));
        };
        if source.snapshot.state != SnapshotState::Completed {
            return Err(fault(
                "CopySnapshot",
                ErrorKind::Other,
                "IncorrectState",
                &format!("Snapshot '{}' is in state '{:?}'.", request.source, source.snapshot.state),
            ));
        }
        let key = match &request.kms_key {
            Some(k) => {
                w.key(&self.account, &self.region, k).map(|k| k.arn.clone()).unwrap_or_else(|| k.clone())
            }
            None if source.snapshot.encrypted => w.default_ebs_key(&self.account, &self.region),
            None => String::new(),
        };
        let source_key_ok = source.snapshot.kms_key.as_deref().is_none_or(|k| w.usable_by(k, &self.account));
        let target_key_ok = key.is_empty() || w.usable_by(&key, &self.account);
        let id: SnapshotId = w.hex("snap").parse().expect("id");
        let mut snapshot = source.snapshot.clone();
        snapshot.id = id.clone();
        snapshot.owner = Some(self.account.clone());
        snapshot.state = SnapshotState::Pending;
        snapshot.progress = Some("0%".into());
        snapshot.encrypted = !key.is_empty();
        snapshot.kms_key = (!key.is_empty()).then_some(key);
        snapshot.tags = request.tags.clone();
        snapshot.description = Some(request.description.clone());
        let polls = w.snapshot_polls;
        w.snapshots.insert(
            id.clone(),
            FakeSnapshot {
                owner: self.account.clone(),
                region: self.region.clone(),
                snapshot,
                shared_with: BTreeSet::new(),
                polls_left: polls,
                // EBS checks keys asynchronously: the copy "succeeds" and ends in error.
                fails_with: (!(source_key_ok && target_key_ok))
                    .then(|| "Given key ID is not accessible".to_owned()),
            },
        );
        Ok((id, call))
    }

    async fn share_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call> {
        let call = self.enter("ModifySnapshotAttribute", format!("{id} add {account}")).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let managed: Vec<String> = w.keys.iter().filter(|k| k.aws_managed).map(|k| k.arn.clone()).collect();
        let s = w
            .snapshots
            .get_mut(id)
            .filter(|s| s.owner == self.account && s.region == self.region)
            .ok_or_else(|| Self::not_found("ModifySnapshotAttribute", id.as_str()))?;
        if s.snapshot.kms_key.as_ref().is_some_and(|k| managed.contains(k)) {
            return Err(fault(
                "ModifySnapshotAttribute",
                ErrorKind::Other,
                "OperationNotPermitted",
                "Encrypted snapshots with EBS default key cannot be shared",
            ));
        }
        s.shared_with.insert(account.to_string());
        Ok(call)
    }

    async fn unshare_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call> {
        let call = self.enter("ModifySnapshotAttribute", format!("{id} remove {account}")).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let s = w
            .snapshots
            .get_mut(id)
            .filter(|s| s.owner == self.account)
            .ok_or_else(|| Self::not_found("ModifySnapshotAttribute", id.as_str()))?;
        s.shared_with.remove(account.as_str());
        Ok(call)
    }

    async fn snapshot_shares(&self, id: &SnapshotId) -> CloudResult<Vec<String>> {
        self.enter("DescribeSnapshotAttribute", id.to_string()).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        let s = w
            .snapshots
            .get(id)
            .filter(|s| s.owner == self.account)
            .ok_or_else(|| Self::not_found("DescribeSnapshotAttribute", id.as_str()))?;
        Ok(s.shared_with.iter().cloned().collect())
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<Call> {
        let call = self.enter("DeleteSnapshot", id.to_string()).await?;
        self.world.ebs.lock().expect("ebs lock").snapshots.remove(id);
        Ok(call)
    }

    async fn create_volume(&self, request: &NewVolume) -> CloudResult<(VolumeId, Call)> {
        let call = self.enter("CreateVolume", request.snapshot.to_string()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let Some(snap) = w.snapshots.get(&request.snapshot).filter(|s| self.visible(s)).cloned() else {
            return Err(Self::not_found("CreateVolume", request.snapshot.as_str()));
        };
        let id: VolumeId = w.hex("vol").parse().expect("id");
        w.volumes.insert(
            id.clone(),
            FakeVolume {
                owner: self.account.clone(),
                region: self.region.clone(),
                volume: Volume {
                    id: id.clone(),
                    size_gib: snap.snapshot.size_gib.unwrap_or(8),
                    volume_type: Some("gp3".into()),
                    encrypted: request.kms_key.is_some() || snap.snapshot.encrypted,
                    kms_key: request.kms_key.clone().or(snap.snapshot.kms_key.clone()),
                    availability_zone: Some(request.availability_zone.clone()),
                    state: "available".into(),
                    snapshot: Some(request.snapshot.clone()),
                    attachments: vec![],
                    tags: request.tags.clone(),
                },
            },
        );
        Ok((id, call))
    }

    async fn volumes(&self, ids: &[VolumeId]) -> CloudResult<Vec<Volume>> {
        self.enter("DescribeVolumes", format!("{ids:?}")).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        ids.iter()
            .map(|v| {
                w.volumes
                    .get(v)
                    .filter(|f| f.owner == self.account)
                    .map(|f| f.volume.clone())
                    .ok_or_else(|| Self::not_found("DescribeVolumes", v.as_str()))
            })
            .collect()
    }

    async fn find_volumes(&self, tags: &[(String, String)]) -> CloudResult<Vec<Volume>> {
        self.enter("DescribeVolumes", format!("tags {tags:?}")).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        Ok(w.volumes
            .values()
            .filter(|f| f.owner == self.account && f.region == self.region)
            .filter(|f| tags.iter().all(|(k, v)| f.volume.tags.get(k) == Some(v)))
            .map(|f| f.volume.clone())
            .collect())
    }

    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<Call> {
        let call = self.enter("AttachVolume", format!("{volume} {instance} {device}")).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let v = w.volumes.get_mut(volume).ok_or_else(|| Self::not_found("AttachVolume", volume.as_str()))?;
        if !v.volume.attachments.is_empty() {
            return Err(fault("AttachVolume", ErrorKind::Other, "VolumeInUse", "the volume is attached"));
        }
        v.volume.attachments.push((instance.clone(), device.to_owned()));
        v.volume.state = "in-use".into();
        Ok(call)
    }

    async fn detach_volume(&self, volume: &VolumeId, instance: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("DetachVolume", volume.to_string()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let v = w.volumes.get_mut(volume).ok_or_else(|| Self::not_found("DetachVolume", volume.as_str()))?;
        v.volume.attachments.retain(|(on, _)| on != instance);
        if v.volume.attachments.is_empty() {
            v.volume.state = "available".into();
        }
        Ok(call)
    }

    async fn delete_volume(&self, volume: &VolumeId) -> CloudResult<Call> {
        let call = self.enter("DeleteVolume", volume.to_string()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        if w.volumes.get(volume).is_some_and(|v| !v.volume.attachments.is_empty()) {
            return Err(fault("DeleteVolume", ErrorKind::Other, "VolumeInUse", "the volume is attached"));
        }
        w.volumes.remove(volume).ok_or_else(|| Self::not_found("DeleteVolume", volume.as_str()))?;
        Ok(call)
    }
}

#[async_trait]
impl Kms for FakeCloud {
    async fn describe_key(&self, key: &str) -> CloudResult<Option<KeyInfo>> {
        self.enter("DescribeKey", key.into()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        if key == "alias/aws/ebs" {
            w.default_ebs_key(&self.account, &self.region);
        }
        Ok(w.key(&self.account, &self.region, key).map(|k| KeyInfo {
            arn: k.arn.clone(),
            manager: if k.aws_managed { "AWS".into() } else { "CUSTOMER".into() },
            state: if k.enabled { "Enabled".into() } else { "Disabled".into() },
        }))
    }
}

#[async_trait]
impl CloudTrail for FakeCloud {
    async fn lookup_events(
        &self,
        lookup: &Lookup,
        start: OffsetDateTime,
        end: OffsetDateTime,
        limit: usize,
    ) -> CloudResult<Found> {
        let call = self.enter("LookupEvents", format!("{lookup:?}")).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        let mut events: Vec<TrailEvent> = w
            .events
            .iter()
            .filter(|e| e.account == self.account && e.region == self.region)
            .map(|e| e.event.clone())
            .filter(|e| {
                OffsetDateTime::parse(&e.event_time, &Rfc3339).is_ok_and(|t| t >= start && t <= end)
                    && match lookup {
                        Lookup::ResourceName(n) => e.resources.iter().any(|r| r.name.as_deref() == Some(n)),
                        Lookup::AccessKeyId(k) => e.access_key_id.as_deref() == Some(k),
                        Lookup::Username(u) => e.username.as_deref() == Some(u),
                        Lookup::EventName(n) => &e.event_name == n,
                    }
            })
            .collect();
        events.sort_by(|a, b| b.event_time.cmp(&a.event_time));
        let truncated = events.len() > limit;
        events.truncate(limit);
        let raw = self.raw("LookupEvents", serde_json::json!({"lookup": lookup}), &events, &call);
        Ok(Found { events, pages: vec![raw], truncated })
    }
}

#[async_trait]
impl Sts for FakeCloud {
    async fn caller_identity(&self) -> CloudResult<Identity> {
        self.enter("GetCallerIdentity", String::new()).await?;
        Ok(Identity {
            account: self.account.clone(),
            arn: format!("arn:aws:sts::{}:assumed-role/CleanroomResponder/cleanroom", self.account),
            user_id: "AROAFAKE:cleanroom".into(),
        })
    }
}

#[async_trait]
impl Ssm for FakeCloud {
    async fn parameter(&self, name: &str) -> CloudResult<Option<String>> {
        self.enter("GetParameter", name.into()).await?;
        Ok(self.world.ebs.lock().expect("ebs lock").parameters.get(name).cloned())
    }

    async fn describe_document(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> CloudResult<Option<DocumentVersion>> {
        self.enter("DescribeDocument", name.into()).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        let Some(versions) = w.documents.get(&(self.account.clone(), name.to_owned())) else {
            return Ok(None);
        };
        let n = match version {
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1 && *n <= versions.len()),
            None => Some(1),
        };
        Ok(n.map(|n| DocumentVersion {
            name: name.to_owned(),
            version: n.to_string(),
            hash: Some(hex::encode(sha2::Sha256::digest(versions[n - 1].as_bytes()))),
            latest_version: Some(versions.len().to_string()),
        }))
    }

    async fn document_versions(&self, name: &str) -> CloudResult<Vec<String>> {
        self.enter("ListDocumentVersions", name.into()).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        Ok((1..=w.documents.get(&(self.account.clone(), name.to_owned())).map_or(0, Vec::len))
            .map(|n| n.to_string())
            .collect())
    }

    async fn create_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)> {
        let call = self.enter("CreateDocument", name.into()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let key = (self.account.clone(), name.to_owned());
        if w.documents.contains_key(&key) {
            return Err(fault(
                "CreateDocument",
                ErrorKind::Other,
                "DocumentAlreadyExists",
                "the document exists",
            ));
        }
        w.documents.insert(key, vec![content.to_owned()]);
        let hash = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        Ok((
            DocumentVersion {
                name: name.into(),
                version: "1".into(),
                hash: Some(hash),
                latest_version: Some("1".into()),
            },
            call,
        ))
    }

    async fn update_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)> {
        let call = self.enter("UpdateDocument", name.into()).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let versions = w
            .documents
            .get_mut(&(self.account.clone(), name.to_owned()))
            .ok_or_else(|| Self::not_found("UpdateDocument", name))?;
        versions.push(content.to_owned());
        let n = versions.len().to_string();
        let hash = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        Ok((
            DocumentVersion {
                name: name.into(),
                version: n.clone(),
                hash: Some(hash),
                latest_version: Some(n),
            },
            call,
        ))
    }

    async fn ping_status(&self, instance: &InstanceId) -> CloudResult<Option<String>> {
        self.enter("DescribeInstanceInformation", instance.to_string()).await?;
        Ok(self.world.ebs.lock().expect("ebs lock").online.contains(instance).then(|| "Online".to_owned()))
    }

    async fn send_command(&self, request: &CommandRequest) -> CloudResult<(String, Call)> {
        let call = self.enter("SendCommand", format!("{} {}", request.document, request.instance)).await?;
        let mut w = self.world.ebs.lock().expect("ebs lock");
        let id = format!("{:08x}-0000-4000-8000-{:012x}", w.next, w.next);
        w.next += 1;
        w.commands.insert(id.clone(), (request.instance.clone(), request.document.clone()));
        Ok((id, call))
    }

    async fn invocation(
        &self,
        command_id: &str,
        instance: &InstanceId,
        _plugin: &str,
    ) -> CloudResult<Option<Invocation>> {
        self.enter("GetCommandInvocation", command_id.into()).await?;
        let w = self.world.ebs.lock().expect("ebs lock");
        // The fake runs nothing: a command succeeds with no output (results are the lab's).
        Ok(w.commands.get(command_id).filter(|(i, _)| i == instance).map(|_| Invocation {
            status: "Success".into(),
            status_details: Some("Success".into()),
            response_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
        }))
    }
}
